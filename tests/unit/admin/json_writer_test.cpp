#include "admin/json_writer.hpp"

#include "admin/dto.hpp"

#include <gtest/gtest.h>

namespace conduit::admin {
namespace {

TEST(AdminJsonWriterTest, WritesNestedContainersWithCommas) {
    JsonWriter w;
    w.BeginObject()
        .IntField("a", 1)
        .Key("b")
        .BeginArray()
        .Int(1)
        .String("x")
        .BeginObject()
        .EndObject()
        .BeginArray()
        .EndArray()
        .Null()
        .EndArray()
        .BoolField("c", false)
        .Key("d")
        .BeginObject()
        .BoolField("e", true)
        .EndObject()
        .EndObject();
    EXPECT_EQ(w.str(), R"({"a":1,"b":[1,"x",{},[],null],"c":false,"d":{"e":true}})");
}

TEST(AdminJsonWriterTest, EscapesStringsAndKeys) {
    JsonWriter w;
    w.BeginObject().StringField("q\"k", "a\"b\\c\n\x01").EndObject();
    EXPECT_EQ(w.str(), "{\"q\\\"k\":\"a\\\"b\\\\c\\n\\u0001\"}");
}

TEST(AdminJsonWriterTest, MoneyIsAnExactDecimalNumber) {
    JsonWriter w;
    w.BeginArray().Money(300000).Money(12'500000).Money(-1).Money(0).Money(3'000000).EndArray();
    EXPECT_EQ(w.str(), "[0.3,12.5,-0.000001,0,3]");
}

TEST(AdminJsonWriterTest, OptionalsAreNullWhenAbsent) {
    JsonWriter w;
    w.BeginObject()
        .OptStringField("a", "")
        .OptStringField("b", "x")
        .NullableStringField("c", std::nullopt)
        .NullableStringField("d", std::string())
        .OptIntField("e", std::nullopt)
        .OptIntField("f", 7)
        .OptTimestampField("g", std::nullopt)
        .OptTimestampField("h", 0)
        .EndObject();
    EXPECT_EQ(w.str(), R"({"a":null,"b":"x","c":null,"d":"","e":null,"f":7,"g":null,)"
                       R"("h":"1970-01-01T00:00:00.000Z"})");
}

TEST(AdminJsonWriterTest, TakeResets) {
    JsonWriter w;
    w.BeginArray().Int(1).EndArray();
    EXPECT_EQ(w.Take(), "[1]");
    w.BeginArray().Int(2).EndArray();
    EXPECT_EQ(w.Take(), "[2]");
}

TEST(AdminDtoTest, ProviderKeyHintNeverRevealsShortKeys) {
    EXPECT_EQ(detail::ProviderKeyHint("sk-abcdefghijklmnop1234"), "1234");
    EXPECT_EQ(detail::ProviderKeyHint("short-key"), "");
    EXPECT_EQ(detail::MaskedProviderKey("1234"),
              "\xE2\x80\xA6"
              "1234");
}

TEST(AdminDtoTest, LedgerEnumNames) {
    EXPECT_EQ(detail::TransactionTypeName(domain::TransactionType::kCredit), "Credit");
    EXPECT_EQ(detail::TransactionTypeName(domain::TransactionType::kDebit), "Debit");
    EXPECT_EQ(detail::TransactionTypeName(domain::TransactionType::kRefund), "Refund");
    EXPECT_EQ(detail::TransactionTypeName(domain::TransactionType::kAdjustment), "Adjustment");
    EXPECT_EQ(detail::ReferenceTypeName(domain::ReferenceType::kInitial), "Initial");
    EXPECT_EQ(detail::ReferenceTypeName(domain::ReferenceType::kVirtualKey), "VirtualKey");
}

}  // namespace
}  // namespace conduit::admin
