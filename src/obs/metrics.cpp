#include "obs/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <type_traits>

namespace conduit::obs {

namespace {

// Registration mistakes are programming errors found at start-up; there is no caller that could
// handle them, so they stop the process with a message.
[[noreturn]] void Die(std::string_view what, std::string_view name) {
    std::fprintf(stderr, "conduit::obs: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
                 static_cast<int>(name.size()), name.data());
    std::abort();
}

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsValidMetricName(std::string_view s) {
    if (s.empty() || !(IsAlpha(s[0]) || s[0] == ':')) {
        return false;
    }
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return IsAlpha(c) || IsDigit(c) || c == ':'; });
}

bool IsValidLabelName(std::string_view s) {
    if (s.empty() || !IsAlpha(s[0]) || s.starts_with("__")) {
        return false;
    }
    return std::all_of(s.begin(), s.end(), [](char c) { return IsAlpha(c) || IsDigit(c); });
}

std::string_view TypeName(MetricType t) {
    switch (t) {
        case MetricType::kCounter:
            return "counter";
        case MetricType::kGauge:
            return "gauge";
        case MetricType::kHistogram:
            return "histogram";
    }
    return "untyped";
}

void AppendUint(std::string& out, uint64_t v) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, end);
}

void AppendValue(std::string& out, double v) {
    if (std::isnan(v)) {
        out += "NaN";
    } else if (std::isinf(v)) {
        out += v > 0 ? "+Inf" : "-Inf";
    } else if (v == std::trunc(v) && std::fabs(v) < 1e15) {
        char buf[24];
        auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), static_cast<int64_t>(v));
        out.append(buf, end);
    } else {
        char buf[32];
        auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
        out.append(buf, end);
    }
}

void AppendLabelValue(std::string& out, std::string_view v) {
    for (char c : v) {
        switch (c) {
            case '\\':
                out += "\\\\";
                break;
            case '"':
                out += "\\\"";
                break;
            case '\n':
                out += "\\n";
                break;
            default:
                out.push_back(c);
        }
    }
}

// Appends `name{a="x",b="y"[,le="..."]} ` (or `name ` without labels); the caller adds the value.
void AppendSeriesStart(std::string& out,
                       std::string_view name,
                       std::string_view suffix,
                       const std::vector<std::string>& label_names,
                       const std::vector<std::string>& values,
                       std::string_view le = {}) {
    out += name;
    out += suffix;
    if (!label_names.empty() || !le.empty()) {
        out.push_back('{');
        for (std::size_t i = 0; i < label_names.size(); ++i) {
            if (i > 0) {
                out.push_back(',');
            }
            out += label_names[i];
            out += "=\"";
            AppendLabelValue(out, values[i]);
            out.push_back('"');
        }
        if (!le.empty()) {
            out += label_names.empty() ? "le=\"" : ",le=\"";
            out += le;
            out.push_back('"');
        }
        out.push_back('}');
    }
    out.push_back(' ');
}

// A gauge or counter whose value is computed at scrape time.
class CallbackFamily final : public detail::FamilyBase {
public:
    CallbackFamily(std::string name, std::string help, MetricType type, std::function<double()> fn)
        : FamilyBase(std::move(name), std::move(help), type, {}), fn_(std::move(fn)) {}

    void Set(std::function<double()> fn) {
        std::lock_guard lock(mu_);
        fn_ = std::move(fn);
    }

    void Render(std::string& out) const override {
        std::function<double()> fn;
        {
            std::lock_guard lock(mu_);
            fn = fn_;
        }
        RenderHeader(out);
        AppendSeriesStart(out, Name(), {}, {}, {});
        AppendValue(out, fn ? fn() : std::numeric_limits<double>::quiet_NaN());
        out.push_back('\n');
    }

private:
    mutable std::mutex mu_;
    std::function<double()> fn_;
};

}  // namespace

std::string FormatMetricValue(double v) {
    std::string out;
    AppendValue(out, v);
    return out;
}

// ---- Histogram ----

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds), counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds.size() + 1)) {}

void Histogram::Observe(double v) {
    std::size_t i = bounds_.size();  // NaN goes to +Inf
    if (!std::isnan(v)) {
        i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                     bounds_.begin());
        sum_.fetch_add(v, std::memory_order_relaxed);
    }
    counts_[i].fetch_add(1, std::memory_order_relaxed);
}

uint64_t Histogram::Count() const { return CumulativeCount(bounds_.size()); }

uint64_t Histogram::BucketCount(std::size_t i) const {
    return i <= bounds_.size() ? counts_[i].load(std::memory_order_relaxed) : 0;
}

uint64_t Histogram::CumulativeCount(std::size_t i) const {
    uint64_t total = 0;
    for (std::size_t b = 0; b <= i && b <= bounds_.size(); ++b) {
        total += BucketCount(b);
    }
    return total;
}

