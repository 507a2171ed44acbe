#include "webhooks/signing.hpp"

#include "core/crypto.hpp"
#include "core/strings.hpp"

namespace conduit::webhooks::signing {

namespace {

constexpr std::string_view kVersion = "v1,";

std::string SignedContent(std::string_view msg_id, int64_t timestamp_s, std::string_view body) {
    std::string content;
    content.reserve(msg_id.size() + body.size() + 24);
    content.append(msg_id).push_back('.');
    content.append(std::to_string(timestamp_s)).push_back('.');
    content.append(body);
    return content;
}

}  // namespace

std::string GenerateSecret() {
    std::string secret(kSecretPrefix);
    secret += core::Base64Encode(core::RandomBytes(kSecretBytes));
    return secret;
}

core::Result<std::string> SecretKeyBytes(std::string_view whsec) {
    std::string_view text = core::Trim(whsec);
    if (text.starts_with(kSecretPrefix)) {
        text.remove_prefix(kSecretPrefix.size());
    }
    std::string key;
    if (text.empty() || !core::Base64Decode(text, key) || key.empty()) {
        return core::Fail(core::ErrorCode::kInvalidRequest,
                          "The webhook secret is not 'whsec_' followed by base64.");
    }
    return key;
}

std::string Sign(std::string_view key_bytes,
                 std::string_view msg_id,
                 int64_t timestamp_s,
                 std::string_view body) {
    std::string mac = core::HmacSha256(key_bytes, SignedContent(msg_id, timestamp_s, body));
    std::string out(kVersion);
    out += core::Base64Encode(mac);
    return out;
}

std::string SignatureHeader(std::span<const std::string_view> keys,
                            std::string_view msg_id,
                            int64_t timestamp_s,
                            std::string_view body) {
    std::string header;
    if (keys.empty()) {
        return header;
    }
    // The signed content is the same for every key: build it once.
    const std::string content = SignedContent(msg_id, timestamp_s, body);
    for (std::string_view key : keys) {
        if (!header.empty()) {
            header.push_back(' ');
        }
        header += kVersion;
        header += core::Base64Encode(core::HmacSha256(key, content));
    }
    return header;
}

bool Verify(std::string_view key_bytes,
            std::string_view msg_id,
            int64_t timestamp_s,
            std::string_view body,
            std::string_view signature_header) {
    const std::string expected =
        core::HmacSha256(key_bytes, SignedContent(msg_id, timestamp_s, body));
    bool match = false;
    size_t pos = 0;
    while (pos < signature_header.size()) {
        size_t end = signature_header.find(' ', pos);
        if (end == std::string_view::npos) {
            end = signature_header.size();
        }
        std::string_view sig = signature_header.substr(pos, end - pos);
        pos = end + 1;
        if (!sig.starts_with(kVersion)) {
            continue;  // empty piece, or another scheme (v1a)
        }
        std::string decoded;
        if (!core::Base64Decode(sig.substr(kVersion.size()), decoded)) {
            continue;
        }
        // No short-circuit: every candidate is compared.
        match = core::ConstantTimeEquals(decoded, expected) || match;
    }
    return match;
}

bool VerifyHeaders(std::string_view key_bytes,
                   std::string_view msg_id,
                   std::string_view timestamp_text,
                   std::string_view body,
                   std::string_view signature_header) {
    std::string_view ts = core::Trim(timestamp_text);
    if (ts.empty() || ts.find_first_not_of("0123456789") != std::string_view::npos) {
        return false;
    }
    auto value = core::ParseInt(ts);
    if (!value) {
        return false;
    }
    return Verify(key_bytes, msg_id, *value, body, signature_header);
}

bool VerifyTimestamp(int64_t timestamp_s, int64_t now_s, int64_t tolerance_s) {
    int64_t diff = now_s - timestamp_s;
    return diff <= tolerance_s && diff >= -tolerance_s;
}

}  // namespace conduit::webhooks::signing
