#pragma once

#include "loadgen/histogram.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <sys/socket.h>
#include <vector>

namespace conduit::loadgen {

/// What to send, how hard, and for how long (from the command line).
struct Options {
    std::string url;     // http://host:port/path?query
    std::string method;  // GET, POST, ...
    std::string body;
    std::vector<std::string> headers;  // "Name: value"
    /// Per-connection extra header: connection i (numbered across threads) also sends
    /// connection_headers[i % size()] (e.g. one API key per connection). Empty = none.
    std::vector<std::string> connection_headers;
    int connections = 10;
    int threads = 1;
    double duration_s = 10.0;
    double warmup_s = 0.0;
    /// Requests per second across all connections (open loop); 0 = closed loop.
    double rate = 0.0;
    int64_t timeout_ms = 5000;
    /// Response header whose numeric value (µs) is recorded; empty = none.
    std::string record_header;
};

/// The parts of an http:// URL the generator needs.
struct Target {
    std::string host;  // as written (brackets stripped for IPv6)
    std::string port;  // decimal
    std::string path;  // "/..." including the query
    std::string host_header;
};

/// Parses `http://host[:port][/path]`; false (with `*error`) otherwise (https is not supported).
bool ParseUrl(const std::string& url, Target* out, std::string* error);

/// Serialises the one request every connection sends (Host added unless given; Content-Length
/// when there is a body or the method is POST/PUT/PATCH; Content-Type application/json when there
/// is a body and no Content-Type header). `extra_header` ("Name: value", may be empty) is sent
/// after opts.headers.
std::string BuildRequest(const Options& opts,
                         const Target& target,
                         const std::string& extra_header = {});

/// Error kinds counted separately.
enum class ErrorKind { kConnect, kTimeout, kStatus, kParse, kIo, kCount };

/// Measurements of one worker thread, or of the whole run once merged. Latencies are in
/// nanoseconds, measured from the intended send time (= the actual send time in closed loop).
struct Stats {
    Histogram latency;   // intended send → last byte of a 2xx response
    Histogram ttfb;      // intended send → first body byte (first chunk's data when chunked), 2xx
    Histogram header;    // the --record-header value, converted to ns
    Histogram send_lag;  // open loop: intended → actual send (queueing inside the generator)
    std::array<uint64_t, static_cast<size_t>(ErrorKind::kCount)> errors{};
    std::array<uint64_t, 600> status{};  // responses by status code (in the window)
    uint64_t requests = 0;               // 2xx responses in the window
    uint64_t sent = 0;                   // requests written, warm-up included
    uint64_t connects = 0;               // connections opened
    uint64_t bytes_read = 0;

    /// Adds `other` into this.
    void Merge(const Stats& other);
};

/// Everything a run needs, resolved once and shared read-only by the workers.
struct Plan {
    Options opts;
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    std::string request;
    /// When opts.connection_headers is set: the request of connection i is
    /// connection_requests[i % size()] (else every connection sends `request`).
    std::vector<std::string> connection_requests;
    int64_t start_ns = 0;         // CLOCK_MONOTONIC: load starts (warm-up begins)
    int64_t window_begin_ns = 0;  // measurement window [begin, end) by intended send time
    int64_t window_end_ns = 0;
    int64_t drain_end_ns = 0;  // in-window requests still open then count as timeouts
};

/// CLOCK_MONOTONIC in nanoseconds.
int64_t NowNs();

/// Runs the load described by `plan` on opts.threads threads (blocking) and returns the merged
/// statistics.
Stats RunLoad(const Plan& plan);

}  // namespace conduit::loadgen
