#pragma once

#include "core/loop.hpp"

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace conduit::store {

/// A dedicated thread that runs blocking store calls in submission order, so event loops never
/// block on the database (DESIGN §2).
class Executor {
public:
    explicit Executor(std::string name = "store");
    ~Executor();
    Executor(const Executor&) = delete;
    Executor& operator=(const Executor&) = delete;

    /// Queues `job`. Thread-safe. Jobs submitted after Stop() are dropped.
    void Submit(std::function<void()> job);
    /// Runs the jobs already queued, then stops the thread. Idempotent.
    void Stop();
    /// Jobs queued and not yet started.
    size_t QueueDepth() const;

    /// Runs `fn` on the executor and delivers its result to `done` on `loop`'s thread.
    template <class Fn, class Done>
    void Call(core::Loop& loop, Fn fn, Done done) {
        Submit([&loop, fn = std::move(fn), done = std::move(done)]() mutable {
            auto result = std::make_shared<decltype(fn())>(fn());
            loop.Post([done = std::move(done), result]() mutable { done(std::move(*result)); });
        });
    }

private:
    void Run();

    mutable std::mutex mu_;  // guards queue_, stopping_
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace conduit::store
