#include "json/helpers.hpp"

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace conduit::json {
namespace {

namespace bj = boost::json;

bj::object Obj(std::string_view text) {
    auto obj = ParseObject(text);
    EXPECT_TRUE(obj) << text;
    return obj ? std::move(*obj) : bj::object();
}

template <class T>
void ExpectInvalid(const core::Result<T>& r, std::string_view param) {
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, core::ErrorCode::kInvalidRequest);
    EXPECT_EQ(r.error().param, param);
    std::string quoted(1, '\'');
    quoted.append(param).push_back('\'');
    EXPECT_NE(r.error().message.find(quoted), std::string::npos) << r.error().message;
}

// ---------------------------------------------------------------------------------------------
// ParseObject

TEST(ParseObject, ParsesObjects) {
    auto obj = ParseObject(R"( {"a":1,"b":[true,null],"c":{"d":"e"}} )");
    ASSERT_TRUE(obj);
    EXPECT_EQ(obj->size(), 3u);
    EXPECT_EQ(obj->at("a"), 1);
}

TEST(ParseObject, RejectsMalformedJson) {
    for (const char* body :
         {"", "{", R"({"a":1,})", R"({"a":1} x)", "nope", "{'a':1}", R"({"a":01})"}) {
        SCOPED_TRACE(body);
        auto obj = ParseObject(body);
        ASSERT_FALSE(obj);
        EXPECT_EQ(obj.error().code, core::ErrorCode::kInvalidRequest);
        EXPECT_EQ(obj.error().message, "We could not parse the JSON body of your request.");
    }
}

TEST(ParseObject, RejectsOtherTopLevelValues) {
    for (const char* body : {"[]", "1", R"("s")", "null"}) {
        auto obj = ParseObject(body);
        ASSERT_FALSE(obj);
        EXPECT_EQ(obj.error().message, "The request body must be a JSON object.");
    }
}

TEST(ParseObject, LimitsNesting) {
    std::string deep(100, '[');
    deep.append(100, ']');
    EXPECT_FALSE(ParseObject(R"({"a":)" + deep + "}"));
    std::string ok(40, '[');
    ok.append(40, ']');
    EXPECT_TRUE(ParseObject(R"({"a":)" + ok + "}"));
}

// ---------------------------------------------------------------------------------------------
// Getters

TEST(GetString, PresentMissingNullAndWrongType) {
    bj::object o = Obj(R"({"name":"key one","n":null,"num":5})");
    EXPECT_EQ(GetString(o, "name").value(), "key one");
    EXPECT_EQ(GetString(o, "name", Presence::kRequired).value(), "key one");
    EXPECT_EQ(GetString(o, "missing").value(), std::nullopt);
    EXPECT_EQ(GetString(o, "n").value(), std::nullopt);

    auto missing = GetString(o, "keyName", Presence::kRequired);
    ExpectInvalid(missing, "keyName");
    EXPECT_EQ(missing.error().message, "Missing required parameter: 'keyName'.");
    ExpectInvalid(GetString(o, "n", Presence::kRequired), "n");

    auto wrong = GetString(o, "num");
    ExpectInvalid(wrong, "num");
    EXPECT_EQ(wrong.error().message, "Invalid type for 'num': expected a string.");
}

TEST(GetInt64, AcceptsIntegralNumbersOnly) {
    bj::object o =
        Obj(R"({"a":42,"b":-7,"c":5.0,"d":5.5,"e":1e30,"f":"12","g":9223372036854775807,)"
            R"("h":18446744073709551615,"i":true,"j":1e3})");
    EXPECT_EQ(GetInt64(o, "a").value(), 42);
    EXPECT_EQ(GetInt64(o, "b").value(), -7);
    EXPECT_EQ(GetInt64(o, "c").value(), 5);
    EXPECT_EQ(GetInt64(o, "g").value(), std::numeric_limits<int64_t>::max());
    EXPECT_EQ(GetInt64(o, "j").value(), 1000);
    EXPECT_EQ(GetInt64(o, "zz").value(), std::nullopt);
    for (const char* key : {"d", "e", "f", "h", "i"}) {
        SCOPED_TRACE(key);
        ExpectInvalid(GetInt64(o, key), key);
    }
    ExpectInvalid(GetInt64(o, "zz", Presence::kRequired), "zz");
}

TEST(GetBool, BooleansOnly) {
    bj::object o = Obj(R"({"t":true,"f":false,"s":"true","i":1})");
    EXPECT_EQ(GetBool(o, "t").value(), true);
    EXPECT_EQ(GetBool(o, "f").value(), false);
    EXPECT_EQ(GetBool(o, "x").value(), std::nullopt);
    ExpectInvalid(GetBool(o, "s"), "s");
    ExpectInvalid(GetBool(o, "i"), "i");
    ExpectInvalid(GetBool(o, "x", Presence::kRequired), "x");
}

TEST(GetMoney, FromNumbers) {
    bj::object o =
        Obj(R"({"int":12,"neg":-3,"tenth":0.1,"price":19.99,"small":0.000001,"half":0.0000005,)"
            R"("tiny":1e-7,"sci":2.5e2,"big":9000000000000,"huge":1e300,"toobig":10000000000000,)"
            R"("neg_frac":-2.5,"many":0.1234565})");
    EXPECT_EQ(GetMoney(o, "int").value(), 12'000'000);
    EXPECT_EQ(GetMoney(o, "neg").value(), -3'000'000);
    EXPECT_EQ(GetMoney(o, "tenth").value(), 100'000);
    EXPECT_EQ(GetMoney(o, "price").value(), 19'990'000);
    EXPECT_EQ(GetMoney(o, "small").value(), 1);
    EXPECT_EQ(GetMoney(o, "half").value(), 1);  // the text says half: round away from zero
    EXPECT_EQ(GetMoney(o, "tiny").value(), 0);
    EXPECT_EQ(GetMoney(o, "sci").value(), 250'000'000);
    EXPECT_EQ(GetMoney(o, "big").value(), 9'000'000'000'000'000'000);
    EXPECT_EQ(GetMoney(o, "neg_frac").value(), -2'500'000);
    EXPECT_EQ(GetMoney(o, "many").value(), 123'457);
    ExpectInvalid(GetMoney(o, "huge"), "huge");
    ExpectInvalid(GetMoney(o, "toobig"), "toobig");
}

TEST(GetMoney, FromStrings) {
    bj::object o = Obj(
        R"({"a":"12.5","b":"-0.000001","c":" 7 ","d":"abc","e":"1.2.3","f":"","g":"3.1415926"})");
    EXPECT_EQ(GetMoney(o, "a").value(), 12'500'000);
    EXPECT_EQ(GetMoney(o, "b").value(), -1);
    EXPECT_EQ(GetMoney(o, "c").value(), 7'000'000);
    EXPECT_EQ(GetMoney(o, "g").value(), 3'141'593);
    for (const char* key : {"d", "e", "f"}) {
        SCOPED_TRACE(key);
        ExpectInvalid(GetMoney(o, key), key);
    }
}

TEST(GetMoney, OtherTypesAndAbsence) {
    bj::object o = Obj(R"({"b":true,"a":[1],"n":null})");
    ExpectInvalid(GetMoney(o, "b"), "b");
    ExpectInvalid(GetMoney(o, "a"), "a");
    EXPECT_EQ(GetMoney(o, "n").value(), std::nullopt);
    ExpectInvalid(GetMoney(o, "n", Presence::kRequired), "n");
}

TEST(GetIdList, ArraysAndCommaSeparatedStrings) {
    bj::object o = Obj(R"({"arr":[1,2,3],"str":"4, 5,6","empty":"","none":[],"blank":" , ,7",)"
                       R"("bad_item":[1,"2"],"bad_str":"1,x","frac":[1.5],"num":5,"obj":{}})");
    EXPECT_EQ(GetIdList(o, "arr").value(), (std::vector<int64_t>{1, 2, 3}));
    EXPECT_EQ(GetIdList(o, "str").value(), (std::vector<int64_t>{4, 5, 6}));
    EXPECT_EQ(GetIdList(o, "empty").value(), std::vector<int64_t>{});
    EXPECT_EQ(GetIdList(o, "none").value(), std::vector<int64_t>{});
    EXPECT_EQ(GetIdList(o, "blank").value(), std::vector<int64_t>{7});
    EXPECT_EQ(GetIdList(o, "absent").value(), std::nullopt);
    for (const char* key : {"bad_item", "bad_str", "frac", "num", "obj"}) {
        SCOPED_TRACE(key);
        ExpectInvalid(GetIdList(o, key), key);
    }
}

TEST(GetStringList, ArraysAndCommaSeparatedStrings) {
    bj::object o = Obj(R"({"arr":["gpt-4o","o1"],"str":"a, b,,c","bad":["a",1],"num":1})");
    EXPECT_EQ(GetStringList(o, "arr").value(), (std::vector<std::string>{"gpt-4o", "o1"}));
    EXPECT_EQ(GetStringList(o, "str").value(), (std::vector<std::string>{"a", "b", "c"}));
    ExpectInvalid(GetStringList(o, "bad"), "bad");
    ExpectInvalid(GetStringList(o, "num"), "num");
}

TEST(GetStringMap, ObjectsOfStrings) {
    bj::object o =
        Obj(R"({"webhook_headers":{"X-Token":"abc","X-Other":""},"bad":{"X":1},"arr":["a"]})");
    auto headers = GetStringMap(o, "webhook_headers");
    ASSERT_TRUE(headers);
    ASSERT_TRUE(*headers);
    EXPECT_EQ((**headers).size(), 2u);
    EXPECT_EQ((**headers).at("X-Token"), "abc");
    EXPECT_EQ((**headers).at("X-Other"), "");
    ExpectInvalid(GetStringMap(o, "bad"), "bad");
    ExpectInvalid(GetStringMap(o, "arr"), "arr");
    EXPECT_EQ(GetStringMap(o, "absent").value(), std::nullopt);
    ExpectInvalid(GetStringMap(o, "absent", Presence::kRequired), "absent");
}

// ---------------------------------------------------------------------------------------------
// Serialize

TEST(Serialize, WritesCompactJsonWithReadableDoubles) {
    bj::value v = {
        {"s", "a\"b\\c\n\x01"},
        {"i", -5},
        {"u", std::numeric_limits<uint64_t>::max()},
        {"d", 0.1},
        {"e", -2.5e-8},
        {"big", 1e300},
        {"t", true},
        {"n", nullptr},
        {"arr", bj::array{1, "x", bj::object{}}},
        {"o", bj::object{{"k", bj::array{}}}},
    };
    const std::string text = Serialize(v);
    EXPECT_NE(text.find(R"("s":"a\"b\\c\n\u0001")"), std::string::npos) << text;
    EXPECT_NE(text.find(R"("d":0.1)"), std::string::npos) << text;
    EXPECT_NE(text.find(R"("big":1e+300)"), std::string::npos) << text;
    EXPECT_NE(text.find(R"("u":18446744073709551615)"), std::string::npos) << text;
    EXPECT_NE(text.find(R"("arr":[1,"x",{}])"), std::string::npos) << text;
    EXPECT_EQ(text.find(' '), std::string::npos) << text;
    boost::system::error_code ec;
    bj::value back = bj::parse(text, ec);
    ASSERT_FALSE(ec) << text;
    EXPECT_EQ(back, v);
}

TEST(Serialize, NonFiniteDoublesBecomeNull) {
    bj::value v = bj::array{std::numeric_limits<double>::quiet_NaN(),
                            std::numeric_limits<double>::infinity()};
    EXPECT_EQ(Serialize(v), "[null,null]");
    EXPECT_EQ(Serialize(bj::value("plain")), R"("plain")");
    std::string out = "x=";
    SerializeTo(out, bj::value(1.5));
    EXPECT_EQ(out, "x=1.5");
    // An integral double loses its ".0"; it still parses as the same number.
    EXPECT_EQ(Serialize(bj::value(100.0)), "100");
}

}  // namespace
}  // namespace conduit::json
