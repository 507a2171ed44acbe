#include "net/http_server.hpp"

#include "fakes/test_support.hpp"
#include "net/router.hpp"

#include <gtest/gtest.h>

#include <atomic>

namespace conduit::net {
namespace {

using conduit::testing::RawClient;
using conduit::testing::WaitFor;
using namespace std::chrono_literals;

class HttpServerTest : public ::testing::Test {
protected:
    void SetUp() override {
        router_.Add("GET", "/hello",
                    [](const ExchangePtr& ex) { ex->Respond(Response::Text(200, "hi")); });
        router_.Add("POST", "/echo", [](const ExchangePtr& ex) {
            ex->Respond(Response::Text(200, ex->request().body));
        });
        router_.Add("GET", "/items/{id}", [](const ExchangePtr& ex) {
            ex->Respond(Response::Text(200, "item=" + ex->request().path_params.at(0)));
        });
        router_.Add("GET", "/stream", [](const ExchangePtr& ex) {
            ex->BeginStream(200, Headers{});
            auto n = std::make_shared<int>(0);
            auto tick = std::make_shared<std::function<void()>>();
            *tick = [ex, n, tick] {
                if (*n == 3) {
                    ex->EndStream();
                    *tick = nullptr;
                    return;
                }
                ex->Write("chunk" + std::to_string((*n)++) + ";");
                ex->loop().StartTimer(10ms, [tick] {
                    if (*tick) (*tick)();
                });
            };
            (*tick)();
        });
        router_.Add("GET", "/slow", [](const ExchangePtr& ex) {
            ex->loop().StartTimer(300ms, [ex] { ex->Respond(Response::Text(200, "slow")); });
        });
        router_.Add("GET", "/never", [this](const ExchangePtr& ex) {
            ex->SetOnClose([this] { closed_seen_ = true; });
            parked_.push_back(ex);  // keep it alive; never respond
        });
        ServerOptions opt;
        opt.host = "127.0.0.1";
        opt.port = 0;
        opt.max_body_bytes = 1024;
        opt.max_header_bytes = 2048;
        opt.header_timeout = 300ms;
        opt.body_timeout = 300ms;
        opt.error_response = [](int status, std::string_view msg) {
            return Response::Json(status, "{\"error\":\"" + std::string(msg) + "\"}");
        };
        server_ = std::make_unique<HttpServer>(rt_, opt, [this](const ExchangePtr& ex) {
            auto& req = ex->request();
            auto m = router_.Match(req.method, req.path(), req.path_params);
            if (m.handler == nullptr) {
                ex->Respond(Response::Text(m.path_matched ? 405 : 404, "no"));
                return;
            }
            (*m.handler)(ex);
        });
        auto port = server_->Start();
        ASSERT_TRUE(port.has_value());
        port_ = *port;
        rt_.Start();
    }
    void TearDown() override {
        rt_.Stop();
        parked_.clear();
    }

    Runtime rt_{2};
    Router router_;
    std::unique_ptr<HttpServer> server_;
    uint16_t port_ = 0;
    std::atomic<bool> closed_seen_{false};
    std::vector<ExchangePtr> parked_;  // touched only on loop threads before TearDown
};

TEST_F(HttpServerTest, ServesSimpleGetWithFraming) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(c.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::string r = c.ReadUntil("hi", 2000);
    EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
    EXPECT_NE(r.find("Content-Length: 2\r\n"), std::string::npos);
    EXPECT_NE(r.find("Date: "), std::string::npos);
    EXPECT_EQ(r.substr(r.size() - 2), "hi");
}

TEST_F(HttpServerTest, APortInUseIsRefusedNotShared) {
    // The shards use SO_REUSEPORT among themselves; a second server (another process, in real
    // life) must not be able to join the port and take part of the connections.
    Runtime other_rt{2};
    ServerOptions opt;
    opt.host = "127.0.0.1";
    opt.port = port_;
    HttpServer other(other_rt, opt,
                     [](const ExchangePtr& ex) { ex->Respond(Response::Text(200, "intruder")); });
    auto started = other.Start();
    ASSERT_FALSE(started.has_value());
    EXPECT_EQ(started.error().code, core::ErrorCode::kUnavailable);
    EXPECT_NE(started.error().message.find(std::to_string(port_)), std::string::npos);
    // Every connection still reaches the first server.
    for (int i = 0; i < 20; ++i) {
        RawClient c("127.0.0.1", port_);
        ASSERT_TRUE(c.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
        std::string r = c.ReadUntil("hi", 2000);
        EXPECT_EQ(r.substr(r.size() - 2), "hi") << r;
    }
}

TEST_F(HttpServerTest, KeepAliveAndPipelining) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(
        c.Send("GET /items/7 HTTP/1.1\r\nHost: x\r\n\r\nGET /ITEMS/8 HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::string r = c.ReadUntil("item=8", 2000);
    auto first = r.find("item=7");
    auto second = r.find("item=8");
    ASSERT_NE(first, std::string::npos) << r;
    ASSERT_NE(second, std::string::npos) << r;
    EXPECT_LT(first, second);
    // The connection is still usable afterwards.
    ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"));
    EXPECT_NE(c.ReadUntil("hello", 2000).find("hello"), std::string::npos);
}

TEST_F(HttpServerTest, RejectsOversizedBodyByContentLength) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"));
    bool closed = false;
    std::string r = c.ReadToClose(2000, &closed);
    EXPECT_EQ(r.rfind("HTTP/1.1 413", 0), 0u) << r;
    EXPECT_NE(r.find("exceeds the limit"), std::string::npos);
    EXPECT_TRUE(closed);
}

TEST_F(HttpServerTest, RejectsOversizedChunkedBody) {
    RawClient c("127.0.0.1", port_);
    std::string big(2000, 'a');
    char size[16];
    std::snprintf(size, sizeof(size), "%zx", big.size());
    ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                       std::string(size) + "\r\n" + big + "\r\n0\r\n\r\n"));
    bool closed = false;
    std::string r = c.ReadToClose(2000, &closed);
    EXPECT_EQ(r.rfind("HTTP/1.1 413", 0), 0u) << r;
}

TEST_F(HttpServerTest, PartialHeadersTimeOutWith408) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(c.Send("GET /hello HTTP/1.1\r\nHost: x\r\n"));  // never finishes
    bool closed = false;
    auto start = std::chrono::steady_clock::now();
    std::string r = c.ReadToClose(3000, &closed);
    auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(r.rfind("HTTP/1.1 408", 0), 0u) << r;
    EXPECT_TRUE(closed);
    EXPECT_LT(elapsed, 2500ms);
}

