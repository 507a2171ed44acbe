#include "redis/url.hpp"

#include <gtest/gtest.h>

namespace conduit::redis {
namespace {

TEST(RedisUrlTest, Defaults) {
    auto ep = ParseUrl("redis://");
    ASSERT_TRUE(ep.has_value());
    EXPECT_EQ(ep->host, "127.0.0.1");
    EXPECT_EQ(ep->port, 6379);
    EXPECT_EQ(ep->db, 0);
    EXPECT_TRUE(ep->password.empty());
    EXPECT_TRUE(ep->username.empty());
}

TEST(RedisUrlTest, HostPortDb) {
    auto ep = ParseUrl("redis://cache.internal:6390/3");
    ASSERT_TRUE(ep.has_value());
    EXPECT_EQ(ep->host, "cache.internal");
    EXPECT_EQ(ep->port, 6390);
    EXPECT_EQ(ep->db, 3);
    ep = ParseUrl("redis://127.0.0.1:6390/");
    ASSERT_TRUE(ep.has_value());
    EXPECT_EQ(ep->port, 6390);
    EXPECT_EQ(ep->db, 0);
}

TEST(RedisUrlTest, PasswordAndUser) {
    auto ep = ParseUrl("redis://:s%40cret%3A1@h:1/2");
    ASSERT_TRUE(ep.has_value());
    EXPECT_EQ(ep->password, "s@cret:1");
    EXPECT_TRUE(ep->username.empty());
    EXPECT_EQ(ep->host, "h");
    ep = ParseUrl("redis://alice:pw@h");
    ASSERT_TRUE(ep.has_value());
    EXPECT_EQ(ep->username, "alice");
    EXPECT_EQ(ep->password, "pw");
    EXPECT_EQ(ep->port, 6379);
    ep = ParseUrl("redis://onlypass@h");  // a lone userinfo is the password
    ASSERT_TRUE(ep.has_value());
    EXPECT_EQ(ep->password, "onlypass");
    EXPECT_TRUE(ep->username.empty());
}

TEST(RedisUrlTest, Ipv6) {
    auto ep = ParseUrl("redis://[::1]:7000/1");
    ASSERT_TRUE(ep.has_value());
    EXPECT_EQ(ep->host, "::1");
    EXPECT_EQ(ep->port, 7000);
    EXPECT_EQ(ep->db, 1);
}

TEST(RedisUrlTest, Invalid) {
    EXPECT_FALSE(ParseUrl("http://h:1/").has_value());
    EXPECT_FALSE(ParseUrl("redis://h:0/").has_value());
    EXPECT_FALSE(ParseUrl("redis://h:70000/").has_value());
    EXPECT_FALSE(ParseUrl("redis://h:x/").has_value());
    EXPECT_FALSE(ParseUrl("redis://h:/").has_value());
    EXPECT_FALSE(ParseUrl("redis://h/db").has_value());
    EXPECT_FALSE(ParseUrl("redis://:%zz@h/").has_value());
    EXPECT_FALSE(ParseUrl("redis://:%4@h/").has_value());
    EXPECT_FALSE(ParseUrl("redis://[::1/").has_value());
}

TEST(RedisUrlTest, RedactedUrlHidesThePassword) {
    auto ep = ParseUrl("redis://u:topsecret@h:1/2");
    ASSERT_TRUE(ep.has_value());
    std::string s = RedactedUrl(*ep);
    EXPECT_EQ(s.find("topsecret"), std::string::npos);
    EXPECT_EQ(s, "redis://u:***@h:1/2");
}

}  // namespace
}  // namespace conduit::redis
