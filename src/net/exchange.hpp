#pragma once

#include "core/loop.hpp"
#include "net/http_types.hpp"
#include "net/websocket.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace conduit::net {

/// One request/response exchange on a server connection, handed to a handler.
///
/// Thread affinity: every method must be called on the thread of `loop()` (the connection's
/// shard). Work finishing on another thread must `loop().Post(...)` back first.
///
/// A handler either calls Respond() once, or BeginStream() then any number of Write() and one
/// EndStream(). The connection waits (without blocking its thread) until that happens. If the
/// client disconnects first, the OnClose callback runs and later calls are ignored.
class Exchange : public std::enable_shared_from_this<Exchange> {
public:
    virtual ~Exchange() = default;

    virtual Request& request() = 0;
    virtual core::Loop& loop() = 0;

    /// Sends a complete response. Adds Content-Length; adds `Connection: close` when closing.
    virtual void Respond(Response response) = 0;
    /// Starts a chunked streaming response with the given status and headers.
    virtual void BeginStream(int status, Headers headers) = 0;
    /// Starts a streaming response whose length is known: `Content-Length` framing, the body is
    /// then written with Write() (exactly `length` bytes in total) and ended with EndStream().
    virtual void BeginFixedLength(int status, Headers headers, uint64_t length) = 0;
    /// Queues one body chunk (one HTTP chunk, or raw bytes after BeginFixedLength). Empty chunks
    /// are ignored.
    virtual void Write(std::string chunk) = 0;
    /// Terminates the streaming response.
    virtual void EndStream() = 0;
    /// Closes the connection at once without completing the response (the client sees the
    /// connection drop mid-response). Used to propagate an upstream failure that cannot be
    /// expressed in-band, and by the mock provider to simulate broken upstreams.
    virtual void Abort() = 0;
    /// Completes a WebSocket upgrade: sends 101 Switching Protocols (with `headers` added, e.g.
    /// Sec-WebSocket-Protocol) and hands the connection over to the returned socket; the exchange
    /// is then finished (no other response may follow). nullptr (and nothing sent) when the
    /// request is not a valid upgrade (IsWebSocketUpgrade), the exchange has started, or the
    /// server is shutting down. Callbacks set on the socket in the same loop turn see every
    /// message (including one the client pipelined behind its request). The default (for
    /// exchanges that cannot upgrade, e.g. test doubles) returns nullptr.
    virtual WebSocketPtr AcceptWebSocket(Headers headers, WebSocketOptions options) {
        (void)headers;
        (void)options;
        return nullptr;
    }

    /// Bytes queued or in flight towards the client (for backpressure decisions).
    virtual size_t BufferedBytes() const = 0;
    /// Called once when BufferedBytes() drops to zero after a Write (replaces any earlier one).
    virtual void SetOnDrain(std::function<void()> fn) = 0;
    /// Called once if the client goes away before the response completes.
    virtual void SetOnClose(std::function<void()> fn) = 0;
    /// Called once when the response has been fully written (or abandoned), with the final
    /// status and the response body byte count.
    virtual void SetOnComplete(std::function<void(int status, size_t body_bytes)> fn) = 0;

    /// True once the client is known to be gone.
    virtual bool closed() const = 0;
    /// True once Respond() or EndStream() has been called.
    virtual bool responded() const = 0;
    /// True once BeginStream() or Respond() has been called.
    virtual bool started() const = 0;

    /// Headers added to whatever response this exchange sends (e.g. X-Request-Id).
    Headers& extra_headers() { return extra_headers_; }

protected:
    Headers extra_headers_;
};

using ExchangePtr = std::shared_ptr<Exchange>;
using Handler = std::function<void(const ExchangePtr&)>;

}  // namespace conduit::net
