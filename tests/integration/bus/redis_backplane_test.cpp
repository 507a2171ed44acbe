// The Backplane contract suite (tests/contract/backplane_contract.hpp) on the in-process
// adapter (always) and on Redis when CONDUIT_TEST_REDIS is set (scripts/engines.sh start redis),
// plus Redis-specific tests: two instances, channel prefixes, reference counting of Redis
// subscriptions, Redis restart (opt-in: CONDUIT_TEST_REDIS_RESTART), Redis unreachable.
#include "bus/redis/redis_backplane.hpp"

#include "contract/backplane_contract.hpp"
#include "core/crypto.hpp"
#include "fakes/test_support.hpp"
#include "net/runtime.hpp"
#include "redis/client.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace conduit::bus {
namespace {

using namespace std::chrono_literals;
using contract::Recorder;

/// CONDUIT_TEST_REDIS (redis://host:port/db), or nullopt.
std::optional<std::string> RedisUrl() {
    const char* url = std::getenv("CONDUIT_TEST_REDIS");
    if (url == nullptr || *url == '\0') {
        return std::nullopt;
    }
    return std::string(url);
}

constexpr const char* kSkip =
    "CONDUIT_TEST_REDIS not set; run `eval \"$(scripts/engines.sh start redis)\"` to test the "
    "Redis Backplane adapter";

/// A channel prefix no other test (or run) uses: tests share one Redis.
std::string UniquePrefix() {
    static std::atomic<int> counter{0};
    return "ct" + std::to_string(::getpid()) + "x" + std::to_string(counter.fetch_add(1)) + "x" +
           core::HexEncode(core::RandomBytes(3)) + ":";
}

std::unique_ptr<RedisBackplane> MakeRedis(const std::string& url,
                                          const std::string& prefix,
                                          core::Loop* loop = nullptr) {
    RedisBackplaneOptions o;
    o.url = url;
    o.channel_prefix = prefix;
    o.loop = loop;
    auto bp = MakeRedisBackplane(std::move(o));
    EXPECT_TRUE(bp.has_value()) << bp.error().message;
    return bp ? std::move(*bp) : nullptr;
}

struct InProcessTraits {
    std::unique_ptr<Backplane> bp = MakeInProcessBackplane();
    std::string SkipReason() const { return ""; }
    Backplane* Subscriber() { return bp.get(); }
    Backplane* Publisher() { return bp.get(); }
    void Sync() {}
};

/// One Redis instance publishing to itself (local delivery + echo suppression).
struct RedisTraits {
    std::optional<std::string> url = RedisUrl();
    std::string prefix = UniquePrefix();
    std::unique_ptr<RedisBackplane> bp = url ? MakeRedis(*url, prefix) : nullptr;
    std::string SkipReason() const { return kSkip; }
    Backplane* Subscriber() { return bp.get(); }
    Backplane* Publisher() { return bp.get(); }
    void Sync() { ASSERT_TRUE(bp->WaitSynced(30s)); }
};

/// Two instances (two gateways) on one Redis: messages cross Redis. The subscriber's handlers
/// run on a core::Loop.
struct RedisPeerTraits {
    std::optional<std::string> url = RedisUrl();
    std::string prefix = UniquePrefix();
    std::unique_ptr<net::Runtime> runtime = [] {
        auto rt = std::make_unique<net::Runtime>(1);
        rt->Start();
        return rt;
    }();
    std::unique_ptr<RedisBackplane> sub =
        url ? MakeRedis(*url, prefix, &runtime->loop(0)) : nullptr;
    std::unique_ptr<RedisBackplane> pub = url ? MakeRedis(*url, prefix) : nullptr;
    ~RedisPeerTraits() {
        sub.reset();
        pub.reset();
        runtime->Stop();
    }
    std::string SkipReason() const { return kSkip; }
    Backplane* Subscriber() { return sub.get(); }
    Backplane* Publisher() { return pub.get(); }
    void Sync() {
        ASSERT_TRUE(sub->WaitSynced(30s));
        ASSERT_TRUE(pub->WaitSynced(30s));
    }
};

}  // namespace

namespace contract {
INSTANTIATE_TYPED_TEST_SUITE_P(InProcess, BackplaneContract, InProcessTraits);
INSTANTIATE_TYPED_TEST_SUITE_P(Redis, BackplaneContract, RedisTraits);
INSTANTIATE_TYPED_TEST_SUITE_P(RedisPeer, BackplaneContract, RedisPeerTraits);
}  // namespace contract

