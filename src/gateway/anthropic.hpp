#pragma once

// Translation between OpenAI chat completions and Anthropic's Messages API
// (https://docs.anthropic.com/en/api/messages), for deployments whose provider type is
// domain::ProviderType::kAnthropic. Pure functions and one stream translator; no Asio, no I/O.
// docs/anthropic.md lists what is translated, what is not, and where the proxy calls these.

#include "core/error.hpp"
#include "json/sse.hpp"
#include "net/http_types.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::gateway::anthropic {

/// Upstream path below the provider's base URL (".../v1" + "/messages").
inline constexpr std::string_view kMessagesPath = "/messages";
/// The `anthropic-version` header value this translation is written against.
inline constexpr std::string_view kApiVersion = "2023-06-01";
/// `max_tokens` sent when the client gave neither `max_tokens` nor `max_completion_tokens`
/// (Anthropic requires it).
inline constexpr int64_t kDefaultMaxTokens = 4096;

/// Knobs of TranslateChatRequest.
struct RequestOptions {
    /// `max_tokens` when the request has none (must be ≥ 1).
    int64_t default_max_tokens = kDefaultMaxTokens;
    /// Copy top-level members whose name starts with "mock_" (the mock provider's per-request
    /// test controls) into the upstream body. Off in production: Anthropic rejects unknown
    /// members.
    bool forward_mock_fields = false;
};

/// An OpenAI chat request translated to a Messages API request.
struct AnthropicRequest {
    /// The Messages API JSON body.
    std::string body;
    /// The client asked for a stream (`stream: true`).
    bool stream = false;
    /// The client asked for the final usage chunk (`stream_options.include_usage: true`).
    bool include_usage = false;
    /// The `max_tokens` sent upstream (the client's, or the default): the worst case for
    /// budget reservations.
    int64_t max_tokens = 0;
};

/// Translates an OpenAI chat completions request body into a Messages API body for the model
/// `provider_model_id`:
///   - `system` / `developer` messages (strings or text parts) are joined with "\n\n" into
///     `system`;
///   - `user` / `assistant` turns become messages of content blocks, consecutive turns of the
///     same role merged; text parts → text blocks, `image_url` parts → image blocks (a
///     `data:<type>;base64,` URL → a base64 source, an http(s) URL → a url source);
///   - assistant `tool_calls` → tool_use blocks (arguments parsed into `input`); `tool`
///     messages → tool_result blocks in a user turn; `tools` (function tools) → Anthropic tools
///     with `input_schema`; `tool_choice` auto/none/required/{function} → auto/none/any/tool;
///     `parallel_tool_calls: false` → `disable_parallel_tool_use`;
///   - `max_completion_tokens` or `max_tokens` (else options.default_max_tokens), `temperature`,
///     `top_p`, `stop` (string or array → `stop_sequences`), `stream`, `user` →
///     `metadata.user_id`.
/// Other members are ignored. Errors are kInvalidRequest with a message and the offending
/// `param`: malformed JSON, a missing or mistyped field, `n` other than 1, unsupported content
/// parts or roles, the legacy `functions` / `function_call`, tool-call arguments that are not a
/// JSON object, no user/assistant message.
/// Pure function, any thread.
core::Result<AnthropicRequest> TranslateChatRequest(std::string_view openai_body,
                                                    std::string_view provider_model_id,
                                                    const RequestOptions& options = {});

/// The headers of an upstream Messages API call: `x-api-key` (omitted when `api_key` is empty),
/// `anthropic-version`, `content-type: application/json` and `accept` (SSE for a stream). Pure.
net::Headers UpstreamHeaders(std::string_view api_key, bool stream);

/// Usage reported by Anthropic, kept apart for billing.
struct Usage {
    int64_t input_tokens = 0;
    int64_t output_tokens = 0;
    int64_t cache_creation_input_tokens = 0;
    int64_t cache_read_input_tokens = 0;
    /// False until some usage was read.
    bool present = false;

    /// OpenAI prompt_tokens: every input token, cached or not.
    int64_t PromptTokens() const {
        return input_tokens + cache_creation_input_tokens + cache_read_input_tokens;
    }
    /// The same usage in the shape the proxy bills (json::Usage of an OpenAI response).
    json::Usage ToOpenAI() const;
};

/// OpenAI finish_reason for an Anthropic stop_reason: end_turn / stop_sequence / pause_turn →
/// "stop", max_tokens / model_context_window_exceeded → "length", tool_use → "tool_calls",
/// refusal → "content_filter"; anything else → "stop". Pure.
std::string_view FinishReason(std::string_view stop_reason);

/// A translated non-streamed response.
struct ChatResponse {
    /// The OpenAI `chat.completion` JSON body.
    std::string body;
    Usage usage;
};

