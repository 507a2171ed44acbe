// /api/ProviderCredentials: providers (CRUD) and their API keys ({providerId}/keys CRUD and
// set-primary). API keys are sealed with the SecretBox before they reach the store and are only
// ever shown masked.

#include "admin/dto.hpp"
#include "admin/handler_support.hpp"
#include "core/strings.hpp"
#include "domain/snapshot.hpp"

#include <spdlog/spdlog.h>

namespace conduit::admin::detail {

namespace {

namespace bj = boost::json;

constexpr std::string_view kWhat = "Provider";
constexpr std::string_view kKeyWhat = "Provider key";
constexpr size_t kMaxApiKeyChars = 4096;

// --- Body parsing ----------------------------------------------------------------------------

/// `providerType`: the original's number (1 OpenAI, 5 OpenAICompatible, ...) or a name
/// ("openai", "openai-compatible", "anthropic", ...).
Field<domain::ProviderType> ReadProviderType(BodyReader& r) {
    Field<domain::ProviderType> out;
    const bj::value* v = r.Raw("providerType");
    if (!r.ok()) {
        return out;
    }
    if (v == nullptr || v->is_null()) {
        if (r.create()) {
            r.Fail(BadParam("providerType", "Missing required parameter: 'providerType'."));
        } else if (v != nullptr) {
            r.Fail(BadParam("providerType", "'providerType' cannot be null."));
        }
        return out;
    }
    std::optional<domain::ProviderType> type;
    if (const bj::string* s = v->if_string()) {
        type = domain::ParseProviderType(std::string_view(s->data(), s->size()));
    } else if (const int64_t* i = v->if_int64()) {
        type = domain::ParseProviderType(std::to_string(*i));
    } else if (const uint64_t* u = v->if_uint64()) {
        type = domain::ParseProviderType(std::to_string(*u));
    }
    if (!type) {
        r.Fail(BadParam("providerType",
                        "Invalid value for 'providerType': expected a provider type number (1 "
                        "OpenAI, 5 OpenAICompatible, ...) or a name such as \"openai\", "
                        "\"openai-compatible\" or \"anthropic\"."));
        return out;
    }
    out.present = true;
    out.value = *type;
    return out;
}

/// `baseUrl`: an absolute http(s) URL; "" or null clears it.
Field<std::string> ReadBaseUrl(BodyReader& r) {
    Field<std::string> out = r.Text("baseUrl", {.max_chars = 2048});
    if (out.present && out.value) {
        std::string trimmed(core::Trim(*out.value));
        if (trimmed.empty()) {
            if (r.create()) {
                out.present = false;
            } else {
                out.value.reset();  // "" clears, like null
            }
            return out;
        }
        if (!IsHttpUrl(trimmed)) {
            r.Fail(BadParam("baseUrl",
                            "Invalid value for 'baseUrl': expected an absolute http:// or "
                            "https:// URL."));
            return {};
        }
        out.value = std::move(trimmed);
    }
    return out;
}

struct ProviderPatch {
    Field<domain::ProviderType> type;
    Field<std::string> name;
    Field<std::string> base_url;
    Field<bool> is_enabled;
    Field<std::string> api_key;  // creates (or replaces) the primary key

