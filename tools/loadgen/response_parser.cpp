#include "loadgen/response_parser.hpp"

#include <algorithm>
#include <cstring>

namespace conduit::loadgen {

namespace {

/// Longest status, header, chunk-size or trailer line accepted.
constexpr size_t kMaxLine = 64 * 1024;

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }

/// `a` equals the lowercase `lower` ignoring ASCII case.
bool IEquals(std::string_view a, std::string_view lower) {
    if (a.size() != lower.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
        if (Lower(a[i]) != lower[i]) {
            return false;
        }
    }
    return true;
}

/// `s` contains the lowercase `lower` as a comma-separated token, ignoring ASCII case.
bool HasToken(std::string_view s, std::string_view lower) {
    while (!s.empty()) {
        size_t comma = s.find(',');
        std::string_view token = s.substr(0, comma);
        while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) {
            token.remove_prefix(1);
        }
        while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) {
            token.remove_suffix(1);
        }
        if (IEquals(token, lower)) {
            return true;
        }
        if (comma == std::string_view::npos) {
            break;
        }
        s.remove_prefix(comma + 1);
    }
    return false;
}

std::string_view TrimSpaces(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
        s.remove_suffix(1);
    }
    return s;
}

/// Parses an unsigned decimal integer occupying all of `s`.
bool ParseU64(std::string_view s, uint64_t* out) {
    if (s.empty() || s.size() > 19) {
        return false;
    }
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    *out = v;
    return true;
}

/// Parses a non-negative decimal number ("123", "12.5") occupying all of `s`.
bool ParseDecimal(std::string_view s, double* out) {
    if (s.empty()) {
        return false;
    }
    double v = 0.0;
    double scale = 0.0;  // 0 while before the point
    bool digits = false;
    for (char c : s) {
        if (c >= '0' && c <= '9') {
            digits = true;
            if (scale == 0.0) {
                v = v * 10.0 + (c - '0');
            } else {
                v += (c - '0') * scale;
                scale /= 10.0;
            }
        } else if (c == '.' && scale == 0.0) {
            scale = 0.1;
        } else {
            return false;
        }
    }
    *out = v;
    return digits;
}

}  // namespace

ResponseParser::ResponseParser(std::string_view record_header) : record_header_(record_header) {
    line_.reserve(512);
}

void ResponseParser::Reset() {
    line_.clear();
    state_ = State::kStatusLine;
    status_ = 0;
    http10_ = false;
    keep_alive_ = true;
    chunked_ = false;
    has_length_ = false;
    body_started_ = false;
    started_ = false;
    has_recorded_ = false;
    content_length_ = 0;
    remaining_ = 0;
    body_bytes_ = 0;
    recorded_ = 0.0;
    error_ = "";
}

ResponseParser::Result ResponseParser::Fail(const char* why) {
    state_ = State::kError;
    error_ = why;
    return Result::kError;
}

ResponseParser::Result ResponseParser::Feed(const char* data, size_t size, size_t* used) {
    size_t at = 0;
    if (size > 0) {
        started_ = true;
    }
    while (at < size) {
        switch (state_) {
            case State::kStatusLine:
            case State::kHeaders:
            case State::kChunkSize:
            case State::kTrailers: {
                const char* begin = data + at;
                const auto* nl = static_cast<const char*>(std::memchr(begin, '\n', size - at));
                if (nl == nullptr) {
                    if (line_.size() + (size - at) > kMaxLine) {
                        *used = size;
                        return Fail("line too long");
                    }
                    line_.append(begin, size - at);
                    at = size;
                    break;
                }
                std::string_view line;
                if (line_.empty()) {
                    line = std::string_view(begin, static_cast<size_t>(nl - begin));
                } else {
                    if (line_.size() + static_cast<size_t>(nl - begin) > kMaxLine) {
                        *used = size;
                        return Fail("line too long");
                    }
                    line_.append(begin, static_cast<size_t>(nl - begin));
                    line = line_;
                }
                if (!line.empty() && line.back() == '\r') {
                    line.remove_suffix(1);
                }
                at = static_cast<size_t>(nl - data) + 1;
                const bool ok = OnLine(line);
                line_.clear();
                if (!ok) {
                    *used = at;
                    return Result::kError;
                }
                break;
            }
            case State::kBodyLength:
            case State::kChunkData: {
                const uint64_t n = std::min<uint64_t>(remaining_, size - at);
                if (n > 0) {
                    body_started_ = true;
                }
                at += static_cast<size_t>(n);
                remaining_ -= n;
                body_bytes_ += n;
                if (remaining_ == 0) {
                    state_ = state_ == State::kBodyLength ? State::kDone : State::kChunkDataEnd;
                }
                break;
            }
            case State::kChunkDataEnd: {
                // CRLF after chunk data (a bare LF is tolerated).
                const char c = data[at++];
                if (c == '\n') {
                    state_ = State::kChunkSize;
                } else if (c != '\r') {
                    *used = at;
                    return Fail("missing CRLF after chunk data");
                }
                break;
            }
            case State::kBodyUntilClose: {
                body_started_ = true;
                body_bytes_ += size - at;
                at = size;
                break;
            }
            case State::kDone:
                *used = at;
                return Result::kComplete;
            case State::kError:
                *used = at;
                return Result::kError;
        }
    }
    *used = at;
    if (state_ == State::kDone) {
        return Result::kComplete;
    }
    if (state_ == State::kError) {
        return Result::kError;
    }
    return Result::kNeedMore;
}

