#pragma once

#include "core/error.hpp"
#include "domain/routing.hpp"
#include "domain/snapshot.hpp"
#include "obs/metrics.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace conduit::gateway {

/// The setting row holding the router configuration (JSON as RouterConfigToJson writes it).
inline constexpr std::string_view kRouterSetting = "router.config";

/// Parses the admin API's router configuration (camelCase):
/// `{"defaultStrategy":"simple","strategies":{"gpt-4":"leastlatency"},"fallbacksEnabled":true,
///   "fallbacks":{"gpt-4":["gpt-4o-mini"]},"maxRetries":2,"retryBaseDelayMs":100,
///   "retryMaxDelayMs":2000}` — every field optional (defaults otherwise). kInvalidRequest with
/// the offending field as param for unknown strategies, negative numbers, wrong types.
core::Result<domain::RouterConfig> ParseRouterConfig(std::string_view json);
std::string RouterConfigToJson(const domain::RouterConfig& config);

/// Runtime health of the provider deployments on this instance: a circuit breaker and a
/// latency average (EWMA) per deployment (mapping id), and the per-alias round-robin tickets.
/// Breaker state is per instance (each instance judges the providers it talks to). Exposed as
/// conduit_circuit_breaker_state{provider,deployment} (0 closed, 1 open, 2 half-open) and
/// conduit_circuit_breaker_trips_total{provider}. Thread-safe.
class DeploymentHealth {
public:
    using State = domain::WindowBreaker::State;
    /// A breaker changed state.
    struct Change {
        domain::Id mapping_id = 0;
        domain::Id provider_id = 0;
        std::string provider_name;
        std::string alias;
        State from = State::kClosed;
        State to = State::kClosed;
    };
    using OnChange = std::function<void(const Change&)>;

    struct Status {
        domain::Id mapping_id = 0;
        domain::Id provider_id = 0;
        std::string provider_name;
        std::string alias;
        State state = State::kClosed;
        int64_t trips = 0;
        double latency_ms = -1;
        int64_t window_failures = 0;
        int64_t window_requests = 0;
    };

    DeploymentHealth(domain::BreakerOptions options, obs::Registry& metrics);

    /// Called (on the thread that recorded the outcome) whenever a breaker changes state.
    /// Start-up only.
    void SetOnChange(OnChange fn) { on_change_ = std::move(fn); }

    /// What routing needs to know about `d` now (does not take a probe).
    domain::DeploymentView View(const domain::Deployment& d, int64_t now_ms);
    /// Permission to send one request to `d` (a probe slot when half-open).
    bool TryAcquire(const domain::Deployment& d, int64_t now_ms);
    /// The outcome of a request TryAcquire admitted; `latency_ms` < 0 when unknown.
    void Record(const domain::Deployment& d, bool success, double latency_ms, int64_t now_ms);
    /// A request TryAcquire admitted ended without an outcome (cancelled).
    void Release(const domain::Deployment& d);
    /// Next round-robin ticket of `alias`.
    uint64_t NextTicket(std::string_view alias);

    std::vector<Status> Statuses(int64_t now_ms);
    /// Deployments whose breaker is open or half-open now.
    size_t UnhealthyCount(int64_t now_ms);

private:
    struct Entry {
        std::mutex mu;
        domain::WindowBreaker breaker;
        double latency_ms = -1;
        domain::Id provider_id = 0;
        std::string provider_name;
        std::string alias;
        obs::Gauge* state_gauge = nullptr;
        explicit Entry(domain::BreakerOptions o) : breaker(o) {}
    };
    Entry& EntryFor(const domain::Deployment& d);
    void Changed(Entry& e, domain::Id mapping_id, State from, State to);

    domain::BreakerOptions options_;
    obs::GaugeFamily& state_;
    obs::CounterFamily& trips_;
    OnChange on_change_;

    std::shared_mutex mu_;  // guards the maps' structure
    std::unordered_map<domain::Id, std::unique_ptr<Entry>> entries_;
    std::unordered_map<std::string, std::unique_ptr<std::atomic<uint64_t>>> tickets_;
};

/// The ordered deployments to try for one request of `key` for `alias`: the alias's
/// deployments by its strategy, then (when enabled) each fallback alias the key may use, by its
/// own strategy; deployments with an open breaker are left out, and none appears twice.
std::vector<const domain::Deployment*> PlanRoute(const domain::Snapshot& snapshot,
                                                 const domain::KeyEntry& key,
                                                 std::string_view alias,
                                                 DeploymentHealth& health,
                                                 int64_t now_ms);

/// Steady milliseconds for the breakers.
int64_t SteadyNowMs();

}  // namespace conduit::gateway