namespace {

TEST(RedisBackplaneTest, PrefixGlobEscapesGlobCharacters) {
    EXPECT_EQ(PrefixGlob("conduit:tasks."), "conduit:tasks.*");
    EXPECT_EQ(PrefixGlob(""), "*");
    EXPECT_EQ(PrefixGlob("a*b?c[d]e\\"), "a\\*b\\?c\\[d\\]e\\\\*");
}

TEST(RedisBackplaneTest, BadUrlIsRejected) {
    RedisBackplaneOptions o;
    o.url = "http://127.0.0.1:6379/";
    EXPECT_FALSE(MakeRedisBackplane(o).has_value());
}

/// Sends one command on a fresh client and waits for the reply.
core::Result<redis::Reply> RunCommand(const std::string& url,
                                      std::initializer_list<std::string_view> args) {
    redis::ClientOptions o;
    o.endpoint = *redis::ParseUrl(url);
    redis::Client client(o);
    std::promise<core::Result<redis::Reply>> done;
    auto f = done.get_future();
    client.Command(args, [&](core::Result<redis::Reply> r) { done.set_value(std::move(r)); });
    return f.get();
}

TEST(RedisBackplaneTest, TwoInstancesSeeEachOthersMessagesOnce) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    std::string prefix = UniquePrefix();
    auto a = MakeRedis(*url, prefix);
    auto b = MakeRedis(*url, prefix);
    Recorder ra, rb, fence;
    a->Subscribe("room.1", ra.Handler());
    b->Subscribe("room.*", rb.Handler());
    a->Subscribe("fence", fence.Handler());
    ASSERT_TRUE(a->WaitSynced(30s));
    ASSERT_TRUE(b->WaitSynced(30s));
    a->Publish("room.1", "from a");
    b->Publish("room.1", "from b");
    ASSERT_TRUE(ra.WaitCount(2));
    ASSERT_TRUE(rb.WaitCount(2));
    b->Publish("fence", "x");
    ASSERT_TRUE(fence.WaitCount(1));
    EXPECT_EQ(ra.Count(), 2u);
    EXPECT_EQ(rb.Count(), 2u);
    auto sa = a->Stats();
    EXPECT_TRUE(sa.publisher_connected);
    EXPECT_TRUE(sa.subscriber_connected);
    EXPECT_EQ(sa.published, 1u);
    EXPECT_EQ(sa.publish_failed, 0u);
}

TEST(RedisBackplaneTest, ChannelPrefixSeparatesDeployments) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    std::string p1 = UniquePrefix();
    auto a = MakeRedis(*url, p1);
    auto b = MakeRedis(*url, UniquePrefix());
    auto a2 = MakeRedis(*url, p1);
    Recorder rb, ra2;
    b->Subscribe("*", rb.Handler());
    a2->Subscribe("*", ra2.Handler());
    ASSERT_TRUE(b->WaitSynced(30s));
    ASSERT_TRUE(a2->WaitSynced(30s));
    a->Publish("events", "1");
    ASSERT_TRUE(ra2.WaitCount(1));
    EXPECT_EQ(ra2.Got()[0], (std::pair<std::string, std::string>("events", "1")));
    b->Publish("own", "fence");
    ASSERT_TRUE(rb.WaitCount(1));
    EXPECT_EQ(rb.Got()[0].first, "own");
    EXPECT_EQ(rb.Count(), 1u);
}

TEST(RedisBackplaneTest, RedisSubscriptionsAreReferenceCounted) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    std::string prefix = UniquePrefix();
    auto bp = MakeRedis(*url, prefix);
    auto numsub = [&] {
        auto r = RunCommand(*url, {"PUBSUB", "NUMSUB", prefix + "group.1"});
        EXPECT_TRUE(r.has_value());
        return r && r->elements.size() == 2 ? r->elements[1].integer : -1;
    };
    auto h1 = bp->Subscribe("group.1", [](std::string_view, std::string_view) {});
    auto h2 = bp->Subscribe("group.1", [](std::string_view, std::string_view) {});
    auto hp = bp->Subscribe("group.*", [](std::string_view, std::string_view) {});
    ASSERT_TRUE(bp->WaitSynced(30s));
    EXPECT_EQ(numsub(), 1);
    EXPECT_EQ(bp->Stats().redis_channels, 2u);
    bp->Unsubscribe(h1);
    ASSERT_TRUE(bp->WaitSynced(30s));
    EXPECT_EQ(numsub(), 1);  // h2 still listens
    bp->Unsubscribe(h2);
    bp->Unsubscribe(hp);
    ASSERT_TRUE(bp->WaitSynced(30s));
    EXPECT_EQ(numsub(), 0);
    EXPECT_EQ(bp->Stats().redis_channels, 0u);
}

