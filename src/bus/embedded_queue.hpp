#pragma once

#include "bus/work_queue.hpp"
#include "core/loop.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace conduit::bus {

/// Options of the embedded (SQLite, in-process) WorkQueue adapter.
struct EmbeddedQueueOptions {
    /// The queue's own SQLite file, e.g. "<data-dir>/queue.db" (created if missing). Keep it
    /// separate from the main store so the two never contend for one write lock. One adapter
    /// per file: a second one (in this or another process) fails with kUnavailable.
    std::string path;
    /// Consumer callbacks of partition p run on loops[p % loops.size()]. Empty: they run on the
    /// adapter's own thread (tests and tools only; a slow callback then stalls the queue).
    /// The loops must outlive the adapter.
    std::vector<core::Loop*> loops;
    /// Limits of every topic without an entry in `topics`.
    QueueOptions defaults;
    /// Per-topic limits (partitions, prefetch, concurrency, max_attempts, lease).
    std::map<std::string, QueueOptions, std::less<>> topics;
    /// PRAGMA synchronous=FULL: a commit survives power loss, at the cost of one fsync per
    /// transaction. The default (NORMAL, WAL) survives a process crash.
    bool synchronous_full = false;
};

/// The embedded WorkQueue: an on-disk queue in one SQLite file (WAL), surviving restarts.
///
/// One dispatcher thread owns the database. Publish() calls are queued to it and committed in
/// one transaction per dispatcher pass (each call all or nothing, a duplicate message_id within a
/// topic fails that call with kConflict); settlements are applied in the same transaction; then
/// the dispatcher marks the next message of every idle partition in flight (oldest first, up to
/// the topic's concurrency limit, at most `prefetch` per pass) and posts it to its loop.
/// Deliveries never settled within `lease` are made ready again; messages left in flight by a
/// crash are made ready when the file is opened. Within a partition messages are delivered in
/// publish order, except that a message published with (or retried after) a delay takes its
/// place when its delay has passed.
///
/// The factory never fails: the file is opened on the dispatcher thread right away; an open
/// failure is reported by Start() and by every Publish().
/// Thread-safety: every method may be called from any thread. Stats(), ListDead() and Requeue()
/// block the caller until the dispatcher thread has run them (usually well under a millisecond).
std::unique_ptr<WorkQueue> MakeEmbeddedQueue(EmbeddedQueueOptions options);

}  // namespace conduit::bus
