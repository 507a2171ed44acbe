// /api/Router: the router configuration (strategies per model alias, fallbacks, retries), kept
// in the store's settings and loaded into every snapshot. Routes as in the original:
// `config` GET/PUT, `fallbacks` GET, `fallbacks/{primaryModel}` POST/DELETE.

#include "admin/handler_support.hpp"
#include "core/strings.hpp"
#include "gateway/routing.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

namespace conduit::admin::detail {

namespace {

namespace bj = boost::json;

/// The stored configuration (defaults when none). Executor thread.
core::Result<domain::RouterConfig> Load(store::Store& store) {
    auto raw = store.GetSetting(gateway::kRouterSetting);
    if (!raw) {
        return Err(raw);
    }
    if (!*raw) {
        return domain::RouterConfig{};
    }
    return gateway::ParseRouterConfig(**raw);
}

/// Stores `c` and rebuilds the snapshot. Executor thread.
core::Result<void> Save(AdminDeps& d, const domain::RouterConfig& c) {
    if (auto r = d.store.PutSetting(gateway::kRouterSetting, gateway::RouterConfigToJson(c)); !r) {
        return r;
    }
    ReloadConfig(d, "router configuration", {"RouterConfig", "Updated", 0, ""});
    return {};
}

std::string FallbacksJson(const domain::RouterConfig& c) {
    bj::object o;
    for (const auto& [alias, list] : c.fallbacks) {
        bj::array a;
        for (const auto& f : list) {
            a.emplace_back(f);
        }
        o[alias] = std::move(a);
    }
    return bj::serialize(o);
}

void GetConfig(const net::ExchangePtr& ex, const DepsPtr& deps) {
    RunOnStore(deps, ex, [](AdminDeps& d) -> Reply {
        auto c = Load(d.store);
        if (!c) {
            return Err(c);
        }
        return JsonReply(200, gateway::RouterConfigToJson(*c));
    });
}

void PutConfig(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto parsed = gateway::ParseRouterConfig(ex->request().body);
    if (!parsed) {
        RespondError(ex, parsed.error());
        return;
    }
    RunOnStore(deps, ex, [c = std::move(*parsed)](AdminDeps& d) -> Reply {
        if (auto r = Save(d, c); !r) {
            return Err(r);
        }
        spdlog::info("admin: router configuration updated (default strategy {})",
                     domain::ToString(c.default_strategy));
        return JsonReply(200, gateway::RouterConfigToJson(c));
    });
}

void ListFallbacks(const net::ExchangePtr& ex, const DepsPtr& deps) {
    RunOnStore(deps, ex, [](AdminDeps& d) -> Reply {
        auto c = Load(d.store);
        if (!c) {
            return Err(c);
        }
        return JsonReply(200, FallbacksJson(*c));
    });
}

/// Body: `["alias", ...]` or `{"fallbacks": ["alias", ...]}`.
void SetFallbacks(const net::ExchangePtr& ex, const DepsPtr& deps) {
    const std::string primary = core::ToLower(ex->request().path_params.at(0));
    boost::system::error_code ec;
    bj::value body = bj::parse(ex->request().body, ec);
    if (!ec && body.is_object() && body.as_object().contains("fallbacks")) {
        body = body.as_object().at("fallbacks");
    }
    if (ec || !body.is_array()) {
        RespondError(ex, BadParam("fallbacks", "The body must be a list of model aliases."));
        return;
    }
    // Validate through the same parser as PUT config.
    bj::object wrapper;
    bj::object fallbacks;
    fallbacks[primary] = body;
    wrapper["fallbacks"] = std::move(fallbacks);
    auto parsed = gateway::ParseRouterConfig(bj::serialize(wrapper));
    if (!parsed) {
        RespondError(ex, parsed.error());
        return;
    }
    RunOnStore(deps, ex, [primary, list = parsed->fallbacks[primary]](AdminDeps& d) -> Reply {
        auto c = Load(d.store);
        if (!c) {
            return Err(c);
        }
        c->fallbacks[primary] = list;
        if (auto r = Save(d, *c); !r) {
            return Err(r);
        }
        spdlog::info("admin: fallbacks of '{}' set ({} models)", primary, list.size());
        return JsonReply(200, FallbacksJson(*c));
    });
}

void DeleteFallbacks(const net::ExchangePtr& ex, const DepsPtr& deps) {
    const std::string primary = core::ToLower(ex->request().path_params.at(0));
    RunOnStore(deps, ex, [primary](AdminDeps& d) -> Reply {
        auto c = Load(d.store);
        if (!c) {
            return Err(c);
        }
        if (c->fallbacks.erase(primary) == 0) {
            return tl::unexpected(NotFoundText("Fallbacks of model", primary));
        }
        if (auto r = Save(d, *c); !r) {
            return Err(r);
        }
        spdlog::info("admin: fallbacks of '{}' removed", primary);
        return NoContent();
    });
}

}  // namespace

void RegisterRouterRoutes(net::Router& router, const DepsPtr& deps) {
    AddRoute(router, deps, "GET", "/api/Router/config", GetConfig);
    AddRoute(router, deps, "PUT", "/api/Router/config", PutConfig);
    AddRoute(router, deps, "GET", "/api/Router/fallbacks", ListFallbacks);
    AddRoute(router, deps, "POST", "/api/Router/fallbacks/{primaryModel}", SetFallbacks);
    AddRoute(router, deps, "DELETE", "/api/Router/fallbacks/{primaryModel}", DeleteFallbacks);
}

}  // namespace conduit::admin::detail
