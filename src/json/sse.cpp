#include "json/sse.hpp"

#include "json/simd_parser.hpp"

#include <cstring>
#include <string>
#include <string_view>

namespace conduit::json {

namespace {

namespace od = simdjson::ondemand;

constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

/// Index of the first '\n' or '\r' in text[from, ...), or text.size(). Two vectorised memchr
/// passes, the second bounded by the first, so scanning stays linear.
size_t FindLineBreak(std::string_view text, size_t from) {
    const size_t n = text.size();
    if (from >= n) {
        return n;
    }
    const void* lf = std::memchr(text.data() + from, '\n', n - from);
    size_t end =
        lf != nullptr ? static_cast<size_t>(static_cast<const char*>(lf) - text.data()) : n;
    const void* cr = std::memchr(text.data() + from, '\r', end - from);
    if (cr != nullptr) {
        end = static_cast<size_t>(static_cast<const char*>(cr) - text.data());
    }
    return end;
}

}  // namespace

SseScanner::SseScanner(size_t max_event_bytes) : max_event_bytes_(max_event_bytes) {}

void SseScanner::ResetLineState() {
    scan_pos_ = 0;
    line_empty_ = true;
    after_cr_ = false;
    cr_ended_blank_ = false;
}

std::string SseScanner::TakeRemainder() {
    std::string rest = std::move(buffer_);
    buffer_.clear();
    ResetLineState();
    failed_ = false;
    at_stream_start_ = true;
    last_eol_bare_cr_ = false;
    return rest;
}

bool SseScanner::FeedImpl(std::string_view bytes, void* ctx, Callback cb) {
    if (failed_) {
        return false;
    }
    if (bytes.empty()) {
        return true;
    }
    if (buffer_.empty()) {
        // Fast path: nothing pending, so events lying wholly in `bytes` are reported straight
        // from the caller's memory and only an incomplete tail is copied.
        const size_t rest = ScanAndEmit(bytes, ctx, cb);
        if (rest == std::string_view::npos) {
            return false;
        }
        buffer_.assign(bytes.substr(rest));
        return true;
    }
    buffer_.append(bytes);
    const size_t rest = ScanAndEmit(buffer_, ctx, cb);
    if (rest == std::string_view::npos) {
        buffer_.clear();
        return false;
    }
    buffer_.erase(0, rest);
    return true;
}

size_t SseScanner::ScanAndEmit(std::string_view text, void* ctx, Callback cb) {
    const size_t n = text.size();
    size_t start = 0;  // start of the event being assembled
    size_t i = start + scan_pos_;
    auto end_event = [&](size_t end) {
        if (end - start > max_event_bytes_) {
            return false;
        }
        Emit(text.substr(start, end - start), ctx, cb);
        start = end;
        line_empty_ = true;
        after_cr_ = false;
        cr_ended_blank_ = false;
        return true;
    };
    auto fail = [this] {
        failed_ = true;
        ResetLineState();
        return std::string_view::npos;
    };

    while (i < n) {
        const char c = text[i];
        if (after_cr_) {
            after_cr_ = false;
            if (c == '\n') {
                // CRLF: this LF completes the line ending the CR started.
                last_eol_bare_cr_ = false;
                ++i;
                if (cr_ended_blank_ && !end_event(i)) {
                    return fail();
                }
                continue;
            }
            last_eol_bare_cr_ = true;
            if (cr_ended_blank_ && !end_event(i)) {  // the event ended at that CR
                return fail();
            }
        }
        if (c == '\n') {
            ++i;
            last_eol_bare_cr_ = false;
            if (line_empty_) {
                if (!end_event(i)) {
                    return fail();
                }
            } else {
                line_empty_ = true;
            }
        } else if (c == '\r') {
            ++i;
            after_cr_ = true;
            cr_ended_blank_ = line_empty_;
            line_empty_ = true;
        } else {
            line_empty_ = false;
            i = FindLineBreak(text, i + 1);
        }
    }
    // A blank line ended by a CR at the very end: whether an LF follows is unknown. In a stream
    // that ends lines with bare CRs none will, so report the event now instead of holding it
    // until more bytes arrive; otherwise (CRLF) wait for the LF so it stays in this event.
    if (after_cr_ && cr_ended_blank_ && last_eol_bare_cr_ && !end_event(n)) {
        return fail();
    }
    if (n - start > max_event_bytes_) {
        return fail();
    }
    scan_pos_ = n - start;
    return start;
}

void SseScanner::Emit(std::string_view raw, void* ctx, Callback cb) {
    Event& ev = event_;
    ev.raw = raw;
    ev.data.clear();
    ev.event_name = {};
    ev.has_data = false;
    bool any_field = false;

    size_t i = 0;
    if (at_stream_start_) {
        at_stream_start_ = false;
        if (raw.substr(0, kUtf8Bom.size()) == kUtf8Bom) {
            i = kUtf8Bom.size();  // the SSE spec ignores one leading BOM
        }
    }
    while (i < raw.size()) {
        const size_t eol = FindLineBreak(raw, i);
        const std::string_view line = raw.substr(i, eol - i);
        i = eol + ((eol + 1 < raw.size() && raw[eol] == '\r' && raw[eol + 1] == '\n') ? 2 : 1);
        if (line.empty() || line.front() == ':') {
            continue;  // blank line or comment
        }
        any_field = true;
        const size_t colon = line.find(':');
        const std::string_view name = line.substr(0, colon);
        std::string_view value;
        if (colon != std::string_view::npos) {
            value = line.substr(colon + 1);
            if (!value.empty() && value.front() == ' ') {
                value.remove_prefix(1);
            }
        }
        if (name == "data") {
            if (ev.has_data) {
                ev.data.push_back('\n');
            }
            ev.data.append(value);
            ev.has_data = true;
        } else if (name == "event") {
            ev.event_name = value;
        }
        // id, retry and unknown fields: nothing to extract; they stay in `raw`.
    }
    ev.is_comment_only = !any_field;
    cb(ctx, ev);
}

bool IsDoneEvent(const SseScanner::Event& event) { return event.data == "[DONE]"; }

bool MayContainUsage(std::string_view data) {
    // memmem (glibc) rather than string_view::find; `"usage": null` (which OpenAI sends in every
    // chunk once usage is requested) does not count, so such chunks stay on the fast path.
    static constexpr std::string_view kNeedle = "\"usage\"";
    const char* p = data.data();
    const char* end = data.data() + data.size();
    while (p < end) {
        const void* hit = memmem(p, static_cast<size_t>(end - p), kNeedle.data(), kNeedle.size());
        if (hit == nullptr) {
            return false;
        }
        const char* q = static_cast<const char*>(hit) + kNeedle.size();
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')) {
            ++q;
        }
        if (q < end && *q == ':') {
            ++q;
            while (q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')) {
                ++q;
            }
            if (static_cast<size_t>(end - q) >= 4 && std::string_view(q, 4) == "null") {
                p = q + 4;
                continue;
            }
        }
        return true;
    }
    return false;
}

