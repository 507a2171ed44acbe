// /api/VirtualKeyGroups: CRUD, adjust-balance, transactions, keys.

#include "admin/dto.hpp"
#include "admin/handler_support.hpp"

#include <spdlog/spdlog.h>

#include <unordered_map>

namespace conduit::admin::detail {

namespace {

constexpr std::string_view kWhat = "Virtual key group";
constexpr std::string_view kInitiatedBy = "admin";

struct GroupPatch {
    Field<std::string> group_name;
    Field<std::string> external_group_id;
    Field<core::Micros> initial_balance;  // create only
};

core::Result<GroupPatch> ParseGroup(const net::Request& req, bool create) {
    auto obj = ParseBody(req);
    if (!obj) {
        return Err(obj);
    }
    BodyReader r(*obj, create);
    GroupPatch p;
    p.group_name = r.Text("groupName",
                          {.required = true, .nullable = false, .min_chars = 1, .max_chars = 100});
    p.external_group_id = r.Text("externalGroupId", {.max_chars = 100});
    if (create) {
        p.initial_balance = r.Money("initialBalance", {});
    }
    if (!r.ok()) {
        return tl::unexpected(*r.error());
    }
    return p;
}

core::Result<int64_t> KeyCount(store::Store& store, domain::Id group_id) {
    auto keys = store.ListKeys(group_id);
    if (!keys) {
        return Err(keys);
    }
    return static_cast<int64_t>(keys->size());
}

std::string GroupJson(const domain::VirtualKeyGroup& g, int64_t key_count) {
    JsonWriter w;
    WriteGroup(w, g, key_count);
    return w.Take();
}

void List(const net::ExchangePtr& ex, const DepsPtr& deps) {
    RunOnStore(deps, ex, [](AdminDeps& d) -> Reply {
        auto groups = d.store.ListGroups();
        if (!groups) {
            return Err(groups);
        }
        auto keys = d.store.ListKeys(std::nullopt);
        if (!keys) {
            return Err(keys);
        }
        std::unordered_map<domain::Id, int64_t> counts;
        for (const auto& k : *keys) {
            ++counts[k.group_id];
        }
        JsonWriter w;
        w.BeginArray();
        for (const auto& g : *groups) {
            WriteGroup(w, g, counts[g.id]);
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
        auto g = d.store.GetGroup(id);
        if (!g) {
            return Err(g);
        }
        if (!*g) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        auto count = KeyCount(d.store, id);
        if (!count) {
            return Err(count);
        }
        return JsonReply(200, GroupJson(**g, *count));
    });
}

void Create(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto patch = ParseGroup(ex->request(), /*create=*/true);
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    RunOnStore(deps, ex, [p = std::move(*patch)](AdminDeps& d) -> Reply {
        domain::VirtualKeyGroup g;
        p.group_name.ApplyTo(g.group_name);
        p.external_group_id.ApplyTo(g.external_group_id);
        p.initial_balance.ApplyTo(g.balance, 0);
        g.created_at_ms = g.updated_at_ms = d.clock.NowUnixMs();
        auto created = d.store.CreateGroup(g, kInitiatedBy);
        if (!created) {
            return Err(created);
        }
        ReloadConfig(d, "virtual key group");
        spdlog::info("admin: created virtual key group {}", created->id);
        return JsonReply(201, GroupJson(*created, 0));
    });
}

void Update(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    auto patch = ParseGroup(ex->request(), /*create=*/false);
    if (!patch) {
        RespondError(ex, patch.error());
        return;
    }
    RunOnStore(deps, ex, [id = *id, p = std::move(*patch)](AdminDeps& d) -> Reply {
        auto existing = d.store.GetGroup(id);
        if (!existing) {
            return Err(existing);
        }
        if (!*existing) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        domain::VirtualKeyGroup g = **existing;
        p.group_name.ApplyTo(g.group_name);
        p.external_group_id.ApplyTo(g.external_group_id);
        g.updated_at_ms = d.clock.NowUnixMs();
        auto updated = d.store.UpdateGroup(g);
        if (!updated) {
            return Err(updated);
        }
        if (!*updated) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        ReloadConfig(d, "virtual key group");
        auto count = KeyCount(d.store, id);
        if (!count) {
            return Err(count);
        }
        return JsonReply(200, GroupJson(**updated, *count));
    });
}

void Delete(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    RunOnStore(deps, ex, [id = *id](AdminDeps& d) -> Reply {
        auto deleted = d.store.DeleteGroup(id);  // kConflict (409) while keys remain
        if (!deleted) {
            return Err(deleted);
        }
        if (!*deleted) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        ReloadConfig(d, "virtual key group deletion");
        spdlog::info("admin: deleted virtual key group {}", id);
        return NoContent();
    });
}

void AdjustBalance(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    auto obj = ParseBody(ex->request());
    if (!obj) {
        RespondError(ex, obj.error());
        return;
    }
    BodyReader r(*obj, /*create=*/true);
    auto amount = r.Money("amount", {.required = true, .non_negative = false, .non_zero = true});
    auto description = r.Text("description", {.max_chars = 500});
    if (!r.ok()) {
        RespondError(ex, *r.error());
        return;
    }
    RunOnStore(deps, ex,
               [id = *id, amount = *amount.value,
                description = description.value.value_or("")](AdminDeps& d) -> Reply {
                   auto type = amount > 0 ? domain::TransactionType::kCredit
                                          : domain::TransactionType::kAdjustment;
                   auto txn =
                       d.store.AdjustBalance(id, amount, type, domain::ReferenceType::kManual, "",
                                             description, kInitiatedBy, d.clock.NowUnixMs());
                   if (!txn) {
                       core::Error e = txn.error();
                       if (e.code == core::ErrorCode::kInvalidRequest && e.param.empty()) {
                           e.param = "amount";  // e.g. the balance would overflow
                       }
                       return tl::unexpected(std::move(e));
                   }
                   if (!*txn) {
                       return tl::unexpected(NotFound(kWhat, id));
                   }
                   d.book.SetPersisted(id, (*txn)->balance_after);
                   if (d.on_balance_adjusted) {
                       d.on_balance_adjusted(id, amount);
                   }
                   ReloadConfig(d, "balance adjustment");
                   spdlog::info("admin: adjusted the balance of group {}", id);
                   auto g = d.store.GetGroup(id);
                   if (!g) {
                       return Err(g);
                   }
                   if (!*g) {
                       return tl::unexpected(NotFound(kWhat, id));
                   }
                   auto count = KeyCount(d.store, id);
                   if (!count) {
                       return Err(count);
                   }
                   // The updated group (as the original answers) plus the ledger row.
                   JsonWriter w;
                   WriteGroup(w, **g, *count, /*close=*/false);
                   w.Key("transaction");
                   WriteTransaction(w, **txn);
                   w.EndObject();
                   return JsonReply(200, w.Take());
               });
}

void Transactions(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    auto paging = ParsePaging(ex->request(), 100, 1000);
    if (!paging) {
        RespondError(ex, paging.error());
        return;
    }
    RunOnStore(deps, ex, [id = *id, paging = *paging](AdminDeps& d) -> Reply {
        auto g = d.store.GetGroup(id);
        if (!g) {
            return Err(g);
        }
        if (!*g) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        auto txns = d.store.ListTransactions(id, paging.limit, paging.offset);
        if (!txns) {
            return Err(txns);
        }
        JsonWriter w;
        w.BeginArray();
        for (const auto& t : *txns) {
            WriteTransaction(w, t);
        }
        w.EndArray();
        return JsonReply(200, w.Take());
    });
}

void Keys(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathIdOr404(ex, 0, kWhat);
    if (!id) {
        return;
    }
    RunOnStore(deps, ex, [id = *id](AdminDeps& d) -> Reply {
        auto g = d.store.GetGroup(id);
        if (!g) {
            return Err(g);
        }
        if (!*g) {
            return tl::unexpected(NotFound(kWhat, id));
        }
        auto keys = d.store.ListKeys(id);
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

}  // namespace

void RegisterGroupRoutes(net::Router& router, const DepsPtr& deps) {
    AddRoute(router, deps, "GET", "/api/VirtualKeyGroups", List);
    AddRoute(router, deps, "POST", "/api/VirtualKeyGroups", Create);
    AddRoute(router, deps, "GET", "/api/VirtualKeyGroups/{id}", Get);
    AddRoute(router, deps, "PUT", "/api/VirtualKeyGroups/{id}", Update);
    AddRoute(router, deps, "DELETE", "/api/VirtualKeyGroups/{id}", Delete);
    AddRoute(router, deps, "POST", "/api/VirtualKeyGroups/{id}/adjust-balance", AdjustBalance);
    AddRoute(router, deps, "GET", "/api/VirtualKeyGroups/{id}/transactions", Transactions);
    AddRoute(router, deps, "GET", "/api/VirtualKeyGroups/{id}/keys", Keys);
}

}  // namespace conduit::admin::detail
