#include "core/strings.hpp"

#include <gtest/gtest.h>

namespace conduit::core {
namespace {

TEST(Strings, CaseInsensitive) {
    EXPECT_TRUE(IEquals("Content-Length", "content-length"));
    EXPECT_FALSE(IEquals("abc", "abd"));
    EXPECT_TRUE(IStartsWith("Bearer xyz", "bearer "));
    EXPECT_FALSE(IStartsWith("Bear", "bearer"));
}

TEST(Strings, SplitTrimmedDropsEmpty) {
    auto v = SplitTrimmed(" gpt-4*, ,claude ,", ',');
    ASSERT_EQ(v.size(), 2u);
    EXPECT_EQ(v[0], "gpt-4*");
    EXPECT_EQ(v[1], "claude");
}

TEST(Strings, ParseInt) {
    EXPECT_EQ(ParseInt("42"), 42);
    EXPECT_EQ(ParseInt("-7"), -7);
    EXPECT_FALSE(ParseInt(""));
    EXPECT_FALSE(ParseInt("4x"));
    EXPECT_FALSE(ParseInt("99999999999999999999"));
}

TEST(Strings, QueryParams) {
    EXPECT_EQ(QueryParam("a=1&timeout=30&b=x%20y", "timeout"), "30");
    EXPECT_EQ(QueryParam("a=1&b=x%20y", "b"), "x y");
    EXPECT_FALSE(QueryParam("a=1", "b"));
}

TEST(Strings, JsonQuoteEscapes) {
    EXPECT_EQ(JsonQuote("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
}

TEST(Strings, PercentDecodeIsStrict) {
    std::string out;
    EXPECT_TRUE(PercentDecode("p%40ss%2Fw%3a+rd", out));
    EXPECT_EQ(out, "p@ss/w:+rd");  // '+' is not a space outside query strings
    EXPECT_TRUE(PercentDecode("", out));
    EXPECT_EQ(out, "");
    EXPECT_FALSE(PercentDecode("bad%2", out));
    EXPECT_FALSE(PercentDecode("bad%zz", out));
    EXPECT_FALSE(PercentDecode("%", out));
}

}  // namespace
}  // namespace conduit::core
