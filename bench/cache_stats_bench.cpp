// conduit-cache-stats-bench: aggregation time of the distributed cache statistics for N simulated
// instances on Redis (issue 6 item 3; target <= 10 ms for 1,000 instances).
//
//   conduit-cache-stats-bench [--redis redis://127.0.0.1:6390/0] [--instances 1000]
//       [--runs 300] [--buckets 24] [--prefix P]
//
// 1. Fills Redis through the real adapter: every simulated instance pushes one snapshot of every
//    region (cumulative counts, a latency histogram with --buckets non-empty buckets), each push
//    one round trip (the Lua push script).
// 2. Measures, alternating in the same run:
//    - collect: CacheStatsSink::Collect(false) — MULTI/TIME/HGETALL records/HGETALL global/EXEC
//      in one round trip, parsing, sums, percentiles of the merged histograms and drift, i.e.
//      what the admin route and the cluster gauges cost;
//    - hgetall records, parse+aggregate only: the two halves of a collection alone;
//    - collect+instances: the same keeping per-instance views, plus the admin JSON rendering;
//    - ping: one PING round trip on a separate connection (the reference: the floor of any
//      Redis call from this process);
//    - push: one more push of one instance (what each instance pays per interval).
// Prints one line per measure (median, p90, p99, max in ms) and the median ratio to PING.
// Keys are deleted at the end.

#include "bus/redis/redis_cache_stats.hpp"
#include "core/crypto.hpp"
#include "core/ids.hpp"
#include "redis/client.hpp"
#include "redis/url.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <future>
#include <map>
#include <random>
#include <span>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using namespace conduit;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

/// CPU time of this whole process (every thread, e.g. the Redis client's I/O thread), in ms.
double ProcessCpuMs() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

struct Series {
    std::vector<double> ms;
    std::vector<double> cpu_ms;  // this process's CPU time during the measure
    double CpuMedian() const {
        if (cpu_ms.empty()) {
            return 0;
        }
        std::vector<double> v = cpu_ms;
        std::sort(v.begin(), v.end());
        return v[(v.size() - 1) / 2];
    }
    double At(double q) const {
        if (ms.empty()) {
            return 0;
        }
        std::vector<double> v = ms;
        std::sort(v.begin(), v.end());
        size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
        return v[std::min(i, v.size() - 1)];
    }
};

obs::InstanceSnapshot MakeInstance(int index, size_t buckets, std::mt19937_64& rng) {
    obs::InstanceSnapshot s;
    char id[32];
    std::snprintf(id, sizeof id, "bench%05d", index);
    s.instance_id = id;
    std::uniform_int_distribution<uint64_t> count(1000, 1'000'000);
    for (size_t r = 0; r < obs::kCacheRegionCount; ++r) {
        obs::RegionSnapshot region;
        region.region = static_cast<obs::CacheRegion>(r);
        auto& c = region.counts;
        c.hits = count(rng);
        c.misses = count(rng) / 10;
        c.sets = c.misses;
        c.removes = c.misses / 100;
        c.evictions = c.misses / 50;
        c.errors = c.misses / 1000;
        // --buckets adjacent non-empty buckets from ~200 ns up (a realistic spread: four buckets
        // per power of two, so 24 buckets cover 200 ns .. 13 µs).
        const size_t first = obs::LatencyBucket(200);
        for (size_t b = 0; b < buckets && first + b < obs::kLatencyBuckets; ++b) {
            region.latency.SetBucket(first + b, count(rng) / (b + 1));
        }
        region.latency.SetSumNs(region.latency.Count() * 900);
        region.latency.SetMaxNs(obs::LatencyBucketUpper(first + buckets) + 5000);
        s.regions.push_back(std::move(region));
    }
    return s;
}

template <class T>
T Wait(std::future<T> f) {
    return f.get();
}

}  // namespace

