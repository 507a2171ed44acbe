#pragma once

#include "core/loop.hpp"
#include "obs/metrics.hpp"
#include "store/executor.hpp"
#include "store/store.hpp"
#include "webhooks/options.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace conduit::webhooks {

/// Batches webhook delivery status rows and writes them with Store::UpsertWebhookDeliveries, one
/// transaction per batch on the store executor — never one write per delivery. A batch is
/// written `record_interval` (200 ms) after the first row of it arrives, or at once when
/// `record_max_pending` (500) rows are pending. Several updates of the same id before a write
/// coalesce into the newest row (its first createdAt is kept).
///
/// Rows of one id must be recorded in causal order (pending before the attempt outcomes):
/// the newest Record() wins. Writes reach the executor in Record() order, so a store read
/// submitted to the executor after a Flush() sees every row recorded before it.
///
/// A failed write is logged and its rows are tried again with the next batch (unless a newer
/// version arrived), up to `record_max_write_tries` times.
///
/// Threading: Record, Peek, Flush and Pending are thread-safe. The periodic write is armed with
/// a timer on `timer_loop` (posted there). `store`, `executor` and `timer_loop` must outlive
/// the recorder and every job it submitted; call Flush() before stopping the executor.
class DeliveryRecorder {
public:
    DeliveryRecorder(store::Store& store,
                     store::Executor& executor,
                     core::Loop& timer_loop,
                     const WebhookOptions& options,
                     obs::Registry& registry = obs::Registry::Global());
    ~DeliveryRecorder();
    DeliveryRecorder(const DeliveryRecorder&) = delete;
    DeliveryRecorder& operator=(const DeliveryRecorder&) = delete;

    /// Queues `row` for the next batch (replacing an unwritten row with the same id). Any thread.
    void Record(store::WebhookDelivery row);
    /// The newest not-yet-submitted row for `id`, if any (newer than the store's). Any thread.
    std::optional<store::WebhookDelivery> Peek(std::string_view id) const;
    /// Submits every pending row to the executor now (one batch). Any thread.
    void Flush();
    /// Rows waiting for a batch. Any thread.
    size_t Pending() const;
    /// Batches written successfully so far. Any thread.
    uint64_t BatchesWritten() const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace conduit::webhooks
