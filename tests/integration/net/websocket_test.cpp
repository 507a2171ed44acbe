#include "net/websocket.hpp"

#include "fakes/test_support.hpp"
#include "net/http_server.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace conduit::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using conduit::testing::RawClient;
using conduit::testing::WaitFor;
using namespace std::chrono_literals;

/// Runs `ioc` until `done` or the timeout; false on timeout.
bool RunUntil(asio::io_context& ioc, const bool& done, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    ioc.restart();
    while (!done) {
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline || ioc.run_one_for(deadline - now) == 0) {
            break;
        }
    }
    return done;
}

/// A Beast WebSocket client: synchronous connect/handshake/write, reads and closes with a timeout.
class Client {
public:
    explicit Client(asio::io_context& ioc) : ioc_(ioc), ws_(ioc) {}

    bool Connect(uint16_t port,
                 const std::string& target,
                 const std::string& protocol = {},
                 int rcvbuf = 0) {
        error_code ec;
        auto& sock = ws_.next_layer();
        sock.open(tcp::v4(), ec);
        if (rcvbuf > 0) {
            sock.set_option(asio::socket_base::receive_buffer_size(rcvbuf), ec);
        }
        sock.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
        if (ec) {
            return false;
        }
        if (!protocol.empty()) {
            ws_.set_option(
                websocket::stream_base::decorator([protocol](websocket::request_type& r) {
                    r.set(beast::http::field::sec_websocket_protocol, protocol);
                }));
        }
        ws_.handshake(response_, "127.0.0.1", target, ec);
        return !ec;
    }

    void Write(const std::string& m, bool binary = false) {
        ws_.binary(binary);
        ws_.write(asio::buffer(m));
    }

    /// One message; false on error or timeout (`ec` tells which error).
    bool Read(std::string& out, bool* binary = nullptr, std::chrono::milliseconds t = 10s) {
        beast::flat_buffer buf;
        bool done = false;
        ec_.clear();
        ws_.async_read(buf, [&](error_code e, size_t) {
            ec_ = e;
            done = true;
        });
        if (!RunUntil(ioc_, done, t)) {
            error_code ignored;
            ws_.next_layer().cancel(ignored);
            RunUntil(ioc_, done, 5s);
            timed_out_ = true;
            return false;
        }
        if (ec_) {
            return false;
        }
        out = beast::buffers_to_string(buf.data());
        if (binary != nullptr) {
            *binary = ws_.got_binary();
        }
        return true;
    }

    bool Close(websocket::close_code code = websocket::close_code::normal) {
        bool done = false;
        ws_.async_close(code, [&](error_code e) {
            ec_ = e;
            done = true;
        });
        return RunUntil(ioc_, done, 10s) && !ec_;
    }

    /// Drops the TCP connection without a closing handshake.
    void Drop() {
        error_code ec;
        ws_.next_layer().close(ec);
    }

    websocket::stream<tcp::socket>& ws() { return ws_; }
    const websocket::response_type& response() const { return response_; }
    const error_code& error() const { return ec_; }
    bool timed_out() const { return timed_out_; }
    /// The close frame received (after Read() failed with websocket::error::closed).
    const websocket::close_reason& reason() const { return ws_.reason(); }

private:
    asio::io_context& ioc_;
    websocket::stream<tcp::socket> ws_;
    websocket::response_type response_;
    error_code ec_;
    bool timed_out_ = false;
};

class WebSocketTest : public ::testing::Test {
protected:
    void SetUp() override {
        ServerOptions opt;
        opt.host = "127.0.0.1";
        opt.port = 0;
        // Short HTTP timeouts: a WebSocket must not be subject to them.
        opt.idle_timeout = 100ms;
        opt.header_timeout = 100ms;
        opt.body_timeout = 100ms;
        server_ =
            std::make_unique<HttpServer>(rt_, opt, [this](const ExchangePtr& ex) { Handle(ex); });
        auto port = server_->Start();
        ASSERT_TRUE(port.has_value());
        port_ = *port;
        rt_.Start();
    }
    void TearDown() override { rt_.Stop(); }

