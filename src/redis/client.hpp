#pragma once

#include "core/error.hpp"
#include "core/loop.hpp"
#include "redis/resp.hpp"
#include "redis/url.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace conduit::redis {

/// Connection settings shared by Client and Subscriber.
struct ClientOptions {
    Endpoint endpoint;
    /// TCP connect (resolve + connect) limit per attempt.
    std::chrono::milliseconds connect_timeout{2000};
    /// A command fails with kUpstreamTimeout when no reply arrived this long after it was
    /// issued (while disconnected it waits in the offline queue up to this long for a
    /// connection). An overdue reply on a live connection closes the connection (reconnects).
    std::chrono::milliseconds command_timeout{5000};
    /// Reconnect backoff: doubles from min to max after each failed attempt; reset after a
    /// connection answered.
    std::chrono::milliseconds reconnect_min{100};
    std::chrono::milliseconds reconnect_max{5000};
    /// An idle connection is probed with PING this often (detects dead peers; 0 = never).
    std::chrono::milliseconds ping_interval{10000};
    /// Commands queued while disconnected beyond this fail at once with kUnavailable.
    size_t max_offline_commands = 100000;
    /// Where reply and message callbacks run: Post()ed to this loop, or, when nullptr, directly
    /// on the client's own I/O thread (then keep them short and non-blocking).
    core::Loop* callback_loop = nullptr;
    /// For logs.
    std::string name = "redis";
};

/// Counters, readable from any thread.
struct ClientStats {
    bool connected = false;
    uint64_t connects = 0;     // successful TCP connections
    uint64_t disconnects = 0;  // connections lost or closed (not counting failed attempts)
    uint64_t connect_failures = 0;
    uint64_t commands = 0;  // commands issued
    uint64_t failed = 0;    // commands that completed with an error (not Redis error replies)
    uint64_t messages = 0;  // Subscriber: messages received
};

/// Reply or transport failure (kUnavailable: not connected / connection lost before the reply,
/// kUpstreamTimeout: no reply in time, kUpstreamError: protocol error). A Redis error reply
/// ("-ERR ...") is a successful Result holding a Reply of type kError.
using ReplyCallback = std::function<void(core::Result<Reply>)>;

/// An asynchronous Redis client on one pipelined connection (DESIGN §3): commands from any
/// thread are written in order, back to back, and their replies matched in order. It owns one
/// I/O thread (Asio), connects at construction and reconnects with backoff for its whole life;
/// AUTH and SELECT from the endpoint are sent first on every connection. Commands in flight
/// when a connection is lost fail (they may or may not have run); commands issued while
/// disconnected wait for the next connection (see ClientOptions::command_timeout).
/// Thread-safe. Destruction stops the I/O thread; callbacks not yet run are dropped.
class Client {
public:
    explicit Client(ClientOptions options);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    /// Issues `args` (e.g. {"SET", "k", "v"}); `done` (may be empty) runs once with the reply on
    /// ClientOptions::callback_loop or the I/O thread. Any thread; never blocks.
    void Command(std::span<const std::string_view> args, ReplyCallback done);
    void Command(std::initializer_list<std::string_view> args, ReplyCallback done) {
        Command(std::span<const std::string_view>(args.begin(), args.size()), std::move(done));
    }
    /// Same, for a command already RESP-encoded (EncodeCommand/AppendCommand): exactly one
    /// command.
    void SendEncoded(std::string resp, ReplyCallback done);
    /// True while a connection is up. Any thread.
    bool Connected() const;
    ClientStats Stats() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

/// A message received on a subscription. `pattern` is the PSUBSCRIBE pattern that matched
/// ("" for a SUBSCRIBE channel).
struct Message {
    std::string channel;
    std::string pattern;
    std::string payload;
};
using MessageCallback = std::function<void(Message)>;

/// A Redis connection in subscriber mode (SUBSCRIBE / PSUBSCRIBE). The client remembers the
/// wanted channel and pattern sets and applies them on every (re)connection, so a subscription
/// made while Redis is unreachable takes effect when it comes back. Messages go to the callback
/// given at construction, on ClientOptions::callback_loop or the I/O thread, in arrival order.
/// Thread-safe; every method returns at once. Destruction stops the I/O thread.
class Subscriber {
public:
    Subscriber(ClientOptions options, MessageCallback on_message);
    ~Subscriber();
    Subscriber(const Subscriber&) = delete;
    Subscriber& operator=(const Subscriber&) = delete;

    /// Adds/removes an exact channel (SUBSCRIBE/UNSUBSCRIBE). Idempotent.
    void Subscribe(std::string channel);
    void Unsubscribe(std::string channel);
    /// Adds/removes a glob pattern (PSUBSCRIBE/PUNSUBSCRIBE). Idempotent.
    void PSubscribe(std::string pattern);
    void PUnsubscribe(std::string pattern);
    /// Sends PING; `done` runs when Redis answered it, i.e. after every (un)subscription
    /// requested before this call was applied by Redis (or with an error, like Client commands).
    void Ping(ReplyCallback done);
    /// Runs `fn` in the message callbacks' context (same thread / loop, ordered after the
    /// messages already received). Any thread.
    void Dispatch(std::function<void()> fn);
    bool Connected() const;
    ClientStats Stats() const;

private:
    std::unique_ptr<Client::Impl> impl_;
};

}  // namespace conduit::redis
