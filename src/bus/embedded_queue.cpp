#include "bus/embedded_queue.hpp"

#include "core/clock.hpp"
#include "core/ids.hpp"
#include "store/sqlite/sqlite_db.hpp"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fcntl.h>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <sys/file.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <utility>

namespace conduit::bus {
namespace {

using core::ErrorCode;
using core::Fail;
using core::Result;
using store::sqlite::Db;
using store::sqlite::Transaction;

constexpr int kReady = 0;
constexpr int kInFlight = 1;
constexpr int kDead = 2;

// Upper bound on how long the dispatcher sleeps with nothing to do (a safety net: every change
// it must react to also wakes it explicitly).
constexpr auto kMaxIdleWait = std::chrono::milliseconds(1000);
// Pause after a failed transaction (disk full, I/O error) before trying again.
constexpr auto kFailureBackoff = std::chrono::milliseconds(50);

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS queue_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- publish order
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    partition_key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,     -- deliveries made so far
    state INTEGER NOT NULL DEFAULT 0,       -- 0 ready, 1 in flight, 2 dead
    visible_at_ms INTEGER NOT NULL,         -- not delivered before (Unix ms)
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    enqueued_at_ms INTEGER NOT NULL,
    dead_at_ms INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS queue_messages_message_id ON queue_messages(topic, message_id);
CREATE INDEX IF NOT EXISTS queue_messages_head ON queue_messages(topic, partition, state, id);
CREATE INDEX IF NOT EXISTS queue_messages_visible ON queue_messages(state, visible_at_ms);
CREATE INDEX IF NOT EXISTS queue_messages_dead ON queue_messages(topic, dead_at_ms) WHERE state = 2;
)sql";

int64_t NowMs() { return core::SystemClock::Instance().NowUnixMs(); }

/// When a message delayed by `delay_ms` from `now` becomes deliverable. A delay is rounded up
/// by 1 ms: `now` is truncated to the millisecond, and the delay must never be cut short.
int64_t VisibleAt(int64_t now, int64_t delay_ms) { return delay_ms > 0 ? now + delay_ms + 1 : now; }

enum class SettleKind { kAck, kRetry, kDeadLetter };

struct PublishJob {
    std::vector<OutgoingMessage> messages;
    std::vector<int> partitions;
    std::function<void(Result<void>)> done;
};

struct SettleJob {
    uint64_t token = 0;
    SettleKind kind = SettleKind::kAck;
    int64_t delay_ms = 0;
    std::string reason;
};

using AdminJob = std::function<void(Db*)>;

/// State shared by the queue, its dispatcher thread and every outstanding Settlement (which may
/// outlive the queue). Everything is guarded by `mu`.
struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<PublishJob> publishes;
    std::vector<SettleJob> settlements;
    std::vector<AdminJob> admin;
    bool wake = false;
    bool stopping = false;  // Stop() called: no new publishes or settlements are accepted
    bool exited = false;    // the dispatcher thread has finished

    /// Queues a settlement; false when the queue no longer accepts them.
    void Settle(SettleJob job) {
        {
            std::lock_guard lock(mu);
            if (stopping) {
                return;
            }
            settlements.push_back(std::move(job));
        }
        cv.notify_one();
    }
};

class EmbeddedSettlement final : public Settlement {
public:
    EmbeddedSettlement(std::shared_ptr<Shared> shared, uint64_t token)
        : shared_(std::move(shared)), token_(token) {}

    void Ack() override { Submit(SettleKind::kAck, std::chrono::milliseconds(0), {}); }
    void Retry(std::chrono::milliseconds delay, std::string reason) override {
        Submit(SettleKind::kRetry, delay, std::move(reason));
    }
    void DeadLetter(std::string reason) override {
        Submit(SettleKind::kDeadLetter, std::chrono::milliseconds(0), std::move(reason));
    }

private:
    void Submit(SettleKind kind, std::chrono::milliseconds delay, std::string reason) {
        if (settled_.exchange(true)) {
            return;  // only the first call counts
        }
        shared_->Settle(
            SettleJob{token_, kind, std::max<int64_t>(0, delay.count()), std::move(reason)});
    }

    std::shared_ptr<Shared> shared_;
    uint64_t token_;
    std::atomic<bool> settled_{false};
};

