// Partition ownership of the RabbitMQ WorkQueue across instances sharing a prefix (issue 6
// item 2): several adapter instances in one process, a real broker (CONDUIT_TEST_AMQP; skipped
// when unset).
#include "bus/rabbitmq/rabbitmq_queue.hpp"
#include "contract/work_queue_contract.hpp"
#include "core/crypto.hpp"
#include "fakes/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace conduit::bus {
namespace {

using namespace std::chrono_literals;
using contract::KeysInDistinctPartitions;
using contract::PublishSync;

constexpr auto kWait = std::chrono::seconds(30);
const std::vector<std::string> kTopics = {"jobs"};

std::optional<RabbitMqQueueOptions> BrokerFromEnv() {
    const char* url = std::getenv("CONDUIT_TEST_AMQP");
    if (url == nullptr || *url == '\0') {
        return std::nullopt;
    }
    RabbitMqQueueOptions o;
    if (!ParseAmqpUrl(url, o)) {
        ADD_FAILURE() << "CONDUIT_TEST_AMQP is not an amqp:// URL: " << url;
        return std::nullopt;
    }
    return o;
}

/// What every instance's consumer saw, in processing order, and delayed acknowledgements (so
/// that deliveries are still in progress when membership changes).
class Recorder {
public:
    struct Seen {
        std::string instance;
        std::string key;
        int seq = 0;
        int partition = 0;
        int attempt = 0;
    };

