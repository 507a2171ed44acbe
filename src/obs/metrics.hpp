#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace conduit::obs {

/// Default histogram bounds for durations in seconds: 50 µs to 60 s.
inline constexpr std::array<double, 19> kDefaultDurationBuckets = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,     0.25,   0.5,     1,      2.5,   5,      10,    30,   60};

/// The Prometheus metric type of a family.
enum class MetricType { kCounter, kGauge, kHistogram };

/// A monotonically increasing integer counter. Inc/Value are lock-free and thread-safe.
class Counter {
public:
    /// Adds `n`. Any thread; relaxed atomic.
    void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
    /// Current value. Any thread.
    uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> value_{0};
};

/// A value that goes up and down. All operations are lock-free and thread-safe.
class Gauge {
public:
    /// Replaces the value. Any thread.
    void Set(double v) { value_.store(v, std::memory_order_relaxed); }
    /// Adds `d` (may be negative). Any thread.
    void Add(double d) { value_.fetch_add(d, std::memory_order_relaxed); }
    /// Adds one. Any thread.
    void Inc() { Add(1.0); }
    /// Subtracts one. Any thread.
    void Dec() { Add(-1.0); }
    /// Current value. Any thread.
    double Value() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<double> value_{0.0};
};

/// Histogram bucket upper bounds: finite and strictly increasing; the +Inf bucket is implicit.
/// Built from a braced list (`{0.1, 1, 10}`), a vector, or kDefaultDurationBuckets.
struct Buckets {
    Buckets(std::initializer_list<double> b) : bounds(b) {}
    Buckets(std::vector<double> b) : bounds(std::move(b)) {}
    template <std::size_t N>
    Buckets(const std::array<double, N>& b) : bounds(b.begin(), b.end()) {}

    std::vector<double> bounds;
};

/// A histogram with fixed bucket bounds. Observe is lock-free and thread-safe; reads may see an
/// observation in its bucket slightly before it shows in the sum.
class Histogram {
public:
    /// `bounds` must be sorted, finite and outlive the histogram (families own them).
    explicit Histogram(std::span<const double> bounds);

    /// Records one value. Any thread. NaN is counted in the +Inf bucket.
    void Observe(double v);
    /// Number of observations. Any thread.
    uint64_t Count() const;
    /// Sum of the observed values. Any thread.
    double Sum() const { return sum_.load(std::memory_order_relaxed); }
    /// Observations in bucket i alone (Bounds()[i-1] < v <= Bounds()[i]); i == Bounds().size() is
    /// the +Inf bucket.
    uint64_t BucketCount(std::size_t i) const;
    /// Cumulative count of observations <= Bounds()[i]; i == Bounds().size() is the +Inf bucket.
    uint64_t CumulativeCount(std::size_t i) const;
    /// Estimates the q-quantile (0 <= q <= 1) by linear interpolation inside the bucket that holds
    /// it, as Prometheus' histogram_quantile does. NaN when empty; the highest finite bound when
    /// the quantile falls in the +Inf bucket.
    double Quantile(double q) const;
    /// The bucket upper bounds (without +Inf).
    std::span<const double> Bounds() const { return bounds_; }

private:
    std::span<const double> bounds_;
    std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, not cumulative; +Inf last
    std::atomic<double> sum_{0.0};
};

namespace detail {

/// Common part of every metric family: name, help, type, label names and rendering.
class FamilyBase {
public:
    FamilyBase(std::string name,
               std::string help,
               MetricType type,
               std::vector<std::string> label_names);
    virtual ~FamilyBase() = default;
    FamilyBase(const FamilyBase&) = delete;
    FamilyBase& operator=(const FamilyBase&) = delete;

    /// Appends the HELP, TYPE and series lines of this family. Any thread.
    virtual void Render(std::string& out) const = 0;

    /// Metric name, e.g. "conduit_http_requests_total".
    const std::string& Name() const { return name_; }
    /// HELP text.
    const std::string& Help() const { return help_; }
    /// TYPE of the family.
    MetricType Type() const { return type_; }
    /// Label names, in the order label values are given to With().
    const std::vector<std::string>& LabelNames() const { return label_names_; }

protected:
    void RenderHeader(std::string& out) const;

private:
    std::string name_;
    std::string help_;
    MetricType type_;
    std::vector<std::string> label_names_;
};

}  // namespace detail

