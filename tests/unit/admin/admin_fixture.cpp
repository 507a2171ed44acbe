#include "admin_fixture.hpp"

#include "core/strings.hpp"

namespace conduit::admin::testing {

namespace bj = boost::json;

std::string Resp::ErrorCode() const {
    if (!json.is_object() || !json.as_object().contains("error")) {
        return {};
    }
    const auto& code = json.at("error").at("code");
    return code.is_string() ? std::string(code.as_string()) : std::string();
}

std::string Resp::ErrorParam() const {
    if (!json.is_object() || !json.as_object().contains("error")) {
        return {};
    }
    const auto& param = json.at("error").at("param");
    return param.is_string() ? std::string(param.as_string()) : std::string();
}

AdminTest::AdminTest() {
    auto opened = store::OpenSqliteStore(":memory:");
    EXPECT_TRUE(opened.has_value());
    store_ = std::move(*opened);
    EXPECT_TRUE(store_->Migrate().has_value());
    config_ = std::make_unique<gateway::ConfigState>(*store_, book_, box_);
    executor_ = std::make_unique<store::Executor>("admin-test");
    deps_ = std::make_shared<AdminDeps>(
        AdminDeps{*store_, *executor_, *config_, book_, box_, clock_, std::string(kMasterKey)});
    RegisterAdminRoutes(router_, deps_);
}

AdminTest::~AdminTest() {
    executor_->Stop();
    loop_.RunPending();
}

net::Headers AdminTest::MasterHeaders() {
    net::Headers h;
    h.Add("X-API-Key", std::string(kMasterKey));
    return h;
}

std::shared_ptr<conduit::testing::FakeExchange> AdminTest::Start(std::string method,
                                                                 std::string target,
                                                                 std::string body,
                                                                 net::Headers headers) {
    if (!body.empty()) {
        headers.Add("Content-Type", "application/json");
    }
    auto ex = conduit::testing::FakeExchange::Make(loop_, std::move(method), std::move(target),
                                                   std::move(body), std::move(headers));
    auto& req = ex->request();
    auto match = router_.Match(req.method, req.path(), req.path_params);
    if (match.handler == nullptr) {
        return nullptr;
    }
    (*match.handler)(ex);
    return ex;
}

void AdminTest::Pump(const std::shared_ptr<conduit::testing::FakeExchange>& ex) {
    bool done = conduit::testing::WaitFor([&] {
        loop_.RunPending();
        return ex->responded();
    });
    ASSERT_TRUE(done) << "no response to " << ex->request().method << " " << ex->request().target;
}

Resp AdminTest::CallWith(std::string method,
                         std::string target,
                         std::string body,
                         net::Headers headers) {
    Resp r;
    auto ex = Start(std::move(method), std::move(target), std::move(body), std::move(headers));
    if (ex == nullptr) {
        r.status = 404;  // what the server's router fallback would answer
        return r;
    }
    Pump(ex);
    r.status = ex->status();
    r.body = ex->body();
    r.headers = ex->headers();
    if (!r.body.empty()) {
        boost::system::error_code ec;
        r.json = bj::parse(r.body, ec);
        if (ec) {
            r.json = nullptr;
        }
    }
    return r;
}

Resp AdminTest::Call(std::string method, std::string target, std::string body) {
    return CallWith(std::move(method), std::move(target), std::move(body), MasterHeaders());
}

int64_t AdminTest::CreateGroup(std::string_view name, std::string_view initial_balance) {
    std::string body = "{\"groupName\":" + core::JsonQuote(name) + ",\"initialBalance\":\"" +
                       std::string(initial_balance) + "\"}";
    auto r = Call("POST", "/api/VirtualKeyGroups", body);
    EXPECT_EQ(r.status, 201) << r.body;
    return r.status == 201 ? r.obj().at("id").as_int64() : 0;
}

std::pair<std::string, int64_t> AdminTest::CreateKey(int64_t group_id, std::string extra_json) {
    std::string body =
        "{\"keyName\":\"k\",\"virtualKeyGroupId\":" + std::to_string(group_id) + extra_json + "}";
    auto r = Call("POST", "/api/VirtualKeys", body);
    EXPECT_EQ(r.status, 201) << r.body;
    if (r.status != 201) {
        return {};
    }
    return {std::string(r.obj().at("virtualKey").as_string()),
            r.obj().at("keyInfo").at("id").as_int64()};
}

int64_t AdminTest::CreateProvider(std::string body) {
    auto r = Call("POST", "/api/ProviderCredentials", std::move(body));
    EXPECT_EQ(r.status, 201) << r.body;
    return r.status == 201 ? r.obj().at("id").as_int64() : 0;
}

int64_t AdminTest::CreateMapping(int64_t provider_id,
                                 std::string_view alias,
                                 std::string_view provider_model) {
    std::string body = "{\"modelAlias\":" + core::JsonQuote(alias) +
                       ",\"providerModelId\":" + core::JsonQuote(provider_model) +
                       ",\"providerId\":" + std::to_string(provider_id) + "}";
    auto r = Call("POST", "/api/ModelProviderMapping", body);
    EXPECT_EQ(r.status, 201) << r.body;
    return r.status == 201 ? r.obj().at("id").as_int64() : 0;
}

}  // namespace conduit::admin::testing
