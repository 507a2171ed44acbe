#pragma once

// The behavioural contract of the bus::WorkQueue port (src/bus/work_queue.hpp), as a typed
// GoogleTest suite. Every adapter instantiates it once:
//
//     struct MyTraits {
//         /// Why Make() returns nullptr (engine not configured); shown by GTEST_SKIP.
//         std::string SkipReason() const;
//         /// A queue over this test's storage (a temp file, a broker name prefix), not started.
//         /// Called again in the same test to simulate a restart: the new queue must see what
//         /// the previous one left. nullptr = skip the test.
//         std::unique_ptr<conduit::bus::WorkQueue> Make(const conduit::bus::QueueOptions& options,
//                                                       std::vector<conduit::core::Loop*> loops);
//         /// Publish() of a batch holding a duplicate message_id fails as a whole (kConflict).
//         static constexpr bool kRejectsDuplicateIds = true;
//     };
//     namespace conduit::bus::contract {
//     INSTANTIATE_TYPED_TEST_SUITE_P(MyEngine, WorkQueueContract, MyTraits);
//     }
//
// One Traits object lives for the duration of each test (it owns the storage and cleans it up).
// Timing: tests wait on conditions (generous timeouts), never on fixed sleeps; the only timing
// assertions are lower bounds ("not delivered before its delay").

#include "bus/work_queue.hpp"
#include "core/error.hpp"
#include "core/loop.hpp"
#include "fakes/test_support.hpp"
#include "net/runtime.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conduit::bus::contract {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// Generous wait for anything that should happen "soon".
constexpr auto kWait = std::chrono::seconds(30);

/// `prefix` followed by the decimal `n`.
inline std::string Num(std::string_view prefix, int64_t n) {
    std::string out(prefix);
    out.append(std::to_string(n));
    return out;
}

inline OutgoingMessage Msg(std::string topic,
                           std::string key,
                           std::string body,
                           std::string id = {},
                           std::chrono::milliseconds delay = 0ms) {
    OutgoingMessage m;
    m.topic = std::move(topic);
    m.partition_key = std::move(key);
    m.body = std::move(body);
    m.message_id = std::move(id);
    m.delay = delay;
    return m;
}

/// Publishes and waits for `done` (at most kWait).
inline core::Result<void> PublishSync(WorkQueue& q, std::vector<OutgoingMessage> messages) {
    auto promise = std::make_shared<std::promise<core::Result<void>>>();
    auto future = promise->get_future();
    q.Publish(std::move(messages), [promise](core::Result<void> r) { promise->set_value(r); });
    if (future.wait_for(kWait) != std::future_status::ready) {
        return core::Fail(core::ErrorCode::kInternal, "publish did not complete");
    }
    return future.get();
}

/// `n` keys that fall in `n` distinct partitions (n <= partitions).
inline std::vector<std::string> KeysInDistinctPartitions(int n, int partitions) {
    std::vector<std::string> keys;
    std::set<int> used;
    for (int i = 0; static_cast<int>(keys.size()) < n; ++i) {
        std::string key = Num("key-", i);
        if (used.insert(PartitionOf(key, partitions)).second) {
            keys.push_back(key);
        }
    }
    return keys;
}

/// Records what a consumer sees. Shared (by shared_ptr) with consumer callbacks, so late
/// callbacks after a test body ends are harmless.
struct Probe {
    std::mutex mu;
    std::vector<Delivery> seen;              // every delivery, in arrival order
    std::vector<Clock::time_point> seen_at;  // when each arrived
    std::vector<SettlementPtr> held;         // settlements the test settles itself
    std::map<int, int> active_by_partition;  // unsettled deliveries per partition
    int active = 0;                          // unsettled deliveries overall
    int max_active = 0;
    int max_active_in_a_partition = 0;

