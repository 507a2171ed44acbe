#include "bus/work_queue.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace conduit::bus {
namespace {

TEST(PartitionOfTest, IsFnv1a64ModuloN) {
    // FNV-1a 64 of "" is the offset basis 14695981039346656037; of "a" it is 0xaf63dc4c8601ec8c.
    EXPECT_EQ(PartitionOf("", 30), static_cast<int>(14695981039346656037ULL % 30));
    EXPECT_EQ(PartitionOf("a", 30), static_cast<int>(0xaf63dc4c8601ec8cULL % 30));
    EXPECT_EQ(PartitionOf("a", 7), static_cast<int>(0xaf63dc4c8601ec8cULL % 7));
}

TEST(PartitionOfTest, StableAndInRange) {
    for (int n : {1, 2, 30, 64}) {
        for (int i = 0; i < 1000; ++i) {
            std::string key = "condt_" + std::to_string(i);
            int p = PartitionOf(key, n);
            EXPECT_GE(p, 0);
            EXPECT_LT(p, n);
            EXPECT_EQ(p, PartitionOf(key, n));
        }
    }
}

TEST(PartitionOfTest, DegenerateCountsMapToZero) {
    EXPECT_EQ(PartitionOf("anything", 1), 0);
    EXPECT_EQ(PartitionOf("anything", 0), 0);
    EXPECT_EQ(PartitionOf("anything", -3), 0);
}

TEST(PartitionOfTest, SpreadsKeys) {
    std::vector<int> counts(30, 0);
    for (int i = 0; i < 30000; ++i) {
        ++counts[PartitionOf("vk-" + std::to_string(i), 30)];
    }
    for (int c : counts) {
        EXPECT_GT(c, 700);  // 1000 expected per partition
        EXPECT_LT(c, 1300);
    }
}

}  // namespace
}  // namespace conduit::bus
