#pragma once

// The behavioural contract of the bus::Counters port (src/bus/counters.hpp), as a typed
// GoogleTest suite. Every adapter instantiates it:
//
//     struct MyTraits {
//         /// Why Instance() returns nullptr (engine not configured); shown by GTEST_SKIP.
//         std::string SkipReason() const;
//         /// The instance under test (nullptr = skip). Each test gets a fresh Traits object and
//         /// its own key namespace.
//         conduit::bus::Counters* Instance();
//         /// Another instance on the same engine (another gateway instance), or Instance().
//         conduit::bus::Counters* Peer();
//     };
//     namespace conduit::bus::contract {
//     INSTANTIATE_TYPED_TEST_SUITE_P(MyEngine, CountersContract, MyTraits);
//     }
//
// Time is real (Redis uses its own clock): refill tests use short windows and wait on
// conditions, never on fixed sleeps.

#include "bus/counters.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <limits>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace conduit::bus::contract {

constexpr auto kCountersWait = std::chrono::seconds(10);

/// Runs one asynchronous call and waits for its answer (fails the test on timeout).
template <class T, class Start>
core::Result<T> Await(Start start) {
    auto promise = std::make_shared<std::promise<core::Result<T>>>();
    auto future = promise->get_future();
    start([promise](core::Result<T> r) { promise->set_value(std::move(r)); });
    if (future.wait_for(kCountersWait) != std::future_status::ready) {
        ADD_FAILURE() << "counters call did not answer within 10 s";
        return core::Fail(core::ErrorCode::kUpstreamTimeout, "test timeout");
    }
    return future.get();
}

inline core::Result<RateDecision> AcquireNow(Counters& c, std::vector<RateLimit> limits) {
    return Await<RateDecision>([&](auto done) { c.Acquire(std::move(limits), std::move(done)); });
}
inline core::Result<RateDecision> ChargeNow(Counters& c, std::vector<RateLimit> limits) {
    return Await<RateDecision>([&](auto done) { c.Charge(std::move(limits), std::move(done)); });
}
inline core::Result<ReserveDecision> ReserveNow(Counters& c,
                                                std::vector<Reservation> r,
                                                int64_t ttl_ms = 0) {
    return Await<ReserveDecision>(
        [&](auto done) { c.Reserve(std::move(r), ttl_ms, std::move(done)); });
}
inline core::Result<AdmitDecision> AdmitNow(Counters& c,
                                            std::vector<RateLimit> limits,
                                            std::vector<Reservation> r,
                                            int64_t ttl_ms = 0) {
    return Await<AdmitDecision>(
        [&](auto done) { c.Admit(std::move(limits), std::move(r), ttl_ms, std::move(done)); });
}
inline core::Result<std::vector<int64_t>> AddNow(Counters& c,
                                                 std::vector<Delta> d,
                                                 int64_t ttl_ms = 0) {
    return Await<std::vector<int64_t>>(
        [&](auto done) { c.Add(std::move(d), ttl_ms, std::move(done)); });
}
inline core::Result<std::vector<int64_t>> GetNow(Counters& c, std::vector<std::string> keys) {
    return Await<std::vector<int64_t>>([&](auto done) { c.Get(std::move(keys), std::move(done)); });
}

template <class Traits>
class CountersContract : public ::testing::Test {
protected:
    void SetUp() override {
        if (traits_.Instance() == nullptr) {
            GTEST_SKIP() << traits_.SkipReason();
        }
    }
    Counters& C() { return *traits_.Instance(); }
    Counters& P() { return *traits_.Peer(); }
    /// A key unique to this test (the engine may be shared by several runs).
    std::string Key(const std::string& name) {
        static std::atomic<int> n{0};
        return "ct:" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + ":" +
               std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ":" +
               std::to_string(n.fetch_add(1)) + ":" + name;
    }

    Traits traits_;
};

TYPED_TEST_SUITE_P(CountersContract);