    size_t Count() {
        std::lock_guard lock(mu);
        return seen.size();
    }
    size_t HeldCount() {
        std::lock_guard lock(mu);
        return held.size();
    }
    std::vector<Delivery> Seen() {
        std::lock_guard lock(mu);
        return seen;
    }
    /// Notes an arrival; returns its index.
    size_t Arrive(const Delivery& d) {
        std::lock_guard lock(mu);
        seen.push_back(d);
        seen_at.push_back(Clock::now());
        ++active;
        max_active = std::max(max_active, active);
        int& in_partition = active_by_partition[d.partition];
        ++in_partition;
        max_active_in_a_partition = std::max(max_active_in_a_partition, in_partition);
        return seen.size() - 1;
    }
    /// Notes that the delivery in `partition` is about to be settled.
    void Leave(int partition) {
        std::lock_guard lock(mu);
        --active;
        --active_by_partition[partition];
    }
    /// Takes the held settlements.
    std::vector<SettlementPtr> TakeHeld() {
        std::lock_guard lock(mu);
        return std::exchange(held, {});
    }
};

/// A consumer that acks every delivery at once.
inline ConsumerFn AckAll(std::shared_ptr<Probe> probe) {
    return [probe](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        probe->Leave(d.partition);
        s->Ack();
    };
}

/// A consumer that keeps every settlement in probe->held (the test settles them).
inline ConsumerFn HoldAll(std::shared_ptr<Probe> probe) {
    return [probe](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        std::lock_guard lock(probe->mu);
        probe->held.push_back(std::move(s));
    };
}

inline bool SameStats(const TopicStats& a, const TopicStats& b) {
    return a.ready == b.ready && a.delayed == b.delayed && a.in_flight == b.in_flight &&
           a.dead == b.dead;
}

inline std::string ToString(const TopicStats& s) {
    return "{ready " + std::to_string(s.ready) + ", delayed " + std::to_string(s.delayed) +
           ", in_flight " + std::to_string(s.in_flight) + ", dead " + std::to_string(s.dead) + "}";
}

// --- The fixture ---

template <class Traits>
class WorkQueueContract : public ::testing::Test {
protected:
    void SetUp() override { runtime_.Start(); }

    void TearDown() override {
        if (queue_) {
            queue_->Stop();
            queue_.reset();
        }
        runtime_.Stop();
    }

    /// Loops the consumers run on.
    std::vector<core::Loop*> Loops() { return {&runtime_.loop(0), &runtime_.loop(1)}; }

    /// Small limits by default, so tests run fast on every adapter.
    static QueueOptions Options(int partitions = 4) {
        QueueOptions o;
        o.partitions = partitions;
        o.prefetch = 5;
        o.concurrency = 8;
        o.max_attempts = 5;
        o.lease = std::chrono::minutes(5);
        return o;
    }

    /// Creates (or, after Restart(), recreates) the queue; skips the test when the adapter is
    /// not available.
    bool Make(const QueueOptions& options) {
        queue_ = traits_.Make(options, Loops());
        return queue_ != nullptr;
    }

    /// Simulates a process restart: the queue is stopped and destroyed (unsettled deliveries
    /// are abandoned), and a new one is made over the same storage.
    void Restart(const QueueOptions& options) {
        queue_->Stop();
        queue_.reset();
        ASSERT_TRUE(Make(options));
    }

    WorkQueue& Q() { return *queue_; }

    void Start() {
        auto r = queue_->Start();
        ASSERT_TRUE(r.has_value()) << r.error().message;
    }

    void Publish(std::vector<OutgoingMessage> messages) {
        auto r = PublishSync(*queue_, std::move(messages));
        ASSERT_TRUE(r.has_value()) << r.error().message;
    }

    /// Waits until Stats(topic) equals `want`.
    void ExpectStats(std::string_view topic, TopicStats want) {
        TopicStats last;
        bool ok = testing::WaitFor(
            [&] {
                auto s = queue_->Stats(topic);
                if (!s) {
                    return false;
                }
                last = *s;
                return SameStats(last, want);
            },
            kWait);
        EXPECT_TRUE(ok) << "stats of " << topic << ": got " << ToString(last) << ", want "
                        << ToString(want);
    }

    Traits traits_;
    net::Runtime runtime_{2};
    std::unique_ptr<WorkQueue> queue_;
};

