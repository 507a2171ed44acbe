#pragma once

// Cache statistics (issue 6 item 3): per-instance counters and latency histograms of every cache
// Conduit has, recorded locally without a lock, and the pure parts of the cluster view
// (mergeable snapshots, aggregation across instances, drift detection, JSON). Pushing
// snapshots to Redis and reading them back is bus::CacheStatsSink's job; this file does no I/O.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::obs {

/// The caches Conduit has. Append only (names are stored in Redis).
enum class CacheRegion : uint8_t {
    kVirtualKeys,  // presented key → key entry, per-thread memo of domain::Snapshot::Authenticate
    kWebhookSecrets,  // per-key webhook signing keys (webhooks::SecretService)
    kKeyBudgets,      // per-key cached period spend of the budget gate (gateway::BudgetGate)
};
inline constexpr size_t kCacheRegionCount = 3;

/// "virtual_keys", "webhook_secrets", "key_budgets". Pure.
std::string_view CacheRegionName(CacheRegion region);
/// The region named `name` (as CacheRegionName spells it). Pure.
std::optional<CacheRegion> ParseCacheRegion(std::string_view name);

/// Counts of one region (a plain, mergeable value).
struct CacheCounts {
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t sets = 0;
    uint64_t removes = 0;    // explicit invalidations
    uint64_t evictions = 0;  // dropped for capacity or age
    uint64_t errors = 0;     // a fill (load) failed

    uint64_t Lookups() const { return hits + misses; }
    /// hits / lookups; 0 when there was no lookup.
    double HitRate() const;
    CacheCounts& operator+=(const CacheCounts& o);
    bool operator==(const CacheCounts&) const = default;
};

/// Number of latency buckets: values below 4 ns each have their own bucket, then four buckets
/// per power of two (each ≤ 25 % wide, so a percentile is within 12.5 % of the true value), up
/// to 2^40 ns (18 min); the last bucket takes everything above.
inline constexpr size_t kLatencyBuckets = 156;

/// The bucket of a latency of `ns` nanoseconds. Pure.
size_t LatencyBucket(uint64_t ns);
/// [lower, upper) of bucket `i` in nanoseconds. Pure.
uint64_t LatencyBucketLower(size_t i);
uint64_t LatencyBucketUpper(size_t i);

/// A latency histogram as a plain value: fixed log buckets, so histograms of different instances
/// merge by adding bucket counts and percentiles of the merge are as exact as of each part.
class LatencyHistogram {
public:
    /// Records one latency.
    void Record(uint64_t ns);
    /// Adds every observation of `o`.
    void Merge(const LatencyHistogram& o);

    uint64_t Count() const { return count_; }
    uint64_t SumNs() const { return sum_ns_; }
    uint64_t MaxNs() const { return max_ns_; }
    uint64_t BucketCount(size_t i) const { return buckets_[i]; }
    /// Sets bucket `i` (and keeps Count() in step). For decoders and snapshots.
    void SetBucket(size_t i, uint64_t n);
    void SetSumNs(uint64_t v) { sum_ns_ = v; }
    void SetMaxNs(uint64_t v) { max_ns_ = v; }
    /// Adds `n` observations to bucket `i`, `sum_ns` to the sum, and raises the max.
    void AddBucket(size_t i, uint64_t n) {
        buckets_[i] += n;
        count_ += n;
    }
    void AddSumMax(uint64_t sum_ns, uint64_t max_ns) {
        sum_ns_ += sum_ns;
        max_ns_ = max_ns > max_ns_ ? max_ns : max_ns_;
    }

    /// The q-quantile (0 < q <= 1) in nanoseconds: the bucket holding the rank ceil(q·count),
    /// interpolated linearly inside it, never above MaxNs(). 0 when empty.
    double QuantileNs(double q) const;
    /// Mean in nanoseconds (0 when empty).
    double MeanNs() const;

    /// Compact text form: "sum,max" then ";bucket:count" for every non-empty bucket, e.g.
    /// "1200,700;20:3;31:1". Empty histogram: "0,0".
    std::string Encode() const;
    /// Parses Encode()'s form; nullopt on malformed text (bad number, bucket out of range).
    static std::optional<LatencyHistogram> Decode(std::string_view text);

