#include "domain/keys.hpp"

#include "core/crypto.hpp"

#include <gtest/gtest.h>

#include <set>

namespace conduit::domain {
namespace {

TEST(VirtualKeys, GeneratedKeysHaveTheDocumentedShape) {
    std::set<std::string> seen;
    for (int i = 0; i < 200; ++i) {
        std::string k = GenerateVirtualKey();
        EXPECT_EQ(k.size(), 6u + 43u);
        EXPECT_EQ(k.substr(0, 6), "condt_");
        EXPECT_TRUE(LooksLikeVirtualKey(k)) << k;
        EXPECT_EQ(k.find_first_of("+/="), std::string::npos);  // base64url, no padding
        seen.insert(k);
    }
    EXPECT_EQ(seen.size(), 200u);
}

TEST(VirtualKeys, HashIsLowercaseHexSha256OfTheWholeKey) {
    std::string k = "condt_abc";
    EXPECT_EQ(HashVirtualKey(k), core::Sha256Hex("condt_abc"));
    EXPECT_EQ(HashVirtualKey(k).size(), 64u);
    EXPECT_NE(HashVirtualKey("condt_abd"), HashVirtualKey(k));
}

TEST(VirtualKeys, ShapeCheckRejectsOthers) {
    EXPECT_FALSE(LooksLikeVirtualKey("sk-abc"));
    EXPECT_FALSE(LooksLikeVirtualKey("condt_short"));
    EXPECT_FALSE(LooksLikeVirtualKey("condt_" + std::string(42, 'a') + "+"));
    EXPECT_EQ(KeyDisplayPrefix("condt_ABCDEFGH"), "condt_ABCD");
}

TEST(ModelAllowList, EmptyAllowsEverything) {
    ModelAllowList all("");
    EXPECT_TRUE(all.AllowsAll());
    EXPECT_TRUE(all.Allows("anything"));
    EXPECT_TRUE(ModelAllowList(" * ").Allows("x"));
}

TEST(ModelAllowList, ExactCaseInsensitiveAndPrefixWildcards) {
    ModelAllowList l("gpt-4*, Claude-3-Haiku ,text-embedding-3-small");
    EXPECT_TRUE(l.Allows("gpt-4"));
    EXPECT_TRUE(l.Allows("GPT-4o-mini"));
    EXPECT_TRUE(l.Allows("claude-3-haiku"));
    EXPECT_TRUE(l.Allows("text-embedding-3-small"));
    EXPECT_FALSE(l.Allows("gpt-3.5-turbo"));
    EXPECT_FALSE(l.Allows("claude-3-haiku-2"));
    EXPECT_FALSE(l.Allows("text-embedding"));
}

}  // namespace
}  // namespace conduit::domain
