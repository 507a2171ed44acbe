#pragma once

#include "core/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace conduit::redis {

/// Where a Redis server is and how to log in, parsed from a URL.
struct Endpoint {
    std::string host = "127.0.0.1";
    uint16_t port = 6379;
    std::string username;  // empty = AUTH <password> (Redis < 6 / default user)
    std::string password;  // empty = no AUTH
    int db = 0;            // SELECT <db> when non-zero
};

/// Parses `redis://[[username]:password@]host[:port][/db]`. Username and password are
/// percent-decoded; an IPv6 host is written in brackets (`redis://[::1]:6379/`). Missing parts
/// take the defaults above. Pure function, any thread.
core::Result<Endpoint> ParseUrl(std::string_view url);

/// The URL without its password (for logs).
std::string RedactedUrl(const Endpoint& endpoint);

}  // namespace conduit::redis
