// /api/ModelProviderMapping: CRUD of model alias → provider model mappings.

#include "admin/dto.hpp"
#include "admin/handler_support.hpp"

#include <spdlog/spdlog.h>

namespace conduit::admin::detail {

namespace {

constexpr std::string_view kWhat = "Model mapping";

struct MappingPatch {
    Field<std::string> model_alias;
    Field<std::string> provider_model_id;
    Field<int64_t> provider_id;
    Field<bool> is_enabled;
    Field<int64_t> priority;
    Field<int64_t> max_context_tokens_override;
    Field<bool> supports_chat;
    Field<bool> supports_streaming;
    Field<bool> supports_embeddings;
    Field<bool> supports_image_generation;
    Field<bool> supports_video_generation;
    Field<bool> supports_vision;
    Field<bool> supports_function_calling;

    void ApplyTo(domain::ModelMapping& m) const {
        model_alias.ApplyTo(m.model_alias);
        provider_model_id.ApplyTo(m.provider_model_id);
        provider_id.ApplyTo(m.provider_id);
        is_enabled.ApplyTo(m.is_enabled, true);
        if (priority.present && priority.value) {
            m.priority = static_cast<int>(*priority.value);
        }
        max_context_tokens_override.ApplyTo(m.max_context_tokens_override);
        supports_chat.ApplyTo(m.supports_chat, true);
        supports_streaming.ApplyTo(m.supports_streaming, true);
        supports_embeddings.ApplyTo(m.supports_embeddings);
        supports_image_generation.ApplyTo(m.supports_image_generation);
        supports_video_generation.ApplyTo(m.supports_video_generation);
        supports_vision.ApplyTo(m.supports_vision);
        supports_function_calling.ApplyTo(m.supports_function_calling);
    }
};

core::Result<MappingPatch> ParseMapping(const net::Request& req, bool create) {
    auto obj = ParseBody(req);
    if (!obj) {
        return Err(obj);
    }
    BodyReader r(*obj, create);
    MappingPatch p;
    const TextRule name{.required = true, .nullable = false, .min_chars = 1, .max_chars = 200};
    p.model_alias = r.Text("modelAlias", name);
    p.provider_model_id = r.Text("providerModelId", name);
    p.provider_id = r.Int("providerId", {.required = true, .nullable = false, .min = 1});
    p.is_enabled = r.Bool("isEnabled");
    p.priority = r.Int("priority", {.nullable = false,
                                    .min = std::numeric_limits<int>::min(),
                                    .max = std::numeric_limits<int>::max()});
    p.max_context_tokens_override = r.Int("maxContextTokensOverride", {.min = 1});
    p.supports_chat = r.Bool("supportsChat");
    p.supports_streaming = r.Bool("supportsStreaming");
    p.supports_embeddings = r.Bool("supportsEmbeddings");
    p.supports_image_generation = r.Bool("supportsImageGeneration");
    p.supports_video_generation = r.Bool("supportsVideoGeneration");
    p.supports_vision = r.Bool("supportsVision");
    p.supports_function_calling = r.Bool("supportsFunctionCalling");
    if (!r.ok()) {
        return tl::unexpected(*r.error());
    }
    return p;
}

/// 400 naming providerId unless the provider exists. Executor thread.
core::Result<void> RequireProvider(store::Store& store, domain::Id provider_id) {
    auto p = store.GetProvider(provider_id);
    if (!p) {
        return Err(p);
    }
    if (!*p) {
        return tl::unexpected(
            BadParam("providerId", "Provider " + std::to_string(provider_id) + " does not exist."));
    }
    return {};
}

std::string MappingJson(const domain::ModelMapping& m) {
    JsonWriter w;
    WriteMapping(w, m);
    return w.Take();
}

void List(const net::ExchangePtr& ex, const DepsPtr& deps) {
    RunOnStore(deps, ex, [](AdminDeps& d) -> Reply {
        auto mappings = d.store.ListMappings();
        if (!mappings) {
            return Err(mappings);
        }
        JsonWriter w;
        w.BeginArray();
        for (const auto& m : *mappings) {
            WriteMapping(w, m);
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
        auto m = d.store.GetMapping(id);
        if (!m) {
            return Err(m);
        }
        if (!*m) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        return JsonReply(200, MappingJson(**m));
    });
}

void Create(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto patch = ParseMapping(ex->request(), /*create=*/true);
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    RunOnStore(deps, ex, [p = std::move(*patch)](AdminDeps& d) -> Reply {
        domain::ModelMapping m;
        p.ApplyTo(m);
        if (auto r = RequireProvider(d.store, m.provider_id); !r) {
            return Err(r);
        }
        m.created_at_ms = m.updated_at_ms = d.clock.NowUnixMs();
        auto created = d.store.CreateMapping(m);
        if (!created) {
            return Err(created);
        }
        ReloadConfig(d, "model mapping",
                     {"ModelMapping", "Created", created->id, created->model_alias});
        spdlog::info("admin: created model mapping {} ({})", created->id, created->model_alias);
        return JsonReply(201, MappingJson(*created));
    });
}

void Update(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    auto patch = ParseMapping(ex->request(), /*create=*/false);
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    RunOnStore(deps, ex, [id = *id, p = std::move(*patch)](AdminDeps& d) -> Reply {
        auto existing = d.store.GetMapping(id);
        if (!existing) {
            return Err(existing);
        }
        if (!*existing) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        domain::ModelMapping m = **existing;
        p.ApplyTo(m);
        if (p.provider_id.present) {
            if (auto r = RequireProvider(d.store, m.provider_id); !r) {
                return Err(r);
            }
        }
        m.updated_at_ms = d.clock.NowUnixMs();
        auto updated = d.store.UpdateMapping(m);
        if (!updated) {
            return Err(updated);
        }
        if (!*updated) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        ReloadConfig(d, "model mapping", {"ModelMapping", "Updated", id, (*updated)->model_alias});
        spdlog::info("admin: updated model mapping {}", id);
        return JsonReply(200, MappingJson(**updated));
    });
}

void Delete(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    RunOnStore(deps, ex, [id = *id](AdminDeps& d) -> Reply {
        // The alias, for ModelMappingChanged (read before it is gone).
        std::string alias;
        if (auto before = d.store.GetMapping(id); before && *before) {
            alias = (*before)->model_alias;
        }
        auto deleted = d.store.DeleteMapping(id);
        if (!deleted) {
            return Err(deleted);
        }
        if (!*deleted) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        ReloadConfig(d, "model mapping deletion", {"ModelMapping", "Deleted", id, alias});
        spdlog::info("admin: deleted model mapping {}", id);
        return NoContent();
    });
}

}  // namespace

void RegisterMappingRoutes(net::Router& router, const DepsPtr& deps) {
    AddRoute(router, deps, "GET", "/api/ModelProviderMapping", List);
    AddRoute(router, deps, "POST", "/api/ModelProviderMapping", Create);
    AddRoute(router, deps, "GET", "/api/ModelProviderMapping/{id}", Get);
    AddRoute(router, deps, "PUT", "/api/ModelProviderMapping/{id}", Update);
    AddRoute(router, deps, "DELETE", "/api/ModelProviderMapping/{id}", Delete);
}

}  // namespace conduit::admin::detail
