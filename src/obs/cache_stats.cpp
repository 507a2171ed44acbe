#include "obs/cache_stats.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>

namespace conduit::obs {
namespace {

constexpr std::array<std::string_view, kCacheRegionCount> kRegionNames = {
    "virtual_keys", "webhook_secrets", "key_budgets"};

// Values below this have a bucket each; above, four buckets per power of two.
constexpr uint64_t kLinear = 4;

void AtomicMax(std::atomic<uint64_t>& target, uint64_t v) {
    uint64_t cur = target.load(std::memory_order_relaxed);
    while (v > cur && !target.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
}

bool ParseU64(std::string_view s, uint64_t& out) {
    if (s.empty()) {
        return false;
    }
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
}

// A double as JSON: finite, shortest round-trip form.
std::string Num(double v) {
    if (!std::isfinite(v)) {
        return "0";
    }
    return fmt::format("{}", v);
}

void AppendCounts(std::string& out, const CacheCounts& c) {
    out += fmt::format(
        R"("hits":{},"misses":{},"sets":{},"removes":{},"evictions":{},"errors":{},"hitRate":{})",
        c.hits, c.misses, c.sets, c.removes, c.evictions, c.errors, Num(c.HitRate()));
}

void AppendLatency(std::string& out, const LatencyHistogram& h) {
    auto ms = [](double ns) { return Num(ns / 1e6); };
    out +=
        fmt::format(R"("latencyMs":{{"count":{},"mean":{},"p50":{},"p95":{},"p99":{},"max":{}}})",
                    h.Count(), ms(h.MeanNs()), ms(h.QuantileNs(0.50)), ms(h.QuantileNs(0.95)),
                    ms(h.QuantileNs(0.99)), ms(static_cast<double>(h.MaxNs())));
}

// Only lowercase hex ids and fixed names reach the JSON, but an id is data from Redis: escape.
void AppendString(std::string& out, std::string_view s) {
    out += '"';
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
            out += c;
        }
    }
    out += '"';
}

}  // namespace

std::string_view CacheRegionName(CacheRegion region) {
    auto i = static_cast<size_t>(region);
    return i < kRegionNames.size() ? kRegionNames[i] : std::string_view("unknown");
}

std::optional<CacheRegion> ParseCacheRegion(std::string_view name) {
    for (size_t i = 0; i < kRegionNames.size(); ++i) {
        if (kRegionNames[i] == name) {
            return static_cast<CacheRegion>(i);
        }
    }
    return std::nullopt;
}

double CacheCounts::HitRate() const {
    const uint64_t n = Lookups();
    return n == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(n);
}

CacheCounts& CacheCounts::operator+=(const CacheCounts& o) {
    hits += o.hits;
    misses += o.misses;
    sets += o.sets;
    removes += o.removes;
    evictions += o.evictions;
    errors += o.errors;
    return *this;
}

size_t LatencyBucket(uint64_t ns) {
    if (ns < kLinear) {
        return static_cast<size_t>(ns);
    }
    const int msb = 63 - std::countl_zero(ns);  // >= 2
    const uint64_t sub = (ns >> (msb - 2)) & 3;
    const size_t i = static_cast<size_t>(msb) * 4 + sub - 4;
    return std::min(i, kLatencyBuckets - 1);
}

uint64_t LatencyBucketLower(size_t i) {
    if (i < kLinear) {
        return i;
    }
    const size_t msb = i / 4 + 1;
    return (4 + i % 4) << (msb - 2);
}

uint64_t LatencyBucketUpper(size_t i) {
    if (i < kLinear) {
        return i + 1;
    }
    const size_t msb = i / 4 + 1;
    return LatencyBucketLower(i) + (uint64_t{1} << (msb - 2));
}

void LatencyHistogram::Record(uint64_t ns) {
    ++buckets_[LatencyBucket(ns)];
    ++count_;
    sum_ns_ += ns;
    max_ns_ = std::max(max_ns_, ns);
}

