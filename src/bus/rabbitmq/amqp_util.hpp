#pragma once

// Small helpers over librabbitmq 0.11 (internal to the RabbitMQ adapter; never include from a
// public header). Nothing here is thread-safe: a connection is used by one thread.

#include "core/error.hpp"

#include <amqp.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::bus::amqp {

/// Connection parameters.
struct ConnectParams {
    std::string host;
    int port = 5672;
    std::string user;
    std::string password;
    std::string vhost = "/";
    std::chrono::seconds heartbeat{10};
    std::chrono::milliseconds connect_timeout{5000};
    std::chrono::milliseconds rpc_timeout{30000};
};

/// A view of `s` as AMQP bytes (no copy; `s` must outlive the use).
inline amqp_bytes_t Bytes(std::string_view s) {
    amqp_bytes_t b;
    b.len = s.size();
    b.bytes = const_cast<char*>(s.data());
    return b;
}

/// A copy of `b`.
inline std::string String(amqp_bytes_t b) {
    return b.len == 0 ? std::string() : std::string(static_cast<const char*>(b.bytes), b.len);
}

/// Text of a failed RPC reply (library error, or the server's close code and text).
std::string ReplyText(const amqp_rpc_reply_t& reply);

/// The server's reply code when `reply` is a channel.close or connection.close, else 0.
int ServerCode(const amqp_rpc_reply_t& reply);

/// Builds an amqp_table_t; owns the strings and entries it points at.
class Table {
public:
    Table() = default;
    Table(const Table&) = delete;
    Table& operator=(const Table&) = delete;

    Table& Str(std::string_view key, std::string_view value);
    Table& Bool(std::string_view key, bool value);
    Table& Int(std::string_view key, int64_t value);
    /// The table (valid while this object lives and is not modified).
    amqp_table_t Get();

private:
    amqp_bytes_t Keep(std::string_view s);

    std::deque<std::string> strings_;
    std::vector<amqp_table_entry_t> entries_;
};

/// Integer field `key` of `table` (any integer kind), if present.
std::optional<int64_t> IntField(const amqp_table_t& table, std::string_view key);
/// String field `key` of `table` (UTF-8 or bytes), if present.
std::optional<std::string> StrField(const amqp_table_t& table, std::string_view key);

/// One AMQP connection (TCP, login done). Closes itself when destroyed.
class Connection {
public:
    Connection() = default;
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    /// Connects and logs in. Blocks up to about connect_timeout (plus the login round trips).
    core::Result<void> Open(const ConnectParams& params);
    /// Opens `channel`.
    core::Result<void> OpenChannel(amqp_channel_t channel);
    /// Closes the connection: politely (channel and connection close, bounded by the RPC
    /// timeout) when `graceful`, else just drops the socket. Idempotent.
    void Close(bool graceful, std::initializer_list<amqp_channel_t> channels = {});
    /// Shuts the socket down (both directions) without freeing anything: the next read fails.
    void Sever();

    bool is_open() const { return state_ != nullptr; }
    amqp_connection_state_t state() const { return state_; }
    int fd() const;

private:
    amqp_connection_state_t state_ = nullptr;
};

}  // namespace conduit::bus::amqp
