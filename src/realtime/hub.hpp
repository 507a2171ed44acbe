#pragma once

#include "net/http_types.hpp"

#include <boost/json/array.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

/// Generic SignalR server (specs/signalr-protocol.md). Knows nothing of Conduit: hubs are
/// registered by the layer above (src/hubs).
namespace conduit::realtime {

class HubConnection;
class HubContext;

/// Who is connected, as established by HubOptions::authenticate.
struct Principal {
    std::string user_id;  // for per-user sends; empty = anonymous
    /// Opaque data of the authentication layer (e.g. the virtual key).
    std::shared_ptr<const void> data;
};

/// Settings of one hub endpoint (specs/api.md §5 defaults).
struct HubOptions {
    std::chrono::milliseconds keep_alive{15000};
    std::chrono::milliseconds client_timeout{30000};
    std::chrono::milliseconds handshake_timeout{15000};
    /// Reaps a negotiated-but-unused connection, an idle long-polling one, and a stateful
    /// connection whose transport dropped (spec §2.4, §4.4).
    std::chrono::milliseconds disconnect_timeout{15000};
    std::chrono::milliseconds long_poll_timeout{90000};
    /// Granularity of the timers above (one timer per shard, ASP.NET uses 1 s too).
    std::chrono::milliseconds heartbeat{1000};
    size_t max_message_bytes = 32 * 1024;
    size_t stream_buffer_capacity = 10;
    /// Bytes queued towards a client above which it is disconnected (slow consumer).
    size_t max_send_buffer_bytes = 1024 * 1024;
    bool allow_stateful_reconnect = true;
    /// Unacknowledged bytes kept for stateful reconnect; beyond that the connection is closed.
    size_t stateful_reconnect_buffer_bytes = 100000;
    bool websockets = true;
    bool server_sent_events = true;
    bool long_polling = true;
    /// Origins allowed for CORS (exact match, reflected); "*" reflects any origin. Empty = no
    /// CORS headers.
    std::vector<std::string> cors_origins;
    /// Extra request headers allowed in CORS preflights (besides the SignalR ones).
    std::vector<std::string> cors_extra_headers;
    /// Authentication hook, run on negotiate and on every transport request, with the token
    /// taken from `Authorization: Bearer` or the `access_token` query parameter (may be empty).
    /// Returns the principal, or nullopt for 401. Unset = everyone is anonymous. Any thread.
    std::function<std::optional<Principal>(const net::Request& request, std::string_view token)>
        authenticate;
    /// Channel prefix on the backplane (spec §5.1), e.g. "Conduit.Hubs.TaskHub".
    std::string backplane_prefix = "hub";
};

/// Outcome of a non-streaming hub method.
struct HubResult {
    enum class Failure { kNone, kHubException, kUnexpected };
    std::optional<boost::json::value> value;  // absent = void completion
    Failure failure = Failure::kNone;
    std::string message;  // HubException message

    static HubResult Void() { return {}; }
    static HubResult Value(boost::json::value v) { return HubResult{std::move(v)}; }
    /// A HubException: the client sees "An unexpected error occurred invoking '<m>' on the
    /// server. HubException: <message>".
    static HubResult Exception(std::string message) {
        return HubResult{std::nullopt, Failure::kHubException, std::move(message)};
    }
    /// An unexpected failure: "An unexpected error occurred invoking '<m>' on the server."
    static HubResult Unexpected() { return HubResult{std::nullopt, Failure::kUnexpected, {}}; }
};

/// A client→server upload stream (an argument listed in `streamIds`). Items received before a
/// consumer is set are buffered (up to HubOptions::stream_buffer_capacity). Connection loop only.
class UploadStream {
public:
    /// Receives each item, then once the end (`error` set when the client faulted the stream or
    /// the connection went away).
    void Consume(std::function<void(const boost::json::value& item)> on_item,
                 std::function<void(std::optional<std::string> error)> on_end);
    const std::string& id() const { return id_; }

private:
    friend class HubConnection;
    explicit UploadStream(std::string id) : id_(std::move(id)) {}
    bool Push(boost::json::value item, size_t capacity);
    void End(std::optional<std::string> error);

    std::string id_;
    std::vector<boost::json::value> buffered_;
    std::optional<std::optional<std::string>> ended_;
    std::function<void(const boost::json::value&)> on_item_;
    std::function<void(std::optional<std::string>)> on_end_;
};

/// Server→client stream of a streaming hub method. Connection loop only.
class StreamWriter {
public:
    /// Sends one StreamItem. Returns false (and sends nothing) once cancelled or ended.
    bool Write(const boost::json::value& item);
    /// Sends one StreamItem whose JSON is already serialized.
    bool WriteJson(std::string_view item_json);
    /// Ends the stream: a result-less Completion, or an error Completion with the full text.
    void Complete(std::optional<std::string> error = std::nullopt);
    /// True once the client cancelled (CancelInvocation) or the connection closed.
    bool cancelled() const { return cancelled_; }
    /// Called once when the stream is cancelled (not after Complete()).
    void SetOnCancel(std::function<void()> fn) { on_cancel_ = std::move(fn); }

private:
    friend class HubConnection;
    StreamWriter(std::weak_ptr<HubConnection> conn, std::string id)
        : conn_(std::move(conn)), id_(std::move(id)) {}
    void Cancel();

