#include "json/helpers.hpp"

#include "core/strings.hpp"

#include <boost/json/parse.hpp>

#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <system_error>
#include <utility>

namespace conduit::json {

namespace {

namespace bj = boost::json;

constexpr size_t kMaxDepth = 64;

tl::unexpected<core::Error> Missing(std::string_view key) {
    std::string message = "Missing required parameter: '";
    message.append(key).append("'.");
    return core::Fail(core::ErrorCode::kInvalidRequest, std::move(message), std::string(key));
}

tl::unexpected<core::Error> Invalid(std::string_view key, std::string_view expected) {
    std::string message = "Invalid type for '";
    message.append(key).append("': expected ").append(expected).append(".");
    return core::Fail(core::ErrorCode::kInvalidRequest, std::move(message), std::string(key));
}

/// The member `key` unless it is missing or null.
const bj::value* Find(const bj::object& obj, std::string_view key) {
    const bj::value* v = obj.if_contains(bj::string_view(key.data(), key.size()));
    return v == nullptr || v->is_null() ? nullptr : v;
}

/// Shared prologue of the getters: nullptr means "return `absent`" (set to the right result).
template <class T>
const bj::value* Lookup(const bj::object& obj,
                        std::string_view key,
                        Presence presence,
                        core::Result<std::optional<T>>& absent) {
    const bj::value* v = Find(obj, key);
    if (v == nullptr) {
        absent = presence == Presence::kRequired ? core::Result<std::optional<T>>(Missing(key))
                                                 : core::Result<std::optional<T>>(std::nullopt);
    }
    return v;
}

std::string_view View(const bj::string& s) { return std::string_view(s.data(), s.size()); }

/// An integral JSON number within int64 range.
std::optional<int64_t> AsInt64(const bj::value& v) {
    if (const int64_t* i = v.if_int64()) {
        return *i;
    }
    if (const uint64_t* u = v.if_uint64()) {
        if (*u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            return static_cast<int64_t>(*u);
        }
        return std::nullopt;
    }
    if (const double* d = v.if_double()) {
        // [-2^63, 2^63): both bounds are exact doubles.
        constexpr double kLimit = 9223372036854775808.0;
        if (std::isfinite(*d) && std::trunc(*d) == *d && *d >= -kLimit && *d < kLimit) {
            return static_cast<int64_t>(*d);
        }
    }
    return std::nullopt;
}

std::optional<core::Micros> MoneyFromJsonNumber(const bj::value& v) {
    constexpr int64_t kMaxUnits = std::numeric_limits<int64_t>::max() / core::kMicrosPerUnit;
    if (const int64_t* i = v.if_int64()) {
        if (*i > kMaxUnits || *i < -kMaxUnits) {
            return std::nullopt;
        }
        return *i * core::kMicrosPerUnit;
    }
    if (const uint64_t* u = v.if_uint64()) {
        if (*u > static_cast<uint64_t>(kMaxUnits)) {
            return std::nullopt;
        }
        return static_cast<int64_t>(*u) * core::kMicrosPerUnit;
    }
    const double d = v.get_double();
    if (!std::isfinite(d)) {
        return std::nullopt;
    }
    // The shortest plain-notation text that round-trips is what a client writes for money
    // ("0.1", "19.99"); parsing it is exact where d * 1e6 would be off by one ulp.
    char buf[400];  // the largest finite double has 309 digits
    const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::fixed);
    if (ec != std::errc()) {
        return core::MoneyFromDouble(d);
    }
    return core::ParseMoney(std::string_view(buf, static_cast<size_t>(end - buf)));
}

void AppendNumber(std::string& out, auto number) {
    char buf[64];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), number);
    if (ec == std::errc()) {
        out.append(buf, end);
    } else {
        out.append("null");
    }
}

}  // namespace

core::Result<boost::json::object> ParseObject(std::string_view body) {
    bj::parse_options options;
    options.max_depth = kMaxDepth;
    boost::system::error_code ec;
    bj::value v = bj::parse(bj::string_view(body.data(), body.size()), ec, {}, options);
    if (ec) {
        return core::Fail(core::ErrorCode::kInvalidRequest,
                          "We could not parse the JSON body of your request.");
    }
    if (!v.is_object()) {
        return core::Fail(core::ErrorCode::kInvalidRequest,
                          "The request body must be a JSON object.");
    }
    return std::move(v.get_object());
}

core::Result<std::optional<std::string>> GetString(const boost::json::object& obj,
                                                   std::string_view key,
                                                   Presence presence) {
    core::Result<std::optional<std::string>> result;
    const bj::value* v = Lookup(obj, key, presence, result);
    if (v == nullptr) {
        return result;
    }
    const bj::string* s = v->if_string();
    if (s == nullptr) {
        return Invalid(key, "a string");
    }
    return std::string(View(*s));
}

core::Result<std::optional<int64_t>> GetInt64(const boost::json::object& obj,
                                              std::string_view key,
                                              Presence presence) {
    core::Result<std::optional<int64_t>> result;
    const bj::value* v = Lookup(obj, key, presence, result);
    if (v == nullptr) {
        return result;
    }
    std::optional<int64_t> i = AsInt64(*v);
    if (!i) {
        return Invalid(key, "an integer");
    }
    return i;
}

