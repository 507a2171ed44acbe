// Two instances' hubs (RegisterHubs) sharing one in-process Backplane, as two gateway instances
// sharing Redis: announcements, configuration changes, spend updates and task events reach the
// clients of both instances exactly once; the navigation state; the per-key method rate limit;
// CloseAll.
#include "bus/backplane.hpp"
#include "fakes/fake_exchange.hpp"
#include "fakes/fake_loop.hpp"
#include "fakes/fake_websocket.hpp"
#include "hubs/hubs.hpp"
#include "tasks/task_events.hpp"

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

#include <atomic>

namespace conduit::hubs {
namespace {

using testing::FakeExchange;
using testing::FakeLoop;
using testing::FakeWebSocket;
namespace bj = boost::json;

std::string R(std::string_view s) { return std::string(s) + '\x1e'; }

class TestClock final : public core::Clock {
public:
    int64_t NowUnixMs() const override { return 1700000000000 + ms.load(); }
    int64_t SteadyNs() const override { return ms.load() * 1'000'000; }
    std::atomic<int64_t> ms{1000};
};

/// A connected hub client: its socket and the parsed messages it received.
struct Client {
    std::shared_ptr<FakeWebSocket> ws;
    /// Every received message (records split, pings dropped).
    std::vector<bj::object> Messages() const {
        std::vector<bj::object> out;
        for (const auto& m : ws->sent_messages()) {
            size_t start = 0;
            for (size_t end = m.find('\x1e'); end != std::string::npos;
                 start = end + 1, end = m.find('\x1e', start)) {
                auto v = bj::parse(m.substr(start, end - start));
                if (v.as_object().empty() || v.as_object().at("type") == 6) {
                    continue;
                }
                out.push_back(v.as_object());
            }
        }
        return out;
    }
    std::vector<bj::object> Calls(std::string_view target) const {
        std::vector<bj::object> out;
        for (auto& m : Messages()) {
            if (m.at("type") == 1 && m.at("target").as_string() == target) {
                out.push_back(m);
            }
        }
        return out;
    }
};

class HubSourcesTest : public ::testing::Test {
protected:
    std::unique_ptr<Hubs> MakeInstance(int rate = 600, bool cross_instance = true) {
        HubsOptions o;
        o.method_rate_per_minute = rate;
        net::Router router;  // routes are not exercised: the servers are called directly
        return RegisterHubs(
            router,
            HubsDeps{[](const net::Request&, std::string_view token) -> std::optional<domain::Id> {
                         if (token == "key1") {
                             return 1;
                         }
                         if (token == "key2") {
                             return 2;
                         }
                         return std::nullopt;
                     },
                     [](core::Loop&, std::string, domain::Id,
                        std::function<void(core::Result<domain::AsyncTask>)> done) {
                         done(core::Fail(core::ErrorCode::kNotFound, "no"));
                     },
                     *backplane, clock, o, cross_instance ? backplane.get() : nullptr,
                     [this](std::function<void(core::Result<NavigationData>)> done) {
                         ++nav_loads;
                         done(nav_data);
                     }});
    }

