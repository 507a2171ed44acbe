#include "gateway/routing.hpp"

#include "core/clock.hpp"
#include "core/strings.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <unordered_set>

namespace conduit::gateway {

namespace {

using core::ErrorCode;
namespace bj = boost::json;

tl::unexpected<core::Error> Invalid(std::string message, std::string param) {
    return core::Fail(ErrorCode::kInvalidRequest, std::move(message), std::move(param));
}

core::Result<domain::RoutingStrategy> StrategyField(const bj::value& v, const std::string& param) {
    if (!v.is_string()) {
        return Invalid("'" + param + "' must be a strategy name", param);
    }
    auto s = domain::ParseRoutingStrategy(std::string_view(v.get_string()));
    if (!s) {
        return Invalid("Unknown routing strategy '" + std::string(v.get_string()) +
                           "' (simple, roundrobin, leastcost, leastlatency, priority)",
                       param);
    }
    return *s;
}

core::Result<int64_t> NonNegative(const bj::value& v, const std::string& param, int64_t max) {
    if (!v.is_int64() && !v.is_uint64()) {
        return Invalid("'" + param + "' must be an integer", param);
    }
    int64_t n = v.is_int64() ? v.get_int64() : static_cast<int64_t>(v.get_uint64());
    if (n < 0 || n > max) {
        return Invalid("'" + param + "' must be between 0 and " + std::to_string(max), param);
    }
    return n;
}

}  // namespace

core::Result<domain::RouterConfig> ParseRouterConfig(std::string_view json) {
    boost::system::error_code ec;
    bj::value root = bj::parse(json, ec);
    if (ec || !root.is_object()) {
        return Invalid("The router configuration must be a JSON object", "");
    }
    domain::RouterConfig c;
    for (const auto& [k, v] : root.get_object()) {
        const std::string key(k);
        if (key == "defaultStrategy") {
            auto s = StrategyField(v, key);
            if (!s) {
                return tl::unexpected(s.error());
            }
            c.default_strategy = *s;
        } else if (key == "strategies") {
            if (!v.is_object()) {
                return Invalid("'strategies' must map model aliases to strategy names", key);
            }
            for (const auto& [alias, sv] : v.get_object()) {
                auto s = StrategyField(sv, "strategies." + std::string(alias));
                if (!s) {
                    return tl::unexpected(s.error());
                }
                c.strategies[core::ToLower(std::string_view(alias))] = *s;
            }
        } else if (key == "fallbacks") {
            if (!v.is_object()) {
                return Invalid("'fallbacks' must map model aliases to lists of aliases", key);
            }
            for (const auto& [alias, list] : v.get_object()) {
                const std::string param = "fallbacks." + std::string(alias);
                if (!list.is_array()) {
                    return Invalid("'" + param + "' must be a list of model aliases", param);
                }
                std::vector<std::string> out;
                for (const auto& item : list.get_array()) {
                    if (!item.is_string() || item.get_string().empty()) {
                        return Invalid("'" + param + "' must contain model aliases", param);
                    }
                    std::string a = core::ToLower(std::string_view(item.get_string()));
                    if (a == core::ToLower(std::string_view(alias))) {
                        return Invalid("A model cannot fall back to itself", param);
                    }
                    if (std::find(out.begin(), out.end(), a) == out.end()) {
                        out.push_back(std::move(a));
                    }
                }
                c.fallbacks[core::ToLower(std::string_view(alias))] = std::move(out);
            }
        } else if (key == "fallbacksEnabled") {
            if (!v.is_bool()) {
                return Invalid("'fallbacksEnabled' must be true or false", key);
            }
            c.fallbacks_enabled = v.get_bool();
        } else if (key == "maxRetries") {
            auto n = NonNegative(v, key, 10);
            if (!n) {
                return tl::unexpected(n.error());
            }
            c.max_retries = static_cast<int>(*n);
        } else if (key == "retryBaseDelayMs" || key == "retryMaxDelayMs") {
            auto n = NonNegative(v, key, 60'000);
            if (!n) {
                return tl::unexpected(n.error());
            }
            (key == "retryBaseDelayMs" ? c.retry_base_delay_ms : c.retry_max_delay_ms) = *n;
        }
        // Other fields are ignored (forward compatibility).
    }
    if (c.retry_max_delay_ms < c.retry_base_delay_ms) {
        return Invalid("'retryMaxDelayMs' must not be below 'retryBaseDelayMs'", "retryMaxDelayMs");
    }
    return c;
}

std::string RouterConfigToJson(const domain::RouterConfig& c) {
    bj::object o;
    o["defaultStrategy"] = std::string(domain::ToString(c.default_strategy));
    bj::object strategies;
    for (const auto& [alias, s] : c.strategies) {
        strategies[alias] = std::string(domain::ToString(s));
    }
    o["strategies"] = std::move(strategies);
    o["fallbacksEnabled"] = c.fallbacks_enabled;
    bj::object fallbacks;
    for (const auto& [alias, list] : c.fallbacks) {
        bj::array a;
        for (const auto& f : list) {
            a.emplace_back(f);
        }
        fallbacks[alias] = std::move(a);
    }
    o["fallbacks"] = std::move(fallbacks);
    o["maxRetries"] = c.max_retries;
    o["retryBaseDelayMs"] = c.retry_base_delay_ms;
    o["retryMaxDelayMs"] = c.retry_max_delay_ms;
    return bj::serialize(o);
}

int64_t SteadyNowMs() { return core::SystemClock::SteadyNowNs() / 1'000'000; }

DeploymentHealth::DeploymentHealth(domain::BreakerOptions options, obs::Registry& metrics)
    : options_(options),
      state_(metrics.Gauge("conduit_circuit_breaker_state",
                           "Circuit breaker of each provider deployment: 0 closed, 1 open, "
                           "2 half-open.",
                           {"provider", "deployment"})),
      trips_(metrics.Counter("conduit_circuit_breaker_trips_total",
                             "Times a provider deployment's circuit breaker opened.",
                             {"provider"})) {}

DeploymentHealth::Entry& DeploymentHealth::EntryFor(const domain::Deployment& d) {
    const domain::Id id = d.mapping.id;
    {
        std::shared_lock lock(mu_);
        if (auto it = entries_.find(id); it != entries_.end()) {
            return *it->second;
        }
    }
    std::unique_lock lock(mu_);
    auto& slot = entries_[id];
    if (!slot) {
        slot = std::make_unique<Entry>(options_);
        slot->provider_id = d.provider.id;
        slot->provider_name = d.provider.name;
        slot->alias = d.mapping.model_alias;
        slot->state_gauge =
            &state_.With({d.provider.name, d.mapping.model_alias + "#" + std::to_string(id)});
        slot->state_gauge->Set(0);
    }
    return *slot;
}

domain::DeploymentView DeploymentHealth::View(const domain::Deployment& d, int64_t now_ms) {
    Entry& e = EntryFor(d);
    domain::DeploymentView v;
    v.priority = d.mapping.priority;
    if (d.cost) {
        v.price = d.cost->input_per_million + d.cost->output_per_million;
    }
    std::lock_guard lock(e.mu);
    v.latency_ms = e.latency_ms;
    v.available = e.breaker.Available(now_ms);
    return v;
}

bool DeploymentHealth::TryAcquire(const domain::Deployment& d, int64_t now_ms) {
    Entry& e = EntryFor(d);
    State from, to;
    bool ok;
    {
        std::lock_guard lock(e.mu);
        from = e.breaker.state(now_ms);
        ok = e.breaker.TryAcquire(now_ms);
        to = e.breaker.state(now_ms);
    }
    if (from != to) {
        Changed(e, d.mapping.id, from, to);
    }
    return ok;
}

void DeploymentHealth::Record(const domain::Deployment& d,
                              bool success,
                              double latency_ms,
                              int64_t now_ms) {
    Entry& e = EntryFor(d);
    State from, to;
    bool changed;
    {
        std::lock_guard lock(e.mu);
        from = e.breaker.state(now_ms);
        changed = e.breaker.Record(success, now_ms);
        to = e.breaker.state(now_ms);
        if (success && latency_ms >= 0) {
            e.latency_ms = e.latency_ms < 0 ? latency_ms : 0.8 * e.latency_ms + 0.2 * latency_ms;
        }
    }
    if (changed && from != to) {
        Changed(e, d.mapping.id, from, to);
    }
}

void DeploymentHealth::Release(const domain::Deployment& d) {
    Entry& e = EntryFor(d);
    std::lock_guard lock(e.mu);
    e.breaker.Release();
}

void DeploymentHealth::Changed(Entry& e, domain::Id mapping_id, State from, State to) {
    e.state_gauge->Set(to == State::kClosed ? 0 : to == State::kOpen ? 1 : 2);
    if (to == State::kOpen) {
        trips_.With({e.provider_name}).Inc();
    }
    if (on_change_) {
        on_change_(Change{mapping_id, e.provider_id, e.provider_name, e.alias, from, to});
    }
}

uint64_t DeploymentHealth::NextTicket(std::string_view alias) {
    std::string key = core::ToLower(alias);
    {
        std::shared_lock lock(mu_);
        if (auto it = tickets_.find(key); it != tickets_.end()) {
            return it->second->fetch_add(1, std::memory_order_relaxed);
        }
    }
    std::unique_lock lock(mu_);
    auto& slot = tickets_[key];
    if (!slot) {
        slot = std::make_unique<std::atomic<uint64_t>>(0);
    }
    return slot->fetch_add(1, std::memory_order_relaxed);
}

std::vector<DeploymentHealth::Status> DeploymentHealth::Statuses(int64_t now_ms) {
    std::vector<Status> out;
    std::shared_lock lock(mu_);
    for (const auto& [id, e] : entries_) {
        std::lock_guard elock(e->mu);
        Status s;
        s.mapping_id = id;
        s.provider_id = e->provider_id;
        s.provider_name = e->provider_name;
        s.alias = e->alias;
        s.state = e->breaker.state(now_ms);
        s.trips = e->breaker.trips();
        s.latency_ms = e->latency_ms;
        auto [f, r] = e->breaker.WindowCounts(now_ms);
        s.window_failures = f;
        s.window_requests = r;
        out.push_back(std::move(s));
    }
    std::sort(out.begin(), out.end(),
              [](const Status& a, const Status& b) { return a.mapping_id < b.mapping_id; });
    return out;
}

size_t DeploymentHealth::UnhealthyCount(int64_t now_ms) {
    size_t n = 0;
    std::shared_lock lock(mu_);
    for (const auto& [id, e] : entries_) {
        std::lock_guard elock(e->mu);
        n += e->breaker.state(now_ms) != State::kClosed ? 1 : 0;
    }
    return n;
}

std::vector<const domain::Deployment*> PlanRoute(const domain::Snapshot& snapshot,
                                                 const domain::KeyEntry& key,
                                                 std::string_view alias,
                                                 DeploymentHealth& health,
                                                 int64_t now_ms) {
    std::vector<const domain::Deployment*> plan;
    std::unordered_set<domain::Id> seen;
    auto add_alias = [&](std::string_view a) {
        const auto* list = snapshot.Deployments(a);
        if (list == nullptr || list->empty()) {
            return;
        }
        std::vector<domain::DeploymentView> views;
        views.reserve(list->size());
        for (const auto& d : *list) {
            views.push_back(health.View(d, now_ms));
        }
        const auto strategy = snapshot.router().StrategyFor(a);
        const uint64_t ticket = (strategy == domain::RoutingStrategy::kRoundRobin ||
                                 strategy == domain::RoutingStrategy::kPriority)
                                    ? health.NextTicket(a)
                                    : 0;
        for (size_t i : domain::OrderDeployments(strategy, views, ticket)) {
            const domain::Deployment& d = (*list)[i];
            if (seen.insert(d.mapping.id).second) {
                plan.push_back(&d);
            }
        }
    };
    add_alias(alias);
    for (const auto& fallback : snapshot.router().FallbacksFor(alias)) {
        if (key.allow.Allows(fallback)) {
            add_alias(fallback);
        }
    }
    return plan;
}

}  // namespace conduit::gateway
