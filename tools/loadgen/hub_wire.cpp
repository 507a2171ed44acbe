#include "loadgen/hub_wire.hpp"

#include <algorithm>
#include <cstring>

namespace conduit::loadgen::wire {

namespace {

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }

bool EqualsNoCase(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
        if (Lower(a[i]) != Lower(b[i])) {
            return false;
        }
    }
    return true;
}

bool ContainsNoCase(std::string_view hay, std::string_view needle) {
    if (needle.size() > hay.size()) {
        return false;
    }
    for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
        if (EqualsNoCase(hay.substr(i, needle.size()), needle)) {
            return true;
        }
    }
    return false;
}

std::string_view Trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
        s.remove_suffix(1);
    }
    return s;
}

int HexValue(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

// --- WebSocket ---

void AppendClientFrame(std::string& out, WsOpcode opcode, std::string_view payload, uint32_t mask) {
    out.push_back(static_cast<char>(0x80 | static_cast<uint8_t>(opcode)));
    const uint64_t n = payload.size();
    if (n < 126) {
        out.push_back(static_cast<char>(0x80 | n));
    } else if (n <= 0xFFFF) {
        out.push_back(static_cast<char>(0x80 | 126));
        out.push_back(static_cast<char>((n >> 8) & 0xFF));
        out.push_back(static_cast<char>(n & 0xFF));
    } else {
        out.push_back(static_cast<char>(0x80 | 127));
        for (int shift = 56; shift >= 0; shift -= 8) {
            out.push_back(static_cast<char>((n >> shift) & 0xFF));
        }
    }
    const uint8_t key[4] = {static_cast<uint8_t>(mask >> 24), static_cast<uint8_t>(mask >> 16),
                            static_cast<uint8_t>(mask >> 8), static_cast<uint8_t>(mask)};
    out.append(reinterpret_cast<const char*>(key), 4);
    const size_t base = out.size();
    out.append(payload);
    for (size_t i = 0; i < n; ++i) {
        out[base + i] = static_cast<char>(static_cast<uint8_t>(out[base + i]) ^ key[i & 3]);
    }
}

DecodeResult DecodeFrame(char* data,
                         size_t len,
                         size_t max_payload,
                         WsFrame* frame,
                         size_t* consumed,
                         std::string* error) {
    if (len < 2) {
        return DecodeResult::kNeedMore;
    }
    const auto b0 = static_cast<uint8_t>(data[0]);
    const auto b1 = static_cast<uint8_t>(data[1]);
    if ((b0 & 0x70) != 0) {
        *error = "reserved bits set (no extension was negotiated)";
        return DecodeResult::kError;
    }
    const uint8_t opcode = b0 & 0x0F;
    const bool fin = (b0 & 0x80) != 0;
    const bool masked = (b1 & 0x80) != 0;
    uint64_t n = b1 & 0x7F;
    size_t pos = 2;
    if (n == 126) {
        if (len < 4) return DecodeResult::kNeedMore;
        n = (static_cast<uint64_t>(static_cast<uint8_t>(data[2])) << 8) |
            static_cast<uint8_t>(data[3]);
        pos = 4;
    } else if (n == 127) {
        if (len < 10) return DecodeResult::kNeedMore;
        n = 0;
        for (int i = 0; i < 8; ++i) {
            n = (n << 8) | static_cast<uint8_t>(data[2 + i]);
        }
        pos = 10;
    }
    const bool control = (opcode & 0x8) != 0;
    if (control && (n > 125 || !fin)) {
        *error = "bad control frame";
        return DecodeResult::kError;
    }
    if (opcode != 0x0 && opcode != 0x1 && opcode != 0x2 && opcode != 0x8 && opcode != 0x9 &&
        opcode != 0xA) {
        *error = "unknown opcode " + std::to_string(opcode);
        return DecodeResult::kError;
    }
    if (n > max_payload) {
        *error = "frame of " + std::to_string(n) + " bytes is over the limit";
        return DecodeResult::kError;
    }
    uint8_t key[4] = {0, 0, 0, 0};
    if (masked) {
        if (len < pos + 4) return DecodeResult::kNeedMore;
        std::memcpy(key, data + pos, 4);
        pos += 4;
    }
    if (len - pos < n) {
        return DecodeResult::kNeedMore;
    }
    char* payload = data + pos;
    if (masked) {
        for (uint64_t i = 0; i < n; ++i) {
            payload[i] = static_cast<char>(static_cast<uint8_t>(payload[i]) ^ key[i & 3]);
        }
    }
    frame->fin = fin;
    frame->opcode = opcode;
    frame->payload = std::string_view(payload, static_cast<size_t>(n));
    *consumed = pos + static_cast<size_t>(n);
    return DecodeResult::kFrame;
}

// --- HTTP ---

HeadResult ParseHead(std::string_view data, HttpHead* head, std::string* error) {
    const size_t end = data.find("\r\n\r\n");
    if (end == std::string_view::npos) {
        if (data.size() > 64 * 1024) {
            *error = "response head over 64 KB";
            return HeadResult::kError;
        }
        return HeadResult::kNeedMore;
    }
    *head = HttpHead();
    head->head_bytes = end + 4;
    std::string_view rest = data.substr(0, end + 2);
    size_t eol = rest.find("\r\n");
    const std::string_view status_line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ') {
        *error = "bad status line";
        return HeadResult::kError;
    }
    int status = 0;
    for (size_t i = 9; i < 12; ++i) {
        if (status_line[i] < '0' || status_line[i] > '9') {
            *error = "bad status code";
            return HeadResult::kError;
        }
        status = status * 10 + (status_line[i] - '0');
    }
    head->status = status;
    head->close = status_line[7] == '0';  // HTTP/1.0 closes unless told otherwise
    while (!rest.empty()) {
        eol = rest.find("\r\n");
        const std::string_view line = rest.substr(0, eol);
        rest.remove_prefix(eol + 2);
        const size_t colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0) {
            *error = "bad header line";
            return HeadResult::kError;
        }
        const std::string_view name = line.substr(0, colon);
        const std::string_view value = Trim(line.substr(colon + 1));
        if (EqualsNoCase(name, "content-length")) {
            int64_t n = 0;
            if (value.empty() || value.size() > 15) {
                *error = "bad Content-Length";
                return HeadResult::kError;
            }
            for (char c : value) {
                if (c < '0' || c > '9') {
                    *error = "bad Content-Length";
                    return HeadResult::kError;
                }
                n = n * 10 + (c - '0');
            }
            head->content_length = n;
        } else if (EqualsNoCase(name, "transfer-encoding")) {
            head->chunked = ContainsNoCase(value, "chunked");
        } else if (EqualsNoCase(name, "connection")) {
            if (ContainsNoCase(value, "close")) {
                head->close = true;
            } else if (ContainsNoCase(value, "keep-alive")) {
                head->close = false;
            }
        }
    }
    return HeadResult::kComplete;
}

