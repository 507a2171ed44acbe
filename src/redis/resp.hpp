#pragma once

#include "core/error.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::redis {

/// One decoded RESP2 reply. Plain value type; no hiredis types leak out of resp.cpp.
struct Reply {
    enum class Type { kString, kStatus, kError, kInteger, kNil, kArray };
    Type type = Type::kNil;
    std::string str;  // kString (binary-safe), kStatus, kError
    int64_t integer = 0;
    std::vector<Reply> elements;  // kArray

    bool IsError() const { return type == Type::kError; }
    /// True for a kString/kStatus reply equal to `s`.
    bool Is(std::string_view s) const {
        return (type == Type::kString || type == Type::kStatus) && str == s;
    }
    /// Short human-readable form for logs and test failures.
    std::string Describe() const;
};

/// Appends the RESP encoding of the command `args` (an array of bulk strings; binary-safe) to
/// `out`. Pure function, any thread.
void AppendCommand(std::string& out, std::span<const std::string_view> args);
/// The RESP encoding of one command.
std::string EncodeCommand(std::span<const std::string_view> args);
inline std::string EncodeCommand(std::initializer_list<std::string_view> args) {
    return EncodeCommand(std::span<const std::string_view>(args.begin(), args.size()));
}

/// Incremental RESP reply parser (hiredis's redisReader). Feed bytes as they arrive and pull
/// complete replies. One thread at a time.
class ReplyReader {
public:
    ReplyReader();
    ~ReplyReader();
    ReplyReader(const ReplyReader&) = delete;
    ReplyReader& operator=(const ReplyReader&) = delete;

    /// Adds received bytes.
    void Feed(std::string_view bytes);
    /// The next complete reply, nullopt when more bytes are needed, or an error on a protocol
    /// violation (the stream is then unusable: close the connection).
    core::Result<std::optional<Reply>> Next();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace conduit::redis
