#pragma once

#include "http_client/circuit_breaker.hpp"
#include "obs/metrics.hpp"
#include "webhooks/options.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace conduit::webhooks {

/// One http_client::CircuitBreaker per webhook host ("host:port"), shared by every loop behind a
/// mutex (a host's failures are seen by all loops). Publishes conduit_webhook_breaker_state{host}
/// (0 closed, 1 half-open, 2 open) with at most `max_host_labels` distinct hosts (later ones
/// report as "other"). Time is steady milliseconds, passed in. Thread-safe.
class HostBreakers {
public:
    HostBreakers(const WebhookOptions& options, obs::Registry& registry);

    /// Whether a delivery to `host` may be sent now.
    struct Admission {
        bool allowed = true;
        /// When refused: how long until the breaker lets a probe through (or, while a probe is
        /// in flight, until it should have finished).
        int64_t wait_ms = 0;
    };
    /// Asks the host's breaker. An allowed call in half-open state is the probe: its result must
    /// be reported with Report().
    Admission Acquire(std::string_view host, int64_t now_ms);
    /// Reports the result of an allowed call: `failure` = network error, 408, 429 or 5xx.
    void Report(std::string_view host, bool failure, int64_t now_ms);
    /// The host's breaker state (closed for an unknown host).
    http_client::CircuitBreaker::State StateOf(std::string_view host, int64_t now_ms) const;
    /// Breakers kept.
    size_t Size() const;

private:
    struct Entry {
        Entry(int threshold, int64_t open_ms) : breaker(threshold, open_ms) {}
        http_client::CircuitBreaker breaker;
        int64_t opened_at_ms = 0;
        obs::Gauge* gauge = nullptr;
    };
    Entry& FindLocked(std::string_view host);
    void PublishLocked(Entry& e, int64_t now_ms);

    int threshold_;
    int64_t open_ms_;
    int64_t probe_wait_ms_;
    size_t max_labels_;
    size_t max_breakers_;
    obs::GaugeFamily& state_family_;

    mutable std::mutex mu_;  // guards entries_, labels_
    std::unordered_map<std::string, std::unique_ptr<Entry>> entries_;
    std::unordered_set<std::string> labels_;
};

}  // namespace conduit::webhooks
