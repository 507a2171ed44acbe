#include "json/simd_parser.hpp"

namespace conduit::json::detail {

simdjson::ondemand::parser& ThreadParser() {
    thread_local simdjson::ondemand::parser parser;
    return parser;
}

void EnsurePadding(std::string& s) {
    const size_t size = s.size();
    if (s.capacity() - size >= simdjson::SIMDJSON_PADDING) {
        return;
    }
    // append + resize rather than reserve: the padding bytes are then initialised, so tools
    // such as valgrind/MSan see no reads of indeterminate memory.
    s.append(simdjson::SIMDJSON_PADDING, ' ');
    s.resize(size);
}

simdjson::padded_string_view PaddedCopy(std::string_view text) {
    thread_local std::string scratch;
    if (scratch.capacity() > kMaxRetainedParserCapacity &&
        text.size() <= kMaxRetainedParserCapacity) {
        std::string().swap(scratch);  // give back a buffer grown by one rare huge input
    }
    scratch.assign(text);
    EnsurePadding(scratch);
    return simdjson::padded_string_view(scratch.data(), scratch.size(), scratch.capacity());
}

}  // namespace conduit::json::detail
