#include "http_client/http1.hpp"

#include "core/strings.hpp"

namespace conduit::http_client {

bool ParseHttpUrl(std::string_view url, ParsedUrl& out) {
    std::string_view rest;
    if (core::IStartsWith(url, "http://")) {
        out.tls = false;
        rest = url.substr(7);
    } else if (core::IStartsWith(url, "https://")) {
        out.tls = true;
        rest = url.substr(8);
    } else {
        return false;
    }
    size_t auth_end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, auth_end);
    std::string_view tail = auth_end == std::string_view::npos ? "" : rest.substr(auth_end);
    if (authority.empty() || authority.find('@') != std::string_view::npos) {
        return false;
    }
    std::string_view host;
    std::string_view port_text;
    if (authority.front() == '[') {
        size_t close = authority.find(']');
        if (close == std::string_view::npos) {
            return false;
        }
        host = authority.substr(1, close - 1);
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') {
                return false;
            }
            port_text = after.substr(1);
        }
    } else {
        size_t colon = authority.rfind(':');
        if (colon != std::string_view::npos) {
            host = authority.substr(0, colon);
            port_text = authority.substr(colon + 1);
        } else {
            host = authority;
        }
    }
    if (host.empty()) {
        return false;
    }
    uint16_t default_port = out.tls ? 443 : 80;
    uint16_t port = default_port;
    if (!port_text.empty()) {
        auto p = core::ParseInt(port_text);
        if (!p || *p <= 0 || *p > 65535) {
            return false;
        }
        port = static_cast<uint16_t>(*p);
    }
    size_t hash = tail.find('#');
    if (hash != std::string_view::npos) {
        tail = tail.substr(0, hash);
    }
    out.host = core::ToLower(host);
    out.port = port;
    out.target = tail.empty() || tail.front() == '?' ? "/" + std::string(tail) : std::string(tail);
    bool v6 = out.host.find(':') != std::string::npos;
    std::string bracketed = v6 ? "[" + out.host + "]" : out.host;
    out.host_header = port == default_port ? bracketed : bracketed + ":" + std::to_string(port);
    out.pool_key =
        std::string(out.tls ? "https://" : "http://") + bracketed + ":" + std::to_string(port);
    return true;
}

ResponseParser::Status ResponseParser::Fail(std::string message) {
    state_ = State::kError;
    error_ = std::move(message);
    return Status::kError;
}

bool ResponseParser::ParseStatusLine(std::string_view line) {
    // HTTP/1.1 200 OK
    if (line.size() < 12 || !core::IStartsWith(line, "HTTP/1.") || line[8] != ' ') {
        return false;
    }
    http10_ = line[7] == '0';
    auto code = core::ParseInt(line.substr(9, 3));
    if (!code || *code < 100 || *code > 999) {
        return false;
    }
    status_ = static_cast<int>(*code);
    return true;
}

void ResponseParser::ParseHeaderLine(std::string_view line) {
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
        return;  // tolerate junk lines rather than failing the response
    }
    std::string_view name = core::Trim(line.substr(0, colon));
    std::string_view value = core::Trim(line.substr(colon + 1));
    if (core::IEquals(name, "content-length")) {
        if (auto n = core::ParseInt(value); n && *n >= 0) {
            has_length_ = true;
            remaining_ = static_cast<uint64_t>(*n);
        }
    } else if (core::IEquals(name, "transfer-encoding")) {
        chunked_ = core::ToLower(value).find("chunked") != std::string::npos;
    } else if (core::IEquals(name, "connection")) {
        std::string v = core::ToLower(value);
        if (v.find("close") != std::string::npos) {
            keep_alive_ = false;
        } else if (v.find("keep-alive") != std::string::npos) {
            keep_alive_ = true;
        }
    }
    headers_.Add(std::string(name), std::string(value));
}

