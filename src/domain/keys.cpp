#include "domain/keys.hpp"

#include "core/crypto.hpp"
#include "core/strings.hpp"

namespace conduit::domain {

std::string GenerateVirtualKey() {
    return std::string(kVirtualKeyPrefix) + core::Base64UrlEncode(core::RandomBytes(32));
}

std::string HashVirtualKey(std::string_view key) { return core::Sha256Hex(key); }

bool LooksLikeVirtualKey(std::string_view key) {
    if (key.size() != kVirtualKeyPrefix.size() + 43 || key.substr(0, 6) != kVirtualKeyPrefix) {
        return false;
    }
    for (char c : key.substr(kVirtualKeyPrefix.size())) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok) {
            return false;
        }
    }
    return true;
}

std::string KeyDisplayPrefix(std::string_view key) {
    return std::string(key.substr(0, kVirtualKeyPrefix.size() + 4));
}

ModelAllowList::ModelAllowList(std::string_view spec) {
    for (auto& item : core::SplitTrimmed(spec, ',')) {
        std::string lower = core::ToLower(item);
        if (lower == "*") {
            exact_.clear();
            prefixes_.clear();
            return;
        }
        if (!lower.empty() && lower.back() == '*') {
            lower.pop_back();
            prefixes_.push_back(std::move(lower));
        } else {
            exact_.push_back(std::move(lower));
        }
    }
}

bool ModelAllowList::Allows(std::string_view alias) const {
    if (AllowsAll()) {
        return true;
    }
    for (const auto& e : exact_) {
        if (core::IEquals(e, alias)) {
            return true;
        }
    }
    for (const auto& p : prefixes_) {
        if (core::IStartsWith(alias, p)) {
            return true;
        }
    }
    return false;
}

}  // namespace conduit::domain