TYPED_TEST_SUITE_P(WorkQueueContract);

#define CONTRACT_MAKE(options)                          \
    do {                                                \
        if (!this->Make(options)) {                     \
            GTEST_SKIP() << this->traits_.SkipReason(); \
        }                                               \
    } while (0)

// ===== Basics =====

TYPED_TEST_P(WorkQueueContract, PublishConsumeAck) {
    auto opts = this->Options();
    CONTRACT_MAKE(opts);
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("jobs", AckAll(probe));
    this->Start();
    EXPECT_TRUE(this->Q().Engine() == "embedded" || this->Q().Engine() == "rabbitmq");

    this->Publish({Msg("jobs", "vk-1", "{\"n\":1}", "msg-1")});
    ASSERT_TRUE(testing::WaitFor([&] { return probe->Count() == 1; }, kWait));
    Delivery d = probe->Seen()[0];
    EXPECT_EQ(d.message_id, "msg-1");
    EXPECT_EQ(d.topic, "jobs");
    EXPECT_EQ(d.partition_key, "vk-1");
    EXPECT_EQ(d.partition, PartitionOf("vk-1", opts.partitions));
    EXPECT_EQ(d.body, "{\"n\":1}");
    EXPECT_EQ(d.attempt, 1);
    EXPECT_GT(d.enqueued_at_ms, 1'600'000'000'000);
    this->ExpectStats("jobs", TopicStats{});
}

TYPED_TEST_P(WorkQueueContract, GeneratesMessageIdsAndKeepsBinaryBodies) {
    CONTRACT_MAKE(this->Options());
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("jobs", AckAll(probe));
    this->Start();
    std::string binary("a\0b\xff\n", 5);
    this->Publish({Msg("jobs", "k", binary), Msg("jobs", "k", "")});
    ASSERT_TRUE(testing::WaitFor([&] { return probe->Count() == 2; }, kWait));
    auto seen = probe->Seen();
    EXPECT_EQ(seen[0].body, binary);
    EXPECT_EQ(seen[1].body, "");
    EXPECT_FALSE(seen[0].message_id.empty());
    EXPECT_FALSE(seen[1].message_id.empty());
    EXPECT_NE(seen[0].message_id, seen[1].message_id);
}

TYPED_TEST_P(WorkQueueContract, TopicsAreIndependent) {
    CONTRACT_MAKE(this->Options());
    auto a = std::make_shared<Probe>();
    auto b = std::make_shared<Probe>();
    this->Q().Consume("alpha", AckAll(a));
    this->Q().Consume("beta", AckAll(b));
    this->Start();
    this->Publish({Msg("alpha", "k", "a1"), Msg("beta", "k", "b1"), Msg("alpha", "k", "a2")});
    ASSERT_TRUE(testing::WaitFor([&] { return a->Count() == 2 && b->Count() == 1; }, kWait));
    EXPECT_EQ(a->Seen()[0].body, "a1");
    EXPECT_EQ(a->Seen()[1].body, "a2");
    EXPECT_EQ(b->Seen()[0].body, "b1");
    EXPECT_EQ(b->Seen()[0].topic, "beta");
}

// ===== Ordering and parallelism =====

TYPED_TEST_P(WorkQueueContract, InOrderOneAtATimeWithinAPartition) {
    auto opts = this->Options();
    opts.concurrency = 8;
    CONTRACT_MAKE(opts);
    auto probe = std::make_shared<Probe>();
    std::vector<core::Loop*> loops = this->Loops();
    // Settle from the other loop, so settlements race with the next delivery if they could.
    this->Q().Consume("jobs", [probe, loops](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        loops[(d.partition + 1) % loops.size()]->Post([probe, p = d.partition, s] {
            probe->Leave(p);
            s->Ack();
        });
    });
    this->Start();
    constexpr int kCount = 200;
    std::vector<OutgoingMessage> batch;
    for (int i = 0; i < kCount; ++i) {
        batch.push_back(Msg("jobs", "one-key", Num("", i)));
        if (batch.size() == 7 || i == kCount - 1) {  // several batches of odd sizes
            this->Publish(std::move(batch));
            batch.clear();
        }
    }
    ASSERT_TRUE(testing::WaitFor([&] { return probe->Count() == kCount; }, kWait));
    auto seen = probe->Seen();
    for (int i = 0; i < kCount; ++i) {
        ASSERT_EQ(seen[i].body, Num("", i)) << "out of order at " << i;
        EXPECT_EQ(seen[i].attempt, 1);
    }
    std::lock_guard lock(probe->mu);
    EXPECT_EQ(probe->max_active_in_a_partition, 1);
}