    explicit Recorder(std::chrono::milliseconds ack_delay) : ack_delay_(ack_delay) {
        acker_ = std::thread([this] { RunAcker(); });
    }
    ~Recorder() {
        {
            std::lock_guard lock(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        acker_.join();
    }

    ConsumerFn For(std::string instance) {
        return [this, instance](Delivery d, SettlementPtr s) {
            {
                std::lock_guard lock(mu_);
                seen_.push_back(
                    Seen{instance, d.partition_key, std::stoi(d.body), d.partition, d.attempt});
                pending_.push_back({std::chrono::steady_clock::now() + ack_delay_, std::move(s)});
            }
            cv_.notify_all();
        };
    }

    std::vector<Seen> Snapshot() {
        std::lock_guard lock(mu_);
        return seen_;
    }

    /// Distinct (key, seq) pairs seen.
    size_t Distinct() {
        std::lock_guard lock(mu_);
        std::set<std::pair<std::string, int>> distinct;
        for (const auto& s : seen_) {
            distinct.emplace(s.key, s.seq);
        }
        return distinct.size();
    }

private:
    void RunAcker() {
        std::unique_lock lock(mu_);
        while (!stop_) {
            if (pending_.empty()) {
                cv_.wait(lock);
                continue;
            }
            auto due = pending_.front().first;
            if (std::chrono::steady_clock::now() < due) {
                cv_.wait_until(lock, due);
                continue;
            }
            SettlementPtr s = std::move(pending_.front().second);
            pending_.pop_front();
            lock.unlock();
            s->Ack();
            lock.lock();
        }
    }

    std::chrono::milliseconds ack_delay_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;
    std::vector<Seen> seen_;
    std::deque<std::pair<std::chrono::steady_clock::time_point, SettlementPtr>> pending_;
    std::thread acker_;
};

class RabbitMqPartitionsTest : public ::testing::Test {
protected:
    static constexpr int kPartitions = 12;

    void SetUp() override {
        if (!broker_) {
            GTEST_SKIP() << "CONDUIT_TEST_AMQP not set; run `eval \"$(scripts/engines.sh start "
                            "rabbitmq)\"` to test the RabbitMQ adapter";
        }
        prefix_ = "pt" + std::to_string(::getpid()) + "x" + core::HexEncode(core::RandomBytes(4));
    }

    void TearDown() override {
        for (auto& [name, q] : queues_) {
            if (q) {
                q->Stop();
            }
        }
        queues_.clear();
        if (broker_) {
            RabbitMqQueueOptions o = Options("cleanup");
            auto r = DeleteRabbitMqTopology(o, kTopics);
            EXPECT_TRUE(r.has_value()) << r.error().message;
        }
    }

    RabbitMqQueueOptions Options(const std::string& instance) const {
        RabbitMqQueueOptions o = *broker_;
        o.prefix = prefix_;
        o.instance_id = instance;
        o.defaults.partitions = kPartitions;
        o.defaults.prefetch = 5;
        o.defaults.concurrency = 50;
        o.member_heartbeat = 100ms;
        o.member_timeout = 600ms;
        o.publish_timeout = 20s;
        // A broker busy with the previous tests' queue churn (CI runs tests in parallel) has
        // stalled new connections for ~10 s: the first connection may take longer than usual.
        o.start_timeout = 60s;
        return o;
    }

    /// Starts instance `name` consuming "jobs" into `recorder`.
    void StartInstance(const std::string& name, Recorder& recorder) {
        auto q = MakeRabbitMqQueue(Options(name));
        q->Consume("jobs", recorder.For(name));
        auto r = q->Start();
        ASSERT_TRUE(r.has_value()) << r.error().message;
        queues_[name] = std::move(q);
    }

    void StopInstance(const std::string& name) {
        queues_[name]->Stop();
        queues_.erase(name);
    }

    /// True when the running instances all see each other and own disjoint partition sets
    /// that together cover every partition, each set non-empty.
    bool SplitSettled(std::string* why) {
        std::set<int> all;
        size_t total = 0;
        for (auto& [name, q] : queues_) {
            RabbitMqOwnership o = RabbitMqOwnershipForTesting(*q, "jobs");
            if (o.members != static_cast<int>(queues_.size())) {
                *why = name + " sees " + std::to_string(o.members) + " members";
                return false;
            }
            if (o.partitions.empty()) {
                *why = name + " owns nothing";
                return false;
            }
            total += o.partitions.size();
            all.insert(o.partitions.begin(), o.partitions.end());
        }
        if (total != all.size()) {
            *why = "overlapping ownership";
            return false;
        }
        if (static_cast<int>(all.size()) != kPartitions) {
            *why = std::to_string(all.size()) + " of " + std::to_string(kPartitions) + " owned";
            return false;
        }
        return true;
    }

    void ExpectSplitSettles() {
        std::string why;
        EXPECT_TRUE(testing::WaitFor([&] { return SplitSettled(&why); }, kWait)) << why;
    }

    /// `per_key` messages "0", "1", ... on each of `keys` (one publish per round).
    void PublishSequences(const std::vector<std::string>& keys, int per_key) {
        for (int i = 0; i < per_key; ++i) {
            std::vector<OutgoingMessage> batch;
            for (const auto& key : keys) {
                OutgoingMessage m;
                m.topic = "jobs";
                m.partition_key = key;
                m.body = std::to_string(i);
                batch.push_back(std::move(m));
            }
            auto r = PublishSync(*queues_.begin()->second, std::move(batch));
            ASSERT_TRUE(r.has_value()) << r.error().message;
        }
    }

    /// Per key, the first sighting of every sequence number comes in publish order (a
    /// redelivery may repeat an earlier one; nothing is skipped ahead of its predecessors).
    static void ExpectOrderPerKey(const std::vector<Recorder::Seen>& seen) {
        std::map<std::string, int> next;  // next sequence number not yet seen per key
        for (const auto& s : seen) {
            int& n = next[s.key];
            if (s.seq < n) {
                continue;  // redelivery of one already processed (at-least-once)
            }
            EXPECT_EQ(s.seq, n) << "key " << s.key << " processed " << s.seq << " by " << s.instance
                                << " before " << n;
            n = std::max(n, s.seq + 1);
        }
    }

    std::optional<RabbitMqQueueOptions> broker_ = BrokerFromEnv();
    std::string prefix_;
    std::map<std::string, std::unique_ptr<WorkQueue>> queues_;
};

TEST_F(RabbitMqPartitionsTest, ThreeInstancesSplitThePartitionsAndEachConsumesOnlyItsOwn) {
    Recorder recorder(0ms);
    StartInstance("a", recorder);
    StartInstance("b", recorder);
    StartInstance("c", recorder);
    ExpectSplitSettles();
    std::map<std::string, std::set<int>> owned;
    for (auto& [name, q] : queues_) {
        auto o = RabbitMqOwnershipForTesting(*q, "jobs");
        owned[name] = std::set<int>(o.partitions.begin(), o.partitions.end());
        auto stats = q->Stats("jobs");
        ASSERT_TRUE(stats.has_value()) << stats.error().message;
        EXPECT_EQ(stats->partitions_owned, static_cast<int64_t>(o.partitions.size()));
        EXPECT_EQ(stats->members, 3);
    }

    const auto keys = KeysInDistinctPartitions(kPartitions, kPartitions);
    PublishSequences(keys, 5);
    ASSERT_TRUE(testing::WaitFor(
        [&] { return recorder.Distinct() == static_cast<size_t>(kPartitions * 5); }, kWait))
        << recorder.Distinct();
    std::set<std::string> workers;
    for (const auto& s : recorder.Snapshot()) {
        workers.insert(s.instance);
        EXPECT_TRUE(owned[s.instance].count(s.partition) == 1)
            << s.instance << " consumed partition " << s.partition << " it does not own";
    }
    EXPECT_EQ(workers.size(), 3u) << "every instance did some of the work";
    ExpectOrderPerKey(recorder.Snapshot());
}

TEST_F(RabbitMqPartitionsTest, AJoiningInstanceTakesPartitionsWithoutBreakingOrder) {
    Recorder recorder(15ms);
    StartInstance("a", recorder);
    ASSERT_TRUE(testing::WaitFor(
        [&] {
            return RabbitMqOwnershipForTesting(*queues_["a"], "jobs").partitions.size() ==
                   static_cast<size_t>(kPartitions);
        },
        kWait))
        << "alone, an instance owns every partition";

    const auto keys = KeysInDistinctPartitions(8, kPartitions);
    constexpr int kPerKey = 60;  // ~0.9 s of work per key: the join happens mid-stream
    PublishSequences(keys, kPerKey);
    ASSERT_TRUE(testing::WaitFor([&] { return recorder.Distinct() >= 40; }, kWait));
    StartInstance("b", recorder);
    ExpectSplitSettles();
    ASSERT_TRUE(
        testing::WaitFor([&] { return recorder.Distinct() == keys.size() * kPerKey; }, kWait))
        << recorder.Distinct() << " of " << keys.size() * kPerKey;

    auto seen = recorder.Snapshot();
    ExpectOrderPerKey(seen);
    EXPECT_TRUE(std::any_of(seen.begin(), seen.end(), [](const Recorder::Seen& s) {
        return s.instance == "b";
    })) << "the joining instance took over some partitions";
}

TEST_F(RabbitMqPartitionsTest, AStoppedInstancesPartitionsAreTakenOverAndNothingIsLost) {
    Recorder recorder(15ms);
    StartInstance("a", recorder);
    StartInstance("b", recorder);
    StartInstance("c", recorder);
    ExpectSplitSettles();

    const auto keys = KeysInDistinctPartitions(kPartitions, kPartitions);
    constexpr int kPerKey = 40;
    PublishSequences(keys, kPerKey);
    ASSERT_TRUE(testing::WaitFor([&] { return recorder.Distinct() >= 60; }, kWait));
    // Stopped with deliveries in progress: they are not acknowledged and go back to the broker.
    const auto stop_at = std::chrono::steady_clock::now();
    StopInstance("b");
    ExpectSplitSettles();
    ASSERT_TRUE(
        testing::WaitFor([&] { return recorder.Distinct() == keys.size() * kPerKey; }, kWait))
        << recorder.Distinct() << " of " << keys.size() * kPerKey;
    const auto took = std::chrono::steady_clock::now() - stop_at;
    EXPECT_LT(took, 20s);

    auto seen = recorder.Snapshot();
    ExpectOrderPerKey(seen);
    bool b_worked = false;
    for (const auto& s : seen) {
        b_worked = b_worked || s.instance == "b";
    }
    EXPECT_TRUE(b_worked);
}

TEST_F(RabbitMqPartitionsTest, AnInstanceThatReconnectsConsumesItsShareAgain) {
    // A severed connection loses the instance's consumers (the broker returns their messages);
    // after reconnecting it claims its partitions again and the split settles as before.
    Recorder recorder(0ms);
    StartInstance("a", recorder);
    StartInstance("b", recorder);
    ExpectSplitSettles();
    ASSERT_TRUE(DropRabbitMqConnectionForTesting(*queues_["b"]));
    // b reconnects within its backoff (100 ms) and rejoins: the split settles again.
    ExpectSplitSettles();
    const auto keys = KeysInDistinctPartitions(kPartitions, kPartitions);
    PublishSequences(keys, 3);
    ASSERT_TRUE(testing::WaitFor(
        [&] { return recorder.Distinct() == static_cast<size_t>(kPartitions * 3); }, kWait));
    ExpectOrderPerKey(recorder.Snapshot());
}

}  // namespace
}  // namespace conduit::bus
