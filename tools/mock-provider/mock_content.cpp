#include "mock-provider/mock_content.hpp"

#include "core/strings.hpp"
#include "json/helpers.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

namespace conduit::mock {

namespace {

constexpr size_t kNpos = std::string_view::npos;

bool IsWs(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t SkipWs(std::string_view s, size_t i) {
    while (i < s.size() && IsWs(s[i])) {
        ++i;
    }
    return i;
}

// `i` is at an opening quote; returns the index just past the closing quote, or npos.
size_t SkipString(std::string_view s, size_t i) {
    ++i;
    while (i < s.size()) {
        const void* p = std::memchr(s.data() + i, '"', s.size() - i);
        if (p == nullptr) {
            return kNpos;
        }
        size_t q = static_cast<size_t>(static_cast<const char*>(p) - s.data());
        size_t backslashes = 0;
        while (q - backslashes > i && s[q - backslashes - 1] == '\\') {
            ++backslashes;
        }
        if (backslashes % 2 == 0) {
            return q + 1;
        }
        i = q + 1;
    }
    return kNpos;
}

// `i` is at the first byte of a value; returns the index just past it, or npos.
size_t SkipValue(std::string_view s, size_t i) {
    if (i >= s.size()) {
        return kNpos;
    }
    char c = s[i];
    if (c == '"') {
        return SkipString(s, i);
    }
    if (c == '{' || c == '[') {
        int depth = 0;
        while (i < s.size()) {
            char d = s[i];
            if (d == '"') {
                i = SkipString(s, i);
                if (i == kNpos) {
                    return kNpos;
                }
                continue;
            }
            if (d == '{' || d == '[') {
                ++depth;
            } else if (d == '}' || d == ']') {
                if (--depth == 0) {
                    return i + 1;
                }
            }
            ++i;
        }
        return kNpos;
    }
    size_t start = i;
    while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && !IsWs(s[i])) {
        ++i;
    }
    return i == start ? kNpos : i;
}

// An integer from a raw JSON number or numeric string; fractions are rounded.
std::optional<int64_t> RawInt(std::string_view v) {
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
        v = v.substr(1, v.size() - 2);
    }
    if (v.empty()) {
        return std::nullopt;
    }
    int64_t out = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec == std::errc() && p == v.data() + v.size()) {
        return out;
    }
    double d = 0;
    auto [pd, ecd] = std::from_chars(v.data(), v.data() + v.size(), d);
    if (ecd == std::errc() && pd == v.data() + v.size() && std::isfinite(d) && d > -9e18 &&
        d < 9e18) {
        return static_cast<int64_t>(std::llround(d));
    }
    return std::nullopt;
}

void Assign(std::string_view key, std::string_view value, BodyScan& out) {
    if (value == "null") {
        return;
    }
    if (key == "messages") {
        out.messages = value;
    } else if (key == "prompt") {
        out.prompt = value;
    } else if (key == "input") {
        out.input = value;
    } else if (key == "dimensions") {
        out.dimensions = RawInt(value);
    } else if (key == "seconds") {
        out.seconds = value;
    } else if (key == "system") {
        out.system = value;
    } else if (key == "tools") {
        out.tools = value;
    } else if (key == "tool_choice") {
        out.tool_choice = value;
    } else if (key.size() > 5 && key.substr(0, 5) == "mock_") {
        std::string_view k = key.substr(5);
        if (k == "latency_ms") {
            out.mock_latency_ms = RawInt(value);
        } else if (k == "error_status") {
            out.mock_error_status = RawInt(value);
        } else if (k == "chunks") {
            out.mock_chunks = RawInt(value);
        } else if (k == "chunk_delay_ms") {
            out.mock_chunk_delay_ms = RawInt(value);
        } else if (k == "disconnect_after") {
            out.mock_disconnect_after = RawInt(value);
        } else if (k == "stream_error_after") {
            out.mock_stream_error_after = RawInt(value);
        } else if (k == "hang") {
            out.mock_hang = value == "true" || value == "1";
        } else if (k == "hold") {
            if (value.size() >= 2 && value.front() == '"') {
                out.mock_hold = value.substr(1, value.size() - 2);
            }
        } else if (k == "job_duration_ms") {
            out.mock_job_duration_ms = RawInt(value);
        } else if (k == "job_fail") {
            out.mock_job_fail = value == "true" || value == "1";
        } else if (k == "job_fail_status") {
            out.mock_job_fail_status = RawInt(value);
        } else if (k == "video_bytes") {
            out.mock_video_bytes = RawInt(value);
        } else if (k == "job_error_code") {
            if (value.size() >= 2 && value.front() == '"') {
                out.mock_job_error_code = value.substr(1, value.size() - 2);
            }
        }
    }
}

