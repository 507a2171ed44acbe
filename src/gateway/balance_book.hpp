#pragma once

#include "domain/entities.hpp"

#include <atomic>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

namespace conduit::gateway {

/// In-memory view of every group's balance for the request path: the balance last persisted in
/// the store minus spend recorded since the last flush. Reads are lock-free atomics under a
/// shared lock; the request path never touches the database (DESIGN §2).
///
/// Consistency rule: Sync() and Flushed() are only called from the store executor thread, after
/// the corresponding database read or commit, so the two counters never double-count.
class BalanceBook {
public:
    /// Available balance (persisted − unflushed spend), or nullopt for an unknown group.
    /// Any thread.
    std::optional<domain::Micros> Available(domain::Id group_id) const;
    /// Records spend not yet flushed. Any thread. Unknown groups are ignored.
    void AddPending(domain::Id group_id, domain::Micros amount);
    /// Replaces the persisted balances with the database's (after a load); groups missing from
    /// `groups` are removed. Store executor thread.
    void Sync(const std::vector<domain::VirtualKeyGroup>& groups);
    /// `amount` was committed as a debit: persisted −= amount, pending −= amount.
    void Flushed(domain::Id group_id, domain::Micros amount);
    /// Sets the persisted balance after an adjustment committed in the store.
    void SetPersisted(domain::Id group_id, domain::Micros balance);
    /// Unflushed spend of a group (0 if unknown).
    domain::Micros Pending(domain::Id group_id) const;

private:
    struct Entry {
        std::atomic<domain::Micros> persisted{0};
        std::atomic<domain::Micros> pending{0};
    };
    Entry* Find(domain::Id id) const;

    mutable std::shared_mutex mu_;  // guards the map's structure; entries are atomics
    std::unordered_map<domain::Id, std::unique_ptr<Entry>> entries_;
};

}  // namespace conduit::gateway
