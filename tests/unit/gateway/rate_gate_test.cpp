#include "gateway/rate_gate.hpp"

#include "domain/keys.hpp"
#include "fakes/fake_exchange.hpp"
#include "store/sqlite/sqlite_store.hpp"

#include <gtest/gtest.h>

namespace conduit::gateway {
namespace {

using conduit::testing::FakeExchange;
using conduit::testing::FakeLoop;

/// Counters whose engine is down: every call fails like an unreachable Redis.
class DownCounters final : public bus::Counters {
public:
    void Acquire(std::vector<bus::RateLimit>, RateCallback done) override {
        ++calls;
        done(core::Fail(core::ErrorCode::kUnavailable, "redis down"));
    }
    void Charge(std::vector<bus::RateLimit>, RateCallback done) override {
        done(core::Fail(core::ErrorCode::kUnavailable, "redis down"));
    }
    void Reserve(std::vector<bus::Reservation>, int64_t, ReserveCallback done) override {
        done(core::Fail(core::ErrorCode::kUnavailable, "redis down"));
    }
    void Admit(std::vector<bus::RateLimit>,
               std::vector<bus::Reservation>,
               int64_t,
               AdmitCallback done) override {
        ++calls;
        done(core::Fail(core::ErrorCode::kUnavailable, "redis down"));
    }
    void Add(std::vector<bus::Delta>, int64_t, ValuesCallback done) override {
        done(core::Fail(core::ErrorCode::kUnavailable, "redis down"));
    }
    void Get(std::vector<std::string>, ValuesCallback done) override {
        done(core::Fail(core::ErrorCode::kUnavailable, "redis down"));
    }
    std::string_view Engine() const override { return "down"; }
    int calls = 0;
};

class RateGateTest : public ::testing::Test {
protected:
    RateGateTest() : box_(core::SecretBox::DeriveKey("k")) {}

    void SetUp() override {
        store_ = std::move(*store::OpenSqliteStore(":memory:"));
        ASSERT_TRUE(store_->Migrate());
        domain::VirtualKeyGroup g;
        g.group_name = "g";
        g.balance = 10'000'000;
        group_ = *store_->CreateGroup(g, "t");
        limited_ = AddKey(3, 5);
        daily_ = AddKey(std::nullopt, 2);
        free_ = AddKey(std::nullopt, std::nullopt);
        config_ = std::make_unique<ConfigState>(*store_, book_, box_);
        ASSERT_TRUE(config_->ReloadOnExecutor());
    }

    std::string AddKey(std::optional<int64_t> rpm, std::optional<int64_t> rpd) {
        std::string k = domain::GenerateVirtualKey();
        domain::VirtualKey vk;
        vk.key_name = "k";
        vk.key_hash = domain::HashVirtualKey(k);
        vk.key_prefix = domain::KeyDisplayPrefix(k);
        vk.group_id = group_.id;
        vk.rate_limit_rpm = rpm;
        vk.rate_limit_rpd = rpd;
        EXPECT_TRUE(store_->CreateKey(vk));
        return k;
    }

    /// Runs one request through `gate`; returns the exchange and whether the handler ran.
    std::pair<std::shared_ptr<FakeExchange>, bool> Send(RateGate& gate, const std::string& key) {
        net::Headers h;
        if (!key.empty()) {
            h.Add("Authorization", "Bearer " + key);
        }
        auto ex = FakeExchange::Make(loop_, "POST", "/v1/chat/completions", "{}", h);
        bool ran = false;
        auto handler = gate.Wrap([&ran](const net::ExchangePtr& e) {
            ran = true;
            e->Respond(net::Response::Json(200, "{}"));
        });
        handler(ex);
        loop_.RunPending();
        return {ex, ran};
    }

