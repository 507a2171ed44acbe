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

/// The Redis cache statistics adapter: one pipelined connection; Push and Collect are one Lua
/// script each (EVALSHA; EVAL again after NOSCRIPT), so each costs one round trip and is atomic.
///
/// Keys (prefix P):
///   P cache:stats:instances      sorted set: instance id → last push (Redis server time, ms)
///   P cache:stats:inst:{id}      string: "hb <ms>" + obs::EncodeRegions (cumulative figures),
///                                expires after 3 × stale_after (a bound on leaks; pruning
///                                normally deletes it first)
///   P cache:stats:global         hash "{region}:{hits|misses|sets|removes|evictions|errors}":
///                                the global aggregate, moved by each push's difference
/// Push: prunes up to 100 stale instances (subtracting their figures from the global hash),
/// adds (new − previous) of this instance to the global hash, stores the record, heartbeats.
/// Collect: prunes, then returns the global hash and every registered instance's record (MGET
/// in the script); the histograms are merged here, not in Lua.
/// Keys are computed inside the scripts: one Redis server (not a cluster).
/// Creates the adapter and starts connecting (does not wait). Fails only on a bad URL.
core::Result<std::unique_ptr<CacheStatsSink>> MakeRedisCacheStats(RedisCacheStatsOptions options);

}  // namespace conduit::bus