TEST(RedisBackplaneTest, UnreachableRedisPublishFailsFastAndCounts) {
    RedisBackplaneOptions o;
    o.url = "redis://127.0.0.1:1/";  // nothing listens there
    o.publish_timeout = 300ms;
    o.connect_timeout = 200ms;
    auto made = MakeRedisBackplane(o);
    ASSERT_TRUE(made.has_value());
    auto& bp = *made;
    Recorder local;
    auto t0 = std::chrono::steady_clock::now();
    bp->Subscribe("x", local.Handler());  // remembered
    for (int i = 0; i < 10; ++i) {
        bp->Publish("x", std::to_string(i));
    }
    auto elapsed = std::chrono::steady_clock::now() - t0;
    EXPECT_LT(elapsed, 200ms) << "Publish/Subscribe must not block on the network";
    // Local subscribers still get this instance's messages.
    ASSERT_TRUE(local.WaitCount(10));
    ASSERT_TRUE(conduit::testing::WaitFor([&] { return bp->Stats().publish_failed == 10; }, 10s))
        << bp->Stats().publish_failed;
    auto s = bp->Stats();
    EXPECT_FALSE(s.publisher_connected);
    EXPECT_FALSE(s.subscriber_connected);
    EXPECT_EQ(s.published, 10u);
    EXPECT_FALSE(bp->WaitSynced(300ms));
}

TEST(RedisClientTest, PipelinesInOrderAndSelectsTheDb) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    auto ep = redis::ParseUrl(*url);
    ASSERT_TRUE(ep.has_value());
    ep->db = 5;
    redis::ClientOptions o;
    o.endpoint = *ep;
    redis::Client client(o);
    std::string key = UniquePrefix() + "counter";
    constexpr int kCount = 1000;
    std::mutex mu;
    std::vector<int64_t> got;
    for (int i = 0; i < kCount; ++i) {
        client.Command({"INCR", key}, [&](core::Result<redis::Reply> r) {
            std::lock_guard lock(mu);
            got.push_back(r ? r->integer : -1);
        });
    }
    ASSERT_TRUE(conduit::testing::WaitFor(
        [&] {
            std::lock_guard lock(mu);
            return got.size() == kCount;
        },
        30s));
    for (int i = 0; i < kCount; ++i) {
        ASSERT_EQ(got[i], i + 1);
    }
    // The key lives in db 5, not in db 0.
    auto in_db0 = RunCommand(*url, {"EXISTS", key});
    ASSERT_TRUE(in_db0.has_value());
    EXPECT_EQ(in_db0->integer, 0);
    std::promise<core::Result<redis::Reply>> del;
    client.Command({"DEL", key}, [&](core::Result<redis::Reply> r) { del.set_value(r); });
    auto deleted = del.get_future().get();
    ASSERT_TRUE(deleted.has_value());
    EXPECT_EQ(deleted->integer, 1);
    EXPECT_TRUE(client.Connected());
}

TEST(RedisClientTest, FailedAuthKeepsRetryingAndFailsCommands) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    auto ep = redis::ParseUrl(*url);
    ASSERT_TRUE(ep.has_value());
    ep->password = "wrong";  // the test Redis has no password: AUTH fails
    redis::ClientOptions o;
    o.endpoint = *ep;
    o.command_timeout = 500ms;
    redis::Client client(o);
    std::promise<core::Result<redis::Reply>> done;
    client.Command({"PING"}, [&](core::Result<redis::Reply> r) { done.set_value(r); });
    auto r = done.get_future().get();
    // The PING was pipelined behind the failed AUTH: the connection is closed before its
    // reply is handed out, or its reply is an error (NOAUTH).
    EXPECT_TRUE(!r.has_value() || r->IsError()) << r->Describe();
    EXPECT_TRUE(conduit::testing::WaitFor([&] { return client.Stats().connects >= 2; }, 10s));
}

