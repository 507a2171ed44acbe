#include "hubs/notifications.hpp"

#include "core/clock.hpp"
#include "core/strings.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <set>
#include <system_error>

namespace conduit::hubs {

namespace bj = boost::json;

bool ConfigChange::AffectsNavigation() const {
    return entity == "ModelMapping" || entity == "Provider" || entity == "ProviderKey";
}

std::string ConfigChangeJson(const ConfigChange& change) {
    bj::object o;
    o["entity"] = change.entity;
    o["changeType"] = change.change_type;
    o["id"] = change.id;
    o["modelAlias"] = change.model_alias;
    return bj::serialize(o);
}

core::Result<ConfigChange> ParseConfigChange(std::string_view json) {
    std::error_code ec;
    bj::value v = bj::parse(json, ec);
    const bj::object* o = ec ? nullptr : v.if_object();
    auto str = [&](std::string_view k) -> const bj::string* {
        auto it = o->find(k);
        return it == o->end() ? nullptr : it->value().if_string();
    };
    if (o == nullptr || str("entity") == nullptr || str("changeType") == nullptr ||
        !o->contains("id") || !o->at("id").is_int64()) {
        return core::Fail(core::ErrorCode::kInvalidRequest, "not a configuration change event");
    }
    ConfigChange c;
    c.entity = std::string(*str("entity"));
    c.change_type = std::string(*str("changeType"));
    c.id = o->at("id").as_int64();
    if (const auto* alias = str("modelAlias")) {
        c.model_alias = std::string(*alias);
    }
    return c;
}

bj::array NavigationItems(const NavigationData& data,
                          const std::map<domain::Id, ProviderHealth>& health) {
    std::map<domain::Id, const domain::Provider*> providers;
    for (const auto& p : data.providers) {
        providers[p.id] = &p;
    }
    std::map<std::string, std::vector<const domain::ModelMapping*>> by_alias;
    for (const auto& m : data.mappings) {
        by_alias[m.model_alias].push_back(&m);
    }
    auto status_of = [&](domain::Id provider_id) -> std::string_view {
        auto it = health.find(provider_id);
        return it == health.end() ? std::string_view("Healthy")
                                  : std::string_view(it->second.status);
    };
    bj::array items;
    for (const auto& [alias, mappings] : by_alias) {
        bool any_enabled_mapping = false;
        bool usable = false;           // enabled mapping + enabled provider, not Unhealthy
        bool usable_ignoring = false;  // enabled mapping + enabled provider
        bool degraded = false;
        std::string deployments;
        for (const auto* m : mappings) {
            if (!m->is_enabled) {
                continue;
            }
            any_enabled_mapping = true;
            auto p = providers.find(m->provider_id);
            if (p == providers.end() || !p->second->is_enabled) {
                continue;
            }
            usable_ignoring = true;
            std::string_view status = status_of(m->provider_id);
            if (status != "Unhealthy") {
                usable = true;
            }
            if (status != "Healthy") {
                degraded = true;
            }
            if (!deployments.empty()) {
                deployments += ", ";
            }
            deployments += p->second->name + "/" + m->provider_model_id;
        }
        bj::object item;
        item["id"] = alias;
        item["path"] = "/v1/models/" + alias;
        item["isEnabled"] = usable;
        bj::value badge = nullptr;
        bj::value color = nullptr;
        std::string tooltip = deployments;
        if (!any_enabled_mapping) {
            badge = "Disabled";
            color = "gray";
            tooltip = "Every mapping of " + alias + " is disabled";
        } else if (!usable_ignoring) {
            badge = "Provider disabled";
            color = "gray";
            tooltip = "The providers of " + alias + " are disabled";
        } else if (!usable) {
            badge = "Unhealthy";
            color = "red";
            tooltip = "Unhealthy: " + deployments;
        } else if (degraded) {
            badge = "Degraded";
            color = "orange";
        }
        item["badgeText"] = std::move(badge);
        item["badgeColor"] = std::move(color);
        item["tooltip"] = std::move(tooltip);
        items.push_back(std::move(item));
    }
    return items;
}

std::string_view EndpointOf(std::string_view request_type) {
    if (request_type == "chat") {
        return "/v1/chat/completions";
    }
    if (request_type == "completion") {
        return "/v1/completions";
    }
    if (request_type == "embedding") {
        return "/v1/embeddings";
    }
    if (request_type == "image") {
        return "/v1/images/generations";
    }
    if (request_type == "video") {
        return "/v1/videos/generations";
    }
    return request_type;
}

std::string SpendUpdateArgsJson(const domain::RequestLogRow& row, const SpendTotals& totals) {
    std::string out = "[{\"timestamp\":";
    out += core::JsonQuote(core::FormatIso8601(row.timestamp_ms));
    out += ",\"totalSpend\":";
    out += core::FormatMoney(totals.total_spend);
    out += ",\"budgetRemaining\":";
    out += totals.budget_remaining ? core::FormatMoney(*totals.budget_remaining) : "null";
    out += ",\"newSpend\":";
    out += core::FormatMoney(row.cost);
    out += ",\"model\":";
    out += core::JsonQuote(row.model_alias);
    out += ",\"provider\":";
    out += totals.provider.empty() ? "null" : core::JsonQuote(totals.provider);
    out += ",\"metadata\":{\"requestId\":";
    out += core::JsonQuote(row.request_id);
    out += ",\"endpoint\":";
    out += core::JsonQuote(EndpointOf(row.request_type));
    out += ",\"inputTokens\":";
    out += std::to_string(row.input_tokens);
    out += ",\"outputTokens\":";
    out += std::to_string(row.output_tokens);
    out += "}}]";
    return out;
}

std::string BudgetAlertArgsJson(const BudgetAlertInfo& a) {
    const bool exceeded = a.percent >= 100;
    const std::string severity = exceeded ? "error" : a.percent >= 90 ? "critical" : "warning";
    // Percentage of the budget used, two decimals, from exact integers.
    std::string pct = "100";
    if (a.budget > 0) {
        // Exact without overflow: whole percent and hundredths from quotient and remainder.
        const int64_t whole = a.current_spend / a.budget;
        const int64_t rest = a.current_spend % a.budget;
        const int64_t h =
            whole * 10000 + static_cast<int64_t>(static_cast<long double>(rest) * 10000 / a.budget);
        pct = std::to_string(h / 100);
        if (h % 100 != 0) {
            const int64_t f = h % 100;
            pct += f % 10 == 0 ? "." + std::to_string(f / 10)
                               : (f < 10 ? ".0" : ".") + std::to_string(f);
        }
    }
    std::string message = "This key has used " + pct + "% of its " + a.period + " budget ($" +
                          core::FormatMoney(a.current_spend) + " of $" +
                          core::FormatMoney(a.budget) + ").";
    if (exceeded) {
        message += " Further requests are refused until the budget resets or is raised.";
    }
    std::string out = "[{\"alertType\":";
    out += core::JsonQuote(exceeded ? "budget_exceeded" : "budget_threshold");
    out += ",\"message\":";
    out += core::JsonQuote(message);
    out += ",\"currentSpend\":";
    out += core::FormatMoney(a.current_spend);
    out += ",\"budgetLimit\":";
    out += core::FormatMoney(a.budget);
    out += ",\"percentageUsed\":";
    out += pct;
    out += ",\"threshold\":";
    out += std::to_string(a.percent);
    out += ",\"severity\":";
    out += core::JsonQuote(severity);
    out += ",\"recommendations\":[";
    if (exceeded) {
        out += core::JsonQuote("Raise the key's maxBudget or wait for the budget period to reset.");
    } else {
        out += core::JsonQuote("Review this key's usage before the budget is exhausted.");
        out += ",";
        out += core::JsonQuote("Lower max_tokens or use a cheaper model to stretch the budget.");
    }
    out += "],\"budgetPeriod\":";
    out += core::JsonQuote(a.period);
    out += ",\"budgetPeriodEnd\":";
    out += a.period_end_ms ? core::JsonQuote(core::FormatIso8601(*a.period_end_ms)) : "null";
    out += "}]";
    return out;
}

bool KeyRateLimiter::Allow(domain::Id key_id, int64_t now_ms) {
    if (per_minute_ <= 0) {
        return true;
    }
    const double capacity = per_minute_;
    const double per_ms = capacity / 60000.0;
    std::lock_guard lock(mu_);
    if (now_ms - last_sweep_ms_ > 60000) {
        // Keys idle for a minute are full again: forget them (bounds memory).
        last_sweep_ms_ = now_ms;
        std::erase_if(buckets_,
                      [&](const auto& kv) { return now_ms - kv.second.last_ms >= 60000; });
    }
    auto [it, fresh] = buckets_.try_emplace(key_id);
    Bucket& b = it->second;
    if (fresh) {
        b.tokens = capacity;
    } else {
        b.tokens = std::min(capacity, b.tokens + static_cast<double>(now_ms - b.last_ms) * per_ms);
    }
    b.last_ms = now_ms;
    if (b.tokens < 1.0) {
        return false;
    }
    b.tokens -= 1.0;
    return true;
}

}  // namespace conduit::hubs
