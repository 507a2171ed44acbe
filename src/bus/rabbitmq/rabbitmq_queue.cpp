#include "bus/rabbitmq/rabbitmq_queue.hpp"

#include "bus/rabbitmq/amqp_util.hpp"
#include "core/clock.hpp"
#include "core/ids.hpp"
#include "core/strings.hpp"

#include <amqp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <poll.h>
#include <random>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <utility>

namespace conduit::bus {
namespace {

using core::ErrorCode;
using core::Fail;
using core::Result;
using SteadyClock = std::chrono::steady_clock;

constexpr amqp_channel_t kMain = 1;     // publish (confirm mode), topology
constexpr amqp_channel_t kAdmin = 2;    // stats and dead-letter browsing (may be closed by errors)
constexpr amqp_channel_t kMembers = 3;  // membership heartbeats (published and consumed, no acks)
/// Partition consumers: one channel per (consumed topic, partition), kFirstSlot + slot index.
constexpr amqp_channel_t kFirstSlot = 16;
constexpr int kMaxSlots = 2000;  // RabbitMQ's default channel_max is 2047
constexpr std::string_view kHeartbeatMagic = "conduit-member/1";

constexpr int kBuckets = 24;             // delay buckets per topic
constexpr int kMaxBrowse = 10000;        // dead letters fetched by ListDead/Requeue at most
constexpr int kMaxFramesPerTurn = 4096;  // then look at commands again
constexpr auto kIdlePoll = std::chrono::milliseconds(200);
constexpr auto kShutdownFlush = std::chrono::milliseconds(5000);

constexpr std::string_view kHeaderKey = "x-conduit-key";
constexpr std::string_view kHeaderAttempts = "x-conduit-attempts";  // deliveries before publish
constexpr std::string_view kHeaderEnqueued = "x-conduit-enqueued-ms";
constexpr std::string_view kHeaderReason = "x-conduit-reason";
constexpr std::string_view kHeaderDeadAt = "x-conduit-dead-ms";
constexpr std::string_view kHeaderDelay = "x-conduit-delay";           // routes to a delay bucket
constexpr std::string_view kHeaderDeliveryCount = "x-delivery-count";  // set by quorum queues

int64_t NowMs() { return core::SystemClock::Instance().NowUnixMs(); }

/// Bucket of a delay: k holds [2^(k+3), 2^(k+4)) ms (bucket 0 also everything shorter).
int DelayBucket(int64_t delay_ms) {
    const auto v = static_cast<uint64_t>(std::max<int64_t>(delay_ms, 1));
    const int log2 = 63 - __builtin_clzll(v);
    return std::clamp(log2 - 3, 0, kBuckets - 1);
}

std::string Name(std::string_view prefix, std::string_view topic, std::string_view suffix) {
    std::string s;
    s.reserve(prefix.size() + topic.size() + suffix.size() + 2);
    s.append(prefix).append(".").append(topic).append(".").append(suffix);
    return s;
}
std::string PartitionQueue(std::string_view prefix, std::string_view topic, int p) {
    return Name(prefix, topic, "p" + std::to_string(p));
}
std::string DeadQueue(std::string_view prefix, std::string_view topic) {
    return Name(prefix, topic, "dead");
}
std::string DelayExchange(std::string_view prefix, std::string_view topic) {
    return Name(prefix, topic, "delay");
}
std::string DelayQueue(std::string_view prefix, std::string_view topic, int bucket) {
    return Name(prefix, topic, "delay.b" + std::to_string(bucket));
}
std::string BucketLabel(int bucket) { return "b" + std::to_string(bucket); }
std::string MembersExchange(std::string_view prefix) { return std::string(prefix) + ".members"; }

uint64_t Fnv1a64(std::string_view s, uint64_t h = 14695981039346656037ULL) {
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    return h;
}
uint64_t Mix64(uint64_t x) {  // splitmix64 finalizer: spreads FNV's weak low bits
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}
/// Rendezvous weight of `member` for partition `p` of `topic`.
uint64_t Weight(std::string_view topic, int p, std::string_view member) {
    uint64_t h = Fnv1a64(topic);
    h = Fnv1a64(std::string_view("\0", 1), h);
    h = Fnv1a64(std::to_string(p), h);
    h = Fnv1a64(std::string_view("\0", 1), h);
    return Mix64(Fnv1a64(member, h));
}

amqp::ConnectParams ParamsOf(const RabbitMqQueueOptions& o) {
    amqp::ConnectParams p;
    p.host = o.host;
    p.port = o.port;
    p.user = o.user;
    p.password = o.password;
    p.vhost = o.vhost;
    p.heartbeat = o.heartbeat;
    p.connect_timeout = o.connect_timeout;
    return p;
}

const QueueOptions& OptionsFor(const RabbitMqQueueOptions& o, std::string_view topic) {
    auto it = o.topics.find(topic);
    return it != o.topics.end() ? it->second : o.defaults;
}

QueueOptions Sanitized(QueueOptions o) {
    o.partitions = std::max(1, o.partitions);
    o.prefetch = std::clamp(o.prefetch, 1, 65535);
    o.concurrency = std::max(1, o.concurrency);
    o.max_attempts = std::max(1, o.max_attempts);
    return o;
}

// ---- State shared with callers and Settlements ----

enum class SettleKind { kAck, kRetry, kDeadLetter };

struct SettleCmd {
    uint64_t token = 0;
    SettleKind kind = SettleKind::kAck;
    int64_t delay_ms = 0;
    std::string reason;
};

/// One Publish() call.
struct Batch {
    std::vector<OutgoingMessage> messages;
    std::vector<int> partitions;
    std::vector<char> confirmed;  // per message
    size_t unconfirmed = 0;
    int64_t enqueued_at_ms = 0;
    bool finished = false;  // `done` has run
    SteadyClock::time_point deadline;
    std::function<void(Result<void>)> done;
};
using BatchPtr = std::shared_ptr<Batch>;

/// A job for the I/O thread; called with `run` false when the queue stopped first.
using Job = std::function<void(bool run)>;

/// Shared by the queue, its I/O thread and every Settlement (which may outlive the queue).
struct Shared {
    std::mutex mu;
    std::deque<BatchPtr> publishes;
    std::vector<SettleCmd> settles;
    std::vector<Job> jobs;
    bool stopping = false;
    bool exited = false;
    int event_fd = -1;

    Shared() : event_fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
    ~Shared() {
        if (event_fd >= 0) {
            ::close(event_fd);
        }
    }
    Shared(const Shared&) = delete;
    Shared& operator=(const Shared&) = delete;

    void Wake() const {
        uint64_t one = 1;
        ssize_t n = ::write(event_fd, &one, sizeof one);
        (void)n;
    }
    void Settle(SettleCmd cmd) {
        {
            std::lock_guard lock(mu);
            if (stopping) {
                return;  // the broker redelivers it
            }
            settles.push_back(std::move(cmd));
        }
        Wake();
    }
};

class RabbitSettlement final : public Settlement {
public:
    RabbitSettlement(std::shared_ptr<Shared> shared, uint64_t token)
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
            return;
        }
        shared_->Settle(
            SettleCmd{token_, kind, std::max<int64_t>(0, delay.count()), std::move(reason)});
    }

    std::shared_ptr<Shared> shared_;
    uint64_t token_;
    std::atomic<bool> settled_{false};
};

// ---- I/O thread state ----

struct Buffered {
    uint64_t delivery_tag = 0;
    Delivery delivery;
};

/// A topic this adapter consumes or has published to.
struct TopicRt {
    std::string name;
    int index = -1;  // consumer index (consumer tags "c<index>.<partition>"), -1 if not consumed
    QueueOptions options;
    std::shared_ptr<const ConsumerFn> consumer;
    std::vector<std::deque<Buffered>> buffered;  // received, not handed out (per partition)
    std::vector<char> busy;                      // partition has a handed-out delivery
    int handed = 0;
    int cursor = 0;
    bool declared = false;  // topology declared on the current connection
    uint32_t buckets = 0;   // delay buckets declared on the current connection (bit k)
    int first_slot = 0;     // slot of partition 0 (consumed topics)
};

/// The consumer of one partition queue, on its own channel.
struct Slot {
    enum class State {
        kIdle,       // not consuming (channel closed)
        kActive,     // owned: consuming and handing out
        kReleasing,  // lost: no hand-outs; closed once nothing of it is in progress
    };
    TopicRt* topic = nullptr;
    int partition = 0;
    State state = State::kIdle;
    uint64_t epoch = 0;  // +1 whenever its channel opens (delivery tags of older ones are void)
    int settling = 0;    // retry/dead-letter copies not yet confirmed (their original unacked)
    bool closed_here = false;  // its channel was closed on this connection (stale frames?)
};

/// A delivery handed to the consumer and not yet settled.
struct Handed {
    TopicRt* topic = nullptr;
    int partition = 0;
    uint64_t generation = 0;
    uint64_t delivery_tag = 0;
    Delivery delivery;
    SteadyClock::time_point lease_until{};
    int slot = 0;
    uint64_t epoch = 0;  // of the slot's channel the delivery came on
};

/// A publish waiting for its confirm.
struct Unconfirmed {
    enum class Kind { kBatch, kSettle, kRequeue };
    Kind kind = Kind::kBatch;
    BatchPtr batch;
    size_t index = 0;
    uint64_t original_tag = 0;  // kSettle: delivery to ack once confirmed (nack if refused)
    int slot = -1;              // kSettle: the original's slot and channel epoch
    uint64_t epoch = 0;
    std::shared_ptr<int> outcome;  // kRequeue: 0 pending, 1 confirmed, -1 failed
    std::string message_id;
    bool returned = false;  // basic.return seen (unroutable)
};

