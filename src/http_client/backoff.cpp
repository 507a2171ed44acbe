#include "http_client/backoff.hpp"

#include "core/strings.hpp"

#include <algorithm>
#include <cmath>
#include <string_view>

namespace conduit::http_client {

std::chrono::milliseconds BackoffDelay(int attempt,
                                       std::chrono::milliseconds base,
                                       std::chrono::milliseconds max,
                                       double random01) {
    attempt = std::max(attempt, 1);
    double scaled = static_cast<double>(base.count()) * std::pow(2.0, attempt - 1);
    double capped = std::min(scaled, static_cast<double>(max.count()));
    double jittered = capped * (0.5 + 0.5 * std::clamp(random01, 0.0, 1.0));
    return std::chrono::milliseconds(static_cast<int64_t>(jittered));
}

std::chrono::milliseconds ParseRetryAfter(std::string_view value) {
    auto v = core::ParseInt(core::Trim(value));
    if (!v || *v < 0) {
        return std::chrono::milliseconds(-1);
    }
    return std::chrono::milliseconds(std::min<int64_t>(*v, 86400) * 1000);
}

}  // namespace conduit::http_client
