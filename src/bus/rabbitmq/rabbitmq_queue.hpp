#pragma once

#include "bus/work_queue.hpp"
#include "core/error.hpp"
#include "core/loop.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::bus {

/// Options of the RabbitMQ WorkQueue adapter (config: CONDUITLLM__RABBITMQ__*).
struct RabbitMqQueueOptions {
    std::string host = "127.0.0.1";  // HOST
    int port = 5672;                 // PORT
    std::string user = "guest";      // USERNAME
    std::string password = "guest";  // PASSWORD
    std::string vhost = "/";         // VHOST
    /// First component of every queue and exchange name (see MakeRabbitMqQueue).
    std::string prefix = "conduit";
    /// Consumer callbacks of partition p run on loops[p % loops.size()]. Empty: they run on the
    /// adapter's I/O thread (tests and tools only). The loops must outlive the adapter.
    std::vector<core::Loop*> loops;
    /// Limits of every topic without an entry in `topics` (PARTITIONCOUNT, PREFETCHCOUNT,
    /// CONCURRENTMESSAGELIMIT). Every instance must use the same partition count per topic.
    QueueOptions defaults;
    std::map<std::string, QueueOptions, std::less<>> topics;

    std::chrono::seconds heartbeat{10};
    std::chrono::milliseconds connect_timeout{5000};
    /// Start() waits this long for the first connection (the adapter keeps trying afterwards).
    std::chrono::milliseconds start_timeout{10000};
    /// A Publish() not confirmed by the broker within this time fails with kUnavailable.
    std::chrono::milliseconds publish_timeout{30000};
    /// Reconnect backoff: exponential from `reconnect_initial` to `reconnect_max`, with jitter.
    std::chrono::milliseconds reconnect_initial{100};
    std::chrono::milliseconds reconnect_max{10000};

    /// Membership (partition ownership across instances sharing `prefix`): this instance's id
    /// in the heartbeats (empty: a random one), how often it announces itself, and how long
    /// after its last heartbeat another instance is considered gone (its partitions move).
    std::string instance_id;
    std::chrono::milliseconds member_heartbeat{1000};
    std::chrono::milliseconds member_timeout{3000};
};

/// Fills the connection fields of `options` from "amqp://user:password@host:port/vhost"
/// (user, password, port and vhost optional; "/" or nothing after the host means vhost "/";
/// percent-escapes decoded). Returns false when `url` is not an amqp:// URL.
bool ParseAmqpUrl(std::string_view url, RabbitMqQueueOptions& options);

