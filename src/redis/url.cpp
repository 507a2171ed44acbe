#include "redis/url.hpp"

#include "core/strings.hpp"

#include <charconv>
#include <string>
#include <string_view>

namespace conduit::redis {
namespace {

template <class T>
bool ParseNumber(std::string_view s, T& out) {
    if (s.empty()) {
        return false;
    }
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
}

core::Result<Endpoint> Invalid(std::string why) {
    return core::Fail(core::ErrorCode::kInvalidRequest, "invalid Redis URL: " + why);
}

}  // namespace

core::Result<Endpoint> ParseUrl(std::string_view url) {
    constexpr std::string_view kScheme = "redis://";
    if (url.substr(0, kScheme.size()) != kScheme) {
        return Invalid("expected redis://[[user]:password@]host[:port][/db]");
    }
    std::string_view rest = url.substr(kScheme.size());
    Endpoint ep;
    std::string_view authority = rest;
    std::string_view path;
    if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
        authority = rest.substr(0, slash);
        path = rest.substr(slash + 1);
    }
    if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
        std::string_view userinfo = authority.substr(0, at);
        authority = authority.substr(at + 1);
        std::string_view user = userinfo;
        std::string_view pass;
        bool has_pass = false;
        if (size_t colon = userinfo.find(':'); colon != std::string_view::npos) {
            user = userinfo.substr(0, colon);
            pass = userinfo.substr(colon + 1);
            has_pass = true;
        }
        if (!has_pass) {
            // redis://secret@host: a lone userinfo is the password (redis-py, Jedis).
            pass = user;
            user = {};
        }
        if (!core::PercentDecode(user, ep.username) || !core::PercentDecode(pass, ep.password)) {
            return Invalid("bad percent-encoding in the credentials");
        }
    }
    std::string_view host = authority;
    std::string_view port;
    if (!authority.empty() && authority.front() == '[') {
        size_t close = authority.find(']');
        if (close == std::string_view::npos) {
            return Invalid("unterminated IPv6 host");
        }
        host = authority.substr(1, close - 1);
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') {
                return Invalid("unexpected text after the host");
            }
            port = after.substr(1);
            if (port.empty()) {
                return Invalid("empty port");
            }
        }
    } else if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
        host = authority.substr(0, colon);
        port = authority.substr(colon + 1);
        if (port.empty()) {
            return Invalid("empty port");
        }
    }
    if (!host.empty()) {
        ep.host = std::string(host);
    }
    if (!port.empty()) {
        unsigned value = 0;
        if (!ParseNumber(port, value) || value == 0 || value > 65535) {
            return Invalid("bad port '" + std::string(port) + "'");
        }
        ep.port = static_cast<uint16_t>(value);
    }
    if (size_t q = path.find('?'); q != std::string_view::npos) {
        path = path.substr(0, q);  // query options are not supported; ignored
    }
    if (!path.empty()) {
        if (!ParseNumber(path, ep.db) || ep.db < 0) {
            return Invalid("bad database number '" + std::string(path) + "'");
        }
    }
    return ep;
}

std::string RedactedUrl(const Endpoint& endpoint) {
    std::string out = "redis://";
    if (!endpoint.password.empty()) {
        out += endpoint.username + ":***@";
    }
    if (endpoint.host.find(':') != std::string::npos) {
        out += "[" + endpoint.host + "]";
    } else {
        out += endpoint.host;
    }
    out += ":" + std::to_string(endpoint.port) + "/" + std::to_string(endpoint.db);
    return out;
}

}  // namespace conduit::redis
