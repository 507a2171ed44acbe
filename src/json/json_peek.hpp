#pragma once

#include "core/error.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace conduit::json {

/// The few fields of an OpenAI request body (chat, completions, embeddings, images) the gateway
/// needs before forwarding it, plus the byte positions needed to rewrite it without building a
/// DOM. Produced by PeekRequest; offsets refer to the body it was given. A JSON `null` counts as
/// an absent field everywhere.
struct PeekedRequest {
    /// `model`, unescaped. nullopt when the key is absent or null.
    std::optional<std::string> model;
    /// Byte span of the raw `model` value token in the body: the string literal including its
    /// quotes, or the `null` token. Length 0 means there is no `model` key.
    size_t model_offset = 0;
    size_t model_length = 0;
    /// `stream`.
    std::optional<bool> stream;
    /// True when `stream_options` is present and an object.
    bool has_stream_options = false;
    /// `stream_options.include_usage`.
    std::optional<bool> include_usage;
    /// `max_completion_tokens` when present, else `max_tokens`.
    std::optional<int64_t> max_tokens;
    /// `n`.
    std::optional<int64_t> n;
    /// `encoding_format` (embeddings).
    std::optional<std::string> encoding_format;
    /// Whether `messages` / `prompt` / `input` is present and not null (its type is not checked).
    bool has_messages = false;
    bool has_prompt = false;
    bool has_input = false;
    /// `size` (images).
    std::optional<std::string> size;
    /// `response_format` when it is a plain string (images: "url" / "b64_json"); an object
    /// (chat's `{"type":"json_object"}`) is left to the upstream and leaves this empty.
    std::optional<std::string> response_format_str;

    // Positions used by RewriteForUpstream. All offsets are byte offsets into the body.

    /// Offset of the top-level `{`.
    size_t object_offset = 0;
    /// True when the top-level object has no members.
    bool object_empty = true;
    /// Raw token of the `stream_options` value: its `{`, or the `null` token. Length 0 means
    /// there is no `stream_options` key.
    size_t stream_options_offset = 0;
    size_t stream_options_length = 0;
    /// True when `stream_options` is an object without members.
    bool stream_options_empty = true;
    /// Raw token of the `stream_options.include_usage` value (`true`, `false` or `null`). Length
    /// 0 means there is no such key.
    size_t include_usage_offset = 0;
    size_t include_usage_length = 0;
};

/// Reads the fields of PeekedRequest from an OpenAI request body with simdjson On-Demand, without
/// building a DOM and without allocating beyond the returned strings. Every top-level member is
/// visited, so truncated or malformed JSON and trailing bytes after the object are rejected (the
/// contents of members it does not read are only checked for balanced brackets and valid
/// strings; the upstream validates them). Fields it reads are type-checked.
///
/// May grow `body`'s capacity to add simdjson's padding; its size and contents are unchanged.
/// Errors: kInvalidRequest with "We could not parse the JSON body of your request." for
/// malformed JSON, "must be a JSON object" for other top-level values, and a message plus
/// `param` naming the field for a wrongly typed field. Any thread; uses a thread-local parser.
core::Result<PeekedRequest> PeekRequest(std::string& body);

/// True when the client asked for a stream (`stream: true`) but not for the final usage chunk
/// (`stream_options.include_usage` absent, null or false).
bool NeedsIncludeUsage(const PeekedRequest& peek);

/// Returns `body` with at most two surgical edits, copying it once and re-serialising nothing:
/// - when `new_model` is set, the `model` value becomes that string (a `"model"` member is added
///   when the body has none);
/// - when `force_include_usage` is set and NeedsIncludeUsage(peek), `stream_options.include_usage`
///   becomes true: a `"stream_options":{"include_usage":true}` member is added after the opening
///   `{` when absent, `"include_usage":true` is added to an existing object, or an existing
///   `false`/`null` value is replaced.
/// `peek` must come from PeekRequest on this same body. Pure function, any thread.
std::string RewriteForUpstream(std::string_view body,
                               const PeekedRequest& peek,
                               std::optional<std::string_view> new_model,
                               bool force_include_usage);

/// RewriteForUpstream(body, peek, new_model, false): only the model changes.
std::string ReplaceModel(std::string_view body,
                         const PeekedRequest& peek,
                         std::string_view new_model);

/// RewriteForUpstream(body, peek, nullopt, true): asks for usage on a stream when the client did
/// not; otherwise returns an unchanged copy.
std::string ForceIncludeUsage(std::string_view body, const PeekedRequest& peek);

}  // namespace conduit::json