/// A message read from the dead queue, not yet acked or nacked.
struct Browsed {
    uint64_t tag = 0;
    DeadMessage message;
    int64_t enqueued_at_ms = 0;
};

class RabbitMqQueue final : public WorkQueue {
public:
    explicit RabbitMqQueue(RabbitMqQueueOptions options)
        : options_(std::move(options)),
          shared_(std::make_shared<Shared>()),
          first_connect_future_(first_connect_.get_future()),
          backoff_(options_.reconnect_initial),
          rng_(std::random_device{}()) {
        if (options_.instance_id.empty()) {
            options_.instance_id = core::NewUuidV7();
        }
        options_.member_heartbeat =
            std::max(options_.member_heartbeat, std::chrono::milliseconds(10));
        options_.member_timeout = std::max(options_.member_timeout, options_.member_heartbeat * 2);
    }

    ~RabbitMqQueue() override { Stop(); }

    void Publish(std::vector<OutgoingMessage> messages,
                 std::function<void(Result<void>)> done) override {
        auto batch = std::make_shared<Batch>();
        batch->partitions.reserve(messages.size());
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
            batch->partitions.push_back(
                PartitionOf(m.partition_key, Sanitized(OptionsFor(options_, m.topic)).partitions));
        }
        batch->confirmed.assign(messages.size(), 0);
        batch->unconfirmed = messages.size();
        batch->messages = std::move(messages);
        batch->enqueued_at_ms = NowMs();
        batch->done = std::move(done);
        if (batch->messages.empty()) {
            if (batch->done) {
                batch->done({});
            }
            return;
        }
        {
            std::unique_lock lock(shared_->mu);
            if (shared_->stopping) {
                lock.unlock();
                if (batch->done) {
                    batch->done(Fail(ErrorCode::kUnavailable, "work queue stopped"));
                }
                return;
            }
            shared_->publishes.push_back(std::move(batch));
        }
        shared_->Wake();
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
        {
            std::lock_guard lock(consumers_mu_);
            if (started_) {
                return {};
            }
            {
                std::lock_guard slock(shared_->mu);
                if (shared_->stopping) {
                    return Fail(ErrorCode::kUnavailable, "work queue stopped");
                }
            }
            started_ = true;
            // The I/O thread is not running yet: its state can be set up here.
            for (const auto& [name, fn] : consumers_) {
                TopicRt& t = Topic(name);
                t.index = static_cast<int>(consumed_.size());
                t.consumer = fn;
                t.buffered.resize(t.options.partitions);
                t.busy.assign(t.options.partitions, 0);
                t.first_slot = static_cast<int>(slots_.size());
                for (int p = 0; p < t.options.partitions; ++p) {
                    slots_.push_back(Slot{&t, p});
                }
                consumed_.push_back(&t);
            }
            if (slots_.size() > static_cast<size_t>(kMaxSlots)) {
                started_ = false;
                return Fail(ErrorCode::kInvalidRequest,
                            "work queue: " + std::to_string(slots_.size()) +
                                " consumed partitions exceed the RabbitMQ adapter's limit of " +
                                std::to_string(kMaxSlots));
            }
            thread_ = std::thread([this] { Run(); });
            thread_started_.store(true);
        }
        if (first_connect_future_.wait_for(options_.start_timeout) != std::future_status::ready) {
            return Fail(ErrorCode::kUnavailable,
                        "RabbitMQ at " + options_.host + ":" + std::to_string(options_.port) +
                            " not reachable (still retrying): " + LastError());
        }
        return {};
    }

    void Stop() override {
        {
            std::lock_guard lock(shared_->mu);
            shared_->stopping = true;
        }
        shared_->Wake();
        std::lock_guard lock(join_mu_);
        if (thread_.joinable()) {
            thread_.join();
        }
        // Never started: fail what was queued.
        std::deque<BatchPtr> left;
        std::vector<Job> jobs;
        {
            std::lock_guard lock2(shared_->mu);
            shared_->exited = true;
            left.swap(shared_->publishes);
            jobs.swap(shared_->jobs);
        }
        for (auto& b : left) {
            if (b->done) {
                b->done(Fail(ErrorCode::kUnavailable, "work queue stopped"));
            }
        }
        for (auto& j : jobs) {
            j(false);
        }
    }

    Result<TopicStats> Stats(std::string_view topic) override {
        return RunJob<TopicStats>(
            [this, t = std::string(topic)] { return CachedStatsOnThread(t); });
    }

    Result<std::vector<DeadMessage>> ListDead(std::string_view topic, int limit) override {
        return RunJob<std::vector<DeadMessage>>(
            [this, t = std::string(topic), limit] { return ListDeadOnThread(t, limit); });
    }

    Result<bool> Requeue(std::string_view topic, std::string_view message_id) override {
        return RunJob<bool>([this, t = std::string(topic), id = std::string(message_id)] {
            return RequeueOnThread(t, id);
        });
    }

    std::string_view Engine() const override { return "rabbitmq"; }

    /// RabbitMqOwnershipForTesting().
    RabbitMqOwnership Ownership(std::string_view topic) {
        auto r = RunJob<RabbitMqOwnership>([this, t = std::string(topic)] {
            RabbitMqOwnership o;
            for (const Slot& s : slots_) {
                if (s.topic->name == t && s.state == Slot::State::kActive) {
                    o.partitions.push_back(s.partition);
                }
            }
            o.members = static_cast<int>(alive_.size());
            return Result<RabbitMqOwnership>(std::move(o));
        });
        return r ? *r : RabbitMqOwnership{};
    }

    /// DropRabbitMqConnectionForTesting().
    bool DropConnection() {
        auto r = RunJob<bool>([this]() -> Result<bool> {
            if (!conn_.is_open()) {
                return false;
            }
            conn_.Sever();
            return true;
        });
        return r && *r;
    }

