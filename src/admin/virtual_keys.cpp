// /api/VirtualKeys: CRUD. The key itself is returned once, by the create call.

#include "admin/dto.hpp"
#include "admin/handler_support.hpp"
#include "core/clock.hpp"
#include "core/strings.hpp"
#include "domain/keys.hpp"
#include "json/helpers.hpp"

#include <spdlog/spdlog.h>

namespace conduit::admin::detail {

namespace {

namespace bj = boost::json;

constexpr std::string_view kWhat = "Virtual key";
constexpr size_t kMaxAllowedModelsChars = 4000;
constexpr size_t kMaxMetadataBytes = 8192;

struct KeyPatch {
    Field<std::string> key_name;
    Field<int64_t> group_id;
    Field<std::string> allowed_models;
    Field<int64_t> expires_at_ms;
    Field<std::string> metadata;
    Field<int64_t> rate_limit_rpm;
    Field<int64_t> rate_limit_rpd;
    Field<int64_t> rate_limit_tpm;
    Field<core::Micros> max_budget;
    Field<std::string> budget_duration;
    Field<bool> is_enabled;
    Field<std::string> description;

    void ApplyTo(domain::VirtualKey& k) const {
        key_name.ApplyTo(k.key_name);
        group_id.ApplyTo(k.group_id);
        allowed_models.ApplyTo(k.allowed_models);
        expires_at_ms.ApplyTo(k.expires_at_ms);
        metadata.ApplyTo(k.metadata);
        rate_limit_rpm.ApplyTo(k.rate_limit_rpm);
        rate_limit_rpd.ApplyTo(k.rate_limit_rpd);
        rate_limit_tpm.ApplyTo(k.rate_limit_tpm);
        max_budget.ApplyTo(k.max_budget);
        budget_duration.ApplyTo(k.budget_duration);
        // A budget without a period is a lifetime budget; a period without a budget is kept
        // (it applies once a budget is set).
        if (k.max_budget && k.budget_duration.empty()) {
            k.budget_duration = "total";
        }
        is_enabled.ApplyTo(k.is_enabled, true);
        description.ApplyTo(k.description);
    }
};

/// `allowedModels`: a comma-separated string (or an array of strings), normalised to
/// "a,b,prefix*" with blanks removed. null clears (= every model allowed).
Field<std::string> ReadAllowedModels(BodyReader& r, const bj::object& obj) {
    Field<std::string> out;
    const bj::value* v = r.Raw("allowedModels");
    if (!r.ok() || v == nullptr) {
        return out;
    }
    if (v->is_null()) {
        out.present = !r.create();
        return out;
    }
    auto list = json::GetStringList(obj, "allowedModels");
    if (!list) {
        r.Fail(list.error());
        return out;
    }
    std::string joined;
    for (const auto& piece : **list) {
        std::string_view model = core::Trim(piece);
        if (model.empty()) {
            continue;
        }
        if (!joined.empty()) {
            joined.push_back(',');
        }
        joined.append(model);
    }
    if (joined.size() > kMaxAllowedModelsChars) {
        r.Fail(BadParam("allowedModels", "'allowedModels' is too long."));
        return out;
    }
    out.present = true;
    out.value = std::move(joined);
    return out;
}

/// `expiresAt`: an ISO-8601 string in the future; null clears (never expires).
Field<int64_t> ReadExpiresAt(BodyReader& r, int64_t now_ms) {
    Field<int64_t> out;
    const bj::value* v = r.Raw("expiresAt");
    if (!r.ok() || v == nullptr) {
        return out;
    }
    if (v->is_null()) {
        out.present = !r.create();
        return out;
    }
    const bj::string* s = v->if_string();
    int64_t ms = 0;
    if (s == nullptr || !core::ParseIso8601(std::string_view(s->data(), s->size()), ms)) {
        r.Fail(BadParam("expiresAt",
                        "Invalid value for 'expiresAt': expected an ISO-8601 date-time string "
                        "such as \"2030-01-31T00:00:00Z\"."));
        return out;
    }
    if (ms <= now_ms) {
        r.Fail(BadParam("expiresAt", "'expiresAt' must be in the future."));
        return out;
    }
    out.present = true;
    out.value = ms;
    return out;
}

/// `metadata`: any JSON. A string is stored as given, anything else as its JSON text. null
/// clears.
Field<std::string> ReadMetadata(BodyReader& r) {
    Field<std::string> out;
    const bj::value* v = r.Raw("metadata");
    if (!r.ok() || v == nullptr) {
        return out;
    }
    if (v->is_null()) {
        out.present = !r.create();
        return out;
    }
    std::string text;
    if (const bj::string* s = v->if_string()) {
        text.assign(s->data(), s->size());
    } else {
        text = json::Serialize(*v);
    }
    if (text.size() > kMaxMetadataBytes) {
        r.Fail(BadParam("metadata", "'metadata' must be at most 8192 bytes long."));
        return out;
    }
    out.present = true;
    out.value = std::move(text);
    return out;
}

core::Result<KeyPatch> ParseKey(const net::Request& req, bool create, int64_t now_ms) {
    auto obj = ParseBody(req);
    if (!obj) {
        return Err(obj);
    }
    BodyReader r(*obj, create);
    KeyPatch p;
    p.key_name =
        r.Text("keyName", {.required = true, .nullable = false, .min_chars = 1, .max_chars = 100});
    p.group_id = r.Int("virtualKeyGroupId", {.required = true, .nullable = false, .min = 1});
    p.allowed_models = ReadAllowedModels(r, *obj);
    p.expires_at_ms = ReadExpiresAt(r, now_ms);
    p.metadata = ReadMetadata(r);
    p.rate_limit_rpm = r.Int("rateLimitRpm", {.min = 1});
    p.rate_limit_rpd = r.Int("rateLimitRpd", {.min = 1});
    p.rate_limit_tpm = r.Int("rateLimitTpm", {.min = 1});
    p.max_budget = r.Money("maxBudget", {.nullable = true});
    p.budget_duration = r.Text("budgetDuration", {.max_chars = 16});
    if (r.ok() && p.budget_duration.present && p.budget_duration.value) {
        auto period = domain::ParseBudgetPeriod(*p.budget_duration.value);
        if (!period) {
            r.Fail(BadParam("budgetDuration",
                            "'budgetDuration' must be one of daily, weekly, monthly, total."));
        } else {
            p.budget_duration.value = std::string(domain::BudgetPeriodName(*period));
        }
    }
    p.is_enabled = r.Bool("isEnabled");
    p.description = r.Text("description", {.max_chars = 500});
    if (!r.ok()) {
        return tl::unexpected(*r.error());
    }
    return p;
}

/// 400 naming virtualKeyGroupId unless the group exists. Executor thread.
core::Result<void> RequireGroup(store::Store& store, domain::Id group_id) {
    auto g = store.GetGroup(group_id);
    if (!g) {
        return Err(g);
    }
    if (!*g) {
        return tl::unexpected(
            BadParam("virtualKeyGroupId",
                     "Virtual key group " + std::to_string(group_id) + " does not exist."));
    }
    return {};
}

std::string KeyInfoJson(const domain::VirtualKey& k) {
    JsonWriter w;
    WriteKeyInfo(w, k);
    return w.Take();
}

void List(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto group =
        QueryInt(ex->request(), "virtualKeyGroupId", 1, std::numeric_limits<int64_t>::max());
    if (!group) {
        RespondError(ex, group.error());
        return;
    }
    RunOnStore(deps, ex, [group = *group](AdminDeps& d) -> Reply {
        auto keys = d.store.ListKeys(group);
        if (!keys) {
            return Err(keys);
        }
        JsonWriter w;
        w.BeginArray();
        for (const auto& k : *keys) {
            WriteKeyInfo(w, k);
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
        auto k = d.store.GetKey(id);
        if (!k) {
            return Err(k);
        }
        if (!*k) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        return JsonReply(200, KeyInfoJson(**k));
    });
}

void Create(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto patch = ParseKey(ex->request(), /*create=*/true, deps->clock.NowUnixMs());
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    RunOnStore(deps, ex, [p = std::move(*patch)](AdminDeps& d) -> Reply {
        domain::VirtualKey k;
        p.ApplyTo(k);
        if (auto r = RequireGroup(d.store, k.group_id); !r) {
            return Err(r);
        }
        const std::string key = domain::GenerateVirtualKey();
        k.key_hash = domain::HashVirtualKey(key);
        k.key_prefix = domain::KeyDisplayPrefix(key);
        k.created_at_ms = k.updated_at_ms = d.clock.NowUnixMs();
        auto created = d.store.CreateKey(k);
        if (!created) {
            return Err(created);
        }
        ReloadConfig(d, "virtual key");
        spdlog::info("admin: created virtual key {} ({}) in group {}", created->id,
                     created->key_prefix, created->group_id);
        JsonWriter w;
        w.BeginObject().StringField("virtualKey", key).Key("keyInfo");
        WriteKeyInfo(w, *created);
        w.EndObject();
        return JsonReply(201, w.Take());
    });
}

void Update(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    auto patch = ParseKey(ex->request(), /*create=*/false, deps->clock.NowUnixMs());
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    RunOnStore(deps, ex, [id = *id, p = std::move(*patch)](AdminDeps& d) -> Reply {
        auto existing = d.store.GetKey(id);
        if (!existing) {
            return Err(existing);
        }
        if (!*existing) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        domain::VirtualKey k = **existing;
        p.ApplyTo(k);
        if (p.group_id.present) {
            if (auto r = RequireGroup(d.store, k.group_id); !r) {
                return Err(r);
            }
        }
        k.updated_at_ms = d.clock.NowUnixMs();
        auto updated = d.store.UpdateKey(k);
        if (!updated) {
            return Err(updated);
        }
        if (!*updated) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        ReloadConfig(d, "virtual key");
        spdlog::info("admin: updated virtual key {}", id);
        return JsonReply(200, KeyInfoJson(**updated));
    });
}

void Delete(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    RunOnStore(deps, ex, [id = *id](AdminDeps& d) -> Reply {
        auto deleted = d.store.DeleteKey(id);
        if (!deleted) {
            return Err(deleted);
        }
        if (!*deleted) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        ReloadConfig(d, "virtual key deletion");
        spdlog::info("admin: deleted virtual key {}", id);
        return NoContent();
    });
}

}  // namespace

void RegisterVirtualKeyRoutes(net::Router& router, const DepsPtr& deps) {
    AddRoute(router, deps, "GET", "/api/VirtualKeys", List);
    AddRoute(router, deps, "POST", "/api/VirtualKeys", Create);
    AddRoute(router, deps, "GET", "/api/VirtualKeys/{id}", Get);
    AddRoute(router, deps, "PUT", "/api/VirtualKeys/{id}", Update);
    AddRoute(router, deps, "DELETE", "/api/VirtualKeys/{id}", Delete);
}

}  // namespace conduit::admin::detail