    void Handle(const ExchangePtr& ex) {
        auto path = ex->request().path();
        if (path == "/hello") {
            ex->Respond(Response::Text(200, "hi"));
            return;
        }
        WebSocketOptions wo;
        wo.max_message_bytes = path == "/ws-small" ? 32 * 1024 : 256 * 1024;
        if (path == "/ws-flood") {
            wo.max_buffered_bytes = 256 * 1024;
        }
        Headers h;
        if (auto proto = ex->request().headers.Get("sec-websocket-protocol"); !proto.empty()) {
            h.Add("Sec-WebSocket-Protocol", std::string(proto));
        }
        auto ws = ex->AcceptWebSocket(h, wo);
        if (!ws) {
            ++refused_;
            ex->Respond(Response::Text(400, "not a websocket"));
            return;
        }
        ++accepted_;
        // Callbacks capture the socket weakly (the server side keeps it alive while open).
        std::weak_ptr<WebSocket> weak = ws;
        ws->SetOnClose([this](uint16_t code) {
            std::lock_guard lock(mu_);
            close_codes_.push_back(code);
        });
        if (path == "/ws-flood") {
            StartFlood(ws);
            return;
        }
        ws->SetOnMessage([weak](std::string m, bool binary) {
            auto s = weak.lock();
            if (!s) {
                return;
            }
            if (m == "close-me") {
                s->Close(4000, "bye now");
                return;
            }
            if (m.rfind("shared:", 0) == 0) {
                // One frame, sent three times through the shared path.
                SharedFrame f = MakeSharedFrame(m, binary);
                for (int i = 0; i < 3; ++i) {
                    s->SendShared(f);
                }
                return;
            }
            s->Send(std::move(m), binary);
        });
    }

    // Sends 64 KB messages every millisecond until the socket closes, recording the largest
    // BufferedBytes() seen.
    void StartFlood(const WebSocketPtr& ws) {
        auto tick = std::make_shared<std::function<void()>>();
        std::weak_ptr<WebSocket> weak = ws;
        *tick = [this, weak, tick] {
            auto s = weak.lock();
            if (!s || s->closed()) {
                *tick = nullptr;  // break the cycle
                return;
            }
            s->Send(std::string(64 * 1024, 'f'), true);
            size_t b = s->BufferedBytes();
            size_t prev = max_buffered_.load();
            while (b > prev && !max_buffered_.compare_exchange_weak(prev, b)) {
            }
            s->loop().StartTimer(1ms, [tick] {
                if (*tick) {
                    (*tick)();
                }
            });
        };
        (*tick)();
    }

    bool SawClose(uint16_t code) {
        std::lock_guard lock(mu_);
        return std::find(close_codes_.begin(), close_codes_.end(), code) != close_codes_.end();
    }
    size_t CloseCount() {
        std::lock_guard lock(mu_);
        return close_codes_.size();
    }

    Runtime rt_{2};
    std::unique_ptr<HttpServer> server_;
    uint16_t port_ = 0;
    asio::io_context ioc_;
    std::atomic<int> accepted_{0};
    std::atomic<int> refused_{0};
    std::atomic<size_t> max_buffered_{0};
    std::mutex mu_;
    std::vector<uint16_t> close_codes_;
};

