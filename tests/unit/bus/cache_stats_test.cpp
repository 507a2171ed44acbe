// The in-process cache statistics sink (registry, global aggregate moved by differences,
// pruning of stale instances) and the reporter (timers, /metrics families) under a fake loop and
// clock. The Redis adapter runs the same scenarios in tests/integration/bus/cache_stats_test.cpp.
#include "bus/cache_stats_sink.hpp"
#include "fakes/fake_loop.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <optional>

namespace conduit::bus {
namespace {

using namespace std::chrono_literals;

class ManualClock final : public core::Clock {
public:
    int64_t NowUnixMs() const override { return now_ms_.load(); }
    int64_t SteadyNs() const override { return now_ms_.load() * 1'000'000; }
    void AdvanceMs(int64_t ms) { now_ms_ += ms; }

private:
    std::atomic<int64_t> now_ms_{1'700'000'000'000};
};

obs::InstanceSnapshot Instance(std::string id, uint64_t hits, uint64_t misses) {
    obs::InstanceSnapshot s;
    s.instance_id = std::move(id);
    obs::RegionSnapshot r;
    r.region = obs::CacheRegion::kVirtualKeys;
    r.counts.hits = hits;
    r.counts.misses = misses;
    r.latency.Record(1000 * (hits + 1));
    s.regions.push_back(r);
    return s;
}

obs::ClusterCacheStats CollectNow(CacheStatsSink& sink, bool with_instances = false) {
    std::optional<core::Result<obs::ClusterCacheStats>> out;
    sink.Collect(with_instances, [&](core::Result<obs::ClusterCacheStats> r) { out = r; });
    EXPECT_TRUE(out && *out);  // in-process: answered inside the call
    return out && *out ? **out : obs::ClusterCacheStats{};
}

void PushNow(CacheStatsSink& sink, const obs::InstanceSnapshot& s) {
    bool ok = false;
    sink.Push(s, [&](core::Result<void> r) { ok = r.has_value(); });
    EXPECT_TRUE(ok);
}

TEST(InProcessCacheStatsTest, AggregatesInstancesAndRepeatedPushesChangeNothing) {
    ManualClock clock;
    auto sink = MakeInProcessCacheStats({}, clock);
    PushNow(*sink, Instance("a", 10, 5));
    PushNow(*sink, Instance("b", 20, 0));
    PushNow(*sink, Instance("b", 20, 0));  // the same cumulative figures again
    PushNow(*sink, Instance("a", 12, 5));  // two more hits since
    auto s = CollectNow(*sink, true);
    EXPECT_EQ(s.mode, "embedded");
    EXPECT_EQ(s.active_instances, 2u);
    ASSERT_EQ(s.instances.size(), 2u);
    const auto& vk = s.regions[0];
    EXPECT_EQ(vk.counts.hits, 32u);
    EXPECT_EQ(vk.counts.misses, 5u);
    EXPECT_EQ(vk.global, vk.counts);
    EXPECT_EQ(vk.drift_percent, 0);
    EXPECT_FALSE(vk.drifting);
    EXPECT_EQ(vk.latency.Count(), 2u);
    EXPECT_EQ(s.instances[0].heartbeat_ms, clock.NowUnixMs());
}

TEST(InProcessCacheStatsTest, StaleInstancesArePrunedWithTheirFigures) {
    ManualClock clock;
    CacheStatsOptions o;
    o.stale_after = 2000ms;
    auto sink = MakeInProcessCacheStats(o, clock);
    PushNow(*sink, Instance("a", 10, 0));
    PushNow(*sink, Instance("b", 5, 0));
    clock.AdvanceMs(1500);
    PushNow(*sink, Instance("a", 11, 0));  // a heartbeats, b does not
    clock.AdvanceMs(1000);                 // b is 2.5 s old
    // Stale but not pruned yet: counted, like its share of the global aggregate.
    auto s = CollectNow(*sink, true);
    EXPECT_EQ(s.active_instances, 1u);
    EXPECT_EQ(s.stale_instances, 1u);
    EXPECT_EQ(s.instances.size(), 2u);
    EXPECT_EQ(s.regions[0].counts.hits, 16u);
    EXPECT_EQ(s.regions[0].global.hits, 16u);
    // The next push prunes it, with its figures.
    PushNow(*sink, Instance("a", 11, 0));
    s = CollectNow(*sink, true);
    EXPECT_EQ(s.active_instances, 1u);
    EXPECT_EQ(s.stale_instances, 0u);
    ASSERT_EQ(s.instances.size(), 1u);
    EXPECT_EQ(s.instances[0].instance_id, "a");
    EXPECT_EQ(s.regions[0].counts.hits, 11u);
    EXPECT_EQ(s.regions[0].global.hits, 11u);
    EXPECT_FALSE(s.regions[0].drifting);
    // Everybody gone: a newcomer's push prunes them all and the aggregate starts afresh.
    clock.AdvanceMs(5000);
    PushNow(*sink, Instance("c", 3, 0));
    s = CollectNow(*sink);
    EXPECT_EQ(s.active_instances, 1u);
    EXPECT_EQ(s.regions[0].global.hits, 3u);
}

TEST(CacheStatsReporterTest, PushesEveryIntervalAndExposesMetrics) {
    ManualClock clock;
    testing::FakeLoop loop;
    obs::Registry registry;
    obs::CacheStats stats;
    auto sink = MakeInProcessCacheStats({}, clock);
    CacheStatsReporter::Options ro;
    ro.instance_id = "me";
    ro.interval = 1000ms;
    ro.collect_interval = 5000ms;
    CacheStatsReporter reporter(*sink, stats, registry, loop, ro);

    auto& vk = stats.Region(obs::CacheRegion::kVirtualKeys);
    vk.Hit(2000);
    vk.Miss(50'000);
    reporter.Start();
    ASSERT_TRUE(reporter.Last());
    EXPECT_EQ(reporter.Last()->regions[0].counts.hits, 1u);

    vk.Hit(3000);
    stats.Region(obs::CacheRegion::kWebhookSecrets).Evict(2);
    stats.Region(obs::CacheRegion::kWebhookSecrets).Error();
    loop.AdvanceBy(1000ms);  // a push, no collection yet
    EXPECT_EQ(reporter.Last()->regions[0].counts.hits, 1u);
    auto collected = CollectNow(*sink);
    EXPECT_EQ(collected.regions[0].counts.hits, 2u);
    loop.AdvanceBy(4000ms);  // the collection timer
    EXPECT_EQ(reporter.Last()->regions[0].counts.hits, 2u);
    EXPECT_EQ(reporter.Last()->active_instances, 1u);

    const std::string text = registry.Render();
    EXPECT_NE(text.find("conduit_cache_requests_total{region=\"virtual_keys\",result=\"hit\"} 2\n"),
              std::string::npos)
        << text;
    EXPECT_NE(
        text.find("conduit_cache_requests_total{region=\"virtual_keys\",result=\"miss\"} 1\n"),
        std::string::npos);
    EXPECT_NE(text.find("conduit_cache_evictions_total{region=\"webhook_secrets\"} 2\n"),
              std::string::npos);
    EXPECT_NE(text.find("conduit_cache_errors_total{region=\"webhook_secrets\"} 1\n"),
              std::string::npos);
    EXPECT_NE(text.find("conduit_cache_latency_seconds{region=\"virtual_keys\",quantile=\"1\"} "
                        "5e-05\n"),
              std::string::npos);
    EXPECT_NE(text.find("conduit_cache_instances_active 1\n"), std::string::npos);
    EXPECT_NE(text.find("conduit_cache_drift_percent{region=\"virtual_keys\"} 0\n"),
              std::string::npos);
    EXPECT_NE(
        text.find("conduit_cache_cluster_requests{region=\"virtual_keys\",result=\"hit\"} 2\n"),
        std::string::npos);

    reporter.Stop();
    vk.Hit(1);
    loop.AdvanceBy(10'000ms);  // stopped: no more pushes
    EXPECT_EQ(CollectNow(*sink).regions[0].counts.hits, 2u);
}

}  // namespace
}  // namespace conduit::bus
