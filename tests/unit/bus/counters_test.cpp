// bus::Gcra (the arithmetic both Counters adapters share) and the in-process adapter under a
// controlled clock. The behavioural contract runs on both adapters in
// tests/integration/bus/counters_test.cpp.
#include "bus/counters.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <optional>

namespace conduit::bus {
namespace {

/// Steady time under the test's control (wall time unused by the adapter).
class ManualClock final : public core::Clock {
public:
    int64_t NowUnixMs() const override { return now_ns_.load() / 1'000'000; }
    int64_t SteadyNs() const override { return now_ns_.load(); }
    void AdvanceMs(int64_t ms) { now_ns_ += ms * 1'000'000; }

private:
    std::atomic<int64_t> now_ns_{1'000'000'000'000};
};

TEST(GcraTest, FullBucketAdmitsLimitThenOnePerInterval) {
    const int64_t now = 5'000'000'000;
    RateLimit l{"k", 3, 3000, 1};  // one token per second
    int64_t tat = 0;
    for (int i = 0; i < 3; ++i) {
        auto s = Gcra(l, tat, now, false);
        ASSERT_TRUE(s.fits) << i;
        EXPECT_EQ(s.state.remaining, 2 - i);
        EXPECT_EQ(s.state.reset_ms, (i + 1) * 1000);
        tat = s.new_tat_us;
    }
    auto refused = Gcra(l, tat, now, false);
    EXPECT_FALSE(refused.fits);
    EXPECT_EQ(refused.new_tat_us, tat);  // nothing taken
    EXPECT_EQ(refused.retry_after_us, 1'000'000);
    EXPECT_EQ(refused.state.remaining, 0);
    // 999 ms later still no room; at 1 s exactly one token.
    EXPECT_FALSE(Gcra(l, tat, now + 999'000, false).fits);
    auto later = Gcra(l, tat, now + 1'000'000, false);
    EXPECT_TRUE(later.fits);
    EXPECT_EQ(later.state.remaining, 0);
}

TEST(GcraTest, RoundedIntervalStillAdmitsExactlyTheLimit) {
    // 7 per 1000 ms: the interval 142857 µs is rounded down; the bucket still holds exactly 7.
    RateLimit l{"k", 7, 1000, 1};
    int64_t tat = 0, admitted = 0;
    for (int i = 0; i < 20; ++i) {
        auto s = Gcra(l, tat, 1'000'000, false);
        if (s.fits) {
            ++admitted;
            tat = s.new_tat_us;
        }
    }
    EXPECT_EQ(admitted, 7);
}

TEST(GcraTest, ForceGoesIntoDebtAndCostAboveLimitNeverFits) {
    RateLimit l{"k", 10, 10'000, 15};  // one token per second, 15 taken
    auto forced = Gcra(l, 0, 0, true);
    EXPECT_FALSE(forced.fits);
    EXPECT_EQ(forced.retry_after_us, -1);
    EXPECT_EQ(forced.new_tat_us, 15'000'000);  // taken anyway: 5 s of debt beyond full
    RateLimit one{"k", 10, 10'000, 1};
    auto debt = Gcra(RateLimit{"k", 10, 10'000, 10}, 0, 0, true);
    EXPECT_TRUE(debt.fits);
    auto more = Gcra(RateLimit{"k", 10, 10'000, 5}, debt.new_tat_us, 0, true);
    EXPECT_FALSE(more.fits);
    EXPECT_EQ(more.new_tat_us, 15'000'000);  // 5 s of debt beyond a full window
    auto next = Gcra(one, more.new_tat_us, 0, false);
    EXPECT_FALSE(next.fits);
    EXPECT_EQ(next.retry_after_us, 6'000'000);  // the debt, then one token
}

TEST(GcraTest, ValidationRejectsNonsense) {
    EXPECT_FALSE(ValidateLimits({}).has_value());
    EXPECT_FALSE(ValidateLimits({{"k", 1, 1000, -1}}).has_value());
    EXPECT_FALSE(ValidateLimits({{"k", 2'000'000'000, 1000, 1}}).has_value());
    EXPECT_FALSE(ValidateLimits({{"k", 1, 400LL * 86'400'000, 1}}).has_value());
    EXPECT_TRUE(ValidateLimits({{"k", 1, 1000, 0}}).has_value());
    EXPECT_FALSE(ValidateReservations({{"k", 1, 10, 20}}).has_value());  // floor above cap
    EXPECT_TRUE(ValidateReservations({{"k", -1, 10, 0}}).has_value());
    EXPECT_TRUE(ValidateReservations({{"k", 0, -10}}).has_value());
}

std::optional<RateDecision> AcquireSync(Counters& c, RateLimit l) {
    std::optional<RateDecision> out;
    c.Acquire({std::move(l)}, [&](core::Result<RateDecision> r) {
        ASSERT_TRUE(r.has_value());
        out = *r;
    });
    return out;  // the in-process adapter answers before Acquire returns
}

TEST(InProcessCountersTest, RefillFollowsTheClock) {
    ManualClock clock;
    auto c = MakeInProcessCounters(clock);
    const RateLimit l{"rpm", 60, 60'000, 1};  // one per second
    for (int i = 0; i < 60; ++i) {
        ASSERT_TRUE(AcquireSync(*c, l)->admitted) << i;
    }
    auto refused = AcquireSync(*c, l);
    ASSERT_FALSE(refused->admitted);
    EXPECT_EQ(refused->retry_after_ms, 1000);
    clock.AdvanceMs(999);
    EXPECT_FALSE(AcquireSync(*c, l)->admitted);
    clock.AdvanceMs(1);
    EXPECT_TRUE(AcquireSync(*c, l)->admitted);
    EXPECT_FALSE(AcquireSync(*c, l)->admitted);
    clock.AdvanceMs(60'000);
    auto full = AcquireSync(*c, l);
    EXPECT_TRUE(full->admitted);
    EXPECT_EQ(full->states[0].remaining, 59);
}

TEST(InProcessCountersTest, TtlAndSweepForgetCounters) {
    ManualClock clock;
    auto c = MakeInProcessCounters(clock);
    for (int i = 0; i < 5000; ++i) {
        c->Add({{"k" + std::to_string(i), 1}}, 1000, [](auto r) { ASSERT_TRUE(r.has_value()); });
    }
    c->Add({{"keep", 5}}, 0, [](auto r) { ASSERT_TRUE(r.has_value()); });
    clock.AdvanceMs(1000);
    std::vector<int64_t> got;
    c->Get({"k0", "k4999", "keep"}, [&](auto r) { got = *r; });
    EXPECT_EQ(got, (std::vector<int64_t>{0, 0, 5}));
    // A counter that expired starts from zero again.
    c->Add({{"k1", 3}}, 1000, [&](auto r) { got = *r; });
    EXPECT_EQ(got, (std::vector<int64_t>{3}));
}

}  // namespace
}  // namespace conduit::bus
