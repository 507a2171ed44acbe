#include "core/clock.hpp"

#include <cstdio>
#include <ctime>
#include <string>
#include <string_view>

namespace conduit::core {

namespace {
// Days from civil date (proleptic Gregorian), Howard Hinnant's algorithm (public domain facts).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2 ? 1 : 0;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const auto yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool Digits(std::string_view s, size_t pos, size_t n, int& out) {
    if (pos + n > s.size()) {
        return false;
    }
    int v = 0;
    for (size_t i = 0; i < n; ++i) {
        char c = s[pos + i];
        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + (c - '0');
    }
    out = v;
    return true;
}
}  // namespace

std::string FormatIso8601(int64_t unix_ms) {
    int64_t secs = unix_ms >= 0 ? unix_ms / 1000 : (unix_ms - 999) / 1000;
    int ms = static_cast<int>(unix_ms - secs * 1000);
    std::time_t t = static_cast<std::time_t>(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[96];
    std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    return buf;
}

bool ParseIso8601(std::string_view s, int64_t& unix_ms) {
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
    if (!Digits(s, 0, 4, y) || s.size() < 10 || s[4] != '-' || !Digits(s, 5, 2, mo) ||
        s[7] != '-' || !Digits(s, 8, 2, d)) {
        return false;
    }
    size_t pos = 10;
    int frac_ms = 0;
    int64_t offset_s = 0;
    if (pos < s.size() && (s[pos] == 'T' || s[pos] == 't' || s[pos] == ' ')) {
        if (!Digits(s, pos + 1, 2, h) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
            !Digits(s, pos + 4, 2, mi)) {
            return false;
        }
        pos += 6;
        if (pos < s.size() && s[pos] == ':') {
            if (!Digits(s, pos + 1, 2, se)) {
                return false;
            }
            pos += 3;
        }
        if (pos < s.size() && s[pos] == '.') {
            ++pos;
            int scale = 100;
            while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
                frac_ms += (s[pos] - '0') * scale;
                scale /= 10;
                ++pos;
            }
        }
        if (pos < s.size()) {
            if (s[pos] == 'Z' || s[pos] == 'z') {
                ++pos;
            } else if (s[pos] == '+' || s[pos] == '-') {
                int oh = 0, om = 0;
                int sign = s[pos] == '-' ? -1 : 1;
                if (!Digits(s, pos + 1, 2, oh)) {
                    return false;
                }
                size_t mpos = pos + 3;
                if (mpos < s.size() && s[mpos] == ':') {
                    ++mpos;
                }
                if (!Digits(s, mpos, 2, om)) {
                    return false;
                }
                offset_s = sign * (oh * 3600 + om * 60);
                pos = mpos + 2;
            }
        }
    }
    if (pos != s.size() || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) {
        return false;
    }
    int64_t days = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + se - offset_s;
    unix_ms = secs * 1000 + frac_ms;
    return true;
}

}  // namespace conduit::core
