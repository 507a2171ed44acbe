#include "redis/resp.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace conduit::redis {
namespace {

/// A string literal with embedded NULs, whole.
template <size_t N>
std::string Bin(const char (&s)[N]) {
    return std::string(s, N - 1);
}

TEST(RespTest, EncodeCommandIsBinarySafe) {
    EXPECT_EQ(EncodeCommand({"PING"}), "*1\r\n$4\r\nPING\r\n");
    std::string payload("a\0\r\n\x1e", 5);
    EXPECT_EQ(EncodeCommand({"PUBLISH", "ch", payload}),
              Bin("*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$5\r\na\0\r\n\x1e\r\n"));
    EXPECT_EQ(EncodeCommand({"SET", "k", ""}), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
}

TEST(RespTest, ReaderParsesEveryReplyType) {
    ReplyReader reader;
    reader.Feed(
        Bin("+OK\r\n-ERR bad\r\n:42\r\n$-1\r\n$3\r\na\0b\r\n*2\r\n$7\r\nmessage\r\n*1\r\n:-7\r\n"));
    std::vector<Reply> replies;
    for (;;) {
        auto next = reader.Next();
        ASSERT_TRUE(next.has_value());
        if (!next->has_value()) {
            break;
        }
        replies.push_back(std::move(**next));
    }
    ASSERT_EQ(replies.size(), 6u);
    EXPECT_EQ(replies[0].type, Reply::Type::kStatus);
    EXPECT_TRUE(replies[0].Is("OK"));
    EXPECT_TRUE(replies[1].IsError());
    EXPECT_EQ(replies[1].str, "ERR bad");
    EXPECT_EQ(replies[2].type, Reply::Type::kInteger);
    EXPECT_EQ(replies[2].integer, 42);
    EXPECT_EQ(replies[3].type, Reply::Type::kNil);
    EXPECT_EQ(replies[4].type, Reply::Type::kString);
    EXPECT_EQ(replies[4].str, std::string("a\0b", 3));
    ASSERT_EQ(replies[5].type, Reply::Type::kArray);
    ASSERT_EQ(replies[5].elements.size(), 2u);
    EXPECT_TRUE(replies[5].elements[0].Is("message"));
    ASSERT_EQ(replies[5].elements[1].elements.size(), 1u);
    EXPECT_EQ(replies[5].elements[1].elements[0].integer, -7);
}

TEST(RespTest, ReaderHandlesBytesArrivingOneAtATime) {
    std::string big(100000, 'x');
    big[50000] = '\0';
    std::string wire =
        "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$" + std::to_string(big.size()) + "\r\n" + big + "\r\n";
    ReplyReader reader;
    std::vector<Reply> replies;
    for (char c : wire) {
        reader.Feed(std::string_view(&c, 1));
        auto next = reader.Next();
        ASSERT_TRUE(next.has_value());
        if (next->has_value()) {
            replies.push_back(std::move(**next));
        }
    }
    ASSERT_EQ(replies.size(), 1u);
    ASSERT_EQ(replies[0].elements.size(), 3u);
    EXPECT_EQ(replies[0].elements[2].str, big);
}

TEST(RespTest, ReaderReportsProtocolErrors) {
    ReplyReader reader;
    reader.Feed("?what\r\n");
    auto next = reader.Next();
    EXPECT_FALSE(next.has_value());
}

TEST(RespTest, DescribeIsShort) {
    Reply r;
    r.type = Reply::Type::kArray;
    Reply s;
    s.type = Reply::Type::kString;
    s.str = std::string(1000, 'y');
    r.elements.push_back(s);
    EXPECT_LT(r.Describe().size(), 100u);
}

}  // namespace
}  // namespace conduit::redis
