#include "net/websocket_codec.hpp"

#include "core/crypto.hpp"
#include "core/strings.hpp"
#include "net/websocket.hpp"

#include <openssl/sha.h>

#include <algorithm>
#include <cstring>

namespace conduit::net {

namespace {

// True when the comma-separated header list `value` contains `token` (case-insensitive).
bool HasToken(std::string_view value, std::string_view token) {
    while (!value.empty()) {
        size_t comma = value.find(',');
        std::string_view piece = core::Trim(value.substr(0, comma));
        if (core::IEquals(piece, token)) {
            return true;
        }
        if (comma == std::string_view::npos) {
            break;
        }
        value.remove_prefix(comma + 1);
    }
    return false;
}

// The token may be split over repeated headers ("Connection: keep-alive" + "Connection: Upgrade").
bool AnyHeaderHasToken(const Headers& headers, std::string_view name, std::string_view token) {
    for (const auto& [k, v] : headers.entries()) {
        if (core::IEquals(k, name) && HasToken(v, token)) {
            return true;
        }
    }
    return false;
}

}  // namespace

SharedFrame MakeSharedFrame(std::string_view message, bool binary) {
    auto bytes = std::make_shared<std::string>();
    bytes->reserve(message.size() + 10);
    ws::AppendFrameHeader(*bytes, binary ? ws::Opcode::kBinary : ws::Opcode::kText, message.size());
    SharedFrame frame;
    frame.header = bytes->size();
    frame.binary = binary;
    bytes->append(message);
    frame.bytes = std::move(bytes);
    return frame;
}

bool IsWebSocketUpgrade(const Request& request) {
    if (request.method != "GET") {
        return false;
    }
    const Headers& h = request.headers;
    if (!AnyHeaderHasToken(h, "connection", "upgrade") ||
        !AnyHeaderHasToken(h, "upgrade", "websocket")) {
        return false;
    }
    if (core::Trim(h.Get("sec-websocket-version")) != "13") {
        return false;
    }
    // The key is base64 of 16 random bytes (RFC 6455 §4.1).
    std::string_view key = core::Trim(h.Get("sec-websocket-key"));
    std::string raw;
    return key.size() == 24 && core::Base64Decode(key, raw) && raw.size() == 16;
}

namespace ws {

std::string AcceptKey(std::string_view key) {
    static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    std::string input;
    input.reserve(key.size() + kGuid.size());
    input += key;
    input += kGuid;
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
    return core::Base64Encode(
        std::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

void AppendFrameHeader(std::string& out, Opcode opcode, uint64_t length) {
    out.push_back(static_cast<char>(0x80 | static_cast<uint8_t>(opcode)));
    if (length < 126) {
        out.push_back(static_cast<char>(length));
    } else if (length <= 0xFFFF) {
        out.push_back(static_cast<char>(126));
        out.push_back(static_cast<char>((length >> 8) & 0xFF));
        out.push_back(static_cast<char>(length & 0xFF));
    } else {
        out.push_back(static_cast<char>(127));
        for (int shift = 56; shift >= 0; shift -= 8) {
            out.push_back(static_cast<char>((length >> shift) & 0xFF));
        }
    }
}

std::string ClosePayload(uint16_t code, std::string_view reason) {
    // A control frame carries at most 125 bytes: 2 for the code, 123 for the reason.
    if (reason.size() > 123) {
        size_t cut = 123;
        while (cut > 0 && (static_cast<unsigned char>(reason[cut]) & 0xC0) == 0x80) {
            --cut;  // do not split a UTF-8 sequence
        }
        reason = reason.substr(0, cut);
    }
    std::string out;
    out.reserve(2 + reason.size());
    out.push_back(static_cast<char>(code >> 8));
    out.push_back(static_cast<char>(code & 0xFF));
    out += reason;
    return out;
}

bool IsValidCloseCode(uint16_t code) {
    if (code >= 3000 && code <= 4999) {
        return true;
    }
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011);
}

bool IsValidUtf8(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = p + s.size();
    while (p < end) {
        // Fast path: 8 ASCII bytes at a time.
        if (end - p >= 8) {
            uint64_t w;
            std::memcpy(&w, p, 8);
            if ((w & 0x8080808080808080ULL) == 0) {
                p += 8;
                continue;
            }
        }
        unsigned char c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        size_t n;
        uint32_t cp;
        uint32_t min;
        if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return false;
        }
        if (static_cast<size_t>(end - p) <= n) {
            return false;
        }
        for (size_t i = 1; i <= n; ++i) {
            if ((p[i] & 0xC0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        p += n + 1;
    }
    return true;
}

size_t FrameReader::Fail(uint16_t code, std::string reason, size_t consumed, Event& event) {
    failed_ = true;
    event.kind = Event::Kind::kError;
    event.code = code;
    event.payload = std::move(reason);
    return consumed;
}

size_t FrameReader::Feed(std::string_view data, Event& event) {
    event.kind = Event::Kind::kNone;
    size_t pos = 0;
    while (!failed_ && pos < data.size()) {
        if (in_header_) {
            const auto* b = reinterpret_cast<const unsigned char*>(data.data() + pos);
            size_t avail = data.size() - pos;
            if (avail < 2) {
                return pos;
            }
            size_t len7 = b[1] & 0x7F;
            size_t header = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
            if ((b[1] & 0x80) == 0) {
                return Fail(1002, "client frames must be masked", pos, event);
            }
            if (avail < header) {
                return pos;
            }
            if ((b[0] & 0x70) != 0) {
                return Fail(1002, "reserved bits set", pos, event);
            }
            fin_ = (b[0] & 0x80) != 0;
            uint8_t op = b[0] & 0x0F;
            uint64_t length = len7;
            size_t at = 2;
            if (len7 == 126) {
                length = (uint64_t{b[2]} << 8) | b[3];
                at = 4;
            } else if (len7 == 127) {
                length = 0;
                for (size_t i = 0; i < 8; ++i) {
                    length = (length << 8) | b[2 + i];
                }
                at = 10;
                if (length >> 63) {
                    return Fail(1002, "invalid frame length", pos, event);
                }
            }
            std::memcpy(mask_, b + at, 4);
            bool too_big = false;
            switch (op) {
                case 0x0:
                case 0x1:
                case 0x2: {
                    if (op == 0 && !in_message_) {
                        return Fail(1002, "continuation without a message", pos, event);
                    }
                    if (op != 0 && in_message_) {
                        return Fail(1002, "new message inside a fragmented one", pos, event);
                    }
                    if (op != 0) {
                        in_message_ = true;
                        message_binary_ = op == 2;
                        message_dropped_ = drop_data_;
                        message_.clear();
                    }
                    if (!message_dropped_ && !drop_data_ &&
                        length > max_message_bytes_ - message_.size()) {
                        // Not fatal: the rest of the message is skipped, so the client's answer
                        // to our close frame can still be read.
                        too_big = true;
                        drop_data_ = true;
                        message_.clear();
                    }
                    if (message_dropped_ || drop_data_) {
                        message_dropped_ = true;
                        target_ = Target::kSkip;
                    } else {
                        target_ = Target::kMessage;
                        if (op != 0) {
                            message_.reserve(length);  // later fragments grow geometrically
                        }
                    }
                    break;
                }
                case 0x8:
                case 0x9:
                case 0xA:
                    if (!fin_ || length > 125) {
                        return Fail(1002, "invalid control frame", pos, event);
                    }
                    target_ = Target::kControl;
                    control_.clear();
                    break;
                default:
                    return Fail(1002, "unknown opcode", pos, event);
            }
            opcode_ = static_cast<Opcode>(op);
            length_ = length;
            done_ = 0;
            in_header_ = false;
            pos += header;
            if (too_big) {
                event.kind = Event::Kind::kError;
                event.code = 1009;
                event.payload = "message too big";
                return pos;
            }
        }
        // Payload bytes of the current frame.
        size_t take = static_cast<size_t>(std::min<uint64_t>(length_ - done_, data.size() - pos));
        if (target_ != Target::kSkip && take > 0) {
            std::string& dst = target_ == Target::kMessage ? message_ : control_;
            size_t base = dst.size();
            dst.resize(base + take);
            const char* src = data.data() + pos;
            char* out = dst.data() + base;
            size_t phase = static_cast<size_t>(done_ & 3);
            for (size_t i = 0; i < take; ++i) {
                out[i] = static_cast<char>(src[i] ^ mask_[(phase + i) & 3]);
            }
        }
        pos += take;
        done_ += take;
        if (done_ == length_) {
            in_header_ = true;
            FinishFrame(event);
            if (event.kind != Event::Kind::kNone) {
                return pos;
            }
        }
    }
    return pos;
}

void FrameReader::FinishFrame(Event& event) {
    switch (opcode_) {
        case Opcode::kContinuation:
        case Opcode::kText:
        case Opcode::kBinary:
            if (!fin_) {
                return;
            }
            in_message_ = false;
            if (message_dropped_) {
                message_dropped_ = false;
                message_.clear();
                return;
            }
            if (!message_binary_ && !IsValidUtf8(message_)) {
                // Not fatal either: the framing is intact.
                drop_data_ = true;
                message_.clear();
                event.kind = Event::Kind::kError;
                event.code = 1007;
                event.payload = "invalid UTF-8 in a text message";
                return;
            }
            event.kind = Event::Kind::kMessage;
            event.binary = message_binary_;
            event.payload = std::move(message_);
            message_ = std::string();
            return;
        case Opcode::kPing:
            event.kind = Event::Kind::kPing;
            event.payload = std::move(control_);
            control_.clear();
            return;
        case Opcode::kPong:
            event.kind = Event::Kind::kPong;
            event.payload = std::move(control_);
            control_.clear();
            return;
        case Opcode::kClose: {
            if (control_.empty()) {
                event.kind = Event::Kind::kClose;
                event.code = 1005;
                event.payload.clear();
                return;
            }
            if (control_.size() == 1) {
                Fail(1002, "invalid close frame", 0, event);
                return;
            }
            auto code = static_cast<uint16_t>((static_cast<unsigned char>(control_[0]) << 8) |
                                              static_cast<unsigned char>(control_[1]));
            std::string_view reason(control_.data() + 2, control_.size() - 2);
            if (!IsValidCloseCode(code)) {
                Fail(1002, "invalid close code", 0, event);
                return;
            }
            if (!IsValidUtf8(reason)) {
                Fail(1007, "invalid UTF-8 in the close reason", 0, event);
                return;
            }
            event.kind = Event::Kind::kClose;
            event.code = code;
            event.payload = std::string(reason);
            control_.clear();
            return;
        }
    }
}

}  // namespace ws
}  // namespace conduit::net