TEST_F(WebSocketTest, EchoesTextAndBinaryAndNegotiatesTheSubprotocol) {
    Client c(ioc_);
    ASSERT_TRUE(c.Connect(port_, "/ws", "json"));
    EXPECT_EQ(c.response().result_int(), 101);
    EXPECT_EQ(c.response()[beast::http::field::sec_websocket_protocol], "json");

    c.Write("hello");
    std::string got;
    bool binary = true;
    ASSERT_TRUE(c.Read(got, &binary));
    EXPECT_EQ(got, "hello");
    EXPECT_FALSE(binary);

    std::string bin("\x00\x01\xFF\xFE", 4);
    c.Write(bin, true);
    ASSERT_TRUE(c.Read(got, &binary));
    EXPECT_EQ(got, bin);
    EXPECT_TRUE(binary);

    // Well past the server's idle and header timeouts: the socket is still served.
    std::this_thread::sleep_for(400ms);
    c.Write("still here");
    ASSERT_TRUE(c.Read(got));
    EXPECT_EQ(got, "still here");
    EXPECT_EQ(server_->InFlight(), 0);
    EXPECT_EQ(server_->ActiveConnections(), 1);
}

TEST_F(WebSocketTest, ReassemblesAFragmentedMessage) {
    Client c(ioc_);
    ASSERT_TRUE(c.Connect(port_, "/ws"));
    std::string big(100 * 1024, 'x');
    for (size_t i = 0; i < big.size(); ++i) {
        big[i] = static_cast<char>('a' + (i * 7) % 26);
    }
    c.ws().auto_fragment(false);
    c.ws().text(true);
    for (size_t off = 0; off < big.size(); off += 1000) {
        size_t n = std::min<size_t>(1000, big.size() - off);
        c.ws().write_some(off + n == big.size(), asio::buffer(big.data() + off, n));
    }
    std::string got;
    ASSERT_TRUE(c.Read(got));
    EXPECT_EQ(got.size(), big.size());
    EXPECT_TRUE(got == big);
}

TEST_F(WebSocketTest, MessageOverTheLimitClosesWith1009) {
    Client c(ioc_);
    ASSERT_TRUE(c.Connect(port_, "/ws-small"));
    c.Write(std::string(64 * 1024, 'b'), true);
    std::string got;
    EXPECT_FALSE(c.Read(got));
    EXPECT_EQ(c.error(), websocket::error::closed) << c.error().message();
    EXPECT_EQ(c.reason().code, 1009);
    EXPECT_TRUE(WaitFor([&] { return SawClose(1009); }));
    EXPECT_TRUE(WaitFor([&] { return server_->ActiveConnections() == 0; }));
}

TEST_F(WebSocketTest, ServerCloseDeliversCodeAndReason) {
    Client c(ioc_);
    ASSERT_TRUE(c.Connect(port_, "/ws"));
    c.Write("close-me");
    std::string got;
    EXPECT_FALSE(c.Read(got));
    EXPECT_EQ(c.error(), websocket::error::closed) << c.error().message();
    EXPECT_EQ(c.reason().code, 4000);
    EXPECT_EQ(std::string(c.reason().reason.c_str()), "bye now");
    EXPECT_TRUE(WaitFor([&] { return SawClose(4000); }));
    EXPECT_TRUE(WaitFor([&] { return server_->ActiveConnections() == 0; }));
    EXPECT_EQ(CloseCount(), 1u);
}

TEST_F(WebSocketTest, ClientCloseReports1000) {
    Client c(ioc_);
    ASSERT_TRUE(c.Connect(port_, "/ws"));
    c.Write("x");
    std::string got;
    ASSERT_TRUE(c.Read(got));
    EXPECT_TRUE(c.Close());
    EXPECT_TRUE(WaitFor([&] { return SawClose(1000); }));
    EXPECT_TRUE(WaitFor([&] { return server_->ActiveConnections() == 0; }));
    EXPECT_EQ(CloseCount(), 1u);
}

TEST_F(WebSocketTest, ClientDropReports1006) {
    Client c(ioc_);
    ASSERT_TRUE(c.Connect(port_, "/ws"));
    c.Write("x");
    std::string got;
    ASSERT_TRUE(c.Read(got));
    c.Drop();
    EXPECT_TRUE(WaitFor([&] { return SawClose(1006); }));
    EXPECT_TRUE(WaitFor([&] { return server_->ActiveConnections() == 0; }));
    EXPECT_EQ(CloseCount(), 1u);
}

