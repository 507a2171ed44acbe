#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace conduit::core {

/// Authenticated encryption for secrets at rest (provider API keys, webhook secrets):
/// AES-256-GCM with a random 96-bit nonce per message. Thread-safe (stateless after
/// construction).
class SecretBox {
public:
    /// `key` must be 32 raw bytes (see DeriveKey).
    explicit SecretBox(std::string key);
    /// A 32-byte key from arbitrary key material (SHA-256).
    static std::string DeriveKey(std::string_view material);

    /// "v1:" + base64(nonce ‖ ciphertext ‖ tag).
    std::string Seal(std::string_view plaintext) const;
    /// Decrypts and authenticates; nullopt if tampered, malformed or sealed with another key.
    std::optional<std::string> Open(std::string_view sealed) const;

private:
    std::string key_;
};

}  // namespace conduit::core
