#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace conduit::core {

/// SHA-256 of `data` as 64 lowercase hex characters. Thread-safe.
std::string Sha256Hex(std::string_view data);
/// Raw 32-byte SHA-256 digest.
std::string Sha256Raw(std::string_view data);
/// SHA-1 of `data` as 40 lowercase hex characters. Only for identifiers that are defined as
/// SHA-1 (Redis script ids), never for security. Thread-safe.
std::string Sha1Hex(std::string_view data);
/// Raw 32-byte HMAC-SHA256(key, data).
std::string HmacSha256(std::string_view key, std::string_view data);
/// `n` bytes from the OpenSSL CSPRNG. Aborts if the CSPRNG fails (never returns weak bytes).
std::string RandomBytes(size_t n);
/// Uniform random 64-bit value from the CSPRNG.
uint64_t RandomU64();

/// Standard base64 with padding.
std::string Base64Encode(std::string_view data);
/// base64url without padding (RFC 4648 §5).
std::string Base64UrlEncode(std::string_view data);
/// Decodes standard or url-safe base64, padding optional. Returns false on invalid input.
bool Base64Decode(std::string_view text, std::string& out);

/// Lowercase hex of arbitrary bytes.
std::string HexEncode(std::string_view data);

/// Compares two secrets in time that depends only on their lengths, never on their contents.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace conduit::core
