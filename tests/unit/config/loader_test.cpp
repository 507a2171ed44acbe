#include "config/loader.hpp"

#include "fakes/test_support.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <map>

namespace conduit::config {
namespace {

// A fake environment; tests never read or modify the real one.
class FakeEnv {
public:
    FakeEnv(std::initializer_list<std::pair<const std::string, std::string>> vars) : vars_(vars) {}
    FakeEnv() = default;

    EnvLookup Lookup() const {
        return [this](std::string_view name) -> std::optional<std::string> {
            auto it = vars_.find(std::string(name));
            if (it == vars_.end()) {
                return std::nullopt;
            }
            return it->second;
        };
    }
    void Set(const std::string& name, const std::string& value) { vars_[name] = value; }

private:
    std::map<std::string, std::string> vars_;
};

class LoaderTest : public ::testing::Test {
protected:
    // Writes `yaml` to a fresh file in the temp dir and returns its path.
    std::string WriteFile(const std::string& yaml) {
        auto path = (dir_.path() / ("c" + std::to_string(++files_) + ".yaml")).string();
        std::ofstream(path) << yaml;
        return path;
    }

    static core::Result<LoadOutcome> Load(const std::vector<std::string>& args,
                                          const FakeEnv& env = {}) {
        return LoadServeConfig(args, env.Lookup());
    }

    // Loads and expects success.
    static Config MustLoad(const std::vector<std::string>& args, const FakeEnv& env = {}) {
        auto r = Load(args, env);
        EXPECT_TRUE(r) << (r ? "" : r.error().message);
        return r ? r->config : Config{};
    }

    // Loads and expects failure; returns the message.
    static std::string MustFail(const std::vector<std::string>& args, const FakeEnv& env = {}) {
        auto r = Load(args, env);
        EXPECT_FALSE(r);
        return r ? std::string() : r.error().message;
    }