uint64_t SplitMix64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

constexpr std::string_view kVocabulary[] = {
    "the",     "quick",  "brown",  "fox",    "jumps",    "over",   "lazy",    "dog",
    "gateway", "stream", "token",  "model",  "request",  "reply",  "latency", "shard",
    "vector",  "prompt", "answer", "mock",   "data",     "fast",   "secure",  "route",
    "cache",   "budget", "limit",  "event",  "signal",   "queue",  "worker",  "task",
    "image",   "video",  "hello",  "world",  "again",    "more",   "less",    "simple",
    "clear",   "stable", "bright", "river",  "mountain", "cloud",  "light",   "sound",
    "green",   "blue",   "silver", "paper",  "stone",    "window", "garden",  "friendly",
    "careful", "steady", "rapid",  "gentle", "honest",   "useful", "is",      "and",
};
constexpr size_t kVocabularySize = sizeof(kVocabulary) / sizeof(kVocabulary[0]);
constexpr size_t kCorpusWords = 65536;

}  // namespace

bool ScanBody(std::string_view s, BodyScan& out) {
    size_t i = SkipWs(s, 0);
    if (i >= s.size() || s[i] != '{') {
        return false;
    }
    i = SkipWs(s, i + 1);
    if (i < s.size() && s[i] == '}') {
        return true;
    }
    while (i < s.size()) {
        if (s[i] != '"') {
            return false;
        }
        size_t key_end = SkipString(s, i);
        if (key_end == kNpos) {
            return false;
        }
        std::string_view key = s.substr(i + 1, key_end - i - 2);
        i = SkipWs(s, key_end);
        if (i >= s.size() || s[i] != ':') {
            return false;
        }
        i = SkipWs(s, i + 1);
        size_t value_end = SkipValue(s, i);
        if (value_end == kNpos) {
            return false;
        }
        Assign(key, s.substr(i, value_end - i), out);
        i = SkipWs(s, value_end);
        if (i >= s.size()) {
            return false;
        }
        if (s[i] == '}') {
            return true;
        }
        if (s[i] != ',') {
            return false;
        }
        i = SkipWs(s, i + 1);
    }
    return false;
}

uint64_t Fnv1a64(std::string_view data) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (unsigned char c : data) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    return h;
}

int64_t CountWords(std::string_view s) {
    int64_t words = 0;
    bool in_word = false;
    for (size_t k = 0; k < s.size(); ++k) {
        char c = s[k];
        bool sep = IsWs(c);
        if (c == '\\' && k + 1 < s.size()) {
            char e = s[k + 1];
            sep = e == 'n' || e == 't' || e == 'r';
            ++k;
        }
        if (sep) {
            in_word = false;
        } else if (!in_word) {
            in_word = true;
            ++words;
        }
    }
    return words;
}

int64_t CountPromptTokens(std::string_view v, CountMode mode) {
    int64_t tokens = 0;
    std::string_view last_key;
    size_t i = 0;
    while (i < v.size()) {
        char c = v[i];
        if (c == '"') {
            size_t end = SkipString(v, i);
            if (end == kNpos) {
                break;
            }
            std::string_view inner = v.substr(i + 1, end - i - 2);
            size_t j = SkipWs(v, end);
            if (j < v.size() && v[j] == ':') {
                last_key = inner;
                i = j + 1;
                continue;
            }
            if (mode == CountMode::kAllStrings || last_key == "content" || last_key == "text") {
                tokens += CountWords(inner);
            }
            i = end;
            continue;
        }
        if (c == ',' || c == '{' || c == '}' || c == ']') {
            last_key = {};
        } else if (mode == CountMode::kAllStrings && (c == '-' || (c >= '0' && c <= '9'))) {
            ++tokens;
            while (i < v.size() && v[i] != ',' && v[i] != ']' && v[i] != '}' && !IsWs(v[i])) {
                ++i;
            }
            continue;
        }
        ++i;
    }
    return std::max<int64_t>(tokens, 1);
}

