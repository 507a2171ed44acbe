#pragma once

#include "media/media_store.hpp"
#include "net/exchange.hpp"

#include <cstdint>
#include <optional>
#include <string_view>

namespace conduit::media {

/// A parsed single byte range, resolved against the object's size.
struct ByteRange {
    uint64_t start = 0;
    uint64_t length = 0;
};

/// Parses a `Range` header ("bytes=a-b", "bytes=a-", "bytes=-n") against `size`. nullopt when
/// the header is absent or not a single bytes range (serve the whole object); `satisfiable`
/// false for a range past the end (answer 416).
std::optional<ByteRange> ParseRange(std::string_view header, uint64_t size, bool& satisfiable);

/// Serves `GET|HEAD /v1/media/{key}`: ETag / If-None-Match (304), Range (206 / 416),
/// Cache-Control, and a body streamed in 64 KiB pieces with backpressure (the object is never
/// held whole in memory). Loop thread of `ex`.
void ServeMedia(const net::ExchangePtr& ex, MediaStore& store, std::string_view key);

}  // namespace conduit::media