/// A consumed topic, as the dispatcher thread sees it.
struct TopicState {
    std::string name;
    QueueOptions options;
    std::shared_ptr<const ConsumerFn> consumer;
    std::vector<char> busy;   // partition has an unsettled delivery
    std::vector<char> dirty;  // partition may hold a visible ready message
    int in_flight = 0;
};

/// An unsettled delivery (dispatcher thread only).
struct InFlight {
    int64_t row_id = 0;
    TopicState* topic = nullptr;
    int partition = 0;
    int attempt = 0;
    int64_t lease_until_ms = 0;
};

/// A delivery ready to be handed to its consumer once the transaction that created it commits.
struct Pending {
    uint64_t token = 0;
    InFlight in_flight;
    Delivery delivery;
};

class EmbeddedQueue final : public WorkQueue {
public:
    explicit EmbeddedQueue(EmbeddedQueueOptions options)
        : options_(std::move(options)), shared_(std::make_shared<Shared>()) {
        thread_ = std::thread([this] { Run(); });
    }

    ~EmbeddedQueue() override { Stop(); }

    void Publish(std::vector<OutgoingMessage> messages,
                 std::function<void(Result<void>)> done) override {
        PublishJob job;
        job.partitions.reserve(messages.size());
        for (auto& m : messages) {
            if (m.topic.empty()) {
                if (done) {
                    done(Fail(ErrorCode::kInvalidRequest, "work queue: message without a topic"));
                }
                return;
            }
            if (m.message_id.empty()) {
                m.message_id = core::NewUuidV7();
            }
            job.partitions.push_back(PartitionOf(m.partition_key, OptionsFor(m.topic).partitions));
        }
        job.messages = std::move(messages);
        job.done = std::move(done);
        {
            std::unique_lock lock(shared_->mu);
            if (shared_->stopping) {
                lock.unlock();
                if (job.done) {
                    job.done(Fail(ErrorCode::kUnavailable, "work queue stopped"));
                }
                return;
            }
            shared_->publishes.push_back(std::move(job));
        }
        shared_->cv.notify_one();
    }

    void Consume(std::string topic, ConsumerFn fn) override {
        std::lock_guard lock(consumers_mu_);
        if (started_) {
            spdlog::error("work queue: Consume({}) after Start() ignored", topic);
            return;
        }
        consumers_[std::move(topic)] = std::make_shared<const ConsumerFn>(std::move(fn));
    }

    Result<void> Start() override {
        std::map<std::string, std::shared_ptr<const ConsumerFn>, std::less<>> consumers;
        {
            std::lock_guard lock(consumers_mu_);
            if (started_) {
                return {};
            }
            started_ = true;
            consumers = consumers_;
        }
        return RunAdmin<bool>([this, consumers = std::move(consumers)](Db& db) -> Result<bool> {
                   auto r = Activate(db, consumers);
                   if (!r) {
                       return tl::unexpected(r.error());
                   }
                   return true;
               })
            .map([](bool) {});
    }

    void Stop() override {
        {
            std::lock_guard lock(shared_->mu);
            shared_->stopping = true;
        }
        shared_->cv.notify_one();
        std::lock_guard lock(join_mu_);
        if (thread_.joinable()) {
            thread_.join();
        }
    }

    Result<TopicStats> Stats(std::string_view topic) override {
        return RunAdmin<TopicStats>([t = std::string(topic)](Db& db) -> Result<TopicStats> {
            auto stmt = db.Prepare(
                "SELECT state, visible_at_ms > ?2, COUNT(*) FROM queue_messages WHERE topic = ?1 "
                "GROUP BY 1, 2");
            if (!stmt) {
                return tl::unexpected(stmt.error());
            }
            (*stmt)->BindText(1, t).BindInt(2, NowMs());
            TopicStats stats;
            for (;;) {
                auto row = (*stmt)->Step();
                if (!row) {
                    return tl::unexpected(row.error());
                }
                if (!*row) {
                    break;
                }
                int64_t state = (*stmt)->Int(0);
                bool later = (*stmt)->Bool(1);
                int64_t n = (*stmt)->Int(2);
                if (state == kReady) {
                    (later ? stats.delayed : stats.ready) += n;
                } else if (state == kInFlight) {
                    stats.in_flight += n;
                } else {
                    stats.dead += n;
                }
            }
            return stats;
        });
    }

