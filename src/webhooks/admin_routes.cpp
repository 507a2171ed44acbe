#include "webhooks/admin_routes.hpp"

#include "admin/admin_api.hpp"
#include "admin/handler_support.hpp"
#include "admin/json_writer.hpp"
#include "core/strings.hpp"
#include "gateway/errors.hpp"
#include "json/helpers.hpp"
#include "webhooks/message.hpp"

#include <boost/json/parse.hpp>
#include <spdlog/spdlog.h>

#include <exception>
#include <limits>
#include <optional>

namespace conduit::webhooks {

namespace {

using DepsPtr = std::shared_ptr<WebhookAdminDeps>;
using Reply = core::Result<net::Response>;
using Handler = void (*)(const net::ExchangePtr& ex, const DepsPtr& deps);

constexpr int kDefaultLimit = 100;
constexpr int kMaxLimit = 1000;
constexpr int64_t kMaxGraceSeconds = 30LL * 24 * 3600;

void RespondError(const net::ExchangePtr& ex, const core::Error& error) {
    ex->Respond(gateway::ErrorResponse(error));
}

core::Error BadParam(std::string param, std::string message) {
    return core::Error::Make(core::ErrorCode::kInvalidRequest, std::move(message),
                             std::move(param));
}

core::Error NotFound(std::string message) {
    return core::Error::Make(core::ErrorCode::kNotFound, std::move(message));
}

void AddRoute(
    net::Router& router, const DepsPtr& deps, std::string method, std::string pattern, Handler fn) {
    router.Add(std::move(method), std::move(pattern), [deps, fn](const net::ExchangePtr& ex) {
        if (!admin::HasMasterKey(ex->request(), deps->master_key)) {
            RespondError(ex, core::Error::Make(core::ErrorCode::kUnauthorized,
                                               "Invalid or missing master key. Send it as "
                                               "'X-API-Key', 'X-Master-Key' or "
                                               "'Authorization: Bearer'."));
            return;
        }
        fn(ex, deps);
    });
}

/// Sends `reply` unless the client has gone. Loop thread.
void Finish(const net::ExchangePtr& ex, Reply reply) {
    if (ex->closed()) {
        return;
    }
    if (!reply) {
        RespondError(ex, reply.error());
        return;
    }
    ex->Respond(std::move(*reply));
}

/// Runs `job() -> Reply` on the executor and responds on the exchange's loop. Loop thread.
template <class Job>
void RunOnStore(const DepsPtr& deps, const net::ExchangePtr& ex, Job job) {
    deps->executor.Call(
        ex->loop(),
        [deps, job = std::move(job)]() -> Reply {
            try {
                return job(*deps);
            } catch (const std::exception& e) {
                spdlog::error("webhooks admin: store job failed: {}", e.what());
            } catch (...) {
                spdlog::error("webhooks admin: store job failed");
            }
            return core::Fail(core::ErrorCode::kInternal, "Internal error.");
        },
        [ex](Reply reply) { Finish(ex, std::move(reply)); });
}

// --- Request parsing -------------------------------------------------------------------------

// Query parameters are read as the other admin routes read them.
using admin::detail::QueryInt;
using admin::detail::QueryValue;

/// Path parameter `index` as a positive integer id.
std::optional<int64_t> PathId(const net::ExchangePtr& ex, size_t index) {
    const auto& params = ex->request().path_params;
    if (index >= params.size()) {
        return std::nullopt;
    }
    std::string_view text = params[index];
    if (text.empty() || text.size() > 18 ||
        text.find_first_not_of("0123456789") != std::string_view::npos) {
        return std::nullopt;
    }
    auto id = core::ParseInt(text);
    if (!id || *id <= 0) {
        return std::nullopt;
    }
    return *id;
}

/// Path parameter `index` as a webhook id (1..128 chars of [A-Za-z0-9_.:-]).
std::optional<std::string> PathDeliveryId(const net::ExchangePtr& ex, size_t index) {
    const auto& params = ex->request().path_params;
    if (index >= params.size()) {
        return std::nullopt;
    }
    const std::string& text = params[index];
    if (text.empty() || text.size() > 128) {
        return std::nullopt;
    }
    for (char c : text) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.' || c == ':';
        if (!ok) {
            return std::nullopt;
        }
    }
    return text;
}

core::Error DeliveryNotFound(std::string_view id) {
    return NotFound("Webhook delivery '" + std::string(id.substr(0, 128)) + "' was not found.");
}

// --- Output ----------------------------------------------------------------------------------

void WriteDelivery(admin::JsonWriter& w, const store::WebhookDelivery& d, bool with_payload) {
    w.BeginObject();
    w.StringField("id", d.id);
    w.StringField("taskId", d.task_id);
    w.IntField("virtualKeyId", d.virtual_key_id);
    w.StringField("eventType", d.event_type);
    w.StringField("url", d.url);
    w.StringField("status", d.status);
    w.IntField("attempts", d.attempts);
    w.OptIntField("lastStatusCode", d.last_status_code != 0
                                        ? std::optional<int64_t>(d.last_status_code)
                                        : std::nullopt);
    w.OptStringField("lastError", d.last_error);
    w.TimestampField("createdAt", d.created_at_ms);
    w.TimestampField("updatedAt", d.updated_at_ms);
    w.OptTimestampField("deliveredAt", d.delivered_at_ms != 0
                                           ? std::optional<int64_t>(d.delivered_at_ms)
                                           : std::nullopt);
    // Names only: the values may hold the caller's secrets.
    w.Key("headerNames").BeginArray();
    for (const auto& [name, value] : DecodeHeaders(d.headers_json)) {
        w.String(name);
    }
    w.EndArray();
    if (with_payload) {
        boost::system::error_code ec;
        boost::json::parse(boost::json::string_view(d.payload.data(), d.payload.size()), ec);
        w.Key("payload");
        if (!ec && !d.payload.empty()) {
            w.Raw(d.payload);
        } else {
            w.String(d.payload);
        }
    }
    w.EndObject();
}

std::string DeliveryJson(const store::WebhookDelivery& d, bool with_payload) {
    admin::JsonWriter w;
    WriteDelivery(w, d, with_payload);
    return w.Take();
}

// --- Handlers --------------------------------------------------------------------------------

void RotateSecret(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto key_id = PathId(ex, 0);
    if (!key_id) {
        const auto& params = ex->request().path_params;
        RespondError(ex, NotFound("Virtual key '" +
                                  (params.empty() ? std::string() : params[0].substr(0, 64)) +
                                  "' was not found."));
        return;
    }
    std::optional<std::chrono::milliseconds> grace;
    const std::string& body = ex->request().body;
    if (!core::Trim(body).empty()) {
        auto obj = json::ParseObject(body);
        if (!obj) {
            RespondError(ex, obj.error());
            return;
        }
        auto seconds = json::GetInt64(*obj, "gracePeriodSeconds");
        if (!seconds) {
            RespondError(ex, seconds.error());
            return;
        }
        if (*seconds) {
            if (**seconds < 0 || **seconds > kMaxGraceSeconds) {
                RespondError(ex, BadParam("gracePeriodSeconds",
                                          "'gracePeriodSeconds' must be between 0 and 2592000."));
                return;
            }
            grace = std::chrono::seconds(**seconds);
        }
    }
    RunOnStore(deps, ex, [id = *key_id, grace](WebhookAdminDeps& d) -> Reply {
        auto rotated = d.secrets.RotateOnExecutor(id, grace);
        if (!rotated) {
            return tl::unexpected(rotated.error());
        }
        if (!*rotated) {
            return tl::unexpected(
                NotFound("Virtual key " + std::to_string(id) + " was not found."));
        }
        if (d.on_secret_rotated) {
            d.on_secret_rotated(id);
        }
        const Rotation& r = **rotated;
        admin::JsonWriter w;
        w.BeginObject();
        w.StringField("secret", r.secret);
        w.TimestampField("rotatedAt", r.rotated_at_ms);
        w.OptTimestampField("previousValidUntil", r.previous_valid_until_ms);
        w.EndObject();
        net::Response resp = net::Response::Json(200, w.Take());
        resp.headers.Set("Cache-Control", "no-store");
        return resp;
    });
}

void ListDeliveries(const net::ExchangePtr& ex, const DepsPtr& deps) {
    const net::Request& req = ex->request();
    store::WebhookDeliveryQuery q;
    if (auto status = QueryValue(req, "status"); status && !core::Trim(*status).empty()) {
        std::string s = core::ToLower(core::Trim(*status));
        if (s != kStatusPending && s != kStatusDelivered && s != kStatusFailed &&
            s != kStatusDead) {
            RespondError(ex, BadParam("status",
                                      "Invalid value for 'status': expected pending, delivered, "
                                      "failed or dead."));
            return;
        }
        q.status = std::move(s);
    }
    auto key = QueryInt(req, "virtualKeyId", 1, std::numeric_limits<int64_t>::max());
    if (!key) {
        RespondError(ex, key.error());
        return;
    }
    q.virtual_key_id = *key;
    if (auto task = QueryValue(req, "taskId"); task && !core::Trim(*task).empty()) {
        q.task_id = std::string(core::Trim(*task));
    }
    auto limit = QueryInt(req, "limit", 1, std::numeric_limits<int64_t>::max());
    if (!limit) {
        RespondError(ex, limit.error());
        return;
    }
    q.limit = *limit ? static_cast<int>(std::min<int64_t>(**limit, kMaxLimit)) : kDefaultLimit;
    auto offset = QueryInt(req, "offset", 0, std::numeric_limits<int>::max());
    if (!offset) {
        RespondError(ex, offset.error());
        return;
    }
    q.offset = *offset ? static_cast<int>(**offset) : 0;

    // Rows still batched in the recorder are written first (the executor runs jobs in order).
    deps->recorder.Flush();
    RunOnStore(deps, ex, [q](WebhookAdminDeps& d) -> Reply {
        auto rows = d.store.ListWebhookDeliveries(q);
        if (!rows) {
            return tl::unexpected(rows.error());
        }
        admin::JsonWriter w;
        w.BeginObject();
        w.Key("data").BeginArray();
        for (const auto& row : *rows) {
            WriteDelivery(w, row, /*with_payload=*/false);
        }
        w.EndArray();
        w.IntField("limit", q.limit);
        w.IntField("offset", q.offset);
        w.EndObject();
        return net::Response::Json(200, w.Take());
    });
}

void GetDelivery(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathDeliveryId(ex, 0);
    if (!id) {
        const auto& params = ex->request().path_params;
        RespondError(ex, DeliveryNotFound(params.empty() ? std::string() : params[0]));
        return;
    }
    deps->recorder.Flush();
    RunOnStore(deps, ex, [id = *id](WebhookAdminDeps& d) -> Reply {
        auto row = d.store.GetWebhookDelivery(id);
        if (!row) {
            return tl::unexpected(row.error());
        }
        if (!*row) {
            return tl::unexpected(DeliveryNotFound(id));
        }
        return net::Response::Json(200, DeliveryJson(**row, /*with_payload=*/true));
    });
}

void Redeliver(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto id = PathDeliveryId(ex, 0);
    if (!id) {
        const auto& params = ex->request().path_params;
        RespondError(ex, DeliveryNotFound(params.empty() ? std::string() : params[0]));
        return;
    }
    deps->recorder.Flush();
    using Lookup = core::Result<std::optional<store::WebhookDelivery>>;
    deps->executor.Call(
        ex->loop(),
        [deps, id = *id]() -> Lookup {
            try {
                return deps->store.GetWebhookDelivery(id);
            } catch (const std::exception& e) {
                return core::Fail(core::ErrorCode::kInternal, e.what());
            }
        },
        [deps, ex, id = *id](Lookup row) {
            if (!row) {
                Finish(ex, tl::unexpected(row.error()));
                return;
            }
            if (!*row) {
                Finish(ex, tl::unexpected(DeliveryNotFound(id)));
                return;
            }
            deps->publisher.Redeliver(
                std::move(**row), [ex](core::Result<store::WebhookDelivery> fresh) {
                    Reply reply = fresh ? Reply(net::Response::Json(
                                              202, DeliveryJson(*fresh, /*with_payload=*/false)))
                                        : Reply(tl::unexpected(fresh.error()));
                    ex->loop().Post(
                        [ex, reply = std::move(reply)]() mutable { Finish(ex, std::move(reply)); });
                });
        });
}

}  // namespace

// The by-value shared_ptr is the published signature (the app hands over its reference).
void RegisterWebhookAdminRoutes(
    net::Router& router,
    std::shared_ptr<WebhookAdminDeps> deps) {  // NOLINT(performance-unnecessary-value-param)
    AddRoute(router, deps, "POST", "/api/VirtualKeys/{id}/webhook-secret", RotateSecret);
    AddRoute(router, deps, "GET", "/api/webhooks/deliveries", ListDeliveries);
    AddRoute(router, deps, "GET", "/api/webhooks/deliveries/{id}", GetDelivery);
    AddRoute(router, deps, "POST", "/api/webhooks/deliveries/{id}/redeliver", Redeliver);
}

}  // namespace conduit::webhooks
