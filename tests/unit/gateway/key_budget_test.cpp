// Per-key budgets (BudgetGate: period math, thresholds, the reservation next to the group's, the
// initial value from the store, alerts) and the tokens-per-minute limit (RateGate).

#include "core/clock.hpp"
#include "fakes/fake_exchange.hpp"
#include "gateway/budget_gate.hpp"
#include "gateway/errors.hpp"
#include "gateway/rate_gate.hpp"

#include <gtest/gtest.h>

namespace conduit::gateway {
namespace {

using conduit::testing::FakeExchange;
using conduit::testing::FakeLoop;
using domain::BudgetPeriod;

/// Unix ms of a UTC date and time.
int64_t Utc(int y, unsigned m, unsigned d, int hh = 0, int mm = 0, int ss = 0) {
    using namespace std::chrono;
    const sys_days day{year{y} / month{m} / d};
    return (static_cast<int64_t>(day.time_since_epoch().count()) * 86'400 + hh * 3600 + mm * 60 +
            ss) *
           1000;
}

TEST(BudgetPeriod, ParseAndName) {
    EXPECT_EQ(domain::ParseBudgetPeriod("daily"), BudgetPeriod::kDaily);
    EXPECT_EQ(domain::ParseBudgetPeriod("Weekly"), BudgetPeriod::kWeekly);
    EXPECT_EQ(domain::ParseBudgetPeriod("MONTHLY"), BudgetPeriod::kMonthly);
    EXPECT_EQ(domain::ParseBudgetPeriod("total"), BudgetPeriod::kTotal);
    EXPECT_FALSE(domain::ParseBudgetPeriod("yearly"));
    EXPECT_FALSE(domain::ParseBudgetPeriod(""));
    EXPECT_FALSE(domain::ParseBudgetPeriod("dailyx"));
    EXPECT_EQ(domain::BudgetPeriodName(BudgetPeriod::kWeekly), "weekly");
}

TEST(BudgetPeriod, DailyStartsAtMidnightUtc) {
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kDaily, Utc(2026, 11, 28, 23, 59, 59) + 999),
              Utc(2026, 11, 28));
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kDaily, Utc(2026, 11, 29)), Utc(2026, 11, 29));
    EXPECT_EQ(BudgetPeriodEndMs(BudgetPeriod::kDaily, Utc(2026, 11, 28)), Utc(2026, 11, 29));
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kDaily, 0), 0);
}

TEST(BudgetPeriod, WeekStartsOnMonday) {
    // 2026-11-23 is a Monday, 2026-11-29 a Sunday.
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kWeekly, Utc(2026, 11, 23)), Utc(2026, 11, 23));
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kWeekly, Utc(2026, 11, 29, 23, 59, 59)),
              Utc(2026, 11, 23));
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kWeekly, Utc(2026, 11, 30)), Utc(2026, 11, 30));
    EXPECT_EQ(BudgetPeriodEndMs(BudgetPeriod::kWeekly, Utc(2026, 11, 23)), Utc(2026, 11, 30));
    // A week across a year boundary: Thursday 1 January 2026 belongs to Monday 29 December.
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kWeekly, Utc(2026, 1, 1, 12)), Utc(2025, 12, 29));
    // The epoch was a Thursday.
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kWeekly, 0), Utc(1969, 12, 29));
}

TEST(BudgetPeriod, MonthStartsOnTheFirstIncludingLeapYears) {
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kMonthly, Utc(2028, 2, 29, 18)), Utc(2028, 2, 1));
    EXPECT_EQ(BudgetPeriodEndMs(BudgetPeriod::kMonthly, Utc(2028, 2, 1)), Utc(2028, 3, 1));
    EXPECT_EQ(BudgetPeriodEndMs(BudgetPeriod::kMonthly, Utc(2027, 2, 1)), Utc(2027, 3, 1));
    EXPECT_EQ(Utc(2028, 3, 1) - Utc(2028, 2, 1), 29LL * 86'400'000);
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kMonthly, Utc(2026, 12, 31, 23, 59, 59)),
              Utc(2026, 12, 1));
    EXPECT_EQ(BudgetPeriodEndMs(BudgetPeriod::kMonthly, Utc(2026, 12, 1)), Utc(2027, 1, 1));
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kMonthly, Utc(2027, 1, 1)), Utc(2027, 1, 1));
    EXPECT_EQ(BudgetPeriodStartMs(BudgetPeriod::kTotal, Utc(2027, 1, 1)), 0);
    EXPECT_FALSE(BudgetPeriodEndMs(BudgetPeriod::kTotal, 0));
}