namespace {

/// Fast path: OpenAI-compatible servers put `usage` last. If the last `"usage"` key's object is
/// followed only by the closing brace of the document, it is provably the top-level key, and
/// only that small object needs parsing. Returns the object text, or empty when the fast path
/// does not apply (the caller then parses the whole document).
std::string_view TopLevelTrailingUsageObject(std::string_view json) {
    size_t end = json.find_last_not_of(" \t\r\n");
    if (end == std::string_view::npos || json[end] != '}') {
        return {};
    }
    size_t key = json.rfind("\"usage\"");
    if (key == std::string_view::npos) {
        return {};
    }
    size_t i = key + 7;
    while (i < end && (json[i] == ' ' || json[i] == '\t' || json[i] == '\r' || json[i] == '\n')) {
        ++i;
    }
    if (i >= end || json[i] != ':') {
        return {};
    }
    ++i;
    while (i < end && (json[i] == ' ' || json[i] == '\t' || json[i] == '\r' || json[i] == '\n')) {
        ++i;
    }
    if (i >= end || json[i] != '{') {
        return {};
    }
    size_t start = i;
    int depth = 0;
    bool in_string = false;
    for (; i < end; ++i) {
        char c = json[i];
        if (in_string) {
            if (c == '\\') {
                ++i;
            } else if (c == '"') {
                in_string = false;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{') {
            ++depth;
        } else if (c == '}' && --depth == 0) {
            break;
        }
    }
    if (i >= end || depth != 0) {
        return {};
    }
    // Only whitespace may separate the usage object from the document's final brace.
    if (json.find_first_not_of(" \t\r\n", i + 1) != end) {
        return {};
    }
    return json.substr(start, i + 1 - start);
}

}  // namespace

Usage ExtractUsageFull(std::string_view json);

namespace {

/// Reads the depth-1 integer members prompt_tokens / completion_tokens / total_tokens of a small
/// usage object `{...}` (nested objects such as *_tokens_details are skipped). Returns false on
/// anything unexpected, so the caller can fall back to the full parser.
bool ParseUsageObject(std::string_view obj, Usage& out) {
    size_t i = 1;  // past '{'
    int depth = 1;
    bool have_total = false;
    auto skip_ws = [&] {
        while (i < obj.size() &&
               (obj[i] == ' ' || obj[i] == '\t' || obj[i] == '\r' || obj[i] == '\n')) {
            ++i;
        }
    };
    while (i < obj.size()) {
        char c = obj[i];
        if (c == '"') {
            size_t start = ++i;
            while (i < obj.size() && obj[i] != '"') {
                if (obj[i] == '\\') {
                    ++i;
                }
                ++i;
            }
            if (i >= obj.size()) {
                return false;
            }
            std::string_view str = obj.substr(start, i - start);
            ++i;
            skip_ws();
            if (depth != 1 || i >= obj.size() || obj[i] != ':') {
                continue;  // a string value, or a key nested deeper
            }
            ++i;
            skip_ws();
            int64_t* target = nullptr;
            if (str == "prompt_tokens") {
                target = &out.prompt_tokens;
            } else if (str == "completion_tokens") {
                target = &out.completion_tokens;
            } else if (str == "total_tokens") {
                target = &out.total_tokens;
                have_total = true;
            }
            if (target != nullptr) {
                int64_t v = 0;
                size_t digits = 0;
                while (i < obj.size() && obj[i] >= '0' && obj[i] <= '9' && digits < 18) {
                    v = v * 10 + (obj[i] - '0');
                    ++i;
                    ++digits;
                }
                if (digits == 0) {
                    return false;  // not a plain non-negative integer: let the full parser decide
                }
                *target = v;
            }
            continue;
        }
        if (c == '{' || c == '[') {
            ++depth;
        } else if (c == '}' || c == ']') {
            if (--depth == 0) {
                break;
            }
        }
        ++i;
    }
    if (depth != 0) {
        return false;
    }
    if (!have_total) {
        out.total_tokens = out.prompt_tokens + out.completion_tokens;
    }
    out.present = true;
    return true;
}

}  // namespace

Usage ExtractUsage(std::string_view json) {
    if (auto obj = TopLevelTrailingUsageObject(json); !obj.empty()) {
        Usage u;
        if (ParseUsageObject(obj, u)) {
            return u;
        }
        // Unusual content: parse {"usage": <object>} built from the small tail only.
        std::string wrapped;
        wrapped.reserve(obj.size() + 12);
        wrapped.append("{\"usage\":").append(obj).append("}");
        return ExtractUsageFull(wrapped);
    }
    return ExtractUsageFull(json);
}

Usage ExtractUsageFull(std::string_view json) {
    const simdjson::padded_string_view padded = detail::PaddedCopy(json);
    return detail::WithParser(json.size(), [&padded](od::parser& parser) {
        Usage usage;
        od::document doc;
        od::object root;
        od::object counts;
        if (parser.iterate(padded).get(doc) != simdjson::SUCCESS ||
            doc.get_object().get(root) != simdjson::SUCCESS ||
            root.find_field_unordered("usage").get_object().get(counts) != simdjson::SUCCESS) {
            return usage;  // malformed, no usage, null or not an object
        }
        bool have_total = false;
        for (auto member : counts) {
            od::field field;
            std::string_view key;
            if (std::move(member).get(field) != simdjson::SUCCESS ||
                field.unescaped_key().get(key) != simdjson::SUCCESS) {
                return Usage{};
            }
            int64_t* target = nullptr;
            if (key == "prompt_tokens") {
                target = &usage.prompt_tokens;
            } else if (key == "completion_tokens") {
                target = &usage.completion_tokens;
            } else if (key == "total_tokens") {
                target = &usage.total_tokens;
                have_total = true;
            } else {
                continue;
            }
            int64_t count = 0;
            if (field.value().get_int64().get(count) == simdjson::SUCCESS) {
                *target = count;
            }
        }
        if (!have_total) {
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
        }
        usage.present = true;
        return usage;
    });
}

bool HasEmptyChoices(std::string_view chunk_json) {
    const simdjson::padded_string_view padded = detail::PaddedCopy(chunk_json);
    return detail::WithParser(chunk_json.size(), [&padded](od::parser& parser) {
        od::document doc;
        od::object root;
        od::array choices;
        bool empty = false;
        if (parser.iterate(padded).get(doc) != simdjson::SUCCESS ||
            doc.get_object().get(root) != simdjson::SUCCESS ||
            root.find_field_unordered("choices").get_array().get(choices) != simdjson::SUCCESS ||
            choices.is_empty().get(empty) != simdjson::SUCCESS) {
            return false;
        }
        return empty;
    });
}

}  // namespace conduit::json
