#pragma once

#include "fakes/fake_loop.hpp"
#include "fakes/fake_websocket.hpp"
#include "net/exchange.hpp"

#include <memory>
#include <string>

namespace conduit::testing {

/// An in-memory net::Exchange for handler unit tests: records what the handler sends.
class FakeExchange final : public net::Exchange {
public:
    FakeExchange(core::Loop& loop, net::Request req) : loop_(loop), req_(std::move(req)) {}

    static std::shared_ptr<FakeExchange> Make(core::Loop& loop,
                                              std::string method,
                                              std::string target,
                                              std::string body = {},
                                              net::Headers headers = {}) {
        net::Request r;
        r.method = std::move(method);
        r.target = std::move(target);
        r.body = std::move(body);
        r.headers = std::move(headers);
        return std::make_shared<FakeExchange>(loop, std::move(r));
    }

    /// A GET request that is a valid WebSocket upgrade (net::IsWebSocketUpgrade), plus `headers`.
    static std::shared_ptr<FakeExchange> MakeWebSocketUpgrade(core::Loop& loop,
                                                              std::string target,
                                                              net::Headers headers = {}) {
        headers.Add("Connection", "Upgrade");
        headers.Add("Upgrade", "websocket");
        headers.Add("Sec-WebSocket-Version", "13");
        headers.Add("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        return Make(loop, "GET", std::move(target), {}, std::move(headers));
    }

    net::Request& request() override { return req_; }
    core::Loop& loop() override { return loop_; }
    void Respond(net::Response r) override {
        if (started_ || closed_) {
            return;
        }
        started_ = responded_ = true;
        status_ = r.status;
        headers_ = std::move(r.headers);
        body_ = std::move(r.body);
    }
    void BeginStream(int status, net::Headers h) override {
        if (started_ || closed_) {
            return;
        }
        started_ = true;
        status_ = status;
        headers_ = std::move(h);
    }
    void BeginFixedLength(int status, net::Headers h, uint64_t length) override {
        fixed_length_ = length;
        BeginStream(status, std::move(h));
    }
    void Write(std::string chunk) override {
        if (started_ && !responded_ && !closed_) {
            body_ += chunk;
            ++writes_;
        }
    }
    void EndStream() override {
        if (started_ && !closed_) {
            responded_ = true;
        }
    }
    void Abort() override {
        aborted_ = true;
        closed_ = true;
    }
    /// Accepts a valid upgrade like the server: status 101, `headers` recorded, and a
    /// FakeWebSocket (see websocket()) returned.
    net::WebSocketPtr AcceptWebSocket(net::Headers h, net::WebSocketOptions options) override {
        if (started_ || closed_ || !net::IsWebSocketUpgrade(req_)) {
            return nullptr;
        }
        started_ = responded_ = true;
        status_ = 101;
        headers_ = std::move(h);
        websocket_ = std::make_shared<FakeWebSocket>(loop_, options, req_.remote_address);
        return websocket_;
    }
    size_t BufferedBytes() const override { return 0; }
    void SetOnDrain(std::function<void()> fn) override { on_drain_ = std::move(fn); }
    void SetOnClose(std::function<void()> fn) override { on_close_ = std::move(fn); }
    void SetOnComplete(std::function<void(int, size_t)> fn) override {
        on_complete_ = std::move(fn);
    }
    bool closed() const override { return closed_; }
    bool responded() const override { return responded_; }
    bool started() const override { return started_; }

    /// Simulates the client going away.
    void Disconnect() {
        closed_ = true;
        if (on_close_) {
            auto fn = std::move(on_close_);
            fn();
        }
    }

    int status() const { return status_; }
    const std::string& body() const { return body_; }
    const net::Headers& headers() const { return headers_; }
    int writes() const { return writes_; }
    bool aborted() const { return aborted_; }
    uint64_t fixed_length() const { return fixed_length_; }
    /// The socket handed out by AcceptWebSocket (nullptr before).
    const std::shared_ptr<FakeWebSocket>& websocket() const { return websocket_; }

private:
    core::Loop& loop_;
    net::Request req_;
    bool started_ = false;
    bool responded_ = false;
    bool closed_ = false;
    bool aborted_ = false;
    uint64_t fixed_length_ = 0;
    int status_ = 0;
    int writes_ = 0;
    net::Headers headers_;
    std::string body_;
    std::shared_ptr<FakeWebSocket> websocket_;
    std::function<void()> on_drain_;
    std::function<void()> on_close_;
    std::function<void(int, size_t)> on_complete_;
};

}  // namespace conduit::testing
