#include "bus/rabbitmq/rabbitmq_queue.hpp"

#include "contract/work_queue_contract.hpp"
#include "core/crypto.hpp"
#include "fakes/test_support.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace conduit::bus {
namespace {

/// Every topic a test may touch (deleted from the broker when the test ends).
const std::vector<std::string> kTopics = {"jobs",       "alpha",       "beta",  "work",  "idle",
                                          "never-used", "other-topic", "bench", "strict"};

/// The broker from CONDUIT_TEST_AMQP (amqp://user:pass@host:port/vhost), or nullopt.
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

/// A name prefix no other test (or run) uses.
std::string UniquePrefix() {
    static std::atomic<int> counter{0};
    return "ct" + std::to_string(::getpid()) + "x" + std::to_string(counter.fetch_add(1)) + "x" +
           core::HexEncode(core::RandomBytes(3));
}

/// Contract traits: a unique queue-name prefix per test, deleted afterwards.
struct RabbitTraits {
    static constexpr bool kRejectsDuplicateIds = false;

    std::optional<RabbitMqQueueOptions> broker = BrokerFromEnv();
    std::string prefix = UniquePrefix();
    int max_partitions = 0;

    ~RabbitTraits() {
        if (broker && max_partitions > 0) {
            RabbitMqQueueOptions o = *broker;
            o.prefix = prefix;
            o.defaults.partitions = max_partitions;
            auto r = DeleteRabbitMqTopology(o, kTopics);
            EXPECT_TRUE(r.has_value()) << r.error().message;
        }
    }

    std::string SkipReason() const {
        return "CONDUIT_TEST_AMQP not set; run `eval \"$(scripts/engines.sh start rabbitmq)\"` "
               "to test the RabbitMQ adapter";
    }

    std::unique_ptr<WorkQueue> Make(const QueueOptions& options, std::vector<core::Loop*> loops) {
        if (!broker) {
            return nullptr;
        }
        RabbitMqQueueOptions o = *broker;
        o.prefix = prefix;
        o.loops = std::move(loops);
        o.defaults = options;
        o.publish_timeout = std::chrono::seconds(20);
        max_partitions = std::max(max_partitions, options.partitions);
        return MakeRabbitMqQueue(std::move(o));
    }
};

}  // namespace

namespace contract {
INSTANTIATE_TYPED_TEST_SUITE_P(RabbitMq, WorkQueueContract, RabbitTraits);
}  // namespace contract

namespace {

using contract::Msg;
using contract::Num;
using contract::Probe;
using contract::PublishSync;
using namespace std::chrono_literals;

class RabbitMqQueueTest : public ::testing::Test {
protected:
    void SetUp() override {
        if (!traits_.broker) {
            GTEST_SKIP() << traits_.SkipReason();
        }
        runtime_.Start();
    }
    void TearDown() override {
        if (queue_) {
            queue_->Stop();
            queue_.reset();
        }
        runtime_.Stop();
    }

    RabbitTraits traits_;
    net::Runtime runtime_{2};
    std::unique_ptr<WorkQueue> queue_;
};

TEST_F(RabbitMqQueueTest, ConsumptionResumesAfterTheConnectionDropsAndNothingIsLost) {
    QueueOptions o;
    o.partitions = 8;
    o.prefetch = 10;
    o.concurrency = 8;
    queue_ = traits_.Make(o, {&runtime_.loop(0), &runtime_.loop(1)});
    auto probe = std::make_shared<Probe>();
    queue_->Consume("jobs", contract::AckAll(probe));
    ASSERT_TRUE(queue_->Start().has_value());

    constexpr int kFirst = 300;
    constexpr int kSecond = 300;
    std::atomic<int> confirmed{0};
    std::atomic<int> failed{0};
    auto publish = [&](int from, int to) {
        for (int i = from; i < to; i += 10) {
            std::vector<OutgoingMessage> batch;
            for (int j = i; j < i + 10 && j < to; ++j) {
                batch.push_back(Msg("jobs", Num("vk-", j % 37), Num("", j), Num("m", j)));
            }
            size_t n = batch.size();
            queue_->Publish(std::move(batch), [&, n](core::Result<void> r) {
                (r ? confirmed : failed).fetch_add(static_cast<int>(n));
            });
        }
    };
    publish(0, kFirst);
    ASSERT_TRUE(conduit::testing::WaitFor([&] { return probe->Count() >= 50; }, 30s));

    // The network "fails" mid-stream: unacked deliveries are redelivered, unconfirmed
    // publishes are republished, consumption resumes after the reconnect.
    ASSERT_TRUE(DropRabbitMqConnectionForTesting(*queue_));
    publish(kFirst, kFirst + kSecond);

    ASSERT_TRUE(conduit::testing::WaitFor(
        [&] { return confirmed.load() + failed.load() == kFirst + kSecond; }, 60s));
    EXPECT_EQ(failed.load(), 0);
    std::set<std::string> ids;
    ASSERT_TRUE(conduit::testing::WaitFor(
        [&] {
            for (const auto& d : probe->Seen()) {
                ids.insert(d.message_id);
            }
            return ids.size() == kFirst + kSecond;
        },
        60s))
        << "distinct messages seen: " << ids.size();
    // Per key, the first delivery of each message follows publish order.
    std::map<std::string, int> last;
    std::set<std::string> first_seen;
    for (const auto& d : probe->Seen()) {
        if (!first_seen.insert(d.message_id).second) {
            continue;  // a redelivery (at-least-once)
        }
        int n = std::stoi(d.body);
        auto it = last.find(d.partition_key);
        if (it != last.end()) {
            EXPECT_GT(n, it->second) << "order within key " << d.partition_key;
        }
        last[d.partition_key] = n;
    }
    ASSERT_TRUE(conduit::testing::WaitFor(
        [&] {
            auto s = queue_->Stats("jobs");
            return s && s->ready == 0 && s->in_flight == 0 && s->dead == 0;
        },
        30s));
}

TEST_F(RabbitMqQueueTest, SettlementsOfALostConnectionAreIgnored) {
    QueueOptions o;
    o.partitions = 2;
    queue_ = traits_.Make(o, {&runtime_.loop(0), &runtime_.loop(1)});
    auto probe = std::make_shared<Probe>();
    queue_->Consume("jobs", contract::HoldAll(probe));
    ASSERT_TRUE(queue_->Start().has_value());
    ASSERT_TRUE(PublishSync(*queue_, {Msg("jobs", "k", "x", "only")}).has_value());
    ASSERT_TRUE(conduit::testing::WaitFor([&] { return probe->HeldCount() == 1; }, 30s));
    ASSERT_TRUE(DropRabbitMqConnectionForTesting(*queue_));
    // The old delivery still blocks its partition until settled; settling it is harmless.
    auto stale = probe->TakeHeld();
    stale[0]->Ack();
    ASSERT_TRUE(conduit::testing::WaitFor([&] { return probe->HeldCount() == 1; }, 30s));
    auto seen = probe->Seen();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[1].message_id, "only");
    EXPECT_EQ(seen[1].attempt, 2) << "the broker counted the lost delivery";
    probe->TakeHeld()[0]->Ack();
    ASSERT_TRUE(conduit::testing::WaitFor(
        [&] {
            auto s = queue_->Stats("jobs");
            return s && s->ready == 0 && s->in_flight == 0;
        },
        30s));
}

