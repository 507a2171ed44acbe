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
        Segment seg;
        if (part.size() >= 2 && part.front() == '{' && part.back() == '}') {
            seg.param = true;
            seg.rest = part.size() >= 3 && part[part.size() - 2] == '*';
            r.has_rest = r.has_rest || seg.rest;
        }
        seg.text = std::string(part);
        r.segments.push_back(std::move(seg));
    }
    r.pattern = std::move(pattern);
    r.handler = std::move(handler);
    if (r.has_rest) {
        rest_routes_.push_back(routes_.size());
    } else {
        by_count_[r.segments.size()].push_back(routes_.size());
    }
    routes_.push_back(std::move(r));
}

int Router::Score(const Route& r, const std::vector<std::string_view>& parts) {
    if (r.has_rest ? parts.size() < r.segments.size() : parts.size() != r.segments.size()) {
        return -1;
    }
    int score = 0;
    for (size_t i = 0; i < r.segments.size(); ++i) {
        const auto& seg = r.segments[i];
        if (seg.rest) {
            return score;
        }
        if (seg.param) {
            continue;
        }
        if (!core::IEquals(seg.text, parts[i])) {
            return -1;
        }
        score += 2;
    }
    return score;
}

void Router::Capture(const Route& r,
                     const std::vector<std::string_view>& parts,
                     std::vector<std::string>& params) {
    for (size_t i = 0; i < r.segments.size(); ++i) {
        const auto& seg = r.segments[i];
        if (seg.rest) {
            std::string rest;
            for (size_t k = i; k < parts.size(); ++k) {
                if (!rest.empty()) {
                    rest.push_back('/');
                }
                rest.append(core::UrlDecode(parts[k]));
            }
            params.push_back(std::move(rest));
            return;
        }
        if (seg.param) {
            params.push_back(core::UrlDecode(parts[i]));
        }
    }
}

size_t Router::WrapRoutes(
    const std::function<bool(std::string_view method, std::string_view pattern)>& select,
    const std::function<Handler(Handler)>& wrap) {
    size_t n = 0;
    for (auto& r : routes_) {
        if (select(r.method, r.pattern)) {
            r.handler = wrap(std::move(r.handler));
            ++n;
        }
    }
    return n;
}

RouteMatch Router::Match(std::string_view method,
                         std::string_view path,
                         std::vector<std::string>& params) const {
    auto parts = SplitPath(path);
    RouteMatch result;
    const Route* best = nullptr;
    int best_score = -1;
    static const std::vector<size_t> kNone;
    auto bucket = by_count_.find(parts.size());
    const std::vector<size_t>& fixed = bucket == by_count_.end() ? kNone : bucket->second;
    for (size_t k = 0; k < fixed.size() + rest_routes_.size(); ++k) {
        const Route& r = routes_[k < fixed.size() ? fixed[k] : rest_routes_[k - fixed.size()]];
        int score = Score(r, parts);
        if (score < 0) {
            continue;
        }
        bool exact_method = r.method == method;
        if (!exact_method && !(method == "HEAD" && r.method == "GET")) {
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
        score = score * 2 + (exact_method ? 1 : 0);
        if (score > best_score) {
            best = &r;
            best_score = score;
        }
    }
    if (best != nullptr) {
        result.handler = &best->handler;
        result.name = best->pattern;
        Capture(*best, parts, params);
    }
    return result;
}

}  // namespace conduit::net
