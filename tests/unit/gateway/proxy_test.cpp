#include "gateway/proxy.hpp"

#include "bus/counters.hpp"
#include "domain/keys.hpp"
#include "fakes/fake_exchange.hpp"
#include "fakes/fake_http_client.hpp"
#include "gateway/budget_gate.hpp"
#include "gateway/rate_gate.hpp"
#include "store/executor.hpp"
#include "store/sqlite/sqlite_store.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

namespace conduit::gateway {
namespace {

using conduit::testing::FakeExchange;
using conduit::testing::FakeHttpClient;
using conduit::testing::FakeLoop;

class ProxyTest : public ::testing::Test {
protected:
    ProxyTest() : box_(core::SecretBox::DeriveKey("k")), registry_(), metrics_(registry_) {}

    void SetUp() override {
        store_ = std::move(*store::OpenSqliteStore(":memory:"));
        ASSERT_TRUE(store_->Migrate());
        domain::VirtualKeyGroup g;
        g.group_name = "g";
        g.balance = 10'000'000;
        group_ = *store_->CreateGroup(g, "t");
        domain::VirtualKeyGroup empty;
        empty.group_name = "broke";
        empty_group_ = *store_->CreateGroup(empty, "t");
        key_ = AddKey(group_.id, "");
        restricted_key_ = AddKey(group_.id, "other-*");
        broke_key_ = AddKey(empty_group_.id, "");
        domain::Provider p;
        p.name = "mock";
        p.type = domain::ProviderType::kOpenAICompatible;
        p.base_url = "http://upstream.test/v1";
        auto prov = *store_->CreateProvider(p);
        provider_ = prov;
        domain::ProviderKey pk;
        pk.provider_id = prov.id;
        pk.api_key_sealed = box_.Seal("sk-provider");
        pk.is_primary = true;
        ASSERT_TRUE(store_->CreateProviderKey(pk));
        domain::ModelMapping m;
        m.model_alias = "gpt-test";
        m.provider_model_id = "provider-model-7";
        m.provider_id = prov.id;
        auto mapping = *store_->CreateMapping(m);
        domain::ModelCost c;
        c.cost_name = "c";
        c.mapping_ids = {mapping.id};
        c.input_per_million = 1'000'000;   // $1 / 1M
        c.output_per_million = 2'000'000;  // $2 / 1M
        ASSERT_TRUE(store_->CreateCost(c));
        config_ = std::make_unique<ConfigState>(*store_, book_, box_);
        ASSERT_TRUE(config_->ReloadOnExecutor());
        spend_ = std::make_unique<SpendRecorder>(*store_, executor_, book_, std::chrono::hours(1));
        proxy_ = std::make_unique<OpenAIProxy>(ProxyDeps{
            *config_, book_, *spend_, [this](size_t) -> http_client::Client& { return client_; },
            http_client::Timeouts{}, metrics_, core::SystemClock::Instance()});
    }

    std::string AddKey(domain::Id group, std::string allowed) {
        std::string k = domain::GenerateVirtualKey();
        domain::VirtualKey vk;
        vk.key_name = "k";
        vk.key_hash = domain::HashVirtualKey(k);
        vk.key_prefix = domain::KeyDisplayPrefix(k);
        vk.group_id = group;
        vk.allowed_models = std::move(allowed);
        EXPECT_TRUE(store_->CreateKey(vk));
        return k;
    }

    /// Stores a router configuration and rebuilds the snapshot.
    void SetRouter(const std::string& json) {
        ASSERT_TRUE(store_->PutSetting(kRouterSetting, json));
        ASSERT_TRUE(config_->ReloadOnExecutor());
    }
    /// Adds a provider (with `keys` API keys, the first primary) and a mapping of `alias` to it.
    domain::Provider AddDeployment(
        const std::string& name,
        const std::string& alias,
        int priority,
        int keys = 1,
        domain::ProviderType type = domain::ProviderType::kOpenAICompatible) {
        domain::Provider p;
        p.name = name;
        p.type = type;
        p.base_url = "http://" + name + ".test/v1";
        auto prov = *store_->CreateProvider(p);
        for (int i = 0; i < keys; ++i) {
            domain::ProviderKey pk;
            pk.provider_id = prov.id;
            pk.api_key_sealed = box_.Seal("sk-" + name + "-" + std::to_string(i));
            pk.is_primary = i == 0;
            EXPECT_TRUE(store_->CreateProviderKey(pk));
        }
        domain::ModelMapping m;
        m.model_alias = alias;
        m.provider_model_id = name + "-model";
        m.provider_id = prov.id;
        m.priority = priority;
        EXPECT_TRUE(store_->CreateMapping(m));
        EXPECT_TRUE(config_->ReloadOnExecutor());
        return prov;
    }
    /// Rebuilds the proxy with shared breakers (small window) and a key-rejection hook.
    void UseHealth(domain::BreakerOptions o) {
        health_ = std::make_unique<DeploymentHealth>(o, registry_);
        ProxyDeps deps{*config_,
                       book_,
                       *spend_,
                       [this](size_t) -> http_client::Client& { return client_; },
                       http_client::Timeouts{},
                       metrics_,
                       core::SystemClock::Instance()};
        deps.health = health_.get();
        deps.on_key_rejected = [this](domain::Id id, int status) {
            rejected_.emplace_back(id, status);
        };
        proxy_ = std::make_unique<OpenAIProxy>(std::move(deps));
    }
    /// Rebuilds the proxy with balance reservations (in-process counters), and the keys' rate
    /// limits in the same admission call when `rate_limits`.
    void UseBudget(int64_t default_max_tokens = 1000, bool rate_limits = false) {
        counters_ = bus::MakeInProcessCounters();
        BudgetGate::Options o;
        o.default_max_tokens = default_max_tokens;
        budget_ = std::make_unique<BudgetGate>(*counters_, book_, registry_, o);
        if (rate_limits) {
            rate_ = std::make_unique<RateGate>(*counters_, *config_, core::SystemClock::Instance(),
                                               registry_, FailPolicy::kOpen);
            budget_->SetRateGate(rate_.get());
        }
        ProxyDeps deps{*config_,
                       book_,
                       *spend_,
                       [this](size_t) -> http_client::Client& { return client_; },
                       http_client::Timeouts{},
                       metrics_,
                       core::SystemClock::Instance()};
        deps.budget = budget_.get();
        proxy_ = std::make_unique<OpenAIProxy>(std::move(deps));
    }
    /// The group's shared available-balance counter.
    int64_t AvailableCounter(domain::Id group) {
        int64_t v = -1;
        counters_->Get({BudgetGate::KeyFor(group)}, [&](auto r) { v = r->at(0); });
        return v;
    }
    static void Answer(FakeHttpClient::FakeCall& call, int status, std::string_view body) {
        net::Headers h;
        h.Add("Content-Type", "application/json");
        call.Headers(status, h);
        call.Data(body);
        call.Done();
    }

