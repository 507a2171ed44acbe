#include "core/secret_box.hpp"

#include "core/crypto.hpp"

#include <openssl/evp.h>

#include <cstdlib>
#include <memory>

namespace conduit::core {

namespace {
constexpr size_t kNonce = 12;
constexpr size_t kTag = 16;
constexpr std::string_view kPrefix = "v1:";

struct CtxFree {
    void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

const unsigned char* U(const char* p) { return reinterpret_cast<const unsigned char*>(p); }
unsigned char* U(char* p) { return reinterpret_cast<unsigned char*>(p); }
}  // namespace

SecretBox::SecretBox(std::string key) : key_(std::move(key)) {
    if (key_.size() != 32) {
        std::abort();  // programming error: always pass DeriveKey() output
    }
}

std::string SecretBox::DeriveKey(std::string_view material) { return Sha256Raw(material); }

std::string SecretBox::Seal(std::string_view plaintext) const {
    std::string nonce = RandomBytes(kNonce);
    std::string out = nonce;
    out.resize(kNonce + plaintext.size() + kTag);
    CtxPtr ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    int total = 0;
    if (!ctx ||
        EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, U(key_.data()),
                           U(nonce.data())) != 1 ||
        EVP_EncryptUpdate(ctx.get(), U(out.data() + kNonce), &len, U(plaintext.data()),
                          static_cast<int>(plaintext.size())) != 1) {
        std::abort();
    }
    total = len;
    if (EVP_EncryptFinal_ex(ctx.get(), U(out.data() + kNonce + total), &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag,
                            out.data() + kNonce + plaintext.size()) != 1) {
        std::abort();
    }
    return std::string(kPrefix) + Base64Encode(out);
}

std::optional<std::string> SecretBox::Open(std::string_view sealed) const {
    if (sealed.substr(0, kPrefix.size()) != kPrefix) {
        return std::nullopt;
    }
    std::string raw;
    if (!Base64Decode(sealed.substr(kPrefix.size()), raw) || raw.size() < kNonce + kTag) {
        return std::nullopt;
    }
    size_t n = raw.size() - kNonce - kTag;
    std::string plain(n, '\0');
    CtxPtr ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    if (!ctx ||
        EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, U(key_.data()), U(raw.data())) !=
            1 ||
        EVP_DecryptUpdate(ctx.get(), U(plain.data()), &len, U(raw.data() + kNonce),
                          static_cast<int>(n)) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, raw.data() + kNonce + n) != 1) {
        return std::nullopt;
    }
    int fin = 0;
    if (EVP_DecryptFinal_ex(ctx.get(), U(plain.data() + len), &fin) != 1) {
        return std::nullopt;
    }
    return plain;
}

}  // namespace conduit::core
