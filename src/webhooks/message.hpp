#pragma once

#include "core/error.hpp"
#include "store/store.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conduit::webhooks {

/// Caller-supplied extra request headers (`webhook_headers`), in order.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

/// One webhook to deliver: one event for one URL (built by the task engine).
struct WebhookEvent {
    /// The `webhook-id` (stable across retries and redeliveries); "msg_<uuidv7>" when empty.
    std::string delivery_id;
    /// task.completed | task.failed | task.cancelled | task.progress
    std::string event_type;
    std::string task_id;
    int64_t virtual_key_id = 0;
    std::string url;
    /// The caller's `webhook_headers`.
    HeaderList headers;
    /// The JSON body, exactly as it will be sent and signed (specs/api.md §6).
    std::string payload;
    /// When the event happened (Unix seconds); 0 = now. Recorded as the delivery's createdAt.
    /// The `webhook-timestamp` header is the time of each attempt (Standard Webhooks: "every time
    /// an attempt is retried the timestamp of the attempt is updated"), so retries and operator
    /// redeliveries hours later still pass the receivers' replay-tolerance check.
    int64_t timestamp_s = 0;
};

/// The queue message of one delivery (the body of a "webhooks" topic message). Internal to the
/// component; exposed for tests.
struct QueuedDelivery {
    std::string id;
    std::string event_type;
    std::string task_id;
    int64_t virtual_key_id = 0;
    std::string url;
    HeaderList headers;
    std::string payload;
    int64_t created_at_ms = 0;    // the event's time
    int64_t published_at_ms = 0;  // when this incarnation was published
    /// Attempts spent before this message was (re)published by the worker (breaker deferrals
    /// republish instead of retrying, so that they do not spend attempts).
    int prior_attempts = 0;
    /// Times the delivery was postponed by an open circuit breaker.
    int deferrals = 0;
    /// Published by an operator's redelivery: only a delivery after `published_at_ms` counts as
    /// a duplicate.
    bool redelivery = false;
};

/// Compact JSON text of `m`. Pure.
std::string EncodeDelivery(const QueuedDelivery& m);
/// Parses EncodeDelivery() output. kInvalidRequest when malformed. Pure.
core::Result<QueuedDelivery> DecodeDelivery(std::string_view body);

/// Caller headers as stored in WebhookDelivery::headers_json: `[["name","value"],...]`.
std::string EncodeHeaders(const HeaderList& headers);
/// Parses EncodeHeaders() output (also accepts a `{"name":"value"}` object); malformed → empty.
HeaderList DecodeHeaders(std::string_view json);

/// The "msg_<uuidv7>" webhook id used when the caller gives none. Thread-safe.
std::string NewDeliveryId();

/// The status row of `m` (status, attempts and outcome fields left for the caller).
store::WebhookDelivery RowFor(const QueuedDelivery& m);

/// Delivery statuses, as stored and returned by the admin API.
inline constexpr std::string_view kStatusPending = "pending";
inline constexpr std::string_view kStatusDelivered = "delivered";
inline constexpr std::string_view kStatusFailed = "failed";  // retrying
inline constexpr std::string_view kStatusDead = "dead";

}  // namespace conduit::webhooks
