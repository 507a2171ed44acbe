#pragma once

// Asio-aware: include only from the net layer's Asio translation units (http_server.cpp and
// websocket_impl.cpp).

#include "net/asio_loop.hpp"
#include "net/websocket.hpp"
#include "net/websocket_codec.hpp"

#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace conduit::net {

/// The server side of an upgraded connection: RFC 6455 framing over the connection's TCP socket,
/// a write queue (one write in flight at a time), the closing handshake and the limits of
/// WebSocketOptions. Lives on its shard's thread, like the connection it came from.
///
/// Closing: closed() turns true, and OnClose is posted (never run inside a caller's Send, Close
/// or Abort), as soon as the socket stops carrying messages: a Close(), a close frame from the
/// client, a limit or protocol error (the close frame is then queued), or a drop. The TCP
/// connection itself closes once the handshake completes, or after kCloseTimeout.
class ServerWebSocket final : public WebSocket {
public:
    /// How long a closing socket waits for its close frame to go out and the client's answer.
    static constexpr std::chrono::seconds kCloseTimeout{5};
    /// Size of the per-loop-thread read buffer.
    static constexpr size_t kScratchBytes = 64 * 1024;

    ServerWebSocket(AsioLoop& loop,
                    boost::asio::ip::tcp::socket socket,
                    std::string remote,
                    WebSocketOptions options);
    ~ServerWebSocket() override;

    /// Writes `response_head` (the 101 response) first, then reads frames: `leftover` (bytes the
    /// client sent after its upgrade request) before the socket. Reading starts from a posted
    /// task, so callbacks set in the same loop turn as the accept see every message.
    /// `on_finished` runs once, when the TCP connection has been closed. Loop thread.
    void Start(std::string response_head, std::string leftover, std::function<void()> on_finished);
    /// Server shutdown: closes with 1001 (going away). Loop thread.
    void GoingAway() { Close(1001, "server shutting down"); }

    core::Loop& loop() override { return loop_; }
    void Send(std::string message, bool binary) override;
    void SendShared(const SharedFrame& frame) override;
    void Close(uint16_t code, std::string reason) override;
    void Abort() override;
    void SetOnMessage(std::function<void(std::string, bool)> fn) override {
        on_message_ = std::move(fn);
    }
    void SetOnClose(std::function<void(uint16_t)> fn) override { on_close_ = std::move(fn); }
    void SetOnDrain(std::function<void()> fn) override { on_drain_ = std::move(fn); }
    size_t BufferedBytes() const override { return pending_bytes_ + inflight_bytes_; }
    bool closed() const override { return closed_; }
    const std::string& remote() const override { return remote_; }

private:
    std::shared_ptr<ServerWebSocket> Self() {
        return std::static_pointer_cast<ServerWebSocket>(shared_from_this());
    }
    /// The loop thread's read buffer (kScratchBytes).
    static char* ScratchBuffer();
    /// Waits until the socket is readable (no buffer is held while waiting).
    void StartRead();
    /// Reads what is available into the scratch buffer (after partial_) and parses it.
    void ReadAvailable();
    /// Parses `input` (the kept partial header first); keeps an incomplete header in partial_.
    void ProcessInput(std::string_view input);
    void HandleEvent(ws::FrameReader::Event& event);
    void Enqueue(std::string bytes);
    void EnqueueShared(std::shared_ptr<const std::string> bytes);
    /// Closes with 1008 once more than max_buffered_bytes are queued (after a Send).
    void CheckBuffered();
    void QueueControl(ws::Opcode opcode, std::string_view payload);
    /// Queues our close frame (last frame ever) and arms the close timeout.
    void QueueClose(std::string payload);
    void StartWrite();
    void OnWritten(bool ok);
    /// Marks the socket closed for messages and posts OnClose(code), once.
    void NotifyClose(uint16_t code);
    /// Closes the TCP connection (idempotent).
    void Finish();

    AsioLoop& loop_;
    boost::asio::ip::tcp::socket socket_;
    std::string remote_;
    WebSocketOptions options_;
    ws::FrameReader reader_;

    /// An incomplete frame header carried to the next read (≤ 14 bytes, inline storage).
    std::string partial_;

    /// Queued bytes: owned (a frame built for this socket) or shared (a broadcast's frame).
    struct Chunk {
        std::string owned;
        std::shared_ptr<const std::string> shared;
        std::string_view bytes() const {
            return shared ? std::string_view(*shared) : std::string_view(owned);
        }
    };
    std::vector<Chunk> pending_;
    std::vector<Chunk> inflight_;
    std::vector<boost::asio::const_buffer> write_buffers_;
    size_t pending_bytes_ = 0;
    size_t inflight_bytes_ = 0;
    bool writing_ = false;

    bool closed_ = false;              // no more messages either way
    bool notified_ = false;            // OnClose posted
    bool close_queued_ = false;        // our close frame is queued (nothing may follow it)
    bool stop_reading_ = false;        // nothing more is read (handshake done or fatal error)
    bool finish_after_flush_ = false;  // close TCP once the write queue is empty
    bool finished_ = false;            // TCP closed
    core::TimerPtr close_timer_;

    std::function<void(std::string, bool)> on_message_;
    std::function<void(uint16_t)> on_close_;
    std::function<void()> on_drain_;
    std::function<void()> on_finished_;
};

}  // namespace conduit::net