    Result<std::vector<DeadMessage>> ListDead(std::string_view topic, int limit) override {
        return RunAdmin<std::vector<DeadMessage>>(
            [t = std::string(topic), limit](Db& db) -> Result<std::vector<DeadMessage>> {
                auto stmt = db.Prepare(
                    "SELECT message_id, partition_key, body, attempt, reason, dead_at_ms "
                    "FROM queue_messages WHERE topic = ?1 AND state = 2 "
                    "ORDER BY dead_at_ms DESC, id DESC LIMIT ?2");
                if (!stmt) {
                    return tl::unexpected(stmt.error());
                }
                (*stmt)->BindText(1, t).BindInt(2, std::max(0, limit));
                std::vector<DeadMessage> out;
                for (;;) {
                    auto row = (*stmt)->Step();
                    if (!row) {
                        return tl::unexpected(row.error());
                    }
                    if (!*row) {
                        break;
                    }
                    DeadMessage d;
                    d.message_id = (*stmt)->Text(0);
                    d.topic = t;
                    d.partition_key = (*stmt)->Text(1);
                    d.body = (*stmt)->Blob(2);
                    d.attempts = static_cast<int>((*stmt)->Int(3));
                    d.reason = (*stmt)->Text(4);
                    d.dead_at_ms = (*stmt)->Int(5);
                    out.push_back(std::move(d));
                }
                return out;
            });
    }

    Result<bool> Requeue(std::string_view topic, std::string_view message_id) override {
        return RunAdmin<bool>([this, t = std::string(topic), id = std::string(message_id)](
                                  Db& db) -> Result<bool> { return RequeueOnThread(db, t, id); });
    }

    std::string_view Engine() const override { return "embedded"; }

private:
    const QueueOptions& OptionsFor(std::string_view topic) const {
        auto it = options_.topics.find(topic);
        return it != options_.topics.end() ? it->second : options_.defaults;
    }

    /// Runs `fn` on the dispatcher thread and waits for its result.
    template <class T>
    Result<T> RunAdmin(std::function<Result<T>(Db&)> fn) {
        auto promise = std::make_shared<std::promise<Result<T>>>();
        auto future = promise->get_future();
        {
            std::lock_guard lock(shared_->mu);
            if (shared_->exited || shared_->stopping) {
                return Fail(ErrorCode::kUnavailable, "work queue stopped");
            }
            shared_->admin.push_back([this, fn = std::move(fn), promise](Db* db) {
                if (db == nullptr) {
                    // Dispatcher thread: open_error_ is its own.
                    promise->set_value(open_error_
                                           ? tl::unexpected(*open_error_)
                                           : Fail(ErrorCode::kUnavailable, "work queue stopped"));
                } else {
                    promise->set_value(fn(*db));
                }
            });
        }
        shared_->cv.notify_one();
        return future.get();
    }

    // ---- Dispatcher thread ----

    Result<void> Open() {
        lock_fd_ = ::open((options_.path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lock_fd_ < 0) {
            return Fail(ErrorCode::kUnavailable, "work queue: cannot create " + options_.path +
                                                     ".lock: " + std::strerror(errno));
        }
        if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
            return Fail(ErrorCode::kUnavailable,
                        "work queue: " + options_.path + " is in use by another queue");
        }
        auto db = Db::Open(options_.path);
        if (!db) {
            return tl::unexpected(db.error());
        }
        db_ = std::move(*db);
        sqlite3_busy_timeout(db_->handle(), 5000);
        if (auto r = db_->Exec(options_.synchronous_full
                                   ? "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL"
                                   : "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL");
            !r) {
            return r;
        }
        if (auto r = db_->Exec(kSchema); !r) {
            return r;
        }
        // Deliveries left in flight by a crash (or a Stop()) become ready again; their attempt
        // count already includes that delivery, so the next one is attempt + 1.
        return db_->Exec("UPDATE queue_messages SET state = 0, lease_until_ms = 0 WHERE state = 1");
    }