// A real broker restart. Opt-in (it takes ~15 s and disturbs everyone using the broker): set
// CONDUIT_TEST_AMQP_RESTART to a command that restarts it, e.g.
//   CONDUIT_TEST_AMQP_RESTART='scripts/engines.sh stop rabbitmq && scripts/engines.sh start
//   rabbitmq'
TEST_F(RabbitMqQueueTest, BrokerRestartLosesNothing) {
    const char* restart = std::getenv("CONDUIT_TEST_AMQP_RESTART");
    if (restart == nullptr || *restart == '\0') {
        GTEST_SKIP() << "set CONDUIT_TEST_AMQP_RESTART to a broker restart command to run this";
    }
    QueueOptions o;
    o.partitions = 4;
    o.prefetch = 5;
    queue_ = traits_.Make(o, {&runtime_.loop(0), &runtime_.loop(1)});
    auto probe = std::make_shared<Probe>();
    auto hold = std::make_shared<std::atomic<bool>>(true);
    queue_->Consume("jobs", [probe, hold](Delivery d, SettlementPtr s) {
        probe->Arrive(d);
        if (hold->load()) {
            std::lock_guard lock(probe->mu);
            probe->held.push_back(std::move(s));  // unsettled across the restart
        } else {
            s->Ack();
        }
    });
    ASSERT_TRUE(queue_->Start().has_value());
    std::vector<OutgoingMessage> before;
    for (int i = 0; i < 100; ++i) {
        before.push_back(Msg("jobs", Num("vk-", i % 7), Num("", i), Num("m", i)));
    }
    ASSERT_TRUE(PublishSync(*queue_, std::move(before)).has_value());
    ASSERT_TRUE(conduit::testing::WaitFor([&] { return probe->HeldCount() >= 4; }, 30s));

    // Publish while the broker restarts: the batches wait for the reconnect.
    std::atomic<int> restart_rc{-1};
    std::thread restarter([&] { restart_rc = std::system(restart); });
    std::vector<OutgoingMessage> after;
    for (int i = 100; i < 150; ++i) {
        after.push_back(Msg("jobs", Num("vk-", i % 7), Num("", i), Num("m", i)));
    }
    auto published = PublishSync(*queue_, std::move(after));
    restarter.join();
    ASSERT_EQ(restart_rc.load(), 0) << restart;
    ASSERT_TRUE(published.has_value()) << published.error().message;
    hold->store(false);
    // Settling deliveries of the lost connection only frees their partitions; the restarted
    // broker redelivers them.
    for (auto& s : probe->TakeHeld()) {
        s->Ack();
    }
    std::set<std::string> ids;
    ASSERT_TRUE(conduit::testing::WaitFor(
        [&] {
            for (const auto& d : probe->Seen()) {
                ids.insert(d.message_id);
            }
            return ids.size() == 150;
        },
        60s))
        << "distinct messages seen: " << ids.size();
}

TEST(RabbitMqUnreachableTest, StartAndPublishReportUnavailable) {
    RabbitMqQueueOptions o;
    o.host = "127.0.0.1";
    o.port = 1;  // nothing listens there
    o.start_timeout = 300ms;
    o.publish_timeout = 300ms;
    o.reconnect_initial = 50ms;
    o.reconnect_max = 100ms;
    auto q = MakeRabbitMqQueue(o);
    auto started = q->Start();
    ASSERT_FALSE(started.has_value());
    EXPECT_EQ(started.error().code, core::ErrorCode::kUnavailable);
    auto published = PublishSync(*q, {Msg("jobs", "k", "x")});
    ASSERT_FALSE(published.has_value());
    EXPECT_EQ(published.error().code, core::ErrorCode::kUnavailable);
    EXPECT_FALSE(q->Stats("jobs").has_value());
    q->Stop();
}

}  // namespace
}  // namespace conduit::bus