TEST_F(WebSocketTest, AClientThatDoesNotReadIsClosedWith1008AndMemoryStaysBounded) {
    Client c(ioc_);
    ASSERT_TRUE(c.Connect(port_, "/ws-flood", {}, 16 * 1024));
    // The client reads nothing until the server gives up on it.
    ASSERT_TRUE(WaitFor([&] { return SawClose(1008); }, 20s));
    // Bounded by max_buffered_bytes plus the message that crossed it.
    EXPECT_LE(max_buffered_.load(), 256u * 1024 + 64 * 1024 + 64);
    EXPECT_GT(max_buffered_.load(), 0u);
    // Reading now drains what was in flight, then the close frame.
    std::string got;
    size_t messages = 0;
    while (c.Read(got)) {
        ++messages;
        EXPECT_EQ(got.size(), 64u * 1024);
    }
    EXPECT_GT(messages, 0u);
    EXPECT_EQ(c.error(), websocket::error::closed) << c.error().message();
    EXPECT_EQ(c.reason().code, 1008);
    EXPECT_TRUE(WaitFor([&] { return server_->ActiveConnections() == 0; }));
}

// A masked client frame (the mask is fixed; fine for a test).
std::string MaskedFrame(uint8_t first_byte, const std::string& payload) {
    std::string f;
    f.push_back(static_cast<char>(first_byte));
    f.push_back(static_cast<char>(0x80 | payload.size()));  // < 126 bytes
    const char mask[4] = {0x0A, 0x0B, 0x0C, 0x0D};
    f.append(mask, 4);
    for (size_t i = 0; i < payload.size(); ++i) {
        f.push_back(static_cast<char>(payload[i] ^ mask[i & 3]));
    }
    return f;
}

TEST_F(WebSocketTest, PipelinedFirstFrameInTheUpgradeWrite) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(c.connected());
    std::string req =
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    ASSERT_TRUE(c.Send(req + MaskedFrame(0x81, "pipelined-hello")));
    std::string r = c.ReadUntil("pipelined-hello", 5000);
    ASSERT_EQ(r.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0), 0u) << r;
    EXPECT_NE(r.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), std::string::npos);
    EXPECT_NE(r.find("Connection: Upgrade\r\n"), std::string::npos);
    EXPECT_NE(r.find("Upgrade: websocket\r\n"), std::string::npos);
    EXPECT_EQ(r.find("Content-Length"), std::string::npos);
    size_t body = r.find("\r\n\r\n");
    ASSERT_NE(body, std::string::npos);
    std::string frame = r.substr(body + 4);
    EXPECT_EQ(frame, std::string("\x81\x0F", 2) + "pipelined-hello");

    // A ping is answered with a pong carrying the same payload.
    ASSERT_TRUE(c.Send(MaskedFrame(0x89, "pp")));
    std::string pong = c.ReadUntil("pp", 5000);
    EXPECT_EQ(pong, std::string("\x8A\x02pp", 4));
    // A protocol error (unmasked frame) closes with 1002.
    ASSERT_TRUE(c.Send(std::string("\x81\x02hi", 4)));
    bool closed = false;
    std::string rest = c.ReadToClose(5000, &closed);
    EXPECT_TRUE(closed);
    ASSERT_GE(rest.size(), 4u);
    EXPECT_EQ(static_cast<unsigned char>(rest[0]), 0x88);
    EXPECT_EQ((static_cast<unsigned char>(rest[2]) << 8) | static_cast<unsigned char>(rest[3]),
              1002);
    EXPECT_TRUE(WaitFor([&] { return SawClose(1002); }));
}

