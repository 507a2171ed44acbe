#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

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