    conduit::testing::TempDir dir_;
    int files_ = 0;
};

bool Contains(const std::string& haystack, std::string_view needle) {
    return haystack.find(needle) != std::string::npos;
}

TEST_F(LoaderTest, DefaultsWithNothingSet) {
    auto r = Load({});
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->help_requested);
    const Config& c = r->config;
    const Config d;
    EXPECT_EQ(c.server.listen, "0.0.0.0:5000");
    EXPECT_EQ(c.server.threads, 0);
    EXPECT_EQ(c.server.max_body_bytes, 32 * 1024 * 1024);
    EXPECT_EQ(c.server.header_timeout_ms, d.server.header_timeout_ms);
    EXPECT_EQ(c.upstream.total_timeout_ms, 600000);
    EXPECT_EQ(c.store.data_dir, "./conduit-data");
    EXPECT_TRUE(c.store.database_url.empty());
    EXPECT_EQ(c.log.format, "text");
    EXPECT_EQ(c.log.level, "info");
    EXPECT_EQ(c.rabbitmq.partition_count, 30);
    EXPECT_EQ(c.roles, "api,hubs,worker");
    EXPECT_TRUE(c.config_file.empty());
}

TEST_F(LoaderTest, EachLayerBeatsTheOnesBelow) {
    auto file = WriteFile(
        "server:\n"
        "  listen: 127.0.0.1:1001\n"
        "  threads: 3\n"
        "store:\n"
        "  data_dir: /from/file\n"
        "upstream:\n"
        "  connect_timeout_ms: 111\n");
    // File beats default.
    auto c = MustLoad({"--config", file});
    EXPECT_EQ(c.server.listen, "127.0.0.1:1001");
    EXPECT_EQ(c.server.threads, 3);
    EXPECT_EQ(c.store.data_dir, "/from/file");
    EXPECT_EQ(c.upstream.connect_timeout_ms, 111);
    EXPECT_EQ(c.config_file, file);

    // Environment beats file.
    FakeEnv env{{"CONDUIT_LISTEN", "127.0.0.1:1002"},
                {"CONDUIT_THREADS", "4"},
                {"CONDUIT_DATA_DIR", "/from/env"},
                {"CONDUIT_UPSTREAM_CONNECT_TIMEOUT_MS", "222"}};
    c = MustLoad({"--config", file}, env);
    EXPECT_EQ(c.server.listen, "127.0.0.1:1002");
    EXPECT_EQ(c.server.threads, 4);
    EXPECT_EQ(c.store.data_dir, "/from/env");
    EXPECT_EQ(c.upstream.connect_timeout_ms, 222);

    // Flag beats environment (both "--flag value" and "--flag=value" forms).
    c = MustLoad({"--config", file, "--listen", "127.0.0.1:1003", "--threads=5", "--data-dir",
                  "/from/flag", "--upstream-connect-timeout-ms", "333"},
                 env);
    EXPECT_EQ(c.server.listen, "127.0.0.1:1003");
    EXPECT_EQ(c.server.threads, 5);
    EXPECT_EQ(c.store.data_dir, "/from/flag");
    EXPECT_EQ(c.upstream.connect_timeout_ms, 333);
}

TEST_F(LoaderTest, ConfigFileChosenByEnvOrFlag) {
    auto a = WriteFile("log:\n  level: debug\n");
    auto b = WriteFile("log:\n  level: warn\n");
    EXPECT_EQ(MustLoad({}, FakeEnv{{"CONDUIT_CONFIG", a}}).log.level, "debug");
    auto c = MustLoad({"--config", b}, FakeEnv{{"CONDUIT_CONFIG", a}});
    EXPECT_EQ(c.log.level, "warn");
    EXPECT_EQ(c.config_file, b);
}

TEST_F(LoaderTest, RepeatedFlagTakesLast) {
    EXPECT_EQ(MustLoad({"--threads", "2", "--threads", "7"}).server.threads, 7);
}

TEST_F(LoaderTest, EnvAliases) {
    FakeEnv env{{"DATABASE_URL", "postgresql://u:p@db/conduit"},
                {"REDIS_URL", "redis://cache:6379"},
                {"CONDUIT_API_TO_API_BACKEND_AUTH_KEY", "mk-alias"},
                {"CONDUITLLM__RABBITMQ__HOST", "mq"},
                {"CONDUITLLM__RABBITMQ__PORT", "5673"},
                {"CONDUITLLM__RABBITMQ__USERNAME", "user"},
                {"CONDUITLLM__RABBITMQ__PASSWORD", "pw"},
                {"CONDUITLLM__RABBITMQ__VHOST", "/conduit"},
                {"CONDUITLLM__RABBITMQ__PREFETCHCOUNT", "10"},
                {"CONDUITLLM__RABBITMQ__PARTITIONCOUNT", "12"},
                {"CONDUITLLM__RABBITMQ__CONCURRENTMESSAGELIMIT", "7"}};
    auto c = MustLoad({}, env);
    EXPECT_EQ(c.store.database_url, "postgresql://u:p@db/conduit");
    EXPECT_EQ(c.redis.url, "redis://cache:6379");
    EXPECT_EQ(c.security.master_key, "mk-alias");
    EXPECT_EQ(c.rabbitmq.host, "mq");
    EXPECT_EQ(c.rabbitmq.port, 5673);
    EXPECT_EQ(c.rabbitmq.username, "user");
    EXPECT_EQ(c.rabbitmq.password, "pw");
    EXPECT_EQ(c.rabbitmq.vhost, "/conduit");
    EXPECT_EQ(c.rabbitmq.prefetch_count, 10);
    EXPECT_EQ(c.rabbitmq.partition_count, 12);
    EXPECT_EQ(c.rabbitmq.concurrent_message_limit, 7);
}

TEST_F(LoaderTest, PrimaryEnvNameBeatsAlias) {
    FakeEnv env{{"CONDUIT_MASTER_KEY", "primary"},
                {"CONDUIT_API_TO_API_BACKEND_AUTH_KEY", "alias"},
                {"CONDUIT_RABBITMQ_PARTITION_COUNT", "8"},
                {"CONDUITLLM__RABBITMQ__PARTITIONCOUNT", "12"},
                {"CONDUIT_DATABASE_URL", "postgresql://primary"},
                {"DATABASE_URL", "postgresql://alias"}};
    auto c = MustLoad({}, env);
    EXPECT_EQ(c.security.master_key, "primary");
    EXPECT_EQ(c.rabbitmq.partition_count, 8);
    EXPECT_EQ(c.store.database_url, "postgresql://primary");
}

TEST_F(LoaderTest, EmptyEnvValueCountsAsUnset) {
    auto file = WriteFile("redis:\n  url: redis://file\n");
    auto c = MustLoad({"--config", file}, FakeEnv{{"REDIS_URL", ""}, {"CONDUIT_THREADS", ""}});
    EXPECT_EQ(c.redis.url, "redis://file");
    EXPECT_EQ(c.server.threads, 0);
}

TEST_F(LoaderTest, YamlNestedSectionsAndLists) {
    auto file = WriteFile(
        "# full example\n"
        "roles: [api, worker]\n"
        "server:\n"
        "  listen: \"[::]:8080\"\n"
        "  max_body_bytes: 1048576\n"
        "  public_base_url: https://gw.example.com\n"
        "  idle_timeout_ms:\n"  // null keeps the default
        "upstream:\n"
        "  max_total_connections: 2048\n"
        "store:\n"
        "  database_url: postgresql://db/conduit\n"
        "log: {format: JSON, level: Debug}\n"
        "spend:\n"
        "  flush_interval_ms: 250\n"
        "security:\n"
        "  master_key: mk\n"
        "  encryption_key: ek\n"
        "redis:\n"
        "  url: redis://cache\n"
        "rabbitmq:\n"
        "  host: mq\n"
        "  partition_count: 4\n");
    auto c = MustLoad({"--config", file});
    EXPECT_EQ(c.roles, "api,worker");
    EXPECT_EQ(c.server.listen, "[::]:8080");
    EXPECT_EQ(c.server.max_body_bytes, 1048576);
    EXPECT_EQ(c.server.public_base_url, "https://gw.example.com");
    EXPECT_EQ(c.server.idle_timeout_ms, 75000);
    EXPECT_EQ(c.upstream.max_total_connections, 2048);
    EXPECT_EQ(c.store.database_url, "postgresql://db/conduit");
    EXPECT_EQ(c.log.format, "json");  // normalised to lower case
    EXPECT_EQ(c.log.level, "debug");
    EXPECT_EQ(c.spend.flush_interval_ms, 250);
    EXPECT_EQ(c.security.master_key, "mk");
    EXPECT_EQ(c.security.encryption_key, "ek");
    EXPECT_EQ(c.redis.url, "redis://cache");
    EXPECT_EQ(c.rabbitmq.host, "mq");
    EXPECT_EQ(c.rabbitmq.partition_count, 4);
}

TEST_F(LoaderTest, EmptyYamlFileIsFine) {
    auto c = MustLoad({"--config", WriteFile("")});
    EXPECT_EQ(c.server.listen, "0.0.0.0:5000");
}

TEST_F(LoaderTest, UnknownYamlKeysAreErrors) {
    auto msg = MustFail({"--config", WriteFile("server:\n  listn: 1.2.3.4:5\n")});
    EXPECT_TRUE(Contains(msg, "unknown key 'server.listn'")) << msg;
    EXPECT_TRUE(Contains(msg, "line 2")) << msg;

    msg = MustFail({"--config", WriteFile("sever:\n  listen: 1.2.3.4:5\n")});
    EXPECT_TRUE(Contains(msg, "'sever'")) << msg;

    msg = MustFail({"--config", WriteFile("listen: 1.2.3.4:5\n")});
    EXPECT_TRUE(Contains(msg, "'listen'")) << msg;
}

TEST_F(LoaderTest, MalformedYamlShapesAreErrors) {
    EXPECT_TRUE(Contains(MustFail({"--config", WriteFile("server: 5\n")}), "must be a mapping"));
    EXPECT_TRUE(Contains(MustFail({"--config", WriteFile("server:\n  listen: [a, b]\n")}),
                         "server.listen"));
    EXPECT_TRUE(Contains(MustFail({"--config", WriteFile("- a\n- b\n")}), "top level"));
    EXPECT_TRUE(Contains(MustFail({"--config", WriteFile("log:\n  level: info\n  level: warn\n")}),
                         "duplicate key 'log.level'"));
    auto path = WriteFile("server:\n  listen: [unclosed\n");
    EXPECT_TRUE(Contains(MustFail({"--config", path}), path));
}

TEST_F(LoaderTest, MissingConfigFileIsAnError) {
    auto missing = (dir_.path() / "nope.yaml").string();
    auto msg = MustFail({"--config", missing});
    EXPECT_TRUE(Contains(msg, "cannot read config file")) << msg;
    EXPECT_TRUE(Contains(msg, missing)) << msg;
}

TEST_F(LoaderTest, BadNumbersNameTheirSource) {
    auto msg = MustFail({}, FakeEnv{{"CONDUIT_THREADS", "abc"}});
    EXPECT_TRUE(Contains(msg, "CONDUIT_THREADS")) << msg;
    EXPECT_TRUE(Contains(msg, "'abc'")) << msg;

    msg = MustFail({}, FakeEnv{{"CONDUITLLM__RABBITMQ__PARTITIONCOUNT", "many"}});
    EXPECT_TRUE(Contains(msg, "CONDUITLLM__RABBITMQ__PARTITIONCOUNT")) << msg;

    msg = MustFail({}, FakeEnv{{"CONDUIT_HEADER_TIMEOUT_MS", "99999999999"}});  // > INT_MAX
    EXPECT_TRUE(Contains(msg, "CONDUIT_HEADER_TIMEOUT_MS")) << msg;

    msg = MustFail({"--max-body-bytes", "1MB"});
    EXPECT_TRUE(Contains(msg, "--max-body-bytes")) << msg;

    msg = MustFail({"--config", WriteFile("server:\n  threads: lots\n")});
    EXPECT_TRUE(Contains(msg, "server.threads")) << msg;
}

TEST_F(LoaderTest, EnvNumbersMayHaveSurroundingSpace) {
    EXPECT_EQ(MustLoad({}, FakeEnv{{"CONDUIT_THREADS", " 8 "}}).server.threads, 8);
}

TEST_F(LoaderTest, ValidationRunsAfterMerging) {
    auto r = Load({}, FakeEnv{{"CONDUIT_LOG_FORMAT", "xml"}});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().param, "log.format");