// A masked client frame of any length (the mask is fixed; fine for a test).
std::string MaskedFrameAnyLength(uint8_t first_byte, const std::string& payload) {
    std::string f;
    f.push_back(static_cast<char>(first_byte));
    size_t n = payload.size();
    if (n < 126) {
        f.push_back(static_cast<char>(0x80 | n));
    } else if (n <= 0xFFFF) {
        f.push_back(static_cast<char>(0x80 | 126));
        f.push_back(static_cast<char>(n >> 8));
        f.push_back(static_cast<char>(n & 0xFF));
    } else {
        f.push_back(static_cast<char>(0x80 | 127));
        for (int shift = 56; shift >= 0; shift -= 8) {
            f.push_back(static_cast<char>((static_cast<uint64_t>(n) >> shift) & 0xFF));
        }
    }
    const char mask[4] = {0x31, 0x42, 0x53, 0x64};
    f.append(mask, 4);
    for (size_t i = 0; i < n; ++i) {
        f.push_back(static_cast<char>(payload[i] ^ mask[i & 3]));
    }
    return f;
}

// The server keeps no read buffer per socket (one per loop thread; only an incomplete frame
// header is carried between reads): a message several times that buffer's size, arriving in
// thousands of small writes that split frame headers and payload anywhere, is reassembled
// exactly, and the small messages after it are read as usual.
TEST_F(WebSocketTest, ALargeMessageInManySmallReadsThenSmallOnes) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(
        c.Send("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"));
    std::string head = c.ReadUntil("\r\n\r\n", 5000);
    ASSERT_EQ(head.rfind("HTTP/1.1 101 ", 0), 0u) << head;

    // 200 KB: over three times the per-thread read buffer, under the 256 KB limit of /ws.
    std::string big(200 * 1024, '\0');
    for (size_t i = 0; i < big.size(); ++i) {
        big[i] = static_cast<char>((i * 131 + i / 7) & 0xFF);
    }
    // Two fragments (binary, then continuation with FIN), then a ping, then two small texts.
    std::string first(big.substr(0, 70000));
    std::string second(big.substr(70000));
    std::string stream = MaskedFrameAnyLength(0x02, first) + MaskedFrameAnyLength(0x89, "pi") +
                         MaskedFrameAnyLength(0x80, second) +
                         MaskedFrameAnyLength(0x81, "small-one") +
                         MaskedFrameAnyLength(0x81, "small-two");
    // The first bytes one at a time with a pause (separate reads: the header arrives in pieces),
    // then pieces of 1..37 bytes.
    size_t off = 0;
    for (; off < 12; ++off) {
        ASSERT_TRUE(c.Send(std::string_view(stream).substr(off, 1)));
        std::this_thread::sleep_for(2ms);
    }
    for (size_t step = 1; off < stream.size(); step = step % 37 + 1) {
        size_t n = std::min(step, stream.size() - off);
        ASSERT_TRUE(c.Send(std::string_view(stream).substr(off, n)));
        off += n;
    }

    // Expected echo: the pong, the big binary message (8-byte length), then the two texts.
    std::string expected = std::string("\x8A\x02pi", 4);
    expected += '\x82';
    expected += '\x7F';
    for (int shift = 56; shift >= 0; shift -= 8) {
        expected += static_cast<char>((static_cast<uint64_t>(big.size()) >> shift) & 0xFF);
    }
    expected += big;
    expected += std::string("\x81\x09") + "small-one";
    expected += std::string("\x81\x09") + "small-two";
    std::string got = c.ReadUntil("small-two", 10000);
    ASSERT_EQ(got.size(), expected.size());
    EXPECT_TRUE(got == expected);

    // Still served after the large message: a small echo right away.
    ASSERT_TRUE(c.Send(MaskedFrameAnyLength(0x81, "again")));
    EXPECT_EQ(c.ReadUntil("again", 5000), std::string("\x81\x05") + "again");
    EXPECT_EQ(CloseCount(), 0u);
}