    bool operator==(const LatencyHistogram&) const = default;

private:
    std::array<uint64_t, kLatencyBuckets> buckets_{};
    uint64_t count_ = 0;
    uint64_t sum_ns_ = 0;
    uint64_t max_ns_ = 0;
};

/// A region's figures at one moment.
struct RegionSnapshot {
    CacheRegion region = CacheRegion::kVirtualKeys;
    CacheCounts counts;
    LatencyHistogram latency;
};

/// The live statistics of one cache region. Every Record* is lock-free (relaxed atomics) and
/// callable from any thread; Snapshot() may see an operation's count slightly before its latency.
class CacheRegionStats {
public:
    explicit CacheRegionStats(CacheRegion region) : region_(region) {}
    CacheRegionStats(const CacheRegionStats&) = delete;
    CacheRegionStats& operator=(const CacheRegionStats&) = delete;

    /// A lookup answered from the cache, taking `latency_ns`.
    void Hit(uint64_t latency_ns) {
        hits_.fetch_add(1, std::memory_order_relaxed);
        RecordLatency(latency_ns);
    }
    /// A lookup the cache could not answer (absent or too old), taking `latency_ns`.
    void Miss(uint64_t latency_ns) {
        misses_.fetch_add(1, std::memory_order_relaxed);
        RecordLatency(latency_ns);
    }
    /// An entry was stored.
    void Set() { sets_.fetch_add(1, std::memory_order_relaxed); }
    /// `n` entries were invalidated explicitly.
    void Remove(uint64_t n = 1) { removes_.fetch_add(n, std::memory_order_relaxed); }
    /// `n` entries were dropped for capacity or age.
    void Evict(uint64_t n = 1) { evictions_.fetch_add(n, std::memory_order_relaxed); }
    /// Filling an entry failed.
    void Error() { errors_.fetch_add(1, std::memory_order_relaxed); }
    /// One operation's latency alone.
    void RecordLatency(uint64_t ns);

    CacheRegion region() const { return region_; }
    /// The figures so far. Any thread.
    RegionSnapshot Snapshot() const;

private:
    CacheRegion region_;
    std::atomic<uint64_t> hits_{0}, misses_{0}, sets_{0}, removes_{0}, evictions_{0}, errors_{0};
    std::atomic<uint64_t> sum_ns_{0}, max_ns_{0};
    std::array<std::atomic<uint64_t>, kLatencyBuckets> buckets_{};
};

/// Every region of one process. Tests construct their own; production records into Global()
/// (like the metrics registry: the caches live in components that are not handed an object,
/// e.g. the immutable configuration snapshot).
class CacheStats {
public:
    CacheStats();
    CacheStats(const CacheStats&) = delete;
    CacheStats& operator=(const CacheStats&) = delete;

    static CacheStats& Global();

    CacheRegionStats& Region(CacheRegion region) { return *regions_[static_cast<size_t>(region)]; }
    /// Every region, in enum order. Any thread.
    std::vector<RegionSnapshot> Snapshot() const;

private:
    std::array<std::unique_ptr<CacheRegionStats>, kCacheRegionCount> regions_;
};

/// One instance's cumulative figures as pushed to the cluster.
struct InstanceSnapshot {
    std::string instance_id;
    int64_t heartbeat_ms = 0;  // when it was last pushed (Unix ms, the engine's clock)
    std::vector<RegionSnapshot> regions;
};

/// A region across every active instance.
struct RegionAggregate {
    CacheRegion region = CacheRegion::kVirtualKeys;
    CacheCounts counts;        // Σ per-instance counts (what the instances say)
    CacheCounts global;        // the cluster-wide aggregate the engine keeps (what it says)
    LatencyHistogram latency;  // merged
    /// max over hits and misses of |Σ instances − global| / Σ instances · 100 (100 when
    /// Σ = 0 < global; 0 when both are 0).
    double drift_percent = 0;
    bool drifting = false;  // drift_percent > tolerance
    /// Instances whose lookups are more than 50 % away from the mean (≥ 2 instances).
    std::vector<std::string> outliers;
};

