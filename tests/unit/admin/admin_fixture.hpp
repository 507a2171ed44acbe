#pragma once

// Shared fixture of the admin handler tests: a real in-memory SQLite store, a real store
// executor, real ConfigState/BalanceBook, and handlers driven through a net::Router with
// FakeExchange + FakeLoop (no sockets).

#include "admin/admin_api.hpp"
#include "core/clock.hpp"
#include "core/secret_box.hpp"
#include "fakes/fake_exchange.hpp"
#include "fakes/fake_loop.hpp"
#include "fakes/test_support.hpp"
#include "gateway/balance_book.hpp"
#include "gateway/config_state.hpp"
#include "net/router.hpp"
#include "store/executor.hpp"
#include "store/sqlite/sqlite_store.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace conduit::admin::testing {

/// A settable wall clock (thread-safe).
class TestClock final : public core::Clock {
public:
    int64_t NowUnixMs() const override { return now_ms.load(); }
    int64_t SteadyNs() const override { return now_ms.load() * 1'000'000; }
    std::atomic<int64_t> now_ms{1'767'225'600'000};  // 2026-01-01T00:00:00Z
};

/// What a handler answered.
struct Resp {
    int status = 0;
    std::string body;
    net::Headers headers;
    boost::json::value json;  // null when the body is empty or not JSON

    const boost::json::object& obj() const { return json.as_object(); }
    const boost::json::array& arr() const { return json.as_array(); }
    /// error.code / error.param of an error body ("" when absent or null).
    std::string ErrorCode() const;
    std::string ErrorParam() const;
};

inline constexpr std::string_view kMasterKey = "test-master-key-0123456789";

class AdminTest : public ::testing::Test {
protected:
    AdminTest();
    ~AdminTest() override;

    /// Sends a request with the master key in X-API-Key and waits for the response.
    Resp Call(std::string method, std::string target, std::string body = {});
    /// Sends a request with exactly `headers` (no master key added).
    Resp CallWith(std::string method, std::string target, std::string body, net::Headers headers);
    /// Routes and invokes the handler without pumping the loop (for asynchrony tests). Returns
    /// nullptr if no route matched.
    std::shared_ptr<conduit::testing::FakeExchange> Start(std::string method,
                                                          std::string target,
                                                          std::string body,
                                                          net::Headers headers);
    /// Pumps the loop until `ex` has responded (or a timeout; then the test fails).
    void Pump(const std::shared_ptr<conduit::testing::FakeExchange>& ex);

    // Helpers that create a resource through the API and return its id (failing the test when
    // the response is not 201).
    int64_t CreateGroup(std::string_view name = "team", std::string_view initial_balance = "0");
    /// Returns {virtualKey, id}.
    std::pair<std::string, int64_t> CreateKey(int64_t group_id, std::string extra_json = {});
    int64_t CreateProvider(std::string body);
    int64_t CreateMapping(int64_t provider_id,
                          std::string_view alias,
                          std::string_view provider_model = "gpt-4o-2024");

    static net::Headers MasterHeaders();

    TestClock clock_;
    core::SecretBox box_{core::SecretBox::DeriveKey("admin-test-encryption-key")};
    std::unique_ptr<store::Store> store_;
    gateway::BalanceBook book_;
    std::unique_ptr<gateway::ConfigState> config_;
    std::unique_ptr<store::Executor> executor_;
    conduit::testing::FakeLoop loop_;
    net::Router router_;
    std::shared_ptr<AdminDeps> deps_;
};

}  // namespace conduit::admin::testing