    r = Load({"--roles", "api,gpu"});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().param, "roles");

    r = Load({"--listen", "0.0.0.0:99999"});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().param, "server.listen");

    r = Load({"--threads", "1000"});
    ASSERT_FALSE(r);
    EXPECT_TRUE(Contains(r.error().message, "server.threads"));

    // A flag can repair a bad environment value.
    EXPECT_TRUE(Load({"--log-format", "json"}, FakeEnv{{"CONDUIT_LOG_FORMAT", "xml"}}));
}

TEST_F(LoaderTest, UnknownFlagsAreErrorsWithoutEchoingValues) {
    auto msg = MustFail({"--lisen", "1.2.3.4:5"});
    EXPECT_TRUE(Contains(msg, "--lisen")) << msg;

    msg = MustFail({"--mastr-key=supersecret"});
    EXPECT_TRUE(Contains(msg, "--mastr-key")) << msg;
    EXPECT_FALSE(Contains(msg, "supersecret")) << msg;

    msg = MustFail({"stray"});
    EXPECT_TRUE(Contains(msg, "positional")) << msg;

    msg = MustFail({"--threads"});
    EXPECT_TRUE(Contains(msg, "--threads")) << msg;
}

TEST_F(LoaderTest, SecretsNeverAppearInErrors) {
    FakeEnv env{{"CONDUIT_MASTER_KEY", "mk-topsecret"},
                {"CONDUIT_ENCRYPTION_KEY", "ek-topsecret"},
                {"DATABASE_URL", "postgresql://u:pw-topsecret@db/x"},
                {"CONDUITLLM__RABBITMQ__PASSWORD", "rb-topsecret"},
                {"CONDUIT_LOG_LEVEL", "loud"}};
    auto msg = MustFail({"--redis-url", "redis://:rd-topsecret@x"}, env);
    EXPECT_TRUE(Contains(msg, "log.level")) << msg;
    EXPECT_FALSE(Contains(msg, "topsecret")) << msg;
}

TEST_F(LoaderTest, HelpIsReportedNotPrinted) {
    // Help is answered before the environment is read, so a broken environment does not block it.
    for (const char* flag : {"--help", "-h"}) {
        auto r = Load({flag}, FakeEnv{{"CONDUIT_THREADS", "abc"}});
        ASSERT_TRUE(r) << flag;
        EXPECT_TRUE(r->help_requested);
        EXPECT_TRUE(Contains(r->help_text, "--listen")) << r->help_text;
        EXPECT_TRUE(Contains(r->help_text, "CONDUIT_LISTEN"));
        EXPECT_TRUE(Contains(r->help_text, "--master-key"));
        EXPECT_TRUE(Contains(r->help_text, "CONDUITLLM__RABBITMQ__HOST"));
    }
}

TEST(ProcessEnv, ReadsTheProcessEnvironment) {
    // Read-only: PATH is set in every test environment; a made-up name is not.
    auto env = ProcessEnv();
    EXPECT_TRUE(env("PATH").has_value());
    EXPECT_FALSE(env("CONDUIT_SURELY_UNSET_VARIABLE_1234").has_value());
}

}  // namespace
}  // namespace conduit::config
