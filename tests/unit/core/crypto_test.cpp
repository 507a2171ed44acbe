#include "core/crypto.hpp"

#include <gtest/gtest.h>

namespace conduit::core {
namespace {

TEST(Crypto, Sha256KnownVectors) {
    EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Crypto, HmacSha256Rfc4231Case2) {
    std::string mac = HmacSha256("Jefe", "what do ya want for nothing?");
    EXPECT_EQ(HexEncode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Crypto, Base64RoundTripAllLengths) {
    std::string data;
    for (int i = 0; i < 70; ++i) {
        data.push_back(static_cast<char>(i * 37));
        std::string decoded;
        ASSERT_TRUE(Base64Decode(Base64Encode(data), decoded));
        EXPECT_EQ(decoded, data);
        ASSERT_TRUE(Base64Decode(Base64UrlEncode(data), decoded));
        EXPECT_EQ(decoded, data);
    }
}

TEST(Crypto, Base64KnownValuesAndRejects) {
    EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
    EXPECT_EQ(Base64Encode("fo"), "Zm8=");
    EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");
    std::string out;
    EXPECT_FALSE(Base64Decode("Zm9v!mFy", out));
    EXPECT_FALSE(Base64Decode("Z", out));
}

TEST(Crypto, ConstantTimeEquals) {
    EXPECT_TRUE(ConstantTimeEquals("secret", "secret"));
    EXPECT_FALSE(ConstantTimeEquals("secret", "secreT"));
    EXPECT_FALSE(ConstantTimeEquals("secret", "secret1"));
    EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(Crypto, RandomBytesDiffer) {
    auto a = RandomBytes(32);
    auto b = RandomBytes(32);
    EXPECT_EQ(a.size(), 32u);
    EXPECT_NE(a, b);
}

}  // namespace
}  // namespace conduit::core

#include "core/secret_box.hpp"

namespace conduit::core {
namespace {

TEST(SecretBox, SealOpenRoundTripAndTamper) {
    SecretBox box(SecretBox::DeriveKey("material"));
    std::string sealed = box.Seal("sk-provider-key");
    EXPECT_EQ(sealed.rfind("v1:", 0), 0u);
    EXPECT_EQ(sealed.find("sk-provider-key"), std::string::npos);
    EXPECT_EQ(box.Open(sealed), "sk-provider-key");
    EXPECT_NE(box.Seal("x"), box.Seal("x"));  // fresh nonce each time

    // Flip one bit in every byte position in turn (nonce, ciphertext and tag): all rejected.
    std::string raw;
    ASSERT_TRUE(Base64Decode(sealed.substr(3), raw));
    for (size_t i = 0; i < raw.size(); ++i) {
        std::string bad = raw;
        bad[i] = static_cast<char>(bad[i] ^ 0x01);
        EXPECT_FALSE(box.Open("v1:" + Base64Encode(bad))) << "byte " << i;
    }
    SecretBox other(SecretBox::DeriveKey("other"));
    EXPECT_FALSE(other.Open(sealed));
    EXPECT_FALSE(box.Open("garbage"));
}

}  // namespace
}  // namespace conduit::core