void LatencyHistogram::Merge(const LatencyHistogram& o) {
    for (size_t i = 0; i < kLatencyBuckets; ++i) {
        buckets_[i] += o.buckets_[i];
    }
    count_ += o.count_;
    sum_ns_ += o.sum_ns_;
    max_ns_ = std::max(max_ns_, o.max_ns_);
}

void LatencyHistogram::SetBucket(size_t i, uint64_t n) {
    count_ = count_ - buckets_[i] + n;
    buckets_[i] = n;
}

double LatencyHistogram::QuantileNs(double q) const {
    if (count_ == 0) {
        return 0;
    }
    q = std::clamp(q, 0.0, 1.0);
    const auto rank =
        std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_))));
    uint64_t seen = 0;
    for (size_t i = 0; i < kLatencyBuckets; ++i) {
        const uint64_t n = buckets_[i];
        if (n == 0 || seen + n < rank) {
            seen += n;
            continue;
        }
        // The rank-th value is the (rank - seen)-th of n spread evenly over the bucket.
        const double lo = static_cast<double>(LatencyBucketLower(i));
        const double hi = static_cast<double>(LatencyBucketUpper(i));
        const double v = lo + (hi - lo) * static_cast<double>(rank - seen) / static_cast<double>(n);
        return std::min(v, static_cast<double>(max_ns_));
    }
    return static_cast<double>(max_ns_);
}

double LatencyHistogram::MeanNs() const {
    return count_ == 0 ? 0.0 : static_cast<double>(sum_ns_) / static_cast<double>(count_);
}

std::string LatencyHistogram::Encode() const {
    std::string out = fmt::format("{},{}", sum_ns_, max_ns_);
    for (size_t i = 0; i < kLatencyBuckets; ++i) {
        if (buckets_[i] != 0) {
            out += fmt::format(";{}:{}", i, buckets_[i]);
        }
    }
    return out;
}

std::optional<LatencyHistogram> LatencyHistogram::Decode(std::string_view text) {
    LatencyHistogram h;
    const size_t head_end = text.find(';');
    const std::string_view head = text.substr(0, head_end);
    const size_t comma = head.find(',');
    if (comma == std::string_view::npos || !ParseU64(head.substr(0, comma), h.sum_ns_) ||
        !ParseU64(head.substr(comma + 1), h.max_ns_)) {
        return std::nullopt;
    }
    std::string_view rest =
        head_end == std::string_view::npos ? std::string_view() : text.substr(head_end + 1);
    if (head_end != std::string_view::npos && rest.empty()) {
        return std::nullopt;  // a trailing ';'
    }
    while (!rest.empty()) {
        const size_t end = rest.find(';');
        const std::string_view item = rest.substr(0, end);
        rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
        const size_t colon = item.find(':');
        uint64_t index = 0;
        uint64_t n = 0;
        if (colon == std::string_view::npos || !ParseU64(item.substr(0, colon), index) ||
            !ParseU64(item.substr(colon + 1), n) || index >= kLatencyBuckets) {
            return std::nullopt;
        }
        h.buckets_[index] += n;
        h.count_ += n;
    }
    return h;
}

void CacheRegionStats::RecordLatency(uint64_t ns) {
    buckets_[LatencyBucket(ns)].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(ns, std::memory_order_relaxed);
    AtomicMax(max_ns_, ns);
}

RegionSnapshot CacheRegionStats::Snapshot() const {
    RegionSnapshot s;
    s.region = region_;
    s.counts.hits = hits_.load(std::memory_order_relaxed);
    s.counts.misses = misses_.load(std::memory_order_relaxed);
    s.counts.sets = sets_.load(std::memory_order_relaxed);
    s.counts.removes = removes_.load(std::memory_order_relaxed);
    s.counts.evictions = evictions_.load(std::memory_order_relaxed);
    s.counts.errors = errors_.load(std::memory_order_relaxed);
    for (size_t i = 0; i < kLatencyBuckets; ++i) {
        if (uint64_t n = buckets_[i].load(std::memory_order_relaxed)) {
            s.latency.SetBucket(i, n);
        }
    }
    s.latency.SetSumNs(sum_ns_.load(std::memory_order_relaxed));
    s.latency.SetMaxNs(max_ns_.load(std::memory_order_relaxed));
    return s;
}

