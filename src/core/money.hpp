#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace conduit::core {

/// Money is an exact integer count of micro-units (1e-6 of the currency unit). Never a float.
using Micros = int64_t;
constexpr Micros kMicrosPerUnit = 1'000'000;

/// Parses a decimal string ("12", "-0.5", "3.141592") into micro-units. More than 6 fractional
/// digits are rounded half away from zero. Returns nullopt on malformed input or overflow.
std::optional<Micros> ParseMoney(std::string_view text);
/// Converts a JSON double to micro-units, rounding half away from zero (exact for |x| < 2^53/1e6).
std::optional<Micros> MoneyFromDouble(double value);
/// Formats micro-units as a decimal string with up to 6 fractional digits, trailing zeros trimmed
/// ("12.5", "-0.000001", "3").
std::string FormatMoney(Micros micros);
/// Micro-units as a JSON number value (what admin DTOs carry as "decimal").
double MoneyToDouble(Micros micros);

/// cost = count × price_per_million / 1,000,000, rounded half up to whole micro-units.
/// `price_per_million` is in micro-units per million items (tokens). Saturates instead of
/// overflowing.
Micros CostPerMillion(int64_t count, Micros price_per_million);

}  // namespace conduit::core
