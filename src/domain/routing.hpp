#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::domain {

/// How the deployments (mappings) of one model alias are ordered for a request. The first
/// available deployment is tried first; the others follow in order on a retryable failure.
enum class RoutingStrategy {
    kSimple,        // configured order: mapping priority (highest first), then id
    kRoundRobin,    // every available deployment in turn
    kLeastCost,     // cheapest input + output price first (unknown price last)
    kLeastLatency,  // lowest recent latency (EWMA) first; deployments without samples first
    kPriority,      // highest priority tier first, spread in turn within a tier
};

/// "simple", "roundrobin", "leastcost", "leastlatency", "priority" (case-insensitive; also the
/// original's aliases "random" and "leastused" → roundrobin, "passthrough" → simple).
std::optional<RoutingStrategy> ParseRoutingStrategy(std::string_view text);
std::string_view ToString(RoutingStrategy strategy);

/// The router settings (admin API `/api/Router/config`). Aliases are stored lowercased.
struct RouterConfig {
    RoutingStrategy default_strategy = RoutingStrategy::kSimple;
    std::map<std::string, RoutingStrategy> strategies;          // per alias
    std::map<std::string, std::vector<std::string>> fallbacks;  // alias → ordered aliases
    bool fallbacks_enabled = true;
    /// Attempts after the first one, across deployments, keys and fallbacks.
    int max_retries = 2;
    /// Backoff before retrying the same deployment: base × 2^(n−1), capped.
    int64_t retry_base_delay_ms = 100;
    int64_t retry_max_delay_ms = 2000;

    RoutingStrategy StrategyFor(std::string_view alias) const;
    /// Fallback aliases of `alias` (empty when none or disabled).
    const std::vector<std::string>& FallbacksFor(std::string_view alias) const;
};

/// What routing knows of one deployment when a request arrives.
struct DeploymentView {
    int priority = 0;
    int64_t price = -1;      // input + output price per million tokens; −1 = unknown
    double latency_ms = -1;  // recent latency (EWMA); < 0 = no sample yet
    bool available = true;   // false while its circuit breaker is open
};

/// Orders deployments (given in configured order) for one request; unavailable ones are left
/// out. `ticket` is a per-alias counter value (one per request) that spreads round-robin and
/// priority tiers. Pure.
std::vector<size_t> OrderDeployments(RoutingStrategy strategy,
                                     const std::vector<DeploymentView>& deployments,
                                     uint64_t ticket);

/// Settings of a WindowBreaker.
struct BreakerOptions {
    int64_t window_ms = 30'000;  // failures are counted over this sliding window
    int buckets = 10;            // window resolution
    int min_requests = 10;       // fewer requests in the window never open the breaker
    double failure_ratio = 0.5;  // open at or above this share of failures
    int64_t open_ms = 30'000;    // then reject this long before probing
    int half_open_probes = 1;    // concurrent probes while half-open
};

/// A circuit breaker on the failure ratio over a sliding window (DESIGN §2: one per provider
/// deployment): closed → (≥ min_requests and failure share ≥ ratio) → open → (open_ms) →
/// half-open, where up to `half_open_probes` requests go through: a success closes it (with a
/// fresh window), a failure opens it again. Not thread-safe; time is passed in (ms, any
/// monotonic origin).
class WindowBreaker {
public:
    enum class State { kClosed, kOpen, kHalfOpen };

    explicit WindowBreaker(BreakerOptions options = {});

    /// Whether a request could go through now (does not take a probe).
    bool Available(int64_t now_ms) const;
    /// Takes permission for one request: always when closed; a probe slot when half-open;
    /// never when open.
    bool TryAcquire(int64_t now_ms);
    /// Records the outcome of a request that TryAcquire admitted. Returns true when the state
    /// changed (see state()).
    bool Record(bool success, int64_t now_ms);
    /// Releases a permission without an outcome (the request was cancelled).
    void Release();
    State state(int64_t now_ms) const;
    /// Times the breaker opened.
    int64_t trips() const { return trips_; }
    /// Failures and requests in the current window (for metrics and tests).
    std::pair<int64_t, int64_t> WindowCounts(int64_t now_ms) const;

private:
    struct Bucket {
        int64_t start_ms = -1;
        int64_t requests = 0;
        int64_t failures = 0;
    };
    void Roll(int64_t now_ms);
    void ResetWindow();

    BreakerOptions o_;
    std::vector<Bucket> buckets_;
    State state_ = State::kClosed;
    int64_t opened_at_ms_ = 0;
    int probes_in_flight_ = 0;
    int64_t trips_ = 0;
};

std::string_view ToString(WindowBreaker::State state);

}  // namespace conduit::domain
