#pragma once

#include "net/exchange.hpp"

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace conduit::net {

/// Result of matching a request against the route table.
struct RouteMatch {
    const Handler* handler = nullptr;  // null when no route matched
    std::string_view name;             // route label for metrics, e.g. "/v1/chat/completions"
    bool path_matched = false;         // a route exists for the path but not for the method
    std::string allowed_methods;       // for 405 responses, e.g. "GET, POST"
};

/// Static route table: exact segments, `{param}` segments that capture one segment, and a final
/// `{param*}` that captures the rest of the path. Matching is case-insensitive on literal
/// segments (ASP.NET routing is), exact segments beat parameters. Built at start-up, then
/// read-only: safe to share across threads.
class Router {
public:
    /// Registers `handler` for `method` ("GET", "POST", ...) and `pattern` (e.g.
    /// "/v1/tasks/{id}/cancel"). The pattern doubles as the metrics label.
    void Add(std::string method, std::string pattern, Handler handler);
    /// Replaces the handler of every route `select(method, pattern)` picks with
    /// `wrap(handler)` (e.g. a rate limit in front of a family of routes). Start-up only.
    /// Returns how many routes were wrapped.
    size_t WrapRoutes(
        const std::function<bool(std::string_view method, std::string_view pattern)>& select,
        const std::function<Handler(Handler)>& wrap);
    /// Finds the route; on success appends captured parameters to `params`.
    RouteMatch Match(std::string_view method,
                     std::string_view path,
                     std::vector<std::string>& params) const;

private:
    struct Segment {
        std::string text;
        bool param = false;
        bool rest = false;
    };
    struct Route {
        std::string method;
        std::string pattern;
        std::vector<Segment> segments;
        bool has_rest = false;
        Handler handler;
    };
    /// Scores `r` against `parts` without allocating; -1 when it does not match.
    static int Score(const Route& r, const std::vector<std::string_view>& parts);
    /// Appends the captured parameters of a route known to match.
    static void Capture(const Route& r,
                        const std::vector<std::string_view>& parts,
                        std::vector<std::string>& params);
    std::vector<Route> routes_;
    // Candidate routes by segment count (routes with a `{rest*}` segment are always candidates),
    // in registration order, so a request is only scored against routes that could match.
    std::unordered_map<size_t, std::vector<size_t>> by_count_;
    std::vector<size_t> rest_routes_;
};

}  // namespace conduit::net
