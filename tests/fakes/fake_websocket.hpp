#pragma once

#include "core/loop.hpp"
#include "net/websocket.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace conduit::testing {

/// An in-memory net::WebSocket for hub and transport unit tests: records what the server sends
/// and lets the test play the client (messages, close, drop, a slow reader).
///
/// Like the real socket, OnClose runs posted to `loop` when the server side closes (Close, Abort,
/// or a Send over max_buffered_bytes with buffering enabled): run the loop (FakeLoop::RunPending)
/// to see it. Client-side events (ClientMessage, ClientClose, Drop, Drain) call back at once.
class FakeWebSocket final : public net::WebSocket {
public:
    struct Sent {
        std::string message;
        bool binary = false;
    };

    FakeWebSocket(core::Loop& loop,
                  net::WebSocketOptions options,
                  std::string remote = "127.0.0.1:1")
        : loop_(loop), options_(options), remote_(std::move(remote)) {}

    core::Loop& loop() override { return loop_; }
    void Send(std::string message, bool binary = false) override {
        if (closed_) {
            return;
        }
        if (buffering_) {
            buffered_ += message.size();
        }
        sent_.push_back(Sent{std::move(message), binary});
        if (buffered_ > options_.max_buffered_bytes) {
            buffered_ = 0;
            ServerClose(1008, "send buffer full");
        }
    }
    void Close(uint16_t code = 1000, std::string reason = {}) override {
        if (!closed_) {
            ServerClose(code, std::move(reason));
        }
    }
    void Abort() override {
        aborted_ = true;
        if (!closed_) {
            ServerClose(1006, {});
        }
    }
    void SetOnMessage(std::function<void(std::string, bool)> fn) override {
        on_message_ = std::move(fn);
    }
    void SetOnClose(std::function<void(uint16_t)> fn) override { on_close_ = std::move(fn); }
    void SetOnDrain(std::function<void()> fn) override { on_drain_ = std::move(fn); }
    size_t BufferedBytes() const override { return buffered_; }
    bool closed() const override { return closed_; }
    const std::string& remote() const override { return remote_; }

    // --- the test plays the client ---

    /// Delivers a message from the client (ignored once closed).
    void ClientMessage(std::string message, bool binary = false) {
        if (!closed_ && on_message_) {
            auto fn = on_message_;
            fn(std::move(message), binary);
        }
    }
    /// The client closes with `code` (OnClose(code) at once).
    void ClientClose(uint16_t code = 1000) { PeerGone(code); }
    /// The connection drops (OnClose(1006) at once).
    void Drop() { PeerGone(1006); }
    /// From now on sent bytes count in BufferedBytes() until Drain() (a client that does not
    /// read); over max_buffered_bytes the socket closes with 1008 like the real one.
    void StopReading() { buffering_ = true; }
    /// The client caught up: BufferedBytes() drops to zero and OnDrain runs.
    void Drain() {
        buffering_ = false;
        buffered_ = 0;
        if (on_drain_) {
            auto fn = std::move(on_drain_);
            on_drain_ = nullptr;
            fn();
        }
    }

    const std::vector<Sent>& sent() const { return sent_; }
    /// Sent messages as text, in order.
    std::vector<std::string> sent_messages() const {
        std::vector<std::string> out;
        for (const auto& s : sent_) {
            out.push_back(s.message);
        }
        return out;
    }
    void clear_sent() { sent_.clear(); }
    /// The close code the server sent (0 while open; 1006 after Abort).
    uint16_t close_code() const { return close_code_; }
    const std::string& close_reason() const { return close_reason_; }
    /// The code OnClose was (or will be) called with, from either side (0 while open).
    uint16_t closed_code() const { return closed_code_; }
    bool aborted() const { return aborted_; }
    bool has_on_message() const { return static_cast<bool>(on_message_); }
    const net::WebSocketOptions& options() const { return options_; }

private:
    void ServerClose(uint16_t code, std::string reason) {
        closed_ = true;
        close_code_ = code;
        close_reason_ = std::move(reason);
        closed_code_ = code;
        auto self = std::static_pointer_cast<FakeWebSocket>(shared_from_this());
        loop_.Post([self, code] { self->FireClose(code); });
    }
    void PeerGone(uint16_t code) {
        if (closed_) {
            return;
        }
        closed_ = true;
        closed_code_ = code;
        FireClose(code);
    }
    void FireClose(uint16_t code) {
        auto fn = std::move(on_close_);
        on_close_ = nullptr;
        on_message_ = nullptr;
        on_drain_ = nullptr;
        if (fn) {
            fn(code);
        }
    }

    core::Loop& loop_;
    net::WebSocketOptions options_;
    std::string remote_;
    std::vector<Sent> sent_;
    bool closed_ = false;
    bool aborted_ = false;
    bool buffering_ = false;
    size_t buffered_ = 0;
    uint16_t close_code_ = 0;
    std::string close_reason_;
    uint16_t closed_code_ = 0;
    std::function<void(std::string, bool)> on_message_;
    std::function<void(uint16_t)> on_close_;
    std::function<void()> on_drain_;
};

}  // namespace conduit::testing
