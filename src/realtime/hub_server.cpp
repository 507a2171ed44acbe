#include "realtime/hub_server.hpp"

#include "core/crypto.hpp"
#include "core/strings.hpp"
#include "realtime/transports.hpp"

#include <algorithm>

namespace conduit::realtime {
namespace {

net::Response PlainText(int status, std::string body) {
    return net::Response::Text(status, std::move(body), "text/plain");
}

std::string NewId() { return core::Base64UrlEncode(core::RandomBytes(16)); }

std::string InvocationRecord(std::string_view target, const boost::json::array& args) {
    std::string record;
    WriteInvocation(record, std::nullopt, target, ToJson(args));
    return record;
}

bool IsWebSocketRequest(const net::Request& r) {
    return core::IEquals(r.headers.Get("Upgrade"), "websocket");
}

}  // namespace

std::optional<std::string> QueryParamIgnoreCase(std::string_view query, std::string_view name) {
    while (!query.empty()) {
        const size_t amp = query.find('&');
        std::string_view part = query.substr(0, amp);
        const size_t eq = part.find('=');
        std::string_view key = part.substr(0, eq);
        if (core::IEquals(core::UrlDecode(key), name)) {
            return eq == std::string_view::npos ? std::string()
                                                : core::UrlDecode(part.substr(eq + 1));
        }
        if (amp == std::string_view::npos) {
            break;
        }
        query.remove_prefix(amp + 1);
    }
    return std::nullopt;
}

HubServer::HubServer(std::shared_ptr<const Hub> hub,
                     HubOptions options,
                     bus::Backplane* backplane,
                     WebSocketAcceptor accept_websocket)
    : hub_(std::move(hub)),
      options_(std::move(options)),
      backplane_(backplane),
      accept_websocket_(std::move(accept_websocket)) {
    if (!accept_websocket_) {
        // The real upgrade of net::Exchange (test doubles without upgrade support return null
        // after answering, like any acceptor).
        net::WebSocketOptions ws;
        // Headroom above the hub's limit: the hub itself refuses an oversized message with a
        // Close message the client understands (error, no reconnect); a WebSocket-level 1009
        // would look like a network loss and make the client reconnect.
        ws.max_message_bytes = std::max<size_t>(2 * options_.max_message_bytes, 64 * 1024);
        ws.max_buffered_bytes = options_.max_send_buffer_bytes;
        accept_websocket_ = [ws](const net::ExchangePtr& ex) {
            net::WebSocketPtr socket = ex->AcceptWebSocket(net::Headers{}, ws);
            if (!socket) {
                // Nothing was sent: not a valid upgrade, or the server is shutting down.
                ex->Respond(PlainText(400, "Not a valid WebSocket request"));
            }
            return socket;
        };
    }
}

HubServer::~HubServer() {
    if (backplane_ != nullptr) {
        std::lock_guard lock(sub_mu_);
        for (const auto& [id, sub] : conn_subs_) {
            backplane_->Unsubscribe(sub);
        }
        for (const auto& [id, u] : user_subs_) {
            backplane_->Unsubscribe(u.subscription);
        }
    }
    for (auto& [loop, shard] : shards_) {
        if (shard->timer) {
            shard->timer->Cancel();
        }
        if (backplane_ != nullptr) {
            if (shard->all_subscription != 0) {
                backplane_->Unsubscribe(shard->all_subscription);
            }
            for (auto& [name, g] : shard->groups) {
                if (g.subscription != 0) {
                    backplane_->Unsubscribe(g.subscription);
                }
            }
        }
    }
}

HubServer::Shard& HubServer::ShardFor(core::Loop& loop) {
    std::lock_guard lock(mu_);
    auto& slot = shards_[&loop];
    if (!slot) {
        slot = std::make_unique<Shard>();
        Shard* shard = slot.get();
        shard->loop = &loop;
        shard->timer = loop.StartTimer(options_.heartbeat, [this, shard] { Heartbeat(*shard); });
        if (backplane_ != nullptr) {
            shard->all_subscription = backplane_->Subscribe(
                options_.backplane_prefix + ":all",
                [this, shard](std::string_view, std::string_view payload) {
                    shard->loop->Post(
                        [this, shard, p = std::string(payload)] { DeliverAll(*shard, p); });
                });
        }
    }
    return *slot;
}

std::vector<HubServer::Shard*> HubServer::AllShards() const {
    std::lock_guard lock(mu_);
    std::vector<Shard*> out;
    for (const auto& [loop, shard] : shards_) {
        out.push_back(shard.get());
    }
    return out;
}

void HubServer::Heartbeat(Shard& shard) {
    shard.now_ms += options_.heartbeat.count();
    std::vector<std::shared_ptr<HubConnection>> conns;
    conns.reserve(shard.connections.size());
    for (const auto& [token, c] : shard.connections) {
        conns.push_back(c);
    }
    for (const auto& c : conns) {
        c->Tick(shard.now_ms);
    }
    shard.timer = shard.loop->StartTimer(options_.heartbeat, [this, s = &shard] { Heartbeat(*s); });
}

int64_t HubServer::NowMs(core::Loop& loop) const {
    std::lock_guard lock(mu_);
    auto it = shards_.find(&loop);
    return it == shards_.end() ? 0 : it->second->now_ms;
}

std::shared_ptr<HubConnection> HubServer::Create(core::Loop& loop,
                                                 Principal principal,
                                                 bool stateful,
                                                 bool with_token) {
    Shard& shard = ShardFor(loop);
    std::string id = NewId();
    std::string token = with_token ? NewId() : id;
    auto conn =
        std::make_shared<HubConnection>(*this, loop, id, token, std::move(principal), stateful);
    shard.connections[token] = conn;
    {
        std::lock_guard lock(mu_);
        by_token_[token] = conn;
        by_id_[id] = conn;
        if (!conn->principal().user_id.empty()) {
            users_[conn->principal().user_id].insert(id);
        }
    }
    SubscribeConnection(conn);
    return conn;
}

void HubServer::SubscribeConnection(const std::shared_ptr<HubConnection>& conn) {
    if (backplane_ == nullptr) {
        return;
    }
    std::weak_ptr<HubConnection> weak = conn;
    std::lock_guard lock(sub_mu_);
    conn_subs_[conn->id()] = backplane_->Subscribe(
        options_.backplane_prefix + ":conn:" + conn->id(),
        [weak](std::string_view, std::string_view payload) {
            if (auto c = weak.lock()) {
                RunOn(c->loop(), [c, p = std::string(payload)] { c->SendRecord(p, true); });
            }
        });
    const std::string& user = conn->principal().user_id;
    if (user.empty()) {
        return;
    }
    UserSub& u = user_subs_[user];
    if (++u.count == 1) {
        u.subscription =
            backplane_->Subscribe(options_.backplane_prefix + ":user:" + user,
                                  [this, user](std::string_view, std::string_view payload) {
                                      DeliverUser(user, std::string(payload));
                                  });
    }
}

void HubServer::UnsubscribeConnection(const HubConnection& conn) {
    if (backplane_ == nullptr) {
        return;
    }
    std::lock_guard lock(sub_mu_);
    if (auto it = conn_subs_.find(conn.id()); it != conn_subs_.end()) {
        backplane_->Unsubscribe(it->second);
        conn_subs_.erase(it);
    }
    const std::string& user = conn.principal().user_id;
    if (user.empty()) {
        return;
    }
    auto it = user_subs_.find(user);
    if (it != user_subs_.end() && --it->second.count == 0) {
        backplane_->Unsubscribe(it->second.subscription);
        user_subs_.erase(it);
    }
}

void HubServer::Forget(HubConnection& conn) {
    Shard& shard = ShardFor(conn.loop());
    for (const auto& g : std::vector<std::string>(conn.groups().begin(), conn.groups().end())) {
        Leave(shard, conn, g);
    }
    shard.connections.erase(conn.token());
    bool known = false;
    {
        std::lock_guard lock(mu_);
        by_token_.erase(conn.token());
        known = by_id_.erase(conn.id()) != 0;
        if (const std::string& user = conn.principal().user_id; !user.empty()) {
            if (auto it = users_.find(user); it != users_.end()) {
                it->second.erase(conn.id());
                if (it->second.empty()) {
                    users_.erase(it);
                }
            }
        }
    }
    if (known) {
        UnsubscribeConnection(conn);
    }
}

std::shared_ptr<HubConnection> HubServer::FindByToken(std::string_view token) const {
    std::lock_guard lock(mu_);
    auto it = by_token_.find(std::string(token));
    return it == by_token_.end() ? nullptr : it->second.lock();
}

std::shared_ptr<HubConnection> HubServer::FindById(std::string_view id) const {
    std::lock_guard lock(mu_);
    auto it = by_id_.find(std::string(id));
    return it == by_id_.end() ? nullptr : it->second.lock();
}

size_t HubServer::ConnectionCount() const {
    std::lock_guard lock(mu_);
    return by_id_.size();
}

// --- sends and groups ---

void HubServer::SendToConnection(std::string_view connection_id,
                                 std::string_view target,
                                 const boost::json::array& args) {
    if (auto conn = FindById(connection_id)) {
        // Local: no backplane round trip (a connection lives on one instance).
        RunOn(conn->loop(),
              [conn, record = InvocationRecord(target, args)] { conn->SendRecord(record, true); });
        return;
    }
    if (backplane_ != nullptr) {
        backplane_->Publish(options_.backplane_prefix + ":conn:" + std::string(connection_id),
                            InvocationRecord(target, args));
    }
}

void HubServer::SendToLocalConnection(std::string_view connection_id,
                                      std::string_view target,
                                      const boost::json::array& args) {
    auto conn = FindById(connection_id);
    if (!conn) {
        return;
    }
    RunOn(conn->loop(),
          [conn, record = InvocationRecord(target, args)] { conn->SendRecord(record, true); });
}

void HubServer::SendToAllLocal(std::string_view target, const boost::json::array& args) {
    auto shared = std::make_shared<const std::string>(InvocationRecord(target, args));
    for (Shard* s : AllShards()) {
        RunOn(*s->loop, [this, s, shared] { DeliverAll(*s, *shared); });
    }
}

void HubServer::SendToGroupLocal(std::string_view group,
                                 std::string_view target,
                                 const boost::json::array& args) {
    auto shared = std::make_shared<const std::string>(InvocationRecord(target, args));
    for (Shard* s : AllShards()) {
        RunOn(*s->loop,
              [this, s, shared, g = std::string(group)] { DeliverLocal(*s, g, *shared); });
    }
}

void HubServer::DeliverAll(Shard& shard, const std::string& record) {
    std::vector<std::shared_ptr<HubConnection>> conns;
    for (const auto& [token, c] : shard.connections) {
        conns.push_back(c);
    }
    SharedRecord shared(record);  // one WebSocket frame for the whole shard
    for (const auto& c : conns) {
        c->SendShared(shared);
    }
}

void HubServer::SendToAll(std::string_view target, const boost::json::array& args) {
    std::string record = InvocationRecord(target, args);
    if (backplane_ != nullptr) {
        backplane_->Publish(options_.backplane_prefix + ":all", std::move(record));
        return;
    }
    auto shared = std::make_shared<const std::string>(std::move(record));
    for (Shard* s : AllShards()) {
        RunOn(*s->loop, [this, s, shared] { DeliverAll(*s, *shared); });
    }
}

void HubServer::DeliverLocal(Shard& shard, const std::string& group, const std::string& record) {
    auto it = shard.groups.find(group);
    if (it == shard.groups.end()) {
        return;
    }
    auto members = it->second.members;  // a send may close a member (slow client)
    SharedRecord shared(record);        // one WebSocket frame for the whole shard
    for (const auto& c : members) {
        c->SendShared(shared);
    }
}

void HubServer::SendToGroup(std::string_view group,
                            std::string_view target,
                            const boost::json::array& args) {
    SendToGroupJson(group, target, ToJson(args));
}

void HubServer::SendToGroupJson(std::string_view group,
                                std::string_view target,
                                std::string args_json) {
    std::string record;  // serialized once
    WriteInvocation(record, std::nullopt, target, args_json);
    if (backplane_ != nullptr) {
        backplane_->Publish(options_.backplane_prefix + ":group:" + std::string(group),
                            std::move(record));
        return;
    }
    auto shared = std::make_shared<const std::string>(std::move(record));
    for (Shard* s : AllShards()) {
        RunOn(*s->loop,
              [this, s, shared, g = std::string(group)] { DeliverLocal(*s, g, *shared); });
    }
}

void HubServer::DeliverUser(const std::string& user_id, const std::string& record) {
    std::vector<std::shared_ptr<HubConnection>> conns;
    {
        std::lock_guard lock(mu_);
        auto it = users_.find(user_id);
        if (it == users_.end()) {
            return;
        }
        for (const auto& id : it->second) {
            if (auto w = by_id_.find(id); w != by_id_.end()) {
                if (auto c = w->second.lock()) {
                    conns.push_back(std::move(c));
                }
            }
        }
    }
    if (conns.empty()) {
        return;
    }
    auto shared = std::make_shared<const std::string>(record);
    for (auto& c : conns) {
        RunOn(c->loop(), [c, shared] { c->SendRecord(*shared, true); });
    }
}

void HubServer::SendToUser(std::string_view user_id,
                           std::string_view target,
                           const boost::json::array& args) {
    if (user_id.empty()) {
        return;
    }
    std::string record = InvocationRecord(target, args);
    if (backplane_ != nullptr) {
        backplane_->Publish(options_.backplane_prefix + ":user:" + std::string(user_id),
                            std::move(record));
        return;
    }
    DeliverUser(std::string(user_id), record);
}

void HubServer::Join(Shard& shard,
                     const std::shared_ptr<HubConnection>& conn,
                     const std::string& group) {
    if (conn->state() == HubConnection::State::kClosed || !conn->groups().insert(group).second) {
        return;
    }
    Group& g = shard.groups[group];
    g.members.push_back(conn);
    if (g.members.size() == 1 && backplane_ != nullptr) {
        Shard* s = &shard;
        g.subscription =
            backplane_->Subscribe(options_.backplane_prefix + ":group:" + group,
                                  [this, s, group](std::string_view, std::string_view payload) {
                                      s->loop->Post([this, s, group, p = std::string(payload)] {
                                          DeliverLocal(*s, group, p);
                                      });
                                  });
    }
}

void HubServer::Leave(Shard& shard, HubConnection& conn, const std::string& group) {
    conn.groups().erase(group);
    auto it = shard.groups.find(group);
    if (it == shard.groups.end()) {
        return;
    }
    auto& m = it->second.members;
    std::erase_if(m, [&](const auto& c) { return c.get() == &conn; });
    if (m.empty()) {
        if (backplane_ != nullptr && it->second.subscription != 0) {
            backplane_->Unsubscribe(it->second.subscription);
        }
        shard.groups.erase(it);
    }
}

void HubServer::AddToGroup(std::string_view connection_id, std::string group) {
    auto conn = FindById(connection_id);
    if (!conn) {
        return;
    }
    RunOn(conn->loop(),
          [this, conn, group = std::move(group)] { Join(ShardFor(conn->loop()), conn, group); });
}

void HubServer::RemoveFromGroup(std::string_view connection_id, std::string_view group) {
    auto conn = FindById(connection_id);
    if (!conn) {
        return;
    }
    RunOn(conn->loop(), [this, conn, group = std::string(group)] {
        Leave(ShardFor(conn->loop()), *conn, group);
    });
}

void HubServer::CloseAll(bool allow_reconnect, std::function<void()> done) {
    closing_.store(true, std::memory_order_release);
    auto shards = AllShards();
    if (shards.empty()) {
        if (done) {
            done();
        }
        return;
    }
    auto left = std::make_shared<std::atomic<size_t>>(shards.size());
    auto finish = std::make_shared<std::function<void()>>(std::move(done));
    for (Shard* s : shards) {
        RunOn(*s->loop, [s, allow_reconnect, left, finish] {
            std::vector<std::shared_ptr<HubConnection>> conns;
            conns.reserve(s->connections.size());
            for (const auto& [token, c] : s->connections) {
                conns.push_back(c);
            }
            for (const auto& c : conns) {
                c->Close(std::nullopt, allow_reconnect);
            }
            if (left->fetch_sub(1) == 1 && *finish) {
                (*finish)();
            }
        });
    }
}

// --- HTTP ---

void HubServer::ApplyCors(const net::ExchangePtr& ex) const {
    std::string_view origin = ex->request().headers.Get("Origin");
    if (origin.empty() || options_.cors_origins.empty()) {
        return;
    }
    const bool allowed = std::any_of(options_.cors_origins.begin(), options_.cors_origins.end(),
                                     [&](const std::string& o) { return o == "*" || o == origin; });
    if (!allowed) {
        return;
    }
    auto& h = ex->extra_headers();
    h.Set("Access-Control-Allow-Origin", std::string(origin));
    h.Set("Access-Control-Allow-Credentials", "true");
    h.Set("Vary", "Origin");
}

void HubServer::HandleOptions(const net::ExchangePtr& ex) {
    ApplyCors(ex);
    net::Response r;
    r.status = 204;
    if (ex->extra_headers().Has("Access-Control-Allow-Origin")) {
        std::string headers = "x-requested-with, x-signalr-user-agent, authorization, content-type";
        for (const auto& extra : options_.cors_extra_headers) {
            headers += ", " + extra;
        }
        r.headers.Add("Access-Control-Allow-Methods", "GET, POST, DELETE");
        r.headers.Add("Access-Control-Allow-Headers", std::move(headers));
        r.headers.Add("Access-Control-Max-Age", "600");
    }
    ex->Respond(std::move(r));
}

std::optional<Principal> HubServer::Authenticate(const net::ExchangePtr& ex) const {
    if (!options_.authenticate) {
        return Principal{};
    }
    const net::Request& req = ex->request();
    std::string token(req.BearerToken());
    if (token.empty()) {
        token = QueryParamIgnoreCase(req.query(), "access_token").value_or("");
    }
    auto p = options_.authenticate(req, token);
    if (!p) {
        net::Response r = PlainText(401, "Unauthorized");
        r.headers.Add("WWW-Authenticate", "Bearer");
        ex->Respond(std::move(r));
    }
    return p;
}

void HubServer::HandleNegotiate(const net::ExchangePtr& ex) {
    ApplyCors(ex);
    if (closing()) {
        // Shutting down: a reconnecting client retries (elsewhere, behind a load balancer).
        ex->Respond(PlainText(503, "Server is shutting down"));
        return;
    }
    auto principal = Authenticate(ex);
    if (!principal) {
        return;
    }
    const auto query = ex->request().query();
    int64_t version = 0;
    if (auto v = QueryParamIgnoreCase(query, "negotiateVersion")) {
        auto parsed = core::ParseInt(*v);
        if (!parsed || *parsed < 0) {
            ex->Respond(net::Response::Json(
                200, "{\"error\":" +
                         core::JsonQuote("The client requested an invalid protocol version '" + *v +
                                         "'") +
                         "}"));
            return;
        }
        version = std::min<int64_t>(*parsed, 1);
    }
    const bool stateful =
        options_.allow_stateful_reconnect &&
        core::IEquals(QueryParamIgnoreCase(query, "useStatefulReconnect").value_or(""), "true");
    auto conn = Create(ex->loop(), std::move(*principal), stateful, version >= 1);
    std::string body = "{\"negotiateVersion\":" + std::to_string(version) +
                       ",\"connectionId\":" + core::JsonQuote(conn->id());
    if (version >= 1) {
        body += ",\"connectionToken\":" + core::JsonQuote(conn->token());
    }
    body += ",\"availableTransports\":[";
    bool first = true;
    auto add = [&](std::string_view t) {
        body += first ? "" : ",";
        body += t;
        first = false;
    };
    if (options_.websockets && accept_websocket_) {
        add("{\"transport\":\"WebSockets\",\"transferFormats\":[\"Text\",\"Binary\"]}");
    }
    if (options_.server_sent_events) {
        add("{\"transport\":\"ServerSentEvents\",\"transferFormats\":[\"Text\"]}");
    }
    if (options_.long_polling) {
        add("{\"transport\":\"LongPolling\",\"transferFormats\":[\"Text\",\"Binary\"]}");
    }
    body += "]";
    if (stateful) {
        body += ",\"useStatefulReconnect\":true";
    }
    body += "}";
    ex->Respond(net::Response::Json(200, std::move(body)));
}

void HubServer::AttachWebSocket(const net::WebSocketPtr& ws,
                                std::string token,
                                Principal principal) {
    std::shared_ptr<HubConnection> conn =
        token.empty() ? Create(ws->loop(), std::move(principal), false, false) : FindByToken(token);
    if (!conn) {
        ws->Close(1011, "No Connection with that ID");
        return;
    }
    // The socket's callbacks are set here, on the socket's loop and in the turn that accepted it
    // (a WebSocket may only be touched on its own loop, and a message arriving before its
    // callback is set would be lost). They post to the connection's loop, after the Attach
    // posted first, so the handshake never overtakes it.
    auto t = std::make_shared<WebSocketTransport>(ws);
    t->Bind(conn);
    RunOn(conn->loop(), [conn, ws, t] {
        if (!conn->Attach(t)) {
            RunOn(ws->loop(), [ws] { ws->Close(1008, "Conflict"); });
        }
    });
}

void HubServer::HandleGet(const net::ExchangePtr& ex) {
    ApplyCors(ex);
    auto principal = Authenticate(ex);
    if (!principal) {
        return;
    }
    const net::Request& req = ex->request();
    auto token = QueryParamIgnoreCase(req.query(), "id");
    if (IsWebSocketRequest(req)) {
        if (!options_.websockets || !accept_websocket_) {
            ex->Respond(
                PlainText(404, "WebSockets transport not supported by this end point type"));
            return;
        }
        if (!token && closing()) {
            ex->Respond(PlainText(503, "Server is shutting down"));
            return;
        }
        if (!token) {
            net::WebSocketPtr ws = accept_websocket_(ex);
            if (ws) {
                AttachWebSocket(ws, "", std::move(*principal));
            }
            return;  // else the acceptor answered
        }
        std::shared_ptr<HubConnection> conn = FindByToken(*token);
        if (!conn) {
            ex->Respond(PlainText(404, "No Connection with that ID"));
            return;
        }
        // The transport check reads the connection's state on its own loop; the upgrade is
        // then accepted (or refused with 409 / 400) on the exchange's loop. Nothing has been
        // sent before, so accepting in a later turn is fine. AttachWebSocket re-checks for a
        // race with another request in between.
        auto accept = [this, ex, token = *token, principal = std::move(*principal)](
                          std::optional<net::Response> refusal) mutable {
            if (refusal) {
                ex->Respond(std::move(*refusal));
                return;
            }
            net::WebSocketPtr ws = accept_websocket_(ex);
            if (ws) {
                AttachWebSocket(ws, token, std::move(principal));
            }
        };
        RunOn(conn->loop(), [conn, ex, accept = std::move(accept)]() mutable {
            std::optional<net::Response> refusal;
            const auto kind = conn->transport_kind();
            const bool resumable = conn->stateful() && kind == TransportKind::kWebSockets &&
                                   (conn->state() == HubConnection::State::kInactive ||
                                    conn->state() == HubConnection::State::kConnected);
            if (kind != TransportKind::kNone && !resumable) {
                refusal = kind == TransportKind::kWebSockets
                              ? PlainText(409, "Conflict")
                              : PlainText(400, "Cannot change transports mid-connection");
            }
            RunOn(ex->loop(), [accept = std::move(accept), refusal = std::move(refusal)]() mutable {
                accept(std::move(refusal));
            });
        });
        return;
    }
    const bool sse = req.headers.Get("Accept").find("text/event-stream") != std::string_view::npos;
    if (sse && !options_.server_sent_events) {
        ex->Respond(
            PlainText(404, "ServerSentEvents transport not supported by this end point type"));
        return;
    }
    if (!sse && !options_.long_polling) {
        ex->Respond(PlainText(404, "LongPolling transport not supported by this end point type"));
        return;
    }
    if (!token) {
        ex->Respond(PlainText(400, "Connection ID required"));
        return;
    }
    auto conn = FindByToken(*token);
    if (!conn) {
        ex->Respond(PlainText(404, "No Connection with that ID"));
        return;
    }
    RunOn(conn->loop(), [this, conn, ex, sse] {
        const auto kind = conn->transport_kind();
        auto reply = [ex](net::Response r) {
            RunOn(ex->loop(), [ex, r = std::move(r)]() mutable { ex->Respond(std::move(r)); });
        };
        if (sse) {
            if (kind != TransportKind::kNone) {
                reply(kind == TransportKind::kServerSentEvents
                          ? PlainText(409, "Conflict")
                          : PlainText(400, "Cannot change transports mid-connection"));
                return;
            }
            auto t = std::make_shared<SseTransport>(ex);
            if (!conn->Attach(t)) {
                reply(PlainText(409, "Conflict"));
                return;
            }
            t->Start(conn);
            return;
        }
        if (kind == TransportKind::kNone) {
            auto t = std::make_shared<LongPollTransport>(conn->loop(), options_.long_poll_timeout);
            if (!conn->Attach(t)) {
                reply(PlainText(409, "Conflict"));
                return;
            }
            net::Response r;
            r.headers = LongPollTransport::PollHeaders();
            reply(std::move(r));  // the first poll starts the connection at once
            return;
        }
        if (kind != TransportKind::kLongPolling) {
            reply(PlainText(400, "Cannot change transports mid-connection"));
            return;
        }
        auto t = std::dynamic_pointer_cast<LongPollTransport>(conn->transport());
        if (!t) {
            reply(PlainText(404, "No Connection with that ID"));
            return;
        }
        t->Poll(ex);
    });
}

void HubServer::HandlePost(const net::ExchangePtr& ex) {
    ApplyCors(ex);
    auto principal = Authenticate(ex);
    if (!principal) {
        return;
    }
    auto token = QueryParamIgnoreCase(ex->request().query(), "id");
    if (!token) {
        ex->Respond(PlainText(400, "Connection ID required"));
        return;
    }
    auto conn = FindByToken(*token);
    if (!conn) {
        ex->Respond(PlainText(404, "No Connection with that ID"));
        return;
    }
    RunOn(conn->loop(), [conn, ex] {
        net::Response r;
        if (conn->transport_kind() == TransportKind::kWebSockets) {
            r = PlainText(405, "POST requests are not allowed for WebSocket connections.");
        } else if (conn->state() == HubConnection::State::kClosed) {
            r = PlainText(404, "No Connection with that ID");
        } else {
            conn->OnData(ex->request().body);
        }
        RunOn(ex->loop(), [ex, r = std::move(r)]() mutable { ex->Respond(std::move(r)); });
    });
}

void HubServer::HandleDelete(const net::ExchangePtr& ex) {
    ApplyCors(ex);
    auto principal = Authenticate(ex);
    if (!principal) {
        return;
    }
    auto token = QueryParamIgnoreCase(ex->request().query(), "id");
    if (!token) {
        ex->Respond(PlainText(400, "Connection ID required"));
        return;
    }
    auto conn = FindByToken(*token);
    if (!conn) {
        ex->Respond(PlainText(404, "No Connection with that ID"));
        return;
    }
    RunOn(conn->loop(), [conn, ex] {
        net::Response r;
        if (conn->transport_kind() != TransportKind::kLongPolling) {
            r = PlainText(400, "Cannot terminate this connection using the DELETE endpoint.");
        } else {
            r.status = 202;
            conn->Kick();
        }
        RunOn(ex->loop(), [ex, r = std::move(r)]() mutable { ex->Respond(std::move(r)); });
    });
}

std::shared_ptr<HubServer> RegisterHub(net::Router& router,
                                       const std::string& path,
                                       std::shared_ptr<const Hub> hub,
                                       HubOptions options,
                                       bus::Backplane* backplane,
                                       WebSocketAcceptor accept_websocket) {
    auto server = std::make_shared<HubServer>(std::move(hub), std::move(options), backplane,
                                              std::move(accept_websocket));
    HubServer* s = server.get();
    auto keep = server;  // the routes keep the server alive
    router.Add("POST", path + "/negotiate",
               [keep, s](const net::ExchangePtr& ex) { s->HandleNegotiate(ex); });
    router.Add("OPTIONS", path + "/negotiate",
               [keep, s](const net::ExchangePtr& ex) { s->HandleOptions(ex); });
    router.Add("GET", path, [keep, s](const net::ExchangePtr& ex) { s->HandleGet(ex); });
    router.Add("POST", path, [keep, s](const net::ExchangePtr& ex) { s->HandlePost(ex); });
    router.Add("DELETE", path, [keep, s](const net::ExchangePtr& ex) { s->HandleDelete(ex); });
    router.Add("OPTIONS", path, [keep, s](const net::ExchangePtr& ex) { s->HandleOptions(ex); });
    return server;
}

}  // namespace conduit::realtime