    Client Connect(realtime::HubServer& server, const std::string& key) {
        net::Headers auth;
        auth.Add("Authorization", "Bearer " + key);
        auto n = FakeExchange::Make(loop, "POST", "/h/negotiate?negotiateVersion=1", {}, auth);
        server.HandleNegotiate(n);
        EXPECT_EQ(n->status(), 200);
        std::string token(bj::parse(n->body()).as_object()["connectionToken"].as_string());
        net::Headers h = auth;
        h.Add("Upgrade", "websocket");
        h.Add("Connection", "Upgrade");
        h.Add("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        h.Add("Sec-WebSocket-Version", "13");
        auto g = FakeExchange::Make(loop, "GET", "/h?id=" + token, {}, h);
        server.HandleGet(g);
        loop.RunPending();
        auto ws = g->websocket();
        EXPECT_TRUE(ws) << g->status();
        ws->ClientMessage(R("{\"protocol\":\"json\",\"version\":1}"));
        loop.RunPending();
        ws->clear_sent();
        return Client{ws};
    }

    void SetUp() override {
        domain::Provider p;
        p.id = 1;
        p.name = "mock";
        domain::ModelMapping m;
        m.id = 5;
        m.model_alias = "gpt";
        m.provider_id = 1;
        m.provider_model_id = "mock-gpt";
        nav_data.providers = {p};
        nav_data.mappings = {m};
        a = MakeInstance();
        b = MakeInstance();
        a->RefreshNavigation();
        b->RefreshNavigation();
        loop.RunPending();
    }
    void TearDown() override {
        loop.RunPending();
        a.reset();
        b.reset();
        loop.RunPending();
    }

    FakeLoop loop;
    TestClock clock;
    std::unique_ptr<bus::Backplane> backplane = bus::MakeInProcessBackplane();
    NavigationData nav_data;
    int nav_loads = 0;
    std::unique_ptr<Hubs> a;
    std::unique_ptr<Hubs> b;
};

TEST_F(HubSourcesTest, AnnouncementReachesEveryInstanceOnce) {
    auto x = Connect(*a->notifications, "key1");
    auto y = Connect(*b->notifications, "key2");
    auto other_hub = Connect(*b->spend, "key1");
    a->Announce("Down at 2 \"UTC\" ✓", "critical");
    loop.RunPending();
    for (auto* c : {&x, &y}) {
        auto calls = c->Calls("SystemAnnouncement");
        ASSERT_EQ(calls.size(), 1u);
        EXPECT_EQ(calls[0].at("arguments"), (bj::array{"Down at 2 \"UTC\" ✓", "critical"}));
    }
    EXPECT_TRUE(other_hub.Messages().empty());
}

TEST_F(HubSourcesTest, ConfigChangeOnEveryInstanceOnceWithNavigationState) {
    auto n1 = Connect(*a->notifications, "key1");
    auto n2 = Connect(*b->notifications, "key1");
    auto v1 = Connect(*a->navigation, "key1");
    auto v2 = Connect(*b->navigation, "key2");

    // GetNavigationState: the items loaded at start-up.
    v1.ws->ClientMessage(R(
        "{\"type\":1,\"invocationId\":\"1\",\"target\":\"GetNavigationState\",\"arguments\":[]}"));
    loop.RunPending();
    auto msgs = v1.Messages();
    ASSERT_EQ(msgs.size(), 1u);
    const auto& items = msgs[0].at("result").as_object().at("items").as_array();
    ASSERT_EQ(items.size(), 1u);
    EXPECT_EQ(items[0].as_object().at("id"), "gpt");
    EXPECT_EQ(items[0].as_object().at("isEnabled"), true);
    v1.ws->clear_sent();

    // The admin path publishes one change; every instance reloads and sends to its own clients.
    nav_data.mappings[0].is_enabled = false;
    const int loads = nav_loads;
    backplane->Publish(std::string(kConfigChangedChannel),
                       ConfigChangeJson(ConfigChange{"ModelMapping", "Updated", 5, "gpt"}));
    loop.RunPending();
    EXPECT_EQ(nav_loads, loads + 2);  // one reload per instance
    for (auto* c : {&n1, &n2, &v1, &v2}) {
        auto changed = c->Calls("ModelMappingChanged");
        ASSERT_EQ(changed.size(), 1u);
        EXPECT_EQ(changed[0].at("arguments"), (bj::array{5, "gpt", "Updated"}));
    }
    for (auto* c : {&v1, &v2}) {
        auto updated = c->Calls("NavigationStateUpdated");
        ASSERT_EQ(updated.size(), 1u);
        const auto& item =
            updated[0].at("arguments").as_array()[0].as_object().at("items").as_array()[0];
        EXPECT_EQ(item.as_object().at("isEnabled"), false);
        EXPECT_EQ(item.as_object().at("badgeText"), "Disabled");
    }
    EXPECT_TRUE(n1.Calls("NavigationStateUpdated").empty());  // navigation hub only

    // A change that does not affect navigation: no reload, nothing sent.
    backplane->Publish(std::string(kConfigChangedChannel),
                       ConfigChangeJson(ConfigChange{"VirtualKey", "Updated", 9, ""}));
    loop.RunPending();
    EXPECT_EQ(nav_loads, loads + 2);
    EXPECT_EQ(v1.Calls("NavigationStateUpdated").size(), 1u);

    // Provider health (the circuit breaker's hook): local to the instance it is called on.
    a->OnProviderHealthChanged(1, "Unhealthy", "breaker open");
    loop.RunPending();
    EXPECT_EQ(n1.Calls("ProviderHealthChanged").size(), 1u);
    EXPECT_EQ(n1.Calls("ProviderHealthChanged")[0].at("arguments"),
              (bj::array{1, "Unhealthy", "breaker open"}));
    EXPECT_TRUE(n2.Calls("ProviderHealthChanged").empty());
    EXPECT_EQ(v1.Calls("NavigationStateUpdated").size(), 2u);
}

TEST_F(HubSourcesTest, SpendUpdateToTheKeyOnEveryInstance) {
    auto mine_a = Connect(*a->spend, "key1");
    auto mine_b = Connect(*b->spend, "key1");
    auto theirs = Connect(*b->spend, "key2");
    domain::RequestLogRow row;
    row.request_id = "r1";
    row.virtual_key_id = 1;
    row.model_alias = "gpt";
    row.request_type = "embedding";
    row.cost = 1;
    row.status_code = 200;
    EXPECT_TRUE(IsBilled(row));
    a->OnSpend(row, SpendTotals{5, 10, "mock"});
    loop.RunPending();
    for (auto* c : {&mine_a, &mine_b}) {
        auto calls = c->Calls("SpendUpdate");
        ASSERT_EQ(calls.size(), 1u);
        const auto& s = calls[0].at("arguments").as_array()[0].as_object();
        EXPECT_EQ(s.at("metadata").as_object().at("requestId"), "r1");
        EXPECT_EQ(s.at("metadata").as_object().at("endpoint"), "/v1/embeddings");
        EXPECT_EQ(s.at("provider"), "mock");
    }
    EXPECT_TRUE(theirs.Calls("SpendUpdate").empty());

    domain::RequestLogRow failed;
    failed.status_code = 502;
    EXPECT_FALSE(IsBilled(failed));
}

TEST_F(HubSourcesTest, PublisherOfAnInstanceWithoutTheHubsRole) {
    auto x = Connect(*a->notifications, "key1");
    auto s = Connect(*b->spend, "key1");
    auto notes = HubPublisher(*backplane, kNotificationsHubPath);
    notes->SendToAll("SystemAnnouncement", bj::array{"from api", "info"});
    domain::RequestLogRow row;
    row.virtual_key_id = 1;
    row.status_code = 200;
    SendSpendUpdate(*HubPublisher(*backplane, kSpendHubPath), row, SpendTotals{});
    loop.RunPending();
    ASSERT_EQ(x.Calls("SystemAnnouncement").size(), 1u);
    EXPECT_EQ(x.Calls("SystemAnnouncement")[0].at("arguments"), (bj::array{"from api", "info"}));
    EXPECT_EQ(s.Calls("SpendUpdate").size(), 1u);
}

TEST_F(HubSourcesTest, LocalSpendHubWithoutBackplane) {
    auto local = MakeInstance(600, /*cross_instance=*/false);
    EXPECT_FALSE(local->spend->has_backplane());
    domain::RequestLogRow row;
    row.virtual_key_id = 1;
    row.status_code = 200;
    local->OnSpend(row, SpendTotals{});  // nobody connected: skipped
    auto c = Connect(*local->spend, "key1");
    auto elsewhere = Connect(*a->spend, "key1");  // another instance: not reached without it
    local->OnSpend(row, SpendTotals{});
    loop.RunPending();
    EXPECT_EQ(c.Calls("SpendUpdate").size(), 1u);
    EXPECT_TRUE(elsewhere.Calls("SpendUpdate").empty());
}

TEST_F(HubSourcesTest, TaskEventsOncePerClientDespiteTheHubBackplane) {
    auto x = Connect(*a->tasks, "key1");
    auto y = Connect(*b->tasks, "key1");
    for (auto* c : {&x, &y}) {
        c->ws->ClientMessage(
            R("{\"type\":1,\"invocationId\":\"1\",\"target\":"
              "\"SubscribeToTaskType\",\"arguments\":[\"video_generation\"]}"));
    }
    loop.RunPending();
    tasks::TaskEvent e;
    e.event = "task.started";
    e.task_id = "t1";
    e.task_type = "video_generation";
    e.virtual_key_id = 1;
    backplane->Publish(std::string(tasks::kTaskEventsChannel), tasks::ToJson(e));
    loop.RunPending();
    EXPECT_EQ(x.Calls("TaskStarted").size(), 1u);
    EXPECT_EQ(y.Calls("TaskStarted").size(), 1u);
}

TEST_F(HubSourcesTest, MethodRateLimitPerKeyWithoutDisconnect) {
    auto limited = MakeInstance(2);
    auto c = Connect(*limited->navigation, "key1");
    auto d = Connect(*limited->tasks, "key1");  // same key, another hub: same budget
    auto other = Connect(*limited->navigation, "key2");
    auto invoke = [&](Client& cl, std::string_view target, std::string_view args, int id) {
        cl.ws->clear_sent();
        cl.ws->ClientMessage(R("{\"type\":1,\"invocationId\":\"" + std::to_string(id) +
                               "\",\"target\":\"" + std::string(target) +
                               "\",\"arguments\":" + std::string(args) + "}"));
        loop.RunPending();
        auto msgs = cl.Messages();
        EXPECT_EQ(msgs.size(), 1u);
        return msgs.empty() ? bj::object{} : msgs[0];
    };
    EXPECT_FALSE(invoke(c, "GetNavigationState", "[]", 1).contains("error"));
    EXPECT_FALSE(invoke(d, "UnsubscribeFromTask", "[\"t\"]", 2).contains("error"));
    auto over = invoke(c, "GetNavigationState", "[]", 3);
    ASSERT_TRUE(over.contains("error"));
    EXPECT_NE(std::string(over.at("error").as_string()).find("Rate limit exceeded"),
              std::string::npos)
        << over.at("error");
    EXPECT_FALSE(c.ws->closed());
    EXPECT_FALSE(invoke(other, "GetNavigationState", "[]", 4).contains("error"));
    clock.ms += 30000;  // 2 per minute: one more after 30 s
    EXPECT_FALSE(invoke(c, "GetNavigationState", "[]", 5).contains("error"));
    EXPECT_TRUE(invoke(c, "GetNavigationState", "[]", 6).contains("error"));
}

TEST_F(HubSourcesTest, CloseAllClosesEveryHubWithReconnect) {
    auto x = Connect(*a->tasks, "key1");
    auto y = Connect(*a->navigation, "key2");
    auto z = Connect(*b->spend, "key1");
    bool done = false;
    a->CloseAll([&] { done = true; });
    loop.RunPending();
    EXPECT_TRUE(done);
    for (auto* c : {&x, &y}) {
        auto msgs = c->Messages();
        ASSERT_EQ(msgs.size(), 1u);
        EXPECT_EQ(msgs[0].at("type"), 7);
        EXPECT_EQ(msgs[0].at("allowReconnect"), true);
        EXPECT_TRUE(c->ws->closed());
    }
    EXPECT_FALSE(z.ws->closed());
}

}  // namespace
}  // namespace conduit::hubs