CacheStats::CacheStats() {
    for (size_t i = 0; i < kCacheRegionCount; ++i) {
        regions_[i] = std::make_unique<CacheRegionStats>(static_cast<CacheRegion>(i));
    }
}

CacheStats& CacheStats::Global() {
    static CacheStats* stats = new CacheStats();  // never destroyed: recorded into at exit
    return *stats;
}

std::vector<RegionSnapshot> CacheStats::Snapshot() const {
    std::vector<RegionSnapshot> out;
    out.reserve(kCacheRegionCount);
    for (const auto& r : regions_) {
        out.push_back(r->Snapshot());
    }
    return out;
}

std::string EncodeRegions(const std::vector<RegionSnapshot>& regions, bool with_buckets) {
    std::string out;
    for (const auto& r : regions) {
        const auto& c = r.counts;
        out +=
            fmt::format("{} {} {} {} {} {} {} {}\n", CacheRegionName(r.region), c.hits, c.misses,
                        c.sets, c.removes, c.evictions, c.errors,
                        with_buckets ? r.latency.Encode()
                                     : fmt::format("{},{}", r.latency.SumNs(), r.latency.MaxNs()));
    }
    return out;
}

std::optional<InstanceSnapshot> DecodeInstance(std::string instance_id, std::string_view text) {
    InstanceSnapshot inst;
    inst.instance_id = std::move(instance_id);
    while (!text.empty()) {
        const size_t end = text.find('\n');
        std::string_view line = text.substr(0, end);
        text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
        if (line.empty()) {
            continue;
        }
        std::array<std::string_view, 8> f;
        size_t n = 0;
        while (!line.empty() && n < f.size()) {
            const size_t sp = line.find(' ');
            f[n++] = line.substr(0, sp);
            line = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
        }
        if (!line.empty()) {
            return std::nullopt;  // more than eight fields
        }
        if ((n == 2 || n == 3) && f[0] == "hb") {  // "hb <ms> [<push sequence>]"
            uint64_t hb = 0;
            if (!ParseU64(f[1], hb)) {
                return std::nullopt;
            }
            inst.heartbeat_ms = static_cast<int64_t>(hb);
            continue;
        }
        if (n != 8) {
            return std::nullopt;
        }
        RegionSnapshot r;
        CacheCounts& c = r.counts;
        if (!ParseU64(f[1], c.hits) || !ParseU64(f[2], c.misses) || !ParseU64(f[3], c.sets) ||
            !ParseU64(f[4], c.removes) || !ParseU64(f[5], c.evictions) ||
            !ParseU64(f[6], c.errors)) {
            return std::nullopt;
        }
        auto latency = LatencyHistogram::Decode(f[7]);
        if (!latency) {
            return std::nullopt;
        }
        auto region = ParseCacheRegion(f[0]);
        if (!region) {
            continue;  // a region of a newer build
        }
        r.region = *region;
        r.latency = std::move(*latency);
        inst.regions.push_back(std::move(r));
    }
    return inst;
}

double DriftPercent(uint64_t expected, uint64_t actual) {
    if (expected == 0) {
        return actual == 0 ? 0.0 : 100.0;
    }
    const double diff = expected > actual ? static_cast<double>(expected - actual)
                                          : static_cast<double>(actual - expected);
    return diff / static_cast<double>(expected) * 100.0;
}

namespace {

/// A forward-only reader of a stored record (the collection's hot loop: about 100 numbers per
/// instance, so no splitting into string_views first).
struct RecordReader {
    const char* p;
    const char* end;

    bool AtEnd() const { return p == end; }
    bool Peek(char c) const { return p != end && *p == c; }
    bool Eat(char c) {
        if (p != end && *p == c) {
            ++p;
            return true;
        }
        return false;
    }
    /// A decimal number of 1 to 19 digits.
    bool Number(uint64_t& out) {
        const char* start = p;
        uint64_t v = 0;
        while (p != end && *p >= '0' && *p <= '9') {
            v = v * 10 + static_cast<uint64_t>(*p - '0');
            ++p;
        }
        const auto digits = p - start;
        out = v;
        return digits > 0 && digits <= 19;
    }
    /// The text up to `c` (not consumed), or to the end.
    std::string_view Until(char c) {
        const char* start = p;
        while (p != end && *p != c) {
            ++p;
        }
        return {start, static_cast<size_t>(p - start)};
    }
};

}  // namespace

