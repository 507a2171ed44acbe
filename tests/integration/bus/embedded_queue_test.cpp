#include "bus/embedded_queue.hpp"

#include "contract/work_queue_contract.hpp"
#include "fakes/test_support.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace conduit::bus {
namespace {

/// Contract traits: every test gets its own queue file in a fresh temp directory.
struct EmbeddedTraits {
    static constexpr bool kRejectsDuplicateIds = true;

    conduit::testing::TempDir dir;

    std::string SkipReason() const { return "embedded queue unavailable"; }

    std::unique_ptr<WorkQueue> Make(const QueueOptions& options, std::vector<core::Loop*> loops) {
        EmbeddedQueueOptions o;
        o.path = (dir.path() / "queue.db").string();
        o.loops = std::move(loops);
        o.defaults = options;
        return MakeEmbeddedQueue(std::move(o));
    }
};

}  // namespace

namespace contract {
INSTANTIATE_TYPED_TEST_SUITE_P(Embedded, WorkQueueContract, EmbeddedTraits);
}  // namespace contract

namespace {

using contract::Msg;
using contract::Probe;
using contract::PublishSync;
using namespace std::chrono_literals;

class EmbeddedQueueTest : public ::testing::Test {
protected:
    void SetUp() override { runtime_.Start(); }
    void TearDown() override {
        for (auto& q : queues_) {
            q->Stop();
        }
        queues_.clear();
        runtime_.Stop();
    }

    WorkQueue& Make(QueueOptions options, std::string file = "queue.db") {
        EmbeddedQueueOptions o;
        o.path = (dir_.path() / file).string();
        o.loops = {&runtime_.loop(0), &runtime_.loop(1)};
        o.defaults = options;
        queues_.push_back(MakeEmbeddedQueue(std::move(o)));
        return *queues_.back();
    }

