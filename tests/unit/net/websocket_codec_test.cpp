#include "net/websocket_codec.hpp"

#include "fakes/fake_exchange.hpp"
#include "fakes/fake_loop.hpp"
#include "net/websocket.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace conduit::net {
namespace {

using Event = ws::FrameReader::Event;

Request Upgrade() {
    Request r;
    r.method = "GET";
    r.target = "/hub";
    r.headers.Add("Host", "x");
    r.headers.Add("Connection", "Upgrade");
    r.headers.Add("Upgrade", "websocket");
    r.headers.Add("Sec-WebSocket-Version", "13");
    r.headers.Add("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    return r;
}

TEST(WebSocketUpgradeTest, AcceptsAValidUpgrade) { EXPECT_TRUE(IsWebSocketUpgrade(Upgrade())); }

TEST(WebSocketUpgradeTest, HeaderNamesAndTokensAreCaseInsensitiveAndListsAllowed) {
    Request r;
    r.method = "GET";
    r.target = "/hub";
    r.headers.Add("connection", "keep-alive, Upgrade");
    r.headers.Add("UPGRADE", "WebSocket");
    r.headers.Add("sec-websocket-version", " 13 ");
    r.headers.Add("SEC-WEBSOCKET-KEY", " dGhlIHNhbXBsZSBub25jZQ== ");
    EXPECT_TRUE(IsWebSocketUpgrade(r));

    // The token may come in a repeated header.
    Request split = Upgrade();
    split.headers.Remove("Connection");
    split.headers.Add("Connection", "keep-alive");
    split.headers.Add("Connection", "upgrade");
    EXPECT_TRUE(IsWebSocketUpgrade(split));
}

TEST(WebSocketUpgradeTest, RejectsIncompleteOrInvalidRequests) {
    Request r = Upgrade();
    r.method = "POST";
    EXPECT_FALSE(IsWebSocketUpgrade(r));

    r = Upgrade();
    r.headers.Set("Connection", "keep-alive");
    EXPECT_FALSE(IsWebSocketUpgrade(r));

    r = Upgrade();
    r.headers.Set("Connection", "upgrades");  // a token, not a substring
    EXPECT_FALSE(IsWebSocketUpgrade(r));

    r = Upgrade();
    r.headers.Remove("Upgrade");
    EXPECT_FALSE(IsWebSocketUpgrade(r));

    r = Upgrade();
    r.headers.Set("Upgrade", "h2c");
    EXPECT_FALSE(IsWebSocketUpgrade(r));

    r = Upgrade();
    r.headers.Set("Sec-WebSocket-Version", "8");
    EXPECT_FALSE(IsWebSocketUpgrade(r));

    r = Upgrade();
    r.headers.Remove("Sec-WebSocket-Version");
    EXPECT_FALSE(IsWebSocketUpgrade(r));

    r = Upgrade();
    r.headers.Remove("Sec-WebSocket-Key");
    EXPECT_FALSE(IsWebSocketUpgrade(r));

    r = Upgrade();
    r.headers.Set("Sec-WebSocket-Key", "not-base64-of-16-bytes");
    EXPECT_FALSE(IsWebSocketUpgrade(r));
}

TEST(WebSocketCodecTest, AcceptKeyMatchesRfc6455Example) {
    EXPECT_EQ(ws::AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(WebSocketCodecTest, FrameHeaderLengthForms) {
    std::string h;
    ws::AppendFrameHeader(h, ws::Opcode::kText, 5);
    EXPECT_EQ(h, std::string("\x81\x05", 2));
    h.clear();
    ws::AppendFrameHeader(h, ws::Opcode::kBinary, 300);
    EXPECT_EQ(h, std::string("\x82\x7E\x01\x2C", 4));
    h.clear();
    ws::AppendFrameHeader(h, ws::Opcode::kBinary, 70000);
    EXPECT_EQ(h, std::string("\x82\x7F\x00\x00\x00\x00\x00\x01\x11\x70", 10));
}

TEST(WebSocketCodecTest, SharedFrameIsHeaderThenMessage) {
    SharedFrame f = MakeSharedFrame("hello");
    ASSERT_TRUE(f.bytes);
    EXPECT_EQ(*f.bytes, std::string("\x81\x05") + "hello");
    EXPECT_EQ(f.header, 2u);
    EXPECT_EQ(f.message(), "hello");
    EXPECT_FALSE(f.binary);

    std::string big(70000, 'q');
    SharedFrame b = MakeSharedFrame(big, true);
    EXPECT_EQ(b.bytes->substr(0, 10), std::string("\x82\x7F\x00\x00\x00\x00\x00\x01\x11\x70", 10));
    EXPECT_EQ(b.header, 10u);
    EXPECT_TRUE(b.message() == big);
    EXPECT_TRUE(b.binary);

    EXPECT_EQ(SharedFrame{}.message(), "");
}

TEST(WebSocketCodecTest, Utf8Validation) {
    EXPECT_TRUE(ws::IsValidUtf8("plain ascii text, long enough for the fast path"));
    EXPECT_TRUE(ws::IsValidUtf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"));
    EXPECT_FALSE(ws::IsValidUtf8("\xC0\xAF"));          // overlong
    EXPECT_FALSE(ws::IsValidUtf8("\xED\xA0\x80"));      // surrogate
    EXPECT_FALSE(ws::IsValidUtf8("\xF4\x90\x80\x80"));  // past U+10FFFF
    EXPECT_FALSE(ws::IsValidUtf8("abc\xE2\x82"));       // truncated
}

// A masked client frame.
std::string ClientFrame(uint8_t first_byte, std::string_view payload) {
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
        for (int s = 56; s >= 0; s -= 8) {
            f.push_back(static_cast<char>((n >> s) & 0xFF));
        }
    }
    const char mask[4] = {0x12, 0x34, 0x56, 0x78};
    f.append(mask, 4);
    for (size_t i = 0; i < n; ++i) {
        f.push_back(static_cast<char>(payload[i] ^ mask[i & 3]));
    }
    return f;
}

// Feeds `data` in pieces of `step` bytes (keeping back unconsumed header bytes like the server)
// and collects the events.
std::vector<Event> FeedAll(ws::FrameReader& reader, const std::string& data, size_t step) {
    std::vector<Event> events;
    std::string buf;
    size_t fed = 0;
    while (fed < data.size() || !buf.empty()) {
        if (fed < data.size()) {
            size_t n = std::min(step, data.size() - fed);
            buf.append(data, fed, n);
            fed += n;
        }
        size_t pos = 0;
        for (;;) {
            Event ev;
            size_t n = reader.Feed(std::string_view(buf).substr(pos), ev);
            pos += n;
            if (ev.kind != Event::Kind::kNone) {
                events.push_back(std::move(ev));
                continue;
            }
            if (n == 0) {
                break;
            }
        }
        buf.erase(0, pos);
        if (fed == data.size() && !buf.empty()) {
            break;  // an incomplete header at the end
        }
    }
    return events;
}

TEST(WebSocketCodecTest, ReassemblesFragmentsWithInterleavedControlFrames) {
    std::string big(100000, 'x');
    for (size_t i = 0; i < big.size(); ++i) {
        big[i] = static_cast<char>('a' + i % 26);
    }
    std::string wire;
    wire += ClientFrame(0x02, big.substr(0, 1000));  // binary, not final
    wire += ClientFrame(0x89, "p1");                 // ping in between
    for (size_t off = 1000; off < big.size(); off += 1000) {
        bool last = off + 1000 >= big.size();
        wire += ClientFrame(last ? 0x80 : 0x00, big.substr(off, 1000));
    }
    wire += ClientFrame(0x81, "hi");
    wire += ClientFrame(0x88, std::string("\x03\xE8", 2) + "bye");
    for (size_t step : {size_t{1}, size_t{7}, size_t{4096}, wire.size()}) {
        ws::FrameReader reader(128 * 1024);
        auto events = FeedAll(reader, wire, step);
        ASSERT_EQ(events.size(), 4u) << step;
        EXPECT_EQ(events[0].kind, Event::Kind::kPing);
        EXPECT_EQ(events[0].payload, "p1");
        EXPECT_EQ(events[1].kind, Event::Kind::kMessage);
        EXPECT_TRUE(events[1].binary);
        EXPECT_EQ(events[1].payload, big);
        EXPECT_EQ(events[2].kind, Event::Kind::kMessage);
        EXPECT_FALSE(events[2].binary);
        EXPECT_EQ(events[2].payload, "hi");
        EXPECT_EQ(events[3].kind, Event::Kind::kClose);
        EXPECT_EQ(events[3].code, 1000);
        EXPECT_EQ(events[3].payload, "bye");
    }
}

TEST(WebSocketCodecTest, TooBigMessageIsSkippedAndCloseStillRead) {
    ws::FrameReader reader(1000);
    std::string wire = ClientFrame(0x82, std::string(5000, 'z')) + ClientFrame(0x88, "");
    auto events = FeedAll(reader, wire, 300);
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0].kind, Event::Kind::kError);
    EXPECT_EQ(events[0].code, 1009);
    EXPECT_EQ(events[1].kind, Event::Kind::kClose);
    EXPECT_EQ(events[1].code, 1005);
    EXPECT_FALSE(reader.failed());
}

TEST(WebSocketCodecTest, ProtocolErrors) {
    auto first_error = [](const std::string& wire) {
        ws::FrameReader reader(1 << 20);
        for (auto& ev : FeedAll(reader, wire, wire.size())) {
            if (ev.kind == Event::Kind::kError) {
                return ev.code;
            }
        }
        return uint16_t{0};
    };
    std::string unmasked("\x81\x02hi", 4);
    EXPECT_EQ(first_error(unmasked), 1002);
    EXPECT_EQ(first_error(ClientFrame(0x80, "x")), 1002);  // continuation without a start
    EXPECT_EQ(first_error(ClientFrame(0x01, "a") + ClientFrame(0x81, "b")), 1002);
    EXPECT_EQ(first_error(ClientFrame(0x83, "x")), 1002);                    // unknown opcode
    EXPECT_EQ(first_error(ClientFrame(0xC1, "x")), 1002);                    // RSV1 (no deflate)
    EXPECT_EQ(first_error(ClientFrame(0x09, "p")), 1002);                    // fragmented ping
    EXPECT_EQ(first_error(ClientFrame(0x89, std::string(126, 'p'))), 1002);  // long control
    EXPECT_EQ(first_error(ClientFrame(0x88, "\x03")), 1002);                 // 1-byte close
    EXPECT_EQ(first_error(ClientFrame(0x88, std::string("\x03\xED", 2))), 1002);  // code 1005
    EXPECT_EQ(first_error(ClientFrame(0x81, "\xC0\xAF")), 1007);
    EXPECT_EQ(first_error(ClientFrame(0x81, "fine")), 0);
}

TEST(WebSocketCodecTest, ClosePayloadCutsLongReasonsOnCharacterBoundaries) {
    std::string reason;
    for (int i = 0; i < 100; ++i) {
        reason += "\xC3\xA9";  // 2 bytes each
    }
    std::string p = ws::ClosePayload(4000, reason);
    EXPECT_LE(p.size(), 125u);
    EXPECT_EQ(static_cast<unsigned char>(p[0]), 4000 >> 8);
    EXPECT_EQ(static_cast<unsigned char>(p[1]), 4000 & 0xFF);
    EXPECT_TRUE(ws::IsValidUtf8(p.substr(2)));
}

TEST(FakeWebSocketTest, FakeExchangeAcceptsUpgradesAndPlaysTheClient) {
    conduit::testing::FakeLoop loop;
    auto plain = conduit::testing::FakeExchange::Make(loop, "GET", "/hub");
    EXPECT_EQ(plain->AcceptWebSocket({}, {}), nullptr);
    EXPECT_FALSE(plain->started());

    auto ex = conduit::testing::FakeExchange::MakeWebSocketUpgrade(loop, "/hub");
    Headers h;
    h.Add("Sec-WebSocket-Protocol", "json");
    WebSocketOptions opt;
    opt.max_buffered_bytes = 10;
    auto ws = ex->AcceptWebSocket(h, opt);
    ASSERT_NE(ws, nullptr);
    EXPECT_EQ(ex->status(), 101);
    EXPECT_EQ(ex->headers().Get("sec-websocket-protocol"), "json");
    EXPECT_EQ(ex->AcceptWebSocket({}, {}), nullptr);  // once

    std::vector<std::string> got;
    uint16_t closed = 0;
    ws->SetOnMessage([&](std::string m, bool) {
        got.push_back(m);
        ws->Send("echo:" + m);
    });
    ws->SetOnClose([&](uint16_t code) { closed = code; });
    auto fake = ex->websocket();
    fake->ClientMessage("a");
    EXPECT_EQ(got, std::vector<std::string>{"a"});
    EXPECT_EQ(fake->sent_messages(), std::vector<std::string>{"echo:a"});

    fake->StopReading();
    ws->Send("0123456789abc");  // over max_buffered_bytes
    EXPECT_TRUE(ws->closed());
    EXPECT_EQ(fake->close_code(), 1008);
    EXPECT_EQ(closed, 0);  // posted, like the real socket
    loop.RunPending();
    EXPECT_EQ(closed, 1008);

    auto ex2 = conduit::testing::FakeExchange::MakeWebSocketUpgrade(loop, "/hub");
    auto ws2 = ex2->AcceptWebSocket({}, {});
    uint16_t closed2 = 0;
    ws2->SetOnClose([&](uint16_t code) { closed2 = code; });
    ex2->websocket()->Drop();
    EXPECT_EQ(closed2, 1006);
}

}  // namespace
}  // namespace conduit::net
