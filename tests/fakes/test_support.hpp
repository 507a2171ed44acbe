#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace conduit::testing {

/// Polls `cond` every few milliseconds until it is true or `timeout` passes. Returns the final
/// value of `cond`. Use instead of fixed sleeps.
bool WaitFor(const std::function<bool()>& cond,
             std::chrono::milliseconds timeout = std::chrono::seconds(10));

/// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

}  // namespace conduit::testing

namespace conduit::testing {

/// A blocking TCP client for protocol-level tests (raw bytes, timeouts in ms).
class RawClient {
public:
    RawClient(const std::string& host, uint16_t port);
    ~RawClient();
    RawClient(const RawClient&) = delete;
    RawClient& operator=(const RawClient&) = delete;
    bool connected() const { return fd_ >= 0; }
    bool Send(std::string_view data);
    /// Reads until `needle` appears, the peer closes, or `timeout_ms` passes. Returns all bytes
    /// read so far.
    std::string ReadUntil(std::string_view needle, int timeout_ms);
    /// Reads until the peer closes or the timeout passes; `closed` reports which.
    std::string ReadToClose(int timeout_ms, bool* closed);
    void Close();

private:
    int fd_ = -1;
};

}  // namespace conduit::testing