TYPED_TEST_P(WorkQueueContract, PartitionsRunInParallel) {
    auto opts = this->Options(8);
    CONTRACT_MAKE(opts);
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("jobs", HoldAll(probe));
    this->Start();
    auto keys = KeysInDistinctPartitions(2, opts.partitions);
    this->Publish({Msg("jobs", keys[0], "a"), Msg("jobs", keys[1], "b")});
    // Both are handed out while neither is settled.
    ASSERT_TRUE(testing::WaitFor([&] { return probe->HeldCount() == 2; }, kWait));
    for (auto& s : probe->TakeHeld()) {
        s->Ack();
    }
    this->ExpectStats("jobs", TopicStats{});
}

TYPED_TEST_P(WorkQueueContract, ConcurrencyLimitHonoured) {
    auto opts = this->Options(8);
    opts.concurrency = 3;
    opts.prefetch = 2;
    CONTRACT_MAKE(opts);
    auto probe = std::make_shared<Probe>();
    std::vector<core::Loop*> loops = this->Loops();
    // Each delivery is held for ~2 ms (a timer on its loop), then acked.
    this->Q().Consume("jobs", [probe, loops](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        core::Loop* loop = loops[static_cast<size_t>(d.partition) % loops.size()];
        loop->Post([loop, probe, p = d.partition, s] {
            loop->StartTimer(2ms, [probe, p, s] {
                probe->Leave(p);
                s->Ack();
            });
        });
    });
    this->Start();
    constexpr int kCount = 60;
    std::vector<OutgoingMessage> batch;
    for (int i = 0; i < kCount; ++i) {
        batch.push_back(Msg("jobs", Num("vk-", i), Num("", i)));
    }
    this->Publish(std::move(batch));
    ASSERT_TRUE(testing::WaitFor([&] { return probe->Count() == kCount; }, kWait));
    std::lock_guard lock(probe->mu);
    EXPECT_LE(probe->max_active, opts.concurrency);
    EXPECT_GE(probe->max_active, 2) << "no parallelism across partitions";
    EXPECT_EQ(probe->max_active_in_a_partition, 1);
}

TYPED_TEST_P(WorkQueueContract, PrefetchBoundsWhatIsHeld) {
    // One partition: the consumer gets one message at a time, and the queue holds at most
    // `prefetch` unsettled (handed + buffered) messages for it.
    auto opts = this->Options(1);
    opts.prefetch = 2;
    opts.concurrency = 1;
    CONTRACT_MAKE(opts);
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("jobs", HoldAll(probe));
    this->Start();
    std::vector<OutgoingMessage> batch;
    for (int i = 0; i < 10; ++i) {
        batch.push_back(Msg("jobs", "k", Num("", i)));
    }
    this->Publish(std::move(batch));
    ASSERT_TRUE(testing::WaitFor([&] { return probe->HeldCount() == 1; }, kWait));
    TopicStats last;
    ASSERT_TRUE(testing::WaitFor(
        [&] {
            auto s = this->Q().Stats("jobs");
            if (!s) {
                return false;
            }
            last = *s;
            return s->ready + s->in_flight == 10;
        },
        kWait))
        << ToString(last);
    EXPECT_GE(last.in_flight, 1);
    EXPECT_LE(last.in_flight, opts.prefetch);
    EXPECT_EQ(probe->HeldCount(), 1u);
    // Drain, one at a time.
    for (int i = 0; i < 10; ++i) {
        ASSERT_TRUE(testing::WaitFor([&] { return probe->HeldCount() == 1; }, kWait)) << i;
        for (auto& s : probe->TakeHeld()) {
            s->Ack();
        }
    }
    ASSERT_EQ(probe->Count(), 10u);
    auto seen = probe->Seen();
    for (int i = 0; i < 10; ++i) {
        EXPECT_EQ(seen[i].body, Num("", i));
    }
    this->ExpectStats("jobs", TopicStats{});
}