    void ApplyTo(domain::Provider& p) const {
        type.ApplyTo(p.type, p.type);
        name.ApplyTo(p.name);
        base_url.ApplyTo(p.base_url);
        is_enabled.ApplyTo(p.is_enabled, true);
    }
};

core::Result<ProviderPatch> ParseProvider(const net::Request& req, bool create) {
    auto obj = ParseBody(req);
    if (!obj) {
        return Err(obj);
    }
    BodyReader r(*obj, create);
    ProviderPatch p;
    p.type = ReadProviderType(r);
    p.name = r.Text("providerName",
                    {.required = true, .nullable = false, .min_chars = 1, .max_chars = 100});
    p.base_url = ReadBaseUrl(r);
    p.is_enabled = r.Bool("isEnabled");
    p.api_key = r.Text("apiKey", {.max_chars = kMaxApiKeyChars});
    if (p.api_key.present && (!p.api_key.value || core::Trim(*p.api_key.value).empty())) {
        p.api_key = {};  // "" or null: no key to store
    }
    if (!r.ok()) {
        return tl::unexpected(*r.error());
    }
    return p;
}

/// 400 baseUrl when the provider has no base URL and its type has no well-known one.
core::Result<void> CheckBaseUrl(const domain::Provider& p) {
    if (p.base_url.empty() && domain::DefaultBaseUrl(p.type).empty()) {
        return tl::unexpected(
            BadParam("baseUrl", "'baseUrl' is required for providers of type '" +
                                    std::string(domain::ProviderTypeName(p.type)) + "'."));
    }
    return {};
}

struct ProviderKeyPatch {
    Field<std::string> api_key;
    Field<std::string> base_url;
    Field<std::string> organization;
    Field<bool> is_primary;
    Field<bool> is_enabled;
    Field<std::string> key_name;
};

core::Result<ProviderKeyPatch> ParseProviderKey(const net::Request& req, bool create) {
    auto obj = ParseBody(req);
    if (!obj) {
        return Err(obj);
    }
    BodyReader r(*obj, create);
    ProviderKeyPatch p;
    p.api_key =
        r.Text("apiKey",
               {.required = true, .nullable = false, .min_chars = 1, .max_chars = kMaxApiKeyChars});
    p.base_url = ReadBaseUrl(r);
    p.organization = r.Text("organization", {.max_chars = 200});
    p.is_primary = r.Bool("isPrimary");
    p.is_enabled = r.Bool("isEnabled");
    p.key_name = r.Text("keyName", {.max_chars = 100});
    if (!r.ok()) {
        return tl::unexpected(*r.error());
    }
    return p;
}

/// Seals `api_key` into `k` (ciphertext + display hint). Executor thread.
void SealInto(const core::SecretBox& box, std::string_view api_key, domain::ProviderKey& k) {
    std::string_view trimmed = core::Trim(api_key);
    k.api_key_sealed = box.Seal(trimmed);
    k.key_hint = ProviderKeyHint(trimmed);
}

// --- Helpers (executor thread) ---------------------------------------------------------------

core::Result<int64_t> KeyCount(store::Store& store, domain::Id provider_id) {
    auto keys = store.ListProviderKeys(provider_id);
    if (!keys) {
        return Err(keys);
    }
    return static_cast<int64_t>(keys->size());
}

core::Result<domain::Provider> RequireProvider(store::Store& store, domain::Id id) {
    auto p = store.GetProvider(id);
    if (!p) {
        return Err(p);
    }
    if (!*p) {
        return tl::unexpected(NotFound(kWhat, id));
    }
    return std::move(**p);
}

/// The key `key_id` of provider `provider_id` (404 if either is missing or they do not match).
core::Result<domain::ProviderKey> RequireProviderKey(store::Store& store,
                                                     domain::Id provider_id,
                                                     domain::Id key_id) {
    if (auto p = RequireProvider(store, provider_id); !p) {
        return Err(p);
    }
    auto k = store.GetProviderKey(key_id);
    if (!k) {
        return Err(k);
    }
    if (!*k || (*k)->provider_id != provider_id) {
        return tl::unexpected(NotFound(kKeyWhat, key_id));
    }
    return std::move(**k);
}

core::Result<std::string> ProviderJson(store::Store& store, const domain::Provider& p) {
    auto count = KeyCount(store, p.id);
    if (!count) {
        return Err(count);
    }
    JsonWriter w;
    WriteProvider(w, p, *count);
    return w.Take();
}

std::string ProviderKeyJson(const domain::ProviderKey& k) {
    JsonWriter w;
    WriteProviderKey(w, k);
    return w.Take();
}

// --- Providers -------------------------------------------------------------------------------

void List(const net::ExchangePtr& ex, const DepsPtr& deps) {
    RunOnStore(deps, ex, [](AdminDeps& d) -> Reply {
        auto providers = d.store.ListProviders();
        if (!providers) {
            return Err(providers);
        }
        JsonWriter w;
        w.BeginArray();
        for (const auto& p : *providers) {
            auto count = KeyCount(d.store, p.id);
            if (!count) {
                return Err(count);
            }
            WriteProvider(w, p, *count);
        }
        w.EndArray();
        return JsonReply(200, w.Take());
    });
}

void Get(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    RunOnStore(deps, ex, [id = *id](AdminDeps& d) -> Reply {
        auto p = RequireProvider(d.store, id);
        if (!p) {
            return Err(p);
        }
        auto body = ProviderJson(d.store, *p);
        if (!body) {
            return Err(body);
        }
        return JsonReply(200, std::move(*body));
    });
}

void Create(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto patch = ParseProvider(ex->request(), /*create=*/true);
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    domain::Provider draft;
    patch->ApplyTo(draft);
    if (auto r = CheckBaseUrl(draft); !r) {
        RespondError(ex, r.error());
        return;
    }
    RunOnStore(deps, ex, [provider = draft, api_key = patch->api_key.value](AdminDeps& d) -> Reply {
        domain::Provider p = provider;
        p.created_at_ms = p.updated_at_ms = d.clock.NowUnixMs();
        auto created = d.store.CreateProvider(p);
        if (!created) {
            return Err(created);
        }
        if (api_key) {
            domain::ProviderKey k;
            k.provider_id = created->id;
            k.is_primary = true;
            k.created_at_ms = k.updated_at_ms = p.created_at_ms;
            SealInto(d.secret_box, *api_key, k);
            if (auto key = d.store.CreateProviderKey(k); !key) {
                // Not one transaction: undo the provider so that a retry does not duplicate it.
                if (auto undo = d.store.DeleteProvider(created->id); !undo) {
                    spdlog::error("admin: could not remove provider {} after its key failed: {}",
                                  created->id, undo.error().message);
                }
                return Err(key);
            }
        }
        ReloadConfig(d, "provider", {"Provider", "Created", created->id, {}});
        spdlog::info("admin: created provider {} ({})", created->id,
                     domain::ProviderTypeName(created->type));
        auto body = ProviderJson(d.store, *created);
        if (!body) {
            return Err(body);
        }
        return JsonReply(201, std::move(*body));
    });
}

void Update(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    auto patch = ParseProvider(ex->request(), /*create=*/false);
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    RunOnStore(deps, ex, [id = *id, patch = std::move(*patch)](AdminDeps& d) -> Reply {
        auto existing = RequireProvider(d.store, id);
        if (!existing) {
            return Err(existing);
        }
        domain::Provider p = *existing;
        patch.ApplyTo(p);
        if (auto r = CheckBaseUrl(p); !r) {
            return Err(r);
        }
        const int64_t now = d.clock.NowUnixMs();
        p.updated_at_ms = now;
        auto updated = d.store.UpdateProvider(p);
        if (!updated) {
            return Err(updated);
        }
        if (!*updated) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        if (patch.api_key.value) {
            // Replace the primary key's secret, or add a primary key when there is none.
            auto keys = d.store.ListProviderKeys(id);
            if (!keys) {
                return Err(keys);
            }
            domain::ProviderKey k;
            for (const auto& existing_key : *keys) {
                if (existing_key.is_primary) {
                    k = existing_key;
                }
            }
            SealInto(d.secret_box, *patch.api_key.value, k);
            k.updated_at_ms = now;
            if (k.id == 0) {
                k.provider_id = id;
                k.is_primary = true;
                k.created_at_ms = now;
                if (auto r = d.store.CreateProviderKey(k); !r) {
                    return Err(r);
                }
            } else if (auto r = d.store.UpdateProviderKey(k); !r) {
                return Err(r);
            }
        }
        ReloadConfig(d, "provider", {"Provider", "Updated", id, {}});
        spdlog::info("admin: updated provider {}", id);
        auto body = ProviderJson(d.store, **updated);
        if (!body) {
            return Err(body);
        }
        return JsonReply(200, std::move(*body));
    });
}

void Delete(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    RunOnStore(deps, ex, [id = *id](AdminDeps& d) -> Reply {
        auto deleted = d.store.DeleteProvider(id);  // kConflict (409) while mappings use it
        if (!deleted) {
            return Err(deleted);
        }
        if (!*deleted) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        ReloadConfig(d, "provider deletion", {"Provider", "Deleted", id, {}});
        spdlog::info("admin: deleted provider {}", id);
        return NoContent();
    });
}

// --- Provider keys ---------------------------------------------------------------------------

void ListKeys(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto provider_id = PathIdOr404(ex, 0, kWhat);
    if (!provider_id) {
        return;
    }
    RunOnStore(deps, ex, [provider_id = *provider_id](AdminDeps& d) -> Reply {
        if (auto p = RequireProvider(d.store, provider_id); !p) {
            return Err(p);
        }
        auto keys = d.store.ListProviderKeys(provider_id);
        if (!keys) {
            return Err(keys);
        }
        JsonWriter w;
        w.BeginArray();
        for (const auto& k : *keys) {
            WriteProviderKey(w, k);
        }
        w.EndArray();
        return JsonReply(200, w.Take());
    });
}

void GetKey(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto provider_id = PathIdOr404(ex, 0, kWhat);
    if (!provider_id) {
        return;
    }
    auto key_id = PathIdOr404(ex, 1, kKeyWhat);
    if (!key_id) {
        return;
    }
    RunOnStore(deps, ex, [provider_id = *provider_id, key_id = *key_id](AdminDeps& d) -> Reply {
        auto k = RequireProviderKey(d.store, provider_id, key_id);
        if (!k) {
            return Err(k);
        }
        return JsonReply(200, ProviderKeyJson(*k));
    });
}

void CreateKey(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto provider_id = PathIdOr404(ex, 0, kWhat);
    if (!provider_id) {
        return;
    }
    auto patch = ParseProviderKey(ex->request(), /*create=*/true);
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    RunOnStore(deps, ex,
               [provider_id = *provider_id, p = std::move(*patch)](AdminDeps& d) -> Reply {
                   if (auto provider = RequireProvider(d.store, provider_id); !provider) {
                       return Err(provider);
                   }
                   domain::ProviderKey k;
                   k.provider_id = provider_id;
                   p.base_url.ApplyTo(k.base_url);
                   p.organization.ApplyTo(k.organization);
                   p.is_enabled.ApplyTo(k.is_enabled, true);
                   p.key_name.ApplyTo(k.key_name);
                   if (p.is_primary.present) {
                       k.is_primary = p.is_primary.value.value_or(false);
                   } else {
                       // A provider's first key becomes its primary key.
                       auto count = KeyCount(d.store, provider_id);
                       if (!count) {
                           return Err(count);
                       }
                       k.is_primary = *count == 0;
                   }
                   SealInto(d.secret_box, *p.api_key.value, k);
                   k.created_at_ms = k.updated_at_ms = d.clock.NowUnixMs();
                   auto created = d.store.CreateProviderKey(k);
                   if (!created) {
                       return Err(created);
                   }
                   ReloadConfig(d, "provider key", {"ProviderKey", "Created", created->id, {}});
                   spdlog::info("admin: added key {} to provider {}", created->id, provider_id);
                   return JsonReply(201, ProviderKeyJson(*created));
               });
}

void UpdateKey(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto provider_id = PathIdOr404(ex, 0, kWhat);
    if (!provider_id) {
        return;
    }
    auto key_id = PathIdOr404(ex, 1, kKeyWhat);
    if (!key_id) {
        return;
    }
    auto patch = ParseProviderKey(ex->request(), /*create=*/false);
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    RunOnStore(deps, ex,
               [provider_id = *provider_id, key_id = *key_id,
                p = std::move(*patch)](AdminDeps& d) -> Reply {
                   auto existing = RequireProviderKey(d.store, provider_id, key_id);
                   if (!existing) {
                       return Err(existing);
                   }
                   domain::ProviderKey k = *existing;
                   if (p.api_key.value) {
                       SealInto(d.secret_box, *p.api_key.value, k);
                   }
                   p.base_url.ApplyTo(k.base_url);
                   p.organization.ApplyTo(k.organization);
                   p.is_primary.ApplyTo(k.is_primary, false);
                   p.is_enabled.ApplyTo(k.is_enabled, true);
                   p.key_name.ApplyTo(k.key_name);
                   k.updated_at_ms = d.clock.NowUnixMs();
                   auto updated = d.store.UpdateProviderKey(k);
                   if (!updated) {
                       return Err(updated);
                   }
                   if (!*updated) {
                       return tl::unexpected(NotFound(kKeyWhat, key_id));
                   }
                   ReloadConfig(d, "provider key", {"ProviderKey", "Updated", key_id, {}});
                   spdlog::info("admin: updated key {} of provider {}", key_id, provider_id);
                   return JsonReply(200, ProviderKeyJson(**updated));
               });
}

void DeleteKey(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto provider_id = PathIdOr404(ex, 0, kWhat);
    if (!provider_id) {
        return;
    }
    auto key_id = PathIdOr404(ex, 1, kKeyWhat);
    if (!key_id) {
        return;
    }
    RunOnStore(deps, ex, [provider_id = *provider_id, key_id = *key_id](AdminDeps& d) -> Reply {
        if (auto k = RequireProviderKey(d.store, provider_id, key_id); !k) {
            return Err(k);
        }
        auto deleted = d.store.DeleteProviderKey(key_id);
        if (!deleted) {
            return Err(deleted);
        }
        if (!*deleted) {
            return tl::unexpected(NotFound(kKeyWhat, key_id));
        }
        ReloadConfig(d, "provider key deletion", {"ProviderKey", "Deleted", key_id, {}});
        spdlog::info("admin: deleted key {} of provider {}", key_id, provider_id);
        return NoContent();
    });
}

void SetPrimary(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto provider_id = PathIdOr404(ex, 0, kWhat);
    if (!provider_id) {
        return;
    }
    auto key_id = PathIdOr404(ex, 1, kKeyWhat);
    if (!key_id) {
        return;
    }
    RunOnStore(deps, ex, [provider_id = *provider_id, key_id = *key_id](AdminDeps& d) -> Reply {
        auto existing = RequireProviderKey(d.store, provider_id, key_id);
        if (!existing) {
            return Err(existing);
        }
        domain::ProviderKey k = *existing;
        k.is_primary = true;  // the store demotes the previous primary in the same transaction
        k.updated_at_ms = d.clock.NowUnixMs();
        auto updated = d.store.UpdateProviderKey(k);
        if (!updated) {
            return Err(updated);
        }
        if (!*updated) {
            return tl::unexpected(NotFound(kKeyWhat, key_id));
        }
        ReloadConfig(d, "primary provider key", {"ProviderKey", "Updated", key_id, {}});
        spdlog::info("admin: key {} is now the primary key of provider {}", key_id, provider_id);
        return JsonReply(200, ProviderKeyJson(**updated));
    });
}

}  // namespace

void RegisterProviderRoutes(net::Router& router, const DepsPtr& deps) {
    AddRoute(router, deps, "GET", "/api/ProviderCredentials", List);
    AddRoute(router, deps, "POST", "/api/ProviderCredentials", Create);
    AddRoute(router, deps, "GET", "/api/ProviderCredentials/{id}", Get);
    AddRoute(router, deps, "PUT", "/api/ProviderCredentials/{id}", Update);
    AddRoute(router, deps, "DELETE", "/api/ProviderCredentials/{id}", Delete);
    AddRoute(router, deps, "GET", "/api/ProviderCredentials/{providerId}/keys", ListKeys);
    AddRoute(router, deps, "POST", "/api/ProviderCredentials/{providerId}/keys", CreateKey);
    AddRoute(router, deps, "GET", "/api/ProviderCredentials/{providerId}/keys/{keyId}", GetKey);
    AddRoute(router, deps, "PUT", "/api/ProviderCredentials/{providerId}/keys/{keyId}", UpdateKey);
    AddRoute(router, deps, "DELETE", "/api/ProviderCredentials/{providerId}/keys/{keyId}",
             DeleteKey);
    AddRoute(router, deps, "POST", "/api/ProviderCredentials/{providerId}/keys/{keyId}/set-primary",
             SetPrimary);
}

}  // namespace conduit::admin::detail