    std::shared_ptr<FakeExchange> Post(std::string body, const std::string& key) {
        net::Headers h;
        h.Add("Authorization", "Bearer " + key);
        auto ex = FakeExchange::Make(loop_, "POST", "/v1/chat/completions", std::move(body), h);
        ex->extra_headers().Add("X-Request-Id", "req-1");
        return ex;
    }

    std::vector<domain::RequestLogRow> FlushedLogs() {
        EXPECT_TRUE(spend_->FlushAndWait());
        return *store_->ListRequestLogs({});
    }

    core::SecretBox box_;
    obs::Registry registry_;
    GatewayMetrics metrics_;
    std::unique_ptr<store::Store> store_;
    store::Executor executor_;
    BalanceBook book_;
    std::unique_ptr<ConfigState> config_;
    std::unique_ptr<SpendRecorder> spend_;
    FakeHttpClient client_;
    FakeLoop loop_;
    std::unique_ptr<OpenAIProxy> proxy_;
    std::unique_ptr<DeploymentHealth> health_;
    std::unique_ptr<bus::Counters> counters_;
    std::unique_ptr<BudgetGate> budget_;
    std::unique_ptr<RateGate> rate_;
    std::vector<std::pair<domain::Id, int>> rejected_;
    domain::Provider provider_;
    domain::VirtualKeyGroup group_, empty_group_;
    std::string key_, restricted_key_, broke_key_;
};

constexpr const char* kChat = R"({"model":"gpt-test","messages":[{"role":"user","content":"hi"}]})";
constexpr const char* kStreamChat =
    R"({"model":"gpt-test","stream":true,"messages":[{"role":"user","content":"hi"}]})";

TEST_F(ProxyTest, NonStreamRewritesModelSendsProviderKeyAndBillsUsage) {
    auto ex = Post(kChat, key_);
    proxy_->ChatCompletions(ex);
    ASSERT_EQ(client_.calls.size(), 1u);
    auto& call = *client_.calls[0];
    EXPECT_EQ(call.request.url, "http://upstream.test/v1/chat/completions");
    EXPECT_EQ(call.request.headers.Get("authorization"), "Bearer sk-provider");
    auto sent = boost::json::parse(call.request.body);
    EXPECT_EQ(sent.at("model").as_string(), "provider-model-7");
    EXPECT_EQ(sent.at("messages").as_array().size(), 1u);
    EXPECT_EQ(call.request.headers.Get("x-request-id"), "req-1");

    net::Headers h;
    h.Add("Content-Type", "application/json");
    call.Headers(200, h);
    call.Data(R"({"id":"x","choices":[],"usage":{"prompt_tokens":1000,)");
    call.Data(R"("completion_tokens":500,"total_tokens":1500}})");
    call.Done();
    EXPECT_EQ(ex->status(), 200);
    EXPECT_EQ(
        ex->body(),
        R"({"id":"x","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}})");
    EXPECT_FALSE(ex->headers().Get("x-conduit-overhead-us").empty());
    auto logs = FlushedLogs();
    ASSERT_EQ(logs.size(), 1u);
    EXPECT_EQ(logs[0].input_tokens, 1000);
    EXPECT_EQ(logs[0].output_tokens, 500);
    EXPECT_EQ(logs[0].cost, 1000 + 1000);  // 1000 × $1/1M + 500 × $2/1M
    EXPECT_FALSE(logs[0].usage_estimated);
    EXPECT_EQ(logs[0].request_id, "req-1");
    EXPECT_EQ((*store_->GetGroup(group_.id))->balance, 10'000'000 - 2000);
}

