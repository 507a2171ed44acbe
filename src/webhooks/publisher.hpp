#pragma once

#include "bus/work_queue.hpp"
#include "core/clock.hpp"
#include "core/error.hpp"
#include "store/store.hpp"
#include "webhooks/message.hpp"
#include "webhooks/options.hpp"
#include "webhooks/recorder.hpp"

#include <functional>
#include <vector>

namespace conduit::webhooks {

/// Turns webhook events into durable queue messages (topic options.topic, partition key = task
/// id, so one task's webhooks are delivered in order) and records each delivery as `pending`.
///
/// The pending rows are recorded before publishing (so that an attempt's outcome, which can
/// only follow the publish, always supersedes them). When a publish fails, its deliveries are
/// recorded as `dead` ("not enqueued: ...") so that an operator can redeliver them, and `done`
/// gets the error.
///
/// Threading: thread-safe; `done` runs once, on an arbitrary thread (the queue's confirmation
/// thread, or the caller's when there is nothing to publish). The queue, the recorder and the
/// clock must outlive every call in flight.
class WebhookPublisher {
public:
    WebhookPublisher(bus::WorkQueue& queue,
                     DeliveryRecorder& recorder,
                     const core::Clock& clock,
                     const WebhookOptions& options);

    /// Publishes one message per event, in batches of options.publish_batch per Publish call.
    /// An empty delivery_id is replaced by a new "msg_<uuidv7>". `done` gets the first error of
    /// any batch (the other batches are still published).
    void Enqueue(std::vector<WebhookEvent> events, std::function<void(core::Result<void>)> done);

    /// Operator redelivery of a stored delivery: same webhook-id, fresh attempts, status
    /// `pending`. `done` gets the row as recorded.
    void Redeliver(store::WebhookDelivery row,
                   std::function<void(core::Result<store::WebhookDelivery>)> done);

private:
    void PublishBatch(std::vector<QueuedDelivery> batch,
                      std::function<void(core::Result<void>)> done);

    bus::WorkQueue& queue_;
    DeliveryRecorder& recorder_;
    const core::Clock& clock_;
    std::string topic_;
    size_t batch_size_;
};

}  // namespace conduit::webhooks
