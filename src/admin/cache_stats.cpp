// GET /api/cache/statistics[?instances=true]: the distributed cache statistics (per region across
// every active instance, drift against the global aggregate; per-instance views on request).
// No store work: the app's collector answers (one Redis round trip, or in process).
#include "admin/handler_support.hpp"
#include "core/strings.hpp"

namespace conduit::admin::detail {
namespace {

void Statistics(const net::ExchangePtr& ex, const DepsPtr& deps) {
    bool with_instances = false;
    if (auto v = QueryValue(ex->request(), "instances")) {
        const std::string lower = core::ToLower(*v);
        if (lower == "true" || lower == "1") {
            with_instances = true;
        } else if (lower != "false" && lower != "0" && !lower.empty()) {
            RespondError(ex, BadParam("instances", "instances must be true or false."));
            return;
        }
    }
    if (!deps->cache_statistics) {
        RespondError(ex, core::Error{core::ErrorCode::kUnavailable,
                                     "Cache statistics are not available on this instance.", ""});
        return;
    }
    deps->cache_statistics(with_instances, [ex](core::Result<std::string> json) {
        ex->loop().Post([ex, json = std::move(json)]() mutable {
            if (!json) {
                Finish(ex, tl::unexpected(core::Error{
                               core::ErrorCode::kUnavailable,
                               "Cache statistics could not be collected: " + json.error().message,
                               ""}));
                return;
            }
            Finish(ex, JsonReply(200, std::move(*json)));
        });
    });
}

}  // namespace

void RegisterCacheStatsRoutes(net::Router& router, const DepsPtr& deps) {
    AddRoute(router, deps, "GET", "/api/cache/statistics", Statistics);
}

}  // namespace conduit::admin::detail
