#pragma once

#include "domain/entities.hpp"
#include "gateway/balance_book.hpp"
#include "store/executor.hpp"
#include "store/store.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace conduit::gateway {

/// Collects the spend and request-log row of every proxied request in memory and writes them
/// in one store transaction about once per interval (never one write per request). The
/// BalanceBook sees each debit immediately, so an exhausted group is refused at once.
///
/// Record() is called from any loop thread (a short mutex-protected append). Flushes run on the
/// store executor. If a flush fails, the batch is kept and retried with the next one.
class SpendRecorder {
public:
    SpendRecorder(store::Store& store,
                  store::Executor& executor,
                  BalanceBook& book,
                  std::chrono::milliseconds interval);
    ~SpendRecorder();
    SpendRecorder(const SpendRecorder&) = delete;
    SpendRecorder& operator=(const SpendRecorder&) = delete;

    /// Starts the periodic flush thread.
    void Start();
    /// Records one request: debits `row.cost` from the group in the BalanceBook and queues the
    /// row. Any thread.
    void Record(domain::RequestLogRow row);
    /// Spend another store transaction has already committed (a task completion billed with
    /// its state change): lowers the group's persisted balance in the BalanceBook by `amount`.
    /// Store executor thread only, right after that commit (the BalanceBook consistency rule).
    void RecordCommitted(domain::Id group_id, domain::Micros amount);
    /// RecordCommitted for a task bill, with its row (seen by the observer).
    void RecordCommitted(const domain::RequestLogRow& row);

    /// Sees every recorded row (requests and committed task bills) right after the BalanceBook
    /// was updated, on the recording thread (e.g. the spend hub's SpendUpdate). Keep it short.
    /// Set before the first Record().
    using Observer = std::function<void(const domain::RequestLogRow&)>;
    void SetObserver(Observer observer) { observer_ = std::move(observer); }
    /// Sees each Record()ed row right before it is queued (`flushed` false, recording thread) and
    /// again once the flush that committed or dropped it is over (`flushed` true, store executor
    /// thread): what is recorded but not yet in the store (a key's budget base, BudgetGate).
    /// Set before the first Record().
    using PendingObserver = std::function<void(const domain::RequestLogRow&, bool flushed)>;
    void SetPendingObserver(PendingObserver observer) { pending_observer_ = std::move(observer); }
    /// Flushes now and waits until the batch is committed (or failed). Not from the executor.
    bool FlushAndWait();
    /// Stops the timer thread and performs a final flush. Idempotent.
    void Stop();

    /// Rows waiting for the next flush.
    size_t PendingRows() const;
    /// Completed flushes and failures (for metrics and tests).
    uint64_t flushes() const { return flushes_.load(); }
    uint64_t failures() const { return failures_.load(); }

private:
    void ScheduleFlush(std::function<void(bool)> done);
    void FlushOnExecutor(std::function<void(bool)> done);

    store::Store& store_;
    store::Executor& executor_;
    BalanceBook& book_;
    std::chrono::milliseconds interval_;

    mutable std::mutex mu_;  // guards queue_
    std::vector<domain::RequestLogRow> queue_;
    std::vector<domain::RequestLogRow> retry_;  // executor thread only

    std::mutex timer_mu_;  // guards stop_
    std::condition_variable timer_cv_;
    bool stop_ = false;
    std::thread timer_;
    std::atomic<uint64_t> flushes_{0};
    std::atomic<uint64_t> failures_{0};
    Observer observer_;
    PendingObserver pending_observer_;
};

}  // namespace conduit::gateway