// ===== Settlement =====

TYPED_TEST_P(WorkQueueContract, RetryRedeliversAfterTheDelayWithAttemptPlusOne) {
    CONTRACT_MAKE(this->Options());
    auto probe = std::make_shared<Probe>();
    constexpr auto kDelay = 300ms;
    auto retried_at = std::make_shared<std::atomic<int64_t>>(0);
    this->Q().Consume("jobs", [probe, retried_at](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        probe->Leave(d.partition);
        if (d.attempt == 1) {
            retried_at->store(Clock::now().time_since_epoch().count());
            s->Retry(kDelay, "not yet");
        } else {
            s->Ack();
        }
    });
    this->Start();
    this->Publish({Msg("jobs", "k", "x", "m-1")});
    ASSERT_TRUE(testing::WaitFor([&] { return probe->Count() == 2; }, kWait));
    std::lock_guard lock(probe->mu);
    EXPECT_EQ(probe->seen[0].attempt, 1);
    EXPECT_EQ(probe->seen[1].attempt, 2);
    EXPECT_EQ(probe->seen[1].message_id, "m-1");
    EXPECT_EQ(probe->seen[1].body, "x");
    Clock::time_point retried{Clock::duration(retried_at->load())};
    EXPECT_GE(probe->seen_at[1] - retried, kDelay) << "redelivered before its delay";
}

TYPED_TEST_P(WorkQueueContract, RetryWithoutDelayRedeliversAtOnce) {
    CONTRACT_MAKE(this->Options());
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("jobs", [probe](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        probe->Leave(d.partition);
        if (d.attempt < 3) {
            s->Retry(0ms, "again");
        } else {
            s->Ack();
        }
    });
    this->Start();
    this->Publish({Msg("jobs", "k", "x")});
    ASSERT_TRUE(testing::WaitFor([&] { return probe->Count() == 3; }, kWait));
    auto seen = probe->Seen();
    EXPECT_EQ(seen[0].attempt, 1);
    EXPECT_EQ(seen[1].attempt, 2);
    EXPECT_EQ(seen[2].attempt, 3);
    this->ExpectStats("jobs", TopicStats{});
}

TYPED_TEST_P(WorkQueueContract, DelayedPublishIsNotDeliveredEarly) {
    CONTRACT_MAKE(this->Options());
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("jobs", AckAll(probe));
    this->Start();
    constexpr auto kDelay = 250ms;
    auto before = Clock::now();
    this->Publish({Msg("jobs", "k", "later", "", kDelay), Msg("jobs", "k2", "now")});
    ASSERT_TRUE(testing::WaitFor([&] { return probe->Count() == 2; }, kWait));
    std::lock_guard lock(probe->mu);
    EXPECT_EQ(probe->seen[0].body, "now");
    EXPECT_EQ(probe->seen[1].body, "later");
    EXPECT_GE(probe->seen_at[1] - before, kDelay);
}

