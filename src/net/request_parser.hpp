#pragma once

#include "net/http_types.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace conduit::net {

/// Incremental HTTP/1.x request parser: request line, headers, then a Content-Length or chunked
/// body (de-chunked into Request::body). Enforces header and body limits. Plain C++, no I/O.
class RequestParser {
public:
    enum class Status {
        kNeedMore,  // all input consumed; feed more
        kDone,      // a complete request; bytes after it belong to the next one
        kError,     // error_status() and error() say what to answer
    };

    RequestParser(size_t max_header_bytes, uint64_t max_body_bytes)
        : max_header_bytes_(max_header_bytes), max_body_bytes_(max_body_bytes) {}

    /// Parses from `data`; `consumed` is set to the bytes used. The request being built is
    /// request(); move it out once Status::kDone is returned.
    Status Feed(std::string_view data, size_t& consumed);

    Request& request() { return req_; }
    /// True once the header section is complete.
    bool headers_done() const { return state_ > State::kHeaders; }
    /// True when the request expects "100 Continue" and its body has not started.
    bool expects_continue() const { return expect_continue_ && state_ != State::kDone; }
    /// The client asked to keep the connection open after the response.
    bool keep_alive() const { return keep_alive_; }
    /// Declared Content-Length (when present).
    bool has_content_length() const { return has_length_; }
    uint64_t content_length() const { return content_length_; }
    /// HTTP status to answer with when Feed() returned kError (400, 413, 431, 501, 505).
    int error_status() const { return error_status_; }
    const std::string& error() const { return error_; }

private:
    enum class State {
        kRequestLine,
        kHeaders,
        kBodyLength,
        kChunkSize,
        kChunkData,
        kChunkDataEnd,
        kTrailers,
        kDone,
        kError,
    };
    Status Fail(int status, std::string message);
    Status FinishHeaders();
    bool ParseRequestLine(std::string_view line);
    bool ParseHeaderLine(std::string_view line);

    size_t max_header_bytes_;
    uint64_t max_body_bytes_;
    State state_ = State::kRequestLine;
    Request req_;
    size_t header_bytes_ = 0;
    bool http10_ = false;
    bool keep_alive_ = true;
    bool expect_continue_ = false;
    bool chunked_ = false;
    bool has_length_ = false;
    uint64_t content_length_ = 0;
    uint64_t remaining_ = 0;
    int error_status_ = 400;
    std::string error_;
};

}  // namespace conduit::net