ChunkedDecoder::Result ChunkedDecoder::Feed(std::string_view in, std::string& out, size_t* used) {
    size_t i = 0;
    while (i < in.size()) {
        const char c = in[i];
        switch (state_) {
            case State::kSize: {
                const int h = HexValue(c);
                if (h >= 0) {
                    if (remaining_ > (UINT64_MAX >> 8)) {
                        *used = i;
                        return Result::kError;
                    }
                    remaining_ = remaining_ * 16 + static_cast<uint64_t>(h);
                    saw_digit_ = true;
                    ++i;
                } else if (!saw_digit_) {
                    *used = i;
                    return Result::kError;
                } else if (c == ';' || c == ' ' || c == '\t') {
                    state_ = State::kSizeExt;
                    ++i;
                } else if (c == '\r') {
                    state_ = State::kSizeLf;
                    ++i;
                } else {
                    *used = i;
                    return Result::kError;
                }
                break;
            }
            case State::kSizeExt:
                if (c == '\r') {
                    state_ = State::kSizeLf;
                }
                ++i;
                break;
            case State::kSizeLf:
                if (c != '\n') {
                    *used = i;
                    return Result::kError;
                }
                ++i;
                saw_digit_ = false;
                if (remaining_ == 0) {
                    last_ = true;
                    state_ = State::kTrailer;
                    trailer_line_ = 0;
                } else {
                    state_ = State::kData;
                }
                break;
            case State::kData: {
                const size_t take =
                    static_cast<size_t>(std::min<uint64_t>(remaining_, in.size() - i));
                out.append(in.data() + i, take);
                i += take;
                remaining_ -= take;
                if (remaining_ == 0) {
                    state_ = State::kDataCr;
                }
                break;
            }
            case State::kDataCr:
                if (c != '\r') {
                    *used = i;
                    return Result::kError;
                }
                state_ = State::kDataLf;
                ++i;
                break;
            case State::kDataLf:
                if (c != '\n') {
                    *used = i;
                    return Result::kError;
                }
                state_ = State::kSize;
                ++i;
                break;
            case State::kTrailer:
                ++i;
                if (c == '\n') {
                    if (trailer_line_ <= 1) {  // an empty line ("\r\n") ends the body
                        *used = i;
                        Reset();
                        return Result::kDone;
                    }
                    trailer_line_ = 0;
                } else {
                    ++trailer_line_;
                }
                break;
        }
    }
    *used = i;
    return Result::kNeedMore;
}

