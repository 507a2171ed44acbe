// /api/ModelCosts: CRUD of model prices (exact micro-units) and their mapping links.

#include "admin/dto.hpp"
#include "admin/handler_support.hpp"

#include <spdlog/spdlog.h>

namespace conduit::admin::detail {

namespace {

constexpr std::string_view kWhat = "Model cost";

struct CostPatch {
    Field<std::string> cost_name;
    Field<std::vector<domain::Id>> mapping_ids;
    Field<core::Micros> input_per_million;
    Field<core::Micros> output_per_million;
    Field<core::Micros> embedding_per_million;
    Field<core::Micros> image_per_image;
    Field<core::Micros> video_per_second;
    Field<int64_t> priority;
    Field<std::string> description;

    void ApplyTo(domain::ModelCost& c) const {
        cost_name.ApplyTo(c.cost_name);
        mapping_ids.ApplyTo(c.mapping_ids);
        input_per_million.ApplyTo(c.input_per_million);
        output_per_million.ApplyTo(c.output_per_million);
        embedding_per_million.ApplyTo(c.embedding_per_million);
        image_per_image.ApplyTo(c.image_per_image);
        video_per_second.ApplyTo(c.video_per_second);
        if (priority.present && priority.value) {
            c.priority = static_cast<int>(*priority.value);
        }
        description.ApplyTo(c.description);
    }
};

core::Result<CostPatch> ParseCost(const net::Request& req, bool create) {
    auto obj = ParseBody(req);
    if (!obj) {
        return Err(obj);
    }
    BodyReader r(*obj, create);
    CostPatch p;
    p.cost_name =
        r.Text("costName", {.required = true, .nullable = false, .min_chars = 1, .max_chars = 200});
    p.mapping_ids = r.IdList("modelProviderMappingIds");
    const MoneyRule price{};  // >= 0, not null
    p.input_per_million = r.Money("inputCostPerMillionTokens", price);
    p.output_per_million = r.Money("outputCostPerMillionTokens", price);
    p.embedding_per_million = r.Money("embeddingCostPerMillionTokens", price);
    p.image_per_image = r.Money("imageCostPerImage", price);
    p.video_per_second = r.Money("videoCostPerSecond", price);
    p.priority = r.Int("priority", {.nullable = false,
                                    .min = std::numeric_limits<int>::min(),
                                    .max = std::numeric_limits<int>::max()});
    p.description = r.Text("description", {.max_chars = 500});
    if (!r.ok()) {
        return tl::unexpected(*r.error());
    }
    return p;
}

/// 400 naming modelProviderMappingIds unless every mapping exists. Executor thread.
core::Result<void> RequireMappings(store::Store& store, const std::vector<domain::Id>& ids) {
    for (domain::Id id : ids) {
        auto m = store.GetMapping(id);
        if (!m) {
            return Err(m);
        }
        if (!*m) {
            return tl::unexpected(
                BadParam("modelProviderMappingIds",
                         "Model mapping " + std::to_string(id) + " does not exist."));
        }
    }
    return {};
}

std::string CostJson(const domain::ModelCost& c) {
    JsonWriter w;
    WriteCost(w, c);
    return w.Take();
}

void List(const net::ExchangePtr& ex, const DepsPtr& deps) {
    RunOnStore(deps, ex, [](AdminDeps& d) -> Reply {
        auto costs = d.store.ListCosts();
        if (!costs) {
            return Err(costs);
        }
        JsonWriter w;
        w.BeginArray();
        for (const auto& c : *costs) {
            WriteCost(w, c);
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
        auto c = d.store.GetCost(id);
        if (!c) {
            return Err(c);
        }
        if (!*c) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        return JsonReply(200, CostJson(**c));
    });
}

void Create(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto patch = ParseCost(ex->request(), /*create=*/true);
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    RunOnStore(deps, ex, [p = std::move(*patch)](AdminDeps& d) -> Reply {
        domain::ModelCost c;
        p.ApplyTo(c);
        if (auto r = RequireMappings(d.store, c.mapping_ids); !r) {
            return Err(r);
        }
        c.created_at_ms = c.updated_at_ms = d.clock.NowUnixMs();
        auto created = d.store.CreateCost(c);
        if (!created) {
            return Err(created);
        }
        ReloadConfig(d, "model cost");
        spdlog::info("admin: created model cost {}", created->id);
        return JsonReply(201, CostJson(*created));
    });
}

void Update(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    auto patch = ParseCost(ex->request(), /*create=*/false);
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    RunOnStore(deps, ex, [id = *id, p = std::move(*patch)](AdminDeps& d) -> Reply {
        auto existing = d.store.GetCost(id);
        if (!existing) {
            return Err(existing);
        }
        if (!*existing) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        domain::ModelCost c = **existing;
        p.ApplyTo(c);
        if (p.mapping_ids.present) {
            if (auto r = RequireMappings(d.store, c.mapping_ids); !r) {
                return Err(r);
            }
        }
        c.updated_at_ms = d.clock.NowUnixMs();
        auto updated = d.store.UpdateCost(c);
        if (!updated) {
            return Err(updated);
        }
        if (!*updated) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        ReloadConfig(d, "model cost");
        spdlog::info("admin: updated model cost {}", id);
        return JsonReply(200, CostJson(**updated));
    });
}

void Delete(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    RunOnStore(deps, ex, [id = *id](AdminDeps& d) -> Reply {
        auto deleted = d.store.DeleteCost(id);
        if (!deleted) {
            return Err(deleted);
        }
        if (!*deleted) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        ReloadConfig(d, "model cost deletion");
        spdlog::info("admin: deleted model cost {}", id);
        return NoContent();
    });
}

}  // namespace

void RegisterCostRoutes(net::Router& router, const DepsPtr& deps) {
    AddRoute(router, deps, "GET", "/api/ModelCosts", List);
    AddRoute(router, deps, "POST", "/api/ModelCosts", Create);
    AddRoute(router, deps, "GET", "/api/ModelCosts/{id}", Get);
    AddRoute(router, deps, "PUT", "/api/ModelCosts/{id}", Update);
    AddRoute(router, deps, "DELETE", "/api/ModelCosts/{id}", Delete);
}

}  // namespace conduit::admin::detail