bool CacheAggregator::AddRecord(std::string_view instance_id,
                                std::string_view text,
                                int64_t* heartbeat_ms) {
    if (keep_) {
        auto inst = DecodeInstance(std::string(instance_id), text);
        if (!inst) {
            return false;
        }
        if (heartbeat_ms != nullptr) {
            *heartbeat_ms = inst->heartbeat_ms;
        }
        Add(*inst);
        kept_.push_back(std::move(*inst));
        return true;
    }
    // Parse everything first (a malformed record adds nothing), then add. Same grammar as
    // DecodeInstance: ["hb <ms>\n"] then "<region> <6 counts> <sum>,<max>[;<i>:<n>]...\n" lines.
    lines_.clear();
    buckets_.clear();
    uint64_t hb = 0;
    RecordReader r{text.data(), text.data() + text.size()};
    while (!r.AtEnd()) {
        if (r.Eat('\n')) {
            continue;
        }
        const std::string_view name = r.Until(' ');
        if (!r.Eat(' ')) {
            return false;
        }
        if (name == "hb") {  // "hb <ms> [<push sequence>]"
            if (!r.Number(hb)) {
                return false;
            }
            if (r.Eat(' ')) {
                r.Until('\n');
            }
            if (!(r.AtEnd() || r.Eat('\n'))) {
                return false;
            }
            continue;
        }
        Line l;
        CacheCounts& c = l.counts;
        for (uint64_t* field : {&c.hits, &c.misses, &c.sets, &c.removes, &c.evictions, &c.errors}) {
            if (!r.Number(*field) || !r.Eat(' ')) {
                return false;
            }
        }
        if (!r.Number(l.sum_ns) || !r.Eat(',') || !r.Number(l.max_ns)) {
            return false;
        }
        l.first_bucket = buckets_.size();
        while (r.Eat(';')) {
            uint64_t index = 0;
            uint64_t count = 0;
            if (!r.Number(index) || !r.Eat(':') || !r.Number(count) || index >= kLatencyBuckets) {
                return false;
            }
            buckets_.emplace_back(static_cast<size_t>(index), count);
        }
        if (!(r.AtEnd() || r.Eat('\n'))) {
            return false;
        }
        l.bucket_count = buckets_.size() - l.first_bucket;
        auto region = ParseCacheRegion(name);
        if (!region) {
            continue;  // a region of a newer build
        }
        l.region = static_cast<size_t>(*region);
        lines_.push_back(l);
    }
    Seen seen;
    seen.id = std::string(instance_id);
    for (const Line& l : lines_) {
        counts_[l.region] += l.counts;
        auto& lat = latency_[l.region];
        for (size_t b = l.first_bucket; b < l.first_bucket + l.bucket_count; ++b) {
            lat.AddBucket(buckets_[b].first, buckets_[b].second);
        }
        lat.AddSumMax(l.sum_ns, l.max_ns);
        seen.lookups[l.region] += l.counts.Lookups();
    }
    seen_.push_back(std::move(seen));
    if (heartbeat_ms != nullptr) {
        *heartbeat_ms = static_cast<int64_t>(hb);
    }
    return true;
}

void CacheAggregator::Add(const InstanceSnapshot& instance) {
    Seen seen;
    seen.id = instance.instance_id;
    for (const auto& r : instance.regions) {
        auto i = static_cast<size_t>(r.region);
        if (i >= kCacheRegionCount) {
            continue;
        }
        counts_[i] += r.counts;
        latency_[i].Merge(r.latency);
        seen.lookups[i] += r.counts.Lookups();
    }
    seen_.push_back(std::move(seen));
}

