#include "webhooks/signing.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <string>
#include <vector>

namespace conduit::webhooks::signing {
namespace {

// The reference vector of the Standard Webhooks libraries (svix/standard-webhooks test suites).
constexpr std::string_view kSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr std::string_view kMsgId = "msg_p5jXN8AQM9LWM0D4loKWxJek";
constexpr int64_t kTimestamp = 1614265330;
constexpr std::string_view kPayload = R"({"test": 2432232314})";
constexpr std::string_view kExpected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// Independent computation with OpenSSL's one-shot HMAC and EVP base64 (not core::crypto).
std::string OpenSslSignature(std::string_view key,
                             std::string_view id,
                             int64_t ts,
                             std::string_view body) {
    std::string content = std::string(id) + "." + std::to_string(ts) + "." + std::string(body);
    std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
         reinterpret_cast<const unsigned char*>(content.data()), content.size(), mac.data(),
         &mac_len);
    std::vector<unsigned char> b64(4 * ((mac_len + 2) / 3) + 1);
    int n = EVP_EncodeBlock(b64.data(), mac.data(), static_cast<int>(mac_len));
    return "v1," + std::string(reinterpret_cast<const char*>(b64.data()), static_cast<size_t>(n));
}

std::string DecodeB64(std::string_view text) {
    std::vector<unsigned char> out(text.size());
    int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                            static_cast<int>(text.size()));
    EXPECT_GE(n, 0);
    // EVP_DecodeBlock counts padding bytes as zeros: drop one per '='.
    size_t pad = 0;
    while (pad < text.size() && text[text.size() - 1 - pad] == '=') {
        ++pad;
    }
    return std::string(reinterpret_cast<const char*>(out.data()), static_cast<size_t>(n) - pad);
}

TEST(WebhookSigning, MatchesTheStandardWebhooksReferenceVector) {
    auto key = SecretKeyBytes(kSecret);
    ASSERT_TRUE(key.has_value());
    EXPECT_EQ(*key, DecodeB64("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    EXPECT_EQ(Sign(*key, kMsgId, kTimestamp, kPayload), kExpected);
    EXPECT_EQ(OpenSslSignature(*key, kMsgId, kTimestamp, kPayload), kExpected);
    EXPECT_TRUE(Verify(*key, kMsgId, kTimestamp, kPayload, kExpected));
    EXPECT_TRUE(VerifyHeaders(*key, kMsgId, "1614265330", kPayload, kExpected));
}

TEST(WebhookSigning, AgreesWithAnIndependentHmacForGeneratedSecrets) {
    for (int i = 0; i < 20; ++i) {
        std::string secret = GenerateSecret();
        ASSERT_TRUE(secret.starts_with("whsec_"));
        auto key = SecretKeyBytes(secret);
        ASSERT_TRUE(key.has_value());
        EXPECT_EQ(key->size(), kSecretBytes);
        EXPECT_EQ(*key, DecodeB64(std::string_view(secret).substr(6)));
        std::string body = R"({"type":"task.completed","n":)" + std::to_string(i) + "}";
        EXPECT_EQ(Sign(*key, "msg_" + std::to_string(i), 1700000000 + i, body),
                  OpenSslSignature(*key, "msg_" + std::to_string(i), 1700000000 + i, body));
    }
    EXPECT_NE(GenerateSecret(), GenerateSecret());
}

TEST(WebhookSigning, SecretParsing) {
    EXPECT_TRUE(SecretKeyBytes("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").has_value());  // no prefix
    EXPECT_FALSE(SecretKeyBytes("whsec_").has_value());
    EXPECT_FALSE(SecretKeyBytes("whsec_not base64!").has_value());
    EXPECT_FALSE(SecretKeyBytes("").has_value());
}

TEST(WebhookSigning, VerifyRejectsTampering) {
    auto key = *SecretKeyBytes(kSecret);
    EXPECT_FALSE(Verify(key, kMsgId, kTimestamp + 1, kPayload, kExpected));
    EXPECT_FALSE(Verify(key, "msg_other", kTimestamp, kPayload, kExpected));
    EXPECT_FALSE(Verify(key, kMsgId, kTimestamp, R"({"test": 2432232315})", kExpected));
    EXPECT_FALSE(Verify("other key", kMsgId, kTimestamp, kPayload, kExpected));
    EXPECT_FALSE(Verify(key, kMsgId, kTimestamp, kPayload, ""));
    EXPECT_FALSE(Verify(key, kMsgId, kTimestamp, kPayload, "v1,"));
    EXPECT_FALSE(Verify(key, kMsgId, kTimestamp, kPayload, "v1,%%%"));
    // Another scheme's identifier with the right bytes does not count.
    EXPECT_FALSE(Verify(key, kMsgId, kTimestamp, kPayload,
                        "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    EXPECT_FALSE(VerifyHeaders(key, kMsgId, "1614265330x", kPayload, kExpected));
    EXPECT_FALSE(VerifyHeaders(key, kMsgId, "-1614265330", kPayload, kExpected));
    EXPECT_FALSE(VerifyHeaders(key, kMsgId, "", kPayload, kExpected));
}

TEST(WebhookSigning, RotationHeaderCarriesOneSignaturePerKey) {
    auto old_key = *SecretKeyBytes(GenerateSecret());
    auto new_key = *SecretKeyBytes(GenerateSecret());
    std::vector<std::string_view> keys = {new_key, old_key};
    std::string header = SignatureHeader(keys, "msg_rot", 1700000000, "{}");

    EXPECT_EQ(header, Sign(new_key, "msg_rot", 1700000000, "{}") + " " +
                          Sign(old_key, "msg_rot", 1700000000, "{}"));
    // A receiver holding either secret verifies.
    EXPECT_TRUE(Verify(new_key, "msg_rot", 1700000000, "{}", header));
    EXPECT_TRUE(Verify(old_key, "msg_rot", 1700000000, "{}", header));
    EXPECT_FALSE(Verify(*SecretKeyBytes(GenerateSecret()), "msg_rot", 1700000000, "{}", header));
    // Unknown schemes and extra spaces in the list are skipped.
    EXPECT_TRUE(Verify(old_key, "msg_rot", 1700000000, "{}", "v1a,abc  " + header + " "));

    EXPECT_EQ(SignatureHeader({}, "msg", 1, "{}"), "");
}

TEST(WebhookSigning, TimestampTolerance) {
    EXPECT_TRUE(VerifyTimestamp(1000, 1000));
    EXPECT_TRUE(VerifyTimestamp(1000, 1300));
    EXPECT_FALSE(VerifyTimestamp(1000, 1301));
    EXPECT_TRUE(VerifyTimestamp(1300, 1000));
    EXPECT_FALSE(VerifyTimestamp(1301, 1000));
    EXPECT_TRUE(VerifyTimestamp(1000, 1500, 600));
}

}  // namespace
}  // namespace conduit::webhooks::signing
