#include "domain/snapshot.hpp"

#include "obs/cache_stats.hpp"

#include <gtest/gtest.h>

namespace conduit::domain {
namespace {

class SnapshotTest : public ::testing::Test {
protected:
    SnapshotTest() : box_(core::SecretBox::DeriveKey("test")) {}

    ConfigData Data() {
        ConfigData d;
        d.groups.push_back(VirtualKeyGroup{.id = 1, .group_name = "g", .balance = 5'000'000});
        VirtualKey k;
        k.id = 10;
        k.key_name = "k";
        k.key_hash = HashVirtualKey(key_);
        k.group_id = 1;
        k.allowed_models = "gpt-4*,embed";
        d.keys.push_back(k);
        VirtualKey disabled = k;
        disabled.id = 11;
        disabled.key_hash = HashVirtualKey(disabled_key_);
        disabled.is_enabled = false;
        d.keys.push_back(disabled);
        VirtualKey expired = k;
        expired.id = 12;
        expired.key_hash = HashVirtualKey(expired_key_);
        expired.expires_at_ms = 1000;
        d.keys.push_back(expired);

        d.providers.push_back(Provider{.id = 1,
                                       .type = ProviderType::kOpenAICompatible,
                                       .name = "local",
                                       .base_url = "http://127.0.0.1:9/v1/"});
        d.providers.push_back(Provider{.id = 2, .type = ProviderType::kOpenAI, .name = "openai"});
        d.providers.push_back(
            Provider{.id = 3, .type = ProviderType::kOpenAI, .name = "off", .is_enabled = false});
        ProviderKey pk1{.id = 1, .provider_id = 1, .api_key_sealed = box_.Seal("sk-secondary")};
        ProviderKey pk2{.id = 2,
                        .provider_id = 1,
                        .api_key_sealed = box_.Seal("sk-primary"),
                        .is_primary = true};
        ProviderKey pk3{.id = 3, .provider_id = 2, .api_key_sealed = box_.Seal("sk-openai")};
        d.provider_keys = {pk1, pk2, pk3};

        d.mappings.push_back(ModelMapping{.id = 1,
                                          .model_alias = "gpt-4o",
                                          .provider_model_id = "local-model",
                                          .provider_id = 1,
                                          .priority = 0});
        d.mappings.push_back(ModelMapping{.id = 2,
                                          .model_alias = "GPT-4o",
                                          .provider_model_id = "gpt-4o-2024",
                                          .provider_id = 2,
                                          .priority = 5});
        d.mappings.push_back(ModelMapping{
            .id = 3, .model_alias = "gpt-4-off", .provider_model_id = "x", .provider_id = 3});
        d.mappings.push_back(ModelMapping{
            .id = 4, .model_alias = "other", .provider_model_id = "y", .provider_id = 1});
        d.mappings.push_back(ModelMapping{.id = 5,
                                          .model_alias = "gpt-4-disabled",
                                          .provider_model_id = "z",
                                          .provider_id = 1,
                                          .is_enabled = false});
        ModelCost low{.id = 1, .cost_name = "low", .mapping_ids = {2}, .input_per_million = 1};
        ModelCost high{.id = 2,
                       .cost_name = "high",
                       .mapping_ids = {2},
                       .input_per_million = 2,
                       .priority = 3};
        d.costs = {low, high};
        return d;
    }