    void Run() {
        Result<void> opened = Open();
        if (!opened) {
            open_error_ = opened.error();
            spdlog::error("work queue: {}", opened.error().message);
            db_.reset();
        }
        auto next_wake = std::chrono::steady_clock::now() + kMaxIdleWait;
        for (;;) {
            std::vector<PublishJob> publishes;
            std::vector<SettleJob> settlements;
            std::vector<AdminJob> admin;
            bool stopping = false;
            bool timed_out = false;
            {
                std::unique_lock lock(shared_->mu);
                auto has_work = [&] {
                    return shared_->stopping || shared_->wake || !shared_->publishes.empty() ||
                           !shared_->settlements.empty() || !shared_->admin.empty();
                };
                if (!has_work()) {
                    timed_out = !shared_->cv.wait_until(lock, next_wake, has_work);
                }
                publishes.swap(shared_->publishes);
                settlements.swap(shared_->settlements);
                admin.swap(shared_->admin);
                shared_->wake = false;
                stopping = shared_->stopping;
            }
            if (!db_) {
                // The file could not be opened: answer everything with the open error.
                for (auto& p : publishes) {
                    if (p.done) {
                        p.done(tl::unexpected(*open_error_));
                    }
                }
                for (auto& a : admin) {
                    a(nullptr);
                }
                if (stopping) {
                    break;
                }
                continue;
            }
            for (auto& a : admin) {
                a(db_.get());
            }
            // Woken by work or not: once the wake-up time has passed, delayed messages may have
            // become visible anywhere (steady traffic must not keep postponing them).
            // One clock reading for the check and for NextWake's range, so a message becoming
            // visible in between can fall through neither.
            const int64_t pass_start_ms = NowMs();
            if (timed_out || pass_start_ms >= next_wake_ms_) {
                for (auto& [name, t] : topics_) {
                    std::fill(t.dirty.begin(), t.dirty.end(), 1);
                }
            }
            bool ok = Pass(std::move(publishes), std::move(settlements), !stopping);
            if (stopping) {
                break;
            }
            if (ok) {
                next_wake = NextWake(pass_start_ms);
            } else {
                next_wake = std::chrono::steady_clock::now() + kFailureBackoff;
                next_wake_ms_ = NowMs() + kFailureBackoff.count();
            }
        }
        // Final: refuse what raced with Stop(); in-flight rows are made ready by the next Open().
        std::vector<PublishJob> late;
        std::vector<AdminJob> admin;
        {
            std::lock_guard lock(shared_->mu);
            shared_->exited = true;
            late.swap(shared_->publishes);
            admin.swap(shared_->admin);
            shared_->settlements.clear();
        }
        for (auto& p : late) {
            if (p.done) {
                p.done(Fail(ErrorCode::kUnavailable, "work queue stopped"));
            }
        }
        for (auto& a : admin) {
            a(nullptr);
        }
        db_.reset();
        if (lock_fd_ >= 0) {
            ::close(lock_fd_);
            lock_fd_ = -1;
        }
    }

    /// Start(): creates the consumed topics' dispatch state.
    Result<void> Activate(
        Db& db,
        const std::map<std::string, std::shared_ptr<const ConsumerFn>, std::less<>>& consumers) {
        for (const auto& [name, fn] : consumers) {
            TopicState t;
            t.name = name;
            t.options = OptionsFor(name);
            t.options.partitions = std::max(1, t.options.partitions);
            t.options.concurrency = std::max(1, t.options.concurrency);
            t.options.prefetch = std::max(1, t.options.prefetch);
            t.options.max_attempts = std::max(1, t.options.max_attempts);
            t.consumer = fn;
            // Messages stored under a larger partition count (configuration changed) stay
            // reachable.
            int partitions = t.options.partitions;
            auto stmt = db.Prepare("SELECT MAX(partition) FROM queue_messages WHERE topic = ?1");
            if (!stmt) {
                return tl::unexpected(stmt.error());
            }
            (*stmt)->BindText(1, name);
            auto row = (*stmt)->Step();
            if (!row) {
                return tl::unexpected(row.error());
            }
            if (*row && !(*stmt)->IsNull(0)) {
                partitions = std::max<int>(partitions, static_cast<int>((*stmt)->Int(0)) + 1);
            }
            t.busy.assign(partitions, 0);
            t.dirty.assign(partitions, 1);
            topics_.emplace(name, std::move(t));
        }
        active_ = true;
        std::lock_guard lock(shared_->mu);
        shared_->wake = true;
        return {};
    }

