#include "admin/admin_api.hpp"

#include "admin/handler_support.hpp"
#include "core/crypto.hpp"
#include "core/strings.hpp"

namespace conduit::admin {

bool HasMasterKey(const net::Request& req, std::string_view master_key) {
    if (master_key.empty()) {
        return false;
    }
    // Comparing digests makes the comparison independent of both keys' lengths too.
    const std::string expected = core::Sha256Raw(master_key);
    const std::string_view presented[] = {
        core::Trim(req.headers.Get("X-API-Key")),
        core::Trim(req.headers.Get("X-Master-Key")),
        core::Trim(req.BearerToken()),
    };
    bool match = false;
    for (std::string_view candidate : presented) {
        if (!candidate.empty()) {
            // No short-circuit: every presented credential is compared.
            match = core::ConstantTimeEquals(core::Sha256Raw(candidate), expected) || match;
        }
    }
    return match;
}

// The by-value shared_ptr is the published signature (the app hands over its reference).
void RegisterAdminRoutes(
    net::Router& router,
    std::shared_ptr<AdminDeps> deps) {  // NOLINT(performance-unnecessary-value-param)
    detail::RegisterGroupRoutes(router, deps);
    detail::RegisterVirtualKeyRoutes(router, deps);
    detail::RegisterProviderRoutes(router, deps);
    detail::RegisterMappingRoutes(router, deps);
    detail::RegisterCostRoutes(router, deps);
    detail::RegisterAnalyticsRoutes(router, deps);
    detail::RegisterNotificationRoutes(router, deps);
    detail::RegisterRouterRoutes(router, deps);
    detail::RegisterCacheStatsRoutes(router, deps);
}

}  // namespace conduit::admin