private:
    std::string LastError() {
        std::lock_guard lock(error_mu_);
        return last_error_;
    }

    /// Runs `fn` on the I/O thread and waits for its result.
    template <class T>
    Result<T> RunJob(std::function<Result<T>()> fn) {
        auto promise = std::make_shared<std::promise<Result<T>>>();
        auto future = promise->get_future();
        {
            std::lock_guard lock(shared_->mu);
            if (shared_->stopping || shared_->exited) {
                return Fail(ErrorCode::kUnavailable, "work queue stopped");
            }
            if (!thread_started_.load()) {
                return Fail(ErrorCode::kUnavailable, "work queue not started");
            }
            shared_->jobs.push_back([fn = std::move(fn), promise](bool run) {
                promise->set_value(run ? fn()
                                       : Fail(ErrorCode::kUnavailable, "work queue stopped"));
            });
        }
        shared_->Wake();
        return future.get();
    }

    /// The runtime state of `name` (created on first use).
    TopicRt& Topic(const std::string& name) {
        auto it = topics_.find(name);
        if (it == topics_.end()) {
            auto t = std::make_unique<TopicRt>();
            t->name = name;
            t->options = Sanitized(OptionsFor(options_, name));
            it = topics_.emplace(name, std::move(t)).first;
        }
        return *it->second;
    }

    // ---- The I/O thread ----

    void Run() {
        for (;;) {
            {
                std::lock_guard lock(shared_->mu);
                if (shared_->stopping) {
                    break;
                }
            }
            if (!conn_.is_open()) {
                auto now = SteadyClock::now();
                if (now >= next_connect_) {
                    auto r = Connect();
                    if (!r) {
                        conn_.Close(false);
                        OnConnectFailed(r.error().message);
                    } else {
                        OnConnected();
                    }
                }
                if (!conn_.is_open()) {
                    TakeCommands();
                    ExpireBatches();
                    auto wait = std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(
                                               next_connect_ - SteadyClock::now()),
                                           std::chrono::milliseconds(0),
                                           std::chrono::milliseconds(kIdlePoll));
                    WaitForWake(static_cast<int>(wait.count()));
                    continue;
                }
            }
            if (auto r = Turn(); !r) {
                Disconnect(r.error().message);
            }
        }
        Shutdown();
    }

    void OnConnectFailed(const std::string& message) {
        {
            std::lock_guard lock(error_mu_);
            last_error_ = message;
        }
        if (connect_failures_++ == 0 || backoff_ >= options_.reconnect_max) {
            spdlog::warn("work queue: RabbitMQ connection failed: {} (retrying)", message);
        }
        ScheduleReconnect();
    }

    void OnConnected() {
        if (connect_failures_ > 0 || ever_connected_) {
            spdlog::info("work queue: connected to RabbitMQ at {}:{}", options_.host,
                         options_.port);
        }
        connect_failures_ = 0;
        backoff_ = options_.reconnect_initial;
        if (!ever_connected_) {
            ever_connected_ = true;
            first_connect_.set_value();
        }
    }

    void ScheduleReconnect() {
        // Full jitter over [backoff/2, backoff].
        const int64_t hi = std::max<int64_t>(1, backoff_.count());
        std::uniform_int_distribution<int64_t> dist(hi / 2, hi);
        next_connect_ = SteadyClock::now() + std::chrono::milliseconds(dist(rng_));
        backoff_ = std::min(backoff_ * 2, options_.reconnect_max);
    }

    /// Waits up to `timeout_ms` for a wake-up (new commands).
    void WaitForWake(int timeout_ms) {
        pollfd fd{shared_->event_fd, POLLIN, 0};
        if (::poll(&fd, 1, timeout_ms) > 0) {
            DrainEventFd();
        }
    }

    /// True when other threads queued work (a nested ReadFrames may have consumed the wake-up).
    bool CommandsPending() {
        std::lock_guard lock(shared_->mu);
        return !shared_->publishes.empty() || !shared_->settles.empty() || !shared_->jobs.empty();
    }

    void DrainEventFd() {
        uint64_t n = 0;
        ssize_t r = ::read(shared_->event_fd, &n, sizeof n);
        (void)r;
    }

    Result<void> Connect() {
        if (auto r = conn_.Open(ParamsOf(options_)); !r) {
            return r;
        }
        ++generation_;
        next_tag_ = 1;
        admin_open_ = false;
        broken_.reset();
        for (auto& [name, t] : topics_) {
            t->declared = false;
            t->buckets = 0;
        }
        if (auto r = conn_.OpenChannel(kMain); !r) {
            return r;
        }
        if (amqp_confirm_select(conn_.state(), kMain) == nullptr) {
            return RpcFailure("confirm.select");
        }
        for (Slot& slot : slots_) {
            slot.state = Slot::State::kIdle;
            slot.settling = 0;
            slot.closed_here = false;
        }
        for (TopicRt* t : consumed_) {
            if (auto r = EnsureTopology(*t); !r) {
                return r;
            }
        }
        if (!consumed_.empty()) {
            if (auto r = JoinMembers(); !r) {
                return r;
            }
            // Claims what this view assigns to us; the view fills in with the next heartbeats.
            if (auto r = Rebalance(); !r) {
                return r;
            }
        }
        return {};
    }

    // ---- Membership and partition ownership ----

    /// Declares the members exchange, binds a private queue to it and consumes it; announces
    /// this instance.
    Result<void> JoinMembers() {
        amqp_connection_state_t st = conn_.state();
        if (auto r = conn_.OpenChannel(kMembers); !r) {
            return r;
        }
        const std::string exchange = MembersExchange(options_.prefix);
        if (amqp_exchange_declare(st, kMembers, amqp::Bytes(exchange), amqp::Bytes("fanout"), 0, 0,
                                  0, 0, amqp_empty_table) == nullptr) {
            return RpcFailure("exchange.declare " + exchange);
        }
        auto* declared =
            amqp_queue_declare(st, kMembers, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
        if (declared == nullptr) {
            return RpcFailure("queue.declare (members)");
        }
        const std::string queue = amqp::String(declared->queue);
        if (amqp_queue_bind(st, kMembers, amqp::Bytes(queue), amqp::Bytes(exchange),
                            amqp_empty_bytes, amqp_empty_table) == nullptr) {
            return RpcFailure("queue.bind " + queue);
        }
        if (amqp_basic_consume(st, kMembers, amqp::Bytes(queue), amqp::Bytes("m"), 0, 1, 1,
                               amqp_empty_table) == nullptr) {
            return RpcFailure("basic.consume " + queue);
        }
        return SendHeartbeat(false);
    }

    Result<void> SendHeartbeat(bool leaving) {
        const std::string body = std::string(kHeartbeatMagic) + " " + options_.instance_id +
                                 (leaving ? " leaving" : " up");
        amqp_basic_properties_t props{};
        props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_EXPIRATION_FLAG;
        props.delivery_mode = 1;  // transient
        const std::string expiration = std::to_string(options_.member_timeout.count());
        props.expiration = amqp::Bytes(expiration);
        int rc = amqp_basic_publish(conn_.state(), kMembers,
                                    amqp::Bytes(MembersExchange(options_.prefix)), amqp_empty_bytes,
                                    0, 0, &props, amqp::Bytes(body));
        if (rc != AMQP_STATUS_OK) {
            return Fail(
                ErrorCode::kUnavailable,
                std::string("RabbitMQ heartbeat publish failed: ") + amqp_error_string2(rc));
        }
        next_heartbeat_ = SteadyClock::now() + options_.member_heartbeat;
        return {};
    }

    void OnHeartbeat(std::string_view body) {
        auto parts = core::SplitTrimmed(body, ' ');
        if (parts.size() != 3 || parts[0] != kHeartbeatMagic || parts[1].empty()) {
            spdlog::warn("work queue: ignored a malformed membership heartbeat");
            return;
        }
        if (parts[1] == options_.instance_id) {
            return;
        }
        if (parts[2] == "leaving") {
            peers_.erase(std::string(parts[1]));
        } else {
            peers_[std::string(parts[1])] = SteadyClock::now();
        }
        membership_dirty_ = true;
    }

    /// Heartbeat when due, forget silent peers, and move partitions when the alive set changed
    /// (or a release became possible).
    Result<void> Membership() {
        if (consumed_.empty()) {
            return {};
        }
        const auto now = SteadyClock::now();
        if (now >= next_heartbeat_) {
            if (auto r = SendHeartbeat(false); !r) {
                return r;
            }
        }
        if (now >= next_member_check_ || membership_dirty_) {
            next_member_check_ = now + std::chrono::milliseconds(100);
            membership_dirty_ = false;
            if (auto r = Rebalance(); !r) {
                return r;
            }
        }
        return FinishReleases();
    }

    /// The alive set (this instance and every peer heard from within member_timeout), sorted.
    std::vector<std::string> AliveMembers() {
        const auto now = SteadyClock::now();
        std::erase_if(peers_,
                      [&](const auto& kv) { return now - kv.second > options_.member_timeout; });
        std::vector<std::string> alive;
        alive.reserve(peers_.size() + 1);
        alive.push_back(options_.instance_id);
        for (const auto& [id, seen] : peers_) {
            alive.push_back(id);
        }
        std::sort(alive.begin(), alive.end());
        return alive;
    }

    /// Claims the partitions this instance owns and starts releasing the others.
    Result<void> Rebalance() {
        std::vector<std::string> alive = AliveMembers();
        if (alive != alive_) {
            alive_ = alive;
            int owned = 0;
            for (const Slot& slot : slots_) {
                owned += OwnerOf(slot) == options_.instance_id ? 1 : 0;
            }
            std::string list;
            for (const auto& id : alive_) {
                list.append(list.empty() ? "" : ", ").append(id);
            }
            spdlog::info(
                "work queue: {} member(s) alive ({}); this instance ({}) owns {} of {} "
                "partitions",
                alive_.size(), list, options_.instance_id, owned, slots_.size());
        }
        for (Slot& slot : slots_) {
            const bool mine = OwnerOf(slot) == options_.instance_id;
            if (mine && slot.state == Slot::State::kIdle) {
                if (auto r = Claim(slot); !r) {
                    return r;
                }
            } else if (mine && slot.state == Slot::State::kReleasing) {
                slot.state = Slot::State::kActive;  // won back before it was let go
            } else if (!mine && slot.state == Slot::State::kActive) {
                slot.state = Slot::State::kReleasing;
            }
        }
        return {};
    }

    const std::string& OwnerOf(const Slot& slot) const {
        const std::string* best = &options_.instance_id;
        uint64_t best_weight = 0;
        bool first = true;
        for (const auto& id : alive_) {
            const uint64_t w = Weight(slot.topic->name, slot.partition, id);
            if (first || w > best_weight || (w == best_weight && id > *best)) {
                best = &id;
                best_weight = w;
                first = false;
            }
        }
        return *best;
    }

    static amqp_channel_t ChannelOf(int slot) {
        return static_cast<amqp_channel_t>(kFirstSlot + slot);
    }
    int SlotIndex(const Slot& slot) const { return static_cast<int>(&slot - slots_.data()); }

    /// Opens the slot's channel and consumes its partition queue (single active consumer: it
    /// becomes active once the previous owner's consumer is gone).
    Result<void> Claim(Slot& slot) {
        const amqp_channel_t ch = ChannelOf(SlotIndex(slot));
        const TopicRt& t = *slot.topic;
        if (slot.closed_here && amqp_frames_enqueued(conn_.state())) {
            // Frames read during an RPC wait may still hold deliveries of this channel's last
            // incarnation: claim on a later turn, once they are handled (and dropped).
            return {};
        }
        slot.closed_here = false;
        if (auto r = conn_.OpenChannel(ch); !r) {
            return r;
        }
        ++slot.epoch;
        slot.state = Slot::State::kActive;
        slot.settling = 0;
        if (amqp_basic_qos(conn_.state(), ch, 0, static_cast<uint16_t>(t.options.prefetch), 0) ==
            nullptr) {
            return RpcFailure("basic.qos");
        }
        std::string queue = PartitionQueue(options_.prefix, t.name, slot.partition);
        std::string tag = "c" + std::to_string(t.index) + "." + std::to_string(slot.partition);
        if (amqp_basic_consume(conn_.state(), ch, amqp::Bytes(queue), amqp::Bytes(tag), 0, 0, 0,
                               amqp_empty_table) == nullptr) {
            return RpcFailure("basic.consume " + queue);
        }
        spdlog::debug("work queue: consuming {}", queue);
        return {};
    }

    /// Closes the channels of released partitions once nothing of them is in progress: the
    /// broker returns their prefetched messages and activates the new owner in one step.
    Result<void> FinishReleases() {
        for (Slot& slot : slots_) {
            if (slot.state != Slot::State::kReleasing || slot.settling > 0 ||
                slot.topic->busy[slot.partition]) {
                continue;
            }
            const int index = SlotIndex(slot);
            slot.state = Slot::State::kIdle;
            slot.closed_here = true;
            slot.topic->buffered[slot.partition].clear();
            amqp_rpc_reply_t r =
                amqp_channel_close(conn_.state(), ChannelOf(index), AMQP_REPLY_SUCCESS);
            if (r.reply_type != AMQP_RESPONSE_NORMAL) {
                return Fail(ErrorCode::kUnavailable,
                            "RabbitMQ channel.close failed: " + amqp::ReplyText(r));
            }
            spdlog::debug("work queue: released {}",
                          PartitionQueue(options_.prefix, slot.topic->name, slot.partition));
        }
        return {};
    }

    core::Error RpcError(const std::string& what) {
        return core::Error::Make(
            ErrorCode::kUnavailable,
            "RabbitMQ " + what + " failed: " + amqp::ReplyText(amqp_get_rpc_reply(conn_.state())));
    }
    tl::unexpected<core::Error> RpcFailure(const std::string& what) {
        return tl::unexpected(RpcError(what));
    }

    /// Declares the partition queues, the dead queue and the delay exchange of `t`.
    Result<void> EnsureTopology(TopicRt& t) {
        if (t.declared) {
            return {};
        }
        amqp_connection_state_t st = conn_.state();
        for (int p = 0; p < t.options.partitions; ++p) {
            std::string queue = PartitionQueue(options_.prefix, t.name, p);
            amqp::Table args;
            args.Str("x-queue-type", "quorum").Bool("x-single-active-consumer", true);
            if (amqp_queue_declare(st, kMain, amqp::Bytes(queue), 0, 1, 0, 0, args.Get()) ==
                nullptr) {
                return RpcFailure("queue.declare " + queue);
            }
        }
        std::string dead = DeadQueue(options_.prefix, t.name);
        // Classic, not quorum: ListDead/Requeue browse it with basic.get + nack(requeue), and a
        // classic queue takes nacked messages back in place, at once, without counting them as
        // deliveries (quorum queues return them asynchronously and count them).
        amqp::Table dead_args;
        dead_args.Str("x-queue-type", "classic");
        if (amqp_queue_declare(st, kMain, amqp::Bytes(dead), 0, 1, 0, 0, dead_args.Get()) ==
            nullptr) {
            return RpcFailure("queue.declare " + dead);
        }
        std::string exchange = DelayExchange(options_.prefix, t.name);
        if (amqp_exchange_declare(st, kMain, amqp::Bytes(exchange), amqp::Bytes("headers"), 0, 1, 0,
                                  0, amqp_empty_table) == nullptr) {
            return RpcFailure("exchange.declare " + exchange);
        }
        t.declared = true;
        t.buckets = 0;
        return {};
    }

    /// Declares delay bucket `b` of `t` (a classic queue that dead-letters expired messages to
    /// the default exchange) and binds it to the topic's delay exchange.
    Result<void> EnsureBucket(TopicRt& t, int b) {
        if ((t.buckets & (1U << b)) != 0) {
            return {};
        }
        amqp_connection_state_t st = conn_.state();
        std::string queue = DelayQueue(options_.prefix, t.name, b);
        amqp::Table args;
        args.Str("x-dead-letter-exchange", "");
        if (amqp_queue_declare(st, kMain, amqp::Bytes(queue), 0, 1, 0, 0, args.Get()) == nullptr) {
            return RpcFailure("queue.declare " + queue);
        }
        amqp::Table bind;
        bind.Str("x-match", "all").Str(kHeaderDelay, BucketLabel(b));
        std::string exchange = DelayExchange(options_.prefix, t.name);
        if (amqp_queue_bind(st, kMain, amqp::Bytes(queue), amqp::Bytes(exchange), amqp::Bytes(""),
                            bind.Get()) == nullptr) {
            return RpcFailure("queue.bind " + queue);
        }
        t.buckets |= 1U << b;
        return {};
    }

    /// Publishes one persistent message on the confirm channel; returns its delivery tag.
    Result<uint64_t> Send(const std::string& exchange,
                          const std::string& routing_key,
                          amqp::Table& headers,
                          std::string_view message_id,
                          std::string_view body,
                          int64_t expiration_ms) {
        amqp_basic_properties_t props{};
        props._flags =
            AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
        props.delivery_mode = 2;  // persistent
        props.headers = headers.Get();
        props.message_id = amqp::Bytes(message_id);
        std::string expiration;
        if (expiration_ms > 0) {
            expiration = std::to_string(expiration_ms);
            props._flags |= AMQP_BASIC_EXPIRATION_FLAG;
            props.expiration = amqp::Bytes(expiration);
        }
        int rc = amqp_basic_publish(conn_.state(), kMain, amqp::Bytes(exchange),
                                    amqp::Bytes(routing_key), /*mandatory=*/1, 0, &props,
                                    amqp::Bytes(body));
        if (rc != AMQP_STATUS_OK) {
            return Fail(ErrorCode::kUnavailable,
                        std::string("RabbitMQ publish failed: ") + amqp_error_string2(rc));
        }
        return next_tag_++;
    }

    /// Publishes to partition `p` of `t`, through a delay bucket when `delay_ms` > 0.
    Result<uint64_t> SendToPartition(TopicRt& t,
                                     int p,
                                     int64_t delay_ms,
                                     amqp::Table& headers,
                                     std::string_view message_id,
                                     std::string_view body) {
        if (auto r = EnsureTopology(t); !r) {
            return tl::unexpected(r.error());
        }
        std::string queue = PartitionQueue(options_.prefix, t.name, p);
        if (delay_ms <= 0) {
            return Send("", queue, headers, message_id, body, 0);
        }
        const int b = DelayBucket(delay_ms);
        if (auto r = EnsureBucket(t, b); !r) {
            return tl::unexpected(r.error());
        }
        headers.Str(kHeaderDelay, BucketLabel(b));
        // +1 ms: the broker's clock is read in whole milliseconds; never release early.
        return Send(DelayExchange(options_.prefix, t.name), queue, headers, message_id, body,
                    delay_ms + 1);
    }

    /// One turn while connected: commands, publishes, frames, hand-outs.
    Result<void> Turn() {
        TakeCommands();
        if (broken_) {
            return Fail(ErrorCode::kUnavailable, *std::exchange(broken_, std::nullopt));
        }
        if (auto r = PublishWaiting(); !r) {
            return r;
        }
        ExpireBatches();
        ExpireLeases();
        if (auto r = Membership(); !r) {
            return r;
        }
        HandOut();
        if (broken_) {
            return Fail(ErrorCode::kUnavailable, *std::exchange(broken_, std::nullopt));
        }
        if (auto r = ReadFrames(/*may_block=*/true); !r) {
            return r;
        }
        HandOut();
        if (broken_) {
            return Fail(ErrorCode::kUnavailable, *std::exchange(broken_, std::nullopt));
        }
        return {};
    }

    /// Takes queued publishes, settlements and jobs from other threads.
    void TakeCommands() {
        std::deque<BatchPtr> publishes;
        std::vector<SettleCmd> settles;
        std::vector<Job> jobs;
        {
            std::lock_guard lock(shared_->mu);
            publishes.swap(shared_->publishes);
            settles.swap(shared_->settles);
            jobs.swap(shared_->jobs);
        }
        const auto deadline = SteadyClock::now() + options_.publish_timeout;
        for (auto& b : publishes) {
            b->deadline = deadline;
            waiting_.push_back(std::move(b));
        }
        // Publishes go on the wire before the settlements taken with them: a consumer that
        // queues its follow-up step and then acks must never have the ack reach the broker
        // first (a crash in between would lose the follow-up with nothing left to redeliver).
        if (conn_.is_open() && !broken_) {
            if (auto r = PublishWaiting(); !r) {
                broken_ = r.error().message;
            }
        }
        for (auto& s : settles) {
            ProcessSettle(s);
        }
        for (auto& j : jobs) {
            j(true);
        }
    }

    /// Publishes every waiting batch (their unconfirmed messages).
    Result<void> PublishWaiting() {
        while (!waiting_.empty()) {
            BatchPtr b = waiting_.front();
            if (b->finished) {
                waiting_.pop_front();
                continue;
            }
            // Moved to open_batches_ first: on failure, Disconnect() requeues it from there.
            waiting_.pop_front();
            open_batches_.push_back(b);
            for (size_t i = 0; i < b->messages.size(); ++i) {
                if (b->confirmed[i]) {
                    continue;
                }
                const OutgoingMessage& m = b->messages[i];
                TopicRt& t = Topic(m.topic);
                amqp::Table headers;
                headers.Str(kHeaderKey, m.partition_key)
                    .Int(kHeaderAttempts, 0)
                    .Int(kHeaderEnqueued, b->enqueued_at_ms);
                auto tag = SendToPartition(t, b->partitions[i], m.delay.count(), headers,
                                           m.message_id, m.body);
                if (!tag) {
                    return tl::unexpected(tag.error());
                }
                Unconfirmed u;
                u.kind = Unconfirmed::Kind::kBatch;
                u.batch = b;
                u.index = i;
                u.message_id = m.message_id;
                unconfirmed_.emplace(*tag, std::move(u));
            }
        }
        return {};
    }

    void Finish(Batch& b, Result<void> result) {
        if (b.finished) {
            return;
        }
        b.finished = true;
        if (b.done) {
            auto done = std::move(b.done);
            done(std::move(result));
        }
    }

    /// Fails batches past their deadline; forgets finished ones.
    void ExpireBatches() {
        const auto now = SteadyClock::now();
        auto expire = [&](const BatchPtr& b) {
            if (!b->finished && now >= b->deadline) {
                Finish(*b, Fail(ErrorCode::kUnavailable,
                                "RabbitMQ did not confirm the publish within " +
                                    std::to_string(options_.publish_timeout.count()) + " ms"));
            }
            return b->finished;
        };
        std::erase_if(open_batches_, expire);
        std::erase_if(waiting_, expire);
    }

    /// Reads and handles frames: waits (poll on the socket and the wake-up eventfd, at most
    /// kIdlePoll) when `may_block` and nothing is buffered.
    Result<void> ReadFrames(bool may_block) {
        amqp_connection_state_t st = conn_.state();
        if (may_block && !amqp_frames_enqueued(st) && !amqp_data_in_buffer(st) &&
            !CommandsPending()) {
            pollfd fds[2] = {{conn_.fd(), POLLIN, 0}, {shared_->event_fd, POLLIN, 0}};
            int n = ::poll(fds, 2, static_cast<int>(kIdlePoll.count()));
            if (n > 0 && (fds[1].revents & POLLIN) != 0) {
                DrainEventFd();
            }
        }
        // Always read what is there (zero timeout); this also services heartbeats.
        for (int i = 0; i < kMaxFramesPerTurn; ++i) {
            amqp_frame_t frame;
            timeval zero{0, 0};
            int rc = amqp_simple_wait_frame_noblock(st, &frame, &zero);
            if (rc == AMQP_STATUS_TIMEOUT) {
                break;
            }
            if (rc != AMQP_STATUS_OK) {
                return Fail(ErrorCode::kUnavailable,
                            std::string("RabbitMQ connection: ") + amqp_error_string2(rc));
            }
            auto r = HandleFrame(frame);
            amqp_maybe_release_buffers(st);
            if (!r) {
                return r;
            }
        }
        return {};
    }

    Result<void> HandleFrame(const amqp_frame_t& frame) {
        if (frame.frame_type != AMQP_FRAME_METHOD) {
            return {};  // content frames are read with their method
        }
        amqp_connection_state_t st = conn_.state();
        switch (frame.payload.method.id) {
            case AMQP_BASIC_DELIVER_METHOD:
                return OnDeliver(frame.channel,
                                 *static_cast<amqp_basic_deliver_t*>(frame.payload.method.decoded));
            case AMQP_BASIC_ACK_METHOD: {
                const auto* a = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
                if (frame.channel == kMain) {
                    OnConfirm(a->delivery_tag, a->multiple != 0, true);
                }
                return {};
            }
            case AMQP_BASIC_NACK_METHOD: {
                const auto* n = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
                if (frame.channel == kMain) {
                    OnConfirm(n->delivery_tag, n->multiple != 0, false);
                }
                return {};
            }
            case AMQP_BASIC_RETURN_METHOD:
                return OnReturn(frame.channel);
            case AMQP_CHANNEL_CLOSE_METHOD: {
                const auto* c = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
                std::string text =
                    std::to_string(c->reply_code) + " " + amqp::String(c->reply_text);
                amqp_channel_close_ok_t ok{};
                (void)amqp_send_method(st, frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
                if (frame.channel == kAdmin) {
                    admin_open_ = false;
                    return {};
                }
                return Fail(ErrorCode::kUnavailable, "RabbitMQ closed the channel: " + text);
            }
            case AMQP_CONNECTION_CLOSE_METHOD: {
                const auto* c = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
                std::string text =
                    std::to_string(c->reply_code) + " " + amqp::String(c->reply_text);
                amqp_connection_close_ok_t ok{};
                (void)amqp_send_method(st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
                return Fail(ErrorCode::kUnavailable, "RabbitMQ closed the connection: " + text);
            }
            case AMQP_BASIC_CANCEL_METHOD:
                return Fail(ErrorCode::kUnavailable, "RabbitMQ cancelled a consumer");
            default:
                return {};
        }
    }

    Result<void> OnDeliver(amqp_channel_t channel, const amqp_basic_deliver_t& d) {
        const uint64_t tag = d.delivery_tag;
        const std::string consumer_tag = amqp::String(d.consumer_tag);
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(conn_.state(), channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            return Fail(ErrorCode::kUnavailable, "RabbitMQ read failed: " + amqp::ReplyText(r));
        }
        if (channel == kMembers) {
            OnHeartbeat(amqp::String(msg.body));
            amqp_destroy_message(&msg);
            return {};
        }
        const int slot_index = static_cast<int>(channel) - kFirstSlot;
        if (slot_index < 0 || slot_index >= static_cast<int>(slots_.size()) ||
            slots_[slot_index].state == Slot::State::kIdle) {
            // Read after its channel was closed (the broker has returned it), or unknown.
            amqp_destroy_message(&msg);
            return {};
        }
        Delivery dv;
        dv.body = amqp::String(msg.body);
        const amqp_basic_properties_t& props = msg.properties;
        if ((props._flags & AMQP_BASIC_MESSAGE_ID_FLAG) != 0) {
            dv.message_id = amqp::String(props.message_id);
        }
        int64_t prior = 0;
        int64_t redeliveries = 0;
        if ((props._flags & AMQP_BASIC_HEADERS_FLAG) != 0) {
            dv.partition_key = amqp::StrField(props.headers, kHeaderKey).value_or("");
            prior = amqp::IntField(props.headers, kHeaderAttempts).value_or(0);
            redeliveries = amqp::IntField(props.headers, kHeaderDeliveryCount).value_or(0);
            dv.enqueued_at_ms = amqp::IntField(props.headers, kHeaderEnqueued).value_or(0);
        }
        amqp_destroy_message(&msg);
        dv.attempt = static_cast<int>(prior + redeliveries + 1);

        // Consumer tag "c<topic index>.<partition>".
        int index = -1;
        int partition = -1;
        if (consumer_tag.size() > 1 && consumer_tag[0] == 'c') {
            const char* begin = consumer_tag.data() + 1;
            const char* end = consumer_tag.data() + consumer_tag.size();
            auto [p1, ec1] = std::from_chars(begin, end, index);
            if (ec1 == std::errc() && p1 < end && *p1 == '.') {
                auto [p2, ec2] = std::from_chars(p1 + 1, end, partition);
                if (ec2 != std::errc() || p2 != end) {
                    partition = -1;
                }
            }
        }
        const Slot& slot = slots_[slot_index];
        if (index != slot.topic->index || partition != slot.partition) {
            spdlog::error("work queue: delivery for unknown consumer {}; requeued", consumer_tag);
            (void)amqp_basic_nack(conn_.state(), channel, tag, 0, 1);
            return {};
        }
        TopicRt& t = *consumed_[index];
        dv.topic = t.name;
        dv.partition = partition;
        t.buffered[partition].push_back(Buffered{tag, std::move(dv)});
        return {};
    }

    void OnConfirm(uint64_t tag, bool multiple, bool ack) {
        auto first = multiple ? unconfirmed_.begin() : unconfirmed_.find(tag);
        auto last = multiple ? unconfirmed_.upper_bound(tag)
                             : (first == unconfirmed_.end() ? first : std::next(first));
        // Resolve after erasing: resolving may publish (and so add entries).
        std::vector<Unconfirmed> resolved;
        for (auto it = first; it != last;) {
            resolved.push_back(std::move(it->second));
            it = unconfirmed_.erase(it);
        }
        for (auto& u : resolved) {
            Resolve(u, ack && !u.returned);
        }
    }

    void Resolve(Unconfirmed& u, bool ok) {
        switch (u.kind) {
            case Unconfirmed::Kind::kBatch: {
                Batch& b = *u.batch;
                if (b.finished) {
                    return;
                }
                if (!ok) {
                    Finish(b, Fail(ErrorCode::kUnavailable,
                                   u.returned ? "RabbitMQ could not route message " + u.message_id
                                              : "RabbitMQ refused message " + u.message_id));
                    return;
                }
                if (!b.confirmed[u.index]) {
                    b.confirmed[u.index] = 1;
                    if (--b.unconfirmed == 0) {
                        Finish(b, {});
                    }
                }
                return;
            }
            case Unconfirmed::Kind::kSettle: {
                // The copy (retry or dead letter) is safe: drop the original. If the broker
                // refused the copy, return the original to its queue instead.
                if (u.slot < 0 || u.slot >= static_cast<int>(slots_.size())) {
                    return;
                }
                Slot& slot = slots_[u.slot];
                if (slot.epoch != u.epoch || slot.state == Slot::State::kIdle) {
                    return;  // its channel is closed: the broker has the original again
                }
                --slot.settling;
                const amqp_channel_t ch = ChannelOf(u.slot);
                int rc = ok ? amqp_basic_ack(conn_.state(), ch, u.original_tag, 0)
                            : amqp_basic_nack(conn_.state(), ch, u.original_tag, 0, 1);
                if (rc != AMQP_STATUS_OK) {
                    broken_ = std::string("RabbitMQ ack failed: ") + amqp_error_string2(rc);
                }
                return;
            }
            case Unconfirmed::Kind::kRequeue:
                *u.outcome = ok ? 1 : -1;
                return;
        }
    }

    Result<void> OnReturn(amqp_channel_t channel) {
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(conn_.state(), channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            return Fail(ErrorCode::kUnavailable, "RabbitMQ read failed: " + amqp::ReplyText(r));
        }
        std::string id;
        if ((msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG) != 0) {
            id = amqp::String(msg.properties.message_id);
        }
        amqp_destroy_message(&msg);
        spdlog::error("work queue: RabbitMQ returned unroutable message {}", id);
        for (auto& [tag, u] : unconfirmed_) {
            if (!u.returned && u.message_id == id) {
                u.returned = true;
                break;
            }
        }
        // Topology may have been deleted under us: declare again before the next publish.
        for (auto& [name, t] : topics_) {
            t->declared = false;
        }
        return {};
    }

    /// Hands buffered deliveries to consumers: per topic, one per idle partition (round robin)
    /// while under the concurrency limit.
    void HandOut() {
        for (TopicRt* t : consumed_) {
            const int partitions = t->options.partitions;
            int scanned = 0;
            while (t->handed < t->options.concurrency && scanned < partitions) {
                const int p = t->cursor;
                t->cursor = (t->cursor + 1) % partitions;
                ++scanned;
                if (t->busy[p] || t->buffered[p].empty() ||
                    slots_[t->first_slot + p].state != Slot::State::kActive) {
                    continue;
                }
                const int slot = t->first_slot + p;
                const uint64_t epoch = slots_[slot].epoch;
                Buffered b = std::move(t->buffered[p].front());
                t->buffered[p].pop_front();
                scanned = 0;  // something changed: give every partition another look
                if (b.delivery.attempt > t->options.max_attempts) {
                    // Redelivered by the broker (crashes, disconnects) beyond the limit.
                    Handed h{t,  p,    generation_, b.delivery_tag, std::move(b.delivery),
                             {}, slot, epoch};
                    const int attempts = h.delivery.attempt - 1;
                    if (auto r = PublishDead(h, attempts,
                                             "delivered " + std::to_string(attempts) +
                                                 " times without being settled");
                        !r) {
                        broken_ = r.error().message;
                        return;
                    }
                    continue;
                }
                const uint64_t token = ++next_token_;
                t->busy[p] = 1;
                ++t->handed;
                Delivery copy = b.delivery;
                handed_.emplace(token,
                                Handed{t, p, generation_, b.delivery_tag, std::move(b.delivery),
                                       SteadyClock::now() + t->options.lease, slot, epoch});
                auto settlement = std::make_shared<RabbitSettlement>(shared_, token);
                auto consumer = t->consumer;
                if (options_.loops.empty()) {
                    (*consumer)(std::move(copy), std::move(settlement));
                } else {
                    core::Loop* loop =
                        options_.loops[static_cast<size_t>(p) % options_.loops.size()];
                    loop->Post(
                        [consumer, d = std::move(copy), s = std::move(settlement)]() mutable {
                            (*consumer)(std::move(d), std::move(s));
                        });
                }
            }
        }
    }

    /// Deliveries unsettled past their lease free their partition and go back to the broker
    /// (redelivered with attempt + 1; a late settlement is ignored).
    void ExpireLeases() {
        const auto now = SteadyClock::now();
        if (now < next_lease_check_) {
            return;
        }
        next_lease_check_ = now + std::chrono::milliseconds(100);
        for (auto it = handed_.begin(); it != handed_.end();) {
            Handed& h = it->second;
            if (now < h.lease_until) {
                ++it;
                continue;
            }
            spdlog::warn("work queue: lease of message {} in {} expired; redelivering",
                         h.delivery.message_id, h.topic->name);
            h.topic->busy[h.partition] = 0;
            --h.topic->handed;
            if (conn_.is_open() && h.generation == generation_ && HeldOpen(h) &&
                amqp_basic_nack(conn_.state(), ChannelOf(h.slot), h.delivery_tag, 0, 1) !=
                    AMQP_STATUS_OK) {
                broken_ = "RabbitMQ nack failed";
            }
            it = handed_.erase(it);
        }
    }

    /// True while the channel `h` came on is still the slot's open channel.
    bool HeldOpen(const Handed& h) const {
        const Slot& slot = slots_[h.slot];
        return slot.epoch == h.epoch && slot.state != Slot::State::kIdle;
    }

    void ProcessSettle(const SettleCmd& cmd) {
        auto it = handed_.find(cmd.token);
        if (it == handed_.end()) {
            return;
        }
        Handed h = std::move(it->second);
        handed_.erase(it);
        h.topic->busy[h.partition] = 0;
        --h.topic->handed;
        if (!conn_.is_open() || h.generation != generation_ || broken_ || !HeldOpen(h)) {
            // That connection is gone (or going: a publish queued before this settlement may
            // not have reached the broker): the broker redelivers the message.
            return;
        }
        Result<void> r;
        switch (cmd.kind) {
            case SettleKind::kAck: {
                int rc = amqp_basic_ack(conn_.state(), ChannelOf(h.slot), h.delivery_tag, 0);
                if (rc != AMQP_STATUS_OK) {
                    r = Fail(ErrorCode::kUnavailable,
                             std::string("RabbitMQ ack failed: ") + amqp_error_string2(rc));
                }
                break;
            }
            case SettleKind::kRetry:
                if (h.delivery.attempt >= h.topic->options.max_attempts) {
                    r = PublishDead(h, h.delivery.attempt, cmd.reason);
                } else {
                    r = PublishRetry(h, cmd.delay_ms, cmd.reason);
                }
                break;
            case SettleKind::kDeadLetter:
                r = PublishDead(h, h.delivery.attempt, cmd.reason);
                break;
        }
        if (!r) {
            broken_ = r.error().message;
        }
    }

    /// Republishes a retried delivery (attempts so far in a header); the original is acked when
    /// the copy is confirmed.
    Result<void> PublishRetry(const Handed& h, int64_t delay_ms, const std::string& reason) {
        amqp::Table headers;
        headers.Str(kHeaderKey, h.delivery.partition_key)
            .Int(kHeaderAttempts, h.delivery.attempt)
            .Int(kHeaderEnqueued, h.delivery.enqueued_at_ms)
            .Str(kHeaderReason, reason);
        auto tag = SendToPartition(*h.topic, h.partition, delay_ms, headers, h.delivery.message_id,
                                   h.delivery.body);
        if (!tag) {
            return tl::unexpected(tag.error());
        }
        Unconfirmed u;
        u.kind = Unconfirmed::Kind::kSettle;
        u.original_tag = h.delivery_tag;
        u.slot = h.slot;
        u.epoch = h.epoch;
        u.message_id = h.delivery.message_id;
        unconfirmed_.emplace(*tag, std::move(u));
        ++slots_[h.slot].settling;
        return {};
    }

    /// Copies a delivery to the dead queue; the original is acked when the copy is confirmed.
    Result<void> PublishDead(const Handed& h, int attempts, const std::string& reason) {
        if (auto r = EnsureTopology(*h.topic); !r) {
            return r;
        }
        amqp::Table headers;
        headers.Str(kHeaderKey, h.delivery.partition_key)
            .Int(kHeaderAttempts, attempts)
            .Int(kHeaderEnqueued, h.delivery.enqueued_at_ms)
            .Str(kHeaderReason, reason)
            .Int(kHeaderDeadAt, NowMs());
        auto tag = Send("", DeadQueue(options_.prefix, h.topic->name), headers,
                        h.delivery.message_id, h.delivery.body, 0);
        if (!tag) {
            return tl::unexpected(tag.error());
        }
        Unconfirmed u;
        u.kind = Unconfirmed::Kind::kSettle;
        u.original_tag = h.delivery_tag;
        u.slot = h.slot;
        u.epoch = h.epoch;
        u.message_id = h.delivery.message_id;
        unconfirmed_.emplace(*tag, std::move(u));
        ++slots_[h.slot].settling;
        return {};
    }

    /// The connection is gone: drop it, forget its deliveries (the broker redelivers them),
    /// queue unconfirmed publishes again and schedule a reconnect.
    void Disconnect(const std::string& reason) {
        spdlog::warn("work queue: RabbitMQ connection lost: {}; reconnecting", reason);
        {
            std::lock_guard lock(error_mu_);
            last_error_ = reason;
        }
        conn_.Close(false);
        ++generation_;
        admin_open_ = false;
        broken_.reset();
        for (Slot& slot : slots_) {
            slot.state = Slot::State::kIdle;
            slot.settling = 0;
            ++slot.epoch;
        }
        for (auto& [name, t] : topics_) {
            for (auto& q : t->buffered) {
                q.clear();
            }
            t->declared = false;
            t->buckets = 0;
        }
        for (auto& [tag, u] : unconfirmed_) {
            if (u.kind == Unconfirmed::Kind::kRequeue) {
                *u.outcome = -1;
            }
        }
        unconfirmed_.clear();
        next_tag_ = 1;
        // Unconfirmed batches go first, in their original order.
        std::deque<BatchPtr> again;
        for (auto& b : open_batches_) {
            if (!b->finished) {
                again.push_back(b);
            }
        }
        open_batches_.clear();
        for (auto& b : waiting_) {
            again.push_back(std::move(b));
        }
        waiting_.swap(again);
        ScheduleReconnect();
    }

    void Shutdown() {
        TakeCommands();
        if (conn_.is_open()) {
            // Flush: publish what is queued and wait (bounded) for its confirms.
            auto deadline = SteadyClock::now() + std::min<SteadyClock::duration>(
                                                     options_.publish_timeout, kShutdownFlush);
            Result<void> r = PublishWaiting();
            while (r && SteadyClock::now() < deadline) {
                ExpireBatches();
                if (open_batches_.empty() && waiting_.empty()) {
                    break;
                }
                r = ReadFrames(true);
            }
            if (r && !broken_ && !consumed_.empty()) {
                // The others take this instance's partitions at once (not after member_timeout).
                r = SendHeartbeat(true);
            }
            if (r && !broken_) {
                conn_.Close(true, {kMain});
            } else {
                conn_.Close(false);
            }
        }
        for (auto* list : {&open_batches_}) {
            for (auto& b : *list) {
                Finish(*b, Fail(ErrorCode::kUnavailable, "work queue stopped"));
            }
            list->clear();
        }
        for (auto& b : waiting_) {
            Finish(*b, Fail(ErrorCode::kUnavailable, "work queue stopped"));
        }
        waiting_.clear();
        std::deque<BatchPtr> late;
        std::vector<Job> jobs;
        {
            std::lock_guard lock(shared_->mu);
            shared_->exited = true;
            late.swap(shared_->publishes);
            jobs.swap(shared_->jobs);
            shared_->settles.clear();
        }
        for (auto& b : late) {
            Finish(*b, Fail(ErrorCode::kUnavailable, "work queue stopped"));
        }
        for (auto& j : jobs) {
            j(false);
        }
    }

    // ---- Admin operations (I/O thread) ----

    Result<void> EnsureAdmin() {
        if (admin_open_) {
            return {};
        }
        if (auto r = conn_.OpenChannel(kAdmin); !r) {
            broken_ = r.error().message;
            return r;
        }
        admin_open_ = true;
        return {};
    }

    /// A failed RPC on the admin channel: a channel error closes only that channel (answered
    /// here); anything else breaks the connection. Returns the server code (404, ...) or 0.
    int AdminFailure(const amqp_rpc_reply_t& reply, std::string* text) {
        *text = amqp::ReplyText(reply);
        if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
            reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_ok_t ok{};
            (void)amqp_send_method(conn_.state(), kAdmin, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
            admin_open_ = false;
            return amqp::ServerCode(reply);
        }
        broken_ = *text;
        return 0;
    }

    /// Ready message count of `queue`; nullopt if it does not exist.
    Result<std::optional<uint32_t>> CountQueue(const std::string& queue) {
        if (auto r = EnsureAdmin(); !r) {
            return tl::unexpected(r.error());
        }
        auto* ok = amqp_queue_declare(conn_.state(), kAdmin, amqp::Bytes(queue), 1, 0, 0, 0,
                                      amqp_empty_table);
        if (ok != nullptr) {
            return std::optional<uint32_t>(ok->message_count);
        }
        std::string text;
        if (AdminFailure(amqp_get_rpc_reply(conn_.state()), &text) == 404) {
            return std::optional<uint32_t>();
        }
        return Fail(ErrorCode::kUnavailable, "RabbitMQ queue.declare " + queue + ": " + text);
    }

    /// StatsOnThread, answered from the last success for a second: readiness probes and
    /// metrics ask often, and one answer costs a queue.declare per queue of the topic (about
    /// 60; a missing delay queue also closes the admin channel). A lost connection still fails
    /// at once.
    Result<TopicStats> CachedStatsOnThread(const std::string& topic) {
        if (!conn_.is_open()) {
            return Fail(ErrorCode::kUnavailable, "not connected to RabbitMQ: " + LastError());
        }
        const auto now = std::chrono::steady_clock::now();
        if (auto it = stats_cache_.find(topic);
            it != stats_cache_.end() && now - it->second.first < std::chrono::seconds(1)) {
            return it->second.second;
        }
        auto fresh = StatsOnThread(topic);
        if (fresh) {
            stats_cache_[topic] = {now, *fresh};
        } else {
            stats_cache_.erase(topic);
        }
        return fresh;
    }

    Result<TopicStats> StatsOnThread(const std::string& topic) {
        if (!conn_.is_open()) {
            return Fail(ErrorCode::kUnavailable, "not connected to RabbitMQ: " + LastError());
        }
        TopicStats stats;
        auto it = topics_.find(topic);
        const TopicRt* local = it == topics_.end() ? nullptr : it->second.get();
        if (local != nullptr && local->index >= 0) {
            stats.partitions_owned = 0;
            for (int p = 0; p < local->options.partitions; ++p) {
                stats.partitions_owned +=
                    slots_[local->first_slot + p].state == Slot::State::kActive ? 1 : 0;
            }
            stats.members = static_cast<int64_t>(alive_.size());
        }
        if (local != nullptr) {
            stats.in_flight = local->handed;
            for (const auto& q : local->buffered) {
                stats.in_flight += static_cast<int64_t>(q.size());
            }
        }
        auto dead = CountQueue(DeadQueue(options_.prefix, topic));
        if (!dead) {
            return tl::unexpected(dead.error());
        }
        if (!dead->has_value()) {
            return stats;  // topology never declared: nothing was ever published
        }
        stats.dead = **dead;
        const int partitions = Sanitized(OptionsFor(options_, topic)).partitions;
        for (int p = 0; p < partitions; ++p) {
            auto n = CountQueue(PartitionQueue(options_.prefix, topic, p));
            if (!n) {
                return tl::unexpected(n.error());
            }
            stats.ready += n->value_or(0);
        }
        for (int b = 0; b < kBuckets; ++b) {
            auto n = CountQueue(DelayQueue(options_.prefix, topic, b));
            if (!n) {
                return tl::unexpected(n.error());
            }
            stats.delayed += n->value_or(0);
        }
        return stats;
    }

    /// Fetches (without acking) every message of the dead queue of `topic`, oldest first.
    Result<std::vector<Browsed>> Browse(const std::string& topic) {
        std::vector<Browsed> out;
        std::string queue = DeadQueue(options_.prefix, topic);
        auto count = CountQueue(queue);
        if (!count) {
            return tl::unexpected(count.error());
        }
        if (!count->has_value()) {
            return out;
        }
        for (int i = 0; i < kMaxBrowse; ++i) {
            amqp_rpc_reply_t reply = amqp_basic_get(conn_.state(), kAdmin, amqp::Bytes(queue), 0);
            if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
                std::string text;
                AdminFailure(reply, &text);
                return Fail(ErrorCode::kUnavailable, "RabbitMQ basic.get " + queue + ": " + text);
            }
            if (reply.reply.id != AMQP_BASIC_GET_OK_METHOD) {
                break;  // get-empty
            }
            const uint64_t tag =
                static_cast<amqp_basic_get_ok_t*>(reply.reply.decoded)->delivery_tag;
            amqp_message_t msg;
            amqp_rpc_reply_t r = amqp_read_message(conn_.state(), kAdmin, &msg, 0);
            if (r.reply_type != AMQP_RESPONSE_NORMAL) {
                broken_ = amqp::ReplyText(r);
                return Fail(ErrorCode::kUnavailable, "RabbitMQ read failed: " + *broken_);
            }
            Browsed b;
            b.tag = tag;
            b.message.topic = topic;
            b.message.body = amqp::String(msg.body);
            const amqp_basic_properties_t& props = msg.properties;
            if ((props._flags & AMQP_BASIC_MESSAGE_ID_FLAG) != 0) {
                b.message.message_id = amqp::String(props.message_id);
            }
            if ((props._flags & AMQP_BASIC_HEADERS_FLAG) != 0) {
                b.message.partition_key = amqp::StrField(props.headers, kHeaderKey).value_or("");
                b.message.attempts =
                    static_cast<int>(amqp::IntField(props.headers, kHeaderAttempts).value_or(0));
                b.message.reason = amqp::StrField(props.headers, kHeaderReason).value_or("");
                b.message.dead_at_ms = amqp::IntField(props.headers, kHeaderDeadAt).value_or(0);
                b.enqueued_at_ms = amqp::IntField(props.headers, kHeaderEnqueued).value_or(0);
            }
            amqp_destroy_message(&msg);
            out.push_back(std::move(b));
            amqp_maybe_release_buffers_on_channel(conn_.state(), kAdmin);
        }
        return out;
    }

    /// Returns browsed messages to the dead queue.
    void ReturnBrowsed(const std::vector<Browsed>& browsed, uint64_t except_tag) {
        for (const auto& b : browsed) {
            if (b.tag == except_tag) {
                continue;
            }
            if (amqp_basic_nack(conn_.state(), kAdmin, b.tag, 0, 1) != AMQP_STATUS_OK) {
                broken_ = "RabbitMQ nack failed";
                return;
            }
        }
    }

    Result<std::vector<DeadMessage>> ListDeadOnThread(const std::string& topic, int limit) {
        if (!conn_.is_open()) {
            return Fail(ErrorCode::kUnavailable, "not connected to RabbitMQ: " + LastError());
        }
        auto browsed = Browse(topic);
        if (!browsed) {
            return tl::unexpected(browsed.error());
        }
        ReturnBrowsed(*browsed, 0);
        std::vector<std::pair<size_t, DeadMessage>> ordered;
        for (size_t i = 0; i < browsed->size(); ++i) {
            ordered.emplace_back(i, std::move((*browsed)[i].message));
        }
        // Newest first; within a millisecond, later in the queue is newer.
        std::sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) {
            if (a.second.dead_at_ms != b.second.dead_at_ms) {
                return a.second.dead_at_ms > b.second.dead_at_ms;
            }
            return a.first > b.first;
        });
        std::vector<DeadMessage> out;
        for (auto& [i, m] : ordered) {
            if (static_cast<int>(out.size()) >= std::max(0, limit)) {
                break;
            }
            out.push_back(std::move(m));
        }
        return out;
    }

    Result<bool> RequeueOnThread(const std::string& topic, const std::string& message_id) {
        if (!conn_.is_open()) {
            return Fail(ErrorCode::kUnavailable, "not connected to RabbitMQ: " + LastError());
        }
        auto browsed = Browse(topic);
        if (!browsed) {
            return tl::unexpected(browsed.error());
        }
        auto found = std::find_if(browsed->begin(), browsed->end(), [&](const Browsed& b) {
            return b.message.message_id == message_id;
        });
        if (found == browsed->end()) {
            ReturnBrowsed(*browsed, 0);
            return false;
        }
        const uint64_t found_tag = found->tag;
        ReturnBrowsed(*browsed, found_tag);
        // Back to its partition with a fresh attempt count; the dead copy is acked once the
        // new one is confirmed.
        TopicRt& t = Topic(topic);
        amqp::Table headers;
        headers.Str(kHeaderKey, found->message.partition_key)
            .Int(kHeaderAttempts, 0)
            .Int(kHeaderEnqueued, found->enqueued_at_ms);
        auto tag =
            SendToPartition(t, PartitionOf(found->message.partition_key, t.options.partitions), 0,
                            headers, found->message.message_id, found->message.body);
        if (!tag) {
            broken_ = tag.error().message;
            return tl::unexpected(tag.error());
        }
        auto outcome = std::make_shared<int>(0);
        Unconfirmed u;
        u.kind = Unconfirmed::Kind::kRequeue;
        u.outcome = outcome;
        u.message_id = message_id;
        unconfirmed_.emplace(*tag, std::move(u));
        const auto deadline = SteadyClock::now() + options_.publish_timeout;
        while (*outcome == 0 && SteadyClock::now() < deadline) {
            if (auto r = ReadFrames(true); !r) {
                broken_ = r.error().message;
                return tl::unexpected(r.error());
            }
        }
        if (*outcome != 1) {
            if (admin_open_) {
                (void)amqp_basic_nack(conn_.state(), kAdmin, found_tag, 0, 1);
            }
            return Fail(ErrorCode::kUnavailable, "RabbitMQ did not confirm the requeue");
        }
        if (!admin_open_ || amqp_basic_ack(conn_.state(), kAdmin, found_tag, 0) != AMQP_STATUS_OK) {
            // The dead copy stays (it was returned when the channel closed): a duplicate, not a
            // loss.
            spdlog::warn("work queue: requeued {} but could not remove its dead copy", message_id);
        }
        return true;
    }

    RabbitMqQueueOptions options_;
    std::shared_ptr<Shared> shared_;

    std::mutex consumers_mu_;
    std::map<std::string, std::shared_ptr<const ConsumerFn>, std::less<>> consumers_;
    bool started_ = false;  // guarded by consumers_mu_

    std::mutex join_mu_;
    std::thread thread_;
    std::atomic<bool> thread_started_{false};
    std::promise<void> first_connect_;
    std::future<void> first_connect_future_;

    std::mutex error_mu_;
    std::string last_error_;

    // I/O thread only (and Start() before the thread exists).
    amqp::Connection conn_;
    uint64_t generation_ = 0;
    bool ever_connected_ = false;
    int connect_failures_ = 0;
    std::chrono::milliseconds backoff_;
    SteadyClock::time_point next_connect_{};
    std::mt19937_64 rng_;
    bool admin_open_ = false;
    std::optional<std::string> broken_;  // the connection failed inside a callback or job
    std::map<std::string, std::unique_ptr<TopicRt>, std::less<>> topics_;
    /// CachedStatsOnThread's last success per topic (I/O thread only).
    std::map<std::string, std::pair<std::chrono::steady_clock::time_point, TopicStats>>
        stats_cache_;
    std::vector<TopicRt*> consumed_;
    std::unordered_map<uint64_t, Handed> handed_;
    uint64_t next_token_ = 0;
    SteadyClock::time_point next_lease_check_{};
    std::map<uint64_t, Unconfirmed> unconfirmed_;
    uint64_t next_tag_ = 1;
    std::vector<Slot> slots_;                               // consumed partitions (fixed at Start)
    std::map<std::string, SteadyClock::time_point> peers_;  // other members: last heartbeat
    std::vector<std::string> alive_;                        // sorted, this instance included
    bool membership_dirty_ = false;
    SteadyClock::time_point next_heartbeat_{};
    SteadyClock::time_point next_member_check_{};
    std::deque<BatchPtr> waiting_;        // not yet (re)published
    std::vector<BatchPtr> open_batches_;  // published, not all confirmed
};

}  // namespace

