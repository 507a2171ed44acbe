// The signing keys cache of SecretService in the cache statistics (region webhook_secrets).
#include "obs/cache_stats.hpp"
#include "webhook_fixture.hpp"

#include <gtest/gtest.h>

namespace conduit::webhooks::testing {
namespace {

TEST_F(WebhookTest, SecretCacheOperationsAreCounted) {
    RotateSecret();
    auto& stats = obs::CacheStats::Global().Region(obs::CacheRegion::kWebhookSecrets);
    const auto before = stats.Snapshot();

    EXPECT_FALSE(secrets_->Cached(key_id_));         // miss: not loaded yet
    ASSERT_TRUE(secrets_->LoadOnExecutor(key_id_));  // set
    EXPECT_TRUE(secrets_->Cached(key_id_));          // hit
    secrets_->Invalidate(key_id_);                   // remove
    secrets_->Invalidate(key_id_);                   // nothing left to remove
    ASSERT_TRUE(secrets_->LoadOnExecutor(key_id_));  // set
    clock_.Advance(options_.secret_cache_ttl);
    EXPECT_FALSE(secrets_->Cached(key_id_));  // miss + eviction (expired)
    EXPECT_FALSE(secrets_->Cached(key_id_));  // miss (the expired entry is gone: not evicted twice)

    const auto after = stats.Snapshot();
    EXPECT_EQ(after.counts.hits - before.counts.hits, 1u);
    EXPECT_EQ(after.counts.misses - before.counts.misses, 3u);
    EXPECT_EQ(after.counts.sets - before.counts.sets, 2u);
    EXPECT_EQ(after.counts.removes - before.counts.removes, 1u);
    EXPECT_EQ(after.counts.evictions - before.counts.evictions, 1u);
    EXPECT_EQ(after.counts.errors - before.counts.errors, 0u);
    EXPECT_EQ(after.latency.Count() - before.latency.Count(), 4u);
}

}  // namespace
}  // namespace conduit::webhooks::testing
