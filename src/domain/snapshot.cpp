#include "domain/snapshot.hpp"

#include "core/clock.hpp"
#include "core/crypto.hpp"
#include "core/strings.hpp"
#include "obs/cache_stats.hpp"

#include <algorithm>
#include <atomic>

namespace conduit::domain {

namespace {

struct TypeName {
    ProviderType type;
    std::string_view name;
};
constexpr TypeName kTypeNames[] = {
    {ProviderType::kOpenAI, "openai"},
    {ProviderType::kGroq, "groq"},
    {ProviderType::kReplicate, "replicate"},
    {ProviderType::kFireworks, "fireworks"},
    {ProviderType::kOpenAICompatible, "openai-compatible"},
    {ProviderType::kMiniMax, "minimax"},
    {ProviderType::kUltravox, "ultravox"},
    {ProviderType::kElevenLabs, "elevenlabs"},
    {ProviderType::kCerebras, "cerebras"},
    {ProviderType::kSambaNova, "sambanova"},
    {ProviderType::kDeepInfra, "deepinfra"},
    {ProviderType::kAnthropic, "anthropic"},
};

std::string StripSlash(std::string s) {
    while (!s.empty() && s.back() == '/') {
        s.pop_back();
    }
    return s;
}

}  // namespace

std::string_view DefaultBaseUrl(ProviderType type) {
    switch (type) {
        case ProviderType::kOpenAI:
            return "https://api.openai.com/v1";
        case ProviderType::kGroq:
            return "https://api.groq.com/openai/v1";
        case ProviderType::kFireworks:
            return "https://api.fireworks.ai/inference/v1";
        case ProviderType::kCerebras:
            return "https://api.cerebras.ai/v1";
        case ProviderType::kSambaNova:
            return "https://api.sambanova.ai/v1";
        case ProviderType::kDeepInfra:
            return "https://api.deepinfra.com/v1/openai";
        case ProviderType::kAnthropic:
            return "https://api.anthropic.com/v1";
        default:
            return "";
    }
}

std::optional<ProviderType> ParseProviderType(std::string_view text) {
    auto t = core::Trim(text);
    if (auto n = core::ParseInt(t)) {
        for (const auto& tn : kTypeNames) {
            if (static_cast<int64_t>(tn.type) == *n) {
                return tn.type;
            }
        }
        return std::nullopt;
    }
    std::string lower = core::ToLower(t);
    std::erase(lower, '_');
    for (const auto& tn : kTypeNames) {
        std::string name(tn.name);
        std::string compact = name;
        std::erase(compact, '-');
        if (lower == name || lower == compact) {
            return tn.type;
        }
    }
    return std::nullopt;
}

std::string_view ProviderTypeName(ProviderType type) {
    for (const auto& tn : kTypeNames) {
        if (tn.type == type) {
            return tn.name;
        }
    }
    return "unknown";
}

std::shared_ptr<const Snapshot> Snapshot::Build(const ConfigData& data,
                                                const core::SecretBox& box,
                                                uint64_t version,
                                                std::vector<std::string>* warnings) {
    static std::atomic<uint64_t> next_uid{1};
    auto snap = std::make_shared<Snapshot>();
    snap->version_ = version;
    snap->router_ = data.router;
    snap->uid_ = next_uid.fetch_add(1, std::memory_order_relaxed);
    for (const auto& g : data.groups) {
        snap->groups_.emplace(g.id, g);
    }
    snap->keys_by_hash_.reserve(data.keys.size());
    for (const auto& k : data.keys) {
        KeyEntry e{k, ModelAllowList(k.allowed_models)};
        auto [it, inserted] = snap->keys_by_hash_.emplace(k.key_hash, std::move(e));
        if (inserted) {
            snap->keys_by_id_.emplace(k.id, &it->second);
        }
    }

    std::unordered_map<Id, const Provider*> providers;
    for (const auto& p : data.providers) {
        providers.emplace(p.id, &p);
    }
    // Each provider's usable keys: enabled ones, primary first, then by id.
    std::unordered_map<Id, std::vector<const ProviderKey*>> provider_keys;
    for (const auto& k : data.provider_keys) {
        if (k.is_enabled) {
            provider_keys[k.provider_id].push_back(&k);
        }
    }
    for (auto& [pid, list] : provider_keys) {
        std::stable_sort(list.begin(), list.end(), [](const ProviderKey* a, const ProviderKey* b) {
            if (a->is_primary != b->is_primary) {
                return a->is_primary;
            }
            return a->id < b->id;
        });
    }
    // Cost per mapping: highest priority, then the newest.
    std::unordered_map<Id, const ModelCost*> cost_for_mapping;
    for (const auto& c : data.costs) {
        for (Id mid : c.mapping_ids) {
            auto it = cost_for_mapping.find(mid);
            if (it == cost_for_mapping.end() || c.priority > it->second->priority ||
                (c.priority == it->second->priority && c.id > it->second->id)) {
                cost_for_mapping[mid] = &c;
            }
        }
    }

    for (const auto& m : data.mappings) {
        if (!m.is_enabled) {
            continue;
        }
        auto pit = providers.find(m.provider_id);
        if (pit == providers.end() || !pit->second->is_enabled) {
            continue;
        }
        Deployment d;
        d.mapping = m;
        d.provider = *pit->second;
        std::string provider_base = pit->second->base_url;
        if (provider_base.empty()) {
            provider_base = std::string(DefaultBaseUrl(pit->second->type));
        }
        bool has_keys = false;
        if (auto kit = provider_keys.find(m.provider_id); kit != provider_keys.end()) {
            has_keys = !kit->second.empty();
            for (const ProviderKey* pk : kit->second) {
                auto plain = box.Open(pk->api_key_sealed);
                if (!plain) {
                    if (warnings != nullptr) {
                        warnings->push_back("provider key " + std::to_string(pk->id) +
                                            " cannot be decrypted (wrong encryption key?)");
                    }
                    continue;
                }
                std::string base = pk->base_url.empty() ? provider_base : pk->base_url;
                if (base.empty()) {
                    continue;  // reported below when no credential is left
                }
                Credential c;
                c.provider_key_id = pk->id;
                c.api_key = std::move(*plain);
                c.base_url = StripSlash(std::move(base));
                c.organization = pk->organization;
                if (!c.api_key.empty()) {
                    c.authorization = "Bearer " + c.api_key;
                }
                d.credentials.push_back(std::move(c));
            }
        }
        if (has_keys && d.credentials.empty()) {
            if (warnings != nullptr) {
                warnings->push_back("mapping " + std::to_string(m.id) + " (" + m.model_alias +
                                    "): no usable provider key");
            }
            continue;
        }
        if (!d.credentials.empty()) {
            const Credential& first = d.credentials.front();
            d.provider_key_id = first.provider_key_id;
            d.api_key = first.api_key;
            d.base_url = first.base_url;
            d.organization = first.organization;
            d.authorization = first.authorization;
        } else {
            if (provider_base.empty()) {
                if (warnings != nullptr) {
                    warnings->push_back("mapping " + std::to_string(m.id) + " (" + m.model_alias +
                                        "): provider has no base URL");
                }
                continue;
            }
            d.base_url = StripSlash(std::move(provider_base));
        }
        if (auto cit = cost_for_mapping.find(m.id); cit != cost_for_mapping.end()) {
            d.cost = *cit->second;
        }
        snap->deployments_[core::ToLower(m.model_alias)].push_back(std::move(d));
    }
    for (auto& [alias, list] : snap->deployments_) {
        std::stable_sort(list.begin(), list.end(), [](const Deployment& a, const Deployment& b) {
            if (a.mapping.priority != b.mapping.priority) {
                return a.mapping.priority > b.mapping.priority;
            }
            return a.mapping.id < b.mapping.id;
        });
        const Deployment& first = list.front();
        snap->models_.push_back(ModelInfo{first.mapping.model_alias,
                                          std::string(ProviderTypeName(first.provider.type)),
                                          first.mapping.created_at_ms / 1000});
    }
    std::sort(snap->models_.begin(), snap->models_.end(),
              [](const ModelInfo& a, const ModelInfo& b) { return a.id < b.id; });
    return snap;
}

core::Result<const KeyEntry*> Snapshot::Authenticate(std::string_view presented_key,
                                                     int64_t now_ms) const {
    auto invalid = [] {
        return core::Fail(core::ErrorCode::kUnauthorized,
                          "Invalid API key provided. Use a valid Conduit virtual key.");
    };
    if (presented_key.empty()) {
        return core::Fail(core::ErrorCode::kUnauthorized,
                          "Missing API key. Send 'Authorization: Bearer condt_…' or "
                          "'X-API-Key'.");
    }
    // Per-thread memo of presented key → entry for this snapshot, so the SHA-256 runs once per
    // key per thread per configuration version instead of on every request. Misses are not
    // memoised (a flood of wrong keys must not grow it), and it is bounded.
    struct Memo {
        uint64_t snapshot_uid = 0;
        std::unordered_map<std::string, const KeyEntry*> entries;
    };
    thread_local Memo memo;
    // Cache statistics (region virtual_keys): a memo hit, or a miss that hashed the key.
    auto& stats = obs::CacheStats::Global().Region(obs::CacheRegion::kVirtualKeys);
    const int64_t started_ns = core::SystemClock::SteadyNowNs();
    auto elapsed = [started_ns] {
        return static_cast<uint64_t>(core::SystemClock::SteadyNowNs() - started_ns);
    };
    if (memo.snapshot_uid != uid_) {
        memo.snapshot_uid = uid_;
        stats.Remove(memo.entries.size());  // invalidated by a new configuration
        memo.entries.clear();
    }
    const KeyEntry* found = nullptr;
    if (auto m = memo.entries.find(std::string(presented_key)); m != memo.entries.end()) {
        found = m->second;
        stats.Hit(elapsed());
    } else {
        std::string hash = HashVirtualKey(presented_key);
        auto it = keys_by_hash_.find(hash);
        if (it == keys_by_hash_.end() || !core::ConstantTimeEquals(it->second.key.key_hash, hash)) {
            stats.Miss(elapsed());
            return invalid();
        }
        found = &it->second;
        if (memo.entries.size() >= 8192) {
            stats.Evict(memo.entries.size());
            memo.entries.clear();
        }
        memo.entries.emplace(std::string(presented_key), found);
        stats.Set();
        stats.Miss(elapsed());
    }
    const KeyEntry& e = *found;
    if (!e.key.is_enabled) {
        return core::Fail(core::ErrorCode::kUnauthorized, "This API key is disabled.");
    }
    if (e.key.expires_at_ms && *e.key.expires_at_ms <= now_ms) {
        return core::Fail(core::ErrorCode::kUnauthorized, "This API key has expired.");
    }
    return &e;
}

const KeyEntry* Snapshot::FindKey(Id key_id) const {
    auto it = keys_by_id_.find(key_id);
    return it == keys_by_id_.end() ? nullptr : it->second;
}

core::Result<const Deployment*> Snapshot::Resolve(const KeyEntry& key,
                                                  std::string_view alias) const {
    if (!key.allow.Allows(alias)) {
        return core::Fail(
            core::ErrorCode::kModelNotAllowed,
            "This API key is not allowed to use the model '" + std::string(alias) + "'.", "model");
    }
    const auto* list = Deployments(alias);
    if (list == nullptr || list->empty()) {
        return core::Fail(core::ErrorCode::kModelNotFound,
                          "The model '" + std::string(alias) + "' does not exist.", "model");
    }
    return &list->front();
}

const std::vector<Deployment>* Snapshot::Deployments(std::string_view alias) const {
    auto it = deployments_.find(core::ToLower(alias));
    return it == deployments_.end() ? nullptr : &it->second;
}

std::vector<ModelInfo> Snapshot::ModelsFor(const KeyEntry& key) const {
    std::vector<ModelInfo> out;
    for (const auto& m : models_) {
        if (key.allow.Allows(m.id)) {
            out.push_back(m);
        }
    }
    return out;
}

const Deployment* Snapshot::FindDeployment(Id mapping_id) const {
    for (const auto& [alias, list] : deployments_) {
        for (const auto& d : list) {
            if (d.mapping.id == mapping_id) {
                return &d;
            }
        }
    }
    return nullptr;
}

const VirtualKeyGroup* Snapshot::FindGroup(Id group_id) const {
    auto it = groups_.find(group_id);
    return it == groups_.end() ? nullptr : &it->second;
}

}  // namespace conduit::domain
