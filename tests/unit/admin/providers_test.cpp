#include "admin_fixture.hpp"

namespace conduit::admin::testing {
namespace {

constexpr std::string_view kSecret = "sk-live-abcdefghijklmnopqrstuvwxyz-9876";
const std::string kEllipsis = "\xE2\x80\xA6";

TEST_F(AdminTest, ProviderCrudRoundTrip) {
    auto created = Call("POST", "/api/ProviderCredentials",
                        R"({"providerType":5,"providerName":"Local vLLM",)"
                        R"("baseUrl":"http://127.0.0.1:8000/v1","isEnabled":false})");
    ASSERT_EQ(created.status, 201) << created.body;
    const auto& p = created.obj();
    const int64_t id = p.at("id").as_int64();
    EXPECT_EQ(p.at("providerType").as_int64(), 5);
    EXPECT_EQ(p.at("providerTypeName").as_string(), "openai-compatible");
    EXPECT_EQ(p.at("providerName").as_string(), "Local vLLM");
    EXPECT_EQ(p.at("baseUrl").as_string(), "http://127.0.0.1:8000/v1");
    EXPECT_FALSE(p.at("isEnabled").as_bool());
    EXPECT_EQ(p.at("keyCount").as_int64(), 0);
    EXPECT_EQ(p.at("createdAt").as_string(), "2026-01-01T00:00:00.000Z");

    const std::string path = "/api/ProviderCredentials/" + std::to_string(id);
    auto got = Call("GET", path);
    ASSERT_EQ(got.status, 200);
    EXPECT_EQ(got.body, created.body);
    EXPECT_EQ(Call("GET", "/api/ProviderCredentials").arr().size(), 1u);

    auto updated = Call("PUT", path, R"({"isEnabled":true,"providerName":"vLLM"})");
    ASSERT_EQ(updated.status, 200) << updated.body;
    EXPECT_TRUE(updated.obj().at("isEnabled").as_bool());
    EXPECT_EQ(updated.obj().at("providerName").as_string(), "vLLM");
    EXPECT_EQ(updated.obj().at("baseUrl").as_string(), "http://127.0.0.1:8000/v1");

    // Clearing the base URL of a type without a default is refused.
    EXPECT_EQ(Call("PUT", path, R"({"baseUrl":null})").ErrorParam(), "baseUrl");
    // Switching to a type with a default makes it optional.
    auto openai = Call("PUT", path, R"({"providerType":"openai","baseUrl":""})");
    ASSERT_EQ(openai.status, 200) << openai.body;
    EXPECT_EQ(openai.obj().at("providerType").as_int64(), 1);
    EXPECT_TRUE(openai.obj().at("baseUrl").is_null());

    EXPECT_EQ(Call("DELETE", path).status, 204);
    EXPECT_EQ(Call("GET", path).status, 404);
    EXPECT_EQ(Call("DELETE", path).status, 404);
}

TEST_F(AdminTest, ProviderTypeAcceptsNumbersAndNames) {
    struct Case {
        const char* type;
        int64_t number;
        const char* name;
    };
    for (const Case& c : {Case{"1", 1, "openai"}, Case{R"("openai")", 1, "openai"},
                          Case{R"("OpenAI")", 1, "openai"}, Case{R"("5")", 5, "openai-compatible"},
                          Case{R"("openai-compatible")", 5, "openai-compatible"},
                          Case{R"("anthropic")", 12, "anthropic"}, Case{"2", 2, "groq"}}) {
        auto r = Call(
            "POST", "/api/ProviderCredentials",
            std::string(R"({"providerName":"p","baseUrl":"https://x.test/v1","providerType":)") +
                c.type + "}");
        ASSERT_EQ(r.status, 201) << c.type << " " << r.body;
        EXPECT_EQ(r.obj().at("providerType").as_int64(), c.number) << c.type;
        EXPECT_EQ(r.obj().at("providerTypeName").as_string(), c.name) << c.type;
    }
}

TEST_F(AdminTest, ProviderValidation) {
    struct Case {
        const char* body;
        const char* param;
    };
    for (const Case& c : {
             Case{R"({"providerName":"p"})", "providerType"},
             Case{R"({"providerType":99,"providerName":"p"})", "providerType"},
             Case{R"({"providerType":"nope","providerName":"p"})", "providerType"},
             Case{R"({"providerType":true,"providerName":"p"})", "providerType"},
             Case{R"({"providerType":1})", "providerName"},
             Case{R"({"providerType":1,"providerName":""})", "providerName"},
             Case{R"({"providerType":5,"providerName":"p"})", "baseUrl"},
             Case{R"({"providerType":"openai-compatible","providerName":"p","baseUrl":""})",
                  "baseUrl"},
             Case{R"({"providerType":1,"providerName":"p","baseUrl":"ftp://x"})", "baseUrl"},
             Case{R"({"providerType":1,"providerName":"p","baseUrl":"http://"})", "baseUrl"},
             Case{R"({"providerType":1,"providerName":"p","baseUrl":"x.test/v1"})", "baseUrl"},
             Case{R"({"providerType":1,"providerName":"p","isEnabled":1})", "isEnabled"},
         }) {
        auto r = Call("POST", "/api/ProviderCredentials", c.body);
        EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
        EXPECT_EQ(r.ErrorParam(), c.param) << c.body;
    }
    auto providers = store_->ListProviders();
    ASSERT_TRUE(providers.has_value());
    EXPECT_TRUE(providers->empty());
    // A type with a default base URL needs none.
    auto ok = Call("POST", "/api/ProviderCredentials", R"({"providerType":1,"providerName":"p"})");
    EXPECT_EQ(ok.status, 201) << ok.body;
    EXPECT_TRUE(ok.obj().at("baseUrl").is_null());
}

TEST_F(AdminTest, ProviderApiKeyIsEncryptedAtRestAndMasked) {
    auto created = Call("POST", "/api/ProviderCredentials",
                        R"({"providerType":"openai","providerName":"OpenAI","apiKey":")" +
                            std::string(kSecret) + "\"}");
    ASSERT_EQ(created.status, 201) << created.body;
    EXPECT_EQ(created.body.find(kSecret), std::string::npos);
    EXPECT_EQ(created.obj().at("keyCount").as_int64(), 1);
    const int64_t id = created.obj().at("id").as_int64();

    auto keys = store_->ListProviderKeys(id);
    ASSERT_TRUE(keys.has_value());
    ASSERT_EQ(keys->size(), 1u);
    const auto& stored = (*keys)[0];
    EXPECT_TRUE(stored.is_primary);
    EXPECT_EQ(stored.api_key_sealed.find(kSecret), std::string::npos);
    EXPECT_EQ(stored.api_key_sealed.find("abcdefghijkl"), std::string::npos);
    auto opened = box_.Open(stored.api_key_sealed);
    ASSERT_TRUE(opened.has_value());
    EXPECT_EQ(*opened, kSecret);
    EXPECT_EQ(stored.key_hint, "9876");

    auto listed = Call("GET", "/api/ProviderCredentials/" + std::to_string(id) + "/keys");
    ASSERT_EQ(listed.status, 200);
    ASSERT_EQ(listed.arr().size(), 1u);
    EXPECT_EQ(listed.arr()[0].at("apiKey").as_string(), kEllipsis + "9876");
    EXPECT_TRUE(listed.arr()[0].at("isPrimary").as_bool());
    EXPECT_EQ(listed.body.find(kSecret), std::string::npos);
}

TEST_F(AdminTest, ProviderKeysCrudAndPrimary) {
    int64_t provider = CreateProvider(R"({"providerType":1,"providerName":"OpenAI"})");
    const std::string base = "/api/ProviderCredentials/" + std::to_string(provider) + "/keys";

    auto first = Call("POST", base,
                      R"({"apiKey":"sk-first-000000000000AAAA","keyName":"main",)"
                      R"("organization":"org-1","baseUrl":"https://eu.api.test/v1"})");
    ASSERT_EQ(first.status, 201) << first.body;
    const int64_t k1 = first.obj().at("id").as_int64();
    EXPECT_EQ(first.obj().at("providerId").as_int64(), provider);
    EXPECT_EQ(first.obj().at("keyName").as_string(), "main");
    EXPECT_EQ(first.obj().at("apiKey").as_string(), kEllipsis + "AAAA");
    EXPECT_EQ(first.obj().at("organization").as_string(), "org-1");
    EXPECT_EQ(first.obj().at("baseUrl").as_string(), "https://eu.api.test/v1");
    EXPECT_TRUE(first.obj().at("isPrimary").as_bool());  // a provider's first key
    EXPECT_TRUE(first.obj().at("isEnabled").as_bool());

    auto second = Call("POST", base, R"({"apiKey":"sk-second-00000000000BBBB"})");
    ASSERT_EQ(second.status, 201) << second.body;
    const int64_t k2 = second.obj().at("id").as_int64();
    EXPECT_FALSE(second.obj().at("isPrimary").as_bool());
    EXPECT_TRUE(second.obj().at("keyName").is_null());

    auto promoted = Call("POST", base + "/" + std::to_string(k2) + "/set-primary");
    ASSERT_EQ(promoted.status, 200) << promoted.body;
    EXPECT_TRUE(promoted.obj().at("isPrimary").as_bool());
    auto old = Call("GET", base + "/" + std::to_string(k1));
    ASSERT_EQ(old.status, 200);
    EXPECT_FALSE(old.obj().at("isPrimary").as_bool());
    EXPECT_EQ(Call("GET", "/api/ProviderCredentials/" + std::to_string(provider))
                  .obj()
                  .at("keyCount")
                  .as_int64(),
              2);

    // The snapshot uses the primary key.
    int64_t mapping = CreateMapping(provider, "gpt-4o");
    (void)mapping;
    auto snap = config_->Get();
    const auto* deployments = snap->Deployments("gpt-4o");
    ASSERT_NE(deployments, nullptr);
    ASSERT_EQ(deployments->size(), 1u);
    EXPECT_EQ(deployments->front().api_key, "sk-second-00000000000BBBB");

    // Replacing a key's secret re-seals it; other fields stay.
    auto rotated = Call("PUT", base + "/" + std::to_string(k2),
                        R"({"apiKey":"sk-rotated-0000000000CCCC","organization":null})");
    ASSERT_EQ(rotated.status, 200) << rotated.body;
    EXPECT_EQ(rotated.obj().at("apiKey").as_string(), kEllipsis + "CCCC");
    EXPECT_TRUE(rotated.obj().at("isPrimary").as_bool());
    EXPECT_TRUE(rotated.obj().at("organization").is_null());
    EXPECT_EQ(config_->Get()->Deployments("gpt-4o")->front().api_key, "sk-rotated-0000000000CCCC");
    auto stored = store_->GetProviderKey(k2);
    ASSERT_TRUE(stored && *stored);
    EXPECT_EQ(box_.Open((*stored)->api_key_sealed), "sk-rotated-0000000000CCCC");

    // Disabling the primary key falls back to the other one immediately.
    ASSERT_EQ(Call("PUT", base + "/" + std::to_string(k2), R"({"isEnabled":false})").status, 200);
    EXPECT_EQ(config_->Get()->Deployments("gpt-4o")->front().api_key, "sk-first-000000000000AAAA");

    EXPECT_EQ(Call("DELETE", base + "/" + std::to_string(k1)).status, 204);
    EXPECT_EQ(Call("GET", base + "/" + std::to_string(k1)).status, 404);
    EXPECT_EQ(Call("GET", base).arr().size(), 1u);
}

TEST_F(AdminTest, ProviderKeyValidationAndOwnership) {
    int64_t a = CreateProvider(R"({"providerType":1,"providerName":"a"})");
    int64_t b = CreateProvider(R"({"providerType":1,"providerName":"b"})");
    const std::string base_a = "/api/ProviderCredentials/" + std::to_string(a) + "/keys";
    const std::string base_b = "/api/ProviderCredentials/" + std::to_string(b) + "/keys";

    EXPECT_EQ(Call("POST", base_a, R"({})").ErrorParam(), "apiKey");
    EXPECT_EQ(Call("POST", base_a, R"({"apiKey":""})").ErrorParam(), "apiKey");
    EXPECT_EQ(Call("POST", base_a, R"({"apiKey":"k","baseUrl":"nope"})").ErrorParam(), "baseUrl");
    EXPECT_EQ(Call("POST", base_a, R"({"apiKey":"k","isPrimary":"yes"})").ErrorParam(),
              "isPrimary");
    EXPECT_EQ(Call("POST", "/api/ProviderCredentials/999/keys", R"({"apiKey":"k"})").status, 404);
    EXPECT_EQ(Call("GET", "/api/ProviderCredentials/999/keys").status, 404);

    auto key = Call("POST", base_a, R"({"apiKey":"short"})");
    ASSERT_EQ(key.status, 201);
    EXPECT_EQ(key.obj().at("apiKey").as_string(), kEllipsis);  // too short to hint at
    const std::string kid = std::to_string(key.obj().at("id").as_int64());

    // A key is only reachable under its own provider.
    EXPECT_EQ(Call("GET", base_b + "/" + kid).status, 404);
    EXPECT_EQ(Call("PUT", base_b + "/" + kid, R"({"keyName":"x"})").status, 404);
    EXPECT_EQ(Call("DELETE", base_b + "/" + kid).status, 404);
    EXPECT_EQ(Call("POST", base_b + "/" + kid + "/set-primary").status, 404);
    EXPECT_EQ(Call("GET", base_a + "/abc").status, 404);
    EXPECT_EQ(Call("PUT", base_a + "/" + kid, R"({"apiKey":null})").ErrorParam(), "apiKey");
    EXPECT_EQ(Call("GET", base_a + "/" + kid).status, 200);
}

TEST_F(AdminTest, ProviderUpdateWithApiKeyReplacesThePrimaryKey) {
    int64_t id = CreateProvider(R"({"providerType":1,"providerName":"p"})");
    const std::string path = "/api/ProviderCredentials/" + std::to_string(id);
    auto added = Call("PUT", path, R"({"apiKey":"sk-added-00000000000DDDD"})");
    ASSERT_EQ(added.status, 200) << added.body;
    EXPECT_EQ(added.obj().at("keyCount").as_int64(), 1);
    auto replaced = Call("PUT", path, R"({"apiKey":"sk-replaced-000000000EEEE"})");
    ASSERT_EQ(replaced.status, 200);
    EXPECT_EQ(replaced.obj().at("keyCount").as_int64(), 1);
    auto keys = store_->ListProviderKeys(id);
    ASSERT_TRUE(keys && keys->size() == 1);
    EXPECT_TRUE((*keys)[0].is_primary);
    EXPECT_EQ(box_.Open((*keys)[0].api_key_sealed), "sk-replaced-000000000EEEE");
}

TEST_F(AdminTest, DeletingAProviderWithMappingsIsAConflict) {
    int64_t provider = CreateProvider(
        R"({"providerType":1,"providerName":"p","apiKey":"sk-0000000000000000FFFF"})");
    int64_t mapping = CreateMapping(provider, "m");
    const std::string path = "/api/ProviderCredentials/" + std::to_string(provider);
    auto r = Call("DELETE", path);
    EXPECT_EQ(r.status, 409);
    EXPECT_EQ(r.ErrorCode(), "conflict");
    EXPECT_EQ(Call("GET", path).status, 200);

    ASSERT_EQ(Call("DELETE", "/api/ModelProviderMapping/" + std::to_string(mapping)).status, 204);
    EXPECT_EQ(Call("DELETE", path).status, 204);
    // Its keys went with it.
    auto keys = store_->ListProviderKeys(provider);
    ASSERT_TRUE(keys.has_value());
    EXPECT_TRUE(keys->empty());
}

}  // namespace
}  // namespace conduit::admin::testing
