#include "realtime/hub_server.hpp"

#include "bus/backplane.hpp"
#include "fakes/fake_exchange.hpp"
#include "fakes/fake_loop.hpp"
#include "realtime/transports.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

#include <thread>

namespace conduit::realtime {
namespace {

using testing::FakeExchange;
using testing::FakeLoop;
namespace bj = boost::json;
using namespace std::chrono_literals;

std::string R(std::string_view s) { return std::string(s) + '\x1e'; }

/// Minimal client-playing WebSocket (the shared fake is not committed yet).
class TestSocket final : public net::WebSocket {
public:
    explicit TestSocket(core::Loop& loop) : loop_(loop) {}
    core::Loop& loop() override { return loop_; }
    void Send(std::string message, bool /*binary*/) override {
        if (!closed_) {
            sent.push_back(std::move(message));
        }
    }
    void SendShared(const net::SharedFrame& frame) override {
        if (!closed_) {
            shared_frames.push_back(frame.bytes);
            sent.emplace_back(frame.message());
        }
    }
    void Close(uint16_t code, std::string /*reason*/) override { Gone(code); }
    void Abort() override { Gone(1006); }
    void SetOnMessage(std::function<void(std::string, bool)> fn) override {
        on_message_ = std::move(fn);
    }
    void SetOnClose(std::function<void(uint16_t)> fn) override { on_close_ = std::move(fn); }
    void SetOnDrain(std::function<void()> /*fn*/) override {}
    size_t BufferedBytes() const override { return 0; }
    bool closed() const override { return closed_; }
    const std::string& remote() const override { return remote_; }
    /// Frames received through SendShared (broadcasts).
    std::vector<std::shared_ptr<const std::string>> shared_frames;

    void ClientSend(std::string m) {
        if (!closed_ && on_message_) {
            on_message_(std::move(m), false);
        }
    }
    void Gone(uint16_t code) {
        if (closed_) {
            return;
        }
        closed_ = true;
        close_code = code;
        auto fn = std::move(on_close_);
        on_close_ = nullptr;
        on_message_ = nullptr;
        if (fn) {
            fn(code);
        }
    }
    std::string Last() const { return sent.empty() ? std::string() : sent.back(); }

    std::vector<std::string> sent;
    uint16_t close_code = 0;

private:
    core::Loop& loop_;
    bool closed_ = false;
    std::string remote_ = "127.0.0.1:1";
    std::function<void(std::string, bool)> on_message_;
    std::function<void(uint16_t)> on_close_;
};

std::shared_ptr<Hub> TestHub(std::vector<std::string>* log) {
    auto hub = std::make_shared<Hub>();
    hub->On(
        "Echo", [](CallContext&, const bj::array& a) { return HubResult::Value(a[0]); }, 1);
    hub->On("Fail", [](CallContext&, const bj::array&) -> HubResult { throw 1; });
    hub->On("Oops", [](CallContext&, const bj::array&) { return HubResult::Exception("nope"); });
    hub->On("Broadcast", [](CallContext& ctx, const bj::array& a) {
        ctx.hub->SendToAll("ReceiveMessage", bj::array{"server", a[0]});
        return HubResult::Void();
    });
    hub->On("JoinGroup", [](CallContext& ctx, const bj::array& a) {
        ctx.hub->AddToGroup(ctx.connection->id(), std::string(a[0].as_string()));
        return HubResult::Void();
    });
    hub->On("LeaveGroup", [](CallContext& ctx, const bj::array& a) {
        ctx.hub->RemoveFromGroup(ctx.connection->id(), a[0].as_string());
        return HubResult::Void();
    });
    hub->On("SendToGroup", [](CallContext& ctx, const bj::array& a) {
        ctx.hub->SendToGroup(a[0].as_string(), "ReceiveMessage", bj::array{a[1]});
        return HubResult::Void();
    });
    hub->OnStream("Counter", [](CallContext&, const bj::array& a, std::shared_ptr<StreamWriter> w) {
        const int64_t n = a[0].as_int64();
        for (int64_t i = 0; i < n; ++i) {
            w->Write(bj::value(i));
        }
        w->Complete();
    });
    hub->OnStream("Forever",
                  [log](CallContext&, const bj::array&, std::shared_ptr<StreamWriter> w) {
                      w->Write(bj::value(0));
                      w->SetOnCancel([log] { log->push_back("cancelled"); });
                  });
    hub->OnAsync("UploadSum", [](CallContext& ctx, const bj::array&, Completer done) {
        auto sum = std::make_shared<int64_t>(0);
        ctx.streams.at(0)->Consume(
            [sum](const bj::value& v) { *sum += v.as_int64(); },
            [sum, done](std::optional<std::string>) { done(HubResult::Value(*sum)); });
    });
    hub->On("CloseMe", [](CallContext& ctx, const bj::array&) {
        ctx.connection->Close(std::string("Bye"), true);
        return HubResult::Void();
    });
    hub->OnConnected([log](HubConnection& c, HubContext&) -> std::optional<std::string> {
        log->push_back("connected:" + c.id());
        return std::nullopt;
    });
    hub->OnDisconnected([log](HubConnection& c, HubContext&, std::optional<std::string> e) {
        log->push_back("disconnected:" + c.id() + ":" + e.value_or(""));
    });
    return hub;
}

class RealtimeServerTest : public ::testing::Test {
protected:
    void SetUp() override { Make({}); }
    void Make(HubOptions o, bus::Backplane* backplane = nullptr, InvocationGate gate = {}) {
        server.reset();
        auto hub = TestHub(&log);
        if (gate) {
            hub->OnInvocation(std::move(gate));
        }
        server = std::make_shared<HubServer>(
            std::move(hub), std::move(o), backplane, [this](const net::ExchangePtr& ex) {
                auto fex = std::static_pointer_cast<FakeExchange>(ex);
                fex->Respond(net::Response{101, {}, {}});
                sockets.push_back(std::make_shared<TestSocket>(loop));
                return sockets.back();
            });
    }
    void TearDown() override {
        loop.RunPending();
        server.reset();
    }

