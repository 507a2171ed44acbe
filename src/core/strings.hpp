#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::core {

/// ASCII case-insensitive equality.
bool IEquals(std::string_view a, std::string_view b);
/// ASCII case-insensitive prefix test.
bool IStartsWith(std::string_view s, std::string_view prefix);
/// ASCII lowercase copy.
std::string ToLower(std::string_view s);
/// Strips ASCII whitespace from both ends.
std::string_view Trim(std::string_view s);
/// Splits on `sep`, trimming each piece and dropping empty pieces.
std::vector<std::string> SplitTrimmed(std::string_view s, char sep);
/// Parses a base-10 signed integer occupying all of `s`.
std::optional<int64_t> ParseInt(std::string_view s);
/// Decodes %XX and '+' (as space) in a URL query component.
std::string UrlDecode(std::string_view s);
/// Strictly decodes %XX in a URL component ('+' stays '+'); false on a malformed escape.
bool PercentDecode(std::string_view in, std::string& out);
/// Returns the value of `name` in a query string `a=1&b=2` (decoded), if present.
std::optional<std::string> QueryParam(std::string_view query, std::string_view name);
/// Escapes a string for inclusion in a JSON string literal (without the quotes).
void AppendJsonEscaped(std::string& out, std::string_view s);
/// A JSON string literal, quoted and escaped.
std::string JsonQuote(std::string_view s);

}  // namespace conduit::core
