#include "hubs/notifications.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

namespace conduit::hubs {
namespace {

namespace bj = boost::json;

domain::Provider P(domain::Id id, std::string name, bool enabled = true) {
    domain::Provider p;
    p.id = id;
    p.name = std::move(name);
    p.is_enabled = enabled;
    return p;
}

domain::ModelMapping M(
    domain::Id id, std::string alias, domain::Id provider, std::string model, bool enabled = true) {
    domain::ModelMapping m;
    m.id = id;
    m.model_alias = std::move(alias);
    m.provider_id = provider;
    m.provider_model_id = std::move(model);
    m.is_enabled = enabled;
    return m;
}

const bj::object& Item(const bj::array& items, std::string_view id) {
    for (const auto& v : items) {
        if (v.as_object().at("id").as_string() == id) {
            return v.as_object();
        }
    }
    ADD_FAILURE() << "no item " << id;
    static const bj::object empty;
    return empty;
}

TEST(NavigationItems, OnePerAliasWithBadges) {
    NavigationData d;
    d.providers = {P(1, "openai"), P(2, "backup"), P(3, "off", false)};
    d.mappings = {M(10, "gpt", 1, "gpt-4o"), M(11, "gpt", 2, "gpt-4o-b"),
                  M(12, "old", 1, "x", false), M(13, "orphan", 3, "y"),
                  M(14, "solo", 2, "solo-model")};
    auto items = NavigationItems(d, {});
    ASSERT_EQ(items.size(), 4u);
    // Sorted by alias.
    EXPECT_EQ(items[0].as_object().at("id"), "gpt");
    EXPECT_EQ(items[3].as_object().at("id"), "solo");

    const auto& gpt = Item(items, "gpt");
    EXPECT_EQ(gpt.at("path"), "/v1/models/gpt");
    EXPECT_EQ(gpt.at("isEnabled"), true);
    EXPECT_TRUE(gpt.at("badgeText").is_null());
    EXPECT_TRUE(gpt.at("badgeColor").is_null());
    EXPECT_EQ(gpt.at("tooltip"), "openai/gpt-4o, backup/gpt-4o-b");

    EXPECT_EQ(Item(items, "old").at("isEnabled"), false);
    EXPECT_EQ(Item(items, "old").at("badgeText"), "Disabled");
    EXPECT_EQ(Item(items, "old").at("badgeColor"), "gray");
    EXPECT_EQ(Item(items, "orphan").at("isEnabled"), false);
    EXPECT_EQ(Item(items, "orphan").at("badgeText"), "Provider disabled");

    // Health: one of two providers unhealthy → usable but Degraded; the only one → Unhealthy.
    std::map<domain::Id, ProviderHealth> health{{2, {"Unhealthy", "breaker open"}}};
    auto h = NavigationItems(d, health);
    EXPECT_EQ(Item(h, "gpt").at("isEnabled"), true);
    EXPECT_EQ(Item(h, "gpt").at("badgeText"), "Degraded");
    EXPECT_EQ(Item(h, "gpt").at("badgeColor"), "orange");
    EXPECT_EQ(Item(h, "solo").at("isEnabled"), false);
    EXPECT_EQ(Item(h, "solo").at("badgeText"), "Unhealthy");
    EXPECT_EQ(Item(h, "solo").at("badgeColor"), "red");

    EXPECT_TRUE(NavigationItems(NavigationData{}, {}).empty());
}

TEST(ConfigChangeJson, RoundTripAndRejects) {
    ConfigChange c{"ModelMapping", "Deleted", 42, "gpt-4o"};
    auto parsed = ParseConfigChange(ConfigChangeJson(c));
    ASSERT_TRUE(parsed) << parsed.error().message;
    EXPECT_EQ(parsed->entity, "ModelMapping");
    EXPECT_EQ(parsed->change_type, "Deleted");
    EXPECT_EQ(parsed->id, 42);
    EXPECT_EQ(parsed->model_alias, "gpt-4o");
    EXPECT_TRUE(parsed->AffectsNavigation());
    EXPECT_FALSE((ConfigChange{"VirtualKey", "Updated", 1, ""}).AffectsNavigation());
    EXPECT_TRUE((ConfigChange{"ProviderKey", "Created", 1, ""}).AffectsNavigation());
    for (std::string_view bad : {"", "[]", "{}", "{\"entity\":\"X\",\"changeType\":\"Y\"}",
                                 "{\"entity\":1,\"changeType\":\"Y\",\"id\":1}", "not json"}) {
        EXPECT_FALSE(ParseConfigChange(bad)) << bad;
    }
}

TEST(SpendUpdateArgs, ExactDecimalsAndMetadata) {
    domain::RequestLogRow row;
    row.request_id = "req-1";
    row.virtual_key_id = 7;
    row.model_alias = "gpt-4o-mini";
    row.request_type = "chat";
    row.input_tokens = 12;
    row.output_tokens = 34;
    row.cost = 300000;  // $0.30: exact, never 0.30000000000000004
    row.timestamp_ms = 1700000000123;
    SpendTotals t;
    t.total_spend = 12500000;
    t.budget_remaining = 87500000;
    t.provider = "openai";
    std::string json = SpendUpdateArgsJson(row, t);
    EXPECT_NE(json.find("\"newSpend\":0.3,"), std::string::npos) << json;
    EXPECT_NE(json.find("\"totalSpend\":12.5,"), std::string::npos) << json;
    EXPECT_NE(json.find("\"budgetRemaining\":87.5,"), std::string::npos) << json;
    auto v = bj::parse(json).as_array();
    ASSERT_EQ(v.size(), 1u);
    const auto& o = v[0].as_object();
    EXPECT_EQ(o.at("timestamp"), "2023-11-14T22:13:20.123Z");
    EXPECT_EQ(o.at("model"), "gpt-4o-mini");
    EXPECT_EQ(o.at("provider"), "openai");
    const auto& md = o.at("metadata").as_object();
    EXPECT_EQ(md.at("requestId"), "req-1");
    EXPECT_EQ(md.at("endpoint"), "/v1/chat/completions");
    EXPECT_EQ(md.at("inputTokens"), 12);
    EXPECT_EQ(md.at("outputTokens"), 34);

    SpendTotals unknown;  // no group, no provider
    auto u = bj::parse(SpendUpdateArgsJson(row, unknown)).as_array()[0].as_object();
    EXPECT_TRUE(u.at("budgetRemaining").is_null());
    EXPECT_TRUE(u.at("provider").is_null());
    EXPECT_EQ(EndpointOf("embedding"), "/v1/embeddings");
    EXPECT_EQ(EndpointOf("image"), "/v1/images/generations");
}

TEST(KeyRateLimiter, PerKeyBucketRefills) {
    KeyRateLimiter limiter(3);
    for (int i = 0; i < 3; ++i) {
        EXPECT_TRUE(limiter.Allow(1, 1000));
    }
    EXPECT_FALSE(limiter.Allow(1, 1000));
    EXPECT_TRUE(limiter.Allow(2, 1000));  // another key: its own bucket
    // 3 per minute: one more every 20 s.
    EXPECT_FALSE(limiter.Allow(1, 1000 + 19000));
    EXPECT_TRUE(limiter.Allow(1, 1000 + 20001));
    EXPECT_FALSE(limiter.Allow(1, 1000 + 20002));
    // Idle for long: full again, never above capacity.
    for (int i = 0; i < 3; ++i) {
        EXPECT_TRUE(limiter.Allow(1, 1000000));
    }
    EXPECT_FALSE(limiter.Allow(1, 1000000));

    KeyRateLimiter off(0);
    for (int i = 0; i < 10000; ++i) {
        ASSERT_TRUE(off.Allow(1, 0));
    }
}

}  // namespace
}  // namespace conduit::hubs
