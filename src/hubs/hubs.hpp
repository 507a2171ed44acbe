#pragma once

#include "bus/backplane.hpp"
#include "core/clock.hpp"
#include "core/error.hpp"
#include "core/loop.hpp"
#include "domain/task.hpp"
#include "hubs/notifications.hpp"
#include "hubs/task_subscriptions.hpp"
#include "net/http_types.hpp"
#include "net/router.hpp"
#include "realtime/hub.hpp"
#include "realtime/hub_server.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace conduit::hubs {

/// Hub paths (specs/api.md §5).
inline constexpr std::string_view kTasksHubPath = "/hubs/tasks";
inline constexpr std::string_view kImageHubPath = "/hubs/image-generation";
inline constexpr std::string_view kVideoHubPath = "/hubs/video-generation";
inline constexpr std::string_view kSpendHubPath = "/hubs/spend";
inline constexpr std::string_view kNotificationsHubPath = "/hubs/notifications";
inline constexpr std::string_view kNavigationHubPath = "/hubs/navigation-state";

/// The completion error of a hub method invoked above the per-key rate.
inline constexpr std::string_view kRateLimitExceeded = "Rate limit exceeded";

/// Announcement severities (SystemAnnouncement's second argument).
bool IsAnnouncementSeverity(std::string_view severity);

/// The HubException text of a task that does not exist or belongs to another key.
inline constexpr std::string_view kTaskNotFound = "Task not found";

/// Who a hub connection is: the virtual key it authenticated with (Principal::data).
struct KeyPrincipal {
    domain::Id key_id = 0;
};

/// The virtual key of a connection's principal (0 when none).
domain::Id KeyOf(const realtime::Principal& principal);

/// Group every connection of a key joins on connect.
std::string KeyGroup(domain::Id key_id);

/// Validates the presented virtual key (`token`: Bearer header or `access_token` query; when
/// empty the request's other key headers may be used). Returns the key id, or nullopt (→ 401).
/// Any thread.
using KeyAuthenticator =
    std::function<std::optional<domain::Id>(const net::Request& request, std::string_view token)>;

/// The task if `key_id` owns it, else an error (TaskEngine::Get). Answers on `loop`.
using TaskLookup = std::function<void(core::Loop& loop,
                                      std::string task_id,
                                      domain::Id key_id,
                                      std::function<void(core::Result<domain::AsyncTask>)> done)>;

/// Counts hub connections per virtual key, across every hub of the instance. Thread-safe.
class KeyConnectionLimiter {
public:
    explicit KeyConnectionLimiter(int max_per_key) : max_(max_per_key) {}
    /// Counts `connection_id` for `key_id`; false (and not counted) above the limit.
    bool Acquire(const std::string& connection_id, domain::Id key_id);
    /// Releases a connection counted by Acquire (no-op otherwise).
    void Release(const std::string& connection_id);
    int CountFor(domain::Id key_id) const;

private:
    int max_;
    mutable std::mutex mu_;
    std::unordered_map<domain::Id, int> per_key_;
    std::unordered_map<std::string, domain::Id> by_conn_;
};

struct HubsOptions {
    /// Settings shared by every hub endpoint (keep-alive, timeouts, limits, CORS).
    realtime::HubOptions hub;
    int max_connections_per_key = 100;
    /// Hub method invocations per virtual key per minute (0 = unlimited). Enforced through
    /// HubsDeps::limit_invocation when set (shared counters: cluster-wide), else per instance.
    int method_rate_per_minute = 600;
};

/// Decides one hub method invocation of `key_id` against its limits: `done(std::nullopt)`
/// admits, `done(message)` refuses (the invocation fails with a HubException carrying it). May
/// answer on any thread.
using InvocationLimiter =
    std::function<void(domain::Id key_id, std::function<void(std::optional<std::string>)> done)>;

/// Loads what the navigation items are built from (the store's mappings and providers);
/// `done` may run on any thread.
using NavigationLoader =
    std::function<void(std::function<void(core::Result<NavigationData>)> done)>;

struct HubsDeps {
    KeyAuthenticator authenticate;
    TaskLookup lookup;
    bus::Backplane& backplane;  // task events (kTaskEventsChannel)
    const core::Clock& clock;
    HubsOptions options;
    /// The backplane of the hub servers' sends (groups, all, connections, users), shared with
    /// the other instances; null when this is the only instance (everything is local then, and
    /// per-connection subscriptions would only cost).
    bus::Backplane* hub_backplane = nullptr;
    /// Navigation items' source; unset = no items.
    NavigationLoader load_navigation;
    /// Every hub method invocation passes it first; unset = a local per-key bucket of
    /// HubsOptions::method_rate_per_minute.
    InvocationLimiter limit_invocation;
};

