#include "core/ids.hpp"

#include "core/crypto.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>

namespace conduit::core {

namespace {
uint64_t UnixMs() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
}

// Per-thread xorshift seeded from the CSPRNG: ids need uniqueness, not secrecy.
uint64_t NextRandom() {
    thread_local uint64_t state = RandomU64() | 1;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}
}  // namespace

std::string NewUuidV7() {
    unsigned char b[16];
    uint64_t ms = UnixMs();
    for (int i = 0; i < 6; ++i) {
        b[i] = static_cast<unsigned char>(ms >> (40 - 8 * i));
    }
    std::string r = RandomBytes(10);
    std::memcpy(b + 6, r.data(), 10);
    b[6] = static_cast<unsigned char>(0x70 | (b[6] & 0x0F));
    b[8] = static_cast<unsigned char>(0x80 | (b[8] & 0x3F));
    char out[37];
    std::snprintf(out, sizeof(out),
                  "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                  b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                  b[14], b[15]);
    return out;
}

std::string NewRequestId() {
    static std::atomic<uint32_t> counter{0};
    char out[33];
    uint64_t hi = (UnixMs() << 16) | (counter.fetch_add(1, std::memory_order_relaxed) & 0xFFFF);
    std::snprintf(out, sizeof(out), "%016llx%016llx", static_cast<unsigned long long>(hi),
                  static_cast<unsigned long long>(NextRandom()));
    return out;
}

bool IsValidRequestId(std::string_view id) {
    if (id.empty() || id.size() > 128) {
        return false;
    }
    for (char c : id) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.' || c == ':';
        if (!ok) {
            return false;
        }
    }
    return true;
}

}  // namespace conduit::core