    core::SecretBox box_;
    obs::Registry registry_;
    std::unique_ptr<store::Store> store_;
    BalanceBook book_;
    std::unique_ptr<ConfigState> config_;
    FakeLoop loop_;
    domain::VirtualKeyGroup group_;
    std::string limited_, daily_, free_;
};

TEST_F(RateGateTest, AdmitsUpToTheMinuteLimitThen429WithRetryAfter) {
    auto counters = bus::MakeInProcessCounters();
    RateGate gate(*counters, *config_, core::SystemClock::Instance(), registry_, FailPolicy::kOpen);
    for (int i = 0; i < 3; ++i) {
        auto [ex, ran] = Send(gate, limited_);
        EXPECT_TRUE(ran) << i;
        EXPECT_EQ(ex->status(), 200);
        EXPECT_EQ(ex->extra_headers().Get("x-ratelimit-limit-requests"), "3");
        EXPECT_EQ(ex->extra_headers().Get("x-ratelimit-remaining-requests"), std::to_string(2 - i));
        EXPECT_EQ(ex->extra_headers().Get("x-ratelimit-limit-requests-day"), "5");
        EXPECT_EQ(ex->extra_headers().Get("x-ratelimit-remaining-requests-day"),
                  std::to_string(4 - i));
        EXPECT_FALSE(ex->extra_headers().Get("x-ratelimit-reset-requests").empty());
    }
    auto [ex, ran] = Send(gate, limited_);
    EXPECT_FALSE(ran);
    EXPECT_EQ(ex->status(), 429);
    EXPECT_NE(ex->body().find("rate_limit_exceeded"), std::string::npos) << ex->body();
    EXPECT_NE(ex->body().find("requests per minute"), std::string::npos) << ex->body();
    // One request comes back every 20 s.
    auto retry = std::stoi(std::string(ex->extra_headers().Get("Retry-After")));
    EXPECT_GE(retry, 19);
    EXPECT_LE(retry, 20);
    EXPECT_EQ(ex->extra_headers().Get("x-ratelimit-remaining-requests"), "0");
    // The refusal took nothing from the daily limit: 2 left of 5.
    EXPECT_EQ(ex->extra_headers().Get("x-ratelimit-remaining-requests-day"), "2");
    EXPECT_NE(registry_.Render().find("conduit_rate_limit_rejections_total{limit=\"rpm\"} 1"),
              std::string::npos);
}

TEST_F(RateGateTest, DailyLimitNamesTheDay) {
    auto counters = bus::MakeInProcessCounters();
    RateGate gate(*counters, *config_, core::SystemClock::Instance(), registry_, FailPolicy::kOpen);
    EXPECT_TRUE(Send(gate, daily_).second);
    EXPECT_TRUE(Send(gate, daily_).second);
    auto [ex, ran] = Send(gate, daily_);
    EXPECT_FALSE(ran);
    EXPECT_EQ(ex->status(), 429);
    EXPECT_NE(ex->body().find("requests per day"), std::string::npos) << ex->body();
    EXPECT_TRUE(ex->extra_headers().Get("x-ratelimit-limit-requests").empty());
}

TEST_F(RateGateTest, KeysWithoutLimitsAndBadKeysSkipTheCounters) {
    DownCounters counters;
    RateGate gate(counters, *config_, core::SystemClock::Instance(), registry_,
                  FailPolicy::kClosed);
    for (int i = 0; i < 10; ++i) {
        auto [ex, ran] = Send(gate, free_);
        EXPECT_TRUE(ran);
        EXPECT_TRUE(ex->extra_headers().Get("x-ratelimit-limit-requests").empty());
    }
    // A bad key reaches the handler, which answers 401 itself.
    EXPECT_TRUE(Send(gate, "not-a-key").second);
    EXPECT_TRUE(Send(gate, "").second);
    EXPECT_EQ(counters.calls, 0);
}

TEST_F(RateGateTest, EngineDownFollowsThePolicy) {
    DownCounters counters;
    RateGate open(counters, *config_, core::SystemClock::Instance(), registry_, FailPolicy::kOpen);
    EXPECT_TRUE(Send(open, limited_).second);
    RateGate closed(counters, *config_, core::SystemClock::Instance(), registry_,
                    FailPolicy::kClosed);
    auto [ex, ran] = Send(closed, limited_);
    EXPECT_FALSE(ran);
    EXPECT_EQ(ex->status(), 503);
    EXPECT_EQ(counters.calls, 2);
    EXPECT_NE(registry_.Render().find("conduit_rate_limit_engine_errors_total 2"),
              std::string::npos);
}

TEST(RateGateFormatTest, ResetDurationsLookLikeOpenAIs) {
    EXPECT_EQ(FormatResetDuration(0), "0s");
    EXPECT_EQ(FormatResetDuration(250), "250ms");
    EXPECT_EQ(FormatResetDuration(1000), "1s");
    EXPECT_EQ(FormatResetDuration(1500), "1.5s");
    EXPECT_EQ(FormatResetDuration(20'050), "20.05s");
    EXPECT_EQ(FormatResetDuration(360'000), "6m0s");
    EXPECT_EQ(FormatResetDuration(7'384'000), "2h3m4s");
    EXPECT_EQ(ParseFailPolicy("OPEN"), FailPolicy::kOpen);
    EXPECT_EQ(ParseFailPolicy("closed"), FailPolicy::kClosed);
    EXPECT_FALSE(ParseFailPolicy("maybe").has_value());
}

}  // namespace
}  // namespace conduit::gateway
