#include "net/request_parser.hpp"

#include "core/strings.hpp"

#include <array>

namespace conduit::net {

namespace {

// RFC 9110 tchar, as a lookup table.
constexpr std::array<bool, 256> MakeTokenTable() {
    std::array<bool, 256> t{};
    for (int c = 'a'; c <= 'z'; ++c) t[static_cast<size_t>(c)] = true;
    for (int c = 'A'; c <= 'Z'; ++c) t[static_cast<size_t>(c)] = true;
    for (int c = '0'; c <= '9'; ++c) t[static_cast<size_t>(c)] = true;
    for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
    return t;
}
constexpr std::array<bool, 256> kTokenChars = MakeTokenTable();

bool IsTokenChar(char c) { return kTokenChars[static_cast<unsigned char>(c)]; }

bool IsToken(std::string_view s) {
    if (s.empty()) {
        return false;
    }
    for (char c : s) {
        if (!IsTokenChar(c)) {
            return false;
        }
    }
    return true;
}

bool ContainsToken(std::string_view list, std::string_view token) {
    size_t start = 0;
    while (start <= list.size()) {
        size_t end = list.find(',', start);
        if (end == std::string_view::npos) {
            end = list.size();
        }
        if (core::IEquals(core::Trim(list.substr(start, end - start)), token)) {
            return true;
        }
        start = end + 1;
    }
    return false;
}

int HexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

RequestParser::Status RequestParser::Fail(int status, std::string message) {
    state_ = State::kError;
    error_status_ = status;
    error_ = std::move(message);
    return Status::kError;
}

bool RequestParser::ParseRequestLine(std::string_view line) {
    size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) {
        return false;
    }
    size_t sp2 = line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
        return false;
    }
    std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = line.substr(sp2 + 1);
    if (!IsToken(method) || target.empty() || (target.front() != '/' && target != "*")) {
        return false;
    }
    for (char c : target) {
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
            return false;
        }
    }
    if (version == "HTTP/1.1") {
        http10_ = false;
    } else if (version == "HTTP/1.0") {
        http10_ = true;
    } else {
        return false;
    }
    req_.method = std::string(method);
    req_.target = std::string(target);
    keep_alive_ = !http10_;
    return true;
}

bool RequestParser::ParseHeaderLine(std::string_view line) {
    if (line.front() == ' ' || line.front() == '\t') {
        return false;  // obsolete line folding: rejected (RFC 9112 §5.2)
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
        return false;
    }
    std::string_view name = line.substr(0, colon);
    if (!IsToken(name)) {
        return false;
    }
    std::string_view value = core::Trim(line.substr(colon + 1));
    for (char c : value) {
        if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
            return false;
        }
    }
    // Only four names need interpreting; their lengths (14, 17, 10, 6) rule most headers out
    // before any comparison.
    size_t len = name.size();
    if (len != 14 && len != 17 && len != 10 && len != 6) {
        // nothing to interpret
    } else if (core::IEquals(name, "content-length")) {
        auto n = core::ParseInt(value);
        if (!n || *n < 0 || (has_length_ && static_cast<uint64_t>(*n) != content_length_)) {
            return false;
        }
        has_length_ = true;
        content_length_ = static_cast<uint64_t>(*n);
    } else if (core::IEquals(name, "transfer-encoding")) {
        if (!ContainsToken(value, "chunked")) {
            error_status_ = 501;
            return false;
        }
        chunked_ = true;
    } else if (core::IEquals(name, "connection")) {
        if (ContainsToken(value, "close")) {
            keep_alive_ = false;
        } else if (ContainsToken(value, "keep-alive")) {
            keep_alive_ = true;
        }
    } else if (core::IEquals(name, "expect")) {
        expect_continue_ = core::IEquals(value, "100-continue");
    }
    req_.headers.Add(std::string(name), std::string(value));
    return true;
}

RequestParser::Status RequestParser::FinishHeaders() {
    if (chunked_ && has_length_) {
        // Request smuggling vector (RFC 9112 §6.3): refuse rather than guess.
        return Fail(400, "Both Transfer-Encoding and Content-Length are set.");
    }
    if (has_length_ && content_length_ > max_body_bytes_) {
        return Fail(413, "Request body of " + std::to_string(content_length_) +
                             " bytes exceeds the limit of " + std::to_string(max_body_bytes_) +
                             " bytes.");
    }
    if (chunked_) {
        state_ = State::kChunkSize;
    } else if (has_length_ && content_length_ > 0) {
        remaining_ = content_length_;
        req_.body.reserve(static_cast<size_t>(content_length_) + 64);  // + simdjson padding
        state_ = State::kBodyLength;
    } else {
        state_ = State::kDone;
        return Status::kDone;
    }
    return Status::kNeedMore;
}