core::Result<std::optional<bool>> GetBool(const boost::json::object& obj,
                                          std::string_view key,
                                          Presence presence) {
    core::Result<std::optional<bool>> result;
    const bj::value* v = Lookup(obj, key, presence, result);
    if (v == nullptr) {
        return result;
    }
    const bool* b = v->if_bool();
    if (b == nullptr) {
        return Invalid(key, "a boolean");
    }
    return *b;
}

core::Result<std::optional<core::Micros>> GetMoney(const boost::json::object& obj,
                                                   std::string_view key,
                                                   Presence presence) {
    core::Result<std::optional<core::Micros>> result;
    const bj::value* v = Lookup(obj, key, presence, result);
    if (v == nullptr) {
        return result;
    }
    std::optional<core::Micros> micros;
    if (const bj::string* s = v->if_string()) {
        micros = core::ParseMoney(View(*s));
    } else if (v->is_number()) {
        micros = MoneyFromJsonNumber(*v);
    }
    if (!micros) {
        return Invalid(key, "a decimal number");
    }
    return micros;
}

core::Result<std::optional<std::vector<int64_t>>> GetIdList(const boost::json::object& obj,
                                                            std::string_view key,
                                                            Presence presence) {
    core::Result<std::optional<std::vector<int64_t>>> result;
    const bj::value* v = Lookup(obj, key, presence, result);
    if (v == nullptr) {
        return result;
    }
    constexpr std::string_view kExpected =
        "an array of integers or a string of comma-separated integers";
    std::vector<int64_t> ids;
    if (const bj::array* a = v->if_array()) {
        ids.reserve(a->size());
        for (const bj::value& item : *a) {
            std::optional<int64_t> id = AsInt64(item);
            if (!id) {
                return Invalid(key, kExpected);
            }
            ids.push_back(*id);
        }
    } else if (const bj::string* s = v->if_string()) {
        for (const std::string& piece : core::SplitTrimmed(View(*s), ',')) {
            std::optional<int64_t> id = core::ParseInt(piece);
            if (!id) {
                return Invalid(key, kExpected);
            }
            ids.push_back(*id);
        }
    } else {
        return Invalid(key, kExpected);
    }
    return ids;
}

core::Result<std::optional<std::vector<std::string>>> GetStringList(const boost::json::object& obj,
                                                                    std::string_view key,
                                                                    Presence presence) {
    core::Result<std::optional<std::vector<std::string>>> result;
    const bj::value* v = Lookup(obj, key, presence, result);
    if (v == nullptr) {
        return result;
    }
    std::vector<std::string> items;
    if (const bj::array* a = v->if_array()) {
        items.reserve(a->size());
        for (const bj::value& item : *a) {
            const bj::string* s = item.if_string();
            if (s == nullptr) {
                return Invalid(key, "an array of strings or a comma-separated string");
            }
            items.emplace_back(View(*s));
        }
    } else if (const bj::string* s = v->if_string()) {
        items = core::SplitTrimmed(View(*s), ',');
    } else {
        return Invalid(key, "an array of strings or a comma-separated string");
    }
    return items;
}

core::Result<std::optional<std::map<std::string, std::string>>> GetStringMap(
    const boost::json::object& obj, std::string_view key, Presence presence) {
    core::Result<std::optional<std::map<std::string, std::string>>> result;
    const bj::value* v = Lookup(obj, key, presence, result);
    if (v == nullptr) {
        return result;
    }
    const bj::object* o = v->if_object();
    if (o == nullptr) {
        return Invalid(key, "an object of strings");
    }
    std::map<std::string, std::string> map;
    for (const auto& member : *o) {
        const bj::string* s = member.value().if_string();
        if (s == nullptr) {
            return Invalid(key, "an object of strings");
        }
        map.insert_or_assign(std::string(member.key().data(), member.key().size()),
                             std::string(View(*s)));
    }
    return map;
}

void SerializeTo(std::string& out, const boost::json::value& value) {
    switch (value.kind()) {
        case bj::kind::null:
            out.append("null");
            break;
        case bj::kind::bool_:
            out.append(value.get_bool() ? "true" : "false");
            break;
        case bj::kind::int64:
            AppendNumber(out, value.get_int64());
            break;
        case bj::kind::uint64:
            AppendNumber(out, value.get_uint64());
            break;
        case bj::kind::double_:
            if (std::isfinite(value.get_double())) {
                AppendNumber(out, value.get_double());
            } else {
                out.append("null");
            }
            break;
        case bj::kind::string:
            out.push_back('"');
            core::AppendJsonEscaped(out, View(value.get_string()));
            out.push_back('"');
            break;
        case bj::kind::array: {
            out.push_back('[');
            bool first = true;
            for (const bj::value& item : value.get_array()) {
                if (!first) {
                    out.push_back(',');
                }
                first = false;
                SerializeTo(out, item);
            }
            out.push_back(']');
            break;
        }
        case bj::kind::object: {
            out.push_back('{');
            bool first = true;
            for (const auto& member : value.get_object()) {
                if (!first) {
                    out.push_back(',');
                }
                first = false;
                out.push_back('"');
                core::AppendJsonEscaped(out,
                                        std::string_view(member.key().data(), member.key().size()));
                out.append("\":");
                SerializeTo(out, member.value());
            }
            out.push_back('}');
            break;
        }
    }
}

std::string Serialize(const boost::json::value& value) {
    std::string out;
    SerializeTo(out, value);
    return out;
}

}  // namespace conduit::json