double Histogram::Quantile(double q) const {
    const std::size_t n = bounds_.size();
    std::vector<uint64_t> counts(n + 1);
    uint64_t total = 0;
    for (std::size_t b = 0; b <= n; ++b) {
        counts[b] = counts_[b].load(std::memory_order_relaxed);
        total += counts[b];
    }
    if (total == 0 || n == 0 || std::isnan(q)) {
        return std::numeric_limits<double>::quiet_NaN();
    }
    const double rank = std::clamp(q, 0.0, 1.0) * static_cast<double>(total);
    uint64_t below = 0;  // observations in buckets before b
    for (std::size_t b = 0; b <= n; ++b) {
        const uint64_t c = counts[b];
        if (c == 0 || static_cast<double>(below + c) < rank) {
            below += c;
            continue;
        }
        if (b == n) {
            return bounds_[n - 1];  // in +Inf: the best we can say is "above the last bound"
        }
        const double upper = bounds_[b];
        const double lower = b == 0 ? std::min(0.0, upper) : bounds_[b - 1];
        const double frac = (rank - static_cast<double>(below)) / static_cast<double>(c);
        return lower + (upper - lower) * std::clamp(frac, 0.0, 1.0);
    }
    return bounds_[n - 1];
}

// ---- Families ----

namespace detail {

FamilyBase::FamilyBase(std::string name,
                       std::string help,
                       MetricType type,
                       std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {}

void FamilyBase::RenderHeader(std::string& out) const {
    out += "# HELP ";
    out += name_;
    out.push_back(' ');
    for (char c : help_) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out.push_back(c);
        }
    }
    out += "\n# TYPE ";
    out += name_;
    out.push_back(' ');
    out += TypeName(type_);
    out.push_back('\n');
}

}  // namespace detail

