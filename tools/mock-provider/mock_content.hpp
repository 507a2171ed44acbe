#pragma once

// Pure helpers of the mock provider: request-body scanning, prompt token counting, deterministic
// text and embeddings, OpenAI error bodies. No I/O, no Asio; every function is thread-safe.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::mock {

/// Raw spans and per-request test controls found among the top-level members of a request body.
/// Views point into the scanned body. A JSON `null` member counts as absent.
struct BodyScan {
    /// Raw JSON value of `messages` (chat), `prompt` (completions, images) and `input`
    /// (embeddings); empty when absent.
    std::string_view messages;
    std::string_view prompt;
    std::string_view input;
    /// `dimensions` (embeddings).
    std::optional<int64_t> dimensions;
    /// Raw JSON value of `seconds` (videos: a string or a number); empty when absent.
    std::string_view seconds;
    /// Raw JSON values of `system`, `tools` and `tool_choice` (Anthropic Messages API); empty
    /// when absent.
    std::string_view system;
    std::string_view tools;
    std::string_view tool_choice;
    /// Test controls (see README in mock_provider.hpp).
    std::optional<int64_t> mock_latency_ms;
    std::optional<int64_t> mock_error_status;
    std::optional<int64_t> mock_chunks;
    std::optional<int64_t> mock_chunk_delay_ms;
    std::optional<int64_t> mock_disconnect_after;
    /// Anthropic streams: an `error` event (overloaded_error) after this many content chunks.
    std::optional<int64_t> mock_stream_error_after;
    bool mock_hang = false;
    /// Contents of the `mock_hold` string literal (escapes are kept as written).
    std::string_view mock_hold;
    /// Async job controls (video and image jobs).
    std::optional<int64_t> mock_job_duration_ms;
    std::optional<bool> mock_job_fail;
    std::optional<int64_t> mock_job_fail_status;
    std::optional<int64_t> mock_video_bytes;
    /// Contents of the `mock_job_error_code` string literal (escapes are kept as written).
    std::string_view mock_job_error_code;
};

/// Scans the top-level members of a JSON object `body` (already validated, e.g. by
/// json::PeekRequest) in one pass without allocating: nested values are skipped by bracket
/// matching. Integers may be written as JSON numbers (fractions are rounded) or numeric strings.
/// Returns false when the body is not a well-formed object at the top level.
bool ScanBody(std::string_view body, BodyScan& out);

/// 64-bit FNV-1a of `data`.
uint64_t Fnv1a64(std::string_view data);

/// Which strings of a raw JSON value CountPromptTokens counts.
enum class CountMode {
    /// Chat `messages`: only string values of `content` and `text` keys (at any depth).
    kContentStrings,
    /// `prompt` / `input`: every string value, plus one token per number (token-id arrays).
    kAllStrings,
};

/// The mock's prompt-token rule: the number of whitespace-separated words in the selected JSON
/// string values of `raw_value` (the escapes \n, \t and \r count as whitespace), at least 1.
int64_t CountPromptTokens(std::string_view raw_value, CountMode mode);

/// Number of whitespace-separated words in the contents of a JSON string literal (escapes
/// \n, \t, \r separate words).
int64_t CountWords(std::string_view literal_contents);

/// A fixed pseudo-random text of lowercase ASCII words (no JSON escaping needed), used as the
/// source of every generated completion: a response is a run of consecutive words starting at a
/// position derived from a hash of the request, so the same request always gets the same text.
/// Runs wrap around at the end. Built once on first use; immutable and thread-safe afterwards.
class Corpus {
public:
    /// The process-wide corpus.
    static const Corpus& Instance();

    /// Number of words in the corpus.
    size_t size() const { return starts_.size() - 1; }
    /// Start position for a hash.
    size_t StartFor(uint64_t hash) const { return static_cast<size_t>(hash % size()); }
    /// Appends `count` words starting at word `start`, joined by single spaces.
    void Append(std::string& out, size_t start, size_t count) const;
    /// Length in bytes of what Append(start, count) appends.
    size_t Chars(size_t start, size_t count) const;
    /// Smallest word count (at least 1) whose text from `start` is at least `chars` bytes long.
    size_t WordsForChars(size_t start, size_t chars) const;

private:
    Corpus();
    std::string text_;              // words, each followed by one space
    std::vector<uint32_t> starts_;  // offset of each word, plus text_.size() at the end
};

/// Splits an embeddings `input` value into its items: a string (one item), an array of strings,
/// an array of integers (one token-id item) or an array of integer arrays. `tokens` receives the
/// prompt-token count (words of strings, one per token id; at least 1 per item). Returns false
/// (with a message) for any other shape or an empty array.
bool SplitEmbeddingInput(std::string_view input,
                         std::vector<std::string_view>& items,
                         int64_t& tokens,
                         std::string& error);

/// Fills `out[0..dims)` with a deterministic unit-length vector derived from `seed`.
void MakeEmbedding(uint64_t seed, size_t dims, float* out);

/// A small valid PNG image (8x8 RGB).
std::string_view TinyPng();

/// OpenAI error JSON for `status`: `{"error":{"message":…,"type":…,"param":…,"code":…}}`. The
/// type/code follow the gateway's mapping (400 invalid_request_error, 401 invalid_api_key,
/// 429 rate_limit_error/rate_limit_exceeded, 5xx api_error, …). `param` empty = null.
std::string ErrorJson(int status, std::string_view message, std::string_view param = {});

/// A tool call the mock answers an Anthropic request with.
struct ToolUse {
    /// The tool's name (as written in the request, unescaped).
    std::string name;
    /// Its arguments: a compact JSON object.
    std::string input_json;
};

/// The mock's tool rule for an Anthropic Messages request: when `tools` is a non-empty array,
/// `tool_choice` is not `{"type":"none"}`, and the last message is a `user` turn without a
/// `tool_result` block, the reply calls a tool — the one `tool_choice` names (`{"type":"tool",
/// "name":…}`), else the first. Its input has one member per property of the tool's
/// `input_schema`: strings get a corpus word chosen by a hash of `messages`, integers and numbers
/// 42, booleans true, arrays [], objects {}, anything else null. nullopt otherwise (a text reply).
std::optional<ToolUse> PlanToolUse(const BodyScan& scan);

/// Anthropic error JSON for `status`: `{"type":"error","error":{"type":…,"message":…}}` with
/// Anthropic's type for the status (400 invalid_request_error, 401 authentication_error, 403
/// permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 529
/// overloaded_error, other 5xx api_error, other 4xx invalid_request_error).
std::string AnthropicErrorJson(int status, std::string_view message);

/// Appends `v` in decimal.
void AppendInt(std::string& out, int64_t v);
/// Appends `v` as 16 lowercase hex digits.
void AppendHex16(std::string& out, uint64_t v);

}  // namespace conduit::mock
