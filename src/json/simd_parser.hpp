#pragma once

// Private to src/json: simdjson is a PRIVATE dependency of conduit_json, so no public header may
// include this file.

#include <simdjson.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace conduit::json::detail {

/// Documents at most this large are parsed with the calling thread's long-lived parser; larger
/// ones get a one-off parser so a rare huge body does not pin its buffers to the thread forever.
inline constexpr size_t kMaxRetainedParserCapacity = size_t{1} << 20;

/// The calling thread's reusable On-Demand parser. Only one document may be live per thread at a
/// time; every user in this component finishes with its document before returning.
simdjson::ondemand::parser& ThreadParser();

/// Calls `fn(parser)` with the thread's parser for documents up to kMaxRetainedParserCapacity
/// bytes, else with a parser that lives only for the call.
template <class F>
decltype(auto) WithParser(size_t document_size, F&& fn) {
    if (document_size <= kMaxRetainedParserCapacity) {
        return fn(ThreadParser());
    }
    simdjson::ondemand::parser one_off;
    return fn(one_off);
}

/// Makes `s` safe to hand to simdjson as a padded buffer: grows its capacity by SIMDJSON_PADDING
/// bytes (initialising them) without changing its size or contents.
void EnsurePadding(std::string& s);

/// Copies `text` into the calling thread's scratch buffer with padding and returns a view of it,
/// valid until the next call on this thread.
simdjson::padded_string_view PaddedCopy(std::string_view text);

}  // namespace conduit::json::detail
