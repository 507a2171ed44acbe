#pragma once

#include "net/http_types.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace conduit::http_client {

/// An absolute http(s) URL split for a client connection.
struct ParsedUrl {
    bool tls = false;
    std::string host;  // without brackets for IPv6
    uint16_t port = 0;
    std::string target;       // path + query, "/" when empty
    std::string host_header;  // "host" or "host:port" (non-default port)
    std::string pool_key;     // "scheme://host:port"
};

/// Parses `http://host[:port]/path?query` or https. User info and fragments are rejected.
bool ParseHttpUrl(std::string_view url, ParsedUrl& out);

/// Incremental HTTP/1.1 response parser (status line, headers, then a Content-Length, chunked
/// or close-delimited body). Body bytes are handed out de-chunked. A consumer may refuse a body
/// chunk (backpressure); Feed() then stops before it, and the same bytes are offered again by the
/// next Feed() call with the unconsumed input. Plain C++, no I/O.
class ResponseParser {
public:
    enum class Status {
        kNeedMore,  // all input consumed, response not complete
        kPaused,    // the consumer refused a body chunk; re-feed the rest later
        kDone,      // response complete (bytes after it belong to the next response)
        kError,     // malformed response
    };

    struct Sink {
        /// Final (non-1xx) status and headers.
        virtual void OnHeaders(int status, net::Headers headers) = 0;
        /// A piece of the body. Return false to refuse it (pause).
        virtual bool OnBody(std::string_view data) = 0;

    protected:
        ~Sink() = default;
    };

    /// `head_request`: the response has no body whatever the headers say.
    explicit ResponseParser(bool head_request = false, size_t max_header_bytes = 64 * 1024)
        : head_request_(head_request), max_header_bytes_(max_header_bytes) {}

    /// Parses from `data`; `consumed` is set to the bytes used (the rest must be fed again).
    Status Feed(std::string_view data, size_t& consumed, Sink& sink);
    /// The peer closed the connection: completes a close-delimited body, errors otherwise.
    Status OnEof(Sink& sink);

    bool headers_done() const { return state_ > State::kHeaders; }
    /// True when the connection can carry another request after this response.
    bool keep_alive() const { return keep_alive_; }
    int status() const { return status_; }
    const std::string& error() const { return error_; }

private:
    enum class State {
        kStatusLine,
        kHeaders,
        kBodyLength,
        kBodyClose,
        kChunkSize,
        kChunkData,
        kChunkDataEnd,
        kTrailers,
        kDone,
        kError,
    };
    Status Fail(std::string message);
    bool ParseStatusLine(std::string_view line);
    void ParseHeaderLine(std::string_view line);
    Status FinishHeaders(Sink& sink);

    bool head_request_;
    size_t max_header_bytes_;
    State state_ = State::kStatusLine;
    int status_ = 0;
    bool http10_ = false;
    bool keep_alive_ = true;
    bool chunked_ = false;
    bool has_length_ = false;
    uint64_t remaining_ = 0;
    size_t header_bytes_ = 0;
    net::Headers headers_;
    std::string error_;
};

}  // namespace conduit::http_client
