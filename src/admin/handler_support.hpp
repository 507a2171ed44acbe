#pragma once

// Internal to the admin component: shared plumbing of the admin handlers (authentication,
// path/query/body parsing, running store work on the executor, responding).

#include "admin/admin_api.hpp"
#include "core/error.hpp"
#include "domain/entities.hpp"
#include "net/exchange.hpp"
#include "net/router.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conduit::admin::detail {

using DepsPtr = std::shared_ptr<AdminDeps>;
/// What a store job produces: the response to send, or an error mapped by gateway::ErrorResponse.
using Reply = core::Result<net::Response>;
/// A route handler that runs after the master key has been checked.
using AdminHandler = void (*)(const net::ExchangePtr& ex, const DepsPtr& deps);

/// Registers `fn` for `method` + `pattern`, wrapped in the master-key check (401 on failure).
void AddRoute(net::Router& router,
              const DepsPtr& deps,
              std::string method,
              std::string pattern,
              AdminHandler fn);

// Per-resource registration (one translation unit each).
void RegisterGroupRoutes(net::Router& router, const DepsPtr& deps);
void RegisterVirtualKeyRoutes(net::Router& router, const DepsPtr& deps);
void RegisterProviderRoutes(net::Router& router, const DepsPtr& deps);
void RegisterMappingRoutes(net::Router& router, const DepsPtr& deps);
void RegisterCostRoutes(net::Router& router, const DepsPtr& deps);
void RegisterAnalyticsRoutes(net::Router& router, const DepsPtr& deps);
void RegisterNotificationRoutes(net::Router& router, const DepsPtr& deps);
void RegisterRouterRoutes(net::Router& router, const DepsPtr& deps);
void RegisterCacheStatsRoutes(net::Router& router, const DepsPtr& deps);

// --- Responses -------------------------------------------------------------------------------

/// A JSON response with `body`.
net::Response JsonReply(int status, std::string body);
/// `204 No Content` with an empty body.
net::Response NoContent();
/// Sends `error` as an OpenAI-style error body. Loop thread.
void RespondError(const net::ExchangePtr& ex, const core::Error& error);
/// 404 `not_found`: "<what> <id> was not found."
core::Error NotFound(std::string_view what, domain::Id id);
/// 404 `not_found` for a path segment that is not an id.
core::Error NotFoundText(std::string_view what, std::string_view text);
/// 400 `invalid_request` naming `param`.
core::Error BadParam(std::string param, std::string message);

// --- Path and query --------------------------------------------------------------------------

/// Path parameter `index` as a positive id, or nullopt (the caller answers 404).
std::optional<domain::Id> PathId(const net::ExchangePtr& ex, size_t index);
/// PathId(), or — when the segment is not an id — responds 404 "<what> '<text>' was not found."
/// and returns nullopt. Loop thread.
std::optional<domain::Id> PathIdOr404(const net::ExchangePtr& ex,
                                      size_t index,
                                      std::string_view what);
/// Query parameter by name, ASCII case-insensitive (ASP.NET binds query names that way),
/// URL-decoded. nullopt when absent.
std::optional<std::string> QueryValue(const net::Request& req, std::string_view name);
/// Optional integer query parameter in [min, max]; 400 naming it otherwise. Empty = absent.
core::Result<std::optional<int64_t>> QueryInt(const net::Request& req,
                                              std::string_view name,
                                              int64_t min,
                                              int64_t max);

/// `limit` and `offset` query parameters.
struct Paging {
    int limit = 100;
    int offset = 0;
};
/// Parses `limit` (1.., larger values clamp to `max_limit`; default `default_limit`) and
/// `offset` (0..).
core::Result<Paging> ParsePaging(const net::Request& req, int default_limit, int max_limit);

// --- Request bodies --------------------------------------------------------------------------

/// One member of a create/update body. `present` is false when the member was absent (update:
/// leave the stored value alone). When present, `value` is nullopt for an explicit JSON null
/// (update: clear the field) — only nullable members can be null.
template <class T>
struct Field {
    bool present = false;
    std::optional<T> value;

