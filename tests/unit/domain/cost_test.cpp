#include "domain/cost.hpp"

#include <gtest/gtest.h>

namespace conduit::domain {
namespace {

ModelCost Prices() {
    ModelCost c;
    c.input_per_million = 2'500'000;    // $2.50 / 1M
    c.output_per_million = 10'000'000;  // $10.00 / 1M
    c.embedding_per_million = 20'000;   // $0.02 / 1M
    c.image_per_image = 40'000;         // $0.04
    c.video_per_second = 100'000;       // $0.10 / s
    return c;
}

TEST(Cost, ChatIsInputPlusOutputPerMillionExactly) {
    auto c = Prices();
    UsageAmounts u{1000, 500, 0, 0};
    // 1000 × 2.5 / 1e6 = 0.0025; 500 × 10 / 1e6 = 0.005 → 7500 micros.
    EXPECT_EQ(ComputeCost(&c, RequestKind::kChat, u), 7500);
    EXPECT_EQ(ComputeCost(&c, RequestKind::kCompletion, u), 7500);
}

TEST(Cost, EmbeddingUsesEmbeddingPriceOrFallsBackToInput) {
    auto c = Prices();
    UsageAmounts u{1'000'000, 0, 0, 0};
    EXPECT_EQ(ComputeCost(&c, RequestKind::kEmbedding, u), 20'000);
    c.embedding_per_million = 0;
    EXPECT_EQ(ComputeCost(&c, RequestKind::kEmbedding, u), 2'500'000);
}

TEST(Cost, ImagesAndVideo) {
    auto c = Prices();
    EXPECT_EQ(ComputeCost(&c, RequestKind::kImage, {0, 0, 3, 0}), 120'000);
    EXPECT_EQ(ComputeCost(&c, RequestKind::kVideo, {0, 0, 0, 6.5}), 650'000);
}

TEST(Cost, NoCostConfiguredIsFree) {
    EXPECT_EQ(ComputeCost(nullptr, RequestKind::kChat, {1000, 1000, 0, 0}), 0);
}

TEST(Cost, RoundsEachComponentHalfUp) {
    ModelCost c;
    c.input_per_million = 150'000;  // $0.15 / 1M
    c.output_per_million = 600'000;
    // 10 × 0.15 = 1.5 µ → 2; 1 × 0.6 = 0.6 µ → 1.
    EXPECT_EQ(ComputeCost(&c, RequestKind::kChat, {10, 1, 0, 0}), 3);
}

}  // namespace
}  // namespace conduit::domain
