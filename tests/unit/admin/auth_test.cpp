#include "admin_fixture.hpp"

namespace conduit::admin::testing {
namespace {

TEST_F(AdminTest, MissingMasterKeyIs401WithOpenAIErrorBody) {
    auto r = CallWith("GET", "/api/VirtualKeyGroups", "", {});
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(r.ErrorCode(), "invalid_api_key");
    EXPECT_EQ(r.json.at("error").at("type").as_string(), "authentication_error");
    EXPECT_TRUE(r.json.at("error").at("param").is_null());
}

TEST_F(AdminTest, WrongMasterKeyIs401OnEveryForm) {
    for (const char* header : {"X-API-Key", "X-Master-Key"}) {
        net::Headers h;
        h.Add(header, "wrong-key");
        auto r = CallWith("GET", "/api/VirtualKeys", "", h);
        EXPECT_EQ(r.status, 401) << header;
    }
    net::Headers h;
    h.Add("Authorization", "Bearer " + std::string(kMasterKey) + "x");
    EXPECT_EQ(CallWith("GET", "/api/VirtualKeys", "", h).status, 401);
    // A prefix of the key is not the key.
    net::Headers prefix;
    prefix.Add("X-API-Key", std::string(kMasterKey.substr(0, 10)));
    EXPECT_EQ(CallWith("GET", "/api/VirtualKeys", "", prefix).status, 401);
}

TEST_F(AdminTest, AcceptsAllThreeHeaderForms) {
    net::Headers api_key;
    api_key.Add("X-API-Key", std::string(kMasterKey));
    EXPECT_EQ(CallWith("GET", "/api/VirtualKeyGroups", "", api_key).status, 200);

    net::Headers master;
    master.Add("x-master-key", std::string(kMasterKey));
    EXPECT_EQ(CallWith("GET", "/api/VirtualKeyGroups", "", master).status, 200);

    net::Headers bearer;
    bearer.Add("Authorization", "Bearer " + std::string(kMasterKey));
    EXPECT_EQ(CallWith("GET", "/api/VirtualKeyGroups", "", bearer).status, 200);
}

TEST_F(AdminTest, AuthenticationComesBeforeValidationAndLookup) {
    // Malformed body, unknown id: still 401 without the key, and nothing is written.
    EXPECT_EQ(CallWith("POST", "/api/VirtualKeyGroups", "{not json", {}).status, 401);
    EXPECT_EQ(CallWith("DELETE", "/api/VirtualKeyGroups/999", "", {}).status, 401);
    EXPECT_EQ(CallWith("POST", "/api/VirtualKeyGroups", R"({"groupName":"x"})", {}).status, 401);
    auto groups = store_->ListGroups();
    ASSERT_TRUE(groups.has_value());
    EXPECT_TRUE(groups->empty());
}

TEST_F(AdminTest, EveryRouteRequiresTheMasterKey) {
    const std::pair<const char*, const char*> routes[] = {
        {"GET", "/api/VirtualKeyGroups/1"},
        {"PUT", "/api/VirtualKeyGroups/1"},
        {"POST", "/api/VirtualKeyGroups/1/adjust-balance"},
        {"GET", "/api/VirtualKeyGroups/1/transactions"},
        {"GET", "/api/VirtualKeyGroups/1/keys"},
        {"POST", "/api/VirtualKeys"},
        {"GET", "/api/ProviderCredentials"},
        {"POST", "/api/ProviderCredentials/1/keys"},
        {"POST", "/api/ProviderCredentials/1/keys/2/set-primary"},
        {"DELETE", "/api/ProviderCredentials/1/keys/2"},
        {"GET", "/api/ModelProviderMapping"},
        {"DELETE", "/api/ModelCosts/1"},
        {"GET", "/api/Analytics/logs"},
    };
    for (const auto& [method, path] : routes) {
        auto r = CallWith(method, path, "{}", {});
        EXPECT_EQ(r.status, 401) << method << " " << path;
        EXPECT_EQ(r.ErrorCode(), "invalid_api_key") << method << " " << path;
    }
}

TEST_F(AdminTest, EmptyConfiguredMasterKeyRejectsEverything) {
    auto deps = std::make_shared<AdminDeps>(
        AdminDeps{*store_, *executor_, *config_, book_, box_, clock_, std::string()});
    net::Router router;
    RegisterAdminRoutes(router, deps);
    for (const char* value : {"", " "}) {
        for (const char* header : {"X-API-Key", "X-Master-Key", "Authorization"}) {
            net::Headers h;
            h.Add(header, std::string(header) == "Authorization" ? std::string("Bearer ") + value
                                                                 : std::string(value));
            auto ex = conduit::testing::FakeExchange::Make(loop_, "GET", "/api/VirtualKeys", "", h);
            auto m = router.Match("GET", "/api/VirtualKeys", ex->request().path_params);
            ASSERT_NE(m.handler, nullptr);
            (*m.handler)(ex);
            ASSERT_TRUE(ex->responded());  // answered synchronously, before any store work
            EXPECT_EQ(ex->status(), 401);
        }
    }
}

TEST(AdminHasMasterKeyTest, MatchesOnlyTheExactKey) {
    net::Request req;
    EXPECT_FALSE(HasMasterKey(req, "secret"));
    req.headers.Add("X-API-Key", "secret");
    EXPECT_TRUE(HasMasterKey(req, "secret"));
    EXPECT_FALSE(HasMasterKey(req, "secret2"));
    EXPECT_FALSE(HasMasterKey(req, "Secret"));
    EXPECT_FALSE(HasMasterKey(req, ""));

    net::Request bearer;
    bearer.headers.Add("Authorization", "bearer secret");
    EXPECT_TRUE(HasMasterKey(bearer, "secret"));
    net::Request basic;
    basic.headers.Add("Authorization", "Basic secret");
    EXPECT_FALSE(HasMasterKey(basic, "secret"));

    // Any presented form may carry it.
    net::Request both;
    both.headers.Add("X-API-Key", "condt_something");
    both.headers.Add("X-Master-Key", "secret");
    EXPECT_TRUE(HasMasterKey(both, "secret"));
}

TEST_F(AdminTest, LiteralSegmentsAreCaseInsensitive) {
    EXPECT_EQ(Call("GET", "/api/virtualkeygroups").status, 200);
    EXPECT_EQ(Call("GET", "/API/VIRTUALKEYS").status, 200);
    EXPECT_EQ(Call("GET", "/api/providercredentials").status, 200);
    EXPECT_EQ(Call("GET", "/api/modelprovidermapping").status, 200);
    EXPECT_EQ(Call("GET", "/api/modelcosts").status, 200);
    EXPECT_EQ(Call("GET", "/api/analytics/LOGS").status, 200);
}

TEST_F(AdminTest, ResponsesArriveOnTheLoopAfterTheStoreWork) {
    // The handler must not answer inline (that would mean store work on the loop thread):
    // the reply is posted back to the loop by the executor.
    auto ex = Start("GET", "/api/VirtualKeyGroups", "", MasterHeaders());
    ASSERT_NE(ex, nullptr);
    EXPECT_FALSE(ex->responded());
    Pump(ex);
    EXPECT_EQ(ex->status(), 200);
    EXPECT_EQ(ex->body(), "[]");
    EXPECT_EQ(ex->headers().Get("Content-Type"), "application/json");
}

TEST_F(AdminTest, ClientGoneBeforeTheReplyIsHarmless) {
    auto ex = Start("POST", "/api/VirtualKeyGroups", R"({"groupName":"g"})", MasterHeaders());
    ASSERT_NE(ex, nullptr);
    ex->Disconnect();
    // The write still happens; the reply is dropped.
    ASSERT_TRUE(conduit::testing::WaitFor([&] {
        loop_.RunPending();
        auto groups = store_->ListGroups();
        return groups && groups->size() == 1;
    }));
    loop_.RunPending();
    EXPECT_FALSE(ex->responded());
}

}  // namespace
}  // namespace conduit::admin::testing
