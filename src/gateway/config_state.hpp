#pragma once

#include "core/error.hpp"
#include "core/secret_box.hpp"
#include "domain/snapshot.hpp"
#include "gateway/balance_book.hpp"
#include "store/executor.hpp"
#include "store/store.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace conduit::gateway {

/// Owns the current configuration snapshot (DESIGN §2): rebuilt from the store after every
/// change and published atomically. Get() is the request-path read: a relaxed version check and
/// a thread-local cached pointer, no lock.
class ConfigState {
public:
    ConfigState(store::Store& store, BalanceBook& book, const core::SecretBox& box);

    /// The current snapshot. Any thread. Hold the returned pointer for as long as you use
    /// anything inside it.
    domain::SnapshotPtr Get() const;
    /// Loads everything from the store, rebuilds and publishes the snapshot and syncs the
    /// BalanceBook. MUST run on the store executor thread (or before the executor starts).
    core::Result<void> ReloadOnExecutor();
    /// Version of the published snapshot (increments on every reload).
    uint64_t version() const { return version_.load(std::memory_order_acquire); }
    /// Warnings from the last build (undecryptable keys, providers without a base URL).
    std::vector<std::string> warnings() const;

private:
    store::Store& store_;
    BalanceBook& book_;
    const core::SecretBox& box_;
    std::atomic<uint64_t> version_{0};
    mutable std::mutex mu_;  // guards current_, warnings_
    domain::SnapshotPtr current_;
    std::vector<std::string> warnings_;
};

}  // namespace conduit::gateway