Corpus::Corpus() {
    text_.reserve(kCorpusWords * 7);
    starts_.reserve(kCorpusWords + 1);
    uint64_t state = 0x5eed0f0c0ffee;
    for (size_t i = 0; i < kCorpusWords; ++i) {
        starts_.push_back(static_cast<uint32_t>(text_.size()));
        text_ += kVocabulary[SplitMix64(state) % kVocabularySize];
        text_ += ' ';
    }
    starts_.push_back(static_cast<uint32_t>(text_.size()));
}

const Corpus& Corpus::Instance() {
    static const Corpus corpus;
    return corpus;
}

void Corpus::Append(std::string& out, size_t start, size_t count) const {
    const size_t n = size();
    size_t pos = start % n;
    bool first = true;
    while (count > 0) {
        size_t m = std::min(count, n - pos);
        if (!first) {
            out += ' ';
        }
        out.append(text_.data() + starts_[pos], starts_[pos + m] - starts_[pos] - 1);
        count -= m;
        pos = 0;
        first = false;
    }
}

size_t Corpus::Chars(size_t start, size_t count) const {
    const size_t n = size();
    size_t pos = start % n;
    size_t chars = 0;
    bool first = true;
    while (count > 0) {
        size_t m = std::min(count, n - pos);
        chars += (first ? 0 : 1) + starts_[pos + m] - starts_[pos] - 1;
        count -= m;
        pos = 0;
        first = false;
    }
    return chars;
}

size_t Corpus::WordsForChars(size_t start, size_t chars) const {
    const size_t n = size();
    size_t pos = start % n;
    size_t have = 0;  // chars accumulated by complete earlier segments
    size_t words = 0;
    bool first = true;
    for (;;) {
        size_t sep = first ? 0 : 1;
        size_t segment = sep + starts_[n] - starts_[pos] - 1;
        if (have + segment >= chars) {
            // Smallest e in (pos, n] with have + sep + starts_[e] - starts_[pos] - 1 >= chars.
            size_t need = chars > have + sep ? chars - have - sep : 0;
            uint64_t target = static_cast<uint64_t>(starts_[pos]) + need + 1;
            auto it = std::lower_bound(starts_.begin() + static_cast<std::ptrdiff_t>(pos) + 1,
                                       starts_.end(), target);
            size_t e = static_cast<size_t>(it - starts_.begin());
            words += std::max<size_t>(e - pos, 1);
            return words;
        }
        have += segment;
        words += n - pos;
        pos = 0;
        first = false;
    }
}

bool SplitEmbeddingInput(std::string_view v,
                         std::vector<std::string_view>& items,
                         int64_t& tokens,
                         std::string& error) {
    items.clear();
    tokens = 0;
    size_t i = SkipWs(v, 0);
    if (i >= v.size()) {
        error = "Missing required parameter: 'input'.";
        return false;
    }
    if (v[i] == '"') {
        items.push_back(v);
        tokens = std::max<int64_t>(CountWords(v.substr(1, v.size() - 2)), 1);
        return true;
    }
    error =
        "Invalid type for 'input': expected a string, an array of strings, an array of "
        "integers or an array of integer arrays.";
    if (v[i] != '[') {
        return false;
    }
    i = SkipWs(v, i + 1);
    if (i < v.size() && (v[i] == '-' || (v[i] >= '0' && v[i] <= '9'))) {
        // One token-id array.
        items.push_back(v);
        tokens = CountPromptTokens(v, CountMode::kAllStrings);
        return true;
    }
    while (i < v.size() && v[i] != ']') {
        size_t end = SkipValue(v, i);
        if (end == kNpos || (v[i] != '"' && v[i] != '[')) {
            return false;
        }
        std::string_view item = v.substr(i, end - i);
        items.push_back(item);
        if (v[i] == '"') {
            tokens += std::max<int64_t>(CountWords(item.substr(1, item.size() - 2)), 1);
        } else {
            tokens += CountPromptTokens(item, CountMode::kAllStrings);
        }
        i = SkipWs(v, end);
        if (i < v.size() && v[i] == ',') {
            i = SkipWs(v, i + 1);
        }
    }
    if (items.empty()) {
        error = "'input' must not be empty.";
        return false;
    }
    return true;
}