bool ParseAmqpUrl(std::string_view url, RabbitMqQueueOptions& options) {
    constexpr std::string_view kScheme = "amqp://";
    if (url.substr(0, kScheme.size()) != kScheme) {
        return false;
    }
    std::string_view rest = url.substr(kScheme.size());
    std::string_view authority = rest.substr(0, rest.find('/'));
    std::string_view path =
        authority.size() < rest.size() ? rest.substr(authority.size() + 1) : std::string_view();
    RabbitMqQueueOptions parsed = options;
    if (auto at = authority.rfind('@'); at != std::string_view::npos) {
        std::string_view userinfo = authority.substr(0, at);
        authority = authority.substr(at + 1);
        auto colon = userinfo.find(':');
        if (!core::PercentDecode(userinfo.substr(0, colon), parsed.user)) {
            return false;
        }
        if (colon != std::string_view::npos &&
            !core::PercentDecode(userinfo.substr(colon + 1), parsed.password)) {
            return false;
        }
    }
    std::string_view host = authority;
    if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
        host = authority.substr(0, colon);
        std::string_view port = authority.substr(colon + 1);
        int value = 0;
        auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
        if (ec != std::errc() || ptr != port.data() + port.size() || value <= 0 || value > 65535) {
            return false;
        }
        parsed.port = value;
    } else {
        parsed.port = 5672;
    }
    if (host.empty()) {
        return false;
    }
    parsed.host = std::string(host);
    if (path.empty()) {
        parsed.vhost = "/";
    } else if (!core::PercentDecode(path, parsed.vhost)) {
        return false;
    }
    options = std::move(parsed);
    return true;
}

