#include "webhooks/publisher.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>

namespace conduit::webhooks {

namespace {

/// Joins the results of several batches into one `done` call.
struct Join {
    std::mutex mu;
    size_t remaining = 0;
    std::optional<core::Error> first_error;
    std::function<void(core::Result<void>)> done;

    void Complete(const core::Result<void>& r) {
        std::function<void(core::Result<void>)> fn;
        core::Result<void> result;
        {
            std::lock_guard lock(mu);
            if (!r && !first_error) {
                first_error = r.error();
            }
            if (--remaining > 0) {
                return;
            }
            fn = std::move(done);
            if (first_error) {
                result = tl::unexpected(*first_error);
            }
        }
        if (fn) {
            fn(std::move(result));
        }
    }
};

store::WebhookDelivery PendingRow(const QueuedDelivery& m, int64_t now_ms) {
    store::WebhookDelivery row = RowFor(m);
    row.status = std::string(kStatusPending);
    row.updated_at_ms = now_ms;
    return row;
}

}  // namespace

WebhookPublisher::WebhookPublisher(bus::WorkQueue& queue,
                                   DeliveryRecorder& recorder,
                                   const core::Clock& clock,
                                   const WebhookOptions& options)
    : queue_(queue),
      recorder_(recorder),
      clock_(clock),
      topic_(options.topic),
      batch_size_(std::max<size_t>(options.publish_batch, 1)) {}

void WebhookPublisher::Enqueue(std::vector<WebhookEvent> events,
                               std::function<void(core::Result<void>)> done) {
    if (events.empty()) {
        if (done) {
            done({});
        }
        return;
    }
    const int64_t now = clock_.NowUnixMs();
    std::vector<QueuedDelivery> all;
    all.reserve(events.size());
    for (auto& e : events) {
        QueuedDelivery m;
        m.id = e.delivery_id.empty() ? NewDeliveryId() : std::move(e.delivery_id);
        m.event_type = std::move(e.event_type);
        m.task_id = std::move(e.task_id);
        m.virtual_key_id = e.virtual_key_id;
        m.url = std::move(e.url);
        m.headers = std::move(e.headers);
        m.payload = std::move(e.payload);
        m.created_at_ms = e.timestamp_s > 0 ? e.timestamp_s * 1000 : now;
        m.published_at_ms = now;
        recorder_.Record(PendingRow(m, now));
        all.push_back(std::move(m));
    }

    auto join = std::make_shared<Join>();
    join->remaining = (all.size() + batch_size_ - 1) / batch_size_;
    join->done = std::move(done);
    for (size_t start = 0; start < all.size(); start += batch_size_) {
        size_t end = std::min(all.size(), start + batch_size_);
        std::vector<QueuedDelivery> batch(std::make_move_iterator(all.begin() + start),
                                          std::make_move_iterator(all.begin() + end));
        PublishBatch(std::move(batch), [join](core::Result<void> r) { join->Complete(r); });
    }
}

void WebhookPublisher::Redeliver(store::WebhookDelivery row,
                                 std::function<void(core::Result<store::WebhookDelivery>)> done) {
    const int64_t now = clock_.NowUnixMs();
    QueuedDelivery m;
    m.id = row.id;
    m.event_type = row.event_type;
    m.task_id = row.task_id;
    m.virtual_key_id = row.virtual_key_id;
    m.url = row.url;
    m.headers = DecodeHeaders(row.headers_json);
    m.payload = row.payload;
    m.created_at_ms = row.created_at_ms != 0 ? row.created_at_ms : now;
    m.published_at_ms = now;
    m.redelivery = true;

    store::WebhookDelivery fresh = PendingRow(m, now);
    recorder_.Record(fresh);
    std::vector<QueuedDelivery> batch;
    batch.push_back(std::move(m));
    PublishBatch(std::move(batch),
                 [fresh = std::move(fresh), done = std::move(done)](core::Result<void> r) mutable {
                     if (!done) {
                         return;
                     }
                     if (!r) {
                         done(tl::unexpected(r.error()));
                         return;
                     }
                     done(std::move(fresh));
                 });
}

void WebhookPublisher::PublishBatch(std::vector<QueuedDelivery> batch,
                                    std::function<void(core::Result<void>)> done) {
    std::vector<bus::OutgoingMessage> messages;
    messages.reserve(batch.size());
    for (const auto& m : batch) {
        bus::OutgoingMessage out;
        out.topic = topic_;
        out.partition_key = m.task_id.empty() ? m.id : m.task_id;
        out.body = EncodeDelivery(m);
        messages.push_back(std::move(out));
    }
    queue_.Publish(std::move(messages), [this, batch = std::move(batch),
                                         done = std::move(done)](core::Result<void> r) mutable {
        if (!r) {
            spdlog::warn("webhooks: enqueueing {} deliveries failed: {}", batch.size(),
                         r.error().message);
            const int64_t now = clock_.NowUnixMs();
            for (const auto& m : batch) {
                store::WebhookDelivery row = RowFor(m);
                row.status = std::string(kStatusDead);
                row.last_error = "not enqueued: " + r.error().message;
                row.updated_at_ms = now;
                recorder_.Record(std::move(row));
            }
        }
        if (done) {
            done(std::move(r));
        }
    });
}

}  // namespace conduit::webhooks
