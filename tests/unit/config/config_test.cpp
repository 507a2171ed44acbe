#include "config/config.hpp"

#include <gtest/gtest.h>

#include <functional>

namespace conduit::config {
namespace {

TEST(ParseHostPort, AcceptsHostsAndBracketedIpv6) {
    std::string host;
    uint16_t port = 1;
    ASSERT_TRUE(ParseHostPort("0.0.0.0:5000", host, port));
    EXPECT_EQ(host, "0.0.0.0");
    EXPECT_EQ(port, 5000);
    ASSERT_TRUE(ParseHostPort("[::]:8080", host, port));
    EXPECT_EQ(host, "::");
    EXPECT_EQ(port, 8080);
    ASSERT_TRUE(ParseHostPort("localhost:0", host, port));
    EXPECT_EQ(host, "localhost");
    EXPECT_EQ(port, 0);
    ASSERT_TRUE(ParseHostPort("[::1]:65535", host, port));
    EXPECT_EQ(host, "::1");
    EXPECT_EQ(port, 65535);
}

TEST(ParseHostPort, RejectsMalformed) {
    std::string host;
    uint16_t port = 0;
    for (const char* bad : {"", "5000", ":5000", "host:", "host:65536", "host:-1", "host:+1",
                            "host:1x", "::1:80", "[::1]80", "[::1]", "[]:80", "[::1:80"}) {
        EXPECT_FALSE(ParseHostPort(bad, host, port)) << bad;
    }
}

TEST(DescribeModes, EmbeddedDefaults) {
    EXPECT_EQ(DescribeModes(Config{}),
              "store=sqlite(./conduit-data) bus=in-process queue=embedded");
}

TEST(DescribeModes, DistributedOmitsSecrets) {
    Config c;
    c.store.database_url = "postgresql://conduit:pgsecret@db:5432/conduit";
    c.redis.url = "redis://:redissecret@cache:6379";
    c.rabbitmq.host = "mq";
    c.rabbitmq.username = "rabbituser";
    c.rabbitmq.password = "rabbitsecret";
    c.security.master_key = "mastersecret";
    c.security.encryption_key = "encsecret";
    const auto modes = DescribeModes(c);
    EXPECT_EQ(modes, "store=postgresql bus=redis queue=rabbitmq(mq:5672)");
    for (const char* secret :
         {"pgsecret", "redissecret", "rabbituser", "rabbitsecret", "mastersecret", "encsecret"}) {
        EXPECT_EQ(modes.find(secret), std::string::npos) << secret;
    }
}

TEST(HasRole, ReadsCommaList) {
    Config c;
    EXPECT_TRUE(HasRole(c, "api"));
    EXPECT_TRUE(HasRole(c, "worker"));
    c.roles = " api , hubs";
    EXPECT_TRUE(HasRole(c, "hubs"));
    EXPECT_FALSE(HasRole(c, "worker"));
    EXPECT_FALSE(HasRole(c, "ap"));
}

TEST(Validate, DefaultsAreValid) { EXPECT_TRUE(Validate(Config{})); }

TEST(Validate, EachFailureNamesItsSetting) {
    struct Case {
        const char* setting;
        std::function<void(Config&)> mutate;
    };
    const Case cases[] = {
        {"server.listen", [](Config& c) { c.server.listen = "0.0.0.0:70000"; }},
        {"server.listen", [](Config& c) { c.server.listen = "nohost"; }},
        {"server.threads", [](Config& c) { c.server.threads = -1; }},
        {"server.threads", [](Config& c) { c.server.threads = 257; }},
        {"server.max_body_bytes", [](Config& c) { c.server.max_body_bytes = 1023; }},
        {"server.max_header_bytes", [](Config& c) { c.server.max_header_bytes = 0; }},
        {"server.header_timeout_ms", [](Config& c) { c.server.header_timeout_ms = 0; }},
        {"server.body_timeout_ms", [](Config& c) { c.server.body_timeout_ms = -5; }},
        {"server.idle_timeout_ms", [](Config& c) { c.server.idle_timeout_ms = 0; }},
        {"server.write_timeout_ms", [](Config& c) { c.server.write_timeout_ms = 0; }},
        {"server.shutdown_grace_ms", [](Config& c) { c.server.shutdown_grace_ms = -1; }},
        {"server.public_base_url", [](Config& c) { c.server.public_base_url = "example.com"; }},
        {"upstream.connect_timeout_ms", [](Config& c) { c.upstream.connect_timeout_ms = 0; }},
        {"upstream.first_byte_timeout_ms", [](Config& c) { c.upstream.first_byte_timeout_ms = 0; }},
        {"upstream.idle_timeout_ms", [](Config& c) { c.upstream.idle_timeout_ms = 0; }},
        {"upstream.total_timeout_ms", [](Config& c) { c.upstream.total_timeout_ms = 0; }},
        {"upstream.max_connections_per_host",
         [](Config& c) { c.upstream.max_connections_per_host = 0; }},
        {"upstream.max_total_connections",
         [](Config& c) { c.upstream.max_total_connections = 10; }},
        {"spend.flush_interval_ms", [](Config& c) { c.spend.flush_interval_ms = 0; }},
        {"log.format", [](Config& c) { c.log.format = "xml"; }},
        {"log.level", [](Config& c) { c.log.level = "verbose"; }},
        {"roles", [](Config& c) { c.roles = "api,gpu"; }},
        {"roles", [](Config& c) { c.roles = " , "; }},
        {"store.data_dir", [](Config& c) { c.store.data_dir.clear(); }},
        {"rabbitmq.port", [](Config& c) { c.rabbitmq.port = 0; }},
        {"rabbitmq.prefetch_count", [](Config& c) { c.rabbitmq.prefetch_count = 0; }},
        {"rabbitmq.partition_count", [](Config& c) { c.rabbitmq.partition_count = 0; }},
        {"rabbitmq.concurrent_message_limit",
         [](Config& c) { c.rabbitmq.concurrent_message_limit = 0; }},
    };
    for (const auto& tc : cases) {
        Config c;
        tc.mutate(c);
        auto r = Validate(c);
        ASSERT_FALSE(r) << tc.setting;
        EXPECT_EQ(r.error().code, core::ErrorCode::kInvalidRequest);
        EXPECT_EQ(r.error().param, tc.setting);
        EXPECT_NE(r.error().message.find(tc.setting), std::string::npos) << r.error().message;
    }
}

TEST(Validate, AcceptsBoundaryValues) {
    Config c;
    c.server.listen = "[::]:0";
    c.server.threads = 256;
    c.server.max_body_bytes = 1024;
    c.server.shutdown_grace_ms = 0;
    c.server.public_base_url = "https://gw.example.com";
    c.roles = "worker";
    c.log.level = "off";
    c.log.format = "json";
    EXPECT_TRUE(Validate(c));
}

}  // namespace
}  // namespace conduit::config
