#include "net/http_types.hpp"

#include "core/strings.hpp"

namespace conduit::net {

std::string_view Headers::Get(std::string_view name) const {
    for (const auto& [k, v] : entries_) {
        if (core::IEquals(k, name)) {
            return v;
        }
    }
    return {};
}

bool Headers::Has(std::string_view name) const {
    for (const auto& e : entries_) {
        if (core::IEquals(e.first, name)) {
            return true;
        }
    }
    return false;
}

void Headers::Add(std::string name, std::string value) {
    entries_.emplace_back(std::move(name), std::move(value));
}

void Headers::Set(std::string_view name, std::string value) {
    Remove(name);
    entries_.emplace_back(std::string(name), std::move(value));
}

void Headers::Remove(std::string_view name) {
    std::erase_if(entries_, [&](const Entry& e) { return core::IEquals(e.first, name); });
}

std::string_view Request::path() const {
    std::string_view t = target;
    return t.substr(0, t.find('?'));
}

std::string_view Request::query() const {
    std::string_view t = target;
    auto q = t.find('?');
    return q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
}

std::string_view Request::BearerToken() const {
    auto auth = headers.Get("authorization");
    if (core::IStartsWith(auth, "bearer ")) {
        return core::Trim(auth.substr(7));
    }
    return {};
}

Response Response::Json(int status, std::string body) {
    Response r;
    r.status = status;
    r.headers.Add("Content-Type", "application/json");
    r.body = std::move(body);
    return r;
}

Response Response::Text(int status, std::string body, std::string content_type) {
    Response r;
    r.status = status;
    r.headers.Add("Content-Type", std::move(content_type));
    r.body = std::move(body);
    return r;
}

std::string_view ReasonPhrase(int status) {
    switch (status) {
        case 100:
            return "Continue";
        case 101:
            return "Switching Protocols";
        case 200:
            return "OK";
        case 201:
            return "Created";
        case 202:
            return "Accepted";
        case 204:
            return "No Content";
        case 206:
            return "Partial Content";
        case 301:
            return "Moved Permanently";
        case 302:
            return "Found";
        case 304:
            return "Not Modified";
        case 400:
            return "Bad Request";
        case 401:
            return "Unauthorized";
        case 402:
            return "Payment Required";
        case 403:
            return "Forbidden";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 408:
            return "Request Timeout";
        case 409:
            return "Conflict";
        case 410:
            return "Gone";
        case 411:
            return "Length Required";
        case 413:
            return "Payload Too Large";
        case 415:
            return "Unsupported Media Type";
        case 416:
            return "Range Not Satisfiable";
        case 422:
            return "Unprocessable Entity";
        case 429:
            return "Too Many Requests";
        case 431:
            return "Request Header Fields Too Large";
        case 500:
            return "Internal Server Error";
        case 501:
            return "Not Implemented";
        case 502:
            return "Bad Gateway";
        case 503:
            return "Service Unavailable";
        case 504:
            return "Gateway Timeout";
        default:
            return "Unknown";
    }
}

}  // namespace conduit::net