std::vector<RegionAggregate> CacheAggregator::Finish(
    const std::array<CacheCounts, kCacheRegionCount>& global, double tolerance_percent) const {
    std::vector<RegionAggregate> out(kCacheRegionCount);
    for (size_t i = 0; i < kCacheRegionCount; ++i) {
        auto& agg = out[i];
        agg.region = static_cast<CacheRegion>(i);
        agg.global = global[i];
        agg.counts = counts_[i];
        agg.latency = latency_[i];
        agg.drift_percent = std::max(DriftPercent(agg.counts.hits, agg.global.hits),
                                     DriftPercent(agg.counts.misses, agg.global.misses));
        agg.drifting = agg.drift_percent > tolerance_percent;
        if (seen_.size() < 2) {
            continue;
        }
        const double mean =
            static_cast<double>(agg.counts.Lookups()) / static_cast<double>(seen_.size());
        if (mean <= 0) {
            continue;
        }
        for (const auto& s : seen_) {
            if (std::abs(static_cast<double>(s.lookups[i]) - mean) > 0.5 * mean) {
                agg.outliers.push_back(s.id);
            }
        }
    }
    return out;
}

std::vector<RegionAggregate> AggregateRegions(
    const std::vector<InstanceSnapshot>& instances,
    const std::array<CacheCounts, kCacheRegionCount>& global,
    double tolerance_percent) {
    CacheAggregator agg;
    for (const auto& inst : instances) {
        agg.Add(inst);
    }
    return agg.Finish(global, tolerance_percent);
}

std::vector<CacheRegion> ClusterCacheStats::Drifting() const {
    std::vector<CacheRegion> out;
    for (const auto& r : regions) {
        if (r.drifting) {
            out.push_back(r.region);
        }
    }
    return out;
}

std::string ClusterCacheStats::ToJson(bool with_instances) const {
    std::string out;
    out.reserve(1024 + (with_instances ? instances.size() * 900 : 0));
    out +=
        fmt::format(R"({{"generatedAt":{},"mode":"{}","tolerancePercent":{},"activeInstances":{},)"
                    R"("staleInstances":{},"aggregationMs":{},"drifting":[)",
                    generated_ms, mode, Num(tolerance_percent), active_instances, stale_instances,
                    Num(aggregation_ms));
    bool first = true;
    for (CacheRegion r : Drifting()) {
        out += first ? "" : ",";
        first = false;
        AppendString(out, CacheRegionName(r));
    }
    out += R"(],"regions":[)";
    first = true;
    for (const auto& agg : regions) {
        out += first ? "{" : ",{";
        first = false;
        out += R"("region":)";
        AppendString(out, CacheRegionName(agg.region));
        out += ',';
        AppendCounts(out, agg.counts);
        out += ',';
        AppendLatency(out, agg.latency);
        out += R"(,"global":{)";
        AppendCounts(out, agg.global);
        out += fmt::format(R"(}},"driftPercent":{},"drifting":{},"outliers":[)",
                           Num(agg.drift_percent), agg.drifting ? "true" : "false");
        for (size_t i = 0; i < agg.outliers.size(); ++i) {
            out += i == 0 ? "" : ",";
            AppendString(out, agg.outliers[i]);
        }
        out += "]}";
    }
    out += ']';
    if (with_instances) {
        out += R"(,"instances":[)";
        first = true;
        for (const auto& inst : instances) {
            out += first ? "{" : ",{";
            first = false;
            out += R"("instanceId":)";
            AppendString(out, inst.instance_id);
            out += fmt::format(R"(,"lastHeartbeat":{},"regions":[)", inst.heartbeat_ms);
            bool first_region = true;
            for (const auto& r : inst.regions) {
                out += first_region ? "{" : ",{";
                first_region = false;
                out += R"("region":)";
                AppendString(out, CacheRegionName(r.region));
                out += ',';
                AppendCounts(out, r.counts);
                out += ',';
                AppendLatency(out, r.latency);
                out += '}';
            }
            out += "]}";
        }
        out += ']';
    }
    out += '}';
    return out;
}

}  // namespace conduit::obs
