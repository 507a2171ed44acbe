#include "core/clock.hpp"

#include <gtest/gtest.h>

namespace conduit::core {
namespace {

TEST(Clock, FormatsIso8601) {
    EXPECT_EQ(FormatIso8601(0), "1970-01-01T00:00:00.000Z");
    EXPECT_EQ(FormatIso8601(1'767'225'600'123), "2026-01-01T00:00:00.123Z");
}

TEST(Clock, ParsesIso8601Variants) {
    int64_t ms = 0;
    ASSERT_TRUE(ParseIso8601("2026-01-01T00:00:00Z", ms));
    EXPECT_EQ(ms, 1'767'225'600'000);
    ASSERT_TRUE(ParseIso8601("2026-01-01T00:00:00.5Z", ms));
    EXPECT_EQ(ms, 1'767'225'600'500);
    ASSERT_TRUE(ParseIso8601("2026-01-01T02:00:00+02:00", ms));
    EXPECT_EQ(ms, 1'767'225'600'000);
    ASSERT_TRUE(ParseIso8601("2026-01-01", ms));
    EXPECT_EQ(ms, 1'767'225'600'000);
    EXPECT_FALSE(ParseIso8601("2026-13-01T00:00:00Z", ms));
    EXPECT_FALSE(ParseIso8601("yesterday", ms));
}

}  // namespace
}  // namespace conduit::core
