#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace conduit::net::ws {

/// RFC 6455 frame opcodes.
enum class Opcode : uint8_t {
    kContinuation = 0x0,
    kText = 0x1,
    kBinary = 0x2,
    kClose = 0x8,
    kPing = 0x9,
    kPong = 0xA,
};

/// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key:
/// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")). Pure, thread-safe.
std::string AcceptKey(std::string_view key);

/// Appends the header of one unmasked (server → client) final frame carrying `length` bytes.
void AppendFrameHeader(std::string& out, Opcode opcode, uint64_t length);

/// Payload of a close frame: the code in network order, then the reason (cut to fit a control
/// frame's 125 bytes on a character boundary).
std::string ClosePayload(uint16_t code, std::string_view reason);

/// True when `code` may appear in a close frame on the wire (RFC 6455 §7.4).
bool IsValidCloseCode(uint16_t code);

/// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool IsValidUtf8(std::string_view s);

/// Incremental reader of client → server frames: checks framing (masking, opcodes, control frame
/// rules, fragmentation), unmasks, and reassembles fragmented messages, bounded by
/// `max_message_bytes`. Payload bytes are consumed as they arrive, so the caller only ever has to
/// keep back an incomplete frame header (at most 14 bytes). Pure; one instance per connection.
class FrameReader {
public:
    struct Event {
        enum class Kind { kNone, kMessage, kPing, kPong, kClose, kError };
        Kind kind = Kind::kNone;
        bool binary = false;
        /// Message, ping/pong payload, or close reason.
        std::string payload;
        /// kClose: the code received (1005 when the frame had none). kError: the close code to
        /// send (1002 protocol error, 1007 invalid UTF-8, 1009 message too big).
        uint16_t code = 0;
    };

    explicit FrameReader(size_t max_message_bytes) : max_message_bytes_(max_message_bytes) {}

    /// Consumes bytes of `data` until one event completes (returned in `event`) or `data` is used
    /// up. Returns the number of bytes consumed; 0 with kind kNone means "need more bytes" (the
    /// unconsumed bytes are an incomplete frame header: keep them and append). After a kError
    /// with code 1002 the reader consumes nothing more; after 1007 or 1009 it goes on reading
    /// frames but drops data (as after DropData()), so the client's close frame can be seen.
    size_t Feed(std::string_view data, Event& event);

    /// From now on data frames are read and dropped (after this side sent a close frame);
    /// control frames still produce events.
    void DropData() { drop_data_ = true; }
    /// True after a fatal error: the stream cannot be parsed any further.
    bool failed() const { return failed_; }

private:
    enum class Target { kMessage, kControl, kSkip };
    size_t Fail(uint16_t code, std::string reason, size_t consumed, Event& event);
    void FinishFrame(Event& event);

    size_t max_message_bytes_;
    bool failed_ = false;
    bool drop_data_ = false;
    bool in_header_ = true;
    bool fin_ = false;
    Opcode opcode_ = Opcode::kContinuation;
    uint64_t length_ = 0;
    uint64_t done_ = 0;
    unsigned char mask_[4] = {0, 0, 0, 0};
    Target target_ = Target::kSkip;
    bool in_message_ = false;  // a fragmented data message is being assembled
    bool message_binary_ = false;
    bool message_dropped_ = false;  // the message in progress is skipped (DropData)
    std::string message_;
    std::string control_;
};

}  // namespace conduit::net::ws