namespace {
uint64_t NextFamilyUid() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

template <class T>
Family<T>::Family(std::string name,
                  std::string help,
                  MetricType type,
                  std::vector<std::string> label_names,
                  std::vector<double> bounds)
    : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
      bounds_(std::move(bounds)),
      uid_(NextFamilyUid()) {}

template <class T>
T& Family<T>::With(std::initializer_list<std::string_view> values) {
    return Find(std::span<const std::string_view>(values.begin(), values.size()));
}

template <class T>
T& Family<T>::With(std::span<const std::string> values) {
    std::vector<std::string_view> views(values.begin(), values.end());
    return Find(views);
}

template <class T>
T& Family<T>::Find(std::span<const std::string_view> values) {
    if (values.size() != LabelNames().size()) {
        Die("wrong number of label values for", Name());
    }
    // Hot path: a per-thread cache (family uid + label values → series) answers without the
    // family's mutex; series are never removed, so cached pointers stay valid.
    thread_local std::unordered_map<std::string, void*> cache;
    std::string key;
    key.append(reinterpret_cast<const char*>(&uid_), sizeof(uid_));
    for (std::string_view v : values) {
        key += v;
        key.push_back('\xff');  // never valid inside UTF-8 text
    }
    if (auto it = cache.find(key); it != cache.end()) {
        return *static_cast<T*>(it->second);
    }
    std::lock_guard lock(mu_);
    if (auto it = index_.find(key); it != index_.end()) {
        cache.emplace(key, it->second);
        return *it->second;
    }
    std::vector<std::string> owned(values.begin(), values.end());
    std::unique_ptr<Series> series;
    if constexpr (std::is_same_v<T, Histogram>) {
        series = std::make_unique<Series>(std::move(owned), std::span<const double>(bounds_));
    } else {
        series = std::make_unique<Series>(std::move(owned));
    }
    T& metric = series->metric;
    series_.push_back(std::move(series));
    cache.emplace(key, &metric);
    index_.emplace(std::move(key), &metric);
    return metric;
}

template <class T>
void Family<T>::Render(std::string& out) const {
    RenderHeader(out);
    std::lock_guard lock(mu_);
    for (const auto& s : series_) {
        if constexpr (std::is_same_v<T, Counter>) {
            AppendSeriesStart(out, Name(), {}, LabelNames(), s->values);
            AppendUint(out, s->metric.Value());
            out.push_back('\n');
        } else if constexpr (std::is_same_v<T, Gauge>) {
            AppendSeriesStart(out, Name(), {}, LabelNames(), s->values);
            AppendValue(out, s->metric.Value());
            out.push_back('\n');
        } else {
            // One pass over the buckets so that the +Inf bucket and _count always agree.
            uint64_t cumulative = 0;
            std::string le;
            for (std::size_t b = 0; b <= bounds_.size(); ++b) {
                cumulative += s->metric.BucketCount(b);
                le.clear();
                if (b < bounds_.size()) {
                    AppendValue(le, bounds_[b]);
                } else {
                    le = "+Inf";
                }
                AppendSeriesStart(out, Name(), "_bucket", LabelNames(), s->values, le);
                AppendUint(out, cumulative);
                out.push_back('\n');
            }
            AppendSeriesStart(out, Name(), "_sum", LabelNames(), s->values);
            AppendValue(out, s->metric.Sum());
            out.push_back('\n');
            AppendSeriesStart(out, Name(), "_count", LabelNames(), s->values);
            AppendUint(out, cumulative);
            out.push_back('\n');
        }
    }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---- Registry ----

Registry::Registry() = default;
Registry::~Registry() = default;

Registry& Registry::Global() {
    // Leaked on purpose: other threads may still update metrics while statics are destroyed.
    static auto* const registry = new Registry();
    return *registry;
}

template <class T>
Family<T>& Registry::GetOrAdd(std::string name,
                              std::string help,
                              MetricType type,
                              std::vector<std::string> label_names,
                              std::vector<double> bounds) {
    if (!IsValidMetricName(name)) {
        Die("invalid metric name", name);
    }
    for (std::size_t i = 0; i < label_names.size(); ++i) {
        const std::string& l = label_names[i];
        if (!IsValidLabelName(l) || (type == MetricType::kHistogram && l == "le") ||
            std::find(label_names.begin(), label_names.begin() + static_cast<std::ptrdiff_t>(i),
                      l) != label_names.begin() + static_cast<std::ptrdiff_t>(i)) {
            Die("invalid or duplicate label name", l);
        }
    }
    if (!bounds.empty() && std::isinf(bounds.back()) && bounds.back() > 0) {
        bounds.pop_back();  // +Inf is implicit
    }
    for (std::size_t i = 0; i < bounds.size(); ++i) {
        if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
            Die("histogram bounds must be finite and strictly increasing", name);
        }
    }
    std::lock_guard lock(mu_);
    if (auto it = by_name_.find(name); it != by_name_.end()) {
        auto* existing = dynamic_cast<Family<T>*>(it->second);
        if (existing == nullptr || existing->LabelNames() != label_names ||
            existing->Bounds() != bounds) {
            Die("metric registered again with a different type, labels or buckets", name);
        }
        return *existing;
    }
    auto family = std::make_unique<Family<T>>(std::move(name), std::move(help), type,
                                              std::move(label_names), std::move(bounds));
    Family<T>& ref = *family;
    by_name_.emplace(ref.Name(), &ref);
    families_.push_back(std::move(family));
    return ref;
}

CounterFamily& Registry::Counter(std::string name,
                                 std::string help,
                                 std::vector<std::string> label_names) {
    return GetOrAdd<obs::Counter>(std::move(name), std::move(help), MetricType::kCounter,
                                  std::move(label_names), {});
}

obs::Counter& Registry::Counter(std::string name, std::string help) {
    return Counter(std::move(name), std::move(help), std::vector<std::string>{}).With({});
}

GaugeFamily& Registry::Gauge(std::string name,
                             std::string help,
                             std::vector<std::string> label_names) {
    return GetOrAdd<obs::Gauge>(std::move(name), std::move(help), MetricType::kGauge,
                                std::move(label_names), {});
}

obs::Gauge& Registry::Gauge(std::string name, std::string help) {
    return Gauge(std::move(name), std::move(help), std::vector<std::string>{}).With({});
}

HistogramFamily& Registry::Histogram(std::string name,
                                     std::string help,
                                     std::vector<std::string> label_names,
                                     Buckets buckets) {
    return GetOrAdd<obs::Histogram>(std::move(name), std::move(help), MetricType::kHistogram,
                                    std::move(label_names), std::move(buckets.bounds));
}

obs::Histogram& Registry::Histogram(std::string name, std::string help, Buckets buckets) {
    return Histogram(std::move(name), std::move(help), std::vector<std::string>{},
                     std::move(buckets))
        .With({});
}

void Registry::AddCallback(std::string name,
                           std::string help,
                           MetricType type,
                           std::function<double()> fn) {
    if (!IsValidMetricName(name)) {
        Die("invalid metric name", name);
    }
    std::lock_guard lock(mu_);
    if (auto it = by_name_.find(name); it != by_name_.end()) {
        auto* existing = dynamic_cast<CallbackFamily*>(it->second);
        if (existing == nullptr || existing->Type() != type) {
            Die("metric registered again with a different type", name);
        }
        existing->Set(std::move(fn));
        return;
    }
    auto family =
        std::make_unique<CallbackFamily>(std::move(name), std::move(help), type, std::move(fn));
    by_name_.emplace(family->Name(), family.get());
    families_.push_back(std::move(family));
}

void Registry::AddCallbackGauge(std::string name, std::string help, std::function<double()> fn) {
    AddCallback(std::move(name), std::move(help), MetricType::kGauge, std::move(fn));
}

void Registry::AddCallbackCounter(std::string name, std::string help, std::function<double()> fn) {
    AddCallback(std::move(name), std::move(help), MetricType::kCounter, std::move(fn));
}

std::string Registry::Render() const {
    std::vector<const detail::FamilyBase*> families;
    {
        std::lock_guard lock(mu_);
        families.reserve(families_.size());
        for (const auto& f : families_) {
            families.push_back(f.get());
        }
    }
    std::string out;
    out.reserve(families.size() * 256);
    for (const auto* f : families) {
        f->Render(out);
    }
    return out;
}

}  // namespace conduit::obs
