#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace conduit::domain {

/// Prefix of every virtual key.
inline constexpr std::string_view kVirtualKeyPrefix = "condt_";

/// A new virtual key: "condt_" + base64url(32 random bytes) without padding (43 chars).
std::string GenerateVirtualKey();
/// The stored form of a key: lowercase hex SHA-256 of the full key text.
std::string HashVirtualKey(std::string_view key);
/// True if `key` has the shape of a virtual key (prefix + 43 base64url chars).
bool LooksLikeVirtualKey(std::string_view key);
/// The displayable prefix of a key ("condt_" + first 4 random chars).
std::string KeyDisplayPrefix(std::string_view key);

/// Parsed `allowedModels`: comma-separated aliases, case-insensitive, `prefix*` wildcards.
/// An empty list allows every model.
class ModelAllowList {
public:
    ModelAllowList() = default;
    explicit ModelAllowList(std::string_view spec);
    bool Allows(std::string_view alias) const;
    bool AllowsAll() const { return exact_.empty() && prefixes_.empty(); }

private:
    std::vector<std::string> exact_;     // lowercase
    std::vector<std::string> prefixes_;  // lowercase, without '*'
};

}  // namespace conduit::domain
