#pragma once

#include "core/loop.hpp"

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace conduit::testing {

/// A core::Loop driven by hand: Post() queues (thread-safe), RunPending() runs the queue on the
/// calling thread, timers fire only through AdvanceBy(). The calling thread counts as the loop
/// thread.
class FakeLoop final : public core::Loop {
public:
    size_t Index() const override { return 0; }
    void Post(std::function<void()> fn) override {
        std::lock_guard lock(mu_);
        queue_.push_back(std::move(fn));
    }
    core::TimerPtr StartTimer(std::chrono::nanoseconds delay, std::function<void()> fn) override {
        auto t = std::make_shared<FakeTimer>();
        t->due = now_ + delay;
        t->fn = std::move(fn);
        timers_.push_back(t);
        return t;
    }
    bool InLoopThread() const override { return true; }

    /// Runs queued work until the queue is empty. Returns how many items ran.
    size_t RunPending() {
        size_t n = 0;
        for (;;) {
            std::function<void()> fn;
            {
                std::lock_guard lock(mu_);
                if (queue_.empty()) {
                    return n;
                }
                fn = std::move(queue_.front());
                queue_.pop_front();
            }
            fn();
            ++n;
        }
    }
    /// Moves fake time forward, firing due timers in order (and running posted work).
    void AdvanceBy(std::chrono::nanoseconds d) {
        now_ += d;
        for (;;) {
            RunPending();
            std::shared_ptr<FakeTimer> next;
            for (auto& t : timers_) {
                if (!t->cancelled && !t->fired && t->due <= now_ && (!next || t->due < next->due)) {
                    next = t;
                }
            }
            if (!next) {
                break;
            }
            next->fired = true;
            next->fn();
        }
        std::erase_if(timers_, [](const auto& t) { return t->fired || t->cancelled; });
    }

private:
    struct FakeTimer : core::Timer {
        void Cancel() override { cancelled = true; }
        std::chrono::nanoseconds due{0};
        std::function<void()> fn;
        bool cancelled = false;
        bool fired = false;
    };
    std::mutex mu_;
    std::deque<std::function<void()>> queue_;
    std::vector<std::shared_ptr<FakeTimer>> timers_;
    std::chrono::nanoseconds now_{0};
};

}  // namespace conduit::testing
