#include "admin_fixture.hpp"

namespace conduit::admin::testing {
namespace {

class AdminAnalyticsTest : public AdminTest {
protected:
    void SetUp() override {
        std::vector<domain::RequestLogRow> rows;
        for (int i = 0; i < 5; ++i) {
            domain::RequestLogRow r;
            r.request_id = "req-" + std::to_string(i);
            r.virtual_key_id = i % 2 == 0 ? 1 : 2;
            r.group_id = i % 2 == 0 ? 10 : 20;
            r.model_alias = "gpt-4o";
            r.provider_model = "gpt-4o-2024-08-06";
            r.request_type = "chat";
            r.input_tokens = 100 + i;
            r.output_tokens = 50;
            r.cost = 300000 + i;  // 0.3000xx
            r.response_time_ms = 42;
            r.status_code = 200;
            r.streamed = i == 4;
            r.usage_estimated = i == 3;
            r.client_ip = "10.0.0.1";
            r.timestamp_ms = 1'767'225'600'000 + i * 60'000;
            rows.push_back(r);
        }
        // Seeding runs before any request, so calling the store here cannot race the executor.
        ASSERT_TRUE(store_->ApplySpend({}, rows, 1'767'225'600'000).has_value());
    }
};

TEST_F(AdminAnalyticsTest, ListsLogsNewestFirstWithExactCosts) {
    auto r = Call("GET", "/api/Analytics/logs");
    ASSERT_EQ(r.status, 200) << r.body;
    const auto& data = r.obj().at("data").as_array();
    ASSERT_EQ(data.size(), 5u);
    EXPECT_EQ(r.obj().at("limit").as_int64(), 100);
    EXPECT_EQ(r.obj().at("offset").as_int64(), 0);
    const auto& newest = data[0].as_object();
    EXPECT_EQ(newest.at("requestId").as_string(), "req-4");
    EXPECT_EQ(newest.at("virtualKeyId").as_int64(), 1);
    EXPECT_EQ(newest.at("virtualKeyGroupId").as_int64(), 10);
    EXPECT_EQ(newest.at("modelAlias").as_string(), "gpt-4o");
    EXPECT_EQ(newest.at("providerModel").as_string(), "gpt-4o-2024-08-06");
    EXPECT_EQ(newest.at("requestType").as_string(), "chat");
    EXPECT_EQ(newest.at("inputTokens").as_int64(), 104);
    EXPECT_EQ(newest.at("outputTokens").as_int64(), 50);
    EXPECT_EQ(newest.at("responseTimeMs").as_int64(), 42);
    EXPECT_EQ(newest.at("statusCode").as_int64(), 200);
    EXPECT_TRUE(newest.at("streamed").as_bool());
    EXPECT_FALSE(newest.at("usageEstimated").as_bool());
    EXPECT_EQ(newest.at("clientIp").as_string(), "10.0.0.1");
    EXPECT_EQ(newest.at("timestamp").as_string(), "2026-01-01T00:04:00.000Z");
    EXPECT_NE(r.body.find(R"("cost":0.300004,)"), std::string::npos) << r.body;
}

TEST_F(AdminAnalyticsTest, FiltersAndPages) {
    auto by_key = Call("GET", "/api/Analytics/logs?virtualKeyId=2");
    ASSERT_EQ(by_key.status, 200);
    EXPECT_EQ(by_key.obj().at("data").as_array().size(), 2u);

    auto by_group = Call("GET", "/api/Analytics/logs?virtualKeyGroupId=10");
    EXPECT_EQ(by_group.obj().at("data").as_array().size(), 3u);

    auto since = Call("GET", "/api/Analytics/logs?since=2026-01-01T00:03:00Z");
    EXPECT_EQ(since.obj().at("data").as_array().size(), 2u);
    auto since_encoded = Call("GET", "/api/Analytics/logs?since=2026-01-01T01%3A03%3A00%2B01%3A00");
    EXPECT_EQ(since_encoded.obj().at("data").as_array().size(), 2u) << since_encoded.body;

    auto page = Call("GET", "/api/Analytics/logs?limit=2&offset=1");
    const auto& data = page.obj().at("data").as_array();
    ASSERT_EQ(data.size(), 2u);
    EXPECT_EQ(data[0].at("requestId").as_string(), "req-3");
    EXPECT_EQ(page.obj().at("limit").as_int64(), 2);
    EXPECT_EQ(page.obj().at("offset").as_int64(), 1);

    auto clamped = Call("GET", "/api/Analytics/logs?limit=5000");
    EXPECT_EQ(clamped.obj().at("limit").as_int64(), 1000);

    auto combined = Call("GET", "/api/Analytics/logs?virtualKeyId=1&virtualKeyGroupId=20");
    EXPECT_TRUE(combined.obj().at("data").as_array().empty());
}

TEST_F(AdminAnalyticsTest, RejectsBadQueryParameters) {
    EXPECT_EQ(Call("GET", "/api/Analytics/logs?since=yesterday").ErrorParam(), "since");
    EXPECT_EQ(Call("GET", "/api/Analytics/logs?limit=0").ErrorParam(), "limit");
    EXPECT_EQ(Call("GET", "/api/Analytics/logs?offset=x").ErrorParam(), "offset");
    EXPECT_EQ(Call("GET", "/api/Analytics/logs?virtualKeyId=abc").ErrorParam(), "virtualKeyId");
    EXPECT_EQ(Call("GET", "/api/Analytics/logs?virtualKeyGroupId=-3").ErrorParam(),
              "virtualKeyGroupId");
}

}  // namespace
}  // namespace conduit::admin::testing