    bj::object Negotiate(std::string query = "?negotiateVersion=1") {
        auto ex = FakeExchange::Make(loop, "POST", "/hub/negotiate" + query);
        server->HandleNegotiate(ex);
        EXPECT_EQ(ex->status(), 200);
        return bj::parse(ex->body()).as_object();
    }
    std::shared_ptr<FakeExchange> Get(std::string target, net::Headers h = {}) {
        auto ex = FakeExchange::Make(loop, "GET", std::move(target), {}, std::move(h));
        server->HandleGet(ex);
        loop.RunPending();
        return ex;
    }
    std::shared_ptr<FakeExchange> Post(std::string target, std::string body) {
        auto ex = FakeExchange::Make(loop, "POST", std::move(target), std::move(body));
        server->HandlePost(ex);
        loop.RunPending();
        return ex;
    }
    net::Headers WsHeaders() {
        net::Headers h;
        h.Add("Upgrade", "websocket");
        h.Add("Connection", "Upgrade");
        return h;
    }
    /// Negotiates and connects a WebSocket through the handshake.
    std::shared_ptr<TestSocket> Connect(std::string* token = nullptr,
                                        std::string extra = "",
                                        int version = 1) {
        auto n = Negotiate("?negotiateVersion=1" + extra);
        std::string t(n["connectionToken"].as_string());
        if (token != nullptr) {
            *token = t;
        }
        Get("/hub?id=" + t, WsHeaders());
        auto ws = sockets.back();
        ws->ClientSend(R("{\"protocol\":\"json\",\"version\":" + std::to_string(version) + "}"));
        EXPECT_EQ(ws->Last(), R("{}"));
        ws->sent.clear();
        return ws;
    }

    /// FakeLoop fires a re-armed timer once per AdvanceBy: step one heartbeat at a time.
    void Advance(int seconds) {
        for (int i = 0; i < seconds; ++i) {
            loop.AdvanceBy(std::chrono::seconds(1));
        }
    }

