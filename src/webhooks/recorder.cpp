#include "webhooks/recorder.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <exception>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace conduit::webhooks {

namespace {
struct Entry {
    store::WebhookDelivery row;
    int tries = 0;  // failed writes so far
};
}  // namespace

struct DeliveryRecorder::Impl : std::enable_shared_from_this<Impl> {
    Impl(store::Store& s,
         store::Executor& e,
         core::Loop& l,
         const WebhookOptions& o,
         obs::Registry& registry)
        : store(s),
          executor(e),
          loop(l),
          interval(o.record_interval),
          max_pending(std::max<size_t>(o.record_max_pending, 1)),
          max_tries(std::max(o.record_max_write_tries, 1)),
          batches_total(registry.Counter("conduit_webhook_record_batches_total",
                                         "Webhook delivery status batches written to the store")),
          errors_total(registry.Counter("conduit_webhook_record_errors_total",
                                        "Webhook delivery status batch writes that failed")) {}

    /// Inserts or replaces under mu. Returns true when the timer must be armed.
    bool MergeLocked(store::WebhookDelivery row, int tries) {
        auto it = index.find(row.id);
        if (it != index.end()) {
            Entry& e = pending[it->second];
            if (e.row.created_at_ms != 0 &&
                (row.created_at_ms == 0 || e.row.created_at_ms < row.created_at_ms)) {
                row.created_at_ms = e.row.created_at_ms;
            }
            e.row = std::move(row);
            e.tries = tries;
            return false;
        }
        index.emplace(row.id, pending.size());
        pending.push_back(Entry{std::move(row), tries});
        if (!armed) {
            armed = true;
            return true;
        }
        return false;
    }

    void ArmTimer() {
        auto self = shared_from_this();
        loop.Post([self] {
            self->loop.StartTimer(self->interval, [self] {
                {
                    std::lock_guard lock(self->mu);
                    self->armed = false;
                    if (self->stopped) {
                        return;
                    }
                }
                self->Flush();
            });
        });
    }

    void Flush() {
        std::vector<Entry> batch;
        {
            std::lock_guard lock(mu);
            if (pending.empty()) {
                return;
            }
            batch.swap(pending);
            index.clear();
        }
        auto self = shared_from_this();
        executor.Submit([self, batch = std::move(batch)]() mutable { self->Write(batch); });
    }

    /// Executor thread.
    void Write(std::vector<Entry>& batch) {
        std::vector<store::WebhookDelivery> rows;
        rows.reserve(batch.size());
        for (const auto& e : batch) {
            rows.push_back(e.row);
        }
        core::Result<void> r;
        try {
            r = store.UpsertWebhookDeliveries(rows);
        } catch (const std::exception& ex) {
            r = core::Fail(core::ErrorCode::kInternal, ex.what());
        }
        if (r) {
            batches_total.Inc();
            batches_ok.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        errors_total.Inc();
        size_t kept = 0;
        size_t dropped = 0;
        bool arm = false;
        {
            std::lock_guard lock(mu);
            for (auto& e : batch) {
                if (index.contains(e.row.id)) {
                    continue;  // a newer version is already pending
                }
                if (e.tries + 1 >= max_tries) {
                    ++dropped;
                    continue;
                }
                arm = MergeLocked(std::move(e.row), e.tries + 1) || arm;
                ++kept;
            }
        }
        spdlog::warn(
            "webhooks: writing {} delivery status rows failed: {} ({} kept for the next batch, "
            "{} dropped)",
            rows.size(), r.error().message, kept, dropped);
        if (arm) {
            ArmTimer();
        }
    }

    store::Store& store;
    store::Executor& executor;
    core::Loop& loop;
    std::chrono::milliseconds interval;
    size_t max_pending;
    int max_tries;
    obs::Counter& batches_total;
    obs::Counter& errors_total;
    std::atomic<uint64_t> batches_ok{0};

    mutable std::mutex mu;  // guards pending, index, armed, stopped
    std::vector<Entry> pending;
    std::unordered_map<std::string, size_t> index;  // id → position in pending
    bool armed = false;
    bool stopped = false;
};

DeliveryRecorder::DeliveryRecorder(store::Store& store,
                                   store::Executor& executor,
                                   core::Loop& timer_loop,
                                   const WebhookOptions& options,
                                   obs::Registry& registry)
    : impl_(std::make_shared<Impl>(store, executor, timer_loop, options, registry)) {}

DeliveryRecorder::~DeliveryRecorder() {
    std::lock_guard lock(impl_->mu);
    impl_->stopped = true;
}

void DeliveryRecorder::Record(store::WebhookDelivery row) {
    bool arm = false;
    bool flush = false;
    {
        std::lock_guard lock(impl_->mu);
        arm = impl_->MergeLocked(std::move(row), 0);
        flush = impl_->pending.size() >= impl_->max_pending;
    }
    if (flush) {
        impl_->Flush();
    }
    if (arm) {
        impl_->ArmTimer();  // also after a flush: `armed` is set and only the timer clears it
    }
}

std::optional<store::WebhookDelivery> DeliveryRecorder::Peek(std::string_view id) const {
    std::lock_guard lock(impl_->mu);
    auto it = impl_->index.find(std::string(id));
    if (it == impl_->index.end()) {
        return std::nullopt;
    }
    return impl_->pending[it->second].row;
}

void DeliveryRecorder::Flush() { impl_->Flush(); }

size_t DeliveryRecorder::Pending() const {
    std::lock_guard lock(impl_->mu);
    return impl_->pending.size();
}

uint64_t DeliveryRecorder::BatchesWritten() const {
    return impl_->batches_ok.load(std::memory_order_relaxed);
}

}  // namespace conduit::webhooks
