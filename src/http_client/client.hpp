#pragma once

#include "core/loop.hpp"
#include "net/http_types.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace conduit::http_client {

/// Per-request timeouts. Zero disables a timeout.
struct Timeouts {
    std::chrono::milliseconds connect{5000};
    std::chrono::milliseconds first_byte{120000};  // request sent → response headers
    std::chrono::milliseconds idle{120000};        // between body chunks (not while paused)
    std::chrono::milliseconds total{600000};
};

/// An outgoing HTTP request.
struct Request {
    std::string method = "POST";
    std::string url;
    net::Headers headers;
    std::string body;
    Timeouts timeouts;
};

/// Why a call ended without a complete response.
enum class Failure {
    kNone,       // a complete response was received (any status)
    kConnect,    // DNS, refused, unreachable, TLS handshake
    kTimeout,    // connect, first-byte, idle or total timeout
    kCancelled,  // Cancel() was called
    kOther,      // protocol error, connection reset mid-response, write callback abort, ...
};

/// Outcome of a call, with timing for overhead accounting (steady clock ns).
struct Outcome {
    Failure failure = Failure::kNone;
    std::string message;        // curl's error text on failure
    int status = 0;             // 0 if no response headers were received
    int64_t started_ns = 0;     // when the call was started
    int64_t sent_ns = 0;        // when the request was completely written (0 if unknown)
    int64_t first_byte_ns = 0;  // when the first response byte arrived (0 if never)
    int64_t headers_ns = 0;     // when response headers completed (0 if never)
    int64_t last_read_ns = 0;   // when the last response bytes arrived (0 if never)
    int64_t finished_ns = 0;
    bool reused_connection = false;
};

/// Callbacks for one call, invoked on the client's loop thread.
struct Callbacks {
    /// Response status and headers (final response only; 1xx are skipped).
    std::function<void(int status, net::Headers headers)> on_headers;
    /// A body chunk. Return false to refuse it and pause the transfer: the same bytes are
    /// delivered again after Call::Resume().
    std::function<bool(std::string_view chunk)> on_data;
    /// Called exactly once at the end (never after Cancel()).
    std::function<void(const Outcome&)> on_done;
};

/// Handle to an in-flight call. Loop thread only.
class Call {
public:
    virtual ~Call() = default;
    /// Aborts the transfer and releases its connection; no callback runs afterwards.
    virtual void Cancel() = 0;
    /// Resumes a transfer paused by on_data returning false.
    virtual void Resume() = 0;
    /// Timestamps known so far (started, sent, first byte, headers, last read).
    virtual Outcome Timing() const = 0;
};
using CallPtr = std::shared_ptr<Call>;

/// Connection-pool limits for one client (one client per loop).
struct PoolOptions {
    int max_connections_per_host = 256;
    int max_total_connections = 1024;
    int max_cached_connections = 256;  // idle keep-alive connections kept open
};

/// An HTTP client bound to one event loop (libcurl multi, keep-alive pool, HTTP/2 when the
/// server offers it over TLS). Loop thread only. The header is Asio-free.
class Client {
public:
    virtual ~Client() = default;
    /// Starts a call. Callbacks run later on this loop, never inside Start().
    virtual CallPtr Start(Request request, Callbacks callbacks) = 0;
    /// Calls in flight.
    virtual size_t Active() const = 0;
};

/// Creates a libcurl-multi client on `loop`, which must be a loop of net::Runtime. HTTP/2 over
/// TLS, proxies from the environment, every libcurl feature.
std::unique_ptr<Client> MakeCurlClient(core::Loop& loop, PoolOptions options);
/// Creates the native HTTP/1.1 client on `loop`: keep-alive pool per host, TLS (OpenSSL, SNI,
/// host name verification), no proxy support. Several times cheaper per request than libcurl.
std::unique_ptr<Client> MakeNativeClient(core::Loop& loop, PoolOptions options);

/// Which implementation carries upstream calls.
enum class ClientKind {
    kAuto,    // native, except for URLs a proxy environment variable applies to (libcurl)
    kNative,  // always native (proxy variables ignored)
    kCurl,    // always libcurl
};
/// Parses "auto" | "native" | "curl".
bool ParseClientKind(std::string_view text, ClientKind& out);
/// The upstream client for a loop, per `kind`.
std::unique_ptr<Client> MakeClient(core::Loop& loop, PoolOptions options, ClientKind kind);

}  // namespace conduit::http_client
