#pragma once

#include <string>
#include <string_view>

namespace conduit::core {

/// A UUIDv7 (time-ordered) in canonical 36-char form. Thread-safe.
std::string NewUuidV7();
/// A request id: 32 lowercase hex chars (time-ordered). Thread-safe, no syscalls per call.
std::string NewRequestId();
/// True if `id` is acceptable to echo back as X-Request-Id: 1..128 chars of [A-Za-z0-9._:-].
bool IsValidRequestId(std::string_view id);

}  // namespace conduit::core