/// A private redis-server on a free port (for tests that start Redis late), or skip.
class PrivateRedis {
public:
    PrivateRedis() {
        port_ = 20000 + static_cast<int>(::getpid() % 20000);
        dir_ = std::make_unique<conduit::testing::TempDir>();
    }
    ~PrivateRedis() { Stop(); }
    std::string Url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/"; }
    bool Start() {
        std::string cmd = "redis-server --port " + std::to_string(port_) +
                          " --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --dir " +
                          dir_->path().string() + " --pidfile " + dir_->path().string() +
                          "/redis.pid --logfile " + dir_->path().string() + "/redis.log";
        started_ = std::system(cmd.c_str()) == 0;
        return started_;
    }
    void Stop() {
        if (started_) {
            std::string cmd =
                "redis-cli -p " + std::to_string(port_) + " shutdown nosave >/dev/null 2>&1";
            (void)std::system(cmd.c_str());
            started_ = false;
        }
    }

private:
    int port_;
    std::unique_ptr<conduit::testing::TempDir> dir_;
    bool started_ = false;
};

TEST(RedisBackplaneTest, SubscriptionMadeWhileRedisIsDownIsAppliedOnConnect) {
    if (!RedisUrl()) {
        GTEST_SKIP() << kSkip;  // redis-server is installed with the engine
    }
    if (std::system("command -v redis-server >/dev/null 2>&1") != 0) {
        GTEST_SKIP() << "redis-server not installed";
    }
    PrivateRedis redis;
    RedisBackplaneOptions o;
    o.url = redis.Url();
    o.reconnect_max = 200ms;
    auto a = MakeRedisBackplane(o);
    auto b = MakeRedisBackplane(o);
    ASSERT_TRUE(a && b);
    Recorder r;
    (*a)->Subscribe("late.*", r.Handler());
    ASSERT_TRUE(redis.Start());
    ASSERT_TRUE((*a)->WaitSynced(30s));
    ASSERT_TRUE((*b)->WaitSynced(30s));
    (*b)->Publish("late.1", "hello");
    ASSERT_TRUE(r.WaitCount(1));
    EXPECT_EQ(r.Got()[0], (std::pair<std::string, std::string>("late.1", "hello")));
}

// A real Redis restart. Opt-in (it disturbs everyone using that Redis): set
// CONDUIT_TEST_REDIS_RESTART to a command that restarts it, e.g.
//   CONDUIT_TEST_REDIS_RESTART='scripts/engines.sh stop redis && scripts/engines.sh start redis'
TEST(RedisBackplaneTest, RedisRestartRestoresSubscriptionsAndPublishing) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    const char* restart = std::getenv("CONDUIT_TEST_REDIS_RESTART");
    if (restart == nullptr || *restart == '\0') {
        GTEST_SKIP() << "set CONDUIT_TEST_REDIS_RESTART to a Redis restart command to run this";
    }
    std::string prefix = UniquePrefix();
    auto a = MakeRedis(*url, prefix);
    auto b = MakeRedis(*url, prefix);
    Recorder exact, pattern;
    a->Subscribe("r.x", exact.Handler());
    a->Subscribe("r.*", pattern.Handler());
    ASSERT_TRUE(a->WaitSynced(30s));
    ASSERT_TRUE(b->WaitSynced(30s));
    b->Publish("r.x", "before");
    ASSERT_TRUE(exact.WaitCount(1));
    ASSERT_TRUE(pattern.WaitCount(1));

    ASSERT_EQ(std::system(restart), 0) << restart;

    // Publish until the restored subscriptions deliver (messages sent while either connection
    // is still reconnecting are lost: at-most-once).
    bool delivered = conduit::testing::WaitFor(
        [&] {
            b->Publish("r.x", "after");
            std::this_thread::sleep_for(100ms);
            return exact.Count() >= 2 && pattern.Count() >= 2;
        },
        60s);
    ASSERT_TRUE(delivered) << exact.Count() << " " << pattern.Count();
    EXPECT_EQ(exact.Payloads().back(), "after");
    EXPECT_GE(a->Stats().reconnects, 1u);
    ASSERT_TRUE(b->WaitSynced(30s));
}

}  // namespace
}  // namespace conduit::bus