TEST_F(ProxyTest, StreamForwardsEventsAndDropsTheUsageChunkTheClientDidNotAskFor) {
    auto ex = Post(kStreamChat, key_);
    proxy_->ChatCompletions(ex);
    auto& call = *client_.calls.at(0);
    auto sent = boost::json::parse(call.request.body);
    EXPECT_TRUE(sent.at("stream_options").at("include_usage").as_bool());  // asked for billing
    EXPECT_EQ(call.request.headers.Get("accept"), "text/event-stream");
    call.Headers(200);
    EXPECT_EQ(ex->status(), 200);
    EXPECT_EQ(ex->headers().Get("content-type"), "text/event-stream; charset=utf-8");
    call.Data("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choi");
    EXPECT_EQ(ex->body(), "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n");
    call.Data("ces\":[{\"delta\":{\"content\":\"b\"}}]}\n\n");
    call.Data(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,"
        "\"total_tokens\":5}}\n\ndata: [DONE]\n\n");
    call.Done();
    EXPECT_TRUE(ex->responded());
    EXPECT_EQ(ex->body(),
              "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
              "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n"
              "data: [DONE]\n\n");
    auto logs = FlushedLogs();
    ASSERT_EQ(logs.size(), 1u);
    EXPECT_TRUE(logs[0].streamed);
    EXPECT_EQ(logs[0].input_tokens, 3);
    EXPECT_EQ(logs[0].output_tokens, 2);
}

TEST_F(ProxyTest, StreamKeepsTheUsageChunkWhenTheClientAskedForIt) {
    auto ex = Post(R"({"model":"gpt-test","stream":true,"stream_options":{"include_usage":true},)"
                   R"("messages":[]})",
                   key_);
    proxy_->ChatCompletions(ex);
    auto& call = *client_.calls.at(0);
    call.Headers(200);
    call.Data(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,"
        "\"total_tokens\":5}}\n\ndata: [DONE]\n\n");
    call.Done();
    EXPECT_NE(ex->body().find("\"usage\""), std::string::npos);
}

TEST_F(ProxyTest, MidStreamFailureEndsWithAnErrorEvent) {
    auto ex = Post(kStreamChat, key_);
    proxy_->ChatCompletions(ex);
    auto& call = *client_.calls.at(0);
    call.Headers(200);
    call.Data("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n");
    call.Done(http_client::Failure::kOther, "connection reset");
    EXPECT_TRUE(ex->responded());
    auto pos = ex->body().find("data: {\"error\":");
    ASSERT_NE(pos, std::string::npos) << ex->body();
    EXPECT_NE(ex->body().find("upstream_error"), std::string::npos);
}

TEST_F(ProxyTest, UpstreamErrorsMapToGatewayStatuses) {
    struct Case {
        int upstream_status;
        http_client::Failure failure;
        int expected;
        const char* code;
    };
    const Case cases[] = {
        {0, http_client::Failure::kConnect, 502, "upstream_error"},
        {0, http_client::Failure::kTimeout, 504, "upstream_timeout"},
        {500, http_client::Failure::kNone, 502, "upstream_error"},
    };
    SetRouter(R"({"maxRetries":0})");  // the final answer of one attempt (retries: below)
    for (const auto& c : cases) {
        auto ex = Post(kChat, key_);
        proxy_->ChatCompletions(ex);
        auto& call = *client_.calls.back();
        if (c.upstream_status != 0) {
            call.Headers(c.upstream_status);
            call.Data("{\"error\":\"internal detail\"}");
        }
        call.Done(c.failure, "x");
        EXPECT_EQ(ex->status(), c.expected);
        auto v = boost::json::parse(ex->body());
        EXPECT_EQ(v.at("error").at("code").as_string(), c.code);
    }
}

TEST_F(ProxyTest, Upstream4xxPassesThroughWithStatusAndBody) {
    SetRouter(R"({"maxRetries":0})");
    auto ex = Post(kStreamChat, key_);
    proxy_->ChatCompletions(ex);
    auto& call = *client_.calls.back();
    net::Headers h;
    h.Add("Content-Type", "application/json");
    h.Add("Retry-After", "7");
    call.Headers(429, h);
    call.Data(R"({"error":{"message":"slow down","type":"rate_limit_error"}})");
    call.Done();
    EXPECT_EQ(ex->status(), 429);
    EXPECT_EQ(ex->body(), R"({"error":{"message":"slow down","type":"rate_limit_error"}})");
    EXPECT_EQ(ex->headers().Get("retry-after"), "7");
    auto logs = FlushedLogs();
    ASSERT_EQ(logs.size(), 1u);
    EXPECT_EQ(logs[0].cost, 0);  // errors are not billed
    EXPECT_EQ(logs[0].status_code, 429);
}

TEST_F(ProxyTest, RequestErrorsNeverReachTheUpstream) {
    struct Case {
        std::string body;
        std::string key;
        int status;
        const char* code;
        const char* param;
    };
    const Case cases[] = {
        {kChat, "condt_wrong", 401, "invalid_api_key", nullptr},
        {kChat, "", 401, "invalid_api_key", nullptr},
        {"{not json", key_, 400, "invalid_request", nullptr},
        {R"({"messages":[]})", key_, 400, "invalid_request", "model"},
        {R"({"model":"gpt-test"})", key_, 400, "invalid_request", "messages"},
        {R"({"model":"nope","messages":[]})", key_, 404, "model_not_found", "model"},
        {R"({"model":"gpt-test","messages":[]})", restricted_key_, 403, "model_not_allowed",
         "model"},
        {R"({"model":"gpt-test","messages":[]})", broke_key_, 402, "insufficient_balance", nullptr},
    };
    for (const auto& c : cases) {
        auto ex = Post(c.body, c.key);
        proxy_->ChatCompletions(ex);
        EXPECT_EQ(ex->status(), c.status) << c.body;
        auto v = boost::json::parse(ex->body());
        EXPECT_EQ(v.at("error").at("code").as_string(), c.code) << c.body;
        if (c.param != nullptr) {
            EXPECT_EQ(v.at("error").at("param").as_string(), c.param) << c.body;
        }
    }
    EXPECT_TRUE(client_.calls.empty());
}