TYPED_TEST_P(CountersContract, FullBucketAdmitsExactlyLimitThenRefuses) {
    const std::string key = this->Key("rpm");
    for (int i = 0; i < 5; ++i) {
        auto d = AcquireNow(this->C(), {{key, 5, 60'000, 1}});
        ASSERT_TRUE(d.has_value()) << d.error().message;
        EXPECT_TRUE(d->admitted) << "request " << i;
        ASSERT_EQ(d->states.size(), 1u);
        EXPECT_EQ(d->states[0].limit, 5);
        EXPECT_EQ(d->states[0].remaining, 4 - i);
        EXPECT_GT(d->states[0].reset_ms, 0);
        EXPECT_LE(d->states[0].reset_ms, 60'000);
    }
    auto d = AcquireNow(this->C(), {{key, 5, 60'000, 1}});
    ASSERT_TRUE(d.has_value());
    EXPECT_FALSE(d->admitted);
    EXPECT_EQ(d->denied_index, 0);
    // One token comes back every 12 s.
    EXPECT_GT(d->retry_after_ms, 0);
    EXPECT_LE(d->retry_after_ms, 12'000);
    ASSERT_EQ(d->states.size(), 1u);
    EXPECT_EQ(d->states[0].remaining, 0);
}

TYPED_TEST_P(CountersContract, SeveralLimitsAreAllOrNothing) {
    const std::string wide = this->Key("wide"), narrow = this->Key("narrow");
    const std::vector<RateLimit> both{{wide, 10, 60'000, 1}, {narrow, 2, 60'000, 1}};
    for (int i = 0; i < 2; ++i) {
        auto d = AcquireNow(this->C(), both);
        ASSERT_TRUE(d.has_value());
        EXPECT_TRUE(d->admitted);
    }
    auto refused = AcquireNow(this->C(), both);
    ASSERT_TRUE(refused.has_value());
    EXPECT_FALSE(refused->admitted);
    EXPECT_EQ(refused->denied_index, 1);
    // The refused request took nothing from the wide limit: 8 left, as after two requests.
    auto look = AcquireNow(this->C(), {{wide, 10, 60'000, 0}});
    ASSERT_TRUE(look.has_value());
    EXPECT_TRUE(look->admitted);
    EXPECT_EQ(look->states[0].remaining, 8);
}

TYPED_TEST_P(CountersContract, TokensComeBackAtTheRate) {
    const std::string key = this->Key("refill");
    // 2 per 400 ms: one token every 200 ms.
    ASSERT_TRUE(AcquireNow(this->C(), {{key, 2, 400, 1}})->admitted);
    ASSERT_TRUE(AcquireNow(this->C(), {{key, 2, 400, 1}})->admitted);
    auto refused = AcquireNow(this->C(), {{key, 2, 400, 1}});
    ASSERT_TRUE(refused.has_value());
    ASSERT_FALSE(refused->admitted);
    EXPECT_LE(refused->retry_after_ms, 200);
    const auto deadline = std::chrono::steady_clock::now() + kCountersWait;
    bool admitted = false;
    while (!admitted && std::chrono::steady_clock::now() < deadline) {
        auto d = AcquireNow(this->C(), {{key, 2, 400, 1}});
        ASSERT_TRUE(d.has_value());
        admitted = d->admitted;
        if (!admitted) {
            std::this_thread::sleep_for(std::chrono::milliseconds(
                std::max<int64_t>(1, std::min<int64_t>(d->retry_after_ms, 50))));
        }
    }
    EXPECT_TRUE(admitted) << "no token came back within 10 s";
}

TYPED_TEST_P(CountersContract, ConcurrentAcquiresFromTwoInstancesAreExact) {
    const std::string key = this->Key("exact");
    constexpr int kLimit = 50;
    std::atomic<int> admitted{0}, refused{0}, failed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            Counters& c = (t % 2 == 0) ? this->C() : this->P();
            // Fire asynchronously: many calls in flight at once.
            std::vector<std::future<core::Result<RateDecision>>> pending;
            for (int i = 0; i < kLimit; ++i) {
                auto p = std::make_shared<std::promise<core::Result<RateDecision>>>();
                pending.push_back(p->get_future());
                c.Acquire({{key, kLimit, 60'000, 1}},
                          [p](core::Result<RateDecision> r) { p->set_value(std::move(r)); });
            }
            for (auto& f : pending) {
                if (f.wait_for(kCountersWait) != std::future_status::ready) {
                    failed++;
                    continue;
                }
                auto r = f.get();
                if (!r) {
                    failed++;
                } else if (r->admitted) {
                    admitted++;
                } else {
                    refused++;
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    EXPECT_EQ(failed.load(), 0);
    EXPECT_EQ(admitted.load(), kLimit);
    EXPECT_EQ(refused.load(), 3 * kLimit);
}

TYPED_TEST_P(CountersContract, CostAboveLimitNeverFits) {
    auto d = AcquireNow(this->C(), {{this->Key("big"), 100, 60'000, 101}});
    ASSERT_TRUE(d.has_value());
    EXPECT_FALSE(d->admitted);
    EXPECT_EQ(d->retry_after_ms, -1);
}

TYPED_TEST_P(CountersContract, ChargeTakesBeyondEmptyAndDelaysLaterRequests) {
    const std::string key = this->Key("tpm");
    // 1000 tokens per minute; a request used 1500: admitted (usage is known afterwards), and
    // the next request must wait for the debt and one more token.
    auto charged = ChargeNow(this->C(), {{key, 1000, 60'000, 1500}});
    ASSERT_TRUE(charged.has_value()) << charged.error().message;
    EXPECT_TRUE(charged->admitted);
    EXPECT_EQ(charged->states[0].remaining, 0);
    auto next = AcquireNow(this->C(), {{key, 1000, 60'000, 1}});
    ASSERT_TRUE(next.has_value());
    EXPECT_FALSE(next->admitted);
    // 500 tokens of debt plus one: about 30 s at 1000 per minute.
    EXPECT_GT(next->retry_after_ms, 29'000);
    EXPECT_LE(next->retry_after_ms, 31'000);
}

TYPED_TEST_P(CountersContract, ReservationsRespectTheCapAllOrNothing) {
    const std::string a = this->Key("group"), b = this->Key("key");
    auto r1 = ReserveNow(this->C(), {{a, 60, 100}, {b, 60, 1000}});
    ASSERT_TRUE(r1.has_value()) << r1.error().message;
    EXPECT_TRUE(r1->admitted);
    EXPECT_EQ(r1->values, (std::vector<int64_t>{60, 60}));
    auto r2 = ReserveNow(this->C(), {{b, 50, 1000}, {a, 50, 100}});
    ASSERT_TRUE(r2.has_value());
    EXPECT_FALSE(r2->admitted);
    EXPECT_EQ(r2->denied_index, 1);
    EXPECT_EQ(r2->values, (std::vector<int64_t>{60, 60}));  // nothing added to either
    // Settle the first request at 45 (release 15) and reserve again.
    auto settled = AddNow(this->C(), {{a, -15}, {b, -15}});
    ASSERT_TRUE(settled.has_value());
    EXPECT_EQ(*settled, (std::vector<int64_t>{45, 45}));
    auto r3 = ReserveNow(this->P(), {{a, 50, 100}});
    ASSERT_TRUE(r3.has_value());
    EXPECT_TRUE(r3->admitted);
    EXPECT_EQ(r3->values, (std::vector<int64_t>{95}));
    auto now = GetNow(this->P(), {a, b, this->Key("missing")});
    ASSERT_TRUE(now.has_value());
    EXPECT_EQ(*now, (std::vector<int64_t>{95, 45, 0}));
}

TYPED_TEST_P(CountersContract, ConcurrentReservationsNeverExceedTheCap) {
    const std::string key = this->Key("budget");
    constexpr int kCalls = 64;
    std::vector<std::future<core::Result<ReserveDecision>>> pending;
    for (int i = 0; i < kCalls; ++i) {
        auto p = std::make_shared<std::promise<core::Result<ReserveDecision>>>();
        pending.push_back(p->get_future());
        Counters& c = (i % 2 == 0) ? this->C() : this->P();
        c.Reserve({{key, 10'000'000, 300'000'000}}, 0,
                  [p](core::Result<ReserveDecision> r) { p->set_value(std::move(r)); });
    }
    int admitted = 0;
    for (auto& f : pending) {
        ASSERT_EQ(f.wait_for(kCountersWait), std::future_status::ready);
        auto r = f.get();
        ASSERT_TRUE(r.has_value()) << r.error().message;
        admitted += r->admitted ? 1 : 0;
    }
    EXPECT_EQ(admitted, 30);
    auto v = GetNow(this->C(), {key});
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(v->at(0), 300'000'000);
}

TYPED_TEST_P(CountersContract, AvailableCounterIsCreatedFromInitAndNeverGoesBelowTheFloor) {
    const std::string key = this->Key("balance");
    auto take = [&](Counters& c, int64_t amount) {
        return ReserveNow(c, {{key, -amount, std::numeric_limits<int64_t>::max(), 0, 100}});
    };
    auto r1 = take(this->C(), 30);
    ASSERT_TRUE(r1.has_value()) << r1.error().message;
    EXPECT_TRUE(r1->admitted);
    EXPECT_EQ(r1->values, (std::vector<int64_t>{70}));
    auto r2 = take(this->P(), 80);  // the counter exists now: init is ignored
    ASSERT_TRUE(r2.has_value());
    EXPECT_FALSE(r2->admitted);
    EXPECT_EQ(r2->values, (std::vector<int64_t>{70}));
    auto r3 = take(this->P(), 70);
    ASSERT_TRUE(r3.has_value());
    EXPECT_TRUE(r3->admitted);
    EXPECT_EQ(r3->values, (std::vector<int64_t>{0}));
    // A refused reservation of a missing counter still creates it from init.
    const std::string fresh = this->Key("fresh");
    auto r4 = ReserveNow(this->C(), {{fresh, -500, std::numeric_limits<int64_t>::max(), 0, 100}});
    ASSERT_TRUE(r4.has_value());
    EXPECT_FALSE(r4->admitted);
    EXPECT_EQ(GetNow(this->C(), {fresh})->at(0), 100);
}

TYPED_TEST_P(CountersContract, ConcurrentTakesFromAnAvailableCounterAreExact) {
    const std::string key = this->Key("avail");
    std::vector<std::future<core::Result<ReserveDecision>>> pending;
    for (int i = 0; i < 64; ++i) {
        auto p = std::make_shared<std::promise<core::Result<ReserveDecision>>>();
        pending.push_back(p->get_future());
        Counters& c = (i % 2 == 0) ? this->C() : this->P();
        c.Reserve({{key, -10, std::numeric_limits<int64_t>::max(), 0, 300}}, 0,
                  [p](core::Result<ReserveDecision> r) { p->set_value(std::move(r)); });
    }
    int admitted = 0;
    for (auto& f : pending) {
        ASSERT_EQ(f.wait_for(kCountersWait), std::future_status::ready);
        auto r = f.get();
        ASSERT_TRUE(r.has_value()) << r.error().message;
        admitted += r->admitted ? 1 : 0;
    }
    EXPECT_EQ(admitted, 30);
    EXPECT_EQ(GetNow(this->C(), {key})->at(0), 0);
}

TYPED_TEST_P(CountersContract, CountersWithTtlExpire) {
    const std::string key = this->Key("ttl");
    ASSERT_TRUE(ReserveNow(this->C(), {{key, 7, 100}}, 100)->admitted);
    const auto deadline = std::chrono::steady_clock::now() + kCountersWait;
    int64_t value = -1;
    while (std::chrono::steady_clock::now() < deadline) {
        value = GetNow(this->C(), {key})->at(0);
        if (value == 0) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(value, 0) << "a counter with a 100 ms TTL was still there after 10 s";
}

TYPED_TEST_P(CountersContract, BadArgumentsAreInvalidRequests) {
    auto code = [](const auto& r) {
        return r.has_value() ? core::ErrorCode::kInternal : r.error().code;
    };
    EXPECT_EQ(code(AcquireNow(this->C(), {})), core::ErrorCode::kInvalidRequest);
    EXPECT_EQ(code(AcquireNow(this->C(), {{"", 1, 1000, 1}})), core::ErrorCode::kInvalidRequest);
    EXPECT_EQ(code(AcquireNow(this->C(), {{this->Key("x"), 0, 1000, 1}})),
              core::ErrorCode::kInvalidRequest);
    EXPECT_EQ(code(AcquireNow(this->C(), {{this->Key("x"), 5, 0, 1}})),
              core::ErrorCode::kInvalidRequest);
    EXPECT_EQ(code(ChargeNow(this->C(), {{this->Key("x"), 5, 1000, -1}})),
              core::ErrorCode::kInvalidRequest);
    EXPECT_EQ(code(ReserveNow(this->C(), {{this->Key("x"), 1, 10, 20}})),
              core::ErrorCode::kInvalidRequest);  // floor above cap
    EXPECT_EQ(code(AddNow(this->C(), {{"", 1}})), core::ErrorCode::kInvalidRequest);
}

TYPED_TEST_P(CountersContract, AdmitIsAllOrNothingAcrossLimitsAndReservations) {
    const std::string rpm = this->Key("rpm"), budget = this->Key("budget");
    auto r1 = AdmitNow(this->C(), {{rpm, 5, 60'000, 1}}, {{budget, 60, 100}});
    ASSERT_TRUE(r1.has_value()) << r1.error().message;
    EXPECT_TRUE(r1->admitted);
    EXPECT_TRUE(r1->rate.admitted);
    EXPECT_TRUE(r1->reserve.admitted);
    ASSERT_EQ(r1->rate.states.size(), 1u);
    EXPECT_EQ(r1->rate.states[0].remaining, 4);
    EXPECT_EQ(r1->reserve.values, (std::vector<int64_t>{60}));
    // The reservation does not fit: the limit's token is not taken either.
    auto r2 = AdmitNow(this->P(), {{rpm, 5, 60'000, 1}}, {{budget, 50, 100}});
    ASSERT_TRUE(r2.has_value()) << r2.error().message;
    EXPECT_FALSE(r2->admitted);
    EXPECT_TRUE(r2->rate.admitted);
    EXPECT_FALSE(r2->reserve.admitted);
    EXPECT_EQ(r2->reserve.denied_index, 0);
    EXPECT_EQ(r2->reserve.values, (std::vector<int64_t>{60}));
    EXPECT_EQ(r2->rate.states[0].remaining, 4);
    // Spend the remaining 4 tokens; then the limit refuses and the reservation is not made.
    for (int i = 0; i < 4; ++i) {
        ASSERT_TRUE(AcquireNow(this->C(), {{rpm, 5, 60'000, 1}})->admitted);
    }
    auto r3 = AdmitNow(this->C(), {{rpm, 5, 60'000, 1}}, {{budget, 10, 100}});
    ASSERT_TRUE(r3.has_value()) << r3.error().message;
    EXPECT_FALSE(r3->admitted);
    EXPECT_FALSE(r3->rate.admitted);
    EXPECT_EQ(r3->rate.denied_index, 0);
    EXPECT_GT(r3->rate.retry_after_ms, 0);
    EXPECT_FALSE(r3->reserve.admitted);
    EXPECT_EQ(GetNow(this->P(), {budget})->at(0), 60);
    // Reservations alone, and limits alone, are fine too; nothing at all is not.
    auto r4 = AdmitNow(this->C(), {}, {{budget, 40, 100}});
    ASSERT_TRUE(r4.has_value());
    EXPECT_TRUE(r4->admitted);
    EXPECT_EQ(r4->reserve.values, (std::vector<int64_t>{100}));
    auto none = AdmitNow(this->C(), {}, {});
    ASSERT_FALSE(none.has_value());
    EXPECT_EQ(none.error().code, core::ErrorCode::kInvalidRequest);
}

TYPED_TEST_P(CountersContract, DeferredChangesComeBeforeLaterCallsAndReachPeers) {
    const std::string key = this->Key("settle"), fresh = this->Key("fresh");
    const std::string tpm = this->Key("tpm");
    // Fire and forget (the way settlements are made), then decide at once on the same instance:
    // the decision sees them.
    std::atomic<int> answered{0};
    auto count = [&answered](auto r) {
        EXPECT_TRUE(r.has_value());
        answered.fetch_add(1);
    };
    this->C().Add({{key, 5}}, 0, count);
    this->C().Add({{key, 7}, {fresh, -3, 100}}, 0, count);
    this->C().Add({{fresh, -2, 97}}, 0, count);  // created once: 100 - 3 - 2
    this->C().Charge({{tpm, 1000, 60'000, 1500}}, count);
    auto seen = ReserveNow(this->C(), {{key, 0, 12}});
    ASSERT_TRUE(seen.has_value()) << seen.error().message;
    EXPECT_TRUE(seen->admitted);
    EXPECT_EQ(seen->values, (std::vector<int64_t>{12}));
    auto refused = AcquireNow(this->C(), {{tpm, 1000, 60'000, 1}});
    ASSERT_TRUE(refused.has_value());
    EXPECT_FALSE(refused->admitted);  // the charged debt is there
    EXPECT_EQ(GetNow(this->C(), {fresh})->at(0), 95);
    // Every deferred call answers, and another instance sees them (bounded wait).
    const auto deadline = std::chrono::steady_clock::now() + kCountersWait;
    while (answered.load() < 4 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(answered.load(), 4);
    this->C().Add({{key, 1}}, 0, [](auto) {});
    std::vector<int64_t> peer;
    while (std::chrono::steady_clock::now() < deadline) {
        peer = *GetNow(this->P(), {key, fresh});
        if (peer == std::vector<int64_t>{13, 95}) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(peer, (std::vector<int64_t>{13, 95}));
}

REGISTER_TYPED_TEST_SUITE_P(CountersContract,
                            AdmitIsAllOrNothingAcrossLimitsAndReservations,
                            DeferredChangesComeBeforeLaterCallsAndReachPeers,
                            FullBucketAdmitsExactlyLimitThenRefuses,
                            SeveralLimitsAreAllOrNothing,
                            TokensComeBackAtTheRate,
                            ConcurrentAcquiresFromTwoInstancesAreExact,
                            CostAboveLimitNeverFits,
                            ChargeTakesBeyondEmptyAndDelaysLaterRequests,
                            ReservationsRespectTheCapAllOrNothing,
                            ConcurrentReservationsNeverExceedTheCap,
                            AvailableCounterIsCreatedFromInitAndNeverGoesBelowTheFloor,
                            ConcurrentTakesFromAnAvailableCounterAreExact,
                            CountersWithTtlExpire,
                            BadArgumentsAreInvalidRequests);

}  // namespace conduit::bus::contract
