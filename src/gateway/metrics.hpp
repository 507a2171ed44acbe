#pragma once

#include "obs/metrics.hpp"

#include <array>
#include <cstdint>
#include <string_view>

namespace conduit::gateway {

/// The gateway's metric families, registered once in a registry (Prometheus names per
/// reference/conduit-original.md §9 where they exist).
struct GatewayMetrics {
    explicit GatewayMetrics(obs::Registry& registry);

    obs::HistogramFamily& upstream_duration;  // conduit_upstream_request_duration_seconds{provider}
    obs::Histogram& overhead;                 // conduit_gateway_overhead_seconds
    obs::CounterFamily& upstream_failures;    // conduit_upstream_failures_total{provider,kind}
    obs::CounterFamily& tokens;               // conduit_usage_tracking_tokens_total{kind}
    obs::Counter& spend_micros;               // conduit_spend_micros_total
    obs::CounterFamily& model_requests;       // conduit_model_requests_total{model,status}
    obs::Counter& streams_aborted;            // conduit_streams_client_aborted_total
    obs::CounterFamily& usage_requests;       // conduit_usage_tracking_requests_total{type}
    obs::CounterFamily& usage_failures;       // conduit_usage_tracking_failures_total{type}
    obs::CounterFamily& key_requests;         // conduit_virtualkey_requests_total{virtual_key}
    obs::CounterFamily& key_spend_micros;     // conduit_virtualkey_spend_micros_total{virtual_key}
    /// The request types of the proxy, in OpenAIProxy::Kind order, and their usage series
    /// resolved once (a family lookup takes a lock).
    static constexpr std::array<std::string_view, 4> kRequestTypes = {"chat", "completion",
                                                                      "embedding", "image"};
    std::array<obs::Counter*, 4> usage_requests_by_type{};
    std::array<obs::Counter*, 4> usage_failures_by_type{};
    /// Process-unique id of this object (per-thread memos of its series key on it: addresses
    /// repeat).
    const uint64_t uid;
};

}  // namespace conduit::gateway