    FakeLoop loop;
    std::vector<std::string> log;
    std::vector<std::shared_ptr<TestSocket>> sockets;
    std::shared_ptr<HubServer> server;
};

TEST_F(RealtimeServerTest, NegotiateVersion1) {
    auto n = Negotiate();
    EXPECT_EQ(n["negotiateVersion"].as_int64(), 1);
    EXPECT_EQ(n["connectionId"].as_string().size(), 22u);
    EXPECT_EQ(n["connectionToken"].as_string().size(), 22u);
    EXPECT_NE(n["connectionId"], n["connectionToken"]);
    EXPECT_FALSE(n.contains("useStatefulReconnect"));
    EXPECT_FALSE(n.contains("ProtocolVersion"));
    EXPECT_EQ(bj::serialize(n["availableTransports"]),
              "[{\"transport\":\"WebSockets\",\"transferFormats\":[\"Text\",\"Binary\"]},"
              "{\"transport\":\"ServerSentEvents\",\"transferFormats\":[\"Text\"]},"
              "{\"transport\":\"LongPolling\",\"transferFormats\":[\"Text\",\"Binary\"]}]");
    EXPECT_EQ(server->ConnectionCount(), 1u);
}

TEST_F(RealtimeServerTest, NegotiateVersion0StatefulAndErrors) {
    auto n = Negotiate("");
    EXPECT_EQ(n["negotiateVersion"].as_int64(), 0);
    EXPECT_FALSE(n.contains("connectionToken"));
    // At version 0 the connection id is the token.
    EXPECT_TRUE(server->FindByToken(n["connectionId"].as_string()));

    n = Negotiate("?NegotiateVersion=5&UseStatefulReconnect=true");
    EXPECT_EQ(n["negotiateVersion"].as_int64(), 1);
    EXPECT_TRUE(n["useStatefulReconnect"].as_bool());

    n = Negotiate("?negotiateVersion=abc");
    EXPECT_EQ(n["error"].as_string(), "The client requested an invalid protocol version 'abc'");
}

TEST_F(RealtimeServerTest, AuthenticationHookOnEveryRequest) {
    HubOptions o;
    std::vector<std::string> seen;
    o.authenticate = [&seen](const net::Request&,
                             std::string_view token) -> std::optional<Principal> {
        seen.emplace_back(token);
        if (token != "tok-123") {
            return std::nullopt;
        }
        return Principal{"user-1", nullptr};
    };
    Make(o);
    auto bad = FakeExchange::Make(loop, "POST", "/hub/negotiate?negotiateVersion=1");
    server->HandleNegotiate(bad);
    EXPECT_EQ(bad->status(), 401);

    net::Headers h;
    h.Add("Authorization", "Bearer tok-123");
    auto ok = FakeExchange::Make(loop, "POST", "/hub/negotiate?negotiateVersion=1", {}, h);
    server->HandleNegotiate(ok);
    ASSERT_EQ(ok->status(), 200);
    auto token = std::string(bj::parse(ok->body()).at("connectionToken").as_string());
    EXPECT_EQ(server->FindByToken(token)->principal().user_id, "user-1");

    net::Headers sse;
    sse.Add("Accept", "text/event-stream");
    EXPECT_EQ(Get("/hub?id=" + token, sse)->status(), 401);
    auto ex = Get("/hub?id=" + token + "&access_token=tok-123", sse);
    EXPECT_EQ(ex->status(), 200);
    EXPECT_EQ(seen.back(), "tok-123");
}

TEST_F(RealtimeServerTest, WebSocketRpcCompletionsAndErrors) {
    auto ws = Connect();
    ASSERT_EQ(log.size(), 1u);
    EXPECT_EQ(log[0].rfind("connected:", 0), 0u);
    ws->ClientSend(
        R("{\"type\":6}") +
        R("{\"target\":\"Echo\",\"arguments\":[\"hello\"],\"invocationId\":\"0\",\"type\":1}"));
    ASSERT_EQ(ws->sent.size(), 1u);
    EXPECT_EQ(ws->sent[0], R("{\"type\":3,\"invocationId\":\"0\",\"result\":\"hello\"}"));
    ws->sent.clear();
    ws->ClientSend(R("{\"target\":\"Echo\",\"arguments\":[\"fire-and-forget\"],\"type\":1}"));
    EXPECT_TRUE(ws->sent.empty());
    ws->ClientSend(R("{\"target\":\"Fail\",\"arguments\":[],\"invocationId\":\"6\",\"type\":1}"));
    ws->ClientSend(R("{\"target\":\"oops\",\"arguments\":[],\"invocationId\":\"7\",\"type\":1}"));
    ws->ClientSend(R("{\"target\":\"Nope\",\"arguments\":[],\"invocationId\":\"8\",\"type\":1}"));
    ws->ClientSend(
        R("{\"target\":\"Echo\",\"arguments\":[1,2],\"invocationId\":\"9\",\"type\":1}"));
    ws->ClientSend(
        R("{\"target\":\"Counter\",\"arguments\":[1],\"invocationId\":\"10\",\"type\":1}"));
    ASSERT_EQ(ws->sent.size(), 5u);
    EXPECT_EQ(ws->sent[0], R("{\"type\":3,\"invocationId\":\"6\",\"error\":\"An unexpected error "
                             "occurred invoking 'Fail' on the server.\"}"));
    EXPECT_EQ(ws->sent[1], R("{\"type\":3,\"invocationId\":\"7\",\"error\":\"An unexpected error "
                             "occurred invoking 'Oops' on the server. HubException: nope\"}"));
    EXPECT_EQ(ws->sent[2], R("{\"type\":3,\"invocationId\":\"8\",\"error\":\"Unknown hub method "
                             "'Nope'\"}"));
    EXPECT_EQ(ws->sent[3], R("{\"type\":3,\"invocationId\":\"9\",\"error\":\"Failed to invoke "
                             "'Echo' due to an error on the server. InvalidDataException: "
                             "Invocation provides 2 argument(s) but target expects 1.\"}"));
    EXPECT_EQ(ws->sent[4], R("{\"type\":3,\"invocationId\":\"10\",\"error\":\"The client attempted "
                             "to invoke the streaming 'Counter' method with a non-streaming "
                             "invocation.\"}"));
    // A malformed message closes the connection with an error.
    ws->sent.clear();
    ws->ClientSend(R("{\"type\":1}"));
    EXPECT_EQ(ws->sent.at(0), R("{\"type\":7,\"error\":\"Connection closed with an error.\"}"));
    EXPECT_EQ(ws->close_code, 1000);
    EXPECT_EQ(server->ConnectionCount(), 0u);
    EXPECT_EQ(log.back().rfind("disconnected:", 0), 0u);
}

TEST_F(RealtimeServerTest, InvocationGateRunsFirstKeepsOrderAndRefusesWithAHubException) {
    std::vector<std::function<void(std::optional<std::string>)>> waiting;
    std::vector<std::string> gated;
    Make({}, nullptr, [&](CallContext& ctx, std::function<void(std::optional<std::string>)> go) {
        gated.push_back(ctx.method);
        if (ctx.method == "Oops") {
            go(std::nullopt);  // answered at once: runs inline
            return;
        }
        waiting.push_back(std::move(go));
    });
    auto ws = Connect();
    ws->ClientSend(
        R("{\"target\":\"Echo\",\"arguments\":[\"a\"],\"invocationId\":\"1\",\"type\":1}") +
        R("{\"target\":\"Echo\",\"arguments\":[\"b\"],\"invocationId\":\"2\",\"type\":1}"));
    // The first waits in the gate; the second waits behind it (order is kept).
    ASSERT_EQ(waiting.size(), 1u);
    EXPECT_TRUE(ws->sent.empty());
    waiting[0](std::nullopt);
    ASSERT_EQ(ws->sent.size(), 1u);
    EXPECT_EQ(ws->sent[0], R("{\"type\":3,\"invocationId\":\"1\",\"result\":\"a\"}"));
    ASSERT_EQ(waiting.size(), 2u);
    waiting[0](std::string("again"));  // a second answer is ignored
    EXPECT_EQ(ws->sent.size(), 1u);
    // Refused from another thread: the answer is posted to the connection's loop.
    std::thread([go = waiting[1]] { go(std::string("Rate limit exceeded: slow down")); }).join();
    loop.RunPending();
    ASSERT_EQ(ws->sent.size(), 2u);
    EXPECT_EQ(ws->sent[1], R("{\"type\":3,\"invocationId\":\"2\",\"error\":\"An unexpected error "
                             "occurred invoking 'Echo' on the server. HubException: Rate limit "
                             "exceeded: slow down\"}"));
    // Inline answers, several in one frame; unknown methods never reach the gate.
    ws->ClientSend(R("{\"target\":\"Oops\",\"arguments\":[],\"invocationId\":\"3\",\"type\":1}") +
                   R("{\"target\":\"Nope\",\"arguments\":[],\"invocationId\":\"4\",\"type\":1}") +
                   R("{\"target\":\"Oops\",\"arguments\":[],\"invocationId\":\"5\",\"type\":1}"));
    ASSERT_EQ(ws->sent.size(), 5u);
    EXPECT_NE(ws->sent[2].find("\"invocationId\":\"3\""), std::string::npos);
    EXPECT_NE(ws->sent[3].find("Unknown hub method 'Nope'"), std::string::npos);
    EXPECT_NE(ws->sent[4].find("\"invocationId\":\"5\""), std::string::npos);
    EXPECT_EQ(gated, (std::vector<std::string>{"Echo", "Echo", "Oops", "Oops"}));
    // A gate answering after the connection closed does nothing.
    ws->ClientSend(
        R("{\"target\":\"Echo\",\"arguments\":[\"c\"],\"invocationId\":\"6\",\"type\":1}"));
    ASSERT_EQ(waiting.size(), 3u);
    ws->Gone(1001);  // the client went away
    loop.RunPending();
    const size_t before = ws->sent.size();
    waiting[2](std::nullopt);
    loop.RunPending();
    EXPECT_EQ(ws->sent.size(), before);
}

TEST_F(RealtimeServerTest, StreamsBothWays) {
    auto ws = Connect();
    ws->ClientSend(
        R("{\"target\":\"Counter\",\"arguments\":[3],\"invocationId\":\"2\",\"type\":4}"));
    ASSERT_EQ(ws->sent.size(), 4u);
    EXPECT_EQ(ws->sent[0], R("{\"type\":2,\"invocationId\":\"2\",\"item\":0}"));
    EXPECT_EQ(ws->sent[2], R("{\"type\":2,\"invocationId\":\"2\",\"item\":2}"));
    EXPECT_EQ(ws->sent[3], R("{\"type\":3,\"invocationId\":\"2\"}"));
    ws->sent.clear();

    ws->ClientSend(
        R("{\"target\":\"UploadSum\",\"arguments\":[],\"invocationId\":\"4\","
          "\"streamIds\":[\"3\"],\"type\":1}"));
    ws->ClientSend(R("{\"invocationId\":\"3\",\"item\":1,\"type\":2}") +
                   R("{\"invocationId\":\"3\",\"item\":2,\"type\":2}"));
    ws->ClientSend(R("{\"invocationId\":\"3\",\"item\":3,\"type\":2}"));
    EXPECT_TRUE(ws->sent.empty());
    ws->ClientSend(R("{\"invocationId\":\"3\",\"type\":3}"));
    ASSERT_EQ(ws->sent.size(), 1u);
    EXPECT_EQ(ws->sent[0], R("{\"type\":3,\"invocationId\":\"4\",\"result\":6}"));
    ws->sent.clear();

    ws->ClientSend(
        R("{\"target\":\"Forever\",\"arguments\":[],\"invocationId\":\"5\",\"type\":4}"));
    ws->ClientSend(R("{\"type\":5,\"invocationId\":\"5\"}"));
    ws->ClientSend(R("{\"type\":5,\"invocationId\":\"unknown\"}"));
    EXPECT_EQ(log.back(), "cancelled");
    // Invocations keep working after a stream.
    ws->ClientSend(R("{\"target\":\"Echo\",\"arguments\":[1],\"invocationId\":\"6\",\"type\":1}"));
    EXPECT_EQ(ws->Last(), R("{\"type\":3,\"invocationId\":\"6\",\"result\":1}"));
}

TEST_F(RealtimeServerTest, UploadBufferOverflowCloses) {
    HubOptions o;
    o.stream_buffer_capacity = 2;
    Make(o);
    auto ws = Connect();
    // The method does not consume: items beyond the buffer close the connection.
    ws->ClientSend(
        R("{\"target\":\"Echo\",\"arguments\":[1],\"invocationId\":\"1\","
          "\"streamIds\":[\"s\"],\"type\":1}"));
    ws->sent.clear();
    for (int i = 0; i < 3; ++i) {
        ws->ClientSend(R("{\"invocationId\":\"s\",\"item\":1,\"type\":2}"));
    }
    EXPECT_EQ(ws->Last(), R("{\"type\":7,\"error\":\"Connection closed with an error.\"}"));
}

TEST_F(RealtimeServerTest, HandshakeErrorsAndLimits) {
    auto n = Negotiate();
    std::string t(n["connectionToken"].as_string());
    Get("/hub?id=" + t, WsHeaders());
    auto ws = sockets.back();
    ws->ClientSend(R("{\"protocol\":\"messagepack\",\"version\":1}"));
    EXPECT_EQ(ws->Last(), R("{\"error\":\"The protocol 'messagepack' is not supported.\"}"));
    EXPECT_TRUE(ws->closed());
    EXPECT_TRUE(log.empty());  // OnConnected never ran

    ws = Connect();
    ws->ClientSend(R("{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"" + std::string(40000, 'x') +
                     "\"],\"invocationId\":\"1\"}"));
    EXPECT_EQ(ws->Last(), R("{\"type\":7,\"error\":\"Connection closed with an error.\"}"));
    EXPECT_TRUE(ws->closed());

    ws = Connect();
    ws->ClientSend(R("{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"" + std::string(30000, 'x') +
                     "\"],\"invocationId\":\"1\"}"));
    EXPECT_EQ(ws->Last().size(), 30000u + 42u);
}

TEST_F(RealtimeServerTest, TimersPingTimeoutHandshakeAndReap) {
    auto ws = Connect();
    Advance(14);
    EXPECT_TRUE(ws->sent.empty());
    Advance(1);
    ASSERT_EQ(ws->sent.size(), 1u);
    EXPECT_EQ(ws->sent[0], R("{\"type\":6}"));
    ws->ClientSend(R("{\"type\":6}"));
    // Deadlines are one heartbeat later than the timeout (never early, see the test below).
    Advance(30);
    EXPECT_FALSE(ws->closed());
    Advance(1);
    EXPECT_TRUE(ws->closed());
    EXPECT_EQ(log.back().substr(log.back().size() - 23), "Client timeout elapsed.");

    // Handshake timeout.
    auto n = Negotiate();
    Get("/hub?id=" + std::string(n["connectionToken"].as_string()), WsHeaders());
    auto ws2 = sockets.back();
    Advance(15);
    EXPECT_FALSE(ws2->closed());
    Advance(1);
    EXPECT_EQ(ws2->Last(), R("{\"error\":\"Handshake was canceled.\"}"));
    EXPECT_TRUE(ws2->closed());

    // A negotiated connection that never connects is reaped.
    Negotiate();
    EXPECT_EQ(server->ConnectionCount(), 1u);
    Advance(15);
    EXPECT_EQ(server->ConnectionCount(), 1u);
    Advance(1);
    EXPECT_EQ(server->ConnectionCount(), 0u);
}

// Regression: the shard clock moves once per heartbeat, so an event just before a tick carries
// the previous tick's time. The timeouts measured from it used to end up to one heartbeat early
// (a configured 1 s handshake timeout could fire a few milliseconds after the upgrade).
TEST_F(RealtimeServerTest, TimeoutsNeverEndEarlyBetweenHeartbeats) {
    // Handshake timeout: the upgrade arrives 999 ms into a heartbeat.
    auto n = Negotiate();  // starts the shard heartbeat
    loop.AdvanceBy(std::chrono::milliseconds(999));
    Get("/hub?id=" + std::string(n["connectionToken"].as_string()), WsHeaders());
    auto ws = sockets.back();
    loop.AdvanceBy(std::chrono::milliseconds(1));
    Advance(14);  // 14.001 s after the upgrade
    EXPECT_FALSE(ws->closed());
    Advance(1);  // 15.001 s
    EXPECT_TRUE(ws->closed());
    EXPECT_EQ(ws->Last(), R("{\"error\":\"Handshake was canceled.\"}"));

    // Client timeout: the last message arrives 999 ms into a heartbeat.
    auto c = Connect();
    loop.AdvanceBy(std::chrono::milliseconds(999));
    c->ClientSend(R("{\"type\":6}"));
    loop.AdvanceBy(std::chrono::milliseconds(1));
    Advance(29);  // 29.001 s of silence
    EXPECT_FALSE(c->closed());
    Advance(1);  // 30.001 s
    EXPECT_TRUE(c->closed());

    // Reaping of a connection that never connects.
    loop.AdvanceBy(std::chrono::milliseconds(999));
    Negotiate();
    loop.AdvanceBy(std::chrono::milliseconds(1));
    Advance(14);
    EXPECT_EQ(server->ConnectionCount(), 1u);
    Advance(1);
    EXPECT_EQ(server->ConnectionCount(), 0u);
}

TEST_F(RealtimeServerTest, ServerCloseAndConflicts) {
    std::string token;
    auto ws = Connect(&token);
    EXPECT_EQ(Get("/hub?id=" + token, WsHeaders())->status(), 409);
    EXPECT_EQ(Post("/hub?id=" + token, "x")->status(), 405);
    auto del = FakeExchange::Make(loop, "DELETE", "/hub?id=" + token);
    server->HandleDelete(del);
    EXPECT_EQ(del->status(), 400);
    ws->ClientSend(
        R("{\"target\":\"CloseMe\",\"arguments\":[],\"invocationId\":\"1\",\"type\":1}"));
    EXPECT_EQ(ws->Last(), R("{\"type\":7,\"error\":\"Bye\",\"allowReconnect\":true}"));
    EXPECT_EQ(ws->close_code, 1000);
    EXPECT_EQ(Get("/hub?id=" + token, WsHeaders())->status(), 404);
}

TEST_F(RealtimeServerTest, ServerSentEvents) {
    auto n = Negotiate();
    std::string t(n["connectionToken"].as_string());
    net::Headers h;
    h.Add("Accept", "text/event-stream");
    EXPECT_EQ(Get("/hub", h)->status(), 400);
    EXPECT_EQ(Get("/hub?id=nope", h)->status(), 404);
    auto sse = Get("/hub?id=" + t, h);
    EXPECT_EQ(sse->status(), 200);
    EXPECT_EQ(sse->headers().Get("Content-Type"), "text/event-stream");
    EXPECT_EQ(sse->body(), ":\r\n");
    EXPECT_EQ(Get("/hub?id=" + t, h)->status(), 409);
    EXPECT_EQ(Get("/hub?id=" + t)->status(), 400);  // a poll after SSE
    EXPECT_EQ(Post("/hub?id=" + t, R("{\"protocol\":\"json\",\"version\":1}"))->status(), 200);
    EXPECT_EQ(sse->body(), ":\r\ndata: {}\x1e\r\n\r\n");
    Post("/hub?id=" + t,
         R("{\"target\":\"Echo\",\"arguments\":[\"a\"],\"invocationId\":\"0\",\"type\":1}"));
    EXPECT_TRUE(sse->body().ends_with(
        "\r\n\r\ndata: {\"type\":3,\"invocationId\":\"0\",\"result\":\"a\"}\x1e\r\n\r\n"));
    // The client closing the GET ends the connection; a late POST gets 404.
    sse->Disconnect();
    loop.RunPending();
    EXPECT_EQ(server->ConnectionCount(), 0u);
    EXPECT_EQ(Post("/hub?id=" + t, R("{\"type\":7}"))->status(), 404);
    EXPECT_EQ(FormatSseEvent("a\r\nb\nc"), "data: a\r\ndata: b\r\ndata: c\r\n\r\n");
}

TEST_F(RealtimeServerTest, LongPolling) {
    auto n = Negotiate();
    std::string t(n["connectionToken"].as_string());
    auto first = Get("/hub?id=" + t + "&_=1");
    EXPECT_EQ(first->status(), 200);
    EXPECT_EQ(first->body(), "");
    EXPECT_EQ(first->headers().Get("Content-Type"), "application/octet-stream");
    auto poll = Get("/hub?id=" + t + "&_=2");
    EXPECT_FALSE(poll->started());
    Post("/hub?id=" + t, R("{\"protocol\":\"json\",\"version\":1}"));
    EXPECT_EQ(poll->status(), 200);
    EXPECT_EQ(poll->body(), R("{}"));
    // Queued between polls, delivered together.
    Post("/hub?id=" + t,
         R("{\"target\":\"Echo\",\"arguments\":[1],\"invocationId\":\"0\",\"type\":1}") +
             R("{\"target\":\"Echo\",\"arguments\":[2],\"invocationId\":\"1\",\"type\":1}"));
    poll = Get("/hub?id=" + t);
    EXPECT_EQ(poll->body(), R("{\"type\":3,\"invocationId\":\"0\",\"result\":1}") +
                                R("{\"type\":3,\"invocationId\":\"1\",\"result\":2}"));
    // No pings on long polling; a held poll ends with 200 empty after the hold.
    poll = Get("/hub?id=" + t);
    Advance(89);
    EXPECT_FALSE(poll->started());
    Advance(1);
    EXPECT_EQ(poll->status(), 200);
    EXPECT_EQ(poll->body(), "");
    // A newer poll ends the held one with 204.
    poll = Get("/hub?id=" + t);
    auto newer = Get("/hub?id=" + t);
    EXPECT_EQ(poll->status(), 204);
    EXPECT_FALSE(newer->started());
    auto del = FakeExchange::Make(loop, "DELETE", "/hub?id=" + t);
    server->HandleDelete(del);
    loop.RunPending();
    EXPECT_EQ(del->status(), 202);
    EXPECT_EQ(newer->status(), 204);
    EXPECT_EQ(server->ConnectionCount(), 0u);
}

TEST_F(RealtimeServerTest, LongPollingReapedWhenIdle) {
    auto n = Negotiate();
    std::string t(n["connectionToken"].as_string());
    Get("/hub?id=" + t);
    Post("/hub?id=" + t, R("{\"protocol\":\"json\",\"version\":1}"));
    Advance(10);
    EXPECT_EQ(server->ConnectionCount(), 1u);
    Advance(10);
    EXPECT_EQ(server->ConnectionCount(), 0u);
}

TEST_F(RealtimeServerTest, StatefulReconnectReplaysAndDropsDuplicates) {
    std::string token;
    auto n = Negotiate("?negotiateVersion=1&useStatefulReconnect=true");
    token = std::string(n["connectionToken"].as_string());
    Get("/hub?id=" + token, WsHeaders());
    auto ws = sockets.back();
    ws->ClientSend(R("{\"protocol\":\"json\",\"version\":2}"));
    ws->ClientSend(
        R("{\"target\":\"Echo\",\"arguments\":[\"x\"],\"invocationId\":\"0\",\"type\":1}"));
    EXPECT_EQ(ws->Last(), R("{\"type\":3,\"invocationId\":\"0\",\"result\":\"x\"}"));
    Advance(1);
    EXPECT_EQ(ws->Last(), R("{\"type\":8,\"sequenceId\":1}"));
    ws->Gone(1006);  // the network drops
    loop.RunPending();
    EXPECT_EQ(server->ConnectionCount(), 1u);
    auto count_before = log.size();

    Get("/hub?id=" + token, WsHeaders());
    auto ws2 = sockets.back();
    ASSERT_EQ(ws2->sent.size(), 1u);
    EXPECT_EQ(ws2->sent[0], R("{\"type\":9,\"sequenceId\":1}") +
                                R("{\"type\":3,\"invocationId\":\"0\",\"result\":\"x\"}"));
    ws2->ClientSend(R("{\"type\":9,\"sequenceId\":1}"));
    // The client's replay of invocation 0 is a duplicate: not run again.
    ws2->ClientSend(
        R("{\"target\":\"Echo\",\"arguments\":[\"x\"],\"invocationId\":\"0\",\"type\":1}"));
    EXPECT_EQ(ws2->sent.size(), 1u);
    ws2->ClientSend(
        R("{\"target\":\"Echo\",\"arguments\":[\"y\"],\"invocationId\":\"1\",\"type\":1}"));
    EXPECT_EQ(ws2->Last(), R("{\"type\":3,\"invocationId\":\"1\",\"result\":\"y\"}"));
    EXPECT_EQ(log.size(), count_before);  // no disconnect, same connection
    // Acked messages are not replayed.
    ws2->ClientSend(R("{\"type\":8,\"sequenceId\":2}"));
    ws2->Gone(1006);
    loop.RunPending();
    Get("/hub?id=" + token, WsHeaders());
    EXPECT_EQ(sockets.back()->sent.at(0), R("{\"type\":9,\"sequenceId\":3}"));
    // Not resumed in time: reaped.
    sockets.back()->Gone(1006);
    loop.RunPending();
    Advance(15);
    EXPECT_EQ(server->ConnectionCount(), 1u);
    Advance(1);
    EXPECT_EQ(server->ConnectionCount(), 0u);
}

TEST_F(RealtimeServerTest, GroupsAndAllWithBackplane) {
    auto backplane = bus::MakeInProcessBackplane();
    Make({}, backplane.get());
    auto a = Connect();
    auto b = Connect();
    a->ClientSend(
        R("{\"target\":\"JoinGroup\",\"arguments\":[\"g\"],\"invocationId\":\"0\",\"type\":1}"));
    b->ClientSend(R("{\"target\":\"SendToGroup\",\"arguments\":[\"g\",\"hi\"],\"type\":1}"));
    loop.RunPending();
    EXPECT_EQ(a->Last(), R("{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"hi\"]}"));
    EXPECT_TRUE(b->sent.empty());
    a->ClientSend(R("{\"target\":\"Broadcast\",\"arguments\":[\"all\"],\"type\":1}"));
    loop.RunPending();
    EXPECT_EQ(b->Last(),
              R("{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"server\",\"all\"]}"));
    a->sent.clear();
    a->ClientSend(R("{\"target\":\"LeaveGroup\",\"arguments\":[\"g\"],\"type\":1}"));
    b->ClientSend(R("{\"target\":\"SendToGroup\",\"arguments\":[\"g\",\"again\"],\"type\":1}"));
    loop.RunPending();
    EXPECT_TRUE(a->sent.empty());
    // Another instance's publish reaches local members.
    a->ClientSend(R("{\"target\":\"JoinGroup\",\"arguments\":[\"g\"],\"type\":1}"));
    backplane->Publish("hub:group:g", R("{\"type\":1,\"target\":\"X\",\"arguments\":[]}"));
    loop.RunPending();
    EXPECT_EQ(a->Last(), R("{\"type\":1,\"target\":\"X\",\"arguments\":[]}"));
    a->ClientSend(R("{\"type\":7}"));
    EXPECT_EQ(a->close_code, 1000);
    server.reset();
}

TEST_F(RealtimeServerTest, BroadcastsShareOneWebSocketFrame) {
    Make({});
    auto a = Connect();
    auto b = Connect();
    auto c = Connect();
    for (auto* s : {a.get(), b.get(), c.get()}) {
        s->ClientSend(R(
            "{\"target\":\"JoinGroup\",\"arguments\":[\"g\"],\"invocationId\":\"0\",\"type\":1}"));
    }
    loop.RunPending();
    a->ClientSend(R("{\"target\":\"SendToGroup\",\"arguments\":[\"g\",\"hi\"],\"type\":1}"));
    loop.RunPending();
    const std::string group_record =
        R("{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"hi\"]}");
    for (auto* s : {a.get(), b.get(), c.get()}) {
        EXPECT_EQ(s->Last(), group_record);
        ASSERT_EQ(s->shared_frames.size(), 1u);
        // The frame: a text frame header, then the record.
        EXPECT_EQ(*s->shared_frames[0],
                  std::string("\x81") + static_cast<char>(group_record.size()) + group_record);
    }
    // Built once, shared by every socket.
    EXPECT_EQ(a->shared_frames[0].get(), b->shared_frames[0].get());
    EXPECT_EQ(a->shared_frames[0].get(), c->shared_frames[0].get());

    a->ClientSend(R("{\"target\":\"Broadcast\",\"arguments\":[\"all\"],\"type\":1}"));
    loop.RunPending();
    for (auto* s : {a.get(), b.get(), c.get()}) {
        EXPECT_EQ(
            s->Last(),
            R("{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"server\",\"all\"]}"));
        ASSERT_EQ(s->shared_frames.size(), 2u);
    }
    EXPECT_EQ(a->shared_frames[1].get(), b->shared_frames[1].get());
    EXPECT_EQ(a->shared_frames[1].get(), c->shared_frames[1].get());
    EXPECT_NE(a->shared_frames[0].get(), a->shared_frames[1].get());
    server.reset();
}

TEST(RealtimeLazyDeque, AllocatesOnFirstPushAndFreesOnClear) {
    LazyDeque<std::string> q;
    EXPECT_FALSE(q.allocated());
    EXPECT_TRUE(q.empty());
    EXPECT_EQ(q.size(), 0u);
    EXPECT_EQ(q.begin(), q.end());
    q.push_back("one");
    q.push_back("two");
    EXPECT_TRUE(q.allocated());
    EXPECT_EQ(q.size(), 2u);
    std::string joined;
    for (const auto& s : q) {
        joined += s;
    }
    EXPECT_EQ(joined, "onetwo");
    EXPECT_EQ(q.front(), "one");
    q.pop_front();
    EXPECT_EQ(q.front(), "two");
    q.clear();
    EXPECT_FALSE(q.allocated());
    EXPECT_TRUE(q.empty());
}

TEST_F(RealtimeServerTest, SkipNegotiationAndCors) {
    auto ex = Get("/hub", WsHeaders());
    EXPECT_EQ(ex->status(), 101);
    auto ws = sockets.back();
    ws->ClientSend(R("{\"protocol\":\"json\",\"version\":1}"));
    EXPECT_EQ(ws->Last(), R("{}"));

    HubOptions o;
    o.cors_origins = {"https://app.example"};
    Make(o);
    net::Headers h;
    h.Add("Origin", "https://app.example");
    auto pre = FakeExchange::Make(loop, "OPTIONS", "/hub/negotiate", {}, h);
    server->HandleOptions(pre);
    EXPECT_EQ(pre->status(), 204);
    EXPECT_EQ(pre->extra_headers().Get("Access-Control-Allow-Origin"), "https://app.example");
    EXPECT_EQ(pre->extra_headers().Get("Access-Control-Allow-Credentials"), "true");
    EXPECT_EQ(pre->headers().Get("Access-Control-Allow-Methods"), "GET, POST, DELETE");
    net::Headers other;
    other.Add("Origin", "https://evil.example");
    auto no = FakeExchange::Make(loop, "OPTIONS", "/hub/negotiate", {}, other);
    server->HandleOptions(no);
    EXPECT_FALSE(no->extra_headers().Has("Access-Control-Allow-Origin"));
}

TEST(RealtimeRegisterHub, RoutesEndpoints) {
    net::Router router;
    auto server = RegisterHub(router, "/hubs/test", std::make_shared<Hub>(), {});
    std::vector<std::string> params;
    EXPECT_TRUE(router.Match("POST", "/hubs/test/negotiate", params).handler);
    EXPECT_TRUE(router.Match("GET", "/hubs/test", params).handler);
    EXPECT_TRUE(router.Match("POST", "/hubs/test", params).handler);
    EXPECT_TRUE(router.Match("DELETE", "/hubs/test", params).handler);
    EXPECT_TRUE(router.Match("OPTIONS", "/hubs/test", params).handler);
    EXPECT_FALSE(router.Match("PUT", "/hubs/test", params).handler);
    EXPECT_FALSE(router.Match("GET", "/hubs/test/negotiate", params).handler);
}

}  // namespace
}  // namespace conduit::realtime
