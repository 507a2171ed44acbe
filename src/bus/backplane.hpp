#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace conduit::bus {

/// Publish/subscribe between components and instances (DESIGN §1): task events, hub fan-out,
/// configuration invalidation. Delivery is at-most-once and best effort (use the WorkQueue for
/// work that must not be lost). Adapters: in-process, Redis pub/sub.
class Backplane {
public:
    using Handler = std::function<void(std::string_view channel, std::string_view payload)>;

    virtual ~Backplane() = default;
    /// Publishes `payload` on `channel`. Any thread; never blocks on the network.
    virtual void Publish(std::string channel, std::string payload) = 0;
    /// Subscribes to `channel` (exact name, or a prefix ending in '*'). The handler runs on an
    /// arbitrary thread; keep it short (post to a loop). Returns an id for Unsubscribe().
    virtual uint64_t Subscribe(std::string pattern, Handler handler) = 0;
    virtual void Unsubscribe(uint64_t id) = 0;
};

/// The in-process adapter (one instance, no engine): synchronous fan-out to subscribers.
std::unique_ptr<Backplane> MakeInProcessBackplane();

}  // namespace conduit::bus
