#pragma once

#include "core/clock.hpp"
#include "net/router.hpp"
#include "store/executor.hpp"
#include "store/store.hpp"
#include "webhooks/publisher.hpp"
#include "webhooks/recorder.hpp"
#include "webhooks/secrets.hpp"

#include <functional>
#include <memory>
#include <string>

namespace conduit::webhooks {

/// What the webhook admin routes need. The referenced objects must outlive every registered
/// route and every request in flight.
struct WebhookAdminDeps {
    store::Store& store;
    /// Runs every store call; handlers never touch the store on a loop thread.
    store::Executor& executor;
    SecretService& secrets;
    WebhookPublisher& publisher;
    /// Rows not yet written are overlaid on what the store returns (newest state first).
    DeliveryRecorder& recorder;
    const core::Clock& clock;
    /// The operator's master key (admin::HasMasterKey). Empty = every request is refused.
    std::string master_key;
    /// After a secret was created or rotated (this instance's cache is already refreshed): tells
    /// the other instances to drop their cached copy. Store executor thread; may be empty.
    std::function<void(int64_t virtual_key_id)> on_secret_rotated;
};

/// Registers (master key required, 401 otherwise):
///
/// - `POST /api/VirtualKeys/{id}/webhook-secret` — creates or rotates the key's signing secret.
///   Optional body `{"gracePeriodSeconds": n}` (0..2592000; default options.secret_grace): how
///   long the previous secret keeps signing. `200 {"secret":"whsec_…","rotatedAt":"ISO",
///   "previousValidUntil":"ISO"|null}` — the only time the secret is shown; 404 unknown key.
/// - `GET /api/webhooks/deliveries?status=&virtualKeyId=&taskId=&limit=&offset=` —
///   `{"data":[delivery…],"limit","offset"}`, newest first (limit 1..1000, default 100).
///   A delivery is `{id, taskId, virtualKeyId, eventType, url, status, attempts,
///   lastStatusCode, lastError, createdAt, updatedAt, deliveredAt, headerNames}` — the caller's
///   header values are never returned (they may hold secrets).
/// - `GET /api/webhooks/deliveries/{id}` — the delivery plus `payload` (embedded JSON).
/// - `POST /api/webhooks/deliveries/{id}/redeliver` — re-enqueues it (same webhook-id, fresh
///   attempts, status pending): `202` with the delivery; 404 unknown.
///
/// Handlers run on the exchange's loop thread and do store work on `deps->executor`.
/// Call once at start-up, before the router is shared.
void RegisterWebhookAdminRoutes(net::Router& router, std::shared_ptr<WebhookAdminDeps> deps);

}  // namespace conduit::webhooks
