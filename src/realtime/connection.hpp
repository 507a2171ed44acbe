#pragma once

#include "core/loop.hpp"
#include "net/websocket.hpp"
#include "realtime/hub.hpp"
#include "realtime/hub_protocol.hpp"

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace conduit::realtime {

/// A FIFO that allocates nothing until the first push_back (an empty std::deque already holds a
/// 512-byte node and its map in libstdc++, ~1.1 KB for the two queues of every connection, most
/// of which never queue anything). clear() gives the memory back.
template <typename T>
class LazyDeque {
public:
    bool empty() const { return !items_ || items_->empty(); }
    size_t size() const { return items_ ? items_->size() : 0; }
    T& front() { return items_->front(); }
    const T& front() const { return items_->front(); }
    void push_back(T value) {
        if (!items_) {
            items_ = std::make_unique<std::deque<T>>();
        }
        items_->push_back(std::move(value));
    }
    void pop_front() { items_->pop_front(); }
    void clear() { items_.reset(); }
    /// True once storage has been allocated (for tests).
    bool allocated() const { return items_ != nullptr; }

    auto begin() const {
        return items_ ? items_->cbegin() : typename std::deque<T>::const_iterator();
    }
    auto end() const { return items_ ? items_->cend() : typename std::deque<T>::const_iterator(); }

private:
    std::unique_ptr<std::deque<T>> items_;
};

/// One record delivered to many connections (a broadcast to a group or to all). Each transport
/// wraps it its own way; the WebSocket frame is built once, by the first WebSocket that sends it,
/// and shared by every socket's write queue. Lives for one delivery pass on one loop (it refers
/// to the record, which must outlive it); the frame itself may travel to other loops.
class SharedRecord {
public:
    explicit SharedRecord(const std::string& record) : record_(record) {}
    const std::string& record() const { return record_; }
    /// The record as one WebSocket text frame (built on the first call).
    const net::SharedFrame& WebSocketFrame() {
        if (!frame_.bytes) {
            frame_ = net::MakeSharedFrame(record_);
        }
        return frame_;
    }

private:
    const std::string& record_;
    net::SharedFrame frame_;
};

/// The three transports of spec §2.
enum class TransportKind { kNone, kWebSockets, kServerSentEvents, kLongPolling };

/// What a HubConnection writes to. Implementations: transports.hpp. Connection loop only.
class Transport {
public:
    virtual ~Transport() = default;
    /// Sends one or more complete records as one transport message.
    virtual void Send(std::string records) = 0;
    /// Sends a record shared with other connections (a broadcast). The default sends a copy.
    virtual void SendShared(SharedRecord& record) { Send(std::string(record.record())); }
    /// Ends the transport: gracefully (WebSocket 1000, SSE end, long poll 204) or abruptly.
    virtual void Close(bool graceful) = 0;
    /// Bytes queued towards the client.
    virtual size_t BufferedBytes() const = 0;
    virtual TransportKind kind() const = 0;
    /// False while a long-polling connection has no poll held (it is reaped after
    /// HubOptions::disconnect_timeout of that).
    virtual bool active() const { return true; }
};

/// Runtime services a connection needs from its server (one per hub endpoint).
class ConnectionHost {
public:
    virtual ~ConnectionHost() = default;
    virtual const Hub& hub() const = 0;
    virtual HubContext& context() = 0;
    virtual const HubOptions& options() const = 0;
    /// The shard clock: milliseconds, advanced by the shard heartbeat.
    virtual int64_t NowMs(core::Loop& loop) const = 0;
    /// The connection ended for good: forget it (registry, groups).
    virtual void Forget(HubConnection& connection) = 0;
};

/// One SignalR connection (negotiated token) and its state machine: handshake, dispatch with one
/// invocation at a time, streams, keep-alive, stateful reconnect. Lives on one loop; every
/// method runs there (the transports post to it).
class HubConnection : public std::enable_shared_from_this<HubConnection> {
public:
    enum class State {
        kNegotiated,   // no transport yet
        kHandshaking,  // transport attached, waiting for the handshake
        kConnected,
        kInactive,  // stateful reconnect: transport lost, waiting for the client to resume
        kClosed,
    };

    HubConnection(ConnectionHost& host,
                  core::Loop& loop,
                  std::string id,
                  std::string token,
                  Principal principal,
                  bool stateful_reconnect);

    const std::string& id() const { return id_; }
    const std::string& token() const { return token_; }
    const Principal& principal() const { return principal_; }
    core::Loop& loop() { return loop_; }
    State state() const { return state_; }
    TransportKind transport_kind() const { return kind_; }
    bool stateful() const { return stateful_; }
    /// Free per-connection values for hubs.
    std::unordered_map<std::string, std::string>& items() { return items_; }
    /// Groups this connection belongs to (maintained by the server).
    std::set<std::string>& groups() { return groups_; }

    // --- transport side ---
    /// Attaches the first transport (or, for stateful reconnect, a replacement WebSocket, which
    /// is sent Sequence + the unacknowledged messages). Returns false when refused.
    bool Attach(std::shared_ptr<Transport> transport);
    /// Bytes from the client (any split of records).
    void OnData(std::string_view data);
    /// The transport ended (`abrupt`: a network drop, which a stateful connection survives).
    void OnTransportClosed(const Transport* transport, bool abrupt);
    /// The current transport (for the HTTP layer).
    const std::shared_ptr<Transport>& transport() const { return transport_; }

    // --- server side ---
    /// Sends one pre-serialized record (or several of the same trackability).
    void SendRecord(std::string_view record, bool trackable);
    /// SendRecord(record, true) for a record sent to many connections: the transport may share
    /// its bytes instead of copying them (WebSockets).
    void SendShared(SharedRecord& record);
    /// Sends a server event (Invocation without id).
    void SendInvocation(std::string_view target, const boost::json::array& args);
    /// Sends Close (with `error`, `allowReconnect`) then ends the transport.
    void Close(std::optional<std::string> error, bool allow_reconnect = false);
    /// Ends the transport at once, without a Close message (a network failure for the client;
    /// a stateful connection then waits for a resume).
    void DropTransport();
    /// Ends the connection for good without a Close message (graceful transport end).
    void Kick();
    /// Invokes a client method and waits for its Completion (client results, §3.4).
    void InvokeClient(std::string_view target,
                      const boost::json::array& args,
                      std::function<void(HubResult)> on_result);

    /// Heartbeat from the shard (timeouts, pings, acks). `now_ms` is the shard clock.
    void Tick(int64_t now_ms);

private:
    friend class StreamWriter;
    struct Pending;
    void HandleRecord(std::string_view record);
    void HandleMessage(HubMessage message);
    void Dispatch(HubMessage message);
    /// Runs a checked invocation (after the hub's gate, if any).
    void Invoke(const Hub::Method* method, HubMessage& m, CallContext& ctx);
    void RunNext();
    void FinishInvocation(const std::optional<std::string>& invocation_id,
                          const std::string& method,
                          HubResult result);
    void SendCompletion(std::string_view id,
                        std::optional<std::string_view> result_json,
                        std::optional<std::string_view> error);
    void StreamEnded(const std::string& id);
    /// Buffers a record for stateful reconnect; false when it is not to be written now.
    bool Track(std::string_view record, bool trackable);
    void Write(std::string records);
    void WriteShared(SharedRecord& record);
    /// After a write: closes a connection whose client does not read.
    void CheckBacklog();
    void Dispose(std::optional<std::string> error, bool graceful);
    void Fail(std::string error);

    ConnectionHost& host_;
    core::Loop& loop_;
    std::string id_;
    std::string token_;
    Principal principal_;
    bool stateful_;
    State state_ = State::kNegotiated;
    TransportKind kind_ = TransportKind::kNone;
    std::shared_ptr<Transport> transport_;
    FrameReader reader_;
    std::unordered_map<std::string, std::string> items_;
    std::set<std::string> groups_;
    bool connected_hook_ran_ = false;

    int64_t state_since_ms_ = 0;
    int64_t last_sent_ms_ = 0;
    int64_t last_received_ms_ = 0;
    int64_t inactive_since_ms_ = -1;

    // One invocation at a time.
    bool busy_ = false;
    LazyDeque<HubMessage> queue_;
    std::unordered_map<std::string, std::shared_ptr<UploadStream>> uploads_;
    std::unordered_map<std::string, std::shared_ptr<StreamWriter>> streams_;
    std::unordered_map<std::string, std::function<void(HubResult)>> client_calls_;
    uint64_t next_client_call_ = 0;

    // Stateful reconnect (§4.4).
    struct Buffered {
        int64_t seq;
        std::string bytes;
    };
    LazyDeque<Buffered> unacked_;
    size_t unacked_bytes_ = 0;
    int64_t next_send_seq_ = 1;
    int64_t recv_counter_ = 0;  // number of the last trackable message received
    int64_t last_processed_ = 0;
    int64_t last_ack_sent_ = 0;
    bool awaiting_sequence_ = false;
};

}  // namespace conduit::realtime
