// Cache statistics: recording, the log-bucket histogram (bounds, merge, percentiles, wire form),
// drift math, aggregation across instances and the admin JSON.
#include "obs/cache_stats.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <random>
#include <thread>
#include <vector>

namespace conduit::obs {
namespace {

TEST(CacheRegionTest, NamesRoundTrip) {
    for (size_t i = 0; i < kCacheRegionCount; ++i) {
        auto r = static_cast<CacheRegion>(i);
        auto parsed = ParseCacheRegion(CacheRegionName(r));
        ASSERT_TRUE(parsed) << CacheRegionName(r);
        EXPECT_EQ(*parsed, r);
    }
    EXPECT_EQ(CacheRegionName(CacheRegion::kVirtualKeys), "virtual_keys");
    EXPECT_FALSE(ParseCacheRegion("VirtualKeys"));
    EXPECT_FALSE(ParseCacheRegion(""));
}

TEST(LatencyBucketTest, BucketsAreContiguousAndContainTheirValues) {
    EXPECT_EQ(LatencyBucket(0), 0u);
    EXPECT_EQ(LatencyBucket(3), 3u);
    EXPECT_EQ(LatencyBucket(4), 4u);
    for (size_t i = 0; i + 1 < kLatencyBuckets; ++i) {
        EXPECT_EQ(LatencyBucketUpper(i), LatencyBucketLower(i + 1)) << i;
        EXPECT_EQ(LatencyBucket(LatencyBucketLower(i)), i) << i;
        EXPECT_EQ(LatencyBucket(LatencyBucketUpper(i) - 1), i) << i;
        // At most 25 % wide above the linear part.
        if (i >= 4) {
            EXPECT_LE(LatencyBucketUpper(i) - LatencyBucketLower(i), LatencyBucketLower(i) / 4)
                << i;
        }
    }
    EXPECT_EQ(LatencyBucket(~uint64_t{0}), kLatencyBuckets - 1);
    EXPECT_EQ(LatencyBucketLower(kLatencyBuckets - 1), uint64_t{7} << 37);
}

TEST(LatencyHistogramTest, PercentilesWithinABucketOfTheTruth) {
    LatencyHistogram h;
    std::vector<uint64_t> values;
    std::mt19937_64 rng(7);
    std::lognormal_distribution<double> dist(10.0, 1.5);  // ~22 µs median, long tail
    for (int i = 0; i < 20000; ++i) {
        auto v = static_cast<uint64_t>(dist(rng));
        values.push_back(v);
        h.Record(v);
    }
    std::sort(values.begin(), values.end());
    EXPECT_EQ(h.Count(), values.size());
    EXPECT_EQ(h.MaxNs(), values.back());
    for (double q : {0.5, 0.95, 0.99}) {
        const double truth = static_cast<double>(values[static_cast<size_t>(q * 20000) - 1]);
        EXPECT_NEAR(h.QuantileNs(q), truth, truth * 0.25) << q;
    }
    EXPECT_DOUBLE_EQ(h.QuantileNs(1.0), static_cast<double>(values.back()));
    EXPECT_LE(h.QuantileNs(0.99), static_cast<double>(h.MaxNs()));
}

TEST(LatencyHistogramTest, EmptyAndSingle) {
    LatencyHistogram h;
    EXPECT_EQ(h.QuantileNs(0.5), 0);
    EXPECT_EQ(h.MeanNs(), 0);
    h.Record(1000);
    EXPECT_DOUBLE_EQ(h.QuantileNs(0.5), 1000);  // capped by the max
    EXPECT_DOUBLE_EQ(h.MeanNs(), 1000);
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverythingInOne) {
    LatencyHistogram a, b, all;
    for (uint64_t v = 1; v < 5000; v += 7) {
        a.Record(v);
        all.Record(v);
    }
    for (uint64_t v = 100000; v < 900000; v += 997) {
        b.Record(v);
        all.Record(v);
    }
    LatencyHistogram merged = a;
    merged.Merge(b);
    EXPECT_EQ(merged, all);
    EXPECT_EQ(merged.Count(), a.Count() + b.Count());
    EXPECT_EQ(merged.MaxNs(), b.MaxNs());
    // Half the observations are below 5 µs, the other half above 100 µs.
    EXPECT_LT(a.QuantileNs(0.99), 6000);
    EXPECT_GT(merged.QuantileNs(0.95), 100000);
}

TEST(LatencyHistogramTest, EncodeDecodeRoundTrip) {
    LatencyHistogram h;
    EXPECT_EQ(h.Encode(), "0,0");
    for (uint64_t v :
         std::initializer_list<uint64_t>{0, 3, 50, 51, 700, 1'000'000, 9'000'000'000}) {
        h.Record(v);
    }
    const std::string text = h.Encode();
    EXPECT_EQ(text.find(' '), std::string::npos);
    auto back = LatencyHistogram::Decode(text);
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, h);
    auto empty = LatencyHistogram::Decode("0,0");
    ASSERT_TRUE(empty);
    EXPECT_EQ(empty->Count(), 0u);
}

TEST(LatencyHistogramTest, DecodeRejectsMalformedText) {
    for (const char* bad :
         {"", "1", "1,x", "1,2;", "1,2;3", "1,2;3:", "1,2;999:1", "1,2;-1:1", "1,2;3:4;x:1"}) {
        EXPECT_FALSE(LatencyHistogram::Decode(bad)) << bad;
    }
}

TEST(CacheRegionStatsTest, RecordsCountsAndLatency) {
    CacheRegionStats s(CacheRegion::kWebhookSecrets);
    s.Hit(100);
    s.Hit(200);
    s.Miss(5000);
    s.Set();
    s.Remove();
    s.Evict(3);
    s.Error();
    auto snap = s.Snapshot();
    EXPECT_EQ(snap.region, CacheRegion::kWebhookSecrets);
    EXPECT_EQ(snap.counts, (CacheCounts{2, 1, 1, 1, 3, 1}));
    EXPECT_EQ(snap.latency.Count(), 3u);
    EXPECT_EQ(snap.latency.SumNs(), 5300u);
    EXPECT_EQ(snap.latency.MaxNs(), 5000u);
    EXPECT_NEAR(snap.counts.HitRate(), 2.0 / 3.0, 1e-12);
}

TEST(CacheRegionStatsTest, ConcurrentRecordingLosesNothing) {
    CacheStats stats;
    auto& r = stats.Region(CacheRegion::kVirtualKeys);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&r, t] {
            for (int i = 0; i < 50000; ++i) {
                if ((i + t) % 4 == 0) {
                    r.Miss(static_cast<uint64_t>(i));
                } else {
                    r.Hit(static_cast<uint64_t>(i));
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    auto snap = stats.Snapshot();
    ASSERT_EQ(snap.size(), kCacheRegionCount);
    EXPECT_EQ(snap[0].counts.Lookups(), 200000u);
    EXPECT_EQ(snap[0].counts.misses, 50000u);
    EXPECT_EQ(snap[0].latency.Count(), 200000u);
    EXPECT_EQ(snap[0].latency.MaxNs(), 49999u);
    EXPECT_EQ(snap[1].counts.Lookups(), 0u);
}

TEST(CacheDriftTest, DriftPercent) {
    EXPECT_DOUBLE_EQ(DriftPercent(0, 0), 0);
    EXPECT_DOUBLE_EQ(DriftPercent(0, 5), 100);
    EXPECT_DOUBLE_EQ(DriftPercent(100, 100), 0);
    EXPECT_DOUBLE_EQ(DriftPercent(100, 94), 6);
    EXPECT_DOUBLE_EQ(DriftPercent(100, 105), 5);
    EXPECT_DOUBLE_EQ(DriftPercent(200, 0), 100);
}

RegionSnapshot Region(CacheRegion r, uint64_t hits, uint64_t misses, uint64_t latency_ns = 0) {
    RegionSnapshot s;
    s.region = r;
    s.counts.hits = hits;
    s.counts.misses = misses;
    for (uint64_t i = 0; i < hits + misses && latency_ns > 0; ++i) {
        s.latency.Record(latency_ns);
    }
    return s;
}

TEST(CacheAggregateTest, SumsMergesAndFlagsDriftAndOutliers) {
    std::vector<InstanceSnapshot> instances = {
        {"a", 1, {Region(CacheRegion::kVirtualKeys, 90, 10, 1000)}},
        {"b", 1, {Region(CacheRegion::kVirtualKeys, 80, 20, 2000)}},
        {"c", 1, {Region(CacheRegion::kVirtualKeys, 10, 0, 100000)}},  // outlier: 10 lookups
    };
    std::array<CacheCounts, kCacheRegionCount> global{};
    global[0].hits = 180;   // Σ = 180: no drift on hits
    global[0].misses = 33;  // Σ = 30: 10 % drift on misses
    auto agg = AggregateRegions(instances, global, 5.0);
    ASSERT_EQ(agg.size(), kCacheRegionCount);
    EXPECT_EQ(agg[0].counts.hits, 180u);
    EXPECT_EQ(agg[0].counts.misses, 30u);
    EXPECT_NEAR(agg[0].drift_percent, 10.0, 1e-9);
    EXPECT_TRUE(agg[0].drifting);
    EXPECT_EQ(agg[0].latency.Count(), 210u);
    EXPECT_EQ(agg[0].latency.MaxNs(), 100000u);
    EXPECT_EQ(agg[0].outliers, std::vector<std::string>{"c"});
    // Regions nobody used: no drift, not drifting.
    EXPECT_EQ(agg[1].drift_percent, 0);
    EXPECT_FALSE(agg[1].drifting);
    // Within tolerance.
    global[0].misses = 31;  // 3.3 %
    agg = AggregateRegions(instances, global, 5.0);
    EXPECT_FALSE(agg[0].drifting);
    EXPECT_NEAR(agg[0].drift_percent, 100.0 / 30.0, 1e-9);
}

TEST(CacheWireTest, EncodeDecodeInstance) {
    std::vector<RegionSnapshot> regions = {Region(CacheRegion::kVirtualKeys, 5, 2, 300),
                                           Region(CacheRegion::kKeyBudgets, 1, 1, 7000)};
    regions[0].counts.sets = 2;
    regions[0].counts.evictions = 9;
    regions[1].counts.errors = 4;
    const std::string body = EncodeRegions(regions);
    EXPECT_EQ(body.substr(0, body.find('\n')), "virtual_keys 5 2 2 0 9 0 2100,300;28:7");
    const std::string counts_only = EncodeRegions(regions, false);
    EXPECT_EQ(counts_only.substr(0, counts_only.find('\n')), "virtual_keys 5 2 2 0 9 0 2100,300");
    auto lean = DecodeInstance("i1", counts_only);
    ASSERT_TRUE(lean);
    EXPECT_EQ(lean->regions[0].counts, regions[0].counts);
    EXPECT_EQ(lean->regions[0].latency.Count(), 0u);
    EXPECT_EQ(lean->regions[0].latency.MaxNs(), 300u);
    auto inst = DecodeInstance("i1", "hb 1234 9f0c\n" + body + "future_region 1 2 3 4 5 6 0,0\n");
    ASSERT_TRUE(inst);
    EXPECT_EQ(inst->instance_id, "i1");
    EXPECT_EQ(inst->heartbeat_ms, 1234);
    ASSERT_EQ(inst->regions.size(), 2u);
    EXPECT_EQ(inst->regions[0].counts, regions[0].counts);
    EXPECT_EQ(inst->regions[1].counts, regions[1].counts);
    EXPECT_EQ(inst->regions[1].latency, regions[1].latency);
    EXPECT_FALSE(DecodeInstance("x", "virtual_keys 1 2 3\n"));
    EXPECT_FALSE(DecodeInstance("x", "virtual_keys 1 2 3 4 5 x 0,0\n"));
    EXPECT_FALSE(DecodeInstance("x", "hb abc\n"));
}

TEST(CacheAggregatorTest, RecordsAggregateLikeDecodedSnapshots) {
    std::vector<InstanceSnapshot> instances = {
        {"a",
         0,
         {Region(CacheRegion::kVirtualKeys, 9, 1, 500),
          Region(CacheRegion::kKeyBudgets, 2, 2, 90)}},
        {"b", 0, {Region(CacheRegion::kVirtualKeys, 1, 1, 70'000)}},
    };
    instances[0].regions[0].counts.evictions = 4;
    std::array<CacheCounts, kCacheRegionCount> global{};
    global[0].hits = 10;
    global[0].misses = 2;
    global[2].hits = 2;
    global[2].misses = 2;
    const auto expected = AggregateRegions(instances, global, 5.0);

    CacheAggregator streaming;
    CacheAggregator keeping(true);
    int64_t hb = -1;
    for (const auto& inst : instances) {
        const std::string record = "hb 77 a1b2\n" + EncodeRegions(inst.regions);
        ASSERT_TRUE(streaming.AddRecord(inst.instance_id, record, &hb));
        EXPECT_EQ(hb, 77);
        ASSERT_TRUE(keeping.AddRecord(inst.instance_id, record));
    }
    // Malformed records add nothing (not even their valid first line).
    EXPECT_FALSE(streaming.AddRecord("c", "virtual_keys 100 0 0 0 0 0 0,0\nvirtual_keys 1 2\n"));
    EXPECT_FALSE(streaming.AddRecord("c", "virtual_keys 1 0 0 0 0 0 0,0;999:1\n"));
    EXPECT_EQ(streaming.size(), 2u);
    for (const auto* agg : {&streaming, &keeping}) {
        auto got = agg->Finish(global, 5.0);
        ASSERT_EQ(got.size(), expected.size());
        for (size_t i = 0; i < got.size(); ++i) {
            EXPECT_EQ(got[i].counts, expected[i].counts) << i;
            EXPECT_EQ(got[i].latency, expected[i].latency) << i;
            EXPECT_EQ(got[i].drift_percent, expected[i].drift_percent) << i;
            EXPECT_EQ(got[i].outliers, expected[i].outliers) << i;
        }
    }
    // Two instances 10 and 2 lookups apart from a mean of 6: both are more than 50 % away.
    EXPECT_EQ(expected[0].outliers, (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(expected[0].drift_percent, 0);
    auto kept = keeping.TakeInstances();
    ASSERT_EQ(kept.size(), 2u);
    EXPECT_EQ(kept[0].heartbeat_ms, 77);
    EXPECT_EQ(kept[1].regions[0].counts, instances[1].regions[0].counts);
    EXPECT_TRUE(streaming.TakeInstances().empty());
}

TEST(CacheJsonTest, ClusterViewAsJson) {
    ClusterCacheStats s;
    s.generated_ms = 42;
    s.mode = "redis";
    s.active_instances = 2;
    s.aggregation_ms = 1.5;
    std::vector<InstanceSnapshot> instances = {
        {"a\"b", 7, {Region(CacheRegion::kVirtualKeys, 3, 1, 2'000'000)}},
        {"c", 8, {Region(CacheRegion::kVirtualKeys, 3, 1, 2'000'000)}},
    };
    std::array<CacheCounts, kCacheRegionCount> global{};
    global[0].hits = 12;
    global[0].misses = 2;
    s.regions = AggregateRegions(instances, global, 5.0);
    s.instances = instances;

    auto doc = boost::json::parse(s.ToJson(false)).as_object();
    EXPECT_EQ(doc.at("mode").as_string(), "redis");
    EXPECT_EQ(doc.at("activeInstances").as_int64(), 2);
    EXPECT_FALSE(doc.contains("instances"));
    ASSERT_EQ(doc.at("drifting").as_array().size(), 1u);
    EXPECT_EQ(doc.at("drifting").as_array()[0].as_string(), "virtual_keys");
    auto& vk = doc.at("regions").as_array()[0].as_object();
    EXPECT_EQ(vk.at("region").as_string(), "virtual_keys");
    EXPECT_EQ(vk.at("hits").as_int64(), 6);
    EXPECT_EQ(vk.at("misses").as_int64(), 2);
    EXPECT_DOUBLE_EQ(vk.at("hitRate").as_double(), 0.75);
    EXPECT_EQ(vk.at("global").as_object().at("hits").as_int64(), 12);
    EXPECT_DOUBLE_EQ(vk.at("driftPercent").to_number<double>(), 100);
    EXPECT_TRUE(vk.at("drifting").as_bool());
    auto& lat = vk.at("latencyMs").as_object();
    EXPECT_EQ(lat.at("count").as_int64(), 8);
    EXPECT_DOUBLE_EQ(lat.at("max").to_number<double>(), 2.0);
    EXPECT_DOUBLE_EQ(lat.at("p99").to_number<double>(), 2.0);

    auto full = boost::json::parse(s.ToJson(true)).as_object();
    auto& list = full.at("instances").as_array();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].as_object().at("instanceId").as_string(), "a\"b");
    EXPECT_EQ(list[1].as_object().at("lastHeartbeat").as_int64(), 8);
    EXPECT_EQ(list[1].as_object().at("regions").as_array()[0].as_object().at("hits").as_int64(), 3);
}

}  // namespace
}  // namespace conduit::obs
