#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace conduit::loadgen {

/// Incremental HTTP/1.1 response parser for the load generator: status line, headers (names
/// compared case-insensitively), bodies framed by Content-Length, by chunked transfer coding
/// (trailers skipped) or by connection close. Body bytes are counted, never stored. It reports
/// when the first body byte went by (time to first byte of the body; for SSE that is the first
/// chunk's data) and the numeric value of one chosen header. 1xx interim responses are skipped.
/// One parser per connection; Reset() before each response. No allocation after the first few
/// responses (the header-line buffer keeps its capacity). Not thread-safe.
class ResponseParser {
public:
    enum class Result { kNeedMore, kComplete, kError };

    /// `record_header`: header whose numeric value to capture (ASCII lowercase; empty = none).
    explicit ResponseParser(std::string_view record_header = {});

    /// Prepares for a new response (keeps the line buffer's capacity).
    void Reset();

    /// Consumes bytes of `data`; `*used` gets how many (fewer than `size` only on kComplete,
    /// when the rest belongs to no response, or on kError).
    Result Feed(const char* data, size_t size, size_t* used);

    /// Ends a close-delimited body when the peer closes: kComplete if the response was framed by
    /// the close (or no response began), else kError.
    Result FinishOnClose();

    int status() const { return status_; }
    /// Whether the connection may carry another request after this response.
    bool keep_alive() const { return keep_alive_; }
    /// Whether the status line and headers were all received.
    bool headers_done() const { return state_ > State::kHeaders; }
    /// Whether at least one body byte has been consumed.
    bool body_started() const { return body_started_; }
    /// Whether any byte of this response has been consumed.
    bool started() const { return started_; }
    uint64_t body_bytes() const { return body_bytes_; }
    /// Whether the chosen header was present with a numeric value.
    bool has_recorded() const { return has_recorded_; }
    /// Its value (a decimal number, possibly fractional).
    double recorded() const { return recorded_; }
    /// Why the last kError happened.
    const char* error() const { return error_; }

private:
    enum class State {
        kStatusLine,
        kHeaders,
        kBodyLength,
        kBodyUntilClose,
        kChunkSize,
        kChunkData,
        kChunkDataEnd,
        kTrailers,
        kDone,
        kError,
    };

    /// Handles one complete line (without CR/LF) in the status-line / header / chunk-size /
    /// trailer states.
    bool OnLine(std::string_view line);
    bool OnStatusLine(std::string_view line);
    bool OnHeader(std::string_view line);
    bool OnHeadersEnd();
    bool OnChunkSize(std::string_view line);
    Result Fail(const char* why);

    std::string record_header_;
    std::string line_;  // a line split across Feed() calls
    State state_ = State::kStatusLine;
    int status_ = 0;
    bool http10_ = false;
    bool keep_alive_ = true;
    bool chunked_ = false;
    bool has_length_ = false;
    bool body_started_ = false;
    bool started_ = false;
    bool has_recorded_ = false;
    uint64_t content_length_ = 0;
    uint64_t remaining_ = 0;
    uint64_t body_bytes_ = 0;
    double recorded_ = 0.0;
    const char* error_ = "";
};

}  // namespace conduit::loadgen
