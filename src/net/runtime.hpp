#pragma once

#include "core/loop.hpp"

#include <cstddef>
#include <functional>
#include <memory>

namespace conduit::net {

/// The process's event loops: one io_context per shard, each run by exactly one thread.
/// The header is Asio-free; net/asio_loop.hpp exposes the io_context to Asio-aware code.
class Runtime {
public:
    /// `threads` = 0 means one shard per CPU core.
    explicit Runtime(size_t threads);
    ~Runtime();
    Runtime(const Runtime&) = delete;
    Runtime& operator=(const Runtime&) = delete;

    size_t size() const;
    core::Loop& loop(size_t index);
    /// Round-robin pick (for work not tied to a connection). Thread-safe.
    core::Loop& NextLoop();

    /// Runs every loop (loop 0 on the calling thread) until Stop(). Returns when all loop
    /// threads have exited.
    void Run();
    /// Starts the loops on background threads and returns immediately (tests, tools).
    void Start();
    /// Stops every loop; Run()/Start() threads finish their current handler then exit.
    /// Thread-safe; idempotent. Join happens in Run() or in the destructor.
    void Stop();
    /// Installs a SIGINT/SIGTERM handler (runs on loop 0). Call before Run().
    void OnSignal(std::function<void(int)> fn);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace conduit::net
