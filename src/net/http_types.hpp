#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conduit::net {

/// HTTP header list with ASCII case-insensitive lookup. Order and duplicates are preserved.
class Headers {
public:
    using Entry = std::pair<std::string, std::string>;

    /// First value for `name`, or empty view when absent.
    std::string_view Get(std::string_view name) const;
    bool Has(std::string_view name) const;
    /// Appends (keeps existing entries with the same name).
    void Add(std::string name, std::string value);
    /// Replaces every entry named `name` with one entry.
    void Set(std::string_view name, std::string value);
    void Remove(std::string_view name);
    const std::vector<Entry>& entries() const { return entries_; }
    std::vector<Entry>& entries() { return entries_; }
    bool empty() const { return entries_.empty(); }
    void reserve(size_t n) { entries_.reserve(n); }

private:
    std::vector<Entry> entries_;
};

/// A fully read HTTP/1.1 request. The body is complete (requests are not streamed in).
struct Request {
    std::string method;  // "GET", "POST", ...
    std::string target;  // raw request target, e.g. "/v1/models?x=1"
    Headers headers;
    std::string body;
    std::string remote_address;
    int64_t first_byte_ns = 0;             // steady clock when the request's first bytes arrived
    int64_t received_ns = 0;               // steady clock when the request was completely read
    std::vector<std::string> path_params;  // captured `{name}` segments, in route order

    /// The target without the query string.
    std::string_view path() const;
    /// The part after '?', empty if none.
    std::string_view query() const;
    /// Bearer token from `Authorization`, or empty.
    std::string_view BearerToken() const;
};

/// A complete response (non-streaming).
struct Response {
    int status = 200;
    Headers headers;
    std::string body;

    static Response Json(int status, std::string body);
    static Response Text(int status, std::string body, std::string content_type = "text/plain");
};

/// Standard reason phrase for `status` ("OK", "Not Found", ...).
std::string_view ReasonPhrase(int status);

}  // namespace conduit::net
