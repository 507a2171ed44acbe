#include "bus/redis/redis_backplane.hpp"

#include "core/crypto.hpp"
#include "redis/client.hpp"
#include "redis/url.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace conduit::bus {
namespace {

/// Every payload on the wire is `kMagic` + the publishing instance's 8-byte origin id + the
/// payload, so an instance recognises (and drops) Redis's echo of its own messages.
constexpr std::string_view kMagic = "cbp1";
constexpr size_t kOriginSize = 8;
constexpr size_t kHeaderSize = kMagic.size() + kOriginSize;

using HandlerPtr = std::shared_ptr<const Backplane::Handler>;

/// Routing state shared with the callbacks (which may outlive the adapter on a loop's queue).
struct Core {
    struct Entry {
        std::string local_prefix;  // prefix entries: the pattern without its '*'
        std::map<uint64_t, HandlerPtr> handlers;
    };
    struct Ref {
        bool prefix;
        std::string key;
    };

    std::string channel_prefix;
    std::string origin;

    std::mutex mu;
    std::unordered_map<std::string, Entry> exact;     // wire channel -> handlers
    std::unordered_map<std::string, Entry> prefixes;  // wire glob -> handlers
    std::unordered_map<uint64_t, Ref> by_id;
    uint64_t next_id = 0;

    std::atomic<uint64_t> published{0}, publish_failed{0}, received{0}, delivered{0};

    /// Handlers of local subscriptions matching the local `channel` (under mu).
    std::vector<HandlerPtr> LocalMatches(std::string_view channel) {
        std::vector<HandlerPtr> out;
        std::string wire = channel_prefix + std::string(channel);
        if (auto it = exact.find(wire); it != exact.end()) {
            for (const auto& [id, h] : it->second.handlers) {
                out.push_back(h);
            }
        }
        for (const auto& [glob, entry] : prefixes) {
            if (channel.substr(0, entry.local_prefix.size()) == entry.local_prefix) {
                for (const auto& [id, h] : entry.handlers) {
                    out.push_back(h);
                }
            }
        }
        return out;
    }

    void Invoke(const std::vector<HandlerPtr>& handlers,
                std::string_view channel,
                std::string_view payload) {
        for (const auto& h : handlers) {
            delivered.fetch_add(1, std::memory_order_relaxed);
            (*h)(channel, payload);
        }
    }

    /// A message published by this instance, for its own subscribers (handler context).
    void DeliverLocal(const std::string& channel, const std::string& payload) {
        std::vector<HandlerPtr> targets;
        {
            std::lock_guard lock(mu);
            targets = LocalMatches(channel);
        }
        Invoke(targets, channel, payload);
    }

    /// A message from Redis (handler context).
    void DeliverRemote(const redis::Message& m) {
        received.fetch_add(1, std::memory_order_relaxed);
        std::string_view channel = m.channel;
        if (channel.substr(0, channel_prefix.size()) != channel_prefix) {
            return;
        }
        channel.remove_prefix(channel_prefix.size());
        std::string_view payload = m.payload;
        if (payload.size() >= kHeaderSize && payload.substr(0, kMagic.size()) == kMagic) {
            if (payload.substr(kMagic.size(), kOriginSize) == origin) {
                return;  // our own message: already delivered locally
            }
            payload.remove_prefix(kHeaderSize);
        }
        std::vector<HandlerPtr> targets;
        {
            std::lock_guard lock(mu);
            auto& table = m.pattern.empty() ? exact : prefixes;
            const std::string& key = m.pattern.empty() ? m.channel : m.pattern;
            if (auto it = table.find(key); it != table.end()) {
                for (const auto& [id, h] : it->second.handlers) {
                    targets.push_back(h);
                }
            }
        }
        Invoke(targets, channel, payload);
    }
};

class RedisBackplaneImpl final : public RedisBackplane {
public:
    RedisBackplaneImpl(RedisBackplaneOptions options, redis::Endpoint endpoint)
        : core_(std::make_shared<Core>()) {
        core_->channel_prefix = options.channel_prefix;
        core_->origin = core::RandomBytes(kOriginSize);
        redis::ClientOptions base;
        base.endpoint = std::move(endpoint);
        base.connect_timeout = options.connect_timeout;
        base.command_timeout = options.publish_timeout;
        base.reconnect_min = options.reconnect_min;
        base.reconnect_max = options.reconnect_max;

        redis::ClientOptions pub = base;
        pub.name = "redis backplane publisher";
        publisher_ = std::make_unique<redis::Client>(std::move(pub));

        redis::ClientOptions sub = base;
        sub.name = "redis backplane subscriber";
        sub.callback_loop = options.loop;
        std::weak_ptr<Core> weak = core_;
        subscriber_ = std::make_unique<redis::Subscriber>(std::move(sub), [weak](redis::Message m) {
            if (auto core = weak.lock()) {
                core->DeliverRemote(m);
            }
        });
    }

    ~RedisBackplaneImpl() override {
        // Stop the I/O threads before the routing state goes.
        subscriber_.reset();
        publisher_.reset();
    }

