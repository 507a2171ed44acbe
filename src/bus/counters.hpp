#pragma once

#include "core/clock.hpp"
#include "core/error.hpp"

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conduit::bus {

/// One rate limit: a bucket of `limit` tokens refilled evenly over `window_ms` (the generic cell
/// rate algorithm, GCRA). A full bucket admits `limit` requests at once, then one every
/// `window_ms / limit`. Chosen over fixed windows, which admit up to 2 × limit around a window
/// boundary, and over sliding logs, which cost one entry per request.
struct RateLimit {
    std::string key;        // e.g. "rl:vk:12:rpm" (the adapter adds its own prefix)
    int64_t limit = 0;      // tokens per window, > 0
    int64_t window_ms = 0;  // > 0
    int64_t cost = 1;       // tokens this request takes, >= 0 (0 = only look)
};

/// A limit's state after a decision.
struct RateLimitState {
    int64_t limit = 0;
    int64_t remaining = 0;  // whole tokens left
    int64_t reset_ms = 0;   // until the bucket is full again
};

/// The answer to Acquire/Charge.
struct RateDecision {
    bool admitted = false;
    int denied_index = -1;  // the first limit that refused (when !admitted)
    /// When !admitted: how long until the refused limit has room for the cost; -1 when it never
    /// will (cost > limit).
    int64_t retry_after_ms = 0;
    std::vector<RateLimitState> states;  // one per limit, in request order
    bool local = false;  // decided by the adapter's local pre-check, without the engine
};

/// Add `amount` to counter `key` if the result stays within [floor, cap]. A positive amount
/// against a cap reserves from a "used" counter (e.g. a budget); a negative amount against a
/// floor of 0 takes from an "available" counter (e.g. a prepaid balance).
struct Reservation {
    std::string key;
    int64_t amount = 0;
    int64_t cap = std::numeric_limits<int64_t>::max();
    int64_t floor = std::numeric_limits<int64_t>::min();
    /// The counter's value when it does not exist yet (it is created with it, in the same
    /// atomic step); without it a missing counter is 0.
    std::optional<int64_t> init;
};

/// The answer to Reserve.
struct ReserveDecision {
    bool admitted = false;
    int denied_index = -1;        // the first reservation that did not fit (when !admitted)
    std::vector<int64_t> values;  // each counter's value afterwards, in request order
};

/// An unconditional change of counter `key` by `amount` (settling or releasing a reservation).
struct Delta {
    std::string key;
    int64_t amount = 0;
    /// The counter's value when it does not exist yet (created with it, then `amount` added, in
    /// the same atomic step); without it a missing counter is 0.
    std::optional<int64_t> init;
};

/// The answer to Admit: the rate decision, then (when the limits admitted) the reservations'.
struct AdmitDecision {
    bool admitted = false;    // both admitted; nothing was taken otherwise
    RateDecision rate;        // admitted with empty states when no limit was given
    ReserveDecision reserve;  // admitted with no values when no reservation was given; not
                              // evaluated (admitted = false, no values) when the rate refused
};

/// Shared counters (DESIGN §1): rate limits, budget reservations, pending spend — exact across
/// every instance using the same engine. Adapters: in-process, and Redis (atomic Lua scripts,
/// Redis server time, one round trip per call, a local pre-check that answers without Redis
/// when a refusal is certain).
///
/// Every call is asynchronous: `done` runs exactly once, possibly before the call returns
/// (in-process adapter) or on the adapter's callback loop / I/O thread (Redis). Any thread.
/// Errors: kInvalidRequest for bad arguments (empty key, limit or window <= 0, negative cost or
/// amount); kUnavailable / kUpstreamTimeout when the engine cannot answer — the caller applies
/// its fail-open / fail-closed policy.
class Counters {
public:
    using RateCallback = std::function<void(core::Result<RateDecision>)>;
    using ReserveCallback = std::function<void(core::Result<ReserveDecision>)>;
    using ValuesCallback = std::function<void(core::Result<std::vector<int64_t>>)>;
    using AdmitCallback = std::function<void(core::Result<AdmitDecision>)>;

    virtual ~Counters() = default;

    /// All or nothing: takes `cost` tokens from every limit if each has room, else takes none.
    virtual void Acquire(std::vector<RateLimit> limits, RateCallback done) = 0;
    /// Takes `cost` tokens from every limit even beyond empty (a debt that delays later
    /// requests): for usage known only afterwards, such as tokens per minute. Always admitted.
    /// Deferrable (see Add).
    virtual void Charge(std::vector<RateLimit> limits, RateCallback done) = 0;
    /// Acquire(limits) and Reserve(reservations, ttl_ms) as ONE atomic step, all or nothing:
    /// the reservations are only made when the limits admit, and the limits' tokens are only
    /// taken when the reservations fit. Either list may be empty (not both). One round trip.
    virtual void Admit(std::vector<RateLimit> limits,
                       std::vector<Reservation> reservations,
                       int64_t ttl_ms,
                       AdmitCallback done) = 0;
    /// All or nothing: adds every `amount` if each counter stays within its bounds, else adds
    /// none. Keys must be distinct within one call.
    /// `ttl_ms` > 0 (re)sets the counters' expiry, bounding what a crashed holder leaks.
    virtual void Reserve(std::vector<Reservation> reservations,
                         int64_t ttl_ms,
                         ReserveCallback done) = 0;
    /// Adds each delta unconditionally (settle, release); returns the new values. Keys must be
    /// distinct within one call.
    ///
    /// Deferrable: an adapter may hold Add and Charge calls for a short while (the Redis adapter:
    /// its batch interval) and apply them merged with others, or together with its next call —
    /// so a request costs one round trip, not three. Guarantees: they are applied before any
    /// later call of the same adapter instance (so its own later calls see them), within the
    /// batch interval for other instances, and `done` runs once they are applied (with the
    /// merged values, which include other deferred changes of the same counters).
    virtual void Add(std::vector<Delta> deltas, int64_t ttl_ms, ValuesCallback done) = 0;
    /// Current values (0 for a missing counter).
    virtual void Get(std::vector<std::string> keys, ValuesCallback done) = 0;

    /// "inprocess" or "redis".
    virtual std::string_view Engine() const = 0;
};

/// Checks the arguments every adapter rejects with kInvalidRequest.
core::Result<void> ValidateLimits(const std::vector<RateLimit>& limits);
core::Result<void> ValidateReservations(const std::vector<Reservation>& reservations);
core::Result<void> ValidateDeltas(const std::vector<Delta>& deltas);

/// The GCRA step shared by the adapters (the Redis script computes the same): with the bucket's
/// theoretical arrival time `tat_us` (0 = never used) at `now_us`, takes `cost` tokens when they
/// fit (or always, when `force`). Returns whether it fit, the new TAT (unchanged when it did not
/// fit and !force), and the state. Pure.
struct GcraStep {
    bool fits = false;
    int64_t new_tat_us = 0;
    int64_t retry_after_us = 0;  // when !fits: until the cost fits; -1 = never
    RateLimitState state;
};
GcraStep Gcra(const RateLimit& limit, int64_t tat_us, int64_t now_us, bool force);

/// The in-process adapter: one mutex, expired entries swept as the table grows. `clock`'s
/// steady time drives the buckets; it must outlive the adapter.
std::unique_ptr<Counters> MakeInProcessCounters(
    const core::Clock& clock = core::SystemClock::Instance());

}  // namespace conduit::bus