TEST_F(ProxyTest, XApiKeyHeaderIsAccepted) {
    net::Headers h;
    h.Add("X-API-Key", key_);
    auto ex = FakeExchange::Make(loop_, "POST", "/v1/chat/completions", kChat, h);
    proxy_->ChatCompletions(ex);
    EXPECT_EQ(client_.calls.size(), 1u);
}

TEST_F(ProxyTest, ClientDisconnectCancelsTheUpstreamAndBillsWhatWasStreamed) {
    auto ex = Post(kStreamChat, key_);
    proxy_->ChatCompletions(ex);
    auto& call = *client_.calls.at(0);
    call.Headers(200);
    call.Data("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n");
    ex->Disconnect();
    EXPECT_TRUE(call.cancelled);
    auto logs = FlushedLogs();
    ASSERT_EQ(logs.size(), 1u);
    EXPECT_EQ(logs[0].status_code, 499);
    EXPECT_TRUE(logs[0].usage_estimated);
    EXPECT_GT(logs[0].cost, 0);
}

TEST_F(ProxyTest, ModelsListsOnlyAllowedAliases) {
    net::Headers h;
    h.Add("Authorization", "Bearer " + key_);
    auto ex = FakeExchange::Make(loop_, "GET", "/v1/models", "", h);
    proxy_->ListModels(ex);
    auto v = boost::json::parse(ex->body());
    EXPECT_EQ(v.at("object").as_string(), "list");
    ASSERT_EQ(v.at("data").as_array().size(), 1u);
    EXPECT_EQ(v.at("data").at(0).at("id").as_string(), "gpt-test");
    EXPECT_EQ(v.at("data").at(0).at("object").as_string(), "model");

    net::Headers h2;
    h2.Add("Authorization", "Bearer " + restricted_key_);
    auto ex2 = FakeExchange::Make(loop_, "GET", "/v1/models", "", h2);
    proxy_->ListModels(ex2);
    EXPECT_EQ(boost::json::parse(ex2->body()).at("data").as_array().size(), 0u);

    auto ex3 = FakeExchange::Make(loop_, "GET", "/v1/models/nope", "", h);
    ex3->request().path_params = {"nope"};
    proxy_->GetModel(ex3);
    EXPECT_EQ(ex3->status(), 404);
}

constexpr const char* kOk =
    R"({"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}})";

TEST_F(ProxyTest, ConnectFailureMovesToTheNextDeploymentAtOnce) {
    AddDeployment("backup", "gpt-test", -1);
    auto ex = Post(kChat, key_);
    proxy_->ChatCompletions(ex);
    ASSERT_EQ(client_.calls.size(), 1u);
    EXPECT_EQ(client_.calls[0]->request.url, "http://upstream.test/v1/chat/completions");
    client_.calls[0]->Done(http_client::Failure::kConnect, "refused");
    ASSERT_EQ(client_.calls.size(), 2u);  // no backoff to another deployment
    EXPECT_EQ(client_.calls[1]->request.url, "http://backup.test/v1/chat/completions");
    EXPECT_NE(client_.calls[1]->request.body.find("backup-model"), std::string::npos);
    Answer(*client_.calls[1], 200, kOk);
    EXPECT_EQ(ex->status(), 200);
    EXPECT_EQ(ex->extra_headers().Get("X-Conduit-Attempts"), "2");
    auto logs = FlushedLogs();
    ASSERT_EQ(logs.size(), 1u);  // billed once, for the deployment that answered
    EXPECT_EQ(logs[0].provider_model, "backup-model");
}

TEST_F(ProxyTest, SameDeploymentIsRetriedAfterABackoffAndGivesUpAfterMaxRetries) {
    SetRouter(R"({"maxRetries":2,"retryBaseDelayMs":100,"retryMaxDelayMs":1000})");
    auto ex = Post(kChat, key_);
    proxy_->ChatCompletions(ex);
    Answer(*client_.calls[0], 503, R"({"error":"busy"})");
    EXPECT_EQ(client_.calls.size(), 1u);  // waiting
    loop_.AdvanceBy(std::chrono::milliseconds(99));
    EXPECT_EQ(client_.calls.size(), 1u);
    loop_.AdvanceBy(std::chrono::milliseconds(1));
    ASSERT_EQ(client_.calls.size(), 2u);
    Answer(*client_.calls[1], 429, R"({"error":"slow"})");
    loop_.AdvanceBy(std::chrono::milliseconds(199));
    EXPECT_EQ(client_.calls.size(), 2u);  // 200 ms the second time
    loop_.AdvanceBy(std::chrono::milliseconds(1));
    ASSERT_EQ(client_.calls.size(), 3u);
    Answer(*client_.calls[2], 500, R"({"error":"internal"})");
    EXPECT_EQ(client_.calls.size(), 3u);  // 1 + maxRetries
    EXPECT_EQ(ex->status(), 502);
    EXPECT_EQ(ex->extra_headers().Get("X-Conduit-Attempts"), "3");
}