    conduit::testing::TempDir dir_;
    net::Runtime runtime_{2};
    std::vector<std::unique_ptr<WorkQueue>> queues_;
};

TEST_F(EmbeddedQueueTest, LeaseExpiryRedeliversAnUnsettledDelivery) {
    QueueOptions o;
    o.partitions = 2;
    o.lease = 200ms;
    WorkQueue& q = Make(o);
    auto probe = std::make_shared<Probe>();
    q.Consume("jobs", contract::HoldAll(probe));
    ASSERT_TRUE(q.Start().has_value());
    auto before = std::chrono::steady_clock::now();
    ASSERT_TRUE(PublishSync(q, {Msg("jobs", "k", "x", "m1")}).has_value());
    ASSERT_TRUE(conduit::testing::WaitFor([&] { return probe->Count() == 2; }));
    auto seen = probe->Seen();
    EXPECT_EQ(seen[0].attempt, 1);
    EXPECT_EQ(seen[1].attempt, 2);
    EXPECT_EQ(seen[1].message_id, "m1");
    {
        std::lock_guard lock(probe->mu);
        EXPECT_GE(probe->seen_at[1] - before, 200ms);
    }
    // The stale settlement is ignored; the current one counts.
    auto held = probe->TakeHeld();
    ASSERT_EQ(held.size(), 2u);
    held[0]->DeadLetter("stale");
    held[1]->Ack();
    ASSERT_TRUE(conduit::testing::WaitFor([&] {
        auto s = q.Stats("jobs");
        return s && s->ready == 0 && s->in_flight == 0 && s->dead == 0;
    }));
}

TEST_F(EmbeddedQueueTest, SteadyTrafficDoesNotPostponeDelayedMessages) {
    // Delayed messages used to be looked at again only when the dispatcher's wait timed out, so
    // a steady stream of other work (here: Stats() calls every millisecond) could hold them back
    // for as long as it lasted. Each must arrive within its delay plus one dispatcher idle period.
    QueueOptions o;
    o.partitions = 8;
    WorkQueue& q = Make(o);
    auto probe = std::make_shared<Probe>();
    q.Consume("jobs", contract::AckAll(probe));
    ASSERT_TRUE(q.Start().has_value());
    std::atomic<bool> busy{true};
    std::thread traffic([&] {
        while (busy) {
            (void)q.Stats("jobs");
            std::this_thread::sleep_for(1ms);
        }
    });
    auto t0 = std::chrono::steady_clock::now();
    std::vector<OutgoingMessage> batch;
    for (int i = 0; i < 20; ++i) {
        auto m = Msg("jobs", "k" + std::to_string(i % 8), "x", "d" + std::to_string(i));
        m.delay = std::chrono::milliseconds(100 + 40 * i);
        batch.push_back(std::move(m));
    }
    ASSERT_TRUE(PublishSync(q, std::move(batch)).has_value());
    bool all = conduit::testing::WaitFor([&] { return probe->Count() == 20; }, 10s);
    busy = false;
    traffic.join();
    ASSERT_TRUE(all) << probe->Count() << " of 20 delivered under steady traffic";
    std::lock_guard lock(probe->mu);
    for (size_t i = 0; i < probe->seen.size(); ++i) {
        int n = std::stoi(probe->seen[i].message_id.substr(1));
        auto due = t0 + std::chrono::milliseconds(100 + 40 * n);
        EXPECT_GE(probe->seen_at[i], due) << probe->seen[i].message_id << " came early";
        EXPECT_LT(probe->seen_at[i] - due, 1500ms) << probe->seen[i].message_id << " was held back";
    }
}

TEST_F(EmbeddedQueueTest, RepeatedCrashesEndInTheDeadLetterStore) {
    QueueOptions o;
    o.partitions = 1;
    o.max_attempts = 2;
    {
        WorkQueue& q = Make(o, "crash.db");
        auto probe = std::make_shared<Probe>();
        q.Consume("jobs", contract::HoldAll(probe));
        ASSERT_TRUE(q.Start().has_value());
        ASSERT_TRUE(PublishSync(q, {Msg("jobs", "k", "poison", "p1"), Msg("jobs", "k", "ok", "p2")})
                        .has_value());
        ASSERT_TRUE(conduit::testing::WaitFor([&] { return probe->Count() == 1; }));
        q.Stop();
    }
    queues_.clear();
    {
        WorkQueue& q = Make(o, "crash.db");
        auto probe = std::make_shared<Probe>();
        q.Consume("jobs", contract::HoldAll(probe));
        ASSERT_TRUE(q.Start().has_value());
        ASSERT_TRUE(conduit::testing::WaitFor([&] { return probe->Count() == 1; }));
        EXPECT_EQ(probe->Seen()[0].attempt, 2);
        q.Stop();
    }
    queues_.clear();
    WorkQueue& q = Make(o, "crash.db");
    auto probe = std::make_shared<Probe>();
    q.Consume("jobs", contract::AckAll(probe));
    ASSERT_TRUE(q.Start().has_value());
    // Delivered twice without a settlement: dead, and the partition moves on.
    ASSERT_TRUE(conduit::testing::WaitFor([&] { return probe->Count() == 1; }));
    EXPECT_EQ(probe->Seen()[0].message_id, "p2");
    auto dead = q.ListDead("jobs", 10);
    ASSERT_TRUE(dead.has_value());
    ASSERT_EQ(dead->size(), 1u);
    EXPECT_EQ((*dead)[0].message_id, "p1");
    EXPECT_EQ((*dead)[0].attempts, 2);
    EXPECT_NE((*dead)[0].reason.find("without being settled"), std::string::npos);
}

TEST_F(EmbeddedQueueTest, OneQueuePerFile) {
    WorkQueue& first = Make(QueueOptions{}, "shared.db");
    ASSERT_TRUE(first.Start().has_value());
    WorkQueue& second = Make(QueueOptions{}, "shared.db");
    auto r = second.Start();
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, core::ErrorCode::kUnavailable);
    auto p = PublishSync(second, {Msg("jobs", "k", "x")});
    EXPECT_FALSE(p.has_value());
}

TEST_F(EmbeddedQueueTest, UnopenableFileIsReported) {
    EmbeddedQueueOptions o;
    o.path = (dir_.path() / "missing-dir" / "queue.db").string();
    auto q = MakeEmbeddedQueue(std::move(o));
    auto r = q->Start();
    EXPECT_FALSE(r.has_value());
    EXPECT_FALSE(q->Stats("jobs").has_value());
}

TEST_F(EmbeddedQueueTest, PerTopicOptions) {
    EmbeddedQueueOptions o;
    o.path = (dir_.path() / "topics.db").string();
    o.loops = {&runtime_.loop(0)};
    o.defaults.partitions = 4;
    QueueOptions one;
    one.partitions = 1;
    one.max_attempts = 1;
    o.topics["strict"] = one;
    queues_.push_back(MakeEmbeddedQueue(std::move(o)));
    WorkQueue& q = *queues_.back();
    auto probe = std::make_shared<Probe>();
    q.Consume("strict", [probe](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        s->Retry(0ms, "once is enough");
    });
    ASSERT_TRUE(q.Start().has_value());
    ASSERT_TRUE(PublishSync(q, {Msg("strict", "some-key", "x")}).has_value());
    ASSERT_TRUE(conduit::testing::WaitFor([&] {
        auto s = q.Stats("strict");
        return s && s->dead == 1;
    }));
    ASSERT_EQ(probe->Count(), 1u);
    EXPECT_EQ(probe->Seen()[0].partition, 0);
}

}  // namespace
}  // namespace conduit::bus