int TakeSseEvents(std::string& buffer, std::string& out) {
    int events = 0;
    size_t start = 0;
    for (;;) {
        size_t end = std::string::npos;
        size_t sep = 0;
        // An event ends at an empty line: "\r\n\r\n" or "\n\n".
        for (size_t i = start; i + 1 < buffer.size(); ++i) {
            if (buffer[i] == '\n' && buffer[i + 1] == '\n') {
                end = i;
                sep = 2;
                break;
            }
            if (buffer[i] == '\n' && buffer[i + 1] == '\r' && i + 2 < buffer.size() &&
                buffer[i + 2] == '\n') {
                end = i;
                sep = 3;
                break;
            }
        }
        if (end == std::string::npos) {
            break;
        }
        std::string_view block(buffer.data() + start, end + 1 - start);
        bool first_line = true;
        bool any = false;
        while (!block.empty()) {
            size_t eol = block.find('\n');
            std::string_view line = block.substr(0, eol);
            block.remove_prefix(eol == std::string_view::npos ? block.size() : eol + 1);
            if (!line.empty() && line.back() == '\r') {
                line.remove_suffix(1);
            }
            if (line.substr(0, 5) == "data:") {
                line.remove_prefix(5);
                if (!line.empty() && line.front() == ' ') {
                    line.remove_prefix(1);
                }
                if (!first_line) {
                    out.push_back('\n');
                }
                out.append(line);
                first_line = false;
                any = true;
            }
        }
        if (any) {
            ++events;
        }
        start = end + sep;
    }
    buffer.erase(0, start);
    return events;
}

// --- SignalR records ---

std::string_view JsonStringField(std::string_view json, std::string_view key) {
    std::string pattern = "\"";
    pattern.append(key);
    pattern += "\":";
    size_t pos = json.find(pattern);
    if (pos == std::string_view::npos) {
        return {};
    }
    pos += pattern.size();
    while (pos < json.size() && json[pos] == ' ') {
        ++pos;
    }
    if (pos >= json.size() || json[pos] != '"') {
        return {};
    }
    ++pos;
    size_t end = pos;
    while (end < json.size() && json[end] != '"') {
        end += json[end] == '\\' ? 2 : 1;
    }
    if (end > json.size()) {
        return {};
    }
    return json.substr(pos, end - pos);
}

RecordInfo InspectRecord(std::string_view record, std::string_view stamp_prefix) {
    RecordInfo info;
    size_t pos = record.find("\"type\":");
    if (pos != std::string_view::npos) {
        pos += 7;
        while (pos < record.size() && record[pos] == ' ') {
            ++pos;
        }
        int type = 0;
        bool digits = false;
        while (pos < record.size() && record[pos] >= '0' && record[pos] <= '9') {
            type = type * 10 + (record[pos] - '0');
            digits = true;
            ++pos;
        }
        info.type = digits ? type : -1;
    } else if (record.find("\"error\":") != std::string_view::npos) {
        info.handshake_error = true;
    }
    if (info.type == 1) {
        info.target = JsonStringField(record, "target");
    }
    if (!stamp_prefix.empty()) {
        pos = record.find(stamp_prefix);
        if (pos != std::string_view::npos) {
            pos += stamp_prefix.size();
            int64_t v = 0;
            bool digits = false;
            while (pos < record.size() && record[pos] >= '0' && record[pos] <= '9' &&
                   v < INT64_MAX / 10) {
                v = v * 10 + (record[pos] - '0');
                digits = true;
                ++pos;
            }
            info.stamp = digits ? v : -1;
        }
    }
    return info;
}

}  // namespace conduit::loadgen::wire