TEST_F(HttpServerTest, SlowBodyTimesOut) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"));
    bool closed = false;
    std::string r = c.ReadToClose(3000, &closed);
    EXPECT_EQ(r.rfind("HTTP/1.1 408", 0), 0u) << r;
    EXPECT_TRUE(closed);
}

TEST_F(HttpServerTest, MalformedRequestGets400) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(c.Send("THIS IS NOT HTTP\r\n\r\n"));
    bool closed = false;
    std::string r = c.ReadToClose(2000, &closed);
    EXPECT_EQ(r.rfind("HTTP/1.1 400", 0), 0u) << r;
}

TEST_F(HttpServerTest, HugeHeadersGet431) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(
        c.Send("GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4000, 'b') + "\r\n\r\n"));
    bool closed = false;
    std::string r = c.ReadToClose(2000, &closed);
    EXPECT_EQ(r.rfind("HTTP/1.1 431", 0), 0u) << r;
}

TEST_F(HttpServerTest, ExpectContinueIsAnswered) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(
        c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
               "Expect: 100-continue\r\n\r\n"));
    std::string r = c.ReadUntil("100 Continue\r\n\r\n", 2000);
    ASSERT_NE(r.find("HTTP/1.1 100 Continue"), std::string::npos) << r;
    ASSERT_TRUE(c.Send("data"));
    r = c.ReadUntil("data", 2000);
    EXPECT_NE(r.find("200 OK"), std::string::npos);
}

TEST_F(HttpServerTest, StreamsChunksAsTheyAreWritten) {
    RawClient c("127.0.0.1", port_);
    ASSERT_TRUE(c.Send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::string first = c.ReadUntil("chunk0;", 2000);
    // The first chunk arrives before the handler has written the last one.
    EXPECT_NE(first.find("Transfer-Encoding: chunked"), std::string::npos);
    EXPECT_EQ(first.find("chunk2;"), std::string::npos);
    std::string rest = c.ReadUntil("0\r\n\r\n", 2000);
    EXPECT_NE((first + rest).find("7\r\nchunk2;\r\n0\r\n\r\n"), std::string::npos);
}

TEST_F(HttpServerTest, ClientDisconnectIsSignalledWhileHandlerWaits) {
    {
        RawClient c("127.0.0.1", port_);
        ASSERT_TRUE(c.Send("GET /never HTTP/1.1\r\nHost: x\r\n\r\n"));
        ASSERT_TRUE(WaitFor([&] { return server_->InFlight() == 1; }));
    }
    EXPECT_TRUE(WaitFor([&] { return closed_seen_.load(); }));
    EXPECT_TRUE(WaitFor([&] { return server_->InFlight() == 0; }));
}

TEST_F(HttpServerTest, GracefulShutdownFinishesInFlightAndClosesIdle) {
    RawClient idle("127.0.0.1", port_);
    ASSERT_TRUE(idle.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_NE(idle.ReadUntil("hi", 2000).find("hi"), std::string::npos);
    ASSERT_TRUE(WaitFor([&] { return server_->InFlight() == 0; }));
    RawClient busy("127.0.0.1", port_);
    ASSERT_TRUE(busy.Send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_TRUE(WaitFor([&] { return server_->InFlight() == 1; }));
    std::atomic<bool> done{false};
    server_->Shutdown(5000ms, [&] { done = true; });
    bool closed = false;
    std::string r = busy.ReadToClose(3000, &closed);
    EXPECT_NE(r.find("200 OK"), std::string::npos) << r;
    EXPECT_NE(r.find("Connection: close"), std::string::npos);
    EXPECT_NE(r.find("slow"), std::string::npos);
    EXPECT_TRUE(closed);
    bool idle_closed = false;
    idle.ReadToClose(3000, &idle_closed);
    EXPECT_TRUE(idle_closed);
    EXPECT_TRUE(WaitFor([&] { return done.load(); }));
    // New connections are refused once the acceptors are closed.
    RawClient late("127.0.0.1", port_);
    EXPECT_FALSE(late.connected() && late.Send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n") &&
                 late.ReadUntil("hi", 500).find("hi") != std::string::npos);
}

}  // namespace
}  // namespace conduit::net