/// The registered hubs of one instance: their servers (the HubContext for sends from outside) and
/// the Backplane subscription feeding them task events. Destroy before the Backplane.
class Hubs {
public:
    ~Hubs();
    Hubs(const Hubs&) = delete;
    Hubs& operator=(const Hubs&) = delete;

    std::shared_ptr<realtime::HubServer> tasks;
    std::shared_ptr<realtime::HubServer> image;
    std::shared_ptr<realtime::HubServer> video;
    std::shared_ptr<realtime::HubServer> spend;
    std::shared_ptr<realtime::HubServer> notifications;
    std::shared_ptr<realtime::HubServer> navigation;

    /// Delivers one task event to the three task hubs (what the Backplane handler does). Any
    /// thread.
    void OnTaskEvent(const tasks::TaskEvent& e);

    /// `SystemAnnouncement(message, severity)` to every client of /hubs/notifications on every
    /// instance (one backplane publish). The message is passed through verbatim. Any thread.
    void Announce(const std::string& message, const std::string& severity);

    /// A committed configuration change (what the kConfigChangedChannel handler does; every
    /// instance gets each change once): `ModelMappingChanged(mappingId, modelAlias, changeType)`
    /// to this instance's notifications and navigation-state clients for mapping changes, and
    /// for changes of mappings, providers or provider keys the navigation items are reloaded and
    /// `NavigationStateUpdated({items})` sent to this instance's navigation-state clients. Any
    /// thread.
    void OnConfigChange(const ConfigChange& change);

    /// Hook for the circuit breaker (governance issue): a provider's health changed. Sends
    /// `ProviderHealthChanged(providerId, status, message)` to this instance's notifications and
    /// navigation-state clients and `NavigationStateUpdated` with the badges recomputed. Local:
    /// call it on every instance (e.g. from a backplane event). Any thread.
    void OnProviderHealthChanged(domain::Id provider_id,
                                 const std::string& status,
                                 const std::string& message);

    /// `SpendUpdate({...})` (SpendUpdateArgsJson) to `vkey-{row.virtual_key_id}` of /hubs/spend on
    /// every instance: one backplane publish per billed request, serialized once; no store
    /// access. Any thread.
    void OnSpend(const domain::RequestLogRow& row, const SpendTotals& totals);

    /// The current navigation items. Any thread.
    boost::json::array NavigationState() const;
    /// Reloads the navigation items (at start-up; then on configuration changes); `done` (may be
    /// empty) runs once they are in place, on any thread.
    void RefreshNavigation(std::function<void()> done = nullptr);

    /// Graceful shutdown: every hub server closes its connections with a Close message that
    /// allows reconnecting and refuses new ones; `done` runs when all have (any thread).
    void CloseAll(std::function<void()> done);

    struct State;  // implementation detail (hubs.cpp)

private:
    friend std::unique_ptr<Hubs> RegisterHubs(net::Router& router, HubsDeps deps);
    Hubs() = default;
    std::shared_ptr<State> state_;
    bus::Backplane* backplane_ = nullptr;
    uint64_t subscription_ = 0;
    uint64_t config_subscription_ = 0;
};

/// Routes every hub of specs/api.md §5 (tasks, image-generation, video-generation, spend,
/// notifications, navigation-state) and subscribes them to task events and configuration
/// changes. Start-up only.
///
/// The hub servers get `deps.hub_backplane`, so SendToGroup/All/Connection/User reach members on
/// every instance. Task events, which every instance receives by itself on kTaskEventsChannel,
/// are delivered with local-only sends (with the backplane, every instance would re-broadcast
/// the same event and clients would get it once per instance).
std::unique_ptr<Hubs> RegisterHubs(net::Router& router, HubsDeps deps);

/// A route-less sender for the hub at `path` (e.g. kNotificationsHubPath) on an instance without
/// the hubs role: its SendToAll/SendToGroup go through `hub_backplane` to the clients of the
/// instances that have it (same channels as RegisterHubs' servers).
std::shared_ptr<realtime::HubServer> HubPublisher(bus::Backplane& hub_backplane,
                                                  std::string_view path);

/// `SpendUpdate` of one billed request to `vkey-{row.virtual_key_id}` through `spend_hub`
/// (what Hubs::OnSpend does); nothing at all when the hub is local-only and has no connection.
/// Any thread.
void SendSpendUpdate(realtime::HubServer& spend_hub,
                     const domain::RequestLogRow& row,
                     const SpendTotals& totals);
/// `BudgetAlert` (BudgetAlertArgsJson) to `vkey-{alert.key_id}` through `spend_hub`; nothing
/// when the hub is local-only and has no connection. Any thread.
void SendBudgetAlert(realtime::HubServer& spend_hub, const BudgetAlertInfo& alert);
/// True for rows that were billed (a SpendUpdate is due): 2xx, or a charged partial stream.
bool IsBilled(const domain::RequestLogRow& row);

}  // namespace conduit::hubs