/// The RabbitMQ WorkQueue (librabbitmq 0.11 on one dedicated I/O thread).
///
/// Topology, per topic T (declared when T is consumed or first published to):
///  - `<prefix>.T.p<i>`, i < partitions: durable quorum queues with x-single-active-consumer,
///    so across instances one consumer at a time takes a partition (ordering);
///  - `<prefix>.T.dead`: durable classic queue of dead letters (headers x-conduit-reason,
///    x-conduit-attempts, x-conduit-dead-ms, x-conduit-key). Classic because ListDead/Requeue
///    browse it with basic.get + nack(requeue): a classic queue takes nacked messages back in
///    place at once and does not count them as deliveries. In a cluster it lives on one node;
///    persistent messages survive a broker restart;
///  - delays: a headers exchange `<prefix>.T.delay` and classic durable queues
///    `<prefix>.T.delay.b<k>` (declared on first use). A message delayed by d ms goes to bucket
///    k = clamp(floor(log2 d) - 3, 0, 23), i.e. delays in [2^(k+3), 2^(k+4)) ms, with a
///    per-message `expiration` of d + 1 ms; the bucket queue dead-letters expired messages to
///    the default exchange with their original routing key, the partition queue. Head-of-line
///    caveat: a bucket releases messages in arrival order, so a message can wait behind an
///    older one of the same bucket with a longer delay: never delivered before its delay, at
///    most about twice its delay late. Dead-lettering out of a classic queue is at-most-once
///    (a broker crash at that instant can lose the delayed message).
///
/// Publishing: persistent messages on a confirm-mode channel; Publish()'s `done` runs when
/// every message of the call is confirmed (basic.ack, tracked by delivery tag, multiple=true
/// handled). Unconfirmed messages are republished after a reconnect (duplicates possible:
/// at-least-once). A batch is not atomic: when `done` reports a failure (nack, unroutable,
/// publish_timeout) some of its messages may have been enqueued.
///
/// Partition ownership: instances sharing a prefix find each other through a fanout exchange
/// `<prefix>.members`: each binds an exclusive auto-delete queue to it and publishes a heartbeat
/// (its instance id) every `member_heartbeat`; a member is alive while its last heartbeat is
/// younger than `member_timeout` (a stopping instance announces that it leaves). Partition p of
/// topic T belongs to the alive member with the highest rendezvous weight hash(T, p, id): every
/// instance computes the same owners from the same view, and a join or leave moves only the
/// partitions won or lost by that member. An instance consumes only the partitions it owns,
/// each on its own channel. Losing one: no more hand-outs from it, the delivery in progress is
/// settled (and a retry/dead-letter copy confirmed), then its channel is closed, which returns
/// the prefetched messages to the queue and activates the next owner's consumer in one broker
/// step (single active consumer), so per-partition order holds across the handover. Views may
/// differ for up to a heartbeat: x-single-active-consumer still keeps one consumer active per
/// partition, and a partition nobody claims waits at most about member_timeout. Prefetched
/// messages returned at a handover count as a delivery (x-delivery-count), as after a crash.
///
/// Consuming: manual acks; basic.qos prefetch = `prefetch` per partition queue; the adapter
/// hands at most one message per partition to the consumer at a time and at most
/// `concurrency` overall (the others wait in memory, still unacknowledged). attempt =
/// x-conduit-attempts header + x-delivery-count (quorum queues count redeliveries after a
/// crash or disconnect) + 1. A message the broker redelivers more than max_attempts times is
/// dead-lettered without being handed out. Note: a message that was only prefetched (never
/// handed out) when the connection ended is counted as delivered by the broker. Retry =
/// republish with x-conduit-attempts (to the delay exchange when delayed) then ack of the
/// original once confirmed; DeadLetter = publish to the dead queue then ack. Retried messages
/// go to the back of their partition.
///
/// A delivery not settled within `lease` frees its partition and is returned to the broker
/// (basic.nack requeue: redelivered with attempt + 1); its late settlement is ignored.
///
/// Connection loss: reconnect with exponential backoff and jitter, re-declare, re-consume.
/// Deliveries of the lost connection are redelivered by the broker; their settlements are
/// ignored (but still free the partition and the concurrency slot locally).
///
/// Stats: ready/dead from queue.declare (passive) message counts, delayed = sum over the
/// bucket queues, in_flight = messages this process holds unacknowledged. ListDead/Requeue
/// browse the dead queue with basic.get (every dead message is fetched, then all but the
/// requeued one are returned with basic.nack requeue): fine for the few dead letters expected,
/// O(dead letters) per call. Stats, ListDead and Requeue block the caller until the I/O thread
/// has run them; they fail with kUnavailable while disconnected.
///
/// Publish() before Start() is queued until the connection is up. Thread-safety: every method
/// may be called from any thread.
std::unique_ptr<WorkQueue> MakeRabbitMqQueue(RabbitMqQueueOptions options);

/// Deletes the queues and exchanges of `topics` under options.prefix (tests, operations).
/// Blocking; opens its own connection.
core::Result<void> DeleteRabbitMqTopology(const RabbitMqQueueOptions& options,
                                          const std::vector<std::string>& topics);

/// Test hook: the partitions of `topic` this instance consumes now (ascending) and the number
/// of alive members it sees. Empty and 0 when `queue` is not a RabbitMQ queue or not running.
struct RabbitMqOwnership {
    std::vector<int> partitions;
    int members = 0;
};
RabbitMqOwnership RabbitMqOwnershipForTesting(WorkQueue& queue, std::string_view topic);

/// Test hook: severs the adapter's broker connection as a network failure would (it reconnects
/// with backoff). Returns false when `queue` is not a RabbitMQ queue or is not connected.
bool DropRabbitMqConnectionForTesting(WorkQueue& queue);

}  // namespace conduit::bus
