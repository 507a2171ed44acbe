#include "admin_fixture.hpp"

namespace conduit::admin::testing {
namespace {

TEST_F(AdminTest, MappingCrudRoundTripWithDefaults) {
    int64_t provider = CreateProvider(R"({"providerType":1,"providerName":"OpenAI"})");
    auto created = Call("POST", "/api/ModelProviderMapping",
                        R"({"modelAlias":"smart","providerModelId":"gpt-4o-2024-08-06",)"
                        R"("providerId":)" +
                            std::to_string(provider) + "}");
    ASSERT_EQ(created.status, 201) << created.body;
    const auto& m = created.obj();
    const int64_t id = m.at("id").as_int64();
    EXPECT_EQ(m.at("modelAlias").as_string(), "smart");
    EXPECT_EQ(m.at("providerModelId").as_string(), "gpt-4o-2024-08-06");
    EXPECT_EQ(m.at("providerId").as_int64(), provider);
    EXPECT_TRUE(m.at("isEnabled").as_bool());
    EXPECT_EQ(m.at("priority").as_int64(), 0);
    EXPECT_TRUE(m.at("maxContextTokensOverride").is_null());
    EXPECT_TRUE(m.at("supportsChat").as_bool());
    EXPECT_TRUE(m.at("supportsStreaming").as_bool());
    EXPECT_FALSE(m.at("supportsEmbeddings").as_bool());
    EXPECT_FALSE(m.at("supportsImageGeneration").as_bool());
    EXPECT_FALSE(m.at("supportsVideoGeneration").as_bool());
    EXPECT_FALSE(m.at("supportsVision").as_bool());
    EXPECT_FALSE(m.at("supportsFunctionCalling").as_bool());
    EXPECT_EQ(m.at("createdAt").as_string(), "2026-01-01T00:00:00.000Z");

    const std::string path = "/api/ModelProviderMapping/" + std::to_string(id);
    EXPECT_EQ(Call("GET", path).body, created.body);
    EXPECT_EQ(Call("GET", "/api/ModelProviderMapping").arr().size(), 1u);

    auto updated = Call("PUT", path,
                        R"({"priority":7,"maxContextTokensOverride":128000,"supportsVision":true,)"
                        R"("supportsFunctionCalling":true,"supportsStreaming":false})");
    ASSERT_EQ(updated.status, 200) << updated.body;
    EXPECT_EQ(updated.obj().at("priority").as_int64(), 7);
    EXPECT_EQ(updated.obj().at("maxContextTokensOverride").as_int64(), 128000);
    EXPECT_TRUE(updated.obj().at("supportsVision").as_bool());
    EXPECT_TRUE(updated.obj().at("supportsFunctionCalling").as_bool());
    EXPECT_FALSE(updated.obj().at("supportsStreaming").as_bool());
    EXPECT_EQ(updated.obj().at("modelAlias").as_string(), "smart");  // untouched

    auto cleared = Call("PUT", path, R"({"maxContextTokensOverride":null})");
    ASSERT_EQ(cleared.status, 200);
    EXPECT_TRUE(cleared.obj().at("maxContextTokensOverride").is_null());
    EXPECT_EQ(cleared.obj().at("priority").as_int64(), 7);

    EXPECT_EQ(Call("DELETE", path).status, 204);
    EXPECT_EQ(Call("GET", path).status, 404);
    EXPECT_EQ(config_->Get()->Deployments("smart"), nullptr);
}

TEST_F(AdminTest, MappingValidation) {
    int64_t provider = CreateProvider(R"({"providerType":1,"providerName":"OpenAI"})");
    const std::string p = std::to_string(provider);
    struct Case {
        std::string body;
        const char* param;
    };
    const Case cases[] = {
        {R"({"providerModelId":"x","providerId":)" + p + "}", "modelAlias"},
        {R"({"modelAlias":"a","providerId":)" + p + "}", "providerModelId"},
        {R"({"modelAlias":"a","providerModelId":"x"})", "providerId"},
        {R"({"modelAlias":"a","providerModelId":"x","providerId":999})", "providerId"},
        {R"({"modelAlias":"a","providerModelId":"x","providerId":"one"})", "providerId"},
        {R"({"modelAlias":"a","providerModelId":"x","providerId":)" + p + R"(,"priority":"high"})",
         "priority"},
        {R"({"modelAlias":"a","providerModelId":"x","providerId":)" + p +
             R"(,"priority":99999999999})",
         "priority"},
        {R"({"modelAlias":"a","providerModelId":"x","providerId":)" + p +
             R"(,"maxContextTokensOverride":0})",
         "maxContextTokensOverride"},
        {R"({"modelAlias":"a","providerModelId":"x","providerId":)" + p +
             R"(,"supportsVision":"true"})",
         "supportsVision"},
    };
    for (const auto& c : cases) {
        auto r = Call("POST", "/api/ModelProviderMapping", c.body);
        EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
        EXPECT_EQ(r.ErrorParam(), c.param) << c.body;
    }
    int64_t id = CreateMapping(provider, "a");
    const std::string path = "/api/ModelProviderMapping/" + std::to_string(id);
    EXPECT_EQ(Call("PUT", path, R"({"providerId":999})").ErrorParam(), "providerId");
    EXPECT_EQ(Call("PUT", path, R"({"modelAlias":null})").ErrorParam(), "modelAlias");
    EXPECT_EQ(Call("PUT", "/api/ModelProviderMapping/999", R"({"priority":1})").status, 404);
    EXPECT_EQ(Call("GET", "/api/ModelProviderMapping/x").status, 404);
}

TEST_F(AdminTest, SnapshotSeesKeyAndMappingAsSoonAsTheyAreCreated) {
    int64_t group = CreateGroup("g", "10");
    auto [key, key_id] = CreateKey(group, R"(,"allowedModels":"gpt-4*")");
    int64_t provider = CreateProvider(
        R"({"providerType":"openai","providerName":"OpenAI","apiKey":"sk-upstream-0000001234"})");
    CreateMapping(provider, "gpt-4o", "gpt-4o-2024-08-06");

    auto snap = config_->Get();
    auto entry = snap->Authenticate(key, clock_.NowUnixMs());
    ASSERT_TRUE(entry.has_value()) << entry.error().message;
    EXPECT_EQ((*entry)->key.id, key_id);
    auto deployment = snap->Resolve(**entry, "gpt-4o");
    ASSERT_TRUE(deployment.has_value()) << deployment.error().message;
    EXPECT_EQ((*deployment)->mapping.provider_model_id, "gpt-4o-2024-08-06");
    EXPECT_EQ((*deployment)->api_key, "sk-upstream-0000001234");
    EXPECT_EQ((*deployment)->base_url, "https://api.openai.com/v1");
    // allowedModels is enforced by the snapshot.
    EXPECT_FALSE(snap->Resolve(**entry, "claude").has_value());
    EXPECT_EQ(book_.Available(group), 10'000000);

    // Disabling the mapping hides the alias at once.
    auto mappings = store_->ListMappings();
    ASSERT_TRUE(mappings && mappings->size() == 1);
    ASSERT_EQ(Call("PUT", "/api/ModelProviderMapping/" + std::to_string((*mappings)[0].id),
                   R"({"isEnabled":false})")
                  .status,
              200);
    EXPECT_FALSE(config_->Get()
                     ->Resolve(**config_->Get()->Authenticate(key, clock_.NowUnixMs()), "gpt-4o")
                     .has_value());
}

TEST_F(AdminTest, CostCrudRoundTripWithExactMoney) {
    int64_t provider = CreateProvider(R"({"providerType":1,"providerName":"OpenAI"})");
    int64_t m1 = CreateMapping(provider, "a");
    int64_t m2 = CreateMapping(provider, "b");
    auto created = Call("POST", "/api/ModelCosts",
                        R"({"costName":"gpt-4o pricing","modelProviderMappingIds":[)" +
                            std::to_string(m1) + "," + std::to_string(m2) +
                            R"(],"inputCostPerMillionTokens":2.5,)"
                            R"("outputCostPerMillionTokens":"10.000001",)"
                            R"("embeddingCostPerMillionTokens":0.1,"imageCostPerImage":0.04,)"
                            R"("videoCostPerSecond":0.3,"priority":2,"description":"list price"})");
    ASSERT_EQ(created.status, 201) << created.body;
    const int64_t id = created.obj().at("id").as_int64();
    EXPECT_EQ(created.obj().at("costName").as_string(), "gpt-4o pricing");
    EXPECT_EQ(created.obj().at("priority").as_int64(), 2);
    EXPECT_EQ(created.obj().at("description").as_string(), "list price");
    EXPECT_NE(created.body.find(R"("modelProviderMappingIds":[)" + std::to_string(m1) + "," +
                                std::to_string(m2) + "]"),
              std::string::npos)
        << created.body;
    EXPECT_NE(created.body.find(R"("inputCostPerMillionTokens":2.5,)"
                                R"("outputCostPerMillionTokens":10.000001,)"
                                R"("embeddingCostPerMillionTokens":0.1,"imageCostPerImage":0.04,)"
                                R"("videoCostPerSecond":0.3,)"),
              std::string::npos)
        << created.body;
    auto stored = store_->GetCost(id);
    ASSERT_TRUE(stored && *stored);
    EXPECT_EQ((*stored)->input_per_million, 2'500000);
    EXPECT_EQ((*stored)->output_per_million, 10'000001);

    // The snapshot prices the mapping.
    const auto* deployments = config_->Get()->Deployments("a");
    ASSERT_NE(deployments, nullptr);
    ASSERT_TRUE(deployments->front().cost.has_value());
    EXPECT_EQ(deployments->front().cost->id, id);

    const std::string path = "/api/ModelCosts/" + std::to_string(id);
    EXPECT_EQ(Call("GET", path).body, created.body);
    EXPECT_EQ(Call("GET", "/api/ModelCosts").arr().size(), 1u);

    auto updated = Call("PUT", path,
                        R"({"modelProviderMappingIds":")" + std::to_string(m2) +
                            R"(","inputCostPerMillionTokens":"3","description":null})");
    ASSERT_EQ(updated.status, 200) << updated.body;
    ASSERT_EQ(updated.obj().at("modelProviderMappingIds").as_array().size(), 1u);
    EXPECT_EQ(updated.obj().at("modelProviderMappingIds").as_array()[0].as_int64(), m2);
    EXPECT_NE(updated.body.find(R"("inputCostPerMillionTokens":3,)"), std::string::npos);
    EXPECT_NE(updated.body.find(R"("outputCostPerMillionTokens":10.000001,)"), std::string::npos);
    EXPECT_TRUE(updated.obj().at("description").is_null());
    EXPECT_FALSE(config_->Get()->Deployments("a")->front().cost.has_value());

    auto unlinked = Call("PUT", path, R"({"modelProviderMappingIds":null})");
    ASSERT_EQ(unlinked.status, 200);
    EXPECT_TRUE(unlinked.obj().at("modelProviderMappingIds").as_array().empty());

    EXPECT_EQ(Call("DELETE", path).status, 204);
    EXPECT_EQ(Call("GET", path).status, 404);
    EXPECT_EQ(Call("DELETE", path).status, 404);
}

TEST_F(AdminTest, CostValidation) {
    int64_t provider = CreateProvider(R"({"providerType":1,"providerName":"OpenAI"})");
    int64_t m = CreateMapping(provider, "a");
    struct Case {
        std::string body;
        const char* param;
    };
    const Case cases[] = {
        {R"({"inputCostPerMillionTokens":1})", "costName"},
        {R"({"costName":"c","modelProviderMappingIds":[999]})", "modelProviderMappingIds"},
        {R"({"costName":"c","modelProviderMappingIds":")" + std::to_string(m) + R"(,999"})",
         "modelProviderMappingIds"},
        {R"({"costName":"c","modelProviderMappingIds":["x"]})", "modelProviderMappingIds"},
        {R"({"costName":"c","modelProviderMappingIds":[0]})", "modelProviderMappingIds"},
        {R"({"costName":"c","inputCostPerMillionTokens":-1})", "inputCostPerMillionTokens"},
        {R"({"costName":"c","outputCostPerMillionTokens":"abc"})", "outputCostPerMillionTokens"},
        {R"({"costName":"c","embeddingCostPerMillionTokens":-0.5})",
         "embeddingCostPerMillionTokens"},
        {R"({"costName":"c","imageCostPerImage":[]})", "imageCostPerImage"},
        {R"({"costName":"c","videoCostPerSecond":"-2"})", "videoCostPerSecond"},
        {R"({"costName":"c","priority":1.5})", "priority"},
    };
    for (const auto& c : cases) {
        auto r = Call("POST", "/api/ModelCosts", c.body);
        EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
        EXPECT_EQ(r.ErrorParam(), c.param) << c.body;
    }
    auto costs = store_->ListCosts();
    ASSERT_TRUE(costs.has_value());
    EXPECT_TRUE(costs->empty());

    auto ok = Call("POST", "/api/ModelCosts", R"({"costName":"free"})");
    ASSERT_EQ(ok.status, 201) << ok.body;
    EXPECT_NE(ok.body.find(R"("inputCostPerMillionTokens":0,)"), std::string::npos);
    const std::string path = "/api/ModelCosts/" + std::to_string(ok.obj().at("id").as_int64());
    EXPECT_EQ(Call("PUT", path, R"({"modelProviderMappingIds":[999]})").ErrorParam(),
              "modelProviderMappingIds");
    EXPECT_EQ(Call("PUT", path, R"({"inputCostPerMillionTokens":null})").ErrorParam(),
              "inputCostPerMillionTokens");
}

}  // namespace
}  // namespace conduit::admin::testing