ResponseParser::Result ResponseParser::FinishOnClose() {
    if (state_ == State::kBodyUntilClose) {
        state_ = State::kDone;
        keep_alive_ = false;
        return Result::kComplete;
    }
    if (state_ == State::kDone) {
        return Result::kComplete;
    }
    return Fail(started_ ? "connection closed mid-response" : "connection closed");
}

bool ResponseParser::OnLine(std::string_view line) {
    switch (state_) {
        case State::kStatusLine:
            return OnStatusLine(line);
        case State::kHeaders:
            if (line.empty()) {
                return OnHeadersEnd();
            }
            return OnHeader(line);
        case State::kChunkSize:
            return OnChunkSize(line);
        case State::kTrailers:
            if (line.empty()) {
                state_ = State::kDone;
            }
            return true;
        default:
            Fail("unexpected line");
            return false;
    }
}

bool ResponseParser::OnStatusLine(std::string_view line) {
    // "HTTP/1.1 200 OK"
    if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || line[8] != ' ') {
        Fail("bad status line");
        return false;
    }
    http10_ = line[7] == '0';
    keep_alive_ = !http10_;
    const char a = line[9];
    const char b = line[10];
    const char c = line[11];
    if (a < '1' || a > '5' || b < '0' || b > '9' || c < '0' || c > '9') {
        Fail("bad status code");
        return false;
    }
    status_ = (a - '0') * 100 + (b - '0') * 10 + (c - '0');
    state_ = State::kHeaders;
    return true;
}

bool ResponseParser::OnHeader(std::string_view line) {
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
        Fail("bad header line");
        return false;
    }
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = TrimSpaces(line.substr(colon + 1));
    // Cheap dispatch on length before comparing names.
    switch (name.size()) {
        case 14:  // content-length
            if (IEquals(name, "content-length")) {
                uint64_t n = 0;
                if (!ParseU64(value, &n) || (has_length_ && n != content_length_)) {
                    Fail("bad content-length");
                    return false;
                }
                has_length_ = true;
                content_length_ = n;
            }
            break;
        case 17:  // transfer-encoding
            if (IEquals(name, "transfer-encoding")) {
                chunked_ = HasToken(value, "chunked");
            }
            break;
        case 10:  // connection
            if (IEquals(name, "connection")) {
                if (HasToken(value, "close")) {
                    keep_alive_ = false;
                } else if (HasToken(value, "keep-alive")) {
                    keep_alive_ = true;
                }
            }
            break;
        default:
            break;
    }
    if (!record_header_.empty() && IEquals(name, record_header_)) {
        double v = 0.0;
        if (ParseDecimal(value, &v)) {
            has_recorded_ = true;
            recorded_ = v;
        }
    }
    return true;
}

bool ResponseParser::OnHeadersEnd() {
    if (status_ < 200) {
        // Interim response (100 Continue, 103 Early Hints): the real one follows.
        state_ = State::kStatusLine;
        status_ = 0;
        has_length_ = false;
        chunked_ = false;
        return true;
    }
    if (status_ == 204 || status_ == 304) {
        state_ = State::kDone;
    } else if (chunked_) {
        state_ = State::kChunkSize;
    } else if (has_length_) {
        remaining_ = content_length_;
        state_ = content_length_ == 0 ? State::kDone : State::kBodyLength;
    } else {
        state_ = State::kBodyUntilClose;
        keep_alive_ = false;
    }
    return true;
}

bool ResponseParser::OnChunkSize(std::string_view line) {
    // "1a3f[;ext=val]"
    uint64_t n = 0;
    size_t digits = 0;
    for (char c : line) {
        int d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        } else if (c == ';' || c == ' ' || c == '\t') {
            break;
        } else {
            Fail("bad chunk size");
            return false;
        }
        if (++digits > 15) {
            Fail("chunk size too large");
            return false;
        }
        n = n * 16 + static_cast<uint64_t>(d);
    }
    if (digits == 0) {
        Fail("bad chunk size");
        return false;
    }
    if (n == 0) {
        state_ = State::kTrailers;
    } else {
        remaining_ = n;
        state_ = State::kChunkData;
    }
    return true;
}

}  // namespace conduit::loadgen