/// A named metric with label dimensions; one child metric (series) per label-value tuple.
/// With() takes a mutex and may allocate: call it once and keep the reference, which stays valid
/// for the registry's lifetime. Operations on the child are lock-free.
template <class T>
class Family final : public detail::FamilyBase {
public:
    Family(std::string name,
           std::string help,
           MetricType type,
           std::vector<std::string> label_names,
           std::vector<double> bounds);

    /// The series for these label values (one per label name, in order); created on first use.
    /// Aborts when the number of values differs from the number of label names. Any thread.
    T& With(std::initializer_list<std::string_view> values);
    /// Same, for values held in strings.
    T& With(std::span<const std::string> values);

    /// Appends the family's exposition. Any thread.
    void Render(std::string& out) const override;
    /// Histogram bounds (empty for counters and gauges).
    const std::vector<double>& Bounds() const { return bounds_; }

private:
    struct Series {
        template <class... Args>
        explicit Series(std::vector<std::string> v, Args&&... args)
            : values(std::move(v)), metric(std::forward<Args>(args)...) {}
        std::vector<std::string> values;
        T metric;
    };
    T& Find(std::span<const std::string_view> values);

    std::vector<double> bounds_;
    uint64_t uid_;  // process-unique id: keys the per-thread lookup cache (addresses are reused)
    mutable std::mutex mu_;
    std::vector<std::unique_ptr<Series>> series_;  // creation order
    std::unordered_map<std::string, T*> index_;    // key: values joined by '\xff'
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

/// A set of metric families rendered together in the Prometheus text format 0.0.4. Registration
/// is thread-safe; registering a name again returns the existing family when the type, labels
/// (and buckets) match, and aborts otherwise (a programming error). Families live as long as the
/// registry. Tests construct their own; production uses Global().
class Registry {
public:
    Registry();
    ~Registry();
    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    /// The process-wide registry served on /metrics.
    static Registry& Global();

    /// A counter family with the given label names.
    CounterFamily& Counter(std::string name,
                           std::string help,
                           std::vector<std::string> label_names);
    /// A counter without labels.
    obs::Counter& Counter(std::string name, std::string help);

    /// A gauge family with the given label names.
    GaugeFamily& Gauge(std::string name, std::string help, std::vector<std::string> label_names);
    /// A gauge without labels.
    obs::Gauge& Gauge(std::string name, std::string help);

    /// A histogram family with the given label names and bucket bounds.
    HistogramFamily& Histogram(std::string name,
                               std::string help,
                               std::vector<std::string> label_names,
                               Buckets buckets = kDefaultDurationBuckets);
    /// A histogram without labels.
    obs::Histogram& Histogram(std::string name,
                              std::string help,
                              Buckets buckets = kDefaultDurationBuckets);

    /// A gauge whose value is `fn()` at scrape time (fn runs on the scraping thread, without any
    /// registry lock held). Registering the name again replaces the callback.
    void AddCallbackGauge(std::string name, std::string help, std::function<double()> fn);
    /// Same, exposed with TYPE counter (for totals kept elsewhere, e.g. CPU seconds).
    void AddCallbackCounter(std::string name, std::string help, std::function<double()> fn);

    /// The whole exposition: families in registration order, series in creation order. Any thread.
    std::string Render() const;

private:
    template <class T>
    Family<T>& GetOrAdd(std::string name,
                        std::string help,
                        MetricType type,
                        std::vector<std::string> label_names,
                        std::vector<double> bounds);
    void AddCallback(std::string name,
                     std::string help,
                     MetricType type,
                     std::function<double()> fn);

    mutable std::mutex mu_;
    std::vector<std::unique_ptr<detail::FamilyBase>> families_;
    std::unordered_map<std::string, detail::FamilyBase*> by_name_;
};

/// Formats a sample value the way Prometheus parses it: integers without exponent, shortest
/// round-trip form otherwise, "+Inf", "-Inf", "NaN".
std::string FormatMetricValue(double v);

}  // namespace conduit::obs
