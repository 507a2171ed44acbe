#pragma once

#include "bus/work_queue.hpp"
#include "http_client/client.hpp"

#include <chrono>
#include <cstddef>
#include <string>

namespace conduit::webhooks {

/// Every tunable of webhook delivery (specs/api.md §6 defaults). Filled by the composition root
/// from the configuration; each component reads only the fields it needs.
struct WebhookOptions {
    /// Queue topic carrying deliveries.
    std::string topic = "webhooks";

    // --- Delivery attempts -----------------------------------------------------------------
    /// Retries after the first attempt (network errors, 408, 429, 5xx). Attempts = 1 + this.
    int max_retries = 3;
    /// Backoff before retry k (k = 1, 2, ...) is about retry_base·2^(k-1) (2 s, 4 s, 8 s),
    /// jittered over [50 %, 100 %], capped at retry_max.
    std::chrono::milliseconds retry_base{2000};
    std::chrono::milliseconds retry_max{std::chrono::minutes(5)};
    /// A `Retry-After` (429, 503) replaces the backoff, capped at this.
    std::chrono::milliseconds retry_after_max{std::chrono::minutes(5)};
    /// Whole-request timeout (connect → complete response).
    std::chrono::milliseconds request_timeout{10000};
    /// Connect timeout (never longer than request_timeout).
    std::chrono::milliseconds connect_timeout{5000};
    /// Response body bytes kept for `lastError` of a failed attempt.
    size_t max_error_body_bytes = 256;
    /// `User-Agent` of every delivery.
    std::string user_agent = "Conduit/0.1.0";

    // --- Per-host circuit breaker ----------------------------------------------------------
    /// Consecutive failures (network, 408, 429, 5xx) that open a host's breaker.
    int breaker_failures = 5;
    /// How long an open breaker refuses deliveries before one probe is let through.
    std::chrono::milliseconds breaker_open{std::chrono::minutes(1)};
    /// Deliveries postponed by an open breaker do not spend attempts; after this many
    /// postponements one is dead ("circuit breaker open").
    int max_breaker_deferrals = 60;
    /// Distinct host label values of conduit_webhook_breaker_state; later hosts share "other".
    size_t max_host_labels = 1000;
    /// Breakers kept in memory; beyond it, healthy (closed, no failures) ones are forgotten.
    size_t max_breakers = 10000;

    // --- De-duplication --------------------------------------------------------------------
    /// Recently delivered webhook ids remembered in memory (per process).
    size_t dedup_capacity = 10000;

    // --- Publishing and recording ----------------------------------------------------------
    /// Messages per WorkQueue::Publish call.
    size_t publish_batch = 100;
    /// Delivery status rows are written in one transaction at most this often...
    std::chrono::milliseconds record_interval{200};
    /// ...or as soon as this many rows are pending.
    size_t record_max_pending = 500;
    /// A failed batch write is tried again this many times before its rows are dropped (logged).
    int record_max_write_tries = 3;

    // --- Signing secrets -------------------------------------------------------------------
    /// How long the previous secret keeps signing after a rotation.
    std::chrono::milliseconds secret_grace{std::chrono::hours(24)};
    /// How long a key's secrets are cached (rotations on this instance invalidate at once;
    /// rotations on another instance are seen after at most this long).
    std::chrono::milliseconds secret_cache_ttl{std::chrono::minutes(1)};
    /// Keys whose secrets are cached.
    size_t secret_cache_capacity = 100000;
};

/// The queue options the webhooks topic needs: `base` with max_attempts = 1 + max_retries (the
/// worker dead-letters itself on the last attempt; this is the queue's safety net).
bus::QueueOptions WebhookQueueOptions(const WebhookOptions& options, bus::QueueOptions base = {});

/// Connection-pool limits for the dedicated webhook clients (one per loop; specs/api.md §6: at
/// most 50 connections per host). The spec's 5-minute connection lifetime and 2-minute idle
/// timeout are not expressible in http_client::PoolOptions yet; the clients' own idle handling
/// applies until they are.
http_client::PoolOptions WebhookPoolOptions();

}  // namespace conduit::webhooks
