#include "gateway/spend_recorder.hpp"

#include "core/clock.hpp"

#include <spdlog/spdlog.h>

#include <future>
#include <map>

namespace conduit::gateway {

SpendRecorder::SpendRecorder(store::Store& store,
                             store::Executor& executor,
                             BalanceBook& book,
                             std::chrono::milliseconds interval)
    : store_(store), executor_(executor), book_(book), interval_(interval) {}

SpendRecorder::~SpendRecorder() { Stop(); }

void SpendRecorder::Start() {
    timer_ = std::thread([this] {
        std::unique_lock lock(timer_mu_);
        while (!stop_) {
            timer_cv_.wait_for(lock, interval_, [this] { return stop_; });
            if (stop_) {
                break;
            }
            lock.unlock();
            ScheduleFlush(nullptr);
            lock.lock();
        }
    });
}

void SpendRecorder::Record(domain::RequestLogRow row) {
    if (row.cost != 0) {
        book_.AddPending(row.group_id, row.cost);
    }
    if (observer_) {
        observer_(row);
    }
    if (pending_observer_) {
        pending_observer_(row, false);
    }
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(row));
}

void SpendRecorder::RecordCommitted(const domain::RequestLogRow& row) {
    RecordCommitted(row.group_id, row.cost);
    if (observer_) {
        observer_(row);
    }
}

void SpendRecorder::RecordCommitted(domain::Id group_id, domain::Micros amount) {
    if (amount != 0) {
        book_.AddPending(group_id, amount);
        book_.Flushed(group_id, amount);
    }
}

size_t SpendRecorder::PendingRows() const {
    std::lock_guard lock(mu_);
    return queue_.size();
}

void SpendRecorder::ScheduleFlush(std::function<void(bool)> done) {
    executor_.Submit([this, done = std::move(done)] { FlushOnExecutor(done); });
}

void SpendRecorder::FlushOnExecutor(std::function<void(bool)> done) {
    std::vector<domain::RequestLogRow> batch;
    {
        std::lock_guard lock(mu_);
        batch.swap(queue_);
    }
    if (!retry_.empty()) {
        batch.insert(batch.begin(), std::make_move_iterator(retry_.begin()),
                     std::make_move_iterator(retry_.end()));
        retry_.clear();
    }
    if (batch.empty()) {
        if (done) {
            done(true);
        }
        return;
    }
    // One ledger debit per group per flush, like the original's "API usage by N keys".
    struct Agg {
        domain::Micros amount = 0;
        int64_t count = 0;
        std::map<domain::Id, int> keys;
    };
    std::map<domain::Id, Agg> per_group;
    for (const auto& row : batch) {
        if (row.cost == 0) {
            continue;
        }
        auto& a = per_group[row.group_id];
        a.amount += row.cost;
        a.count += 1;
        a.keys[row.virtual_key_id] += 1;
    }
    std::vector<store::GroupSpend> debits;
    for (const auto& [gid, a] : per_group) {
        store::GroupSpend s;
        s.group_id = gid;
        s.amount = a.amount;
        s.request_count = a.count;
        s.description = a.keys.size() == 1
                            ? "API usage by virtual key #" + std::to_string(a.keys.begin()->first)
                            : "API usage by " + std::to_string(a.keys.size()) + " virtual keys";
        debits.push_back(std::move(s));
    }
    auto result = store_.ApplySpend(debits, batch, core::SystemClock::Instance().NowUnixMs());
    if (!result) {
        failures_.fetch_add(1);
        // A group deleted since the request would fail the whole batch forever: drop the spend
        // of groups that no longer exist, keep everything else for the next attempt.
        spdlog::warn("spend flush of {} rows failed: {}", batch.size(), result.error().message);
        std::vector<domain::RequestLogRow> keep;
        for (auto& row : batch) {
            if (row.cost == 0 || book_.Available(row.group_id).has_value()) {
                keep.push_back(std::move(row));
            } else if (pending_observer_) {
                pending_observer_(row, true);  // dropped
            }
        }
        retry_ = std::move(keep);
        if (done) {
            done(false);
        }
        return;
    }
    for (const auto& d : debits) {
        book_.Flushed(d.group_id, d.amount);
    }
    if (pending_observer_) {
        for (const auto& row : batch) {
            pending_observer_(row, true);
        }
    }
    flushes_.fetch_add(1);
    if (done) {
        done(true);
    }
}

bool SpendRecorder::FlushAndWait() {
    auto promise = std::make_shared<std::promise<bool>>();
    auto future = promise->get_future();
    ScheduleFlush([promise](bool ok) { promise->set_value(ok); });
    return future.get();
}

void SpendRecorder::Stop() {
    {
        std::lock_guard lock(timer_mu_);
        if (stop_) {
            return;
        }
        stop_ = true;
    }
    timer_cv_.notify_all();
    if (timer_.joinable()) {
        timer_.join();
    }
    FlushAndWait();
}

}  // namespace conduit::gateway
