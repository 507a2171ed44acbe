#include "bus/rabbitmq/amqp_util.hpp"

#include <amqp_tcp_socket.h>

#include <string>
#include <sys/socket.h>
#include <sys/time.h>

namespace conduit::bus::amqp {
namespace {

timeval ToTimeval(std::chrono::milliseconds ms) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
    return tv;
}

const amqp_field_value_t* Find(const amqp_table_t& table, std::string_view key) {
    for (int i = 0; i < table.num_entries; ++i) {
        const amqp_table_entry_t& e = table.entries[i];
        if (std::string_view(static_cast<const char*>(e.key.bytes), e.key.len) == key) {
            return &e.value;
        }
    }
    return nullptr;
}

}  // namespace

std::string ReplyText(const amqp_rpc_reply_t& reply) {
    switch (reply.reply_type) {
        case AMQP_RESPONSE_NORMAL:
            return "ok";
        case AMQP_RESPONSE_NONE:
            return "missing RPC reply";
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            return amqp_error_string2(reply.library_error);
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
                const auto* m = static_cast<const amqp_connection_close_t*>(reply.reply.decoded);
                return "connection closed by server: " + std::to_string(m->reply_code) + " " +
                       String(m->reply_text);
            }
            if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
                const auto* m = static_cast<const amqp_channel_close_t*>(reply.reply.decoded);
                return "channel closed by server: " + std::to_string(m->reply_code) + " " +
                       String(m->reply_text);
            }
            return "unexpected server method " + std::to_string(reply.reply.id);
    }
    return "unknown RPC failure";
}

int ServerCode(const amqp_rpc_reply_t& reply) {
    if (reply.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION) {
        return 0;
    }
    if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        return static_cast<const amqp_connection_close_t*>(reply.reply.decoded)->reply_code;
    }
    if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        return static_cast<const amqp_channel_close_t*>(reply.reply.decoded)->reply_code;
    }
    return 0;
}

amqp_bytes_t Table::Keep(std::string_view s) {
    strings_.emplace_back(s);
    return Bytes(strings_.back());
}

Table& Table::Str(std::string_view key, std::string_view value) {
    amqp_table_entry_t e{};
    e.key = Keep(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = Keep(value);
    entries_.push_back(e);
    return *this;
}

Table& Table::Bool(std::string_view key, bool value) {
    amqp_table_entry_t e{};
    e.key = Keep(key);
    e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e.value.value.boolean = value ? 1 : 0;
    entries_.push_back(e);
    return *this;
}

Table& Table::Int(std::string_view key, int64_t value) {
    amqp_table_entry_t e{};
    e.key = Keep(key);
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = value;
    entries_.push_back(e);
    return *this;
}

amqp_table_t Table::Get() {
    amqp_table_t t;
    t.num_entries = static_cast<int>(entries_.size());
    t.entries = entries_.empty() ? nullptr : entries_.data();
    return t;
}

std::optional<int64_t> IntField(const amqp_table_t& table, std::string_view key) {
    const amqp_field_value_t* v = Find(table, key);
    if (v == nullptr) {
        return std::nullopt;
    }
    switch (v->kind) {
        case AMQP_FIELD_KIND_I8:
            return v->value.i8;
        case AMQP_FIELD_KIND_U8:
            return v->value.u8;
        case AMQP_FIELD_KIND_I16:
            return v->value.i16;
        case AMQP_FIELD_KIND_U16:
            return v->value.u16;
        case AMQP_FIELD_KIND_I32:
            return v->value.i32;
        case AMQP_FIELD_KIND_U32:
            return v->value.u32;
        case AMQP_FIELD_KIND_I64:
            return v->value.i64;
        case AMQP_FIELD_KIND_U64:
        case AMQP_FIELD_KIND_TIMESTAMP:
            return static_cast<int64_t>(v->value.u64);
        default:
            return std::nullopt;
    }
}

std::optional<std::string> StrField(const amqp_table_t& table, std::string_view key) {
    const amqp_field_value_t* v = Find(table, key);
    if (v == nullptr || (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES)) {
        return std::nullopt;
    }
    return String(v->value.bytes);
}

Connection::~Connection() { Close(false); }

core::Result<void> Connection::Open(const ConnectParams& params) {
    Close(false);
    state_ = amqp_new_connection();
    if (state_ == nullptr) {
        return core::Fail(core::ErrorCode::kUnavailable, "amqp: out of memory");
    }
    amqp_socket_t* socket = amqp_tcp_socket_new(state_);
    if (socket == nullptr) {
        Close(false);
        return core::Fail(core::ErrorCode::kUnavailable, "amqp: cannot create a socket");
    }
    timeval connect_tv = ToTimeval(params.connect_timeout);
    amqp_set_handshake_timeout(state_, &connect_tv);
    int rc = amqp_socket_open_noblock(socket, params.host.c_str(), params.port, &connect_tv);
    if (rc != AMQP_STATUS_OK) {
        Close(false);
        return core::Fail(core::ErrorCode::kUnavailable, "amqp: cannot connect to " + params.host +
                                                             ":" + std::to_string(params.port) +
                                                             ": " + amqp_error_string2(rc));
    }
    timeval rpc_tv = ToTimeval(params.rpc_timeout);
    amqp_set_rpc_timeout(state_, &rpc_tv);
    amqp_rpc_reply_t r = amqp_login(
        state_, params.vhost.c_str(), 0, 131072, static_cast<int>(params.heartbeat.count()),
        AMQP_SASL_METHOD_PLAIN, params.user.c_str(), params.password.c_str());
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        std::string text = ReplyText(r);
        Close(false);
        return core::Fail(core::ErrorCode::kUnavailable, "amqp: login failed: " + text);
    }
    return {};
}

core::Result<void> Connection::OpenChannel(amqp_channel_t channel) {
    if (amqp_channel_open(state_, channel) == nullptr) {
        return core::Fail(core::ErrorCode::kUnavailable,
                          "amqp: channel.open failed: " + ReplyText(amqp_get_rpc_reply(state_)));
    }
    return {};
}

void Connection::Close(bool graceful, std::initializer_list<amqp_channel_t> channels) {
    if (state_ == nullptr) {
        return;
    }
    if (graceful) {
        for (amqp_channel_t ch : channels) {
            (void)amqp_channel_close(state_, ch, AMQP_REPLY_SUCCESS);
        }
        (void)amqp_connection_close(state_, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(state_);
    state_ = nullptr;
}

void Connection::Sever() {
    int s = fd();
    if (s >= 0) {
        ::shutdown(s, SHUT_RDWR);
    }
}

int Connection::fd() const { return state_ == nullptr ? -1 : amqp_get_sockfd(state_); }

}  // namespace conduit::bus::amqp
