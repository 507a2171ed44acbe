#pragma once

#include "config/config.hpp"
#include "core/error.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace conduit::app {

/// The composition root: builds the embedded (or, later, distributed) object graph from a
/// Config, serves until stopped, and shuts down in order (stop accepting, finish in-flight
/// requests, flush spend, close the store).
class App {
public:
    explicit App(config::Config config);
    ~App();
    App(const App&) = delete;
    App& operator=(const App&) = delete;

    /// Opens the data directory and store, resolves the master and encryption keys, loads the
    /// configuration snapshot and binds the listener. Start-up errors are returned, not thrown.
    core::Result<void> Init();
    /// Serves until SIGINT/SIGTERM (or RequestStop()), then shuts down gracefully. Returns the
    /// process exit code.
    int Run();
    /// Starts a graceful shutdown (thread-safe).
    void RequestStop();
    /// The bound port (after Init()).
    uint16_t port() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Reads or creates a secret stored in `path` (mode 0600). When `generated` is non-null it is
/// set to true if the secret was created now.
core::Result<std::string> LoadOrCreateSecretFile(const std::string& path, bool* generated);

}  // namespace conduit::app
