#include "core/money.hpp"

#include <gtest/gtest.h>

namespace conduit::core {
namespace {

TEST(Money, ParsesDecimalStringsExactly) {
    EXPECT_EQ(ParseMoney("12"), 12'000'000);
    EXPECT_EQ(ParseMoney("0.1"), 100'000);
    EXPECT_EQ(ParseMoney("-0.000001"), -1);
    EXPECT_EQ(ParseMoney("3.1415926"), 3'141'593);  // 7th digit rounds half up
    EXPECT_EQ(ParseMoney("3.1415924"), 3'141'592);
    EXPECT_EQ(ParseMoney(".5"), 500'000);
    EXPECT_EQ(ParseMoney(" 7.25 "), 7'250'000);
}

TEST(Money, RejectsMalformed) {
    EXPECT_FALSE(ParseMoney(""));
    EXPECT_FALSE(ParseMoney("-"));
    EXPECT_FALSE(ParseMoney("1.2.3"));
    EXPECT_FALSE(ParseMoney("12a"));
    EXPECT_FALSE(ParseMoney("99999999999999999999"));
}

TEST(Money, FromDoubleRoundsToMicros) {
    EXPECT_EQ(MoneyFromDouble(0.1), 100'000);
    EXPECT_EQ(MoneyFromDouble(10.5), 10'500'000);
    EXPECT_EQ(MoneyFromDouble(-2.0000005), -2'000'001);
    EXPECT_FALSE(MoneyFromDouble(1e300));
}

TEST(Money, Formats) {
    EXPECT_EQ(FormatMoney(12'500'000), "12.5");
    EXPECT_EQ(FormatMoney(-1), "-0.000001");
    EXPECT_EQ(FormatMoney(3'000'000), "3");
    EXPECT_EQ(FormatMoney(0), "0");
}

TEST(Money, CostPerMillionRoundsHalfUp) {
    // $2.50 per million tokens, 1000 tokens = $0.0025 = 2500 micros.
    EXPECT_EQ(CostPerMillion(1000, 2'500'000), 2500);
    // $0.15 per million, 10 tokens = 1.5 micros -> 2.
    EXPECT_EQ(CostPerMillion(10, 150'000), 2);
    // 3 tokens = 0.45 micros -> 0.
    EXPECT_EQ(CostPerMillion(3, 150'000), 0);
    EXPECT_EQ(CostPerMillion(0, 150'000), 0);
    // Large values do not overflow.
    EXPECT_EQ(CostPerMillion(1'000'000'000'000LL, 60'000'000), 60'000'000'000'000LL);
}

}  // namespace
}  // namespace conduit::core