RequestParser::Status RequestParser::Feed(std::string_view data, size_t& consumed) {
    consumed = 0;
    auto take_line = [&](std::string_view& line) -> bool {
        size_t nl = data.find('\n', consumed);
        if (nl == std::string_view::npos) {
            return false;
        }
        line = data.substr(consumed, nl - consumed);
        if (!line.empty() && line.back() == '\r') {
            line.remove_suffix(1);
        }
        consumed = nl + 1;
        return true;
    };
    for (;;) {
        switch (state_) {
            case State::kRequestLine:
            case State::kHeaders:
            case State::kTrailers: {
                std::string_view line;
                size_t before = consumed;
                if (!take_line(line)) {
                    if (header_bytes_ + (data.size() - consumed) > max_header_bytes_) {
                        return Fail(431, "Request headers are too large.");
                    }
                    return Status::kNeedMore;
                }
                header_bytes_ += consumed - before;
                if (header_bytes_ > max_header_bytes_) {
                    return Fail(431, "Request headers are too large.");
                }
                if (state_ == State::kRequestLine) {
                    if (line.empty() && req_.method.empty()) {
                        continue;  // RFC 9112 §2.2: ignore CRLF before the request line
                    }
                    if (!ParseRequestLine(line)) {
                        return Fail(400, "Malformed HTTP request line.");
                    }
                    state_ = State::kHeaders;
                } else if (state_ == State::kHeaders) {
                    if (line.empty()) {
                        Status s = FinishHeaders();
                        if (s != Status::kNeedMore) {
                            return s;
                        }
                    } else if (!ParseHeaderLine(line)) {
                        return error_status_ == 501 ? Fail(501, "Unsupported Transfer-Encoding.")
                                                    : Fail(400, "Malformed HTTP header.");
                    }
                } else if (line.empty()) {
                    state_ = State::kDone;
                    return Status::kDone;
                }
                break;
            }
            case State::kBodyLength: {
                if (consumed == data.size()) {
                    return Status::kNeedMore;
                }
                size_t n =
                    static_cast<size_t>(std::min<uint64_t>(remaining_, data.size() - consumed));
                req_.body.append(data.substr(consumed, n));
                consumed += n;
                remaining_ -= n;
                if (remaining_ == 0) {
                    state_ = State::kDone;
                    return Status::kDone;
                }
                break;
            }
            case State::kChunkSize: {
                std::string_view line;
                if (!take_line(line)) {
                    if (data.size() - consumed > 1024) {
                        return Fail(400, "Malformed chunk size.");
                    }
                    return Status::kNeedMore;
                }
                std::string_view hex = core::Trim(line.substr(0, line.find(';')));
                if (hex.empty() || hex.size() > 15) {
                    return Fail(400, "Malformed chunk size.");
                }
                uint64_t size = 0;
                for (char c : hex) {
                    int v = HexDigit(c);
                    if (v < 0) {
                        return Fail(400, "Malformed chunk size.");
                    }
                    size = size * 16 + static_cast<uint64_t>(v);
                }
                if (size == 0) {
                    state_ = State::kTrailers;
                    break;
                }
                if (req_.body.size() + size > max_body_bytes_) {
                    return Fail(413, "Request body exceeds the limit of " +
                                         std::to_string(max_body_bytes_) + " bytes.");
                }
                remaining_ = size;
                state_ = State::kChunkData;
                break;
            }
            case State::kChunkData: {
                if (consumed == data.size()) {
                    return Status::kNeedMore;
                }
                size_t n =
                    static_cast<size_t>(std::min<uint64_t>(remaining_, data.size() - consumed));
                req_.body.append(data.substr(consumed, n));
                consumed += n;
                remaining_ -= n;
                if (remaining_ == 0) {
                    state_ = State::kChunkDataEnd;
                }
                break;
            }
            case State::kChunkDataEnd: {
                // Exactly CRLF (or LF) must follow the chunk data.
                if (consumed < data.size() && data[consumed] != '\r' && data[consumed] != '\n') {
                    return Fail(400, "Missing CRLF after a chunk.");
                }
                std::string_view line;
                if (!take_line(line)) {
                    if (data.size() - consumed > 2) {
                        return Fail(400, "Missing CRLF after a chunk.");
                    }
                    return Status::kNeedMore;
                }
                if (!line.empty()) {
                    return Fail(400, "Missing CRLF after a chunk.");
                }
                state_ = State::kChunkSize;
                break;
            }
            case State::kDone:
                return Status::kDone;
            case State::kError:
                return Status::kError;
        }
    }
}

}  // namespace conduit::net
