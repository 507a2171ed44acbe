#pragma once

// Wire pieces of the SignalR session mode, kept free of sockets so the self-test can check them:
// RFC 6455 client framing (masked frames out, unmasked frames in), a minimal HTTP/1.1 response
// head parser, a chunked-body decoder, an SSE event splitter, and the few facts the load
// generator needs from a JSON hub record (type, target, the send stamp in its text).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace conduit::loadgen::wire {

// --- WebSocket (RFC 6455) ---

enum class WsOpcode : uint8_t {
    kContinuation = 0x0,
    kText = 0x1,
    kBinary = 0x2,
    kClose = 0x8,
    kPing = 0x9,
    kPong = 0xA,
};

/// Appends one client frame (FIN set, masked with `mask`) carrying `payload` to `out`.
void AppendClientFrame(std::string& out, WsOpcode opcode, std::string_view payload, uint32_t mask);

/// One frame read from the server.
struct WsFrame {
    bool fin = false;
    uint8_t opcode = 0;
    std::string_view payload;  // points into the input (unmasked in place when masked)
};

enum class DecodeResult { kFrame, kNeedMore, kError };

/// Decodes the frame at the start of `data` (len bytes). Server frames must not be masked (a
/// masked one is still accepted and unmasked in place); control frames must be ≤ 125 bytes and
/// final; payloads over `max_payload` are an error. On kFrame, `*consumed` is the frame's size.
DecodeResult DecodeFrame(char* data,
                         size_t len,
                         size_t max_payload,
                         WsFrame* frame,
                         size_t* consumed,
                         std::string* error);

// --- HTTP/1.1 responses ---

/// The head of an HTTP response.
struct HttpHead {
    int status = 0;
    size_t head_bytes = 0;        // through the blank line
    int64_t content_length = -1;  // -1 = absent
    bool chunked = false;
    bool close = false;  // "Connection: close"
};

enum class HeadResult { kComplete, kNeedMore, kError };

/// Parses the response head at the start of `data`.
HeadResult ParseHead(std::string_view data, HttpHead* head, std::string* error);

/// Incremental decoder of a chunked body: Feed() appends the data bytes it finds to `out`.
class ChunkedDecoder {
public:
    enum class Result { kNeedMore, kDone, kError };
    /// Consumes all of `in` unless the body ends inside it (then `*used` < in.size()).
    Result Feed(std::string_view in, std::string& out, size_t* used);
    void Reset() { *this = ChunkedDecoder(); }

private:
    enum class State : uint8_t { kSize, kSizeExt, kSizeLf, kData, kDataCr, kDataLf, kTrailer };
    State state_ = State::kSize;
    uint64_t remaining_ = 0;
    bool last_ = false;
    bool saw_digit_ = false;
    size_t trailer_line_ = 0;  // bytes of the current trailer line
};

/// Takes complete SSE events off the front of `buffer` (a "\r\n\r\n" or "\n\n" ends one) and
/// appends the data of each (its "data: " lines joined by '\n') to `out`; comments are skipped.
/// Returns the number of events taken.
int TakeSseEvents(std::string& buffer, std::string& out);

// --- SignalR JSON hub records ---

inline constexpr char kRecordSeparator = '\x1e';

/// What the load generator reads from one JSON record (no full JSON parse: a hub record is
/// compact JSON written by the server).
struct RecordInfo {
    int type = -1;  // -1 = no "type" (the handshake response)
    std::string_view target;
    bool handshake_error = false;  // {"error":...} without a type
    int64_t stamp = -1;            // the digits after `stamp_prefix` in the record, -1 = none
};

/// Reads `record` (without its separator). `stamp_prefix` (e.g. "bench:") is searched for in the
/// whole record; the decimal digits right after it are the stamp.
RecordInfo InspectRecord(std::string_view record, std::string_view stamp_prefix);

/// The string value of `"key":"..."` in a compact JSON object (no unescaping; empty when absent).
std::string_view JsonStringField(std::string_view json, std::string_view key);

}  // namespace conduit::loadgen::wire
