#pragma once

#include "bus/backplane.hpp"
#include "core/error.hpp"
#include "core/loop.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace conduit::bus {

/// Settings of the Redis Backplane adapter.
struct RedisBackplaneOptions {
    /// `redis://[[user]:password@]host[:port][/db]` (pub/sub ignores the db).
    std::string url = "redis://127.0.0.1:6379/0";
    /// Prepended to every channel on the wire (e.g. "conduit:"), so several deployments can share
    /// one Redis. Handlers see channels without it.
    std::string channel_prefix;
    /// Where handlers run: Post()ed to this loop, or, when nullptr, on the adapter's own
    /// subscriber I/O thread (then keep them short: post real work elsewhere).
    core::Loop* loop = nullptr;
    std::chrono::milliseconds connect_timeout{2000};
    /// A PUBLISH not answered (or, while Redis is unreachable, not sent) within this time is
    /// counted as failed.
    std::chrono::milliseconds publish_timeout{5000};
    std::chrono::milliseconds reconnect_min{100};
    std::chrono::milliseconds reconnect_max{5000};
};

/// Counters of a RedisBackplane, readable from any thread.
struct RedisBackplaneStats {
    bool publisher_connected = false;
    bool subscriber_connected = false;
    uint64_t published = 0;       // Publish() calls
    uint64_t publish_failed = 0;  // PUBLISHes that failed (Redis unreachable, timeout, error)
    uint64_t received = 0;        // messages from Redis (including this instance's echoes)
    uint64_t delivered = 0;       // handler invocations
    uint64_t reconnects = 0;      // subscriber connections after the first
    uint64_t redis_channels = 0;  // channels + patterns currently subscribed in Redis
};

/// The Redis pub/sub Backplane (DESIGN §1): one publisher and one subscriber connection.
///
/// - Publish: PUBLISH <prefix><channel> on the publisher connection, encoded once; never blocks
///   (queued while disconnected up to publish_timeout, then counted as failed). Local handlers
///   get the message once too, like the in-process adapter: directly, not through Redis, so they
///   get it even while Redis is down; the echo Redis sends back is recognised by this instance's
///   origin id in the payload envelope and dropped.
/// - Subscribe(pattern): an exact channel maps to SUBSCRIBE, a pattern ending in '*' (prefix
///   match, as in the in-process adapter) to PSUBSCRIBE with the glob characters of the prefix
///   escaped. Channels are reference-counted: Redis is subscribed when the first local handler
///   of a channel/pattern is added and unsubscribed after the last is removed. Subscriptions are
///   remembered and re-applied on every reconnection (made while Redis is down, they take
///   effect when it comes back).
/// - Handlers run on RedisBackplaneOptions::loop, or the subscriber's I/O thread; per channel
///   in arrival order. A handler may call back into the Backplane. After Unsubscribe() returns,
///   the handler is not invoked for messages not yet dispatched (one already running on another
///   thread may finish).
/// Delivery is at-most-once: messages published while a subscriber is disconnected are lost.
class RedisBackplane : public Backplane {
public:
    virtual RedisBackplaneStats Stats() const = 0;
    /// Waits until both connections are up and Redis has applied every Subscribe/Unsubscribe
    /// and answered every Publish issued before the call. False on timeout. Blocks the caller:
    /// for tests and start-up only, never on a loop thread.
    virtual bool WaitSynced(std::chrono::milliseconds timeout) = 0;
};

/// Creates the adapter and starts connecting (does not wait for Redis). Fails only on a bad
/// URL.
core::Result<std::unique_ptr<RedisBackplane>> MakeRedisBackplane(RedisBackplaneOptions options);

/// The PSUBSCRIBE glob matching the channels that start with `prefix` (glob characters
/// `*?[]\` escaped). Exposed for tests.
std::string PrefixGlob(std::string_view prefix);

}  // namespace conduit::bus