TYPED_TEST_P(WorkQueueContract, MaxAttemptsDeadLettersAndRequeueBringsItBack) {
    auto opts = this->Options();
    opts.max_attempts = 3;
    CONTRACT_MAKE(opts);
    auto probe = std::make_shared<Probe>();
    auto fail = std::make_shared<std::atomic<bool>>(true);
    this->Q().Consume("jobs", [probe, fail](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        probe->Leave(d.partition);
        if (fail->load()) {
            s->Retry(0ms, Num("boom ", d.attempt));
        } else {
            s->Ack();
        }
    });
    this->Start();
    this->Publish({Msg("jobs", "vk-9", "payload", "poison")});
    this->ExpectStats("jobs", TopicStats{0, 0, 0, 1});
    EXPECT_EQ(probe->Count(), 3u);

    auto dead = this->Q().ListDead("jobs", 10);
    ASSERT_TRUE(dead.has_value()) << dead.error().message;
    ASSERT_EQ(dead->size(), 1u);
    EXPECT_EQ((*dead)[0].message_id, "poison");
    EXPECT_EQ((*dead)[0].topic, "jobs");
    EXPECT_EQ((*dead)[0].partition_key, "vk-9");
    EXPECT_EQ((*dead)[0].body, "payload");
    EXPECT_EQ((*dead)[0].attempts, 3);
    EXPECT_NE((*dead)[0].reason.find("boom 3"), std::string::npos) << (*dead)[0].reason;
    EXPECT_GT((*dead)[0].dead_at_ms, 1'600'000'000'000);

    auto unknown = this->Q().Requeue("jobs", "no-such-message");
    ASSERT_TRUE(unknown.has_value()) << unknown.error().message;
    EXPECT_FALSE(*unknown);

    fail->store(false);
    auto requeued = this->Q().Requeue("jobs", "poison");
    ASSERT_TRUE(requeued.has_value()) << requeued.error().message;
    EXPECT_TRUE(*requeued);
    ASSERT_TRUE(testing::WaitFor([&] { return probe->Count() == 4; }, kWait));
    Delivery again = probe->Seen()[3];
    EXPECT_EQ(again.message_id, "poison");
    EXPECT_EQ(again.body, "payload");
    EXPECT_EQ(again.attempt, 1) << "attempts restart after a requeue";
    this->ExpectStats("jobs", TopicStats{});
    auto after = this->Q().ListDead("jobs", 10);
    ASSERT_TRUE(after.has_value());
    EXPECT_TRUE(after->empty());
}

TYPED_TEST_P(WorkQueueContract, DeadLetterIsImmediateAndListedNewestFirst) {
    CONTRACT_MAKE(this->Options());
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("jobs", [probe](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        probe->Leave(d.partition);
        s->DeadLetter("bad " + d.body);
    });
    this->Start();
    // One key: dead-lettered one after the other, in publish order.
    this->Publish(
        {Msg("jobs", "k", "1", "d1"), Msg("jobs", "k", "2", "d2"), Msg("jobs", "k", "3", "d3")});
    this->ExpectStats("jobs", TopicStats{0, 0, 0, 3});
    EXPECT_EQ(probe->Count(), 3u);
    auto dead = this->Q().ListDead("jobs", 2);
    ASSERT_TRUE(dead.has_value()) << dead.error().message;
    ASSERT_EQ(dead->size(), 2u);
    EXPECT_EQ((*dead)[0].message_id, "d3");
    EXPECT_EQ((*dead)[1].message_id, "d2");
    EXPECT_EQ((*dead)[0].attempts, 1);
    EXPECT_EQ((*dead)[0].reason, "bad 3");
    EXPECT_GE((*dead)[0].dead_at_ms, (*dead)[1].dead_at_ms);
    auto all = this->Q().ListDead("jobs", 100);
    ASSERT_TRUE(all.has_value());
    EXPECT_EQ(all->size(), 3u);
    auto other = this->Q().ListDead("other-topic", 100);
    ASSERT_TRUE(other.has_value());
    EXPECT_TRUE(other->empty());
}

TYPED_TEST_P(WorkQueueContract, OnlyTheFirstSettlementCounts) {
    CONTRACT_MAKE(this->Options());
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("jobs", [probe](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        probe->Leave(d.partition);
        s->Ack();
        s->Retry(0ms, "ignored");
        s->DeadLetter("ignored");
        s->Ack();
    });
    this->Start();
    this->Publish({Msg("jobs", "k", "1"), Msg("jobs", "k", "2")});
    ASSERT_TRUE(testing::WaitFor([&] { return probe->Count() == 2; }, kWait));
    this->ExpectStats("jobs", TopicStats{});
    // A third message on the same partition comes next: nothing was redelivered in between.
    this->Publish({Msg("jobs", "k", "3")});
    ASSERT_TRUE(testing::WaitFor([&] { return probe->Count() == 3; }, kWait));
    auto seen = probe->Seen();
    EXPECT_EQ(seen[2].body, "3");
    EXPECT_EQ(seen[2].attempt, 1);
    this->ExpectStats("jobs", TopicStats{});
}

