#include "domain/routing.hpp"

#include "core/strings.hpp"

#include <algorithm>
#include <limits>

namespace conduit::domain {

std::optional<RoutingStrategy> ParseRoutingStrategy(std::string_view text) {
    struct Name {
        std::string_view name;
        RoutingStrategy strategy;
    };
    static constexpr Name kNames[] = {
        {"simple", RoutingStrategy::kSimple},
        {"passthrough", RoutingStrategy::kSimple},
        {"roundrobin", RoutingStrategy::kRoundRobin},
        {"random", RoutingStrategy::kRoundRobin},
        {"leastused", RoutingStrategy::kRoundRobin},
        {"leastcost", RoutingStrategy::kLeastCost},
        {"leastlatency", RoutingStrategy::kLeastLatency},
        {"priority", RoutingStrategy::kPriority},
    };
    for (const auto& n : kNames) {
        if (core::IEquals(text, n.name)) {
            return n.strategy;
        }
    }
    return std::nullopt;
}

std::string_view ToString(RoutingStrategy strategy) {
    switch (strategy) {
        case RoutingStrategy::kSimple:
            return "simple";
        case RoutingStrategy::kRoundRobin:
            return "roundrobin";
        case RoutingStrategy::kLeastCost:
            return "leastcost";
        case RoutingStrategy::kLeastLatency:
            return "leastlatency";
        case RoutingStrategy::kPriority:
            return "priority";
    }
    return "simple";
}

RoutingStrategy RouterConfig::StrategyFor(std::string_view alias) const {
    auto it = strategies.find(core::ToLower(alias));
    return it == strategies.end() ? default_strategy : it->second;
}

const std::vector<std::string>& RouterConfig::FallbacksFor(std::string_view alias) const {
    static const std::vector<std::string> kNone;
    if (!fallbacks_enabled) {
        return kNone;
    }
    auto it = fallbacks.find(core::ToLower(alias));
    return it == fallbacks.end() ? kNone : it->second;
}

namespace {

void Rotate(std::vector<size_t>& v, size_t begin, size_t end, uint64_t ticket) {
    const size_t n = end - begin;
    if (n > 1) {
        std::rotate(v.begin() + static_cast<std::ptrdiff_t>(begin),
                    v.begin() + static_cast<std::ptrdiff_t>(begin + ticket % n),
                    v.begin() + static_cast<std::ptrdiff_t>(end));
    }
}

}  // namespace

std::vector<size_t> OrderDeployments(RoutingStrategy strategy,
                                     const std::vector<DeploymentView>& deployments,
                                     uint64_t ticket) {
    std::vector<size_t> out;
    out.reserve(deployments.size());
    for (size_t i = 0; i < deployments.size(); ++i) {
        if (deployments[i].available) {
            out.push_back(i);
        }
    }
    switch (strategy) {
        case RoutingStrategy::kSimple:
            break;
        case RoutingStrategy::kRoundRobin:
            Rotate(out, 0, out.size(), ticket);
            break;
        case RoutingStrategy::kLeastCost:
            std::stable_sort(out.begin(), out.end(), [&](size_t a, size_t b) {
                auto price = [&](size_t i) {
                    return deployments[i].price < 0 ? std::numeric_limits<int64_t>::max()
                                                    : deployments[i].price;
                };
                return price(a) < price(b);
            });
            break;
        case RoutingStrategy::kLeastLatency:
            // No sample yet sorts first: a new or recovered deployment gets measured.
            std::stable_sort(out.begin(), out.end(), [&](size_t a, size_t b) {
                return deployments[a].latency_ms < deployments[b].latency_ms;
            });
            break;
        case RoutingStrategy::kPriority: {
            std::stable_sort(out.begin(), out.end(), [&](size_t a, size_t b) {
                return deployments[a].priority > deployments[b].priority;
            });
            for (size_t begin = 0; begin < out.size();) {
                size_t end = begin + 1;
                while (end < out.size() &&
                       deployments[out[end]].priority == deployments[out[begin]].priority) {
                    ++end;
                }
                Rotate(out, begin, end, ticket);
                begin = end;
            }
            break;
        }
    }
    return out;
}

WindowBreaker::WindowBreaker(BreakerOptions options) : o_(options) {
    o_.buckets = std::max(1, o_.buckets);
    o_.window_ms = std::max<int64_t>(o_.buckets, o_.window_ms);
    o_.min_requests = std::max(1, o_.min_requests);
    o_.half_open_probes = std::max(1, o_.half_open_probes);
    buckets_.resize(static_cast<size_t>(o_.buckets));
}

WindowBreaker::State WindowBreaker::state(int64_t now_ms) const {
    if (state_ == State::kOpen && now_ms - opened_at_ms_ >= o_.open_ms) {
        return State::kHalfOpen;
    }
    return state_;
}

bool WindowBreaker::Available(int64_t now_ms) const {
    switch (state(now_ms)) {
        case State::kClosed:
            return true;
        case State::kOpen:
            return false;
        case State::kHalfOpen:
            // Probes of a breaker that has just left the open state are all free.
            return state_ == State::kOpen || probes_in_flight_ < o_.half_open_probes;
    }
    return false;
}

bool WindowBreaker::TryAcquire(int64_t now_ms) {
    const State s = state(now_ms);
    if (s == State::kClosed) {
        return true;
    }
    if (s == State::kOpen) {
        return false;
    }
    if (state_ == State::kOpen) {
        state_ = State::kHalfOpen;
        probes_in_flight_ = 0;
    }
    if (probes_in_flight_ >= o_.half_open_probes) {
        return false;
    }
    ++probes_in_flight_;
    return true;
}

void WindowBreaker::Release() {
    if (state_ == State::kHalfOpen && probes_in_flight_ > 0) {
        --probes_in_flight_;
    }
}

bool WindowBreaker::Record(bool success, int64_t now_ms) {
    switch (state_) {
        case State::kOpen:
            return false;  // admitted before the breaker opened: no news
        case State::kHalfOpen:
            if (probes_in_flight_ == 0) {
                return false;  // not a probe (admitted before the breaker opened)
            }
            --probes_in_flight_;
            if (success) {
                state_ = State::kClosed;
                ResetWindow();
            } else {
                state_ = State::kOpen;
                opened_at_ms_ = now_ms;
                ++trips_;
            }
            return true;
        case State::kClosed:
            break;
    }
    Roll(now_ms);
    const int64_t width = o_.window_ms / o_.buckets;
    Bucket& b = buckets_[static_cast<size_t>((now_ms / width) % o_.buckets)];
    ++b.requests;
    b.failures += success ? 0 : 1;
    if (success) {
        return false;
    }
    auto [failures, requests] = WindowCounts(now_ms);
    if (requests >= o_.min_requests &&
        static_cast<double>(failures) >= o_.failure_ratio * static_cast<double>(requests)) {
        state_ = State::kOpen;
        opened_at_ms_ = now_ms;
        ++trips_;
        return true;
    }
    return false;
}

std::pair<int64_t, int64_t> WindowBreaker::WindowCounts(int64_t now_ms) const {
    const int64_t width = o_.window_ms / o_.buckets;
    const int64_t oldest = (now_ms / width - (o_.buckets - 1)) * width;
    int64_t failures = 0, requests = 0;
    for (const auto& b : buckets_) {
        if (b.start_ms >= oldest && b.start_ms <= now_ms) {
            failures += b.failures;
            requests += b.requests;
        }
    }
    return {failures, requests};
}

void WindowBreaker::Roll(int64_t now_ms) {
    const int64_t width = o_.window_ms / o_.buckets;
    const int64_t start = (now_ms / width) * width;
    Bucket& b = buckets_[static_cast<size_t>((now_ms / width) % o_.buckets)];
    if (b.start_ms != start) {
        b = Bucket{start, 0, 0};
    }
}

void WindowBreaker::ResetWindow() {
    for (auto& b : buckets_) {
        b = Bucket{};
    }
}

std::string_view ToString(WindowBreaker::State state) {
    switch (state) {
        case WindowBreaker::State::kClosed:
            return "closed";
        case WindowBreaker::State::kOpen:
            return "open";
        case WindowBreaker::State::kHalfOpen:
            return "half-open";
    }
    return "closed";
}

}  // namespace conduit::domain
