#include "fakes/test_support.hpp"

#include <thread>

#include "core/crypto.hpp"

namespace conduit::testing {

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (cond()) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return cond();
}

TempDir::TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("conduit-test-" + core::HexEncode(core::RandomBytes(8)));
    std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

}  // namespace conduit::testing
