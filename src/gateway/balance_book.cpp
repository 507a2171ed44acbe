#include "gateway/balance_book.hpp"

#include <mutex>
#include <unordered_set>

namespace conduit::gateway {

BalanceBook::Entry* BalanceBook::Find(domain::Id id) const {
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : it->second.get();
}

std::optional<domain::Micros> BalanceBook::Available(domain::Id group_id) const {
    std::shared_lock lock(mu_);
    Entry* e = Find(group_id);
    if (e == nullptr) {
        return std::nullopt;
    }
    return e->persisted.load(std::memory_order_relaxed) -
           e->pending.load(std::memory_order_relaxed);
}

void BalanceBook::AddPending(domain::Id group_id, domain::Micros amount) {
    std::shared_lock lock(mu_);
    if (Entry* e = Find(group_id)) {
        e->pending.fetch_add(amount, std::memory_order_relaxed);
    }
}

void BalanceBook::Sync(const std::vector<domain::VirtualKeyGroup>& groups) {
    std::unique_lock lock(mu_);
    std::unordered_set<domain::Id> seen;
    for (const auto& g : groups) {
        seen.insert(g.id);
        auto& slot = entries_[g.id];
        if (!slot) {
            slot = std::make_unique<Entry>();
        }
        slot->persisted.store(g.balance, std::memory_order_relaxed);
    }
    std::erase_if(entries_, [&](const auto& kv) { return !seen.contains(kv.first); });
}

void BalanceBook::Flushed(domain::Id group_id, domain::Micros amount) {
    std::shared_lock lock(mu_);
    if (Entry* e = Find(group_id)) {
        e->persisted.fetch_sub(amount, std::memory_order_relaxed);
        e->pending.fetch_sub(amount, std::memory_order_relaxed);
    }
}

void BalanceBook::SetPersisted(domain::Id group_id, domain::Micros balance) {
    std::unique_lock lock(mu_);
    auto& slot = entries_[group_id];
    if (!slot) {
        slot = std::make_unique<Entry>();
    }
    slot->persisted.store(balance, std::memory_order_relaxed);
}

domain::Micros BalanceBook::Pending(domain::Id group_id) const {
    std::shared_lock lock(mu_);
    Entry* e = Find(group_id);
    return e == nullptr ? 0 : e->pending.load(std::memory_order_relaxed);
}

}  // namespace conduit::gateway
