#pragma once

#include "bus/work_queue.hpp"
#include "core/clock.hpp"
#include "core/loop.hpp"
#include "http_client/client.hpp"
#include "obs/metrics.hpp"
#include "store/executor.hpp"
#include "store/store.hpp"
#include "webhooks/host_breakers.hpp"
#include "webhooks/options.hpp"
#include "webhooks/recorder.hpp"
#include "webhooks/secrets.hpp"

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace conduit::webhooks {

/// What the delivery worker is built from. Every referenced object must outlive the worker and
/// every delivery in flight (stop the queue and the loops first).
struct WorkerDeps {
    /// The worker consumes options.topic from it, and republishes deliveries postponed by an
    /// open circuit breaker.
    bus::WorkQueue& queue;
    /// The runtime's loops (net::Runtime::loop(i)), index i at position i. A delivery is handled
    /// on the loop whose thread calls the consumer; when the queue calls it from a thread of its
    /// own, on loops[partition % loops.size()] (posted there).
    std::vector<core::Loop*> loops;
    /// The webhook HTTP client of loop `i` (a dedicated client per loop, created with
    /// WebhookPoolOptions()). Called on loop i's thread only.
    std::function<http_client::Client&(size_t loop_index)> client_for;
    SecretService& secrets;
    DeliveryRecorder& recorder;
    /// Read (on `executor`) only to de-duplicate redelivered messages.
    store::Store& store;
    store::Executor& executor;
    const core::Clock& clock;
    /// Metrics registry (null = obs::Registry::Global()).
    obs::Registry* registry = nullptr;
    /// Uniform [0, 1) source for backoff jitter (null = CSPRNG). Any thread.
    std::function<double()> random01;
};

/// Consumes the webhooks topic and delivers each message as a Standard Webhooks POST:
///
/// - headers `content-type: application/json`, `webhook-id` (stable across attempts),
///   `webhook-timestamp` (the time of the attempt), `webhook-signature` (`v1,…` per active
///   secret of the virtual key — both during a rotation; absent when the key has no secret),
///   `user-agent`, then the caller's headers, except those that would override the above or the
///   framing (webhook-*, content-type, content-length, transfer-encoding, host, connection,
///   user-agent, ...) or that hold CR/LF;
/// - de-duplication: a message whose webhook-id is known as delivered (bounded in-memory set;
///   on a queue redelivery, attempt > 1, also the recorder and the store) is Acked unsent. An
///   operator redelivery only counts deliveries made after it was requested;
/// - per-host circuit breaker (HostBreakers): while open, the delivery is republished with the
///   remaining open time as delay and Acked — it does not spend an attempt; after
///   options.max_breaker_deferrals postponements it is dead;
/// - outcome: 2xx → delivered, Ack. Network error / timeout / 408 / 429 / 5xx → failed and
///   Retry with exponential backoff + jitter (Retry-After of a 429/503 honoured, capped), or on
///   the last attempt (1 + max_retries) dead + DeadLetter. Any other status (3xx, 4xx) → dead +
///   DeadLetter at once. Every transition is recorded through the DeliveryRecorder.
///
/// Metrics: conduit_webhook_requests_total{outcome}, conduit_webhook_duration_seconds,
/// conduit_webhook_active_requests, conduit_webhook_breaker_state{host}.
///
/// Threading: Handle() may be called from any thread; all work for a delivery runs on one loop.
class DeliveryWorker {
public:
    DeliveryWorker(WorkerDeps deps, const WebhookOptions& options);
    ~DeliveryWorker();
    DeliveryWorker(const DeliveryWorker&) = delete;
    DeliveryWorker& operator=(const DeliveryWorker&) = delete;

    /// Registers Handle() as the consumer of options.topic. Call before WorkQueue::Start().
    void Register();
    /// The consumer: handles one delivery and settles it exactly once. Any thread.
    void Handle(bus::Delivery delivery, bus::SettlementPtr settlement);

    /// The per-host breakers (for tests and diagnostics). Thread-safe.
    const HostBreakers& breakers() const;
    /// Deliveries being handled (received, not yet settled). Thread-safe.
    size_t InFlight() const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

/// The `host:port` a delivery URL's breaker is keyed by (lowercase host; default port filled
/// in). Empty when `url` is not an absolute http(s) URL. Pure.
std::string BreakerHost(std::string_view url);

/// True if a caller-supplied header may be sent with a delivery (see DeliveryWorker). Pure.
bool IsAllowedCallerHeader(std::string_view name, std::string_view value);

}  // namespace conduit::webhooks