std::unique_ptr<WorkQueue> MakeRabbitMqQueue(RabbitMqQueueOptions options) {
    return std::make_unique<RabbitMqQueue>(std::move(options));
}

core::Result<void> DeleteRabbitMqTopology(const RabbitMqQueueOptions& options,
                                          const std::vector<std::string>& topics) {
    amqp::Connection conn;
    if (auto r = conn.Open(ParamsOf(options)); !r) {
        return r;
    }
    bool channel_open = false;
    auto ensure_channel = [&]() -> Result<void> {
        if (!channel_open) {
            if (auto r = conn.OpenChannel(kMain); !r) {
                return r;
            }
            channel_open = true;
        }
        return {};
    };
    // A missing queue or exchange may close the channel (404): reopen and go on.
    auto check = [&](bool ok, const std::string& what) -> Result<void> {
        if (ok) {
            return {};
        }
        amqp_rpc_reply_t reply = amqp_get_rpc_reply(conn.state());
        if (reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
            reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_ok_t close_ok{};
            (void)amqp_send_method(conn.state(), kMain, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
            channel_open = false;
            if (amqp::ServerCode(reply) == 404) {
                return {};
            }
        }
        return Fail(ErrorCode::kUnavailable, what + ": " + amqp::ReplyText(reply));
    };
    for (const auto& topic : topics) {
        std::vector<std::string> queues;
        const int partitions = Sanitized(OptionsFor(options, topic)).partitions;
        for (int p = 0; p < partitions; ++p) {
            queues.push_back(PartitionQueue(options.prefix, topic, p));
        }
        queues.push_back(DeadQueue(options.prefix, topic));
        for (int b = 0; b < kBuckets; ++b) {
            queues.push_back(DelayQueue(options.prefix, topic, b));
        }
        for (const auto& q : queues) {
            if (auto r = ensure_channel(); !r) {
                return r;
            }
            bool ok = amqp_queue_delete(conn.state(), kMain, amqp::Bytes(q), 0, 0) != nullptr;
            if (auto r = check(ok, "queue.delete " + q); !r) {
                return r;
            }
        }
        if (auto r = ensure_channel(); !r) {
            return r;
        }
        std::string exchange = DelayExchange(options.prefix, topic);
        bool ok = amqp_exchange_delete(conn.state(), kMain, amqp::Bytes(exchange), 0) != nullptr;
        if (auto r = check(ok, "exchange.delete " + exchange); !r) {
            return r;
        }
    }
    if (auto r = ensure_channel(); !r) {
        return r;
    }
    std::string members = MembersExchange(options.prefix);
    bool ok = amqp_exchange_delete(conn.state(), kMain, amqp::Bytes(members), 0) != nullptr;
    if (auto r = check(ok, "exchange.delete " + members); !r) {
        return r;
    }
    conn.Close(true, {kMain});
    return {};
}

RabbitMqOwnership RabbitMqOwnershipForTesting(WorkQueue& queue, std::string_view topic) {
    auto* q = dynamic_cast<RabbitMqQueue*>(&queue);
    return q != nullptr ? q->Ownership(topic) : RabbitMqOwnership{};
}

bool DropRabbitMqConnectionForTesting(WorkQueue& queue) {
    auto* q = dynamic_cast<RabbitMqQueue*>(&queue);
    return q != nullptr && q->DropConnection();
}

}  // namespace conduit::bus