/// The cluster view answered by the admin route.
struct ClusterCacheStats {
    int64_t generated_ms = 0;
    std::string mode;  // "embedded" or "redis"
    double tolerance_percent = 5.0;
    size_t active_instances = 0;  // heartbeat within the staleness
    /// Instances past the staleness whose figures are still there: the next push of any
    /// instance prunes them (with their share of the global aggregate); counted in the sums
    /// until then.
    size_t stale_instances = 0;
    double aggregation_ms = 0;  // time to collect and aggregate
    std::vector<RegionAggregate> regions;
    std::vector<InstanceSnapshot> instances;  // filled when asked for per-instance views

    /// Regions whose drift exceeds the tolerance.
    std::vector<CacheRegion> Drifting() const;
    /// The JSON body of GET /api/cache/statistics (camelCase; latency in milliseconds).
    /// `with_instances` adds the per-instance views.
    std::string ToJson(bool with_instances) const;
};

/// The wire form of an instance's regions, one line each:
/// "<region> <hits> <misses> <sets> <removes> <evictions> <errors> <histogram>\n" (histogram as
/// LatencyHistogram::Encode). The Redis scripts parse the six counts. Pure.
/// Without buckets, each histogram is only its "sum,max" head (the counts-only form).
std::string EncodeRegions(const std::vector<RegionSnapshot>& regions, bool with_buckets = true);
/// Parses a stored instance record: an optional first line "hb <unix ms> [<push sequence>]" then
/// EncodeRegions' lines. Lines of regions this build does not know are skipped; nullopt on
/// malformed text.
std::optional<InstanceSnapshot> DecodeInstance(std::string instance_id, std::string_view text);

/// drift% = |expected − actual| / expected · 100 (100 when expected = 0 < actual). Pure.
double DriftPercent(uint64_t expected, uint64_t actual);

/// Aggregates instances one by one, straight from their stored records (no per-instance
/// histogram is built unless the per-instance views are kept), then computes drift against the
/// engine's global counts and the outliers. Not thread-safe (one per aggregation).
class CacheAggregator {
public:
    explicit CacheAggregator(bool keep_instances = false) : keep_(keep_instances) {}

    /// Adds a record in DecodeInstance's form. Returns false, adding nothing, when it is
    /// malformed. `heartbeat_ms` receives the record's heartbeat (0 when it has none).
    bool AddRecord(std::string_view instance_id,
                   std::string_view text,
                   int64_t* heartbeat_ms = nullptr);
    /// Adds a snapshot.
    void Add(const InstanceSnapshot& instance);

    /// Instances added so far.
    size_t size() const { return seen_.size(); }
    /// Per region (enum order): sums, merged latency, drift of the sums against `global` above
    /// `tolerance_percent`, outliers.
    std::vector<RegionAggregate> Finish(const std::array<CacheCounts, kCacheRegionCount>& global,
                                        double tolerance_percent) const;
    /// The instances added (only when constructed with keep_instances).
    std::vector<InstanceSnapshot> TakeInstances() { return std::move(kept_); }

private:
    struct Seen {
        std::string id;
        std::array<uint64_t, kCacheRegionCount> lookups{};
    };
    bool keep_;
    std::array<CacheCounts, kCacheRegionCount> counts_{};
    std::array<LatencyHistogram, kCacheRegionCount> latency_{};
    std::vector<Seen> seen_;
    std::vector<InstanceSnapshot> kept_;
    // Scratch of AddRecord (kept to avoid an allocation per record).
    struct Line {
        size_t region = 0;
        CacheCounts counts;
        uint64_t sum_ns = 0;
        uint64_t max_ns = 0;
        size_t first_bucket = 0;  // into buckets_
        size_t bucket_count = 0;
    };
    std::vector<Line> lines_;
    std::vector<std::pair<size_t, uint64_t>> buckets_;
};

/// Aggregates `instances` per region against the engine's `global` counts (indexed by region),
/// flags drift above `tolerance_percent` and outlier instances. Pure.
std::vector<RegionAggregate> AggregateRegions(
    const std::vector<InstanceSnapshot>& instances,
    const std::array<CacheCounts, kCacheRegionCount>& global,
    double tolerance_percent);

}  // namespace conduit::obs
