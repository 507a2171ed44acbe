#pragma once

#include "core/error.hpp"
#include "core/secret_box.hpp"
#include "domain/entities.hpp"
#include "domain/keys.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace conduit::domain {

/// A resolved, ready-to-call provider deployment for a model alias.
/// One usable provider key of a deployment (plaintext in memory only).
struct Credential {
    Id provider_key_id = 0;
    std::string api_key;
    std::string base_url;  // effective base URL, no trailing slash (".../v1")
    std::string organization;
    std::string authorization;  // "Bearer <api_key>", built once
};

struct Deployment {
    ModelMapping mapping;
    Provider provider;
    // The first credential (the primary key when enabled), or no key at all:
    Id provider_key_id = 0;  // 0 when the provider has no key (e.g. a local server)
    std::string api_key;     // plaintext, memory only
    std::string base_url;    // effective base URL, no trailing slash (".../v1")
    std::string organization;
    std::optional<ModelCost> cost;
    std::string authorization;  // "Bearer <api_key>" (empty without a key), built once
    /// Every enabled, decryptable key of the provider: primary first, then by id (key
    /// failover). Empty when the provider has no key.
    std::vector<Credential> credentials;
};

/// A virtual key as the request path sees it.
struct KeyEntry {
    VirtualKey key;
    ModelAllowList allow;
};

/// One entry of /v1/models.
struct ModelInfo {
    std::string id;
    std::string owned_by;
    int64_t created_s = 0;
};

/// Immutable view of everything the request path reads (keys, mappings, providers, costs),
/// rebuilt from the store after every change and swapped atomically (DESIGN §2). Lookups take no
/// lock and do no I/O. Thread-safe (const).
class Snapshot {
public:
    /// Builds a snapshot. Provider keys are decrypted with `box`; keys that fail to decrypt are
    /// skipped and reported in `warnings`.
    static std::shared_ptr<const Snapshot> Build(const ConfigData& data,
                                                 const core::SecretBox& box,
                                                 uint64_t version,
                                                 std::vector<std::string>* warnings = nullptr);

    /// Validates a presented virtual key: known, enabled, not expired. Errors are all 401
    /// (`invalid_api_key`) with a message that does not say which check failed.
    core::Result<const KeyEntry*> Authenticate(std::string_view presented_key,
                                               int64_t now_ms) const;
    /// Key by id (for admin and hub use).
    const KeyEntry* FindKey(Id key_id) const;
    /// Resolves `alias` for `key`: 403 `model_not_allowed` when outside allowedModels, 404
    /// `model_not_found` when no enabled deployment exists. Returns the first deployment in
    /// routing order (priority, then id).
    core::Result<const Deployment*> Resolve(const KeyEntry& key, std::string_view alias) const;
    /// The deployment of an enabled mapping by id (nullptr if gone or disabled).
    const Deployment* FindDeployment(Id mapping_id) const;
    /// Every enabled deployment of `alias` in routing order (empty if none).
    const std::vector<Deployment>* Deployments(std::string_view alias) const;
    /// The aliases `key` may use (deduplicated, sorted).
    std::vector<ModelInfo> ModelsFor(const KeyEntry& key) const;
    /// The group a key belongs to, if it exists.
    const VirtualKeyGroup* FindGroup(Id group_id) const;

    /// Router settings (strategies, fallbacks, retries).
    const RouterConfig& router() const { return router_; }

    uint64_t version() const { return version_; }
    size_t key_count() const { return keys_by_hash_.size(); }

private:
    uint64_t version_ = 0;
    uint64_t uid_ = 0;  // process-unique: keys per-thread memos (addresses and versions repeat)
    std::unordered_map<std::string, KeyEntry> keys_by_hash_;
    std::unordered_map<Id, const KeyEntry*> keys_by_id_;
    std::unordered_map<std::string, std::vector<Deployment>> deployments_;  // lowercase alias
    std::unordered_map<Id, VirtualKeyGroup> groups_;
    std::vector<ModelInfo> models_;  // every alias with a deployment, sorted
    RouterConfig router_;
};

using SnapshotPtr = std::shared_ptr<const Snapshot>;

/// Default base URL for providers that have a well-known public endpoint ("" otherwise).
std::string_view DefaultBaseUrl(ProviderType type);
/// Parses a provider type from the original's number or a name ("openai", "openai-compatible",
/// "anthropic", ...). Case-insensitive.
std::optional<ProviderType> ParseProviderType(std::string_view text);
/// Canonical lowercase name ("openai", "openai-compatible", ...).
std::string_view ProviderTypeName(ProviderType type);

}  // namespace conduit::domain
