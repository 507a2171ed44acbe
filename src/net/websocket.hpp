#pragma once

#include "core/loop.hpp"
#include "net/http_types.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace conduit::net {

/// Limits of an accepted WebSocket.
struct WebSocketOptions {
    /// Largest message accepted from the client (bytes, after reassembly of fragments). A larger
    /// one closes the socket with 1009 (message too big).
    size_t max_message_bytes = 32 * 1024;
    /// Bytes queued towards the client above which the socket is closed with 1008 (a client that
    /// does not read must not grow the server's memory without bound).
    size_t max_buffered_bytes = 1024 * 1024;
    /// Permessage-deflate is not offered (per-connection compressor state costs ~100 KB).
};

/// One message framed once for many sockets (a broadcast): the complete server → client frame
/// (header + payload), immutable and shared by the write queue of every socket it is sent to,
/// so a fan-out to N sockets costs one frame build instead of N copies. Made by MakeSharedFrame.
struct SharedFrame {
    std::shared_ptr<const std::string> bytes;
    /// Size of the frame header at the start of `bytes`.
    size_t header = 0;
    bool binary = false;

    /// The message (payload) carried by the frame.
    std::string_view message() const {
        return bytes ? std::string_view(*bytes).substr(header) : std::string_view();
    }
};

/// Frames `message` (one final text or binary frame, unmasked) for SendShared. Pure.
SharedFrame MakeSharedFrame(std::string_view message, bool binary = false);

/// A server-side WebSocket (RFC 6455) accepted from an HTTP/1.1 upgrade request. No Asio in this
/// header: the implementation lives in net.
///
/// Thread affinity: every method must be called on the thread of `loop()` (the connection's
/// shard); the callbacks run there too. Messages are delivered in order, one callback per
/// complete message. Control frames (ping/pong/close) are answered by the implementation.
///
/// Closing: closed() turns true as soon as the socket stops carrying messages (a Close() or
/// Abort(), a close frame from the client, a limit or protocol error, a drop); Send() is then
/// ignored and no further message is delivered. OnClose is posted at that moment (it never runs
/// inside Send/Close/Abort). The TCP connection closes when the closing handshake completes, or
/// at the latest a few seconds later (a client that does not answer or does not read).
class WebSocket : public std::enable_shared_from_this<WebSocket> {
public:
    virtual ~WebSocket() = default;

    virtual core::Loop& loop() = 0;
    /// Queues one message (text or binary). Ignored once closed.
    virtual void Send(std::string message, bool binary = false) = 0;
    /// Queues one message framed beforehand (see SharedFrame); the bytes are shared, not copied.
    /// Same rules as Send. The default sends a copy of the message (test doubles).
    virtual void SendShared(const SharedFrame& frame) {
        Send(std::string(frame.message()), frame.binary);
    }
    /// Starts the closing handshake with `code` and `reason` (queued messages are sent first;
    /// a reason is cut to 123 bytes). A code not allowed on the wire (e.g. 1005, 1006) sends a
    /// close frame without a code, and is still the one reported to OnClose.
    virtual void Close(uint16_t code = 1000, std::string reason = {}) = 0;
    /// Drops the TCP connection at once (no closing handshake), as a network failure would.
    virtual void Abort() = 0;

    /// Called for each complete message from the client.
    virtual void SetOnMessage(std::function<void(std::string message, bool binary)> fn) = 0;
    /// Called once when the socket is closed, by either side or by a failure; `code` is the close
    /// code received or sent (1006 when the connection dropped without one or after Abort(),
    /// 1005 when the client's close frame had no code, 1001 on server shutdown, 1002 protocol
    /// error, 1007 invalid UTF-8, 1008 max_buffered_bytes, 1009 max_message_bytes).
    virtual void SetOnClose(std::function<void(uint16_t code)> fn) = 0;
    /// Called once when BufferedBytes() drops to zero after a Send (replaces any earlier one).
    virtual void SetOnDrain(std::function<void()> fn) = 0;

    /// Bytes queued or in flight towards the client.
    virtual size_t BufferedBytes() const = 0;
    virtual bool closed() const = 0;
    /// The client's address "ip:port" (for logs and limits).
    virtual const std::string& remote() const = 0;
};

using WebSocketPtr = std::shared_ptr<WebSocket>;

/// True when `request` asks for a WebSocket upgrade (GET, `Connection: upgrade`,
/// `Upgrade: websocket`, `Sec-WebSocket-Version: 13`, a `Sec-WebSocket-Key`). Pure.
bool IsWebSocketUpgrade(const Request& request);

}  // namespace conduit::net