void MakeEmbedding(uint64_t seed, size_t dims, float* out) {
    uint64_t state = seed;
    double sum = 0;
    for (size_t d = 0; d < dims; ++d) {
        // Uniform in [-1, 1) with 24 bits of precision.
        double x = static_cast<double>(SplitMix64(state) >> 40) / static_cast<double>(1 << 23) - 1;
        out[d] = static_cast<float>(x);
        sum += x * x;
    }
    double norm = std::sqrt(sum);
    if (norm == 0) {
        norm = 1;
    }
    for (size_t d = 0; d < dims; ++d) {
        out[d] = static_cast<float>(out[d] / norm);
    }
}

std::string_view TinyPng() {
    // 8x8 RGB, one colour; generated with zlib and checked with a PNG decoder.
    static constexpr unsigned char kPng[] = {
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x08, 0x08, 0x02, 0x00, 0x00, 0x00, 0x4b,
        0x6d, 0x29, 0xdc, 0x00, 0x00, 0x00, 0x11, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x30,
        0x4e, 0x9b, 0x89, 0x15, 0x31, 0x0c, 0x2d, 0x09, 0x00, 0xca, 0xfb, 0x4c, 0x81, 0x7d, 0x0d,
        0xb8, 0xb5, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
    return {reinterpret_cast<const char*>(kPng), sizeof(kPng)};
}

std::string ErrorJson(int status, std::string_view message, std::string_view param) {
    std::string_view type = "invalid_request_error";
    std::string_view code;
    switch (status) {
        case 400:
            code = "invalid_request";
            break;
        case 401:
            code = "invalid_api_key";
            break;
        case 402:
            type = "insufficient_quota";
            code = "insufficient_balance";
            break;
        case 403:
            type = "permission_error";
            code = "forbidden";
            break;
        case 404:
            code = "not_found";
            break;
        case 405:
            code = "method_not_allowed";
            break;
        case 408:
            code = "request_timeout";
            break;
        case 409:
            code = "conflict";
            break;
        case 413:
            code = "request_too_large";
            break;
        case 429:
            type = "rate_limit_error";
            code = "rate_limit_exceeded";
            break;
        case 500:
            type = "api_error";
            code = "internal_error";
            break;
        case 502:
            type = "api_error";
            code = "upstream_error";
            break;
        case 503:
            type = "api_error";
            code = "service_unavailable";
            break;
        case 504:
            type = "api_error";
            code = "upstream_timeout";
            break;
        default:
            if (status >= 500) {
                type = "api_error";
            }
            break;
    }
    std::string out;
    out.reserve(96 + message.size());
    out += R"({"error":{"message":")";
    core::AppendJsonEscaped(out, message);
    out += R"(","type":")";
    out += type;
    out += R"(","param":)";
    if (param.empty()) {
        out += "null";
    } else {
        out += '"';
        core::AppendJsonEscaped(out, param);
        out += '"';
    }
    out += R"(,"code":)";
    if (code.empty()) {
        out += "null";
    } else {
        out += '"';
        out += code;
        out += '"';
    }
    out += "}}";
    return out;
}

