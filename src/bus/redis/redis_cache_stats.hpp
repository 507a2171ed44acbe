#pragma once

#include "bus/cache_stats_sink.hpp"
#include "core/error.hpp"
#include "core/loop.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace conduit::bus {

/// Settings of the Redis cache statistics adapter.
struct RedisCacheStatsOptions {
    /// `redis://[[user]:password@]host[:port][/db]`.
    std::string url = "redis://127.0.0.1:6379/0";
    /// Prepended to every key (the deployment's --redis-prefix, e.g. "conduit:").
    std::string key_prefix;
    CacheStatsOptions stats;
    /// Where callbacks run: Post()ed to this loop, or, when nullptr, on the adapter's I/O thread.
    core::Loop* loop = nullptr;
    std::chrono::milliseconds connect_timeout{2000};
    std::chrono::milliseconds command_timeout{2000};
};

/// The Redis cache statistics adapter: one pipelined connection, one round trip per call.
///
/// Keys (prefix P; all four expire after 3 × stale_after without any push, a bound on what a
/// vanished deployment leaves behind):
///   P cache:stats:instances   sorted set: instance id → last push (Redis server time, ms)
///   P cache:stats:records     hash: instance id → "hb <ms> <push seq>\n" + counts-only regions
///                             (obs::EncodeRegions without buckets: counts, latency sum and max)
///   P cache:stats:histograms  hash: instance id → the same with every histogram bucket
///   P cache:stats:global      hash: "{region}:{hits|misses|sets|removes|evictions|errors}" and
///                             "{region}:lat:{bucket}": the global aggregate and the merged
///                             histograms, moved by each push's difference
/// Push: one Lua script (EVALSHA; EVAL again after NOSCRIPT): prunes up to 100 stale instances
/// (subtracting their counts and buckets from the global hash), adds (new − previous) of this
/// instance to it — the differences computed here against the last confirmed push when the
/// stored record carries that push's sequence, else from the stored record in Lua — stores both
/// records, heartbeats.
/// Collect: MULTI, TIME, HGETALL records (histograms when the per-instance views are asked
/// for), HGETALL global, EXEC written back to back: one atomic read, about 100 bytes per
/// instance; parsed here (obs::CacheAggregator). Every key is passed in KEYS (a Redis Cluster
/// needs a hash tag in the prefix, e.g. "{c}:").
/// Creates the adapter and starts connecting (does not wait). Fails only on a bad URL.
core::Result<std::unique_ptr<CacheStatsSink>> MakeRedisCacheStats(RedisCacheStatsOptions options);

}  // namespace conduit::bus
