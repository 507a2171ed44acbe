#pragma once

#include "bus/counters.hpp"
#include "core/error.hpp"
#include "core/loop.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace conduit::bus {

/// Settings of the Redis Counters adapter.
struct RedisCountersOptions {
    /// `redis://[[user]:password@]host[:port][/db]`.
    std::string url = "redis://127.0.0.1:6379/0";
    /// Prepended to every key (e.g. "conduit:"), so several deployments can share one Redis.
    std::string key_prefix;
    /// Where callbacks run: Post()ed to this loop, or, when nullptr, on the adapter's I/O thread.
    core::Loop* loop = nullptr;
    std::chrono::milliseconds connect_timeout{2000};
    /// A call not answered within this time fails with kUpstreamTimeout (kUnavailable at once
    /// when Redis is known to be down and the offline queue is full).
    std::chrono::milliseconds command_timeout{1000};
    /// How long Add and Charge calls (settlements, token charges) may wait to be merged and
    /// sent with the next call; 0 = send each at once. See Counters::Add.
    std::chrono::milliseconds batch_interval{20};
    /// Scripts in flight at most; admissions issued meanwhile wait and go together in the next
    /// script (one round trip for many requests under load; none waits at low load).
    size_t max_in_flight = 2;
};

/// Counters of the adapter, readable from any thread.
struct RedisCountersStats {
    bool connected = false;
    uint64_t round_trips = 0;       // commands sent to Redis
    uint64_t local_decisions = 0;   // Acquire calls refused by the local pre-check
    uint64_t script_reloads = 0;    // NOSCRIPT answers (Redis restarted or flushed its scripts)
    uint64_t errors = 0;            // calls that ended with an error
    uint64_t deferred_ops = 0;      // Add and Charge calls (deferred, merged)
    uint64_t deferred_flushes = 0;  // scripts sent only for deferred changes (no call took them)
    uint64_t admissions = 0;        // Admit/Acquire/Reserve calls sent to Redis
    uint64_t scripts = 0;           // scripts sent (each carries up to 64 admissions)
};

/// The Redis Counters adapter (DESIGN §1): one pipelined connection; every decision is made by
/// one Lua script (EVALSHA; on NOSCRIPT the script text is sent once more), so it is atomic
/// across every instance and costs at most one round trip. Reads are one MGET.
///  - Add and Charge are deferred for about `batch_interval` (two at most), merged per counter,
///    and carried by the next script (or sent alone by a flusher thread when no script went).
///  - At most `max_in_flight` scripts are outstanding; Admit/Acquire/Reserve calls made
///    meanwhile queue and go together in the next script (up to 64 per script), each still
///    decided atomically on its own, in order. At low load nothing waits; under load a request
///    that is admitted, then settled and charged, costs a fraction of a round trip.
/// Rate limits use Redis server time (TIME inside the script), so instances need no clock
/// agreement.
///
/// Local pre-check: after Redis refused cost c on a limit for d ms, the adapter knows the
/// limit cannot fit cost >= c before d ms have passed (other instances can only take tokens, and
/// refill is at most the rate), so such requests are refused locally, without a round trip.
/// Admissions are never decided locally.
///
/// Keys: a call's keys may hash to different slots; the adapter targets one Redis server (or a
/// cluster only with hash-tagged keys, e.g. "{vk:12}:rpm").
class RedisCounters : public Counters {
public:
    virtual RedisCountersStats Stats() const = 0;
};

/// Creates the adapter and starts connecting (does not wait). Fails only on a bad URL.
core::Result<std::unique_ptr<RedisCounters>> MakeRedisCounters(RedisCountersOptions options);

}  // namespace conduit::bus
