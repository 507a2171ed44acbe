#pragma once

#include "core/error.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace conduit::media {

/// Metadata of a stored object.
struct MediaInfo {
    std::string key;
    std::string content_type;
    uint64_t size = 0;
    std::string etag;  // strong validator (content hash or size+mtime)
    int64_t modified_at_ms = 0;
};

/// Streams an object into the store; nothing is visible under the key until Commit().
class MediaWriter {
public:
    virtual ~MediaWriter() = default;
    virtual core::Result<void> Append(std::string_view bytes) = 0;
    /// Makes the object visible atomically. After Commit() or destruction the writer is dead;
    /// destroying an uncommitted writer discards the partial object.
    virtual core::Result<MediaInfo> Commit() = 0;
};

/// Reads a byte range of an object in pieces (large files are never held whole in memory).
class MediaReader {
public:
    virtual ~MediaReader() = default;
    /// Up to `max` bytes of the requested range; empty when the range is exhausted.
    virtual core::Result<std::string> Next(size_t max) = 0;
};

/// The media storage port: generated images and videos. Adapter today: a local directory in the
/// data directory; the port leaves room for S3 (PublicUrl may then point at the bucket).
/// Thread-safe; calls block on the file system (small reads/writes to page cache; run large work
/// off the event loops or in bounded pieces).
class MediaStore {
public:
    virtual ~MediaStore() = default;
    /// Starts writing `key` (a relative path such as "tasks/task_x/0.png"; '/' allowed, no "..").
    virtual core::Result<std::unique_ptr<MediaWriter>> Create(std::string key,
                                                              std::string content_type) = 0;
    virtual core::Result<std::optional<MediaInfo>> Stat(std::string_view key) = 0;
    /// Opens [offset, offset + length) of `key` (length clipped to the object's end).
    virtual core::Result<std::unique_ptr<MediaReader>> Open(std::string_view key,
                                                            uint64_t offset,
                                                            uint64_t length) = 0;
    virtual core::Result<bool> Delete(std::string_view key) = 0;
    /// The URL clients use to fetch `key` ("<public base>/v1/media/<key>").
    virtual std::string PublicUrl(std::string_view key) const = 0;
};

/// A MediaStore in `root` (created if missing). `public_base_url` is the gateway's external base
/// URL ("http://host:port"), used by PublicUrl().
core::Result<std::unique_ptr<MediaStore>> OpenLocalMediaStore(std::string root,
                                                              std::string public_base_url);

/// True if `key` is a safe relative object key: non-empty, at most 512 chars, segments of
/// [A-Za-z0-9._-], no empty, "." or ".." segment.
bool IsValidMediaKey(std::string_view key);

}  // namespace conduit::media
