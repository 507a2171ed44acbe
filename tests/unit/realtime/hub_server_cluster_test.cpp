// Two HubServer instances sharing one Backplane (what two gateway instances sharing Redis do):
// groups, broadcasts, connections and users reach their members on every instance exactly once,
// local-only sends stay local, and channels are unsubscribed when their last member leaves.
#include "bus/backplane.hpp"
#include "fakes/fake_exchange.hpp"
#include "fakes/fake_loop.hpp"
#include "fakes/fake_websocket.hpp"
#include "realtime/hub_server.hpp"

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

#include <map>
#include <mutex>

namespace conduit::realtime {
namespace {

using testing::FakeExchange;
using testing::FakeLoop;
using testing::FakeWebSocket;
namespace bj = boost::json;

std::string R(std::string_view s) { return std::string(s) + '\x1e'; }

/// The in-process backplane, counting the active subscriptions of each channel.
class CountingBackplane final : public bus::Backplane {
public:
    void Publish(std::string channel, std::string payload) override {
        {
            std::lock_guard lock(mu_);
            ++published[channel];
        }
        inner_->Publish(std::move(channel), std::move(payload));
    }
    uint64_t Subscribe(std::string pattern, Handler handler) override {
        std::lock_guard lock(mu_);
        uint64_t id = inner_->Subscribe(pattern, std::move(handler));
        channel_of_[id] = pattern;
        ++active[pattern];
        return id;
    }
    void Unsubscribe(uint64_t id) override {
        std::lock_guard lock(mu_);
        inner_->Unsubscribe(id);
        auto it = channel_of_.find(id);
        if (it != channel_of_.end()) {
            if (--active[it->second] == 0) {
                active.erase(it->second);
            }
            channel_of_.erase(it);
        }
    }
    int Active(const std::string& channel) {
        std::lock_guard lock(mu_);
        auto it = active.find(channel);
        return it == active.end() ? 0 : it->second;
    }

    std::map<std::string, int> active;
    std::map<std::string, int> published;

private:
    std::mutex mu_;
    std::unique_ptr<bus::Backplane> inner_ = bus::MakeInProcessBackplane();
    std::map<uint64_t, std::string> channel_of_;
};

std::shared_ptr<Hub> ClusterHub() {
    auto hub = std::make_shared<Hub>();
    hub->On("Join", [](CallContext& ctx, const bj::array& a) {
        ctx.hub->AddToGroup(ctx.connection->id(), std::string(a[0].as_string()));
        return HubResult::Void();
    });
    return hub;
}

class HubClusterTest : public ::testing::Test {
protected:
    struct Client {
        std::shared_ptr<FakeWebSocket> ws;
        std::string id;
        /// Invocation targets received (records other than pings).
        std::vector<std::string> Received() const {
            std::vector<std::string> out;
            for (const auto& m : ws->sent_messages()) {
                if (m == R("{\"type\":6}") || m == R("{}")) {
                    continue;
                }
                out.push_back(m);
            }
            return out;
        }
    };

    std::shared_ptr<HubServer> MakeServer() {
        HubOptions o;
        o.backplane_prefix = "test";
        // The bearer token is the user id.
        o.authenticate = [](const net::Request&, std::string_view token) {
            return std::optional<Principal>(Principal{std::string(token), nullptr});
        };
        return std::make_shared<HubServer>(
            ClusterHub(), o, &backplane, [this](const net::ExchangePtr& ex) -> net::WebSocketPtr {
                std::static_pointer_cast<FakeExchange>(ex)->Respond(net::Response{101, {}, {}});
                sockets.push_back(std::make_shared<FakeWebSocket>(loop, net::WebSocketOptions{}));
                return sockets.back();
            });
    }

    Client Connect(HubServer& server, const std::string& user) {
        net::Headers auth;
        auth.Add("Authorization", "Bearer " + user);
        auto n = FakeExchange::Make(loop, "POST", "/hub/negotiate?negotiateVersion=1", {}, auth);
        server.HandleNegotiate(n);
        EXPECT_EQ(n->status(), 200);
        auto body = bj::parse(n->body()).as_object();
        std::string token(body["connectionToken"].as_string());
        net::Headers h = auth;
        h.Add("Upgrade", "websocket");
        h.Add("Connection", "Upgrade");
        auto g = FakeExchange::Make(loop, "GET", "/hub?id=" + token, {}, h);
        server.HandleGet(g);
        loop.RunPending();
        auto ws = sockets.back();
        ws->ClientMessage(R("{\"protocol\":\"json\",\"version\":1}"));
        loop.RunPending();
        ws->clear_sent();
        return Client{ws, std::string(body["connectionId"].as_string())};
    }

    void TearDown() override {
        loop.RunPending();
        a.reset();
        b.reset();
    }