/// Translates a Messages API response body (HTTP 2xx) into an OpenAI `chat.completion`: `id`
/// kept, `model` = `alias` (what the client asked for), `created` = `created_s`; text blocks
/// concatenated into `message.content` (null when there is none but tool calls), tool_use
/// blocks → `message.tool_calls` (arguments as JSON strings), other blocks (thinking, …)
/// dropped; `finish_reason` per FinishReason; usage: prompt_tokens = input + cache tokens
/// (cache reads also as `prompt_tokens_details.cached_tokens`), completion_tokens =
/// output_tokens. A body that is not a Messages API response is a kUpstreamError. Pure.
core::Result<ChatResponse> TranslateChatResponse(std::string_view anthropic_body,
                                                 std::string_view alias,
                                                 int64_t created_s);

/// An Anthropic error mapped to what the gateway answers.
struct MappedError {
    /// Code (hence HTTP status and OpenAI type/code via gateway/errors.hpp) and message.
    core::Error error;
    /// gateway::HttpStatus(error.code), for convenience.
    int status = 500;
    /// Anthropic's `error.type` ("rate_limit_error", …); empty when the body had none.
    std::string anthropic_type;
};

/// Maps an Anthropic error (`{"type":"error","error":{"type":…,"message":…}}`, from a non-2xx
/// response body or a stream `error` event) to a gateway error. By type: invalid_request_error
/// → 400, authentication_error → 401, permission_error → 403, not_found_error → 404,
/// request_too_large → 413, rate_limit_error → 429, overloaded_error → 503, timeout_error →
/// 504, api_error / billing_error / other 5xx → 502. Client-side errors keep Anthropic's
/// message; provider faults get a generic one (their text may reveal internals). An
/// unparseable body or unknown type falls back on `upstream_status` (0 when unknown, e.g. in
/// a stream; 529 counts as overloaded). Pure.
MappedError MapError(int upstream_status, std::string_view anthropic_body);

/// Translates an Anthropic Messages SSE stream into OpenAI `chat.completion.chunk` SSE text, one
/// event at a time, as the events arrive:
///   - message_start → a chunk with `delta: {role: "assistant", content: ""}`; input usage kept;
///   - content_block_start of a tool_use block → a `tool_calls` chunk with index (counting
///     tool_use blocks from 0), id, type and name, arguments ""; of a text block with text → a
///     content chunk;
///   - content_block_delta: text_delta → a content chunk; input_json_delta → a `tool_calls`
///     chunk with that index and the arguments fragment; thinking/signature/citations deltas
///     are dropped;
///   - message_delta → a chunk with `delta: {}` and the mapped finish_reason; output usage kept;
///   - message_stop → a usage-only chunk (`choices: []`) when `include_usage`, then
///     `data: [DONE]`;
///   - error (or a data field that is not JSON) → `data: {"error":{…}}` (MapError with
///     status 0) and the stream is over (Finished() and Failed());
///   - ping, content_block_stop and unknown events → nothing.
/// Events after the end are ignored. One instance per stream; not thread-safe.
class AnthropicStreamTranslator {
public:
    struct Options {
        /// The `model` of every chunk: the alias the client asked for.
        std::string alias;
        /// The `created` of every chunk.
        int64_t created_s = 0;
        /// Emit the usage-only chunk before [DONE].
        bool include_usage = false;
    };

    explicit AnthropicStreamTranslator(Options options);

    /// Translates one event (`event_name` may be empty: the data's `type` decides) and appends
    /// the resulting SSE text to `out`.
    void OnEvent(std::string_view event_name, std::string_view data, std::string& out);
    /// OnEvent for an event reported by json::SseScanner (comment-only and data-less events are
    /// ignored).
    void OnEvent(const json::SseScanner::Event& event, std::string& out);
    /// Scans raw upstream bytes (split anywhere) with an internal SseScanner and translates each
    /// complete event into `out`. Returns false once an event exceeded the scanner's limit (the
    /// caller should abort the stream).
    bool Feed(std::string_view bytes, std::string& out);

    /// message_stop or an error was seen: nothing more will be emitted.
    bool Finished() const { return finished_; }
    /// The stream ended with an error event (or an unreadable one).
    bool Failed() const { return failed_.has_value(); }
    /// The error of a failed stream.
    const MappedError* Error() const { return failed_ ? &*failed_ : nullptr; }
    /// The usage seen so far (input from message_start, output from message_delta).
    const Usage& usage() const { return usage_; }
    /// Chunks with content or tool-call deltas emitted so far (a fallback completion-token
    /// estimate when the stream broke before its usage).
    int64_t content_chunks() const { return content_chunks_; }
    /// The stop_reason of message_delta; empty before.
    const std::string& stop_reason() const { return stop_reason_; }

private:
    void AppendChunkStart(std::string& out) const;
    void EmitError(MappedError error, std::string& out);

    Options options_;
    json::SseScanner scanner_;
    std::string id_;
    Usage usage_;
    std::string stop_reason_;
    /// Anthropic block index → OpenAI tool_calls index (-1 for blocks that are not tool_use).
    std::vector<int64_t> tool_index_;
    int64_t tool_count_ = 0;
    int64_t content_chunks_ = 0;
    bool started_ = false;
    bool finished_ = false;
    std::optional<MappedError> failed_;
};

}  // namespace conduit::gateway::anthropic