TEST_F(ProxyTest, ClientErrorsAndStartedStreamsAreNeverRetried) {
    AddDeployment("backup", "gpt-test", -1);
    auto bad = Post(kChat, key_);
    proxy_->ChatCompletions(bad);
    Answer(*client_.calls[0], 400, R"({"error":{"message":"bad"}})");
    EXPECT_EQ(bad->status(), 400);
    EXPECT_EQ(client_.calls.size(), 1u);

    auto st = Post(kStreamChat, key_);
    proxy_->ChatCompletions(st);
    ASSERT_EQ(client_.calls.size(), 2u);
    net::Headers h;
    h.Add("Content-Type", "text/event-stream");
    client_.calls[1]->Headers(200, h);
    client_.calls[1]->Data("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n");
    client_.calls[1]->Done(http_client::Failure::kOther, "reset");
    EXPECT_EQ(client_.calls.size(), 2u);  // the client already has bytes: no retry
    EXPECT_NE(st->body().find("upstream stream failed"), std::string::npos) << st->body();
}

TEST_F(ProxyTest, TimeoutOfTheOnlyDeploymentIsNotRepeated) {
    auto ex = Post(kChat, key_);
    proxy_->ChatCompletions(ex);
    client_.calls[0]->Done(http_client::Failure::kTimeout, "first byte");
    loop_.AdvanceBy(std::chrono::seconds(10));
    EXPECT_EQ(client_.calls.size(), 1u);
    EXPECT_EQ(ex->status(), 504);
}

TEST_F(ProxyTest, FallbackModelServesWhenThePrimaryFails) {
    AddDeployment("other", "gpt-fallback", 0);
    SetRouter(R"({"fallbacks":{"gpt-test":["gpt-fallback"]}})");
    auto ex = Post(kChat, key_);
    proxy_->ChatCompletions(ex);
    Answer(*client_.calls[0], 500, "{}");
    ASSERT_EQ(client_.calls.size(), 2u);
    EXPECT_EQ(client_.calls[1]->request.url, "http://other.test/v1/chat/completions");
    Answer(*client_.calls[1], 200, kOk);
    EXPECT_EQ(ex->status(), 200);
    // A key restricted to other models does not fall back to a model it may not use.
    auto restricted = Post(kChat, restricted_key_);
    proxy_->ChatCompletions(restricted);
    EXPECT_EQ(restricted->status(), 403);
}

TEST_F(ProxyTest, RejectedKeyFailsOverToTheNextKeyAndIsReported) {
    domain::BreakerOptions o;
    UseHealth(o);
    auto prov = AddDeployment("multi", "gpt-multi", 0, 2);
    auto keys = *store_->ListProviderKeys(prov.id);
    ASSERT_EQ(keys.size(), 2u);
    auto ex = Post(R"({"model":"gpt-multi","messages":[]})", key_);
    proxy_->ChatCompletions(ex);
    ASSERT_EQ(client_.calls.size(), 1u);
    EXPECT_EQ(client_.calls[0]->request.headers.Get("Authorization"), "Bearer sk-multi-0");
    Answer(*client_.calls[0], 401, R"({"error":"bad key"})");
    ASSERT_EQ(client_.calls.size(), 2u);
    EXPECT_EQ(client_.calls[1]->request.headers.Get("Authorization"), "Bearer sk-multi-1");
    Answer(*client_.calls[1], 200, kOk);
    EXPECT_EQ(ex->status(), 200);
    ASSERT_EQ(rejected_.size(), 1u);
    EXPECT_EQ(rejected_[0].second, 401);
    const domain::Id primary = keys[0].is_primary ? keys[0].id : keys[1].id;
    EXPECT_EQ(rejected_[0].first, primary);
}

TEST_F(ProxyTest, OpenBreakerIsSkippedThenProbedAndClosed) {
    domain::BreakerOptions o;
    o.min_requests = 2;
    o.failure_ratio = 0.5;
    o.open_ms = 60'000;
    UseHealth(o);
    SetRouter(R"({"maxRetries":0})");
    AddDeployment("backup", "gpt-test", -1);
    for (int i = 0; i < 2; ++i) {
        auto ex = Post(kChat, key_);
        proxy_->ChatCompletions(ex);
        Answer(*client_.calls.back(), 500, "{}");
        EXPECT_EQ(ex->status(), 502);
    }
    EXPECT_NE(registry_.Render().find("conduit_circuit_breaker_trips_total{provider=\"mock\"} 1"),
              std::string::npos)
        << registry_.Render();
    // Open: routing skips the primary and goes straight to the backup.
    auto ex = Post(kChat, key_);
    proxy_->ChatCompletions(ex);
    EXPECT_EQ(client_.calls.back()->request.url, "http://backup.test/v1/chat/completions");
    Answer(*client_.calls.back(), 200, kOk);
    EXPECT_EQ(ex->status(), 200);
    auto statuses = health_->Statuses(SteadyNowMs());
    ASSERT_EQ(statuses.size(), 2u);
    EXPECT_EQ(statuses[0].state, domain::WindowBreaker::State::kOpen);
    EXPECT_EQ(statuses[1].state, domain::WindowBreaker::State::kClosed);
}

TEST_F(ProxyTest, EveryBreakerOpenIs503) {
    domain::BreakerOptions o;
    o.min_requests = 1;
    o.open_ms = 60'000;
    UseHealth(o);
    SetRouter(R"({"maxRetries":0})");
    auto first = Post(kChat, key_);
    proxy_->ChatCompletions(first);
    client_.calls[0]->Done(http_client::Failure::kConnect, "refused");
    EXPECT_EQ(first->status(), 502);
    auto ex = Post(kChat, key_);
    proxy_->ChatCompletions(ex);
    EXPECT_EQ(client_.calls.size(), 1u);
    EXPECT_EQ(ex->status(), 503);
    EXPECT_EQ(ex->extra_headers().Get("Retry-After"), "5");
}

