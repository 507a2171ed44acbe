#include "loadgen/histogram.hpp"

#include <algorithm>
#include <cmath>

namespace conduit::loadgen {

namespace {

constexpr uint64_t kSubCount = uint64_t{1} << Histogram::kSubBits;
// Buckets: kSubCount exact values, then kSubCount per power of two from 2^kSubBits up.
constexpr size_t kBucketCount =
    kSubCount + static_cast<size_t>(Histogram::kMaxBits - Histogram::kSubBits) * kSubCount;

}  // namespace

Histogram::Histogram() : counts_(kBucketCount, 0) {}

size_t Histogram::IndexOf(uint64_t value) {
    if (value < kSubCount) {
        return static_cast<size_t>(value);
    }
    const int top = 63 - __builtin_clzll(value);  // >= kSubBits
    if (top >= kMaxBits) {
        return kBucketCount - 1;
    }
    const int shift = top - kSubBits;
    const uint64_t sub = (value >> shift) - kSubCount;  // 0 .. kSubCount-1
    return static_cast<size_t>(kSubCount + static_cast<uint64_t>(shift) * kSubCount + sub);
}

uint64_t Histogram::LowestOf(size_t index) {
    if (index < kSubCount) {
        return index;
    }
    const uint64_t shift = (index - kSubCount) / kSubCount;
    const uint64_t sub = (index - kSubCount) % kSubCount;
    return (kSubCount + sub) << shift;
}

uint64_t Histogram::WidthOf(size_t index) {
    if (index < kSubCount) {
        return 1;
    }
    return uint64_t{1} << ((index - kSubCount) / kSubCount);
}

void Histogram::Merge(const Histogram& other) {
    for (size_t i = 0; i < counts_.size(); ++i) {
        counts_[i] += other.counts_[i];
    }
    total_ += other.total_;
    sum_ += other.sum_;
    max_ = std::max(max_, other.max_);
    min_ = std::min(min_, other.min_);
}

uint64_t Histogram::Percentile(double q) const {
    if (total_ == 0) {
        return 0;
    }
    q = std::clamp(q, 0.0, 1.0);
    auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total_)));
    rank = std::clamp<uint64_t>(rank, 1, total_);
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
        seen += counts_[i];
        if (seen >= rank) {
            const uint64_t mid = LowestOf(i) + (WidthOf(i) - 1) / 2;
            return std::clamp(mid, min(), max());
        }
    }
    return max();
}

}  // namespace conduit::loadgen
