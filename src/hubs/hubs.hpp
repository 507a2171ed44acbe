#pragma once

#include "bus/backplane.hpp"
#include "core/clock.hpp"
#include "core/error.hpp"
#include "core/loop.hpp"
#include "domain/task.hpp"
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
};

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

    /// Delivers one task event to the three task hubs (what the Backplane handler does). Any
    /// thread.
    void OnTaskEvent(const tasks::TaskEvent& e);

    struct State;  // implementation detail (hubs.cpp)

private:
    friend std::unique_ptr<Hubs> RegisterHubs(net::Router& router, HubsDeps deps);
    Hubs() = default;
    std::shared_ptr<State> state_;
    bus::Backplane* backplane_ = nullptr;
    uint64_t subscription_ = 0;
};

/// Routes every hub of specs/api.md §5 (tasks, image-generation, video-generation, spend,
/// notifications) and subscribes them to task events. Start-up only.
///
/// The hub servers get `deps.hub_backplane`, so SendToGroup/All/Connection/User reach members on
/// every instance. Task events, which every instance receives by itself on kTaskEventsChannel,
/// are delivered with local-only sends (with the backplane, every instance would re-broadcast
/// the same event and clients would get it once per instance).
std::unique_ptr<Hubs> RegisterHubs(net::Router& router, HubsDeps deps);

}  // namespace conduit::hubs