// ---------------------------------------------------------------------------------------------
// Anthropic deployments (docs/anthropic.md)

constexpr const char* kAnthropicOk =
    R"({"id":"msg_1","type":"message","role":"assistant","model":"anth-model","content":[)"
    R"({"type":"text","text":"Bonjour"}],"stop_reason":"end_turn","stop_sequence":null,)"
    R"("usage":{"input_tokens":1000,"output_tokens":500}})";

std::string AnthropicEvent(std::string_view name, std::string_view data) {
    return "event: " + std::string(name) + "\ndata: " + std::string(data) + "\n\n";
}

TEST_F(ProxyTest, AnthropicDeploymentTranslatesRequestAndResponse) {
    AddDeployment("anth", "claude", 0, 1, domain::ProviderType::kAnthropic);
    auto ex = Post(R"({"model":"claude","messages":[{"role":"system","content":"Be brief."},)"
                   R"({"role":"user","content":"hi"}],"stop":"END"})",
                   key_);
    proxy_->ChatCompletions(ex);
    ASSERT_EQ(client_.calls.size(), 1u);
    auto& call = *client_.calls[0];
    EXPECT_EQ(call.request.url, "http://anth.test/v1/messages");
    EXPECT_EQ(call.request.headers.Get("x-api-key"), "sk-anth-0");
    EXPECT_EQ(call.request.headers.Get("anthropic-version"), "2023-06-01");
    EXPECT_FALSE(call.request.headers.Has("authorization"));
    EXPECT_EQ(call.request.headers.Get("x-request-id"), "req-1");
    auto sent = boost::json::parse(call.request.body);
    EXPECT_EQ(sent.at("model").as_string(), "anth-model");
    EXPECT_EQ(sent.at("system").as_string(), "Be brief.");
    EXPECT_EQ(sent.at("max_tokens").as_int64(), 4096);
    EXPECT_EQ(boost::json::serialize(sent.at("stop_sequences")), R"(["END"])");

    Answer(call, 200, kAnthropicOk);
    EXPECT_EQ(ex->status(), 200);
    auto out = boost::json::parse(ex->body());
    EXPECT_EQ(out.at("object").as_string(), "chat.completion");
    EXPECT_EQ(out.at("model").as_string(), "claude");
    EXPECT_EQ(out.at("choices").at(0).at("message").at("content").as_string(), "Bonjour");
    EXPECT_EQ(out.at("usage").at("total_tokens").as_int64(), 1500);
    EXPECT_FALSE(ex->headers().Get("x-conduit-overhead-us").empty());
    auto logs = FlushedLogs();
    ASSERT_EQ(logs.size(), 1u);
    EXPECT_EQ(logs[0].input_tokens, 1000);
    EXPECT_EQ(logs[0].output_tokens, 500);
    EXPECT_FALSE(logs[0].usage_estimated);
}

TEST_F(ProxyTest, AnthropicStreamIsTranslatedAndBilled) {
    AddDeployment("anth", "claude", 0, 1, domain::ProviderType::kAnthropic);
    auto ex = Post(
        R"({"model":"claude","stream":true,"messages":[{"role":"user","content":"hi"}]})", key_);
    proxy_->ChatCompletions(ex);
    auto& call = *client_.calls.at(0);
    auto sent = boost::json::parse(call.request.body);
    EXPECT_TRUE(sent.at("stream").as_bool());
    EXPECT_FALSE(sent.as_object().contains("stream_options"));
    EXPECT_EQ(call.request.headers.Get("accept"), "text/event-stream");
    call.Headers(200);
    std::string events =
        AnthropicEvent("message_start",
                       R"({"type":"message_start","message":{"id":"msg_s","usage":)"
                       R"({"input_tokens":12,"output_tokens":1}}})") +
        AnthropicEvent("content_block_start",
                       R"({"type":"content_block_start","index":0,"content_block":)"
                       R"({"type":"text","text":""}})") +
        AnthropicEvent("ping", R"({"type":"ping"})") +
        AnthropicEvent("content_block_delta", R"({"type":"content_block_delta","index":0,"delta":)"
                                              R"({"type":"text_delta","text":"Hel"}})") +
        AnthropicEvent("content_block_delta", R"({"type":"content_block_delta","index":0,"delta":)"
                                              R"({"type":"text_delta","text":"lo"}})") +
        AnthropicEvent("content_block_stop", R"({"type":"content_block_stop","index":0})") +
        AnthropicEvent("message_delta",
                       R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},)"
                       R"("usage":{"output_tokens":7}})") +
        AnthropicEvent("message_stop", R"({"type":"message_stop"})");
    // Split anywhere.
    call.Data(std::string_view(events).substr(0, 100));
    call.Data(std::string_view(events).substr(100));
    call.Done();
    EXPECT_TRUE(ex->responded());
    const std::string& body = ex->body();
    EXPECT_EQ(body.find("event:"), std::string::npos) << "no Anthropic bytes reach the client";
    EXPECT_NE(body.find(R"("delta":{"content":"Hel"})"), std::string::npos) << body;
    EXPECT_NE(body.find(R"("finish_reason":"stop")"), std::string::npos);
    EXPECT_EQ(body.find(R"("usage")"), std::string::npos) << "the client did not ask for usage";
    EXPECT_TRUE(body.ends_with("data: [DONE]\n\n"));
    auto logs = FlushedLogs();
    ASSERT_EQ(logs.size(), 1u);
    EXPECT_EQ(logs[0].input_tokens, 12);
    EXPECT_EQ(logs[0].output_tokens, 7);
}

