#pragma once

#include "bus/work_queue.hpp"

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::testing {

/// An in-memory bus::WorkQueue for tests. Thread-safe.
///
/// - Publish() records the messages (see published(), publish_batches()), makes them ready and
///   calls `done` synchronously on the calling thread — unless HoldPublishes(true), then `done`
///   waits for ReleasePublishes(); FailPublishes(error) makes every later Publish fail.
/// - Nothing is delivered by itself: DeliverNext() hands the oldest ready message (delay
///   ignored) to its topic's consumer on the calling thread; DeliverDue() hands every message
///   whose delay has passed (steady clock, real time) — drive it from a thread in integration
///   tests.
/// - Settlements are recorded (FakeSettlement): Retry makes the message ready again with
///   attempt + 1 after the delay, or dead-letters it when attempt reached the topic's
///   max_attempts (SetMaxAttempts; default 5); DeadLetter dead-letters; Ack removes.
class FakeWorkQueue final : public bus::WorkQueue {
public:
    enum class Kind { kPending, kAck, kRetry, kDeadLetter };

    /// The settlement handed with one delivery; records the first call.
    class FakeSettlement final : public bus::Settlement {
    public:
        FakeSettlement(FakeWorkQueue* queue, bus::Delivery d)
            : queue_(queue), delivery_(std::move(d)) {}

        void Ack() override { Settle(Kind::kAck, std::chrono::milliseconds(0), {}); }
        void Retry(std::chrono::milliseconds delay, std::string reason) override {
            Settle(Kind::kRetry, delay, std::move(reason));
        }
        void DeadLetter(std::string reason) override {
            Settle(Kind::kDeadLetter, std::chrono::milliseconds(0), std::move(reason));
        }

        Kind kind() const {
            std::lock_guard lock(mu_);
            return kind_;
        }
        bool settled() const { return kind() != Kind::kPending; }
        std::chrono::milliseconds delay() const {
            std::lock_guard lock(mu_);
            return delay_;
        }
        std::string reason() const {
            std::lock_guard lock(mu_);
            return reason_;
        }
        /// Settle calls after the first (ignored, but counted).
        int extra_calls() const {
            std::lock_guard lock(mu_);
            return extra_calls_;
        }
        const bus::Delivery& delivery() const { return delivery_; }

    private:
        void Settle(Kind k, std::chrono::milliseconds delay, std::string reason) {
            {
                std::lock_guard lock(mu_);
                if (kind_ != Kind::kPending) {
                    ++extra_calls_;
                    return;
                }
                kind_ = k;
                delay_ = delay;
                reason_ = reason;
            }
            queue_->OnSettled(delivery_, k, delay, std::move(reason));
        }

        FakeWorkQueue* queue_;
        bus::Delivery delivery_;
        mutable std::mutex mu_;
        Kind kind_ = Kind::kPending;
        std::chrono::milliseconds delay_{0};
        std::string reason_;
        int extra_calls_ = 0;
    };
    using SettlementPtr = std::shared_ptr<FakeSettlement>;

    // --- bus::WorkQueue ----------------------------------------------------------------------

    void Publish(std::vector<bus::OutgoingMessage> messages,
                 std::function<void(core::Result<void>)> done) override {
        std::optional<core::Error> failure;
        {
            std::lock_guard lock(mu_);
            publish_batches_.push_back(messages.size());
            failure = fail_publishes_;
            if (!failure) {
                for (auto& m : messages) {
                    if (m.message_id.empty()) {
                        m.message_id = "fake-" + std::to_string(++next_id_);
                    }
                    Ready r;
                    r.delivery.message_id = m.message_id;
                    r.delivery.topic = m.topic;
                    r.delivery.partition_key = m.partition_key;
                    r.delivery.partition = PartitionLocked(m.topic, m.partition_key);
                    r.delivery.body = m.body;
                    r.delivery.attempt = 1;
                    r.delivery.enqueued_at_ms = 0;
                    r.delay = m.delay;
                    r.due_ns = NowNs() + std::chrono::nanoseconds(m.delay).count();
                    ready_.push_back(std::move(r));
                    published_.push_back(std::move(m));
                }
            }
            if (hold_publishes_) {
                held_.push_back([done = std::move(done), failure]() {
                    if (done) {
                        done(failure ? core::Result<void>(tl::unexpected(*failure))
                                     : core::Result<void>());
                    }
                });
                return;
            }
        }
        if (done) {
            done(failure ? core::Result<void>(tl::unexpected(*failure)) : core::Result<void>());
        }
    }

    void Consume(std::string topic, bus::ConsumerFn fn) override {
        std::lock_guard lock(mu_);
        consumers_[std::move(topic)] = std::move(fn);
    }
    core::Result<void> Start() override { return {}; }
    void Stop() override {}

    core::Result<bus::TopicStats> Stats(std::string_view topic) override {
        std::lock_guard lock(mu_);
        bus::TopicStats s;
        int64_t now = NowNs();
        for (const auto& r : ready_) {
            if (r.delivery.topic == topic) {
                (r.due_ns <= now ? s.ready : s.delayed) += 1;
            }
        }
        s.in_flight = in_flight_;
        for (const auto& d : dead_) {
            s.dead += d.topic == topic ? 1 : 0;
        }
        return s;
    }
    core::Result<std::vector<bus::DeadMessage>> ListDead(std::string_view topic,
                                                         int limit) override {
        std::lock_guard lock(mu_);
        std::vector<bus::DeadMessage> out;
        for (auto it = dead_.rbegin(); it != dead_.rend() && static_cast<int>(out.size()) < limit;
             ++it) {
            if (it->topic == topic) {
                out.push_back(*it);
            }
        }
        return out;
    }
    core::Result<bool> Requeue(std::string_view topic, std::string_view message_id) override {
        std::lock_guard lock(mu_);
        for (auto it = dead_.begin(); it != dead_.end(); ++it) {
            if (it->topic == topic && it->message_id == message_id) {
                Ready r;
                r.delivery.message_id = it->message_id;
                r.delivery.topic = it->topic;
                r.delivery.partition_key = it->partition_key;
                r.delivery.partition = PartitionLocked(it->topic, it->partition_key);
                r.delivery.body = it->body;
                r.due_ns = NowNs();
                ready_.push_back(std::move(r));
                dead_.erase(it);
                return true;
            }
        }
        return false;
    }
    std::string_view Engine() const override { return "fake"; }

    // --- Test controls -----------------------------------------------------------------------

    void SetMaxAttempts(const std::string& topic, int n) {
        std::lock_guard lock(mu_);
        max_attempts_[topic] = n;
    }
    void SetPartitions(int n) {
        std::lock_guard lock(mu_);
        partitions_ = n;
    }
    void FailPublishes(std::optional<core::Error> error) {
        std::lock_guard lock(mu_);
        fail_publishes_ = std::move(error);
    }
    void HoldPublishes(bool hold) {
        std::lock_guard lock(mu_);
        hold_publishes_ = hold;
    }
    /// Completes every held Publish (on the calling thread).
    void ReleasePublishes() {
        std::vector<std::function<void()>> held;
        {
            std::lock_guard lock(mu_);
            held.swap(held_);
        }
        for (auto& fn : held) {
            fn();
        }
    }

    /// Every message ever published successfully, in order.
    std::vector<bus::OutgoingMessage> published() const {
        std::lock_guard lock(mu_);
        return published_;
    }
    /// Size of every Publish call, in order (failed ones included).
    std::vector<size_t> publish_batches() const {
        std::lock_guard lock(mu_);
        return publish_batches_;
    }
    /// Messages waiting for delivery (delayed ones included).
    size_t ready_count() const {
        std::lock_guard lock(mu_);
        return ready_.size();
    }
    /// The delay of the oldest ready message (0 if none).
    std::chrono::milliseconds next_delay() const {
        std::lock_guard lock(mu_);
        return ready_.empty() ? std::chrono::milliseconds(0) : ready_.front().delay;
    }
    std::vector<bus::DeadMessage> dead() const {
        std::lock_guard lock(mu_);
        return dead_;
    }
    /// Deliveries handed out and not settled.
    int64_t in_flight() const {
        std::lock_guard lock(mu_);
        return in_flight_;
    }
    /// Every settlement handed out, in order.
    std::vector<SettlementPtr> settlements() const {
        std::lock_guard lock(mu_);
        return settlements_;
    }

    /// Delivers the oldest ready message (its delay ignored) to its consumer, on the calling
    /// thread. Returns its settlement, or nullptr when nothing is ready or no consumer exists.
    SettlementPtr DeliverNext() {
        bus::ConsumerFn fn;
        SettlementPtr s;
        {
            std::lock_guard lock(mu_);
            for (auto it = ready_.begin(); it != ready_.end(); ++it) {
                auto c = consumers_.find(it->delivery.topic);
                if (c == consumers_.end()) {
                    continue;
                }
                fn = c->second;
                s = std::make_shared<FakeSettlement>(this, it->delivery);
                ready_.erase(it);
                break;
            }
            if (!s) {
                return nullptr;
            }
            ++in_flight_;
            settlements_.push_back(s);
        }
        fn(s->delivery(), s);
        return s;
    }

    /// Delivers every ready message whose delay has passed. Returns how many.
    size_t DeliverDue() {
        size_t n = 0;
        for (;;) {
            bus::ConsumerFn fn;
            SettlementPtr s;
            {
                std::lock_guard lock(mu_);
                int64_t now = NowNs();
                for (auto it = ready_.begin(); it != ready_.end(); ++it) {
                    auto c = consumers_.find(it->delivery.topic);
                    if (it->due_ns > now || c == consumers_.end()) {
                        continue;
                    }
                    fn = c->second;
                    s = std::make_shared<FakeSettlement>(this, it->delivery);
                    ready_.erase(it);
                    break;
                }
                if (!s) {
                    return n;
                }
                ++in_flight_;
                settlements_.push_back(s);
            }
            fn(s->delivery(), s);
            ++n;
        }
    }

private:
    friend class FakeSettlement;

    struct Ready {
        bus::Delivery delivery;
        std::chrono::milliseconds delay{0};
        int64_t due_ns = 0;
    };

    static int64_t NowNs() {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }

    int PartitionLocked(const std::string&, const std::string& key) const {
        // FNV-1a, like bus::PartitionOf (not linked here: the fake needs only the header).
        uint32_t h = 2166136261u;
        for (unsigned char c : key) {
            h ^= c;
            h *= 16777619u;
        }
        return partitions_ > 0 ? static_cast<int>(h % static_cast<uint32_t>(partitions_)) : 0;
    }

    void OnSettled(const bus::Delivery& d,
                   Kind kind,
                   std::chrono::milliseconds delay,
                   std::string reason) {
        std::lock_guard lock(mu_);
        --in_flight_;
        if (kind == Kind::kAck) {
            return;
        }
        auto max = max_attempts_.find(d.topic);
        int max_attempts = max == max_attempts_.end() ? 5 : max->second;
        if (kind == Kind::kRetry && d.attempt < max_attempts) {
            Ready r;
            r.delivery = d;
            r.delivery.attempt = d.attempt + 1;
            r.delay = delay;
            r.due_ns = NowNs() + std::chrono::nanoseconds(delay).count();
            ready_.push_back(std::move(r));
            return;
        }
        bus::DeadMessage dm;
        dm.message_id = d.message_id;
        dm.topic = d.topic;
        dm.partition_key = d.partition_key;
        dm.body = d.body;
        dm.attempts = d.attempt;
        dm.reason = std::move(reason);
        dead_.push_back(std::move(dm));
    }

    mutable std::mutex mu_;
    std::map<std::string, bus::ConsumerFn, std::less<>> consumers_;
    std::deque<Ready> ready_;
    std::vector<bus::OutgoingMessage> published_;
    std::vector<size_t> publish_batches_;
    std::vector<bus::DeadMessage> dead_;
    std::vector<SettlementPtr> settlements_;
    std::map<std::string, int, std::less<>> max_attempts_;
    std::optional<core::Error> fail_publishes_;
    bool hold_publishes_ = false;
    std::vector<std::function<void()>> held_;
    int partitions_ = 4;
    int64_t in_flight_ = 0;
    uint64_t next_id_ = 0;
};

}  // namespace conduit::testing
