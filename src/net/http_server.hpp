#pragma once

#include "core/error.hpp"
#include "net/exchange.hpp"
#include "net/runtime.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace conduit::net {

/// Server limits and timeouts (filled from config::ServerConfig by the composition root).
struct ServerOptions {
    std::string host = "0.0.0.0";
    uint16_t port = 5000;  // 0 = pick a free port (see HttpServer::port())
    int64_t max_body_bytes = 32 << 20;
    int64_t max_header_bytes = 64 << 10;
    std::chrono::milliseconds header_timeout{10000};  // first byte → end of headers
    std::chrono::milliseconds body_timeout{60000};
    std::chrono::milliseconds idle_timeout{75000};  // keep-alive wait for the next request
    std::chrono::milliseconds write_timeout{30000};
    /// Body for errors the server produces itself (400/408/413/431/503), e.g. the OpenAI
    /// error JSON. Receives the status and a message.
    std::function<Response(int status, std::string_view message)> error_response;
};

/// HTTP/1.1 server: one SO_REUSEPORT acceptor per shard; a connection stays on its shard.
/// Requests are read whole (bounded by max_body_bytes) and handed to `handler` on the shard's
/// thread as an Exchange. The header is Asio-free.
class HttpServer {
public:
    HttpServer(Runtime& runtime, ServerOptions options, Handler handler);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    /// Binds and starts accepting on every shard. Call before or after Runtime::Start().
    core::Result<uint16_t> Start();
    /// The bound port (after Start()).
    uint16_t port() const;
    /// Graceful stop: closes the acceptors, closes idle keep-alive connections, lets in-flight
    /// exchanges finish (their responses carry `Connection: close`), and calls `done` (on an
    /// arbitrary loop thread) once no connection remains or `grace` has passed; connections still
    /// open then are closed. Thread-safe.
    void Shutdown(std::chrono::milliseconds grace, std::function<void()> done);
    /// Open connections across all shards. Thread-safe.
    int64_t ActiveConnections() const;
    /// Exchanges currently being handled across all shards. Thread-safe.
    int64_t InFlight() const;

    struct Impl;  // defined in http_server.cpp

private:
    std::shared_ptr<Impl> impl_;
};

}  // namespace conduit::net