int main(int argc, char** argv) {
    std::string url = "redis://127.0.0.1:6390/0";
    if (const char* env = std::getenv("CONDUIT_TEST_REDIS"); env != nullptr && *env != '\0') {
        url = env;
    }
    int instances = 1000;
    int runs = 300;
    size_t buckets = 24;
    std::string prefix =
        "csbench" + std::to_string(::getpid()) + core::HexEncode(core::RandomBytes(3)) + ":";
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (i + 1 >= argc) {
            std::fprintf(stderr, "missing value after %s\n", arg.c_str());
            return 2;
        }
        const char* v = argv[++i];
        if (arg == "--redis") {
            url = v;
        } else if (arg == "--instances") {
            instances = std::atoi(v);
        } else if (arg == "--runs") {
            runs = std::atoi(v);
        } else if (arg == "--buckets") {
            buckets = static_cast<size_t>(std::atoi(v));
        } else if (arg == "--prefix") {
            prefix = v;
        } else {
            std::fprintf(stderr, "unknown option %s\n", arg.c_str());
            return 2;
        }
    }
    if (instances < 1 || runs < 1) {
        std::fprintf(stderr, "--instances and --runs must be positive\n");
        return 2;
    }

    bus::RedisCacheStatsOptions o;
    o.url = url;
    o.key_prefix = prefix;
    o.command_timeout = std::chrono::milliseconds(10000);
    auto made = bus::MakeRedisCacheStats(o);
    if (!made) {
        std::fprintf(stderr, "redis: %s\n", made.error().message.c_str());
        return 1;
    }
    auto& sink = **made;
    auto endpoint = redis::ParseUrl(url);
    redis::ClientOptions co;
    co.endpoint = *endpoint;
    redis::Client raw(co);

    auto push = [&](const obs::InstanceSnapshot& s) {
        std::promise<core::Result<void>> p;
        sink.Push(s, [&p](core::Result<void> r) { p.set_value(std::move(r)); });
        return Wait(p.get_future());
    };
    auto collect = [&](bool with_instances) {
        std::promise<core::Result<obs::ClusterCacheStats>> p;
        sink.Collect(with_instances,
                     [&p](core::Result<obs::ClusterCacheStats> r) { p.set_value(std::move(r)); });
        return Wait(p.get_future());
    };
    auto ping = [&] {
        std::promise<core::Result<redis::Reply>> p;
        raw.Command({"PING"}, [&p](core::Result<redis::Reply> r) { p.set_value(std::move(r)); });
        return Wait(p.get_future());
    };

    // Fill: every instance pushes once (pipelined: all in flight, then wait for all).
    std::mt19937_64 rng(42);
    std::vector<obs::InstanceSnapshot> snaps;
    snaps.reserve(static_cast<size_t>(instances));
    for (int i = 0; i < instances; ++i) {
        snaps.push_back(MakeInstance(i, buckets, rng));
    }
    const auto fill_start = Clock::now();
    {
        std::vector<std::promise<core::Result<void>>> done(snaps.size());
        std::vector<std::future<core::Result<void>>> results;
        for (auto& d : done) {
            results.push_back(d.get_future());
        }
        for (size_t i = 0; i < snaps.size(); ++i) {
            sink.Push(snaps[i], [&done, i](core::Result<void> r) { done[i].set_value(r); });
        }
        for (auto& f : results) {
            if (auto r = f.get(); !r) {
                std::fprintf(stderr, "push failed: %s\n", r.error().message.c_str());
                return 1;
            }
        }
    }
    const double fill_ms = Ms(Clock::now() - fill_start);

    // Check the fill before timing anything.
    auto first = collect(true);
    if (!first || first->active_instances != static_cast<size_t>(instances)) {
        std::fprintf(
            stderr, "collect: %s\n",
            first ? ("found " + std::to_string(first->active_instances) + " instances").c_str()
                  : first.error().message.c_str());
        return 1;
    }
    const std::string json = first->ToJson(true);
    uint64_t record_bytes = 0;
    uint64_t lean_bytes = 0;
    for (const auto& s : snaps) {
        record_bytes += obs::EncodeRegions(s.regions).size();
        lean_bytes += obs::EncodeRegions(s.regions, false).size();
    }

    // Reference 2: the raw read of every record (one HGETALL, no parsing).
    const std::string records_key = prefix + "cache:stats:records";
    auto hgetall = [&] {
        std::promise<core::Result<redis::Reply>> p;
        raw.Command({"HGETALL", records_key},
                    [&p](core::Result<redis::Reply> r) { p.set_value(std::move(r)); });
        return Wait(p.get_future());
    };

    Series c_plain, c_full, p_ping, p_push, p_read, p_parse;
    for (int i = 0; i < 20; ++i) {  // warm-up
        collect(false);
        ping();
    }
    for (int run = 0; run < runs; ++run) {
        auto t0 = Clock::now();
        double c0 = ProcessCpuMs();
        if (auto r = ping(); !r) {
            std::fprintf(stderr, "ping: %s\n", r.error().message.c_str());
            return 1;
        }
        p_ping.ms.push_back(Ms(Clock::now() - t0));
        p_ping.cpu_ms.push_back(ProcessCpuMs() - c0);

        t0 = Clock::now();
        c0 = ProcessCpuMs();
        auto m = hgetall();
        if (!m || m->elements.size() != 2 * snaps.size()) {
            std::fprintf(stderr, "hgetall: wrong answer\n");
            return 1;
        }
        p_read.ms.push_back(Ms(Clock::now() - t0));
        p_read.cpu_ms.push_back(ProcessCpuMs() - c0);
        // The C++ part of a collection alone: parse every record and aggregate.
        t0 = Clock::now();
        c0 = ProcessCpuMs();
        obs::CacheAggregator agg;
        for (size_t k = 0; k + 1 < m->elements.size(); k += 2) {
            agg.AddRecord(m->elements[k].str, m->elements[k + 1].str);
        }
        std::array<obs::CacheCounts, obs::kCacheRegionCount> global{};
        auto regions = agg.Finish(global, 5.0);
        p_parse.ms.push_back(Ms(Clock::now() - t0));
        p_parse.cpu_ms.push_back(ProcessCpuMs() - c0);
        if (agg.size() != snaps.size()) {
            std::fprintf(stderr, "parse: wrong answer\n");
            return 1;
        }

        t0 = Clock::now();
        c0 = ProcessCpuMs();
        auto r = collect(false);
        c_plain.ms.push_back(Ms(Clock::now() - t0));
        c_plain.cpu_ms.push_back(ProcessCpuMs() - c0);
        if (!r || r->active_instances != static_cast<size_t>(instances) || !r->Drifting().empty()) {
            std::fprintf(stderr, "collect run %d: wrong answer\n", run);
            return 1;
        }

        t0 = Clock::now();
        c0 = ProcessCpuMs();
        auto full = collect(true);
        std::string body = full ? full->ToJson(true) : std::string();
        c_full.ms.push_back(Ms(Clock::now() - t0));
        c_full.cpu_ms.push_back(ProcessCpuMs() - c0);

        auto& s = snaps[static_cast<size_t>(run) % snaps.size()];
        s.regions[0].counts.hits += 1;
        t0 = Clock::now();
        c0 = ProcessCpuMs();
        if (auto pr = push(s); !pr) {
            std::fprintf(stderr, "push: %s\n", pr.error().message.c_str());
            return 1;
        }
        p_push.ms.push_back(Ms(Clock::now() - t0));
        p_push.cpu_ms.push_back(ProcessCpuMs() - c0);
    }

    std::printf("instances %d, regions %zu, non-empty histogram buckets per region %zu, runs %d\n",
                instances, obs::kCacheRegionCount, buckets, runs);
    std::printf(
        "records read per collection %.1f KB (%.0f B per instance); full histograms %.1f KB "
        "(%.0f B per instance, read with ?instances=true); admin JSON with instances %.1f KB\n",
        static_cast<double>(lean_bytes) / 1024, static_cast<double>(lean_bytes) / instances,
        static_cast<double>(record_bytes) / 1024, static_cast<double>(record_bytes) / instances,
        static_cast<double>(json.size()) / 1024);
    std::printf("fill (%d pipelined pushes) %.1f ms\n", instances, fill_ms);
    std::printf("%-22s %9s %9s %9s %9s %12s %9s\n", "measure (wall ms)", "median", "p90", "p99",
                "max", "median/ping", "cpu ms");
    const double ping_median = p_ping.At(0.5);
    auto row = [&](const char* name, const Series& s) {
        std::printf("%-22s %9.3f %9.3f %9.3f %9.3f %11.1fx %9.3f\n", name, s.At(0.5), s.At(0.9),
                    s.At(0.99), s.At(1.0), s.At(0.5) / ping_median, s.CpuMedian());
    };
    row("ping (reference)", p_ping);
    row("hgetall records", p_read);
    row("parse+aggregate only", p_parse);
    row("collect", c_plain);
    row("collect+instances+json", c_full);
    row("push (one instance)", p_push);
    const bool pass = c_plain.At(0.99) <= 10.0;
    std::printf("target: collect p99 <= 10 ms for %d instances: %s\n", instances,
                pass ? "PASS" : "FAIL");

    // Clean up.
    for (const char* key : {"instances", "records", "global"}) {
        std::promise<core::Result<redis::Reply>> p;
        raw.Command({"DEL", prefix + "cache:stats:" + key},
                    [&p](core::Result<redis::Reply> r) { p.set_value(std::move(r)); });
        p.get_future().get();
    }
    return 0;
}
