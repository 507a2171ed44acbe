#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace conduit::loadgen {

/// A log-linear ("HDR-like") histogram of non-negative integer values (the load generator records
/// nanoseconds). Values below 2^kSubBits are exact; above, each power-of-two range is split into
/// 2^kSubBits linear buckets, so a reported value is within 1/2^(kSubBits+1) (< 0.4 %) of a
/// recorded one. Record() is a few instructions and never allocates; one instance per thread,
/// merged at the end. Not thread-safe.
class Histogram {
public:
    /// Linear sub-buckets per power of two: 2^7 = 128.
    static constexpr int kSubBits = 7;
    /// Values up to 2^kMaxBits - 1 are kept apart; larger ones land in the top bucket.
    static constexpr int kMaxBits = 44;

    Histogram();

    /// Adds one observation of `value`.
    void Record(uint64_t value) {
        counts_[IndexOf(value)] += 1;
        total_ += 1;
        sum_ += static_cast<double>(value);
        if (value > max_) {
            max_ = value;
        }
        if (value < min_) {
            min_ = value;
        }
    }

    /// Adds every observation of `other`.
    void Merge(const Histogram& other);

    /// The value at quantile `q` in [0, 1] (0 when empty): the midpoint of the bucket holding the
    /// ceil(q * count)-th smallest observation, clamped to [min, max].
    uint64_t Percentile(double q) const;

    uint64_t count() const { return total_; }
    uint64_t max() const { return total_ == 0 ? 0 : max_; }
    uint64_t min() const { return total_ == 0 ? 0 : min_; }
    /// The exact arithmetic mean (0 when empty).
    double Mean() const { return total_ == 0 ? 0.0 : sum_ / static_cast<double>(total_); }

    /// Bucket index of `value` (public for the self-test).
    static size_t IndexOf(uint64_t value);
    /// Smallest value that maps to bucket `index`.
    static uint64_t LowestOf(size_t index);
    /// Number of values that map to bucket `index`.
    static uint64_t WidthOf(size_t index);

private:
    std::vector<uint64_t> counts_;
    uint64_t total_ = 0;
    double sum_ = 0.0;
    uint64_t max_ = 0;
    uint64_t min_ = UINT64_MAX;
};

}  // namespace conduit::loadgen
