#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>

namespace conduit::core {

/// A cancellable one-shot timer. Cancel() must be called on the owning loop's thread; after it
/// returns the callback will not run.
class Timer {
public:
    virtual ~Timer() = default;
    virtual void Cancel() = 0;
};
using TimerPtr = std::shared_ptr<Timer>;

/// One event loop (one shard, one thread). Lets code outside the net layer post work and set
/// timers without including Asio.
class Loop {
public:
    virtual ~Loop() = default;
    /// Index of this shard, 0..N-1.
    virtual std::size_t Index() const = 0;
    /// Runs `fn` on this loop's thread. Callable from any thread.
    virtual void Post(std::function<void()> fn) = 0;
    /// Runs `fn` on this loop after `delay`. Loop thread only.
    virtual TimerPtr StartTimer(std::chrono::nanoseconds delay, std::function<void()> fn) = 0;
    /// True when called on this loop's thread.
    virtual bool InLoopThread() const = 0;
};

/// The loop whose thread is calling, or nullptr off the loops. Set by the runtime for each loop
/// thread (code that runs inside a loop callback can find its loop without passing it around).
Loop* CurrentLoop();
/// Used by the runtime when a loop thread starts.
void SetCurrentLoop(Loop* loop);

}  // namespace conduit::core