    /// Assigns the new value to `target` when present (null assigns `cleared`).
    void ApplyTo(T& target, const T& cleared = T{}) const {
        if (present) {
            target = value ? *value : cleared;
        }
    }
    /// Same for an optional target (null clears it).
    void ApplyTo(std::optional<T>& target) const {
        if (present) {
            target = value;
        }
    }
};

/// Validation rules of a text member.
struct TextRule {
    bool required = false;  // must be present and non-null on create
    bool nullable = true;   // null accepted on update (clears)
    size_t min_chars = 0;   // after trimming
    size_t max_chars = 0;   // 0 = unlimited; counted in UTF-8 code points
};

/// Validation rules of an integer member.
struct IntRule {
    bool required = false;
    bool nullable = true;
    int64_t min = std::numeric_limits<int64_t>::min();
    int64_t max = std::numeric_limits<int64_t>::max();
};

/// Validation rules of a money member (JSON number or decimal string).
struct MoneyRule {
    bool required = false;
    bool nullable = false;
    bool non_negative = true;
    bool non_zero = false;
};

/// Reads typed members of a JSON body for a create (required members enforced, null = absent)
/// or an update (absent = unchanged, null = clear for nullable members). The first validation
/// error is kept and later reads become no-ops; check error() at the end. Loop thread.
class BodyReader {
public:
    BodyReader(const boost::json::object& obj, bool create) : obj_(obj), create_(create) {}

    Field<std::string> Text(std::string_view key, const TextRule& rule);
    Field<int64_t> Int(std::string_view key, const IntRule& rule);
    Field<bool> Bool(std::string_view key, bool required = false);
    Field<core::Micros> Money(std::string_view key, const MoneyRule& rule);
    /// A list of ids (array of integers or comma-separated string); null = empty list.
    Field<std::vector<domain::Id>> IdList(std::string_view key);
    /// The raw member (nullptr when absent); null is returned as a null value.
    const boost::json::value* Raw(std::string_view key) const;

    /// Records an error (ignored when one is already recorded).
    void Fail(core::Error error);
    bool ok() const { return !error_.has_value(); }
    const std::optional<core::Error>& error() const { return error_; }
    bool create() const { return create_; }

private:
    /// Common prologue: absent / null handling. Returns false when the caller should return
    /// `out` as is.
    template <class T>
    bool Begin(std::string_view key, bool required, bool nullable, Field<T>& out);

    const boost::json::object& obj_;
    bool create_;
    std::optional<core::Error> error_;
};

/// Parses the request body as a JSON object (400 on malformed JSON or a non-object).
core::Result<boost::json::object> ParseBody(const net::Request& req);
/// True if `url` is an absolute http(s) URL with a host.
bool IsHttpUrl(std::string_view url);

// --- Store jobs ------------------------------------------------------------------------------

/// The error of a failed result, for early returns: `if (!r) return Err(r);`.
template <class T>
tl::unexpected<core::Error> Err(const core::Result<T>& result) {
    return tl::unexpected<core::Error>(result.error());
}

/// The reply for a job that threw (logged; 500). Executor thread.
Reply JobFailed(const char* what);
/// Sends `reply` on `ex` unless the client has gone. Loop thread.
void Finish(const net::ExchangePtr& ex, Reply reply);
/// After a successful write: rebuilds the configuration snapshot so that the next request sees
/// the change. A failed reload is logged (the write itself is committed). Executor thread.
/// `change` (when its entity is set) is then reported through AdminDeps::on_config_change.
void ReloadConfig(AdminDeps& deps, std::string_view what, const ConfigChange& change = {});

/// Runs `job(AdminDeps&) -> Reply` on the store executor and sends its reply on the exchange's
/// loop thread. The exchange and the deps stay alive until then. Loop thread.
template <class Job>
void RunOnStore(const DepsPtr& deps, const net::ExchangePtr& ex, Job job) {
    deps->executor.Call(
        ex->loop(),
        [deps, job = std::move(job)]() -> Reply {
            try {
                return job(*deps);
            } catch (const std::exception& e) {
                return JobFailed(e.what());
            } catch (...) {
                return JobFailed("unknown exception");
            }
        },
        [ex](Reply reply) { Finish(ex, std::move(reply)); });
}

}  // namespace conduit::admin::detail