std::optional<ToolUse> PlanToolUse(const BodyScan& scan) {
    namespace bj = boost::json;
    auto parse = [](std::string_view text) {
        boost::system::error_code ec;
        bj::value v = bj::parse(bj::string_view(text.data(), text.size()), ec);
        return ec ? bj::value() : v;
    };
    if (scan.tools.empty() || scan.messages.empty()) {
        return std::nullopt;
    }
    bj::value tools = parse(scan.tools);
    if (!tools.is_array() || tools.get_array().empty()) {
        return std::nullopt;
    }
    std::string_view wanted;
    bj::value choice = scan.tool_choice.empty() ? bj::value() : parse(scan.tool_choice);
    if (const bj::object* c = choice.if_object()) {
        const bj::value* type = c->if_contains("type");
        if (type != nullptr && type->is_string() && type->get_string() == "none") {
            return std::nullopt;
        }
        const bj::value* name = c->if_contains("name");
        if (name != nullptr && name->is_string()) {
            wanted = std::string_view(name->get_string().data(), name->get_string().size());
        }
    }
    bj::value messages = parse(scan.messages);
    if (!messages.is_array() || messages.get_array().empty()) {
        return std::nullopt;
    }
    const bj::object* last = messages.get_array().back().if_object();
    if (last == nullptr) {
        return std::nullopt;
    }
    const bj::value* role = last->if_contains("role");
    if (role == nullptr || !role->is_string() || role->get_string() != "user") {
        return std::nullopt;
    }
    if (const bj::value* content = last->if_contains("content");
        content != nullptr && content->is_array()) {
        for (const auto& block : content->get_array()) {
            const bj::object* b = block.if_object();
            const bj::value* type = b != nullptr ? b->if_contains("type") : nullptr;
            if (type != nullptr && type->is_string() && type->get_string() == "tool_result") {
                return std::nullopt;
            }
        }
    }
    const bj::object* tool = nullptr;
    for (const auto& t : tools.get_array()) {
        const bj::object* o = t.if_object();
        const bj::value* name = o != nullptr ? o->if_contains("name") : nullptr;
        if (name == nullptr || !name->is_string()) {
            continue;
        }
        if (tool == nullptr || name->get_string() == wanted) {
            tool = o;
        }
        if (wanted.empty() || name->get_string() == wanted) {
            break;
        }
    }
    if (tool == nullptr) {
        return std::nullopt;
    }
    ToolUse use;
    const bj::string& name = tool->at("name").get_string();
    use.name.assign(name.data(), name.size());
    bj::object input;
    const bj::value* schema = tool->if_contains("input_schema");
    const bj::value* props = schema != nullptr && schema->is_object()
                                 ? schema->get_object().if_contains("properties")
                                 : nullptr;
    if (props != nullptr && props->is_object()) {
        const Corpus& corpus = Corpus::Instance();
        uint64_t hash = Fnv1a64(scan.messages);
        uint64_t k = 0;
        for (const auto& kv : props->get_object()) {
            const bj::object* p = kv.value().if_object();
            const bj::value* type = p != nullptr ? p->if_contains("type") : nullptr;
            std::string_view t =
                type != nullptr && type->is_string()
                    ? std::string_view(type->get_string().data(), type->get_string().size())
                    : std::string_view();
            if (t == "string") {
                std::string word;
                corpus.Append(word, corpus.StartFor(hash + k), 1);
                input[kv.key()] = word;
            } else if (t == "integer" || t == "number") {
                input[kv.key()] = 42;
            } else if (t == "boolean") {
                input[kv.key()] = true;
            } else if (t == "array") {
                input[kv.key()] = bj::array();
            } else if (t == "object") {
                input[kv.key()] = bj::object();
            } else {
                input[kv.key()] = nullptr;
            }
            ++k;
        }
    }
    use.input_json = json::Serialize(input);
    return use;
}

std::string AnthropicErrorJson(int status, std::string_view message) {
    std::string_view type = "invalid_request_error";
    switch (status) {
        case 401:
            type = "authentication_error";
            break;
        case 402:
            type = "billing_error";
            break;
        case 403:
            type = "permission_error";
            break;
        case 404:
            type = "not_found_error";
            break;
        case 413:
            type = "request_too_large";
            break;
        case 429:
            type = "rate_limit_error";
            break;
        case 504:
            type = "timeout_error";
            break;
        case 529:
            type = "overloaded_error";
            break;
        default:
            if (status >= 500) {
                type = "api_error";
            }
            break;
    }
    std::string out;
    out.reserve(64 + message.size());
    out += R"({"type":"error","error":{"type":")";
    out += type;
    out += R"(","message":")";
    core::AppendJsonEscaped(out, message);
    out += R"("}})";
    return out;
}

void AppendInt(std::string& out, int64_t v) {
    char buf[24];
    auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), v);
    (void)ec;
    out.append(buf, static_cast<size_t>(p - buf));
}

void AppendHex16(std::string& out, uint64_t v) {
    static constexpr char kDigits[] = "0123456789abcdef";
    char buf[16];
    for (int i = 15; i >= 0; --i) {
        buf[i] = kDigits[v & 0xf];
        v >>= 4;
    }
    out.append(buf, sizeof(buf));
}

}  // namespace conduit::mock
