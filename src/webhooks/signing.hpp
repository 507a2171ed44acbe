#pragma once

#include "core/error.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

/// Standard Webhooks symmetric signatures (HMAC-SHA256, `v1,` prefix, `whsec_` secrets).
/// Pure functions, thread-safe, no I/O.
namespace conduit::webhooks::signing {

/// Prefix of a serialised signing secret.
inline constexpr std::string_view kSecretPrefix = "whsec_";
/// Random bytes in a generated secret (the Standard Webhooks minimum is 24).
inline constexpr size_t kSecretBytes = 32;

/// A new secret: "whsec_" + base64 of 32 CSPRNG bytes.
std::string GenerateSecret();

/// The raw HMAC key of a "whsec_<base64>" secret (the prefix is optional, as in the reference
/// libraries). kInvalidRequest when the base64 is malformed or decodes to nothing.
core::Result<std::string> SecretKeyBytes(std::string_view whsec);

/// "v1,<base64 HMAC-SHA256(key_bytes, msg_id + "." + timestamp_s + "." + body)>".
std::string Sign(std::string_view key_bytes,
                 std::string_view msg_id,
                 int64_t timestamp_s,
                 std::string_view body);

/// The `webhook-signature` header value: one signature per key, space-separated (several keys
/// during a rotation, newest first). Empty when `keys` is empty.
std::string SignatureHeader(std::span<const std::string_view> keys,
                            std::string_view msg_id,
                            int64_t timestamp_s,
                            std::string_view body);

/// True if any `v1,` signature in `signature_header` (space-separated list; other versions are
/// ignored) is the signature of (msg_id, timestamp_s, body) under `key_bytes`. Compares in
/// constant time. Does not check the timestamp's age: receivers should also reject timestamps
/// too far from their clock (see VerifyTimestamp).
bool Verify(std::string_view key_bytes,
            std::string_view msg_id,
            int64_t timestamp_s,
            std::string_view body,
            std::string_view signature_header);

/// Same, from the header values as received (`webhook-timestamp` as text, which must be a
/// non-negative integer).
bool VerifyHeaders(std::string_view key_bytes,
                   std::string_view msg_id,
                   std::string_view timestamp_text,
                   std::string_view body,
                   std::string_view signature_header);

/// True if |now_s - timestamp_s| <= tolerance_s (Standard Webhooks replay protection; the
/// reference libraries use 300 s).
bool VerifyTimestamp(int64_t timestamp_s, int64_t now_s, int64_t tolerance_s = 300);

}  // namespace conduit::webhooks::signing