    FakeLoop loop;
    CountingBackplane backplane;
    std::vector<std::shared_ptr<FakeWebSocket>> sockets;
    std::shared_ptr<HubServer> a = MakeServer();
    std::shared_ptr<HubServer> b = MakeServer();
};

const std::string kHello = R("{\"type\":1,\"target\":\"Hello\",\"arguments\":[1]}");

TEST_F(HubClusterTest, GroupAndAllReachEveryInstanceOnce) {
    auto x = Connect(*a, "u1");
    auto y = Connect(*b, "u2");
    x.ws->ClientMessage(R("{\"type\":1,\"target\":\"Join\",\"arguments\":[\"g\"]}"));
    y.ws->ClientMessage(R("{\"type\":1,\"target\":\"Join\",\"arguments\":[\"g\"]}"));
    loop.RunPending();
    EXPECT_EQ(backplane.Active("test:group:g"), 2);  // one per instance

    b->SendToGroup("g", "Hello", bj::array{1});
    loop.RunPending();
    EXPECT_EQ(x.Received(), std::vector<std::string>{kHello});
    EXPECT_EQ(y.Received(), std::vector<std::string>{kHello});
    EXPECT_EQ(backplane.published["test:group:g"], 1);  // published once

    x.ws->clear_sent();
    y.ws->clear_sent();
    a->SendToAll("Hello", bj::array{1});
    loop.RunPending();
    EXPECT_EQ(x.Received(), std::vector<std::string>{kHello});
    EXPECT_EQ(y.Received(), std::vector<std::string>{kHello});

    // The last local member leaving unsubscribes that instance's group channel.
    y.ws->ClientMessage(R("{\"type\":7}"));
    loop.RunPending();
    EXPECT_EQ(backplane.Active("test:group:g"), 1);
}

TEST_F(HubClusterTest, ConnectionOnAnotherInstanceThroughItsChannel) {
    auto x = Connect(*a, "u1");
    EXPECT_EQ(backplane.Active("test:conn:" + x.id), 1);
    b->SendToConnection(x.id, "Hello", bj::array{1});  // x is not local to b
    loop.RunPending();
    EXPECT_EQ(x.Received(), std::vector<std::string>{kHello});
    EXPECT_EQ(backplane.published["test:conn:" + x.id], 1);

    // Local: delivered directly, no publish.
    x.ws->clear_sent();
    a->SendToConnection(x.id, "Hello", bj::array{1});
    loop.RunPending();
    EXPECT_EQ(x.Received(), std::vector<std::string>{kHello});
    EXPECT_EQ(backplane.published["test:conn:" + x.id], 1);

    x.ws->ClientMessage(R("{\"type\":7}"));
    loop.RunPending();
    EXPECT_EQ(backplane.Active("test:conn:" + x.id), 0);
}

TEST_F(HubClusterTest, UserOnEveryInstanceOnceAndUnsubscribedAfterLastConnection) {
    auto x1 = Connect(*a, "alice");
    auto x2 = Connect(*a, "alice");
    auto x3 = Connect(*b, "alice");
    auto other = Connect(*b, "bob");
    EXPECT_EQ(backplane.Active("test:user:alice"), 2);  // one subscription per instance

    b->SendToUser("alice", "Hello", bj::array{1});
    loop.RunPending();
    for (auto* c : {&x1, &x2, &x3}) {
        EXPECT_EQ(c->Received(), std::vector<std::string>{kHello});
    }
    EXPECT_TRUE(other.Received().empty());

    x1.ws->ClientMessage(R("{\"type\":7}"));
    loop.RunPending();
    EXPECT_EQ(backplane.Active("test:user:alice"), 2);  // x2 is still on a
    x2.ws->ClientMessage(R("{\"type\":7}"));
    loop.RunPending();
    EXPECT_EQ(backplane.Active("test:user:alice"), 1);
    x3.ws->ClientMessage(R("{\"type\":7}"));
    loop.RunPending();
    EXPECT_EQ(backplane.Active("test:user:alice"), 0);
    EXPECT_EQ(backplane.Active("test:user:bob"), 1);
}

TEST_F(HubClusterTest, LocalSendsStayOnTheirInstance) {
    auto x = Connect(*a, "u1");
    auto y = Connect(*b, "u2");
    x.ws->ClientMessage(R("{\"type\":1,\"target\":\"Join\",\"arguments\":[\"g\"]}"));
    y.ws->ClientMessage(R("{\"type\":1,\"target\":\"Join\",\"arguments\":[\"g\"]}"));
    loop.RunPending();
    const auto before = backplane.published;

    a->SendToAllLocal("Hello", bj::array{1});
    a->SendToGroupLocal("g", "Hello", bj::array{1});
    a->SendToLocalConnection(y.id, "Hello", bj::array{1});  // y is b's: nothing
    loop.RunPending();
    EXPECT_EQ(x.Received(), (std::vector<std::string>{kHello, kHello}));
    EXPECT_TRUE(y.Received().empty());
    EXPECT_EQ(backplane.published, before);
}

TEST_F(HubClusterTest, CloseAllSendsCloseWithReconnectAndRefusesNewConnections) {
    auto x = Connect(*a, "u1");
    auto y = Connect(*a, "u2");
    bool done = false;
    a->CloseAll(true, [&] { done = true; });
    loop.RunPending();
    EXPECT_TRUE(done);
    for (auto* c : {&x, &y}) {
        EXPECT_EQ(c->Received(),
                  std::vector<std::string>{R("{\"type\":7,\"allowReconnect\":true}")});
        EXPECT_TRUE(c->ws->closed());
    }
    EXPECT_EQ(a->ConnectionCount(), 0u);
    auto n = FakeExchange::Make(loop, "POST", "/hub/negotiate?negotiateVersion=1");
    a->HandleNegotiate(n);
    EXPECT_EQ(n->status(), 503);
    // The other instance is unaffected.
    auto z = Connect(*b, "u3");
    EXPECT_EQ(b->ConnectionCount(), 1u);
    // No shard at all: done at once.
    bool empty_done = false;
    MakeServer()->CloseAll(true, [&] { empty_done = true; });
    EXPECT_TRUE(empty_done);
}

}  // namespace
}  // namespace conduit::realtime