TEST_F(ProxyTest, AnthropicErrorsAndUntranslatableRequests) {
    AddDeployment("anth", "claude", 0, 1, domain::ProviderType::kAnthropic);
    // Refused before any upstream call.
    auto n2 = Post(R"({"model":"claude","n":2,"messages":[{"role":"user","content":"x"}]})", key_);
    proxy_->ChatCompletions(n2);
    EXPECT_EQ(n2->status(), 400);
    EXPECT_NE(n2->body().find(R"("param":"n")"), std::string::npos);
    net::Headers h;
    h.Add("Authorization", "Bearer " + key_);
    auto emb =
        FakeExchange::Make(loop_, "POST", "/v1/embeddings", R"({"model":"claude","input":"x"})", h);
    proxy_->Embeddings(emb);
    EXPECT_EQ(emb->status(), 400);
    EXPECT_TRUE(client_.calls.empty());

    // Anthropic's error bodies become OpenAI ones.
    auto bad = Post(R"({"model":"claude","messages":[{"role":"user","content":"x"}]})", key_);
    proxy_->ChatCompletions(bad);
    Answer(
        *client_.calls.at(0), 400,
        R"({"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}})");
    EXPECT_EQ(bad->status(), 400);
    auto e = boost::json::parse(bad->body());
    EXPECT_EQ(e.at("error").at("message").as_string(), "max_tokens: too big");
    EXPECT_EQ(e.at("error").at("type").as_string(), "invalid_request_error");

    SetRouter(R"({"maxRetries":0})");
    auto busy = Post(R"({"model":"claude","messages":[{"role":"user","content":"x"}]})", key_);
    proxy_->ChatCompletions(busy);
    Answer(*client_.calls.at(1), 529,
           R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})");
    EXPECT_EQ(busy->status(), 503);

    // An error event mid-stream ends the stream with an OpenAI error object.
    auto st = Post(R"({"model":"claude","stream":true,"messages":[{"role":"user","content":"x"}]})",
                   key_);
    proxy_->ChatCompletions(st);
    auto& call = *client_.calls.at(2);
    call.Headers(200);
    call.Data(AnthropicEvent("message_start",
                             R"({"type":"message_start","message":{"id":"m","usage":{}}})") +
              AnthropicEvent("error", R"({"type":"error","error":{"type":"overloaded_error",)"
                                      R"("message":"Overloaded"}})"));
    call.Done();
    EXPECT_NE(st->body().find(R"("code":"service_unavailable")"), std::string::npos) << st->body();
    EXPECT_EQ(st->body().find("[DONE]"), std::string::npos);

    // A stream that stops without message_stop is reported.
    auto cut = Post(
        R"({"model":"claude","stream":true,"messages":[{"role":"user","content":"x"}]})", key_);
    proxy_->ChatCompletions(cut);
    auto& c2 = *client_.calls.at(3);
    c2.Headers(200);
    c2.Data(AnthropicEvent("message_start",
                           R"({"type":"message_start","message":{"id":"m","usage":{}}})"));
    c2.Done();
    EXPECT_NE(cut->body().find(R"(data: {"error":)"), std::string::npos) << cut->body();
    EXPECT_EQ(cut->body().find("[DONE]"), std::string::npos);
}

TEST_F(ProxyTest, FallbackFromOpenAIToAnthropicTranslatesPerAttempt) {
    AddDeployment("anth", "gpt-test", -1, 1, domain::ProviderType::kAnthropic);
    auto ex = Post(kChat, key_);
    proxy_->ChatCompletions(ex);
    ASSERT_EQ(client_.calls.size(), 1u);
    EXPECT_EQ(client_.calls[0]->request.url, "http://upstream.test/v1/chat/completions");
    client_.calls[0]->Done(http_client::Failure::kConnect, "refused");
    ASSERT_EQ(client_.calls.size(), 2u);
    EXPECT_EQ(client_.calls[1]->request.url, "http://anth.test/v1/messages");
    EXPECT_EQ(boost::json::parse(client_.calls[1]->request.body).at("model").as_string(),
              "anth-model");
    Answer(*client_.calls[1], 200, kAnthropicOk);
    EXPECT_EQ(ex->status(), 200);
    EXPECT_EQ(boost::json::parse(ex->body()).at("model").as_string(), "gpt-test");
}

TEST_F(ProxyTest, WorstCaseReservationsBoundConcurrentRequestsByTheBalance) {
    UseBudget();
    SetRouter(R"({"maxRetries":0})");
    // $10 balance; max_tokens 1M at $2/M output: each request may cost just over $2.
    const std::string big =
        R"({"model":"gpt-test","max_tokens":1000000,"messages":[{"role":"user","content":"hi"}]})";
    std::vector<std::shared_ptr<FakeExchange>> admitted;
    for (int i = 0; i < 4; ++i) {
        admitted.push_back(Post(big, key_));
        proxy_->ChatCompletions(admitted.back());
    }
    ASSERT_EQ(client_.calls.size(), 4u);  // all four in flight
    auto fifth = Post(big, key_);
    proxy_->ChatCompletions(fifth);
    EXPECT_EQ(fifth->status(), 402);
    EXPECT_NE(fifth->body().find("may cost up to $2.00"), std::string::npos) << fifth->body();
    EXPECT_EQ(client_.calls.size(), 4u);  // refused before any upstream call
    // One finishes (actual cost 10 × $1/M + 5 × $2/M = 20 µ$): the rest of its reservation
    // returns and another request fits.
    Answer(*client_.calls[0], 200, kOk);
    EXPECT_EQ(admitted[0]->status(), 200);
    auto sixth = Post(big, key_);
    proxy_->ChatCompletions(sixth);
    EXPECT_EQ(client_.calls.size(), 5u);
    // Failures release everything; after all settle, the counter is the balance minus the spend.
    for (size_t i = 1; i < 5; ++i) {
        Answer(*client_.calls[i], 500, "{}");
    }
    EXPECT_EQ(AvailableCounter(group_.id), 10'000'000 - 20);
    auto logs = FlushedLogs();
    EXPECT_EQ(*book_.Available(group_.id), 10'000'000 - 20);
}