// ===== Stats and batches =====

TYPED_TEST_P(WorkQueueContract, StatsCountReadyDelayedInFlightAndDead) {
    CONTRACT_MAKE(this->Options());
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("work", HoldAll(probe));
    this->Start();
    // "idle" has no consumer: its messages stay ready.
    this->Publish({Msg("idle", "a", "1"), Msg("idle", "b", "2"), Msg("idle", "c", "3"),
                   Msg("idle", "d", "4", "", std::chrono::minutes(10))});
    this->ExpectStats("idle", TopicStats{3, 1, 0, 0});
    this->Publish({Msg("work", "a", "1")});
    ASSERT_TRUE(testing::WaitFor([&] { return probe->HeldCount() == 1; }, kWait));
    this->ExpectStats("work", TopicStats{0, 0, 1, 0});
    probe->TakeHeld()[0]->DeadLetter("no");
    this->ExpectStats("work", TopicStats{0, 0, 0, 1});
    this->ExpectStats("never-used", TopicStats{});
}

TYPED_TEST_P(WorkQueueContract, BatchIsAllOrNothing) {
    if (!TypeParam::kRejectsDuplicateIds) {
        GTEST_SKIP() << "adapter cannot observe a failed batch (no unique message ids)";
    }
    CONTRACT_MAKE(this->Options());
    this->Start();
    this->Publish({Msg("idle", "k", "first", "id-1")});
    // The batch's third message repeats an existing id: nothing of it is stored.
    auto r = PublishSync(this->Q(), {Msg("idle", "k", "a", "id-2"), Msg("idle", "k", "b", "id-3"),
                                     Msg("idle", "k", "c", "id-1")});
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, core::ErrorCode::kConflict) << r.error().message;
    // A duplicate inside one batch fails the same way.
    auto r2 =
        PublishSync(this->Q(), {Msg("idle", "k", "a", "id-4"), Msg("idle", "k", "b", "id-4")});
    ASSERT_FALSE(r2.has_value());
    this->ExpectStats("idle", TopicStats{1, 0, 0, 0});
    // The failed ids are free to use.
    this->Publish({Msg("idle", "k", "a", "id-2"), Msg("idle", "k", "b", "id-4")});
    this->ExpectStats("idle", TopicStats{3, 0, 0, 0});
}

TYPED_TEST_P(WorkQueueContract, PublishFromManyThreads) {
    auto opts = this->Options(8);
    CONTRACT_MAKE(opts);
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("jobs", AckAll(probe));
    this->Start();
    constexpr int kThreads = 4;
    constexpr int kPerThread = 50;
    std::atomic<int> done{0};
    std::atomic<int> failed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kPerThread; ++i) {
                this->Q().Publish({Msg("jobs", Num("t", t), Num(Num("", t) + ":", i))},
                                  [&](core::Result<void> r) { (r ? done : failed).fetch_add(1); });
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    ASSERT_TRUE(testing::WaitFor(
        [&] { return done.load() + failed.load() == kThreads * kPerThread; }, kWait));
    EXPECT_EQ(failed.load(), 0);
    ASSERT_TRUE(testing::WaitFor([&] { return probe->Count() == kThreads * kPerThread; }, kWait));
    // Per key (one thread each), publish order is kept.
    std::map<std::string, int> next;
    for (const auto& d : probe->Seen()) {
        int expected = next[d.partition_key]++;
        EXPECT_EQ(d.body, d.partition_key.substr(1) + ":" + std::to_string(expected));
    }
}

// ===== Restart =====

