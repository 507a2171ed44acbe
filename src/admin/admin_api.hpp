#pragma once

#include "core/clock.hpp"
#include "core/error.hpp"
#include "core/secret_box.hpp"
#include "gateway/balance_book.hpp"
#include "gateway/config_state.hpp"
#include "net/http_types.hpp"
#include "net/router.hpp"
#include "store/executor.hpp"
#include "store/store.hpp"

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace conduit::admin {

/// A configuration change the admin API committed (reported after the snapshot reload).
struct ConfigChange {
    std::string entity;       // "ModelMapping", "Provider", "ProviderKey"
    std::string change_type;  // "Created", "Updated", "Deleted"
    domain::Id id = 0;
    std::string model_alias;  // ModelMapping only
};

/// Everything the admin API needs, injected by the composition root. The referenced objects
/// must outlive every registered route (and every request still in flight).
struct AdminDeps {
    store::Store& store;
    /// Runs every store call; the admin handlers never touch the store on a loop thread.
    store::Executor& executor;
    /// Reloaded (on the executor) after every successful write, before the response is sent.
    gateway::ConfigState& config;
    /// Updated with the committed balance after every balance adjustment.
    gateway::BalanceBook& book;
    /// Encrypts provider API keys at rest.
    const core::SecretBox& secret_box;
    const core::Clock& clock;
    /// The operator's master key, compared in constant time. Empty = every request is refused.
    std::string master_key;
    /// Called after a committed change of a mapping, provider or provider key and the reload
    /// (store executor thread); the app publishes it to every instance. Optional.
    std::function<void(const ConfigChange&)> on_config_change;
    /// `POST /api/notifications/announcements`: delivers a SystemAnnouncement to every hub
    /// client (any instance). Loop thread; must not block. Unset = the route answers 503.
    std::function<void(const std::string& message, const std::string& severity)> announce;
    /// Called after an admin credit or adjustment of a group's balance was committed and put in
    /// the BalanceBook (store executor thread): the app applies it to the shared balance
    /// counter. Optional.
    std::function<void(domain::Id group_id, domain::Micros delta)> on_balance_adjusted;
    /// Called after every committed admin write and its reload (store executor thread): the app
    /// tells the other instances to reload their snapshot. Optional.
    std::function<void()> on_reloaded;
    /// `GET /api/cache/statistics`: collects the cluster's cache statistics and passes their
    /// JSON (per-instance views included when `with_instances`) to `done`, on any thread.
    /// Unset = the route answers 503.
    std::function<void(bool with_instances, std::function<void(core::Result<std::string>)> done)>
        cache_statistics;
};

/// Registers every `/api/*` admin route of specs/api.md §7 on `router`:
/// VirtualKeyGroups, VirtualKeys, ProviderCredentials (+ keys), ModelProviderMapping,
/// ModelCosts and Analytics/logs. Call once at start-up, before the router is shared.
///
/// Every handler runs on the exchange's loop thread: it checks the master key first (401),
/// validates the path and body (404 / 400), then runs the store work on `deps->executor` and
/// responds back on the loop thread. Never blocks the loop.
void RegisterAdminRoutes(net::Router& router, std::shared_ptr<AdminDeps> deps);

/// True if the request carries `master_key` in `X-API-Key`, `X-Master-Key` or
/// `Authorization: Bearer`. Constant-time in the presented and configured keys' contents; an
/// empty `master_key` never matches. Pure, any thread.
bool HasMasterKey(const net::Request& req, std::string_view master_key);

}  // namespace conduit::admin