TEST_F(WebSocketTest, SharedFramesAreSentAsTheyWereFramed) {
    Client c(ioc_);
    ASSERT_TRUE(c.Connect(port_, "/ws"));
    std::string got;
    bool binary = true;
    c.Write("shared:small");
    for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(c.Read(got, &binary)) << i;
        EXPECT_EQ(got, "shared:small");
        EXPECT_FALSE(binary);
    }
    // Over the 16-bit length and the kernel's socket buffer: partly written at once, the rest
    // asynchronously, with the later copies queued behind it.
    std::string big = "shared:" + std::string(200 * 1024, 'z');
    c.Write(big, true);
    for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(c.Read(got, &binary)) << i;
        EXPECT_TRUE(got == big);
        EXPECT_TRUE(binary);
    }
    // Mixed with ordinary sends, in order.
    c.Write("plain");
    c.Write("shared:x");
    ASSERT_TRUE(c.Read(got));
    EXPECT_EQ(got, "plain");
    for (int i = 0; i < 3; ++i) {
        ASSERT_TRUE(c.Read(got)) << i;
        EXPECT_EQ(got, "shared:x");
    }
    EXPECT_TRUE(c.Close());
    EXPECT_TRUE(WaitFor([&] { return SawClose(1000); }));
}

TEST_F(WebSocketTest, NonUpgradeRequestGetsNullptrAndANormalResponse) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(c.Send("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::string r = c.ReadUntil("not a websocket", 2000);
    EXPECT_EQ(r.rfind("HTTP/1.1 400 ", 0), 0u) << r;
    EXPECT_EQ(refused_.load(), 1);
    // The connection keeps serving HTTP.
    ASSERT_TRUE(c.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::string r2 = c.ReadUntil("hi", 2000);
    EXPECT_NE(r2.find("HTTP/1.1 200 OK\r\n"), std::string::npos) << r2;
    EXPECT_EQ(accepted_.load(), 0);
}

TEST_F(WebSocketTest, AThousandConcurrentSocketsEchoCorrectly) {
    constexpr int kClients = 1000;
    std::vector<std::unique_ptr<Client>> clients;
    clients.reserve(kClients);
    for (int i = 0; i < kClients; ++i) {
        clients.push_back(std::make_unique<Client>(ioc_));
        ASSERT_TRUE(clients.back()->Connect(port_, "/ws")) << i;
    }
    EXPECT_TRUE(WaitFor([&] { return server_->ActiveConnections() == kClients; }));
    for (int i = 0; i < kClients; ++i) {
        clients[i]->Write("message-" + std::to_string(i));
    }
    for (int i = 0; i < kClients; ++i) {
        std::string got;
        ASSERT_TRUE(clients[i]->Read(got)) << i;
        EXPECT_EQ(got, "message-" + std::to_string(i));
    }
    for (auto& c : clients) {
        c->Drop();
    }
    EXPECT_TRUE(WaitFor([&] { return server_->ActiveConnections() == 0; }));
    EXPECT_EQ(CloseCount(), static_cast<size_t>(kClients));
}

TEST_F(WebSocketTest, ServerShutdownClosesSocketsWith1001) {
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < 3; ++i) {
        clients.push_back(std::make_unique<Client>(ioc_));
        ASSERT_TRUE(clients.back()->Connect(port_, "/ws"));
    }
    EXPECT_TRUE(WaitFor([&] { return server_->ActiveConnections() == 3; }));
    std::atomic<bool> done{false};
    server_->Shutdown(5000ms, [&] { done = true; });
    for (auto& c : clients) {
        std::string got;
        EXPECT_FALSE(c->Read(got));
        EXPECT_EQ(c->error(), websocket::error::closed) << c->error().message();
        EXPECT_EQ(c->reason().code, 1001);
    }
    EXPECT_TRUE(WaitFor([&] { return done.load(); }));
    EXPECT_EQ(server_->ActiveConnections(), 0);
    EXPECT_TRUE(WaitFor([&] { return CloseCount() == 3; }));
}

}  // namespace
}  // namespace conduit::net