    void Publish(std::string channel, std::string payload) override {
        core_->published.fetch_add(1, std::memory_order_relaxed);
        const std::string& prefix = core_->channel_prefix;
        size_t wire_channel_size = prefix.size() + channel.size();
        size_t body_size = kHeaderSize + payload.size();
        // PUBLISH <prefix+channel> <magic origin payload>, RESP-encoded once, in one buffer.
        std::string resp;
        resp.reserve(64 + wire_channel_size + body_size);
        resp.append("*3\r\n$7\r\nPUBLISH\r\n$");
        resp.append(std::to_string(wire_channel_size));
        resp.append("\r\n");
        resp.append(prefix);
        resp.append(channel);
        resp.append("\r\n$");
        resp.append(std::to_string(body_size));
        resp.append("\r\n");
        resp.append(kMagic);
        resp.append(core_->origin);
        resp.append(payload);
        resp.append("\r\n");
        std::weak_ptr<Core> weak = core_;
        publisher_->SendEncoded(std::move(resp), [weak](core::Result<redis::Reply> r) {
            if (r && !r->IsError()) {
                return;
            }
            if (auto core = weak.lock()) {
                uint64_t n = core->publish_failed.fetch_add(1, std::memory_order_relaxed);
                if (n == 0 || (n & (n + 1)) == 0) {  // 1st, 2nd, 4th, 8th, ... failure
                    spdlog::warn("redis backplane: publish failed ({} so far): {}", n + 1,
                                 r ? r->str : r.error().message);
                }
            }
        });
        bool local = false;
        {
            std::lock_guard lock(core_->mu);
            local = !core_->LocalMatches(channel).empty();
        }
        if (local) {
            auto core = core_;
            subscriber_->Dispatch(
                [core, channel = std::move(channel), payload = std::move(payload)] {
                    core->DeliverLocal(channel, payload);
                });
        }
    }

    uint64_t Subscribe(std::string pattern, Handler handler) override {
        auto h = std::make_shared<const Handler>(std::move(handler));
        std::lock_guard lock(core_->mu);
        uint64_t id = ++core_->next_id;
        if (!pattern.empty() && pattern.back() == '*') {
            pattern.pop_back();
            std::string glob = PrefixGlob(core_->channel_prefix + pattern);
            auto& entry = core_->prefixes[glob];
            if (entry.handlers.empty()) {
                entry.local_prefix = pattern;
                subscriber_->PSubscribe(glob);
            }
            entry.handlers.emplace(id, std::move(h));
            core_->by_id.emplace(id, Core::Ref{true, std::move(glob)});
        } else {
            std::string wire = core_->channel_prefix + pattern;
            auto& entry = core_->exact[wire];
            if (entry.handlers.empty()) {
                subscriber_->Subscribe(wire);
            }
            entry.handlers.emplace(id, std::move(h));
            core_->by_id.emplace(id, Core::Ref{false, std::move(wire)});
        }
        return id;
    }

    void Unsubscribe(uint64_t id) override {
        std::lock_guard lock(core_->mu);
        auto ref = core_->by_id.find(id);
        if (ref == core_->by_id.end()) {
            return;
        }
        auto& table = ref->second.prefix ? core_->prefixes : core_->exact;
        if (auto it = table.find(ref->second.key); it != table.end()) {
            it->second.handlers.erase(id);
            if (it->second.handlers.empty()) {
                if (ref->second.prefix) {
                    subscriber_->PUnsubscribe(ref->second.key);
                } else {
                    subscriber_->Unsubscribe(ref->second.key);
                }
                table.erase(it);
            }
        }
        core_->by_id.erase(ref);
    }

    RedisBackplaneStats Stats() const override {
        RedisBackplaneStats s;
        auto ps = publisher_->Stats();
        auto ss = subscriber_->Stats();
        s.publisher_connected = ps.connected;
        s.subscriber_connected = ss.connected;
        s.published = core_->published.load();
        s.publish_failed = core_->publish_failed.load();
        s.received = core_->received.load();
        s.delivered = core_->delivered.load();
        s.reconnects = ss.connects > 0 ? ss.connects - 1 : 0;
        std::lock_guard lock(core_->mu);
        s.redis_channels = core_->exact.size() + core_->prefixes.size();
        return s;
    }

    bool WaitSynced(std::chrono::milliseconds timeout) override {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            auto pub = std::make_shared<std::promise<bool>>();
            auto sub = std::make_shared<std::promise<bool>>();
            auto pub_done = pub->get_future();
            auto sub_done = sub->get_future();
            publisher_->Command({"PING"}, [pub](core::Result<redis::Reply> r) {
                pub->set_value(r.has_value() && !r->IsError());
            });
            subscriber_->Ping([sub](core::Result<redis::Reply> r) {
                sub->set_value(r.has_value() && !r->IsError());
            });
            if (pub_done.wait_until(deadline) != std::future_status::ready ||
                sub_done.wait_until(deadline) != std::future_status::ready) {
                return false;
            }
            if (pub_done.get() && sub_done.get()) {
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return false;
    }

private:
    std::shared_ptr<Core> core_;
    std::unique_ptr<redis::Client> publisher_;
    std::unique_ptr<redis::Subscriber> subscriber_;
};

}  // namespace

std::string PrefixGlob(std::string_view prefix) {
    std::string out;
    out.reserve(prefix.size() + 4);
    for (char c : prefix) {
        if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') {
            out.push_back('\\');
        }
        out.push_back(c);
    }
    out.push_back('*');
    return out;
}

core::Result<std::unique_ptr<RedisBackplane>> MakeRedisBackplane(RedisBackplaneOptions options) {
    auto endpoint = redis::ParseUrl(options.url);
    if (!endpoint) {
        return tl::unexpected(endpoint.error());
    }
    return std::unique_ptr<RedisBackplane>(
        std::make_unique<RedisBackplaneImpl>(std::move(options), std::move(*endpoint)));
}

}  // namespace conduit::bus
