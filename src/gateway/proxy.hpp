#pragma once

#include "core/clock.hpp"
#include "gateway/balance_book.hpp"
#include "gateway/config_state.hpp"
#include "gateway/metrics.hpp"
#include "gateway/routing.hpp"
#include "gateway/spend_recorder.hpp"
#include "http_client/client.hpp"
#include "net/exchange.hpp"

#include <chrono>
#include <functional>

namespace conduit::gateway {

class BudgetGate;

/// Everything the OpenAI-compatible handlers need, injected by the composition root.
struct ProxyDeps {
    ConfigState& config;
    BalanceBook& book;
    SpendRecorder& spend;
    /// The upstream client of a loop (one per shard).
    std::function<http_client::Client&(size_t loop_index)> client;
    http_client::Timeouts timeouts;
    GatewayMetrics& metrics;
    const core::Clock& clock;
    /// Largest non-streamed upstream response kept in memory before failing with 502.
    size_t max_upstream_body_bytes = 64 << 20;
    /// Unwritten bytes towards a client above which the upstream is paused (backpressure).
    size_t stream_high_water_bytes = 256 << 10;
    /// Circuit breakers and latency of the deployments (null: the proxy keeps its own).
    DeploymentHealth* health = nullptr;
    /// Balance reservations (null: only the local "balance > 0" check).
    BudgetGate* budget = nullptr;
    /// A provider key was answered with 401/403 (the caller disables and reports it). Runs on
    /// the exchange's loop; must not block.
    std::function<void(domain::Id provider_key_id, int status)> on_key_rejected;
    /// A billed request's total tokens (usage, or the estimate), right before it is recorded
    /// (the rate gate's tokens-per-minute charge). Runs on the exchange's loop; must not block.
    std::function<void(const domain::VirtualKey& key, int64_t tokens)> on_usage;
};

/// The OpenAI-compatible routes of specs/api.md §3. Handlers translate HTTP into calls on the
/// snapshot, the balance book and the upstream client, and back. They run on the exchange's
/// loop thread and never block.
class OpenAIProxy {
public:
    explicit OpenAIProxy(ProxyDeps deps);

    void ChatCompletions(const net::ExchangePtr& ex);
    void Completions(const net::ExchangePtr& ex);
    void Embeddings(const net::ExchangePtr& ex);
    void ImageGenerations(const net::ExchangePtr& ex);
    void ListModels(const net::ExchangePtr& ex);
    void GetModel(const net::ExchangePtr& ex);

    /// The virtual key presented with a request: `Authorization: Bearer` or `X-API-Key`.
    static std::string_view PresentedKey(const net::Request& req);

    enum class Kind { kChat, kCompletion, kEmbedding, kImage };

private:
    void Proxy(const net::ExchangePtr& ex, Kind kind);
    ProxyDeps deps_;
    std::unique_ptr<obs::Registry> own_registry_;   // when deps.health is null
    std::unique_ptr<DeploymentHealth> own_health_;  // when deps.health is null
};

}  // namespace conduit::gateway