    /// One transaction: publishes, settlements, lease expiry and dispatch. On success the
    /// publishers are told and the new deliveries are handed out. Returns false when the
    /// transaction failed (everything was rolled back; settlements are retried).
    bool Pass(std::vector<PublishJob> publishes,
              std::vector<SettleJob> settlements,
              bool dispatch) {
        if (publishes.empty() && settlements.empty() && (!dispatch || !active_)) {
            return true;
        }
        const int64_t now = NowMs();
        std::vector<Result<void>> publish_results;
        std::vector<uint64_t> released;  // tokens whose delivery ended (settled or expired)
        std::vector<Pending> handed;

        auto txn = Transaction::Begin(*db_, Transaction::Mode::kImmediate);
        // Dirty marks are hints and are set as we go: a rolled-back pass leaves extra ones only.
        Result<void> status;
        if (!txn) {
            status = tl::unexpected(txn.error());
        } else {
            publish_results.reserve(publishes.size());
            for (auto& job : publishes) {
                publish_results.push_back(Insert(job, now));
            }
            for (const auto& s : settlements) {
                if (auto r = ApplySettlement(s, now, released); !r) {
                    status = r;
                    break;
                }
            }
            if (status && dispatch && active_) {
                status = ExpireLeases(now, released);
            }
            if (status && dispatch && active_) {
                status = Dispatch(now, released, handed);
            }
            if (status) {
                status = txn->Commit();
            }
        }

        if (!status) {
            spdlog::error("work queue: transaction failed: {}", status.error().message);
            for (auto& job : publishes) {
                if (job.done) {
                    job.done(tl::unexpected(status.error()));
                }
            }
            {
                std::lock_guard lock(shared_->mu);
                shared_->settlements.insert(shared_->settlements.begin(),
                                            std::make_move_iterator(settlements.begin()),
                                            std::make_move_iterator(settlements.end()));
            }
            for (auto& [name, t] : topics_) {
                std::fill(t.dirty.begin(), t.dirty.end(), 1);
            }
            return false;
        }

        // Committed: update the in-memory view, then tell publishers and consumers.
        for (uint64_t token : released) {
            auto it = in_flight_.find(token);
            if (it == in_flight_.end()) {
                continue;
            }
            TopicState* t = it->second.topic;
            t->busy[it->second.partition] = 0;
            --t->in_flight;
            in_flight_.erase(it);
        }
        for (auto& h : handed) {
            TopicState* t = h.in_flight.topic;
            t->busy[h.in_flight.partition] = 1;
            ++t->in_flight;
            in_flight_.emplace(h.token, h.in_flight);
        }
        for (size_t i = 0; i < publishes.size(); ++i) {
            if (publishes[i].done) {
                publishes[i].done(std::move(publish_results[i]));
            }
        }
        for (auto& h : handed) {
            Hand(std::move(h));
        }
        return true;
    }

