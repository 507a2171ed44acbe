#include "bus/backplane.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conduit::bus {
namespace {

/// True when `channel` matches `pattern`: equal, or `pattern` ends in '*' and the rest is a
/// prefix of `channel`.
bool Matches(std::string_view pattern, std::string_view channel) {
    if (!pattern.empty() && pattern.back() == '*') {
        pattern.remove_suffix(1);
        return channel.substr(0, pattern.size()) == pattern;
    }
    return pattern == channel;
}

/// The in-process Backplane: a subscriber list behind a mutex. Publish copies the matching
/// handlers under the lock and invokes them after releasing it, on the publisher's thread, so a
/// handler may itself publish, subscribe or unsubscribe.
class InProcessBackplane final : public Backplane {
public:
    void Publish(std::string channel, std::string payload) override {
        std::vector<std::shared_ptr<const Handler>> targets;
        {
            std::lock_guard lock(mu_);
            for (const auto& sub : subs_) {
                if (Matches(sub.pattern, channel)) {
                    targets.push_back(sub.handler);
                }
            }
        }
        for (const auto& handler : targets) {
            (*handler)(channel, payload);
        }
    }

    uint64_t Subscribe(std::string pattern, Handler handler) override {
        std::lock_guard lock(mu_);
        uint64_t id = ++next_id_;
        subs_.push_back(
            Sub{id, std::move(pattern), std::make_shared<const Handler>(std::move(handler))});
        return id;
    }

    void Unsubscribe(uint64_t id) override {
        std::lock_guard lock(mu_);
        std::erase_if(subs_, [id](const Sub& s) { return s.id == id; });
    }

private:
    struct Sub {
        uint64_t id;
        std::string pattern;
        std::shared_ptr<const Handler> handler;
    };

    std::mutex mu_;
    std::vector<Sub> subs_;
    uint64_t next_id_ = 0;
};

}  // namespace

std::unique_ptr<Backplane> MakeInProcessBackplane() {
    return std::make_unique<InProcessBackplane>();
}

}  // namespace conduit::bus