TEST(BudgetPeriod, CounterKeysNameThePeriodStart) {
    EXPECT_EQ(BudgetGate::KeyBudgetCounter(7, BudgetPeriod::kDaily, Utc(2026, 11, 28)),
              "bud:vk:7:20261128");
    EXPECT_EQ(BudgetGate::KeyBudgetCounter(7, BudgetPeriod::kMonthly, Utc(2028, 2, 1)),
              "bud:vk:7:20280201");
    EXPECT_EQ(BudgetGate::KeyBudgetCounter(7, BudgetPeriod::kTotal, 0), "bud:vk:7:total");
}

TEST(BudgetThresholds, EachCrossingOnceAndExactAtTheBoundary) {
    EXPECT_EQ(CrossedThresholds(0, 799'999, 1'000'000), std::vector<int>{});
    EXPECT_EQ(CrossedThresholds(0, 800'000, 1'000'000), std::vector<int>{80});
    EXPECT_EQ(CrossedThresholds(800'000, 900'000, 1'000'000), std::vector<int>{90});
    EXPECT_EQ(CrossedThresholds(850'000, 1'000'000, 1'000'000), (std::vector<int>{90, 100}));
    EXPECT_EQ(CrossedThresholds(0, 5'000'000, 1'000'000), (std::vector<int>{80, 90, 100}));
    EXPECT_EQ(CrossedThresholds(1'000'000, 1'200'000, 1'000'000), std::vector<int>{});
    EXPECT_EQ(CrossedThresholds(900'000, 800'000, 1'000'000), std::vector<int>{});  // a refund
    EXPECT_EQ(CrossedThresholds(0, 10, 0), std::vector<int>{});  // a zero budget alerts nothing
    // Odd budgets: 80 % of 7 micro-units is 5.6.
    EXPECT_EQ(CrossedThresholds(0, 5, 7), std::vector<int>{});
    EXPECT_EQ(CrossedThresholds(5, 6, 7), std::vector<int>{80});
}

class FixedClock final : public core::Clock {
public:
    int64_t NowUnixMs() const override { return now_ms; }
    int64_t SteadyNs() const override { return core::SystemClock::SteadyNowNs(); }
    int64_t now_ms = 0;
};

class KeyBudgetGateTest : public ::testing::Test {
protected:
    void SetUp() override {
        clock_.now_ms = Utc(2026, 11, 28, 12);
        domain::VirtualKeyGroup g;
        g.id = 1;
        g.balance = 1'000'000'000;
        book_.Sync({g});
        key_.id = 5;
        key_.group_id = 1;
        key_.max_budget = 1'000'000;  // $1 a day
        key_.budget_duration = "daily";
        counters_ = bus::MakeInProcessCounters();
        gate_ = std::make_unique<BudgetGate>(*counters_, book_, registry_, BudgetGate::Options{},
                                             clock_);
        gate_->SetSpendLoader([this](domain::Id key_id, int64_t since,
                                     std::function<void(core::Result<domain::Micros>)> done) {
            loads.push_back({key_id, since});
            pending_loads.push_back(std::move(done));
        });
        gate_->SetAlertSink([this](const BudgetGate::Alert& a) { alerts.push_back(a); });
    }

    /// Reserves `worst`; returns the exchange and the hold when admitted.
    std::pair<std::shared_ptr<FakeExchange>, std::optional<BudgetGate::Hold>> Reserve(
        domain::Micros worst) {
        auto ex = FakeExchange::Make(loop_, "POST", "/v1/chat/completions", "{}", {});
        auto hold = std::make_shared<std::optional<BudgetGate::Hold>>();
        auto admitted = std::make_shared<bool>(false);
        gate_->Admit(ex, key_, worst, [hold, admitted](std::optional<BudgetGate::Hold> h) {
            *admitted = true;
            *hold = h;
        });
        loop_.RunPending();
        EXPECT_EQ(*admitted, ex->status() == 0);
        return {ex, *hold};
    }

    /// The first request of the key: loads `spent` from the "store", then settles at 0.
    void Prime(domain::Micros spent) {
        auto ex = FakeExchange::Make(loop_, "POST", "/v1/chat/completions", "{}", {});
        auto got = std::make_shared<std::optional<BudgetGate::Hold>>();
        gate_->Admit(ex, key_, 1, [got](std::optional<BudgetGate::Hold> h) { *got = h; });
        loop_.RunPending();
        FinishLoads(spent);
        ASSERT_TRUE(*got);
        gate_->Settle(**got, 0);
    }

    void FinishLoads(domain::Micros spent) {
        auto loads_now = std::move(pending_loads);
        pending_loads.clear();
        for (auto& d : loads_now) {
            d(spent);
        }
        loop_.RunPending();
    }

    /// A billed request: recorded (OnRecorded), then settled.
    void Bill(const BudgetGate::Hold& hold, domain::Micros actual) {
        domain::RequestLogRow row;
        row.virtual_key_id = key_.id;
        row.group_id = key_.group_id;
        row.cost = actual;
        row.timestamp_ms = clock_.now_ms;
        gate_->OnRecorded(row);
        gate_->Settle(hold, actual);
    }

    FixedClock clock_;
    obs::Registry registry_;
    BalanceBook book_;
    FakeLoop loop_;
    domain::VirtualKey key_;
    std::unique_ptr<bus::Counters> counters_;
    std::unique_ptr<BudgetGate> gate_;
    std::vector<std::pair<domain::Id, int64_t>> loads;
    std::vector<std::function<void(core::Result<domain::Micros>)>> pending_loads;
    std::vector<BudgetGate::Alert> alerts;
};

TEST_F(KeyBudgetGateTest, FirstRequestWaitsForTheStoreThenTheCounterStartsFromIt) {
    auto ex = FakeExchange::Make(loop_, "POST", "/v1/chat/completions", "{}", {});
    bool admitted = false;
    gate_->Admit(ex, key_, 300'000, [&](std::optional<BudgetGate::Hold>) { admitted = true; });
    loop_.RunPending();
    EXPECT_FALSE(admitted);  // waiting for the period's spend
    ASSERT_EQ(loads.size(), 1u);
    EXPECT_EQ(loads[0], std::make_pair(domain::Id{5}, Utc(2026, 11, 28)));
    FinishLoads(600'000);  // $0.60 already spent today
    EXPECT_TRUE(admitted);
    // 0.6 + 0.3 reserved: another 0.3 does not fit $1, 0.1 does.
    auto [refused, none] = Reserve(300'000);
    EXPECT_EQ(refused->status(), 402);
    EXPECT_NE(refused->body().find("\"code\":\"budget_exceeded\""), std::string::npos)
        << refused->body();
    EXPECT_NE(refused->body().find("daily budget of $1"), std::string::npos) << refused->body();
    EXPECT_NE(refused->body().find("2026-11-29T00:00:00"), std::string::npos) << refused->body();
    auto [ok, hold] = Reserve(100'000);
    EXPECT_EQ(ok->status(), 0);
    ASSERT_TRUE(hold);
    EXPECT_EQ(hold->key_counter, "bud:vk:5:20261128");
    EXPECT_EQ(loads.size(), 1u);  // no store read for the following requests
    // The group balance was not touched by the refusal (all or nothing): 0.3 + 0.1 held.
    std::vector<int64_t> values;
    counters_->Get({BudgetGate::KeyFor(1), hold->key_counter},
                   [&](core::Result<std::vector<int64_t>> r) { values = *r; });
    EXPECT_EQ(values, (std::vector<int64_t>{1'000'000'000 - 400'000, 1'000'000}));
}

TEST_F(KeyBudgetGateTest, SettleReturnsTheDifferenceAndAlertsOncePerThreshold) {
    Prime(0);
    auto [ex1, h1] = Reserve(500'000);
    auto [ex2, h2] = Reserve(500'000);
    ASSERT_TRUE(h1);
    ASSERT_TRUE(h2);
    Bill(*h2, 350'000);  // 0.5 (h1, still held) + 0.35 = 0.85: 80 % crossed
    ASSERT_EQ(alerts.size(), 1u);
    EXPECT_EQ(alerts[0].percent, 80);
    EXPECT_EQ(alerts[0].key_id, 5);
    EXPECT_EQ(alerts[0].current_spend, 850'000);
    EXPECT_EQ(alerts[0].budget, 1'000'000);
    EXPECT_EQ(alerts[0].period_end_ms, Utc(2026, 11, 29));
    // Another instance (same counters) settling at the same level does not send it again.
    BudgetGate other(*counters_, book_, registry_, BudgetGate::Options{}, clock_);
    std::vector<BudgetGate::Alert> other_alerts;
    other.SetAlertSink([&](const BudgetGate::Alert& a) { other_alerts.push_back(a); });
    BudgetGate::Hold same = *h2;
    same.worst = 100'000;
    other.Settle(same, 100'000);
    EXPECT_TRUE(other_alerts.empty());
    Bill(*h1, 500'000);  // no change: 0.85
    EXPECT_EQ(alerts.size(), 1u);
    auto [ex3, h3] = Reserve(150'000);
    ASSERT_TRUE(h3);
    Bill(*h3, 150'000);  // 1.0: 90 and 100 %
    ASSERT_EQ(alerts.size(), 3u);
    EXPECT_EQ(alerts[1].percent, 90);
    EXPECT_EQ(alerts[2].percent, 100);
    EXPECT_EQ(Reserve(1).first->status(), 402);
    EXPECT_EQ(alerts.size(), 3u);  // the refusal's 100 % was sent already
}

TEST_F(KeyBudgetGateTest, InitialValueIsTheStoreSpendPlusUnflushedRowsCountedOnce) {
    auto ex = FakeExchange::Make(loop_, "POST", "/v1/chat/completions", "{}", {});
    std::optional<BudgetGate::Hold> hold;
    bool admitted = false;
    gate_->Admit(ex, key_, 50'000, [&](std::optional<BudgetGate::Hold> h) {
        admitted = true;
        hold = h;
    });
    loop_.RunPending();
    // While the store is read: row A is recorded (unflushed), row B recorded and flushed.
    domain::RequestLogRow a;
    a.virtual_key_id = 5;
    a.cost = 150'000;
    a.timestamp_ms = clock_.now_ms;
    auto b = a;
    b.cost = 100'000;
    gate_->OnRecorded(a);
    gate_->OnRecorded(b);
    gate_->OnFlushed(b);
    FinishLoads(800'000);  // the store: 0.7 earlier + B
    // 0.8 + A = 0.95: the 0.05 request fits exactly, nothing more does.
    EXPECT_TRUE(admitted);
    EXPECT_EQ(ex->status(), 0);
    ASSERT_TRUE(hold);
    EXPECT_TRUE(alerts.empty());  // reservations alone alert nothing
    EXPECT_EQ(Reserve(1).first->status(), 402);
    // A refusal counts as 100 %: every threshold the counter is past, once.
    ASSERT_EQ(alerts.size(), 3u);
    EXPECT_EQ(alerts[0].percent, 80);
    EXPECT_EQ(alerts[2].percent, 100);
    EXPECT_EQ(alerts[2].current_spend, 1'000'000);
    EXPECT_EQ(Reserve(1).first->status(), 402);
    EXPECT_EQ(alerts.size(), 3u);
}

TEST_F(KeyBudgetGateTest, ANewPeriodStartsOver) {
    Prime(999'999);
    EXPECT_EQ(Reserve(2).first->status(), 402);
    clock_.now_ms = Utc(2026, 11, 29, 0, 0, 1);
    auto [ok, hold] = Reserve(900'000);
    EXPECT_EQ(ok->status(), 0);  // no wait: a new period starts at 0 for this instance
    ASSERT_TRUE(hold);
    EXPECT_EQ(hold->key_counter, "bud:vk:5:20261129");
}

TEST_F(KeyBudgetGateTest, KeysWithoutBudgetOnlyTouchTheGroup) {
    key_.max_budget.reset();
    auto [ex, hold] = Reserve(1000);
    ASSERT_TRUE(hold);
    EXPECT_TRUE(hold->key_counter.empty());
    EXPECT_TRUE(loads.empty());
}

TEST(BudgetErrors, BudgetExceededIs402WithItsOwnCode) {
    EXPECT_EQ(HttpStatus(core::ErrorCode::kBudgetExceeded), 402);
    EXPECT_EQ(ErrorCodeName(core::ErrorCode::kBudgetExceeded), "budget_exceeded");
    EXPECT_EQ(ErrorType(core::ErrorCode::kBudgetExceeded), "insufficient_quota");
}

TEST(TokenLimit, LimitsForAddsACostZeroMinuteBucket) {
    domain::VirtualKey k;
    k.id = 9;
    k.rate_limit_rpm = 10;
    k.rate_limit_tpm = 1000;
    auto limits = RateGate::LimitsFor(k);
    ASSERT_EQ(limits.size(), 2u);
    EXPECT_EQ(limits[1].key, "rl:vk:9:tpm");
    EXPECT_EQ(limits[1].limit, 1000);
    EXPECT_EQ(limits[1].window_ms, 60'000);
    EXPECT_EQ(limits[1].cost, 0);
}

}  // namespace
}  // namespace conduit::gateway
