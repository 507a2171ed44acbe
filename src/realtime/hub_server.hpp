#pragma once

#include "bus/backplane.hpp"
#include "net/exchange.hpp"
#include "net/router.hpp"
#include "net/websocket.hpp"
#include "realtime/connection.hpp"
#include "realtime/hub.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace conduit::realtime {

/// Accepts the WebSocket upgrade of `exchange` (101) and returns the socket, or nullptr.
/// Provided by the net layer (net::Exchange::AcceptWebSocket once it lands).
using WebSocketAcceptor = std::function<net::WebSocketPtr(const net::ExchangePtr& exchange)>;

/// The runtime of one hub endpoint: connection table (by token and id), one shard per loop
/// (heartbeat timer, local connections, local groups), the backplane hookup, and the HTTP
/// handlers of negotiate and the three transports. Thread-safe entry points; connection state
/// lives on the loop where the connection was negotiated.
///
/// With a backplane, every send reaches its targets on every instance sharing it (spec §5.1):
/// channels `{prefix}:all`, `{prefix}:group:{name}`, `{prefix}:conn:{connectionId}` and
/// `{prefix}:user:{userId}`. A group, connection or user channel is subscribed while this instance
/// has a local member (group: per shard; connection: while it exists; user: while the user has a
/// local connection). A message is serialised once and published once; the backplane delivers it
/// to every subscribed instance, this one included. The *Local sends never use the backplane: for
/// events every instance already receives by itself (task events), which would otherwise reach a
/// client once per instance.
class HubServer final : public HubContext,
                        public ConnectionHost,
                        public std::enable_shared_from_this<HubServer> {
public:
    /// `backplane` may be null (one instance); it must outlive the server.
    HubServer(std::shared_ptr<const Hub> hub,
              HubOptions options,
              bus::Backplane* backplane = nullptr,
              WebSocketAcceptor accept_websocket = nullptr);
    ~HubServer() override;
    HubServer(const HubServer&) = delete;
    HubServer& operator=(const HubServer&) = delete;

    // HTTP handlers (exchange loop).
    void HandleNegotiate(const net::ExchangePtr& ex);
    void HandleGet(const net::ExchangePtr& ex);
    void HandlePost(const net::ExchangePtr& ex);
    void HandleDelete(const net::ExchangePtr& ex);
    void HandleOptions(const net::ExchangePtr& ex);
    /// Adds the CORS headers for the request's Origin (when allowed) to the exchange.
    void ApplyCors(const net::ExchangePtr& ex) const;

    /// Attaches an accepted WebSocket to the connection `token` (empty: a skipNegotiation
    /// connection is created). Loop of `ws`.
    void AttachWebSocket(const net::WebSocketPtr& ws, std::string token, Principal principal);

    /// The connection with this token (any thread), or null.
    std::shared_ptr<HubConnection> FindByToken(std::string_view token) const;
    /// The connection with this public id (any thread), or null.
    std::shared_ptr<HubConnection> FindById(std::string_view id) const;

    // HubContext
    void SendToConnection(std::string_view connection_id,
                          std::string_view target,
                          const boost::json::array& args) override;
    void SendToAll(std::string_view target, const boost::json::array& args) override;
    void SendToGroup(std::string_view group,
                     std::string_view target,
                     const boost::json::array& args) override;
    void SendToUser(std::string_view user_id,
                    std::string_view target,
                    const boost::json::array& args) override;
    void AddToGroup(std::string_view connection_id, std::string group) override;
    void RemoveFromGroup(std::string_view connection_id, std::string_view group) override;
    size_t ConnectionCount() const override;

    /// SendToGroup with the arguments already serialized (a JSON array), e.g. exact decimals.
    void SendToGroupJson(std::string_view group, std::string_view target, std::string args_json);

    // Local-only sends (this instance's connections; never published on the backplane).
    void SendToLocalConnection(std::string_view connection_id,
                               std::string_view target,
                               const boost::json::array& args);
    void SendToAllLocal(std::string_view target, const boost::json::array& args);
    void SendToGroupLocal(std::string_view group,
                          std::string_view target,
                          const boost::json::array& args);

    /// Graceful shutdown: refuses new connections (negotiate and skipNegotiation WebSockets get
    /// 503) and closes every local connection with a Close message (`allowReconnect` as given),
    /// ending its transport (a WebSocket closes, an SSE stream ends, a held poll answers). `done`
    /// runs once every shard has done so (on one of the loops). Any thread.
    void CloseAll(bool allow_reconnect, std::function<void()> done);
    bool closing() const { return closing_.load(std::memory_order_acquire); }
    /// True when sends go through a backplane (other instances may have members).
    bool has_backplane() const { return backplane_ != nullptr; }

    // ConnectionHost
    const Hub& hub() const override { return *hub_; }
    HubContext& context() override { return *this; }
    const HubOptions& options() const override { return options_; }
    int64_t NowMs(core::Loop& loop) const override;
    void Forget(HubConnection& connection) override;

private:
    struct Group {
        std::vector<std::shared_ptr<HubConnection>> members;
        uint64_t subscription = 0;
    };
    struct Shard {
        core::Loop* loop = nullptr;
        int64_t now_ms = 0;
        core::TimerPtr timer;
        std::unordered_map<std::string, std::shared_ptr<HubConnection>> connections;  // by token
        std::unordered_map<std::string, Group> groups;
        uint64_t all_subscription = 0;
    };

    Shard& ShardFor(core::Loop& loop);
    void Heartbeat(Shard& shard);
    std::shared_ptr<HubConnection> Create(core::Loop& loop,
                                          Principal principal,
                                          bool stateful,
                                          bool with_token);
    /// Authenticates a request; responds 401 and returns nullopt on failure.
    std::optional<Principal> Authenticate(const net::ExchangePtr& ex) const;
    void DeliverLocal(Shard& shard, const std::string& group, const std::string& record);
    void DeliverAll(Shard& shard, const std::string& record);
    void DeliverUser(const std::string& user_id, const std::string& record);
    void SubscribeConnection(const std::shared_ptr<HubConnection>& conn);
    void UnsubscribeConnection(const HubConnection& conn);
    void Join(Shard& shard, const std::shared_ptr<HubConnection>& conn, const std::string& group);
    void Leave(Shard& shard, HubConnection& conn, const std::string& group);
    std::vector<Shard*> AllShards() const;

    std::shared_ptr<const Hub> hub_;
    HubOptions options_;
    bus::Backplane* backplane_;
    WebSocketAcceptor accept_websocket_;

    mutable std::mutex mu_;
    std::unordered_map<core::Loop*, std::unique_ptr<Shard>> shards_;
    std::unordered_map<std::string, std::weak_ptr<HubConnection>> by_token_;
    std::unordered_map<std::string, std::weak_ptr<HubConnection>> by_id_;
    /// Local connection ids of each user (SendToUser); guarded by mu_.
    std::unordered_map<std::string, std::set<std::string>> users_;

    // Backplane subscriptions of connections and users. Guarded by sub_mu_, which is held while
    // calling the backplane's Subscribe/Unsubscribe (never mu_: handlers take mu_).
    struct UserSub {
        size_t count = 0;
        uint64_t subscription = 0;
    };
    std::mutex sub_mu_;
    std::unordered_map<std::string, uint64_t> conn_subs_;  // by connection id
    std::unordered_map<std::string, UserSub> user_subs_;   // by user id
    std::atomic<bool> closing_{false};
};

/// Routes a hub at `path` (e.g. "/hubs/tasks"): POST `{path}/negotiate`, GET/POST/DELETE
/// `{path}`, OPTIONS on both (CORS preflight), 405 for other methods. Returns the server (the
/// HubContext for sends from outside). Start-up only.
std::shared_ptr<HubServer> RegisterHub(net::Router& router,
                                       const std::string& path,
                                       std::shared_ptr<const Hub> hub,
                                       HubOptions options,
                                       bus::Backplane* backplane = nullptr,
                                       WebSocketAcceptor accept_websocket = nullptr);

/// A query parameter by case-insensitive name, URL-decoded. Pure.
std::optional<std::string> QueryParamIgnoreCase(std::string_view query, std::string_view name);

}  // namespace conduit::realtime
