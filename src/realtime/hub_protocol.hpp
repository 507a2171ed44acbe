#pragma once

#include <boost/json/value.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

/// The SignalR JSON hub protocol (specs/signalr-protocol.md §3): record framing, the handshake,
/// and the hub messages. Plain C++ over string_view, no I/O. Pure functions, any thread.
namespace conduit::realtime {

/// Ends every JSON record (0x1E).
inline constexpr char kRecordSeparator = '\x1e';

/// Hub message types (§3.3).
enum class MessageType : int {
    kInvocation = 1,
    kStreamItem = 2,
    kCompletion = 3,
    kStreamInvocation = 4,
    kCancelInvocation = 5,
    kPing = 6,
    kClose = 7,
    kAck = 8,
    kSequence = 9,
};

/// True for the message types numbered by stateful reconnect (1–5, §4.4).
bool IsTrackable(MessageType type);

/// Splits a byte stream into records ending in 0x1E, keeping a partial record until the rest
/// arrives. Not thread-safe (one per connection).
class FrameReader {
public:
    /// `max_record_bytes`: a record (without its separator) longer than this is an error.
    explicit FrameReader(size_t max_record_bytes) : max_(max_record_bytes) {}
    /// Appends `data` and moves every complete record (without separator) to `records`.
    /// Returns false when a record exceeds the limit (the reader is then unusable).
    bool Feed(std::string_view data, std::vector<std::string>& records);
    /// Bytes of an incomplete record held back.
    size_t pending() const { return buffer_.size(); }

private:
    size_t max_;
    std::string buffer_;
};

/// A parsed handshake request `{"protocol":"json","version":1}`.
struct HandshakeRequest {
    std::string protocol;
    int64_t version = 0;
};

/// Parses a handshake record (without separator). On failure returns nullopt and sets `error`
/// to a text for the handshake error response.
std::optional<HandshakeRequest> ParseHandshake(std::string_view record, std::string& error);

/// Checks a parsed handshake against what the server supports (protocol "json", version 1 or 2;
/// version 2 only when `allow_version_2`). Returns the error text of §3.1, or empty when fine.
std::string ValidateHandshake(const HandshakeRequest& request, bool allow_version_2);

/// `{}` + RS: the successful handshake response.
std::string HandshakeResponse();
/// `{"error":"..."}` + RS: the failed handshake response.
std::string HandshakeErrorResponse(std::string_view error);

/// One hub message as received. Payload values (arguments, item, result) are kept as parsed
/// JSON, unbound, so the hub methods decode them.
struct HubMessage {
    MessageType type = MessageType::kPing;
    std::optional<std::string> invocation_id;  // absent on fire-and-forget invocations
    std::string target;
    boost::json::array arguments;
    std::vector<std::string> stream_ids;
    boost::json::value item;                   // StreamItem
    std::optional<boost::json::value> result;  // Completion (absent = void)
    std::optional<std::string> error;          // Completion, Close
    bool allow_reconnect = false;              // Close
    int64_t sequence_id = 0;                   // Ack, Sequence
};

/// Result of parsing one record.
struct ParseResult {
    enum class Status {
        kOk,           // `message` is filled
        kUnknownType,  // a well-formed object with an unknown `type`: ignore it
        kError,        // malformed: close the connection with `error`
    };
    Status status = Status::kError;
    HubMessage message;
    std::string error;
};

/// Parses one JSON record (without separator). Field order is free; unknown fields and
/// `headers` are ignored. Never throws (beyond std::bad_alloc).
ParseResult ParseMessage(std::string_view record);

// Serializers. Each appends exactly one record, separator included, with the field names and
// order of the captures (§3.4). `*_json` parameters are JSON text already serialized (compact),
// so a message can be serialized once and fanned out.

/// `{"type":1,["invocationId":id,]"target":t,"arguments":[..][,"streamIds":[..]]}`.
void WriteInvocation(std::string& out,
                     std::optional<std::string_view> invocation_id,
                     std::string_view target,
                     std::string_view arguments_json,
                     const std::vector<std::string>& stream_ids = {});
/// `{"type":2,"invocationId":id,"item":item}`.
void WriteStreamItem(std::string& out, std::string_view invocation_id, std::string_view item_json);
/// `{"type":3,"invocationId":id}` plus `"result":r` or `"error":e` when given (never both:
/// an error wins).
void WriteCompletion(std::string& out,
                     std::string_view invocation_id,
                     std::optional<std::string_view> result_json,
                     std::optional<std::string_view> error);
/// `{"type":4,"invocationId":id,"target":t,"arguments":[..]}` (for clients and tests).
void WriteStreamInvocation(std::string& out,
                           std::string_view invocation_id,
                           std::string_view target,
                           std::string_view arguments_json);
/// `{"type":5,"invocationId":id}`.
void WriteCancelInvocation(std::string& out, std::string_view invocation_id);
/// `{"type":6}`.
void WritePing(std::string& out);
/// `{"type":7}`, with `"error"` when non-empty and `"allowReconnect":true` when set.
void WriteClose(std::string& out, std::optional<std::string_view> error, bool allow_reconnect);
/// `{"type":8,"sequenceId":n}`.
void WriteAck(std::string& out, int64_t sequence_id);
/// `{"type":9,"sequenceId":n}`.
void WriteSequence(std::string& out, int64_t sequence_id);

/// Compact JSON text of a value (for arguments and results built as boost::json values).
std::string ToJson(const boost::json::value& value);

}  // namespace conduit::realtime