TEST_F(ProxyTest, DefaultMaxTokensIsReservedWhenTheRequestHasNone) {
    UseBudget(/*default_max_tokens=*/1000);
    domain::VirtualKeyGroup g;
    g.group_name = "small";
    g.balance = 1'500;  // 1,500 µ$: less than 1,000 completion tokens at $2/M
    auto small = *store_->CreateGroup(g, "t");
    std::string key = AddKey(small.id, "");
    ASSERT_TRUE(config_->ReloadOnExecutor());
    auto ex = Post(kChat, key);
    proxy_->ChatCompletions(ex);
    EXPECT_EQ(ex->status(), 402);
    EXPECT_TRUE(client_.calls.empty());
    auto capped =
        Post(R"({"model":"gpt-test","max_tokens":100,"messages":[{"role":"user","content":"hi"}]})",
             key);
    proxy_->ChatCompletions(capped);
    ASSERT_EQ(client_.calls.size(), 1u);
    Answer(*client_.calls[0], 200, kOk);
    EXPECT_EQ(capped->status(), 200);
}

TEST_F(ProxyTest, ClientLeavingReleasesItsReservation) {
    UseBudget();
    const std::string big =
        R"({"model":"gpt-test","max_tokens":1000000,"messages":[{"role":"user","content":"hi"}]})";
    auto ex = Post(big, key_);
    proxy_->ChatCompletions(ex);
    ASSERT_EQ(client_.calls.size(), 1u);
    EXPECT_LT(AvailableCounter(group_.id), 8'000'000);
    ex->Disconnect();
    EXPECT_EQ(AvailableCounter(group_.id), 10'000'000);  // nothing was streamed: not billed
}

TEST_F(ProxyTest, RateLimitsAndReservationAreOneAdmissionAllOrNothing) {
    UseBudget(/*default_max_tokens=*/1000, /*rate_limits=*/true);
    domain::VirtualKeyGroup g;
    g.group_name = "limited";
    g.balance = 5'000;  // two requests' worst case (1,000 tokens at $2/M + prompt) fit
    auto group = *store_->CreateGroup(g, "t");
    std::string k = domain::GenerateVirtualKey();
    domain::VirtualKey vk;
    vk.key_name = "rpm3";
    vk.key_hash = domain::HashVirtualKey(k);
    vk.key_prefix = domain::KeyDisplayPrefix(k);
    vk.group_id = group.id;
    vk.rate_limit_rpm = 3;
    ASSERT_TRUE(store_->CreateKey(vk));
    ASSERT_TRUE(config_->ReloadOnExecutor());
    std::vector<std::shared_ptr<FakeExchange>> held;
    for (int i = 0; i < 2; ++i) {
        held.push_back(Post(kChat, k));
        proxy_->ChatCompletions(held.back());
        EXPECT_EQ(held.back()->extra_headers().Get("x-ratelimit-limit-requests"), "3");
        EXPECT_EQ(held.back()->extra_headers().Get("x-ratelimit-remaining-requests"),
                  std::to_string(2 - i));
    }
    ASSERT_EQ(client_.calls.size(), 2u);
    // The balance refuses the third: 402, and its request token is not taken.
    auto broke = Post(kChat, k);
    proxy_->ChatCompletions(broke);
    EXPECT_EQ(broke->status(), 402);
    EXPECT_EQ(broke->extra_headers().Get("x-ratelimit-remaining-requests"), "1");
    // Both finish (20 µ$ each): the balance is back; the third request fits and takes the last
    // token; the fourth is refused by the limit (429) before any reservation.
    Answer(*client_.calls[0], 200, kOk);
    Answer(*client_.calls[1], 200, kOk);
    auto third = Post(kChat, k);
    proxy_->ChatCompletions(third);
    ASSERT_EQ(client_.calls.size(), 3u);
    auto fourth = Post(kChat, k);
    proxy_->ChatCompletions(fourth);
    EXPECT_EQ(fourth->status(), 429);
    EXPECT_FALSE(fourth->extra_headers().Get("retry-after").empty());
    EXPECT_EQ(client_.calls.size(), 3u);
    const int64_t before = AvailableCounter(group.id);
    Answer(*client_.calls[2], 200, kOk);
    EXPECT_EQ(AvailableCounter(group.id), 5'000 - 60);
    EXPECT_GT(AvailableCounter(group.id), before);
    // An unpriced model reserves nothing but still takes the limit.
    AddDeployment("free", "free-model", 0);
    ASSERT_TRUE(config_->ReloadOnExecutor());
    auto free_call =
        Post(R"({"model":"free-model","messages":[{"role":"user","content":"hi"}]})", k);
    proxy_->ChatCompletions(free_call);
    EXPECT_EQ(free_call->status(), 429);
}

}  // namespace
}  // namespace conduit::gateway
