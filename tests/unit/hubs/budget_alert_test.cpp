#include "hubs/notifications.hpp"

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

namespace conduit::hubs {
namespace {

namespace bj = boost::json;

bj::object Args(const BudgetAlertInfo& a) {
    auto v = bj::parse(BudgetAlertArgsJson(a));
    EXPECT_TRUE(v.is_array());
    EXPECT_EQ(v.as_array().size(), 1u);
    return v.as_array()[0].as_object();
}

TEST(BudgetAlertJson, ThresholdAlertCarriesEveryField) {
    BudgetAlertInfo a;
    a.key_id = 3;
    a.percent = 80;
    a.current_spend = 852'000;
    a.budget = 1'000'000;
    a.period = "daily";
    a.period_end_ms = 1'796'083'200'000;  // 2026-12-01T00:00:00Z
    auto o = Args(a);
    EXPECT_EQ(o.at("alertType").as_string(), "budget_threshold");
    EXPECT_EQ(o.at("severity").as_string(), "warning");
    EXPECT_EQ(o.at("threshold").to_number<int64_t>(), 80);
    EXPECT_DOUBLE_EQ(o.at("currentSpend").to_number<double>(), 0.852);
    EXPECT_DOUBLE_EQ(o.at("budgetLimit").to_number<double>(), 1.0);
    EXPECT_DOUBLE_EQ(o.at("percentageUsed").to_number<double>(), 85.2);
    EXPECT_EQ(o.at("budgetPeriod").as_string(), "daily");
    EXPECT_EQ(std::string(o.at("budgetPeriodEnd").as_string()).substr(0, 19),
              "2026-12-01T00:00:00");
    EXPECT_FALSE(o.at("recommendations").as_array().empty());
    EXPECT_NE(std::string(o.at("message").as_string()).find("85.2% of its daily budget"),
              std::string::npos);
}

TEST(BudgetAlertJson, SeverityAndPercentFormatting) {
    BudgetAlertInfo a;
    a.budget = 3;
    a.period = "total";
    a.percent = 90;
    a.current_spend = 2;  // 66.666…% → 66.66 (truncated hundredths)
    auto o = Args(a);
    EXPECT_EQ(o.at("severity").as_string(), "critical");
    EXPECT_DOUBLE_EQ(o.at("percentageUsed").to_number<double>(), 66.66);
    EXPECT_TRUE(o.at("budgetPeriodEnd").is_null());
    a.percent = 100;
    a.budget = 1'000'000;
    a.current_spend = 1'000'500;
    o = Args(a);
    EXPECT_EQ(o.at("alertType").as_string(), "budget_exceeded");
    EXPECT_EQ(o.at("severity").as_string(), "error");
    EXPECT_DOUBLE_EQ(o.at("percentageUsed").to_number<double>(), 100.05);
    a.current_spend = 10'000;  // 1% exactly
    EXPECT_DOUBLE_EQ(Args(a).at("percentageUsed").to_number<double>(), 1.0);
}

}  // namespace
}  // namespace conduit::hubs
