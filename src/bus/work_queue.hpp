#pragma once

#include "core/error.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::bus {

/// A message to enqueue.
struct OutgoingMessage {
    std::string topic;          // logical queue: "tasks", "webhooks", ...
    std::string partition_key;  // ordering key: messages with equal keys are processed in order
    std::string body;           // opaque bytes (JSON by convention)
    std::string message_id;     // optional; generated (UUIDv7) when empty
    std::chrono::milliseconds delay{0};  // not delivered before now + delay
};

/// A message handed to a consumer.
struct Delivery {
    std::string message_id;
    std::string topic;
    std::string partition_key;
    int partition = 0;
    std::string body;
    int attempt = 1;  // 1 on the first delivery; +1 on every redelivery (retry or crash)
    int64_t enqueued_at_ms = 0;
};

/// How a consumer settles one delivery. Exactly one of the three calls must be made, from any
/// thread; later calls are ignored. Until then the delivery counts against the concurrency limit
/// and blocks its partition (in-order processing).
class Settlement {
public:
    virtual ~Settlement() = default;
    /// Done: the message is removed.
    virtual void Ack() = 0;
    /// Not done: redeliver after `delay` with attempt + 1. When attempt has reached the topic's
    /// max_attempts the message is dead-lettered instead (with `reason`).
    virtual void Retry(std::chrono::milliseconds delay, std::string reason) = 0;
    /// Give up now: the message goes to the dead-letter store with `reason`.
    virtual void DeadLetter(std::string reason) = 0;
};
using SettlementPtr = std::shared_ptr<Settlement>;

/// Consumer callback. Runs on the event loop the queue assigns to the delivery's partition.
using ConsumerFn = std::function<void(Delivery delivery, SettlementPtr settlement)>;

/// Per-queue limits (config names in specs/api.md §8: CONDUITLLM__RABBITMQ__*).
struct QueueOptions {
    int partitions = 30;   // PARTITIONCOUNT
    int prefetch = 25;     // PREFETCHCOUNT: messages buffered ahead of consumers
    int concurrency = 50;  // CONCURRENTMESSAGELIMIT: unsettled deliveries per process
    int max_attempts = 5;  // deliveries before dead-lettering
    std::chrono::milliseconds lease{std::chrono::minutes(5)};  // redeliver if never settled
};

/// Counts for one topic (approximate for distributed adapters).
struct TopicStats {
    int64_t ready = 0;      // deliverable now
    int64_t delayed = 0;    // waiting for their delay
    int64_t in_flight = 0;  // delivered, not settled
    int64_t dead = 0;       // dead-lettered
    /// Partitions this process consumes (-1: all of them, the adapter is not shared).
    int64_t partitions_owned = -1;
    /// Processes sharing the topic's partitions (alive members; 1 when not shared).
    int64_t members = 1;
};

/// A dead-lettered message.
struct DeadMessage {
    std::string message_id;
    std::string topic;
    std::string partition_key;
    std::string body;
    int attempts = 0;
    std::string reason;
    int64_t dead_at_ms = 0;
};

/// The durable partitioned work queue port (DESIGN §1). Adapters: embedded (SQLite in the data
/// directory, in process) and RabbitMQ. One contract suite runs against both.
///
/// Guarantees: at-least-once delivery (a consumer may see a message again after a crash or a
/// lease expiry, with a higher attempt number); within a partition, messages are delivered in
/// publish order and one at a time; across partitions in parallel, up to the concurrency limit.
class WorkQueue {
public:
    virtual ~WorkQueue() = default;

    /// Durably enqueues `messages`, all or nothing. `done` runs once they are persisted (SQLite
    /// commit, or RabbitMQ publisher confirms), on an arbitrary thread.
    virtual void Publish(std::vector<OutgoingMessage> messages,
                         std::function<void(core::Result<void>)> done) = 0;
    /// Registers the consumer of `topic`. Call before Start(); one consumer per topic.
    virtual void Consume(std::string topic, ConsumerFn fn) = 0;
    /// Starts delivering to the registered consumers.
    virtual core::Result<void> Start() = 0;
    /// Stops delivering new messages; unsettled ones are redelivered later (they are not lost).
    /// Blocks until the adapter's threads have stopped.
    virtual void Stop() = 0;

    virtual core::Result<TopicStats> Stats(std::string_view topic) = 0;
    /// Newest dead letters first.
    virtual core::Result<std::vector<DeadMessage>> ListDead(std::string_view topic, int limit) = 0;
    /// Moves a dead letter back to its queue (attempt counter reset). false if unknown.
    virtual core::Result<bool> Requeue(std::string_view topic, std::string_view message_id) = 0;
    /// "embedded" or "rabbitmq".
    virtual std::string_view Engine() const = 0;
};

/// The partition of `key` among `partitions` (stable across processes and restarts: FNV-1a).
int PartitionOf(std::string_view key, int partitions);

}  // namespace conduit::bus
