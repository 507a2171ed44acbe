#include "core/money.hpp"

#include <cmath>
#include <limits>

namespace conduit::core {

namespace {
__extension__ typedef __int128 Int128;  // NOLINT: exact intermediate products
}  // namespace

std::optional<Micros> ParseMoney(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
        s.remove_suffix(1);
    }
    if (s.empty()) {
        return std::nullopt;
    }
    bool neg = false;
    if (s.front() == '-' || s.front() == '+') {
        neg = s.front() == '-';
        s.remove_prefix(1);
    }
    if (s.empty()) {
        return std::nullopt;
    }
    Int128 whole = 0;
    size_t i = 0;
    bool any_digit = false;
    for (; i < s.size() && s[i] != '.'; ++i) {
        if (s[i] < '0' || s[i] > '9') {
            return std::nullopt;
        }
        whole = whole * 10 + (s[i] - '0');
        any_digit = true;
        if (whole > std::numeric_limits<int64_t>::max() / kMicrosPerUnit) {
            return std::nullopt;
        }
    }
    Int128 frac = 0;
    int frac_digits = 0;
    bool round_up = false;
    if (i < s.size()) {
        ++i;  // '.'
        for (; i < s.size(); ++i) {
            if (s[i] < '0' || s[i] > '9') {
                return std::nullopt;
            }
            any_digit = true;
            if (frac_digits < 6) {
                frac = frac * 10 + (s[i] - '0');
                ++frac_digits;
            } else if (frac_digits == 6) {
                round_up = s[i] >= '5';
                ++frac_digits;
            }
        }
    }
    if (!any_digit) {
        return std::nullopt;
    }
    for (int k = std::min(frac_digits, 6); k < 6; ++k) {
        frac *= 10;
    }
    Int128 total = whole * kMicrosPerUnit + frac + (round_up ? 1 : 0);
    if (total > std::numeric_limits<int64_t>::max()) {
        return std::nullopt;
    }
    auto v = static_cast<int64_t>(total);
    return neg ? -v : v;
}

std::optional<Micros> MoneyFromDouble(double value) {
    if (!std::isfinite(value)) {
        return std::nullopt;
    }
    double scaled = value * static_cast<double>(kMicrosPerUnit);
    if (std::fabs(scaled) > 9.0e18) {
        return std::nullopt;
    }
    return static_cast<Micros>(std::llround(scaled));
}

std::string FormatMoney(Micros micros) {
    bool neg = micros < 0;
    // Work in unsigned to format INT64_MIN safely.
    unsigned long long abs = neg ? 0ULL - static_cast<unsigned long long>(micros)
                                 : static_cast<unsigned long long>(micros);
    unsigned long long whole = abs / kMicrosPerUnit;
    unsigned long long frac = abs % kMicrosPerUnit;
    std::string out = neg ? "-" : "";
    out += std::to_string(whole);
    if (frac != 0) {
        std::string f = std::to_string(frac);
        f.insert(0, 6 - f.size(), '0');
        while (!f.empty() && f.back() == '0') {
            f.pop_back();
        }
        out += ".";
        out += f;
    }
    return out;
}

double MoneyToDouble(Micros micros) {
    return static_cast<double>(micros) / static_cast<double>(kMicrosPerUnit);
}

Micros CostPerMillion(int64_t count, Micros price_per_million) {
    if (count <= 0 || price_per_million == 0) {
        return 0;
    }
    Int128 product = static_cast<Int128>(count) * price_per_million;
    Int128 half = 500'000;
    Int128 q = (product >= 0 ? product + half : product - half) / 1'000'000;
    if (q > std::numeric_limits<int64_t>::max()) {
        return std::numeric_limits<int64_t>::max();
    }
    if (q < std::numeric_limits<int64_t>::min()) {
        return std::numeric_limits<int64_t>::min();
    }
    return static_cast<Micros>(q);
}

}  // namespace conduit::core
