// The Redis cache statistics adapter with three simulated instances on one Redis and one key
// prefix: pushes, aggregation, idempotent repeated pushes, drift detection after the engine
// lost data, pruning of a stale instance, the prefix isolating deployments. Skipped without
// CONDUIT_TEST_REDIS (scripts/engines.sh start redis).
#include "bus/redis/redis_cache_stats.hpp"
#include "core/crypto.hpp"
#include "core/ids.hpp"
#include "redis/client.hpp"
#include "redis/url.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <unistd.h>

namespace conduit::bus {
namespace {

using namespace std::chrono_literals;

std::optional<std::string> RedisUrl() {
    const char* url = std::getenv("CONDUIT_TEST_REDIS");
    if (url == nullptr || *url == '\0') {
        return std::nullopt;
    }
    return std::string(url);
}

constexpr const char* kSkip =
    "CONDUIT_TEST_REDIS not set; run `eval \"$(scripts/engines.sh start redis)\"` to test the "
    "Redis cache statistics adapter";

std::string UniquePrefix() {
    return "cs" + std::to_string(::getpid()) + "x" + core::HexEncode(core::RandomBytes(4)) + ":";
}

std::unique_ptr<CacheStatsSink> MakeSink(const std::string& url,
                                         const std::string& prefix,
                                         CacheStatsOptions stats = {}) {
    RedisCacheStatsOptions o;
    o.url = url;
    o.key_prefix = prefix;
    o.stats = stats;
    auto s = MakeRedisCacheStats(std::move(o));
    EXPECT_TRUE(s.has_value()) << s.error().message;
    return s ? std::move(*s) : nullptr;
}

obs::InstanceSnapshot Snapshot(std::string id, uint64_t hits, uint64_t misses, uint64_t ns) {
    obs::InstanceSnapshot s;
    s.instance_id = std::move(id);
    for (size_t i = 0; i < obs::kCacheRegionCount; ++i) {
        obs::RegionSnapshot r;
        r.region = static_cast<obs::CacheRegion>(i);
        r.counts.hits = hits * (i + 1);
        r.counts.misses = misses;
        r.counts.sets = misses;
        for (uint64_t k = 0; k < hits + misses; ++k) {
            r.latency.Record(ns);
        }
        s.regions.push_back(std::move(r));
    }
    return s;
}

core::Result<void> Push(CacheStatsSink& sink, const obs::InstanceSnapshot& s) {
    std::promise<core::Result<void>> p;
    sink.Push(s, [&p](core::Result<void> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
}

obs::ClusterCacheStats Collect(CacheStatsSink& sink, bool with_instances = false) {
    std::promise<core::Result<obs::ClusterCacheStats>> p;
    sink.Collect(with_instances,
                 [&p](core::Result<obs::ClusterCacheStats> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message);
    return r ? std::move(*r) : obs::ClusterCacheStats{};
}

/// A raw connection for looking at and tampering with the keys.
class Raw {
public:
    explicit Raw(const std::string& url) {
        redis::ClientOptions o;
        o.endpoint = *redis::ParseUrl(url);
        client_ = std::make_unique<redis::Client>(std::move(o));
    }
    redis::Reply Run(std::initializer_list<std::string_view> args) {
        std::promise<core::Result<redis::Reply>> p;
        client_->Command(args, [&p](core::Result<redis::Reply> r) { p.set_value(std::move(r)); });
        auto r = p.get_future().get();
        EXPECT_TRUE(r.has_value());
        return r ? std::move(*r) : redis::Reply{};
    }
    void DeleteAll(const std::string& prefix) {
        auto keys = Run({"KEYS", prefix + "*"});
        for (const auto& k : keys.elements) {
            Run({"DEL", k.str});
        }
    }

private:
    std::unique_ptr<redis::Client> client_;
};

TEST(RedisCacheStatsTest, ThreeInstancesAggregateAndDriftIsDetected) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    const std::string prefix = UniquePrefix();
    Raw raw(*url);
    auto a = MakeSink(*url, prefix);
    auto b = MakeSink(*url, prefix);
    auto c = MakeSink(*url, prefix);
    ASSERT_TRUE(a && b && c);
    EXPECT_EQ(a->Engine(), "redis");

    ASSERT_TRUE(Push(*a, Snapshot("ia", 90, 10, 1'000)));
    ASSERT_TRUE(Push(*b, Snapshot("ib", 80, 20, 2'000)));
    ASSERT_TRUE(Push(*c, Snapshot("ic", 10, 0, 400'000)));
    // Repeating a push (e.g. after a timeout) and pushing newer cumulative figures.
    ASSERT_TRUE(Push(*b, Snapshot("ib", 80, 20, 2'000)));
    ASSERT_TRUE(Push(*a, Snapshot("ia", 95, 10, 1'000)));

    // A push whose confirmation was lost looks, to the next one, like an unknown stored
    // sequence: another adapter (same instance id, no memory of it) pushes the same figures,
    // then the first adapter pushes newer ones against a sequence that is no longer stored.
    // Both take the slow path (difference to the stored record): nothing is counted twice.
    {
        auto again = MakeSink(*url, prefix);
        ASSERT_TRUE(Push(*again, Snapshot("ia", 95, 10, 1'000)));
    }
    ASSERT_TRUE(Push(*a, Snapshot("ia", 95, 10, 1'000)));

    auto s = Collect(*c, true);
    EXPECT_EQ(s.mode, "redis");
    EXPECT_EQ(s.active_instances, 3u);
    EXPECT_EQ(s.stale_instances, 0u);
    ASSERT_EQ(s.regions.size(), obs::kCacheRegionCount);
    const auto& vk = s.regions[0];
    EXPECT_EQ(vk.counts.hits, 185u);
    EXPECT_EQ(vk.counts.misses, 30u);
    EXPECT_EQ(vk.counts.sets, 30u);
    EXPECT_EQ(vk.global, vk.counts);  // Σ instances = global
    EXPECT_EQ(vk.drift_percent, 0);
    EXPECT_FALSE(vk.drifting);
    EXPECT_EQ(s.regions[2].counts.hits, 555u);  // region 3 counts hits × 3
    EXPECT_EQ(s.regions[2].global.hits, 555u);
    // Merged histograms: 105 + 100 + 10 observations; the slowest instance sets the max.
    EXPECT_EQ(vk.latency.Count(), 215u);
    EXPECT_EQ(vk.latency.MaxNs(), 400'000u);
    EXPECT_NEAR(vk.latency.QuantileNs(0.5), 2'000, 250);
    EXPECT_NEAR(vk.latency.QuantileNs(0.99), 400'000, 50'000);
    EXPECT_EQ(vk.outliers, std::vector<std::string>{"ic"});
    ASSERT_EQ(s.instances.size(), 3u);
    EXPECT_GT(s.instances[0].heartbeat_ms, 0);
    EXPECT_GE(s.aggregation_ms, 0);
    // Without the per-instance views: the counts-only records and the histograms the pushes
    // merged in the global hash give the same figures.
    auto lean = Collect(*b);
    EXPECT_TRUE(lean.instances.empty());
    EXPECT_EQ(lean.active_instances, 3u);
    for (size_t i = 0; i < obs::kCacheRegionCount; ++i) {
        EXPECT_EQ(lean.regions[i].counts, s.regions[i].counts) << i;
        EXPECT_EQ(lean.regions[i].latency, s.regions[i].latency) << i;
        EXPECT_EQ(lean.regions[i].outliers, s.regions[i].outliers) << i;
    }

    // The engine loses data: the global misses of one region are bumped behind the adapters'
    // back (as a partial write would), and another instance's record vanishes (evicted).
    raw.Run({"HINCRBY", prefix + "cache:stats:global", "webhook_secrets:misses", "3"});  // 10 %
    s = Collect(*a);
    EXPECT_FALSE(s.regions[0].drifting);
    EXPECT_TRUE(s.regions[1].drifting);
    EXPECT_NEAR(s.regions[1].drift_percent, 10.0, 1e-9);
    ASSERT_EQ(s.Drifting().size(), 1u);
    EXPECT_EQ(s.Drifting()[0], obs::CacheRegion::kWebhookSecrets);

    raw.Run({"HDEL", prefix + "cache:stats:records", "ic"});
    raw.Run({"HDEL", prefix + "cache:stats:histograms", "ic"});
    s = Collect(*a);
    EXPECT_EQ(s.active_instances, 2u);
    EXPECT_TRUE(s.regions[0].drifting);  // Σ hits 175 vs global 185
    EXPECT_NEAR(s.regions[0].drift_percent, 10.0 / 175.0 * 100.0, 1e-9);

    // The instance pushes again: its record is back and the global catches up by its whole
    // figures; the evicted instance's contribution, still in the global hash, now counts twice
    // — which is exactly what drift detection has to keep reporting.
    ASSERT_TRUE(Push(*c, Snapshot("ic", 10, 0, 400'000)));
    s = Collect(*a);
    EXPECT_EQ(s.active_instances, 3u);
    EXPECT_EQ(s.regions[0].global.hits, 195u);  // Σ 185: 5.4 %
    EXPECT_TRUE(s.regions[0].drifting);

    // Another deployment (prefix) sees none of it.
    auto other = MakeSink(*url, UniquePrefix());
    EXPECT_EQ(Collect(*other).active_instances, 0u);
    raw.DeleteAll(prefix);
}

TEST(RedisCacheStatsTest, StaleInstanceIsPrunedWithItsFigures) {
    auto url = RedisUrl();
    if (!url) {
        GTEST_SKIP() << kSkip;
    }
    const std::string prefix = UniquePrefix();
    Raw raw(*url);
    CacheStatsOptions o;
    o.stale_after = 1500ms;
    auto a = MakeSink(*url, prefix, o);
    auto b = MakeSink(*url, prefix, o);
    auto c = MakeSink(*url, prefix, o);
    ASSERT_TRUE(Push(*a, Snapshot("ia", 10, 1, 500)));
    ASSERT_TRUE(Push(*b, Snapshot("ib", 20, 2, 500)));
    ASSERT_TRUE(Push(*c, Snapshot("ic", 30, 3, 500)));
    EXPECT_EQ(Collect(*a).active_instances, 3u);

    // a and b keep pushing (every 200 ms); c stopped. Wait (bounded) until c is pruned.
    obs::ClusterCacheStats s;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
        ASSERT_TRUE(Push(*a, Snapshot("ia", 10, 1, 500)));
        ASSERT_TRUE(Push(*b, Snapshot("ib", 20, 2, 500)));
        s = Collect(*a, true);
        if (s.instances.size() == 2) {
            break;
        }
        std::this_thread::sleep_for(200ms);
    }
    ASSERT_EQ(s.active_instances, 2u);
    ASSERT_EQ(s.instances.size(), 2u);
    for (const auto& inst : s.instances) {
        EXPECT_NE(inst.instance_id, "ic");
    }
    EXPECT_EQ(s.active_instances, 2u);
    EXPECT_EQ(s.stale_instances, 0u);
    EXPECT_EQ(raw.Run({"HEXISTS", prefix + "cache:stats:records", "ic"}).integer, 0);
    EXPECT_EQ(raw.Run({"HEXISTS", prefix + "cache:stats:histograms", "ic"}).integer, 0);
    // The merged histograms lost c's observations with it (11 + 22 left of 500 ns).
    auto lean = Collect(*a);
    EXPECT_EQ(lean.regions[0].latency.Count(), 33u);
    EXPECT_EQ(raw.Run({"ZSCORE", prefix + "cache:stats:instances", "ic"}).type,
              redis::Reply::Type::kNil);
    // Its figures left the global aggregate with it: no drift.
    EXPECT_EQ(s.regions[0].counts.hits, 30u);
    EXPECT_EQ(s.regions[0].global.hits, 30u);
    EXPECT_FALSE(s.regions[0].drifting);
    // The keys' expiry bounds what a deployment without any live instance leaves behind.
    for (const char* key : {"instances", "records", "histograms", "global"}) {
        auto ttl = raw.Run({"PTTL", prefix + "cache:stats:" + key});
        EXPECT_GT(ttl.integer, 0) << key;
        EXPECT_LE(ttl.integer, 4500) << key;
    }
    raw.DeleteAll(prefix);
}

TEST(RedisCacheStatsTest, UnreachableRedisFailsTheCall) {
    RedisCacheStatsOptions o;
    o.url = "redis://127.0.0.1:1/0";
    o.key_prefix = UniquePrefix();
    o.command_timeout = 300ms;
    o.connect_timeout = 200ms;
    auto sink = MakeRedisCacheStats(std::move(o));
    ASSERT_TRUE(sink);
    EXPECT_FALSE(Push(**sink, Snapshot("x", 1, 1, 1)));
    std::promise<core::Result<obs::ClusterCacheStats>> p;
    (*sink)->Collect(false,
                     [&p](core::Result<obs::ClusterCacheStats> r) { p.set_value(std::move(r)); });
    EXPECT_FALSE(p.get_future().get());
    EXPECT_FALSE(MakeRedisCacheStats(RedisCacheStatsOptions{.url = "http://nope"}));
}

}  // namespace
}  // namespace conduit::bus
