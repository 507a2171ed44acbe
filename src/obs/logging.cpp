#include "obs/logging.hpp"

#include "core/clock.hpp"
#include "core/strings.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <span>

namespace conduit::obs {

namespace {

// The fields of the LogEvent call in progress on this thread. LogEvent sets them around a
// synchronous logger call; our formatters read them. Plain spdlog calls see none.
thread_local std::span<const LogField> t_fields;

class FieldsScope {
public:
    explicit FieldsScope(std::span<const LogField> fields) : saved_(t_fields) { t_fields = fields; }
    ~FieldsScope() { t_fields = saved_; }
    FieldsScope(const FieldsScope&) = delete;
    FieldsScope& operator=(const FieldsScope&) = delete;

private:
    std::span<const LogField> saved_;
};

void Append(spdlog::memory_buf_t& dest, std::string_view s) {
    dest.append(s.data(), s.data() + s.size());
}

bool NeedsQuotes(std::string_view v) {
    if (v.empty()) {
        return true;
    }
    for (char c : v) {
        if (static_cast<unsigned char>(c) <= ' ' || c == '"' || c == '\\' || c == '=') {
            return true;
        }
    }
    return false;
}

}  // namespace

LogFormat ParseLogFormat(std::string_view s) {
    return core::IEquals(core::Trim(s), "json") ? LogFormat::kJson : LogFormat::kText;
}

std::optional<spdlog::level::level_enum> ParseLogLevel(std::string_view s) {
    static constexpr std::pair<std::string_view, spdlog::level::level_enum> kLevels[] = {
        {"trace", spdlog::level::trace},  {"debug", spdlog::level::debug},
        {"info", spdlog::level::info},    {"warn", spdlog::level::warn},
        {"warning", spdlog::level::warn}, {"error", spdlog::level::err},
        {"err", spdlog::level::err},      {"critical", spdlog::level::critical},
        {"off", spdlog::level::off}};
    const std::string_view name = core::Trim(s);
    for (const auto& [n, level] : kLevels) {
        if (core::IEquals(name, n)) {
            return level;
        }
    }
    return std::nullopt;
}

std::unique_ptr<spdlog::formatter> MakeLogFormatter(LogFormat format) {
    if (format == LogFormat::kJson) {
        return std::make_unique<JsonLogFormatter>();
    }
    return std::make_unique<TextLogFormatter>();
}

void InitLogging(LogFormat format, std::string_view level) {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto logger = std::make_shared<spdlog::logger>("conduit", std::move(sink));
    logger->set_formatter(MakeLogFormatter(format));
    logger->set_level(ParseLogLevel(level).value_or(spdlog::level::info));
    spdlog::set_default_logger(std::move(logger));
}

void LogEvent(spdlog::logger& logger,
              spdlog::level::level_enum lvl,
              std::string_view msg,
              std::initializer_list<LogField> fields) {
    if (!logger.should_log(lvl)) {
        return;
    }
    FieldsScope scope(std::span<const LogField>(fields.begin(), fields.size()));
    logger.log(lvl, spdlog::string_view_t(msg.data(), msg.size()));
}

void LogEvent(spdlog::level::level_enum lvl,
              std::string_view msg,
              std::initializer_list<LogField> fields) {
    LogEvent(*spdlog::default_logger_raw(), lvl, msg, fields);
}

std::string RedactSecret(std::string_view secret) {
    if (secret.size() < 16) {
        return "***";
    }
    std::string out(secret.substr(0, 8));
    out += "\xE2\x80\xA6";  // "…"
    return out;
}

void JsonLogFormatter::format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) {
    const int64_t unix_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count();
    std::string line;
    line.reserve(96 + msg.payload.size());
    line += R"({"ts":")";
    line += core::FormatIso8601(unix_ms);
    line += R"(","level":")";
    const auto level = spdlog::level::to_string_view(msg.level);
    line.append(level.data(), level.size());
    line += R"(","msg":")";
    core::AppendJsonEscaped(line, std::string_view(msg.payload.data(), msg.payload.size()));
    line.push_back('"');
    for (const auto& [key, value] : t_fields) {
        line += R"(,")";
        core::AppendJsonEscaped(line, key);
        line += R"(":")";
        core::AppendJsonEscaped(line, value);
        line.push_back('"');
    }
    line += "}\n";
    Append(dest, line);
}

std::unique_ptr<spdlog::formatter> JsonLogFormatter::clone() const {
    return std::make_unique<JsonLogFormatter>();
}

TextLogFormatter::TextLogFormatter()
    : prefix_(std::make_unique<spdlog::pattern_formatter>(
          "%Y-%m-%dT%H:%M:%S.%eZ [%l] %v", spdlog::pattern_time_type::utc, std::string())) {}

void TextLogFormatter::format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) {
    prefix_->format(msg, dest);
    std::string tail;
    for (const auto& [key, value] : t_fields) {
        tail.push_back(' ');
        tail += key;
        tail.push_back('=');
        if (NeedsQuotes(value)) {
            tail += core::JsonQuote(value);
        } else {
            tail += value;
        }
    }
    tail.push_back('\n');
    Append(dest, tail);
}

std::unique_ptr<spdlog::formatter> TextLogFormatter::clone() const {
    return std::make_unique<TextLogFormatter>();
}

}  // namespace conduit::obs