TYPED_TEST_P(WorkQueueContract, MessagesSurviveARestartAndUnsettledOnesAreRedelivered) {
    auto opts = this->Options();
    CONTRACT_MAKE(opts);
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("jobs", HoldAll(probe));
    this->Start();
    std::vector<OutgoingMessage> batch;
    for (int i = 0; i < 5; ++i) {
        batch.push_back(Msg("jobs", "k", Num("", i), Num("m", i)));
    }
    batch.push_back(Msg("jobs", "other", "x", "mx", std::chrono::milliseconds(200)));
    this->Publish(std::move(batch));
    ASSERT_TRUE(testing::WaitFor([&] { return probe->HeldCount() >= 1; }, kWait));
    EXPECT_EQ(probe->Seen()[0].message_id, "m0");

    // "Crash": the first delivery is never settled.
    this->Restart(opts);
    auto after = std::make_shared<Probe>();
    this->Q().Consume("jobs", AckAll(after));
    this->Start();
    ASSERT_TRUE(testing::WaitFor([&] { return after->Count() >= 6; }, kWait))
        << "got " << after->Count();
    std::vector<Delivery> in_key;
    for (const auto& d : after->Seen()) {
        if (d.partition_key == "k") {
            in_key.push_back(d);
        }
    }
    ASSERT_EQ(in_key.size(), 5u);
    for (int i = 0; i < 5; ++i) {
        EXPECT_EQ(in_key[i].message_id, Num("m", i)) << "order after restart";
    }
    EXPECT_GE(in_key[0].attempt, 2) << "the unsettled delivery counts as an attempt";
    // Messages never handed to the consumer: attempt 1 (RabbitMQ may count a message that was
    // only prefetched by the stopped consumer as delivered: 2).
    for (size_t i = 1; i < in_key.size(); ++i) {
        EXPECT_GE(in_key[i].attempt, 1);
        EXPECT_LE(in_key[i].attempt, 2);
    }
    this->ExpectStats("jobs", TopicStats{});
}

TYPED_TEST_P(WorkQueueContract, DeadLettersSurviveARestart) {
    auto opts = this->Options();
    CONTRACT_MAKE(opts);
    auto probe = std::make_shared<Probe>();
    this->Q().Consume("jobs", [probe](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        s->DeadLetter("gone");
    });
    this->Start();
    this->Publish({Msg("jobs", "k", "body", "dead-1")});
    this->ExpectStats("jobs", TopicStats{0, 0, 0, 1});
    this->Restart(opts);
    this->Start();
    auto dead = this->Q().ListDead("jobs", 10);
    ASSERT_TRUE(dead.has_value()) << dead.error().message;
    ASSERT_EQ(dead->size(), 1u);
    EXPECT_EQ((*dead)[0].message_id, "dead-1");
    EXPECT_EQ((*dead)[0].reason, "gone");
}

TYPED_TEST_P(WorkQueueContract, PublishAfterStopFails) {
    CONTRACT_MAKE(this->Options());
    this->Start();
    this->Q().Stop();
    auto r = PublishSync(this->Q(), {Msg("jobs", "k", "x")});
    EXPECT_FALSE(r.has_value());
}

REGISTER_TYPED_TEST_SUITE_P(WorkQueueContract,
                            PublishConsumeAck,
                            GeneratesMessageIdsAndKeepsBinaryBodies,
                            TopicsAreIndependent,
                            InOrderOneAtATimeWithinAPartition,
                            PartitionsRunInParallel,
                            ConcurrencyLimitHonoured,
                            PrefetchBoundsWhatIsHeld,
                            RetryRedeliversAfterTheDelayWithAttemptPlusOne,
                            RetryWithoutDelayRedeliversAtOnce,
                            DelayedPublishIsNotDeliveredEarly,
                            MaxAttemptsDeadLettersAndRequeueBringsItBack,
                            DeadLetterIsImmediateAndListedNewestFirst,
                            OnlyTheFirstSettlementCounts,
                            StatsCountReadyDelayedInFlightAndDead,
                            BatchIsAllOrNothing,
                            PublishFromManyThreads,
                            MessagesSurviveARestartAndUnsettledOnesAreRedelivered,
                            DeadLettersSurviveARestart,
                            PublishAfterStopFails);

#undef CONTRACT_MAKE

}  // namespace conduit::bus::contract
