#include "admin/handler_support.hpp"

#include "core/strings.hpp"
#include "gateway/errors.hpp"
#include "json/helpers.hpp"

#include <spdlog/spdlog.h>

namespace conduit::admin::detail {

namespace bj = boost::json;

void AddRoute(net::Router& router,
              const DepsPtr& deps,
              std::string method,
              std::string pattern,
              AdminHandler fn) {
    router.Add(std::move(method), std::move(pattern), [deps, fn](const net::ExchangePtr& ex) {
        if (!HasMasterKey(ex->request(), deps->master_key)) {
            RespondError(ex, core::Error::Make(core::ErrorCode::kUnauthorized,
                                               "Invalid or missing master key. Send it as "
                                               "'X-API-Key', 'X-Master-Key' or "
                                               "'Authorization: Bearer'."));
            return;
        }
        fn(ex, deps);
    });
}

// --- Responses -------------------------------------------------------------------------------

net::Response JsonReply(int status, std::string body) {
    return net::Response::Json(status, std::move(body));
}

net::Response NoContent() {
    net::Response r;
    r.status = 204;
    return r;
}

void RespondError(const net::ExchangePtr& ex, const core::Error& error) {
    ex->Respond(gateway::ErrorResponse(error));
}

core::Error NotFound(std::string_view what, domain::Id id) {
    std::string message(what);
    message.append(" ").append(std::to_string(id)).append(" was not found.");
    return core::Error::Make(core::ErrorCode::kNotFound, std::move(message));
}

core::Error NotFoundText(std::string_view what, std::string_view text) {
    std::string message(what);
    message.append(" '").append(text.substr(0, 64)).append("' was not found.");
    return core::Error::Make(core::ErrorCode::kNotFound, std::move(message));
}

core::Error BadParam(std::string param, std::string message) {
    return core::Error::Make(core::ErrorCode::kInvalidRequest, std::move(message),
                             std::move(param));
}

// --- Path and query --------------------------------------------------------------------------

std::optional<domain::Id> PathId(const net::ExchangePtr& ex, size_t index) {
    const auto& params = ex->request().path_params;
    if (index >= params.size()) {
        return std::nullopt;
    }
    std::string_view text = params[index];
    // Digits only: ASP.NET's {id:int} rejects signs and blanks too.
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

std::optional<domain::Id> PathIdOr404(const net::ExchangePtr& ex,
                                      size_t index,
                                      std::string_view what) {
    auto id = PathId(ex, index);
    if (!id) {
        const auto& params = ex->request().path_params;
        RespondError(ex, NotFoundText(what, index < params.size() ? params[index] : ""));
    }
    return id;
}

std::optional<std::string> QueryValue(const net::Request& req, std::string_view name) {
    std::string_view query = req.query();
    size_t start = 0;
    while (start < query.size()) {
        size_t end = query.find('&', start);
        if (end == std::string_view::npos) {
            end = query.size();
        }
        std::string_view pair = query.substr(start, end - start);
        size_t eq = pair.find('=');
        if (core::IEquals(core::UrlDecode(pair.substr(0, eq)), name)) {
            return eq == std::string_view::npos ? std::string()
                                                : core::UrlDecode(pair.substr(eq + 1));
        }
        start = end + 1;
    }
    return std::nullopt;
}

core::Result<std::optional<int64_t>> QueryInt(const net::Request& req,
                                              std::string_view name,
                                              int64_t min,
                                              int64_t max) {
    auto text = QueryValue(req, name);
    if (!text || core::Trim(*text).empty()) {
        return std::optional<int64_t>();
    }
    auto value = core::ParseInt(core::Trim(*text));
    if (!value || *value < min || *value > max) {
        std::string message = "Invalid value for query parameter '";
        message.append(name).append("': expected an integer");
        if (min > std::numeric_limits<int64_t>::min()) {
            message.append(" >= ").append(std::to_string(min));
        }
        message.append(".");
        return core::Fail(core::ErrorCode::kInvalidRequest, std::move(message), std::string(name));
    }
    return std::optional<int64_t>(*value);
}

core::Result<Paging> ParsePaging(const net::Request& req, int default_limit, int max_limit) {
    Paging p;
    p.limit = default_limit;
    auto limit = QueryInt(req, "limit", 1, std::numeric_limits<int64_t>::max());
    if (!limit) {
        return tl::unexpected(limit.error());
    }
    if (*limit) {
        p.limit = static_cast<int>(std::min<int64_t>(**limit, max_limit));
    }
    auto offset = QueryInt(req, "offset", 0, std::numeric_limits<int>::max());
    if (!offset) {
        return tl::unexpected(offset.error());
    }
    if (*offset) {
        p.offset = static_cast<int>(**offset);
    }
    return p;
}

// --- Request bodies --------------------------------------------------------------------------

namespace {

size_t Utf8Length(std::string_view s) {
    size_t n = 0;
    for (char ch : s) {
        if ((static_cast<unsigned char>(ch) & 0xC0) != 0x80) {
            ++n;
        }
    }
    return n;
}

core::Error MissingParam(std::string_view key) {
    std::string message = "Missing required parameter: '";
    message.append(key).append("'.");
    return BadParam(std::string(key), std::move(message));
}

core::Error NotNullable(std::string_view key) {
    std::string message = "'";
    message.append(key).append("' cannot be null.");
    return BadParam(std::string(key), std::move(message));
}

}  // namespace

template <class T>
bool BodyReader::Begin(std::string_view key, bool required, bool nullable, Field<T>& out) {
    if (error_) {
        return false;
    }
    const bj::value* v = Raw(key);
    if (v == nullptr) {
        if (create_ && required) {
            Fail(MissingParam(key));
        }
        return false;
    }
    if (v->is_null()) {
        if (create_) {
            if (required) {
                Fail(MissingParam(key));
            }
            return false;  // null on create = use the default
        }
        if (!nullable) {
            Fail(NotNullable(key));
            return false;
        }
        out.present = true;  // explicit null: clear
        return false;
    }
    return true;
}

const bj::value* BodyReader::Raw(std::string_view key) const {
    return obj_.if_contains(bj::string_view(key.data(), key.size()));
}

void BodyReader::Fail(core::Error error) {
    if (!error_) {
        error_ = std::move(error);
    }
}

Field<std::string> BodyReader::Text(std::string_view key, const TextRule& rule) {
    Field<std::string> out;
    if (!Begin(key, rule.required, rule.nullable, out)) {
        return out;
    }
    auto s = json::GetString(obj_, key);
    if (!s) {
        Fail(s.error());
        return out;
    }
    std::string value = std::move(**s);
    size_t trimmed = Utf8Length(core::Trim(value));
    if (trimmed < rule.min_chars) {
        std::string message = "'";
        message.append(key).append("' must not be empty.");
        Fail(BadParam(std::string(key), std::move(message)));
        return out;
    }
    if (rule.max_chars > 0 && Utf8Length(value) > rule.max_chars) {
        std::string message = "'";
        message.append(key)
            .append("' must be at most ")
            .append(std::to_string(rule.max_chars))
            .append(" characters long.");
        Fail(BadParam(std::string(key), std::move(message)));
        return out;
    }
    out.present = true;
    out.value = std::move(value);
    return out;
}

Field<int64_t> BodyReader::Int(std::string_view key, const IntRule& rule) {
    Field<int64_t> out;
    if (!Begin(key, rule.required, rule.nullable, out)) {
        return out;
    }
    auto i = json::GetInt64(obj_, key);
    if (!i) {
        Fail(i.error());
        return out;
    }
    if (**i < rule.min || **i > rule.max) {
        std::string message = "'";
        message.append(key).append("' must be");
        if (rule.min > std::numeric_limits<int64_t>::min()) {
            message.append(" at least ").append(std::to_string(rule.min));
            if (rule.max < std::numeric_limits<int64_t>::max()) {
                message.append(" and");
            }
        }
        if (rule.max < std::numeric_limits<int64_t>::max()) {
            message.append(" at most ").append(std::to_string(rule.max));
        }
        message.append(".");
        Fail(BadParam(std::string(key), std::move(message)));
        return out;
    }
    out.present = true;
    out.value = **i;
    return out;
}

Field<bool> BodyReader::Bool(std::string_view key, bool required) {
    Field<bool> out;
    if (!Begin(key, required, /*nullable=*/false, out)) {
        return out;
    }
    auto b = json::GetBool(obj_, key);
    if (!b) {
        Fail(b.error());
        return out;
    }
    out.present = true;
    out.value = **b;
    return out;
}

Field<core::Micros> BodyReader::Money(std::string_view key, const MoneyRule& rule) {
    Field<core::Micros> out;
    if (!Begin(key, rule.required, rule.nullable, out)) {
        return out;
    }
    auto m = json::GetMoney(obj_, key);
    if (!m) {
        Fail(m.error());
        return out;
    }
    if (rule.non_negative && **m < 0) {
        std::string message = "'";
        message.append(key).append("' must not be negative.");
        Fail(BadParam(std::string(key), std::move(message)));
        return out;
    }
    if (rule.non_zero && **m == 0) {
        std::string message = "'";
        message.append(key).append("' must not be zero.");
        Fail(BadParam(std::string(key), std::move(message)));
        return out;
    }
    out.present = true;
    out.value = **m;
    return out;
}

Field<std::vector<domain::Id>> BodyReader::IdList(std::string_view key) {
    Field<std::vector<domain::Id>> out;
    if (!Begin(key, /*required=*/false, /*nullable=*/true, out)) {
        if (out.present) {
            out.value = std::vector<domain::Id>{};  // null = no links
        }
        return out;
    }
    auto ids = json::GetIdList(obj_, key);
    if (!ids) {
        Fail(ids.error());
        return out;
    }
    for (domain::Id id : **ids) {
        if (id <= 0) {
            std::string message = "'";
            message.append(key).append("' must contain positive ids only.");
            Fail(BadParam(std::string(key), std::move(message)));
            return out;
        }
    }
    out.present = true;
    out.value = std::move(**ids);
    return out;
}

core::Result<boost::json::object> ParseBody(const net::Request& req) {
    return json::ParseObject(req.body);
}

bool IsHttpUrl(std::string_view url) {
    std::string_view rest;
    if (core::IStartsWith(url, "https://")) {
        rest = url.substr(8);
    } else if (core::IStartsWith(url, "http://")) {
        rest = url.substr(7);
    } else {
        return false;
    }
    if (rest.empty() || rest.front() == '/' || rest.front() == ':' || rest.front() == '?' ||
        rest.front() == '#') {
        return false;
    }
    for (char ch : url) {
        auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c == 0x7F) {
            return false;  // no whitespace or control characters anywhere
        }
    }
    return true;
}

// --- Store jobs ------------------------------------------------------------------------------

Reply JobFailed(const char* what) {
    spdlog::error("admin: store job failed: {}", what);
    return core::Fail(core::ErrorCode::kInternal,
                      "The server had an error processing the request.");
}

void Finish(const net::ExchangePtr& ex, Reply reply) {
    if (ex->closed() || ex->responded()) {
        return;
    }
    if (reply) {
        ex->Respond(std::move(*reply));
    } else {
        RespondError(ex, reply.error());
    }
}

void ReloadConfig(AdminDeps& deps, std::string_view what, const ConfigChange& change) {
    if (auto r = deps.config.ReloadOnExecutor(); !r) {
        // The write is committed; the next successful reload (any later change) publishes it.
        spdlog::error("admin: {} was saved but the configuration reload failed: {}", what,
                      r.error().message);
    }
    if (deps.on_reloaded) {
        deps.on_reloaded();
    }
    if (!change.entity.empty() && deps.on_config_change) {
        deps.on_config_change(change);
    }
}

}  // namespace conduit::admin::detail
