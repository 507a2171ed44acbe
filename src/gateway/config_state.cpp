#include "gateway/config_state.hpp"

#include "gateway/routing.hpp"

#include <spdlog/spdlog.h>

namespace conduit::gateway {

ConfigState::ConfigState(store::Store& store, BalanceBook& book, const core::SecretBox& box)
    : store_(store), book_(book), box_(box) {
    current_ = domain::Snapshot::Build(domain::ConfigData{}, box_, 0);
}

domain::SnapshotPtr ConfigState::Get() const {
    struct Cache {
        const ConfigState* owner = nullptr;
        uint64_t version = UINT64_MAX;
        domain::SnapshotPtr snapshot;
    };
    thread_local Cache cache;
    uint64_t v = version_.load(std::memory_order_acquire);
    if (cache.owner != this || cache.version != v) {
        std::lock_guard lock(mu_);
        cache.owner = this;
        cache.snapshot = current_;
        cache.version = current_->version();
    }
    return cache.snapshot;
}

core::Result<void> ConfigState::ReloadOnExecutor() {
    auto data = store_.LoadConfig();
    if (!data) {
        return tl::unexpected(data.error());
    }
    std::vector<std::string> warnings;
    auto router = store_.GetSetting(kRouterSetting);
    if (!router) {
        return tl::unexpected(router.error());
    }
    if (*router) {
        if (auto parsed = ParseRouterConfig(**router)) {
            data->router = std::move(*parsed);
        } else {
            warnings.push_back("router configuration ignored: " + parsed.error().message);
        }
    }
    uint64_t next = version_.load() + 1;
    auto snap = domain::Snapshot::Build(*data, box_, next, &warnings);
    for (const auto& w : warnings) {
        spdlog::warn("configuration: {}", w);
    }
    book_.Sync(data->groups);
    {
        std::lock_guard lock(mu_);
        current_ = std::move(snap);
        warnings_ = std::move(warnings);
    }
    version_.store(next, std::memory_order_release);
    return {};
}

std::vector<std::string> ConfigState::warnings() const {
    std::lock_guard lock(mu_);
    return warnings_;
}

}  // namespace conduit::gateway
