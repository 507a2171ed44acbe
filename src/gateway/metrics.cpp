#include "gateway/metrics.hpp"

#include <atomic>

namespace conduit::gateway {

GatewayMetrics::GatewayMetrics(obs::Registry& r)
    : upstream_duration(r.Histogram("conduit_upstream_request_duration_seconds",
                                    "Time from sending a request upstream to its last byte.",
                                    {"provider"})),
      overhead(r.Histogram("conduit_gateway_overhead_seconds",
                           "Time spent in the gateway per proxied request, excluding the wait "
                           "for the upstream (to the last byte, or to the headers for streams).")),
      upstream_failures(r.Counter("conduit_upstream_failures_total",
                                  "Upstream calls that failed without a response, by kind.",
                                  {"provider", "kind"})),
      tokens(r.Counter("conduit_usage_tracking_tokens_total",
                       "Tokens billed, by kind (prompt or completion).",
                       {"kind"})),
      spend_micros(r.Counter("conduit_spend_micros_total",
                             "Spend recorded, in micro-units of the currency.")),
      model_requests(r.Counter("conduit_model_requests_total",
                               "Proxied requests by model alias and final status.",
                               {"model", "status"})),
      streams_aborted(r.Counter("conduit_streams_client_aborted_total",
                                "Streams whose client disconnected before the end.")),
      usage_requests(r.Counter("conduit_usage_tracking_requests_total",
                               "Proxied requests billed (their usage recorded), by request type.",
                               {"type"})),
      usage_failures(r.Counter("conduit_usage_tracking_failures_total",
                               "Proxied requests that failed (not billed), by request type.",
                               {"type"})),
      key_requests(r.Counter("conduit_virtualkey_requests_total",
                             "Proxied requests per virtual key (id).",
                             {"virtual_key"})),
      key_spend_micros(r.Counter("conduit_virtualkey_spend_micros_total",
                                 "Spend per virtual key (id), in micro-units of the currency.",
                                 {"virtual_key"})),
      uid([] {
          static std::atomic<uint64_t> next{1};
          return next.fetch_add(1, std::memory_order_relaxed);
      }()) {
    for (size_t i = 0; i < kRequestTypes.size(); ++i) {
        usage_requests_by_type[i] = &usage_requests.With({kRequestTypes[i]});
        usage_failures_by_type[i] = &usage_failures.With({kRequestTypes[i]});
    }
    // The original's dollar-denominated total, derived from the exact micro-unit counter.
    auto* micros = &spend_micros;
    r.AddCallbackCounter("conduit_usage_tracking_cost_dollars", "Spend recorded, in dollars.",
                         [micros] { return static_cast<double>(micros->Value()) / 1e6; });
}

}  // namespace conduit::gateway
