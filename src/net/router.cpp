#include "net/router.hpp"

#include "core/strings.hpp"

namespace conduit::net {

namespace {
std::vector<std::string_view> SplitPath(std::string_view path) {
    std::vector<std::string_view> parts;
    size_t i = 0;
    while (i < path.size()) {
        while (i < path.size() && path[i] == '/') {
            ++i;
        }
        if (i >= path.size()) {
            break;
        }
        size_t j = path.find('/', i);
        if (j == std::string_view::npos) {
            j = path.size();
        }
        parts.push_back(path.substr(i, j - i));
        i = j;
    }
    return parts;
}
}  // namespace

void Router::Add(std::string method, std::string pattern, Handler handler) {
    Route r;
    r.method = std::move(method);
    for (auto part : SplitPath(pattern)) {
        Segment s;
        if (part.size() >= 2 && part.front() == '{' && part.back() == '}') {
            s.param = true;
            s.rest = part.size() >= 3 && part[part.size() - 2] == '*';
        }
        s.text = std::string(part);
        r.segments.push_back(std::move(s));
    }
    r.pattern = std::move(pattern);
    r.handler = std::move(handler);
    routes_.push_back(std::move(r));
}

bool Router::MatchRoute(const Route& r,
                        const std::vector<std::string_view>& parts,
                        std::vector<std::string>& params,
                        int& score) {
    score = 0;
    size_t start = params.size();
    size_t i = 0;
    for (; i < r.segments.size(); ++i) {
        const auto& seg = r.segments[i];
        if (seg.rest) {
            if (i >= parts.size()) {
                params.resize(start);
                return false;
            }
            std::string rest;
            for (size_t k = i; k < parts.size(); ++k) {
                if (!rest.empty()) {
                    rest.push_back('/');
                }
                rest.append(core::UrlDecode(parts[k]));
            }
            params.push_back(std::move(rest));
            return true;
        }
        if (i >= parts.size()) {
            params.resize(start);
            return false;
        }
        if (seg.param) {
            params.push_back(core::UrlDecode(parts[i]));
        } else if (core::IEquals(seg.text, parts[i])) {
            score += 2;
        } else {
            params.resize(start);
            return false;
        }
    }
    if (i != parts.size()) {
        params.resize(start);
        return false;
    }
    return true;
}

RouteMatch Router::Match(std::string_view method,
                         std::string_view path,
                         std::vector<std::string>& params) const {
    auto parts = SplitPath(path);
    RouteMatch result;
    const Route* best = nullptr;
    int best_score = -1;
    std::vector<std::string> best_params;
    for (const auto& r : routes_) {
        std::vector<std::string> p;
        int score = 0;
        if (!MatchRoute(r, parts, p, score)) {
            continue;
        }
        bool method_ok = r.method == method || (method == "HEAD" && r.method == "GET");
        if (!method_ok) {
            result.path_matched = true;
            if (result.allowed_methods.find(r.method) == std::string::npos) {
                if (!result.allowed_methods.empty()) {
                    result.allowed_methods += ", ";
                }
                result.allowed_methods += r.method;
            }
            continue;
        }
        // Prefer exact-method matches over HEAD→GET fallbacks, then more literal segments.
        if (r.method == method) {
            score += 1;
        }
        if (score > best_score) {
            best = &r;
            best_score = score;
            best_params = std::move(p);
        }
    }
    if (best != nullptr) {
        result.handler = &best->handler;
        result.name = best->pattern;
        for (auto& p : best_params) {
            params.push_back(std::move(p));
        }
    }
    return result;
}

}  // namespace conduit::net