    /// Inserts one Publish() call inside a savepoint: all of it or none of it.
    Result<void> Insert(const PublishJob& job, int64_t now) {
        if (auto r = db_->Exec("SAVEPOINT publish"); !r) {
            return r;
        }
        auto stmt = db_->Prepare(
            "INSERT INTO queue_messages (topic, partition, partition_key, message_id, body, "
            "visible_at_ms, enqueued_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
        Result<void> result;
        if (!stmt) {
            result = tl::unexpected(stmt.error());
        }
        for (size_t i = 0; result && i < job.messages.size(); ++i) {
            const OutgoingMessage& m = job.messages[i];
            (*stmt)->Reset();
            (*stmt)
                ->BindTextNoCopy(1, m.topic)
                .BindInt(2, job.partitions[i])
                .BindTextNoCopy(3, m.partition_key)
                .BindTextNoCopy(4, m.message_id)
                .BindBlob(5, m.body)
                .BindInt(6, VisibleAt(now, m.delay.count()))
                .BindInt(7, now);
            result = (*stmt)->Run();
            if (!result && result.error().code == ErrorCode::kConflict) {
                result = Fail(ErrorCode::kConflict, "work queue: duplicate message_id " +
                                                        m.message_id + " in topic " + m.topic);
            }
        }
        if (stmt) {
            (*stmt)->Reset();
        }
        if (!result) {
            (void)db_->Exec("ROLLBACK TO publish; RELEASE publish");
            return result;
        }
        if (auto r = db_->Exec("RELEASE publish"); !r) {
            return r;
        }
        for (size_t i = 0; i < job.messages.size(); ++i) {
            if (job.messages[i].delay.count() > 0) {
                continue;  // becomes visible later: the timed wake-up marks it
            }
            MarkDirty(job.messages[i].topic, job.partitions[i]);
        }
        return {};
    }

    Result<void> ApplySettlement(const SettleJob& s, int64_t now, std::vector<uint64_t>& released) {
        auto it = in_flight_.find(s.token);
        if (it == in_flight_.end() ||
            std::find(released.begin(), released.end(), s.token) != released.end()) {
            return {};  // lease expired (redelivered since) or already settled
        }
        const InFlight& f = it->second;
        Result<void> r;
        if (s.kind == SettleKind::kAck) {
            auto stmt = db_->Prepare("DELETE FROM queue_messages WHERE id = ?1");
            if (!stmt) {
                return tl::unexpected(stmt.error());
            }
            r = (*stmt)->BindInt(1, f.row_id).Run();
        } else if (s.kind == SettleKind::kRetry && f.attempt < f.topic->options.max_attempts) {
            auto stmt = db_->Prepare(
                "UPDATE queue_messages SET state = 0, visible_at_ms = ?2, lease_until_ms = 0, "
                "reason = ?3 WHERE id = ?1");
            if (!stmt) {
                return tl::unexpected(stmt.error());
            }
            r = (*stmt)
                    ->BindInt(1, f.row_id)
                    .BindInt(2, VisibleAt(now, s.delay_ms))
                    .BindText(3, s.reason)
                    .Run();
        } else {
            r = MarkDead(f.row_id, now, s.reason);
        }
        if (!r) {
            return r;
        }
        released.push_back(s.token);
        MarkDirty(*f.topic, f.partition);  // its next message (or this one, retried now)
        return {};
    }

    Result<void> MarkDead(int64_t row_id, int64_t now, const std::string& reason) {
        auto stmt = db_->Prepare(
            "UPDATE queue_messages SET state = 2, dead_at_ms = ?2, lease_until_ms = 0, "
            "reason = ?3 WHERE id = ?1");
        if (!stmt) {
            return tl::unexpected(stmt.error());
        }
        return (*stmt)->BindInt(1, row_id).BindInt(2, now).BindText(3, reason).Run();
    }

    /// Deliveries whose lease ran out become ready again (the consumer may still be working on
    /// them: at-least-once).
    Result<void> ExpireLeases(int64_t now, std::vector<uint64_t>& released) {
        for (const auto& [token, f] : in_flight_) {
            // Strictly after: `now` is truncated to the millisecond; never cut a lease short.
            if (f.lease_until_ms >= now ||
                std::find(released.begin(), released.end(), token) != released.end()) {
                continue;
            }
            auto stmt = db_->Prepare(
                "UPDATE queue_messages SET state = 0, lease_until_ms = 0 WHERE id = ?1 AND "
                "state = 1");
            if (!stmt) {
                return tl::unexpected(stmt.error());
            }
            if (auto r = (*stmt)->BindInt(1, f.row_id).Run(); !r) {
                return r;
            }
            spdlog::warn("work queue: lease of message {} in {} expired; redelivering", f.row_id,
                         f.topic->name);
            released.push_back(token);
            MarkDirty(*f.topic, f.partition);
        }
        return {};
    }

    /// Picks the next message of every idle partition (oldest first), up to the concurrency
    /// limit, and marks it in flight.
    Result<void> Dispatch(int64_t now,
                          const std::vector<uint64_t>& released,
                          std::vector<Pending>& handed) {
        for (auto& [name, t] : topics_) {
            // The view after this transaction: released deliveries free their partition.
            std::vector<char> busy = t.busy;
            int in_flight = t.in_flight;
            for (uint64_t token : released) {
                auto it = in_flight_.find(token);
                if (it != in_flight_.end() && it->second.topic == &t) {
                    busy[it->second.partition] = 0;
                    --in_flight;
                }
            }
            int budget = std::min(t.options.concurrency - in_flight, t.options.prefetch);
            if (budget <= 0) {
                continue;
            }
            auto head = db_->Prepare(
                "SELECT id, attempt FROM queue_messages INDEXED BY queue_messages_head "
                "WHERE topic = ?1 AND partition = ?2 AND state = 0 AND visible_at_ms <= ?3 "
                "ORDER BY id LIMIT 1");
            if (!head) {
                return tl::unexpected(head.error());
            }
            struct Candidate {
                int64_t id;
                int partition;
                int attempt;
            };
            std::vector<Candidate> candidates;
            const int partitions = static_cast<int>(busy.size());
            for (int p = 0; p < partitions; ++p) {
                if (busy[p] || !t.dirty[p]) {
                    continue;
                }
                (*head)->Reset();
                (*head)->BindText(1, name).BindInt(2, p).BindInt(3, now);
                auto row = (*head)->Step();
                if (!row) {
                    return tl::unexpected(row.error());
                }
                if (!*row) {
                    t.dirty[p] = 0;  // nothing visible; set again by whatever adds one
                    continue;
                }
                candidates.push_back(
                    Candidate{(*head)->Int(0), p, static_cast<int>((*head)->Int(1))});
            }
            (*head)->Reset();
            std::sort(candidates.begin(), candidates.end(),
                      [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
            for (const Candidate& c : candidates) {
                if (budget == 0) {
                    break;
                }
                if (c.attempt >= t.options.max_attempts) {
                    // Delivered max_attempts times without a settlement (crashes, expired
                    // leases): give up rather than loop forever.
                    if (auto r = MarkDead(c.id, now,
                                          "delivered " + std::to_string(c.attempt) +
                                              " times without being settled");
                        !r) {
                        return r;
                    }
                    std::lock_guard lock(shared_->mu);
                    shared_->wake = true;  // look at the partition's next message
                    continue;
                }
                auto take = db_->Prepare(
                    "UPDATE queue_messages SET state = 1, attempt = attempt + 1, "
                    "lease_until_ms = ?2 WHERE id = ?1 "
                    "RETURNING partition_key, message_id, body, attempt, enqueued_at_ms");
                if (!take) {
                    return tl::unexpected(take.error());
                }
                const int64_t lease_until = now + std::max<int64_t>(1, t.options.lease.count());
                (*take)->BindInt(1, c.id).BindInt(2, lease_until);
                auto row = (*take)->Step();
                if (!row) {
                    return tl::unexpected(row.error());
                }
                if (!*row) {
                    continue;
                }
                Pending h;
                h.token = ++next_token_;
                h.delivery.topic = name;
                h.delivery.partition = c.partition;
                h.delivery.partition_key = (*take)->Text(0);
                h.delivery.message_id = (*take)->Text(1);
                h.delivery.body = (*take)->Blob(2);
                h.delivery.attempt = static_cast<int>((*take)->Int(3));
                h.delivery.enqueued_at_ms = (*take)->Int(4);
                (void)(*take)->Step();  // finish the statement
                h.in_flight = InFlight{c.id, &t, c.partition, h.delivery.attempt, lease_until};
                handed.push_back(std::move(h));
                --budget;
            }
        }
        return {};
    }

    /// Hands a committed delivery to its consumer on the partition's loop.
    void Hand(Pending h) {
        auto settlement = std::make_shared<EmbeddedSettlement>(shared_, h.token);
        auto consumer = h.in_flight.topic->consumer;
        if (options_.loops.empty()) {
            (*consumer)(std::move(h.delivery), std::move(settlement));
            return;
        }
        core::Loop* loop =
            options_.loops[static_cast<size_t>(h.delivery.partition) % options_.loops.size()];
        loop->Post([consumer, d = std::move(h.delivery), s = std::move(settlement)]() mutable {
            (*consumer)(std::move(d), std::move(s));
        });
    }

    /// When the dispatcher must look again by itself: the next delayed message or lease expiry.
    /// `pass_start_ms`: when the pass that just ended began (a delayed message that became
    /// visible after that was not seen by it, even if it is due by now).
    std::chrono::steady_clock::time_point NextWake(int64_t pass_start_ms) {
        const auto steady_now = std::chrono::steady_clock::now();
        if (!active_) {
            next_wake_ms_ = NowMs() + kMaxIdleWait.count();
            return steady_now + kMaxIdleWait;
        }
        const int64_t now = NowMs();
        int64_t next = now + kMaxIdleWait.count();
        for (const auto& [token, f] : in_flight_) {
            next = std::min(next, f.lease_until_ms + 1);
        }
        // The first delayed message (visible later than it was queued) the pass could not have
        // seen; one already due makes the dispatcher look again at once. An index range from
        // pass_start_ms: only delayed rows and this pass's own inserts lie in it.
        auto stmt = db_->Prepare(
            "SELECT MIN(visible_at_ms) FROM queue_messages WHERE state = 0 AND visible_at_ms > ?1 "
            "AND visible_at_ms > enqueued_at_ms");
        if (stmt) {
            (*stmt)->BindInt(1, pass_start_ms);
            auto row = (*stmt)->Step();
            if (row && *row && !(*stmt)->IsNull(0)) {
                next = std::min(next, (*stmt)->Int(0));
            }
        }
        next_wake_ms_ = next;
        return steady_now + std::chrono::milliseconds(std::max<int64_t>(0, next - now));
    }

    Result<bool> RequeueOnThread(Db& db, const std::string& topic, const std::string& message_id) {
        auto txn = Transaction::Begin(db, Transaction::Mode::kImmediate);
        if (!txn) {
            return tl::unexpected(txn.error());
        }
        int64_t id = 0;
        int partition = 0;
        std::string key;
        std::string body;
        int64_t enqueued_at = 0;
        {
            auto find = db.Prepare(
                "SELECT id, partition, partition_key, body, enqueued_at_ms FROM queue_messages "
                "WHERE topic = ?1 AND message_id = ?2 AND state = 2");
            if (!find) {
                return tl::unexpected(find.error());
            }
            (*find)->BindText(1, topic).BindText(2, message_id);
            auto row = (*find)->Step();
            if (!row) {
                return tl::unexpected(row.error());
            }
            if (!*row) {
                return false;
            }
            id = (*find)->Int(0);
            partition = static_cast<int>((*find)->Int(1));
            key = (*find)->Text(2);
            body = (*find)->Blob(3);
            enqueued_at = (*find)->Int(4);
        }
        // Delete, then insert anew ((topic, message_id) is unique): the message goes to the back
        // of its partition with its attempt count reset.
        auto del = db.Prepare("DELETE FROM queue_messages WHERE id = ?1");
        if (!del) {
            return tl::unexpected(del.error());
        }
        if (auto r = (*del)->BindInt(1, id).Run(); !r) {
            return tl::unexpected(r.error());
        }
        auto insert = db.Prepare(
            "INSERT INTO queue_messages (topic, partition, partition_key, message_id, body, "
            "visible_at_ms, enqueued_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
        if (!insert) {
            return tl::unexpected(insert.error());
        }
        (*insert)
            ->BindText(1, topic)
            .BindInt(2, partition)
            .BindText(3, key)
            .BindText(4, message_id)
            .BindBlob(5, body)
            .BindInt(6, NowMs())
            .BindInt(7, enqueued_at);
        if (auto r = (*insert)->Run(); !r) {
            return tl::unexpected(r.error());
        }
        if (auto r = txn->Commit(); !r) {
            return tl::unexpected(r.error());
        }
        MarkDirty(topic, partition);
        std::lock_guard lock(shared_->mu);
        shared_->wake = true;
        return true;
    }

    /// Notes that `partition` of `topic` may have a visible ready message.
    void MarkDirty(std::string_view topic, int partition) {
        auto it = topics_.find(topic);
        if (it != topics_.end()) {
            MarkDirty(it->second, partition);
        }
    }
    static void MarkDirty(TopicState& t, int partition) {
        if (partition >= 0 && partition < static_cast<int>(t.dirty.size())) {
            t.dirty[partition] = 1;
        }
    }

    EmbeddedQueueOptions options_;
    std::shared_ptr<Shared> shared_;

    std::mutex consumers_mu_;
    std::map<std::string, std::shared_ptr<const ConsumerFn>, std::less<>> consumers_;
    bool started_ = false;  // guarded by consumers_mu_

    std::mutex join_mu_;
    std::thread thread_;

    // Dispatcher thread only.
    std::unique_ptr<Db> db_;
    std::optional<core::Error> open_error_;
    int lock_fd_ = -1;
    bool active_ = false;
    std::map<std::string, TopicState, std::less<>> topics_;
    std::unordered_map<uint64_t, InFlight> in_flight_;
    uint64_t next_token_ = 0;
    // The wall-clock time (ms) NextWake() chose: once it has passed, every partition is looked
    // at, whether the dispatcher woke for that or for other work.
    int64_t next_wake_ms_ = 0;
};

}  // namespace

std::unique_ptr<WorkQueue> MakeEmbeddedQueue(EmbeddedQueueOptions options) {
    return std::make_unique<EmbeddedQueue>(std::move(options));
}

}  // namespace conduit::bus
