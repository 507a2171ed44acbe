#pragma once

#include "core/error.hpp"
#include "core/money.hpp"

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::json {

/// Parses a request body that must be a JSON object (admin API, Conduit routes). Errors are
/// kInvalidRequest: "We could not parse the JSON body of your request." for malformed JSON
/// (including nesting deeper than 64), "The request body must be a JSON object." otherwise.
/// Never throws (beyond std::bad_alloc). Any thread.
core::Result<boost::json::object> ParseObject(std::string_view body);

/// Whether a member must be present. Every getter treats a JSON `null` like a missing member.
enum class Presence { kOptional, kRequired };

// Typed getters. Each returns:
//   - nullopt when the member is missing or null and `presence` is kOptional;
//   - kInvalidRequest "Missing required parameter: 'key'." (param = key) when it is missing or
//     null and `presence` is kRequired;
//   - kInvalidRequest "Invalid type for 'key': expected ..." (param = key) when the member has
//     the wrong type or an out-of-range value.
// Pure functions, any thread.

/// A string member.
core::Result<std::optional<std::string>> GetString(const boost::json::object& obj,
                                                   std::string_view key,
                                                   Presence presence = Presence::kOptional);

/// An integer member: a JSON integer, or a number with an integral value, within int64 range.
core::Result<std::optional<int64_t>> GetInt64(const boost::json::object& obj,
                                              std::string_view key,
                                              Presence presence = Presence::kOptional);

/// A boolean member (true/false only).
core::Result<std::optional<bool>> GetBool(const boost::json::object& obj,
                                          std::string_view key,
                                          Presence presence = Presence::kOptional);

/// An amount of money in micro-units: a JSON number or a decimal string ("12.5"). Integers are
/// converted exactly; a floating-point number goes through its shortest round-trip decimal form
/// (what the client most likely wrote) and core::ParseMoney, so 0.1 is exactly 100000 micros.
/// More than 6 fractional digits round half away from zero.
core::Result<std::optional<core::Micros>> GetMoney(const boost::json::object& obj,
                                                   std::string_view key,
                                                   Presence presence = Presence::kOptional);

/// A list of integer ids: an array of integers, or a string of comma-separated integers
/// ("1, 2,3"; blanks ignored; "" is the empty list).
core::Result<std::optional<std::vector<int64_t>>> GetIdList(
    const boost::json::object& obj, std::string_view key, Presence presence = Presence::kOptional);

/// A list of strings: an array of strings, or a comma-separated string (pieces trimmed, empty
/// pieces dropped).
core::Result<std::optional<std::vector<std::string>>> GetStringList(
    const boost::json::object& obj, std::string_view key, Presence presence = Presence::kOptional);

/// An object whose values are all strings (e.g. webhook headers).
core::Result<std::optional<std::map<std::string, std::string>>> GetStringMap(
    const boost::json::object& obj, std::string_view key, Presence presence = Presence::kOptional);

/// Compact JSON text for `value`. Unlike boost::json::serialize, a double is written in its
/// shortest round-trip form in plain notation where that is shortest ("0.1", "12.5", "1e+300",
/// not "1E-1"), and a non-finite double as null. Any thread.
std::string Serialize(const boost::json::value& value);

/// Appends Serialize(value) to `out`.
void SerializeTo(std::string& out, const boost::json::value& value);

}  // namespace conduit::json