    std::weak_ptr<HubConnection> conn_;
    std::string id_;
    bool cancelled_ = false;
    bool done_ = false;
    std::function<void()> on_cancel_;
};

/// What a hub method gets. Connection loop.
struct CallContext {
    std::shared_ptr<HubConnection> connection;
    HubContext* hub = nullptr;
    std::string method;                                  // as registered
    std::optional<std::string> invocation_id;            // absent for fire-and-forget
    std::vector<std::shared_ptr<UploadStream>> streams;  // from `streamIds`, in order
};

/// One-shot completion of an asynchronous method; callable from any thread (posts to the
/// connection loop). Later calls are ignored.
using Completer = std::function<void(HubResult)>;

using SyncMethod = std::function<HubResult(CallContext& ctx, const boost::json::array& args)>;
using AsyncMethod =
    std::function<void(CallContext& ctx, const boost::json::array& args, Completer done)>;
using StreamMethod = std::function<void(
    CallContext& ctx, const boost::json::array& args, std::shared_ptr<StreamWriter> writer)>;

/// Runs before every invocation that passed the name and argument checks (e.g. a rate limit):
/// `proceed(std::nullopt)` runs the method; `proceed(message)` answers the invocation with a
/// HubException carrying `message` instead. May answer later, from any thread; the connection's
/// next messages wait meanwhile (invocations stay in order).
using InvocationGate =
    std::function<void(CallContext& ctx, std::function<void(std::optional<std::string>)> proceed)>;

/// A hub definition: methods (matched case-insensitively) and connection hooks. Built at
/// start-up, then read-only (shared by every shard).
class Hub {
public:
    /// Every invocation passes `gate` first (one gate per hub; replaces an earlier one).
    Hub& OnInvocation(InvocationGate gate) {
        gate_ = std::move(gate);
        return *this;
    }
    const InvocationGate& gate() const { return gate_; }

    /// `arg_count`: the number of arguments the method binds (-1: any). A mismatch answers
    /// "Failed to invoke 'X' due to an error on the server. InvalidDataException: Invocation
    /// provides N argument(s) but target expects M."
    Hub& On(std::string name, SyncMethod fn, int arg_count = -1);
    /// A non-blocking method: completes later through the Completer.
    Hub& OnAsync(std::string name, AsyncMethod fn, int arg_count = -1);
    /// A streaming method (called with StreamInvocation).
    Hub& OnStream(std::string name, StreamMethod fn, int arg_count = -1);
    /// After the handshake (long polling: after the first poll). Connection loop. Returning an
    /// error text closes the connection with "Connection closed with an error.".
    Hub& OnConnected(std::function<std::optional<std::string>(HubConnection&, HubContext&)> fn);
    /// Once per connection that ran OnConnected; `error` empty on graceful closes.
    Hub& OnDisconnected(
        std::function<void(HubConnection&, HubContext&, std::optional<std::string> error)> fn);

    struct Method {
        enum class Kind { kSync, kAsync, kStream };
        Kind kind = Kind::kSync;
        std::string name;
        int arg_count = -1;
        SyncMethod sync;
        AsyncMethod async;
        StreamMethod stream;
    };
    /// Finds a method case-insensitively; nullptr when unknown.
    const Method* Find(std::string_view name) const;

    std::function<std::optional<std::string>(HubConnection&, HubContext&)> on_connected;
    std::function<void(HubConnection&, HubContext&, std::optional<std::string>)> on_disconnected;

private:
    std::unordered_map<std::string, Method> methods_;  // key: lowercase name
    InvocationGate gate_;
};

/// Sending to clients from hub methods or from outside (task events, ...). Any thread.
/// Messages are Invocations without an id (server events).
class HubContext {
public:
    virtual ~HubContext() = default;
    /// One connection by its public id (directly when local, else through the backplane).
    virtual void SendToConnection(std::string_view connection_id,
                                  std::string_view target,
                                  const boost::json::array& args) = 0;
    /// Every connection of the hub, on every instance (through the backplane).
    virtual void SendToAll(std::string_view target, const boost::json::array& args) = 0;
    /// Every member of `group`, on every instance. Serialized once, then fanned out.
    virtual void SendToGroup(std::string_view group,
                             std::string_view target,
                             const boost::json::array& args) = 0;
    /// Every connection whose Principal::user_id is `user_id`, on every instance.
    virtual void SendToUser(std::string_view user_id,
                            std::string_view target,
                            const boost::json::array& args) = 0;
    /// Group membership of a local connection (ordinal, case-sensitive names).
    virtual void AddToGroup(std::string_view connection_id, std::string group) = 0;
    virtual void RemoveFromGroup(std::string_view connection_id, std::string_view group) = 0;
    /// Local connections right now (for metrics and tests).
    virtual size_t ConnectionCount() const = 0;
};

}  // namespace conduit::realtime
