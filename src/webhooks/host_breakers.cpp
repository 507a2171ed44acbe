#include "webhooks/host_breakers.hpp"

#include <algorithm>

namespace conduit::webhooks {

using State = http_client::CircuitBreaker::State;

namespace {
double GaugeValue(State s) {
    switch (s) {
        case State::kClosed:
            return 0;
        case State::kHalfOpen:
            return 1;
        case State::kOpen:
            return 2;
    }
    return 0;
}
}  // namespace

HostBreakers::HostBreakers(const WebhookOptions& options, obs::Registry& registry)
    : threshold_(std::max(options.breaker_failures, 1)),
      open_ms_(options.breaker_open.count()),
      probe_wait_ms_(std::max<int64_t>(options.request_timeout.count(), 1000)),
      max_labels_(options.max_host_labels),
      max_breakers_(std::max<size_t>(options.max_breakers, 1)),
      state_family_(registry.Gauge("conduit_webhook_breaker_state",
                                   "Webhook circuit breaker state per host (0 closed, 1 "
                                   "half-open, 2 open)",
                                   {"host"})) {}

HostBreakers::Entry& HostBreakers::FindLocked(std::string_view host) {
    std::string key(host);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
        return *it->second;
    }
    if (entries_.size() >= max_breakers_) {
        // Forget healthy breakers: they hold no information beyond "closed".
        std::erase_if(entries_, [](const auto& kv) {
            return kv.second->breaker.consecutive_failures() == 0;
        });
    }
    auto entry = std::make_unique<Entry>(threshold_, open_ms_);
    std::string label = key;
    if (!labels_.contains(label)) {
        if (labels_.size() < max_labels_) {
            labels_.insert(label);
        } else {
            label = "other";  // bounded label cardinality
        }
    }
    entry->gauge = &state_family_.With({label});
    return *entries_.emplace(std::move(key), std::move(entry)).first->second;
}

void HostBreakers::PublishLocked(Entry& e, int64_t now_ms) {
    if (e.gauge != nullptr) {
        e.gauge->Set(GaugeValue(e.breaker.state(now_ms)));
    }
}

HostBreakers::Admission HostBreakers::Acquire(std::string_view host, int64_t now_ms) {
    std::lock_guard lock(mu_);
    Entry& e = FindLocked(host);
    Admission a;
    a.allowed = e.breaker.Allow(now_ms);
    if (!a.allowed) {
        int64_t remaining = e.opened_at_ms + open_ms_ - now_ms;
        a.wait_ms = remaining > 0 ? remaining : probe_wait_ms_;
    }
    PublishLocked(e, now_ms);
    return a;
}

void HostBreakers::Report(std::string_view host, bool failure, int64_t now_ms) {
    std::lock_guard lock(mu_);
    Entry& e = FindLocked(host);
    if (failure) {
        int64_t trips = e.breaker.trips();
        e.breaker.RecordFailure(now_ms);
        if (e.breaker.trips() != trips) {
            e.opened_at_ms = now_ms;
        }
    } else {
        e.breaker.RecordSuccess();
    }
    PublishLocked(e, now_ms);
}

State HostBreakers::StateOf(std::string_view host, int64_t now_ms) const {
    std::lock_guard lock(mu_);
    auto it = entries_.find(std::string(host));
    return it == entries_.end() ? State::kClosed : it->second->breaker.state(now_ms);
}

size_t HostBreakers::Size() const {
    std::lock_guard lock(mu_);
    return entries_.size();
}

}  // namespace conduit::webhooks