    core::SecretBox box_;
    std::string key_ = "condt_" + std::string(43, 'a');
    std::string disabled_key_ = "condt_" + std::string(43, 'b');
    std::string expired_key_ = "condt_" + std::string(43, 'c');
};

TEST_F(SnapshotTest, AuthenticatesOnlyKnownEnabledUnexpiredKeys) {
    auto s = Snapshot::Build(Data(), box_, 1);
    auto ok = s->Authenticate(key_, 2000);
    ASSERT_TRUE(ok);
    EXPECT_EQ((*ok)->key.id, 10);
    for (const auto& bad :
         {disabled_key_, expired_key_, std::string("condt_unknown"), std::string("")}) {
        auto r = s->Authenticate(bad, 2000);
        ASSERT_FALSE(r) << bad;
        EXPECT_EQ(r.error().code, core::ErrorCode::kUnauthorized);
    }
}

TEST_F(SnapshotTest, KeyLookupsAreCountedInTheCacheStatistics) {
    auto& stats = obs::CacheStats::Global().Region(obs::CacheRegion::kVirtualKeys);
    auto s = Snapshot::Build(Data(), box_, 1);
    s->Authenticate(key_, 0);  // this thread's memo now belongs to `s` (earlier tests' dropped)
    const auto before = stats.Snapshot();
    ASSERT_TRUE(s->Authenticate(key_, 0));              // memo hit
    ASSERT_FALSE(s->Authenticate("condt_unknown", 0));  // miss (hashed, not found)
    ASSERT_FALSE(s->Authenticate(disabled_key_, 0));    // miss, memoised
    ASSERT_FALSE(s->Authenticate(disabled_key_, 0));    // hit (refused after the lookup)
    auto s2 = Snapshot::Build(Data(), box_, 2);
    ASSERT_TRUE(s2->Authenticate(key_, 0));  // a new configuration: the memo's 2 entries go
    const auto after = stats.Snapshot();
    EXPECT_EQ(after.counts.hits - before.counts.hits, 2u);
    EXPECT_EQ(after.counts.misses - before.counts.misses, 3u);
    EXPECT_EQ(after.counts.sets - before.counts.sets, 2u);
    EXPECT_EQ(after.counts.removes - before.counts.removes, 2u);
    EXPECT_EQ(after.latency.Count() - before.latency.Count(), 5u);
}

TEST_F(SnapshotTest, ResolvesByPriorityCaseInsensitivelyWithPrimaryKeyAndCost) {
    auto s = Snapshot::Build(Data(), box_, 1);
    auto key = *s->Authenticate(key_, 0);
    auto d = s->Resolve(*key, "gpt-4O");
    ASSERT_TRUE(d);
    EXPECT_EQ((*d)->mapping.id, 2);  // priority 5 beats 0
    EXPECT_EQ((*d)->base_url, "https://api.openai.com/v1");
    EXPECT_EQ((*d)->api_key, "sk-openai");
    ASSERT_TRUE((*d)->cost.has_value());
    EXPECT_EQ((*d)->cost->cost_name, "high");
    const auto* all = s->Deployments("gpt-4o");
    ASSERT_NE(all, nullptr);
    ASSERT_EQ(all->size(), 2u);
    EXPECT_EQ((*all)[1].api_key, "sk-primary");  // primary key beats the other enabled key
    EXPECT_EQ((*all)[1].base_url, "http://127.0.0.1:9/v1");  // trailing slash removed
}

TEST_F(SnapshotTest, NotAllowedIs403UnknownIs404) {
    auto s = Snapshot::Build(Data(), box_, 1);
    auto key = *s->Authenticate(key_, 0);
    auto not_allowed = s->Resolve(*key, "other");
    ASSERT_FALSE(not_allowed);
    EXPECT_EQ(not_allowed.error().code, core::ErrorCode::kModelNotAllowed);
    EXPECT_EQ(not_allowed.error().param, "model");
    for (const char* alias : {"gpt-4-unknown", "gpt-4-off", "gpt-4-disabled"}) {
        auto r = s->Resolve(*key, alias);
        ASSERT_FALSE(r) << alias;
        EXPECT_EQ(r.error().code, core::ErrorCode::kModelNotFound) << alias;
    }
}

TEST_F(SnapshotTest, ModelsListedAreOnlyThoseTheKeyMayUse) {
    auto s = Snapshot::Build(Data(), box_, 1);
    auto key = *s->Authenticate(key_, 0);
    auto models = s->ModelsFor(*key);
    ASSERT_EQ(models.size(), 1u);
    EXPECT_EQ(models[0].id, "GPT-4o");  // alias as written by the higher-priority mapping
    EXPECT_EQ(models[0].owned_by, "openai");
}

TEST_F(SnapshotTest, UndecryptableKeysAreSkippedWithAWarning) {
    auto data = Data();
    core::SecretBox other(core::SecretBox::DeriveKey("other"));
    data.provider_keys[2].api_key_sealed = other.Seal("sk-openai");
    std::vector<std::string> warnings;
    auto s = Snapshot::Build(data, box_, 1, &warnings);
    EXPECT_FALSE(warnings.empty());
    auto key = *s->Authenticate(key_, 0);
    auto d = s->Resolve(*key, "gpt-4o");
    ASSERT_TRUE(d);
    EXPECT_EQ((*d)->mapping.id, 1);  // the openai deployment is unusable
}

TEST(ProviderTypes, ParseNumbersAndNames) {
    EXPECT_EQ(ParseProviderType("1"), ProviderType::kOpenAI);
    EXPECT_EQ(ParseProviderType("5"), ProviderType::kOpenAICompatible);
    EXPECT_EQ(ParseProviderType("openai-compatible"), ProviderType::kOpenAICompatible);
    EXPECT_EQ(ParseProviderType("OpenAICompatible"), ProviderType::kOpenAICompatible);
    EXPECT_EQ(ParseProviderType("Anthropic"), ProviderType::kAnthropic);
    EXPECT_FALSE(ParseProviderType("99"));
    EXPECT_FALSE(ParseProviderType("nope"));
    EXPECT_EQ(ProviderTypeName(ProviderType::kOpenAI), "openai");
}

}  // namespace
}  // namespace conduit::domain
