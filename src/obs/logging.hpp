#pragma once

#include <spdlog/formatter.h>
#include <spdlog/logger.h>

#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace conduit::obs {

/// How log lines are written: readable text or one JSON object per line.
enum class LogFormat { kText, kJson };

/// One structured field of a log event (key, value). Both views must live through the call.
using LogField = std::pair<std::string_view, std::string_view>;

/// "json" (any case) → kJson; anything else → kText.
LogFormat ParseLogFormat(std::string_view s);
/// trace, debug, info, warn|warning, error|err, critical, off (any case); nullopt otherwise.
std::optional<spdlog::level::level_enum> ParseLogLevel(std::string_view s);

/// Installs the default spdlog logger ("conduit", stderr, synchronous) with the given format and
/// level (unknown level → info). Start-up only; may be called again to reconfigure.
void InitLogging(LogFormat format, std::string_view level);

/// A formatter for `format` (what InitLogging installs); for custom sinks and tests.
std::unique_ptr<spdlog::formatter> MakeLogFormatter(LogFormat format);

/// Logs `msg` with structured fields through the default logger. JSON: each field is a top-level
/// key. Text: appended as ` key=value` (value quoted and escaped when it has spaces, quotes or
/// control characters). Keys should avoid the reserved names ts, level and msg. Any thread.
void LogEvent(spdlog::level::level_enum lvl,
              std::string_view msg,
              std::initializer_list<LogField> fields = {});
/// Same, through `logger`, which must be synchronous and use one of our formatters for the
/// fields to appear (other formatters print only msg).
void LogEvent(spdlog::logger& logger,
              spdlog::level::level_enum lvl,
              std::string_view msg,
              std::initializer_list<LogField> fields = {});

/// A loggable stand-in for a secret: its first 8 characters and "…" ("condt_ab…"), or "***" when
/// it is shorter than 16 characters. Never log a secret whole.
std::string RedactSecret(std::string_view secret);

/// Writes `{"ts":"2026-01-02T03:04:05.678Z","level":"info","msg":"…",<fields>}\n` per record.
class JsonLogFormatter final : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
    std::unique_ptr<spdlog::formatter> clone() const override;
};

/// Writes `2026-01-02T03:04:05.678Z [info] msg key=value\n` per record (UTC).
class TextLogFormatter final : public spdlog::formatter {
public:
    TextLogFormatter();
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
    std::unique_ptr<spdlog::formatter> clone() const override;

private:
    std::unique_ptr<spdlog::formatter> prefix_;  // pattern formatter without end of line
};

}  // namespace conduit::obs
