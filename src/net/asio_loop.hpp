#pragma once

#include "core/loop.hpp"

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <thread>

namespace conduit::net {

/// An io_context whose services can be shut down (all pending handlers destroyed) before it is
/// destroyed, so the runtime can tear down every loop's handlers while every loop still exists:
/// a handler of one loop may own objects of another (e.g. a server owning all acceptors).
class ShutdownableContext : public boost::asio::io_context {
public:
    using boost::asio::io_context::io_context;
    void ShutdownServices() { shutdown(); }
};

/// core::Loop over one Asio io_context. Include only from Asio-aware translation units.
class AsioLoop final : public core::Loop {
public:
    explicit AsioLoop(size_t index) : index_(index), context_(1) {}

    size_t Index() const override { return index_; }
    void Post(std::function<void()> fn) override;
    core::TimerPtr StartTimer(std::chrono::nanoseconds delay, std::function<void()> fn) override;
    bool InLoopThread() const override { return thread_id_.load() == std::this_thread::get_id(); }

    boost::asio::io_context& context() { return context_; }
    /// Destroys every pending handler (see ShutdownableContext). Only after the loop stopped.
    void ShutdownServices() { context_.ShutdownServices(); }
    void SetThread(std::thread::id id) { thread_id_.store(id); }

private:
    size_t index_;
    ShutdownableContext context_;
    std::atomic<std::thread::id> thread_id_{};
};

/// The io_context behind a core::Loop created by net::Runtime.
inline boost::asio::io_context& ContextOf(core::Loop& loop) {
    return static_cast<AsioLoop&>(loop).context();
}

}  // namespace conduit::net
