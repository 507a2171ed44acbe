#pragma once

#include "core/loop.hpp"
#include "net/exchange.hpp"
#include "net/websocket.hpp"
#include "realtime/connection.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace conduit::realtime {

/// Runs `fn` on `loop`: at once when already there, else posted.
void RunOn(core::Loop& loop, std::function<void()> fn);

/// One SSE event for `payload` (spec §2.3): `data: <line>\r\n` per line (a `\r` before `\n`
/// trimmed), then `\r\n`. Pure.
std::string FormatSseEvent(std::string_view payload);

/// WebSockets (§2.2): one text frame per Send. Created on the connection loop; the socket may
/// live on another loop (calls hop).
class WebSocketTransport final : public Transport,
                                 public std::enable_shared_from_this<WebSocketTransport> {
public:
    explicit WebSocketTransport(net::WebSocketPtr ws) : ws_(std::move(ws)) {}
    /// Wires the socket's callbacks to `conn` (call after HubConnection::Attach succeeded).
    void Bind(const std::shared_ptr<HubConnection>& conn);
    void Send(std::string records) override;
    /// Queues the broadcast's shared frame (built once for every socket).
    void SendShared(SharedRecord& record) override;
    void Close(bool graceful) override;
    size_t BufferedBytes() const override { return ws_->BufferedBytes(); }
    TransportKind kind() const override { return TransportKind::kWebSockets; }

private:
    net::WebSocketPtr ws_;
};

/// Server-Sent Events (§2.3): one event per Send on a held GET.
class SseTransport final : public Transport, public std::enable_shared_from_this<SseTransport> {
public:
    explicit SseTransport(net::ExchangePtr exchange) : ex_(std::move(exchange)) {}
    /// Writes the 200 headers and the `:\r\n` preamble and watches the GET for its end.
    void Start(const std::shared_ptr<HubConnection>& conn);
    void Send(std::string records) override;
    void Close(bool graceful) override;
    size_t BufferedBytes() const override { return ex_->BufferedBytes(); }
    TransportKind kind() const override { return TransportKind::kServerSentEvents; }

private:
    net::ExchangePtr ex_;
    bool ended_ = false;
};

/// Long polling (§2.4): data queued between polls; one poll held at a time, answered 200 with
/// every queued record, 200 empty after `hold`, 204 once closed or replaced.
class LongPollTransport final : public Transport,
                                public std::enable_shared_from_this<LongPollTransport> {
public:
    LongPollTransport(core::Loop& conn_loop, std::chrono::milliseconds hold)
        : loop_(conn_loop), hold_(hold) {}
    /// A poll (connection loop). The first poll of a connection is answered at once by the caller.
    void Poll(const net::ExchangePtr& exchange);
    void Send(std::string records) override;
    void Close(bool graceful) override;
    size_t BufferedBytes() const override { return pending_.size(); }
    TransportKind kind() const override { return TransportKind::kLongPolling; }
    bool active() const override { return held_ != nullptr; }
    bool closed() const { return closed_; }

    /// Response headers of every poll.
    static net::Headers PollHeaders();

private:
    void Answer(int status, std::string body);

    core::Loop& loop_;
    std::chrono::milliseconds hold_;
    std::string pending_;
    net::ExchangePtr held_;
    core::TimerPtr timer_;
    bool closed_ = false;
};

}  // namespace conduit::realtime
