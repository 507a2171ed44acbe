// /api/Analytics/logs: the request log, newest first.

#include "admin/dto.hpp"
#include "admin/handler_support.hpp"
#include "core/clock.hpp"
#include "core/strings.hpp"

namespace conduit::admin::detail {

namespace {

constexpr int kDefaultLimit = 100;
constexpr int kMaxLimit = 1000;

void Logs(const net::ExchangePtr& ex, const DepsPtr& deps) {
    const net::Request& req = ex->request();
    store::RequestLogQuery q;
    constexpr int64_t kMaxId = std::numeric_limits<int64_t>::max();
    auto key = QueryInt(req, "virtualKeyId", 1, kMaxId);
    if (!key) {
        RespondError(ex, key.error());
        return;
    }
    q.virtual_key_id = *key;
    auto group = QueryInt(req, "virtualKeyGroupId", 1, kMaxId);
    if (!group) {
        RespondError(ex, group.error());
        return;
    }
    q.group_id = *group;
    if (auto since = QueryValue(req, "since"); since && !core::Trim(*since).empty()) {
        int64_t ms = 0;
        if (!core::ParseIso8601(core::Trim(*since), ms)) {
            RespondError(ex, BadParam("since",
                                      "Invalid value for query parameter 'since': expected an "
                                      "ISO-8601 date-time such as 2030-01-31T00:00:00Z."));
            return;
        }
        q.since_ms = ms;
    }
    auto paging = ParsePaging(req, kDefaultLimit, kMaxLimit);
    if (!paging) {
        RespondError(ex, paging.error());
        return;
    }
    q.limit = paging->limit;
    q.offset = paging->offset;
    RunOnStore(deps, ex, [q](AdminDeps& d) -> Reply {
        auto rows = d.store.ListRequestLogs(q);
        if (!rows) {
            return Err(rows);
        }
        JsonWriter w;
        w.BeginObject().Key("data").BeginArray();
        for (const auto& row : *rows) {
            WriteRequestLog(w, row);
        }
        w.EndArray().IntField("limit", q.limit).IntField("offset", q.offset).EndObject();
        return JsonReply(200, w.Take());
    });
}

}  // namespace

void RegisterAnalyticsRoutes(net::Router& router, const DepsPtr& deps) {
    AddRoute(router, deps, "GET", "/api/Analytics/logs", Logs);
}

}  // namespace conduit::admin::detail