ResponseParser::Status ResponseParser::FinishHeaders(Sink& sink) {
    if (status_ < 200) {
        // 1xx interim response: discard and parse the next status line.
        headers_ = net::Headers();
        state_ = State::kStatusLine;
        has_length_ = chunked_ = false;
        remaining_ = 0;
        return Status::kNeedMore;
    }
    bool no_body = head_request_ || status_ == 204 || status_ == 304;
    sink.OnHeaders(status_, std::move(headers_));
    headers_ = net::Headers();
    if (no_body) {
        state_ = State::kDone;
    } else if (chunked_) {
        state_ = State::kChunkSize;
    } else if (has_length_) {
        state_ = remaining_ == 0 ? State::kDone : State::kBodyLength;
    } else {
        state_ = State::kBodyClose;
        keep_alive_ = false;
    }
    return state_ == State::kDone ? Status::kDone : Status::kNeedMore;
}

ResponseParser::Status ResponseParser::Feed(std::string_view data, size_t& consumed, Sink& sink) {
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
            case State::kStatusLine:
            case State::kHeaders:
            case State::kTrailers: {
                std::string_view line;
                size_t before = consumed;
                if (!take_line(line)) {
                    if (header_bytes_ + (data.size() - consumed) > max_header_bytes_) {
                        return Fail("response headers too large");
                    }
                    return Status::kNeedMore;
                }
                header_bytes_ += consumed - before;
                if (header_bytes_ > max_header_bytes_) {
                    return Fail("response headers too large");
                }
                if (state_ == State::kStatusLine) {
                    if (line.empty()) {
                        continue;  // tolerate a stray CRLF before the status line
                    }
                    if (!ParseStatusLine(line)) {
                        return Fail("malformed status line");
                    }
                    keep_alive_ = !http10_;
                    state_ = State::kHeaders;
                } else if (state_ == State::kHeaders) {
                    if (line.empty()) {
                        header_bytes_ = 0;
                        Status s = FinishHeaders(sink);
                        if (s == Status::kDone) {
                            return s;
                        }
                    } else {
                        ParseHeaderLine(line);
                    }
                } else if (line.empty()) {  // end of trailers
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
                if (!sink.OnBody(data.substr(consumed, n))) {
                    return Status::kPaused;
                }
                consumed += n;
                remaining_ -= n;
                if (remaining_ == 0) {
                    state_ = State::kDone;
                    return Status::kDone;
                }
                break;
            }
            case State::kBodyClose: {
                if (consumed == data.size()) {
                    return Status::kNeedMore;
                }
                if (!sink.OnBody(data.substr(consumed))) {
                    return Status::kPaused;
                }
                consumed = data.size();
                return Status::kNeedMore;
            }
            case State::kChunkSize: {
                std::string_view line;
                if (!take_line(line)) {
                    if (data.size() - consumed > 1024) {
                        return Fail("malformed chunk size");
                    }
                    return Status::kNeedMore;
                }
                std::string_view hex = line.substr(0, line.find(';'));
                hex = core::Trim(hex);
                if (hex.empty() || hex.size() > 15) {
                    return Fail("malformed chunk size");
                }
                uint64_t size = 0;
                for (char c : hex) {
                    int v = (c >= '0' && c <= '9')   ? c - '0'
                            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                            : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                                     : -1;
                    if (v < 0) {
                        return Fail("malformed chunk size");
                    }
                    size = size * 16 + static_cast<uint64_t>(v);
                }
                if (size == 0) {
                    state_ = State::kTrailers;
                } else {
                    remaining_ = size;
                    state_ = State::kChunkData;
                }
                break;
            }
            case State::kChunkData: {
                if (consumed == data.size()) {
                    return Status::kNeedMore;
                }
                size_t n =
                    static_cast<size_t>(std::min<uint64_t>(remaining_, data.size() - consumed));
                if (!sink.OnBody(data.substr(consumed, n))) {
                    return Status::kPaused;
                }
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
                    return Fail("missing CRLF after chunk");
                }
                std::string_view line;
                if (!take_line(line)) {
                    if (data.size() - consumed > 2) {
                        return Fail("missing CRLF after chunk");
                    }
                    return Status::kNeedMore;
                }
                if (!line.empty()) {
                    return Fail("missing CRLF after chunk");
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

ResponseParser::Status ResponseParser::OnEof(Sink& /*sink*/) {
    if (state_ == State::kBodyClose) {
        state_ = State::kDone;
        return Status::kDone;
    }
    if (state_ == State::kDone) {
        return Status::kDone;
    }
    return Fail(headers_done() ? "connection closed before the response body ended"
                               : "connection closed before a response");
}

}  // namespace conduit::http_client
