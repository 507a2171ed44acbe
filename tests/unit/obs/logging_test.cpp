#include "obs/logging.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <regex>
#include <sstream>
#include <string>

namespace conduit::obs {
namespace {

// A synchronous logger writing into a string, with one of our formatters.
struct CapturedLogger {
    explicit CapturedLogger(LogFormat format)
        : logger("test", std::make_shared<spdlog::sinks::ostream_sink_st>(out)) {
        logger.set_formatter(MakeLogFormatter(format));
        logger.set_level(spdlog::level::trace);
    }
    std::ostringstream out;  // before `logger`, which writes into it
    spdlog::logger logger;
};

TEST(Logging, JsonLineIsValidJsonWithFields) {
    CapturedLogger cap(LogFormat::kJson);
    LogEvent(cap.logger, spdlog::level::info, "hello \"world\"\nnext\\line\x01",
             {{"key_id", "vk_42"}, {"path", "/v1/chat \"x\""}});
    const std::string line = cap.out.str();
    ASSERT_FALSE(line.empty());
    EXPECT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1);  // exactly one line

    boost::system::error_code ec;
    const auto v = boost::json::parse(line, ec);
    ASSERT_FALSE(ec) << line;
    const auto& o = v.as_object();
    EXPECT_EQ(o.at("level").as_string(), "info");
    EXPECT_EQ(o.at("msg").as_string(), "hello \"world\"\nnext\\line\x01");
    EXPECT_EQ(o.at("key_id").as_string(), "vk_42");
    EXPECT_EQ(o.at("path").as_string(), "/v1/chat \"x\"");
    const std::string ts(o.at("ts").as_string());
    EXPECT_TRUE(std::regex_match(ts, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
        << ts;
    EXPECT_EQ(o.size(), 5u);
    EXPECT_EQ(line.rfind("{\"ts\":", 0), 0u);  // ts first, as documented
}

TEST(Logging, PlainSpdlogCallsCarryNoStaleFields) {
    CapturedLogger cap(LogFormat::kJson);
    LogEvent(cap.logger, spdlog::level::warn, "with", {{"a", "1"}});
    cap.out.str("");
    cap.logger.error("plain {}", 7);
    boost::system::error_code ec;
    const auto v = boost::json::parse(cap.out.str(), ec);
    ASSERT_FALSE(ec);
    EXPECT_EQ(v.as_object().at("level").as_string(), "error");
    EXPECT_EQ(v.as_object().at("msg").as_string(), "plain 7");
    EXPECT_FALSE(v.as_object().contains("a"));
}

TEST(Logging, LevelNamesInJson) {
    CapturedLogger cap(LogFormat::kJson);
    LogEvent(cap.logger, spdlog::level::warn, "w");
    boost::system::error_code ec;
    const auto v = boost::json::parse(cap.out.str(), ec);
    ASSERT_FALSE(ec);
    EXPECT_EQ(v.as_object().at("level").as_string(), "warning");
}

TEST(Logging, TextLineAppendsKeyValues) {
    CapturedLogger cap(LogFormat::kText);
    LogEvent(cap.logger, spdlog::level::info, "request done",
             {{"status", "200"}, {"path", "/v1/a b"}, {"empty", ""}, {"q", "x\"y"}});
    const std::string line = cap.out.str();
    EXPECT_TRUE(std::regex_match(
        line, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[info\] request done )"
                         R"(status=200 path="/v1/a b" empty="" q="x\\"y"\n)")))
        << line;
}

TEST(Logging, RespectsLoggerLevel) {
    CapturedLogger cap(LogFormat::kJson);
    cap.logger.set_level(spdlog::level::warn);
    LogEvent(cap.logger, spdlog::level::info, "dropped", {{"k", "v"}});
    EXPECT_TRUE(cap.out.str().empty());
    LogEvent(cap.logger, spdlog::level::err, "kept");
    EXPECT_FALSE(cap.out.str().empty());
}

TEST(Logging, RedactSecretNeverRevealsWholeSecret) {
    const std::string secret = "condt_abcdefghijklmnopqrstuvwxyz0123456789";
    const std::string redacted = RedactSecret(secret);
    EXPECT_EQ(redacted, "condt_ab\xE2\x80\xA6");
    EXPECT_EQ(redacted.find(secret.substr(8)), std::string::npos);
    EXPECT_EQ(RedactSecret("short-secret"), "***");
    EXPECT_EQ(RedactSecret(""), "***");
}

TEST(Logging, ParsesFormatAndLevel) {
    EXPECT_EQ(ParseLogFormat("json"), LogFormat::kJson);
    EXPECT_EQ(ParseLogFormat(" JSON "), LogFormat::kJson);
    EXPECT_EQ(ParseLogFormat("text"), LogFormat::kText);
    EXPECT_EQ(ParseLogFormat("whatever"), LogFormat::kText);
    EXPECT_EQ(ParseLogLevel("WARN"), spdlog::level::warn);
    EXPECT_EQ(ParseLogLevel("warning"), spdlog::level::warn);
    EXPECT_EQ(ParseLogLevel("error"), spdlog::level::err);
    EXPECT_EQ(ParseLogLevel("trace"), spdlog::level::trace);
    EXPECT_FALSE(ParseLogLevel("loud"));
}

TEST(Logging, InitLoggingInstallsDefaultLogger) {
    InitLogging(LogFormat::kJson, "debug");
    EXPECT_EQ(spdlog::default_logger()->name(), "conduit");
    EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::debug);
    InitLogging(LogFormat::kText, "nonsense");
    EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::info);
}

}  // namespace
}  // namespace conduit::obs
