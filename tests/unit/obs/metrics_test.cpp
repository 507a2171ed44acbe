#include "obs/metrics.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

namespace conduit::obs {
namespace {

TEST(Metrics, CounterAndGaugeValues) {
    Registry r;
    auto& c = r.Counter("c_total", "help");
    c.Inc();
    c.Inc(41);
    EXPECT_EQ(c.Value(), 42u);

    auto& g = r.Gauge("g", "help");
    g.Set(3.5);
    g.Add(-1.25);
    g.Inc();
    g.Dec();
    g.Dec();
    EXPECT_DOUBLE_EQ(g.Value(), 1.25);
}

TEST(Metrics, RenderExactText) {
    Registry r;
    auto& requests = r.Counter("requests_total", "Requests served.", {"route", "code"});
    requests.With({"chat", "200"}).Inc(3);
    requests.With({"embed", "500"}).Inc();
    r.Gauge("in_flight", "In-flight requests.").Set(2.5);
    auto& latency = r.Histogram("latency_seconds", "Latency.", {0.1, 1});
    latency.Observe(0.0625);
    latency.Observe(0.5);
    latency.Observe(5);
    r.AddCallbackGauge("answer", "Computed at scrape time.", [] { return 42.0; });
    r.Counter("never_total", "A labelled family without series.", {"x"});

    EXPECT_EQ(r.Render(),
              "# HELP requests_total Requests served.\n"
              "# TYPE requests_total counter\n"
              "requests_total{route=\"chat\",code=\"200\"} 3\n"
              "requests_total{route=\"embed\",code=\"500\"} 1\n"
              "# HELP in_flight In-flight requests.\n"
              "# TYPE in_flight gauge\n"
              "in_flight 2.5\n"
              "# HELP latency_seconds Latency.\n"
              "# TYPE latency_seconds histogram\n"
              "latency_seconds_bucket{le=\"0.1\"} 1\n"
              "latency_seconds_bucket{le=\"1\"} 2\n"
              "latency_seconds_bucket{le=\"+Inf\"} 3\n"
              "latency_seconds_sum 5.5625\n"
              "latency_seconds_count 3\n"
              "# HELP answer Computed at scrape time.\n"
              "# TYPE answer gauge\n"
              "answer 42\n"
              "# HELP never_total A labelled family without series.\n"
              "# TYPE never_total counter\n");
}

TEST(Metrics, LabelledHistogramPutsLeLast) {
    Registry r;
    r.Histogram("d_seconds", "h", {"model"}, {0.5}).With({"gpt"}).Observe(0.25);
    EXPECT_EQ(r.Render(),
              "# HELP d_seconds h\n"
              "# TYPE d_seconds histogram\n"
              "d_seconds_bucket{model=\"gpt\",le=\"0.5\"} 1\n"
              "d_seconds_bucket{model=\"gpt\",le=\"+Inf\"} 1\n"
              "d_seconds_sum{model=\"gpt\"} 0.25\n"
              "d_seconds_count{model=\"gpt\"} 1\n");
}

TEST(Metrics, EscapesLabelValuesAndHelp) {
    Registry r;
    r.Counter("e_total", "line one\nback\\slash \"quoted\"", {"v"}).With({"a\"b\\c\nd"}).Inc();
    EXPECT_EQ(r.Render(),
              "# HELP e_total line one\\nback\\\\slash \"quoted\"\n"
              "# TYPE e_total counter\n"
              "e_total{v=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(Metrics, FormatsValuesForPrometheus) {
    EXPECT_EQ(FormatMetricValue(1), "1");
    EXPECT_EQ(FormatMetricValue(-3), "-3");
    EXPECT_EQ(FormatMetricValue(0.5), "0.5");
    EXPECT_EQ(FormatMetricValue(0.00005), "5e-05");
    EXPECT_EQ(FormatMetricValue(123456789012.0), "123456789012");
    EXPECT_EQ(FormatMetricValue(1e20), "1e+20");
    EXPECT_EQ(FormatMetricValue(0.1 + 0.2), "0.30000000000000004");  // round-trips exactly
    EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
    EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
    EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
}

TEST(Metrics, DefaultDurationBucketsSpan50usTo60s) {
    Registry r;
    auto& h = r.Histogram("x_seconds", "h");
    ASSERT_EQ(h.Bounds().size(), kDefaultDurationBuckets.size());
    EXPECT_DOUBLE_EQ(h.Bounds().front(), 0.00005);
    EXPECT_DOUBLE_EQ(h.Bounds().back(), 60);
    const std::string text = r.Render();
    EXPECT_NE(text.find("x_seconds_bucket{le=\"5e-05\"} 0\n"), std::string::npos);
    EXPECT_NE(text.find("x_seconds_bucket{le=\"60\"} 0\n"), std::string::npos);
    EXPECT_NE(text.find("x_seconds_bucket{le=\"+Inf\"} 0\n"), std::string::npos);
}

TEST(Metrics, DuplicateNameReturnsSameFamily) {
    Registry r;
    auto& a = r.Counter("dup_total", "h", {"k"});
    auto& b = r.Counter("dup_total", "other help", {"k"});
    EXPECT_EQ(&a, &b);
    EXPECT_EQ(&r.Counter("plain_total", "h"), &r.Counter("plain_total", "h"));
    EXPECT_EQ(&r.Histogram("h1", "h", {1, 2}), &r.Histogram("h1", "h", {1, 2}));
}

TEST(MetricsDeathTest, ConflictingRegistrationAborts) {
    Registry r;
    r.Counter("x_total", "h");
    EXPECT_DEATH(r.Gauge("x_total", "h"), "different type");
    EXPECT_DEATH(r.Counter("x_total", "h", {"extra"}), "different type, labels");
    r.Histogram("hb", "h", {1, 2});
    EXPECT_DEATH(r.Histogram("hb", "h", {1, 3}), "buckets");
    r.AddCallbackGauge("cb", "h", [] { return 1.0; });
    EXPECT_DEATH(r.Gauge("cb", "h"), "different type");
}

TEST(MetricsDeathTest, InvalidDefinitionsAbort) {
    Registry r;
    EXPECT_DEATH(r.Counter("bad-name", "h"), "invalid metric name");
    EXPECT_DEATH(r.Counter("c_total", "h", {"__reserved"}), "label name");
    EXPECT_DEATH(r.Counter("c_total", "h", {"a", "a"}), "duplicate label");
    EXPECT_DEATH(r.Histogram("h", "h", {"le"}), "label name");
    EXPECT_DEATH(r.Histogram("h", "h", {2, 1}), "strictly increasing");
    auto& fam = r.Counter("ok_total", "h", {"a", "b"});
    EXPECT_DEATH(fam.With({"only-one"}), "wrong number of label values");
}

TEST(Metrics, ExplicitInfBoundIsDropped) {
    Registry r;
    auto& h = r.Histogram("inf", "h", {1, std::numeric_limits<double>::infinity()});
    EXPECT_EQ(h.Bounds().size(), 1u);
}

TEST(Metrics, WithReturnsStableReferences) {
    Registry r;
    auto& fam = r.Counter("s_total", "h", {"id"});
    Counter& first = fam.With({"0"});
    first.Inc(7);
    for (int i = 1; i < 2000; ++i) {
        fam.With({std::to_string(i)}).Inc();
    }
    EXPECT_EQ(&fam.With({"0"}), &first);
    EXPECT_EQ(first.Value(), 7u);
    const std::vector<std::string> values = {"0"};
    EXPECT_EQ(&fam.With(values), &first);
}

TEST(Metrics, RegistriesAreIndependent) {
    Registry a;
    Registry b;
    a.Counter("n_total", "h").Inc(5);
    EXPECT_EQ(b.Counter("n_total", "h").Value(), 0u);
    EXPECT_EQ(&Registry::Global(), &Registry::Global());
    EXPECT_NE(&Registry::Global(), &a);
}

TEST(Metrics, CallbackIsEvaluatedAtScrapeAndCanBeReplaced) {
    Registry r;
    double v = 1;
    r.AddCallbackGauge("cb", "h", [&v] { return v; });
    v = 7;
    EXPECT_NE(r.Render().find("\ncb 7\n"), std::string::npos);
    r.AddCallbackGauge("cb", "h", [] { return 9.5; });
    EXPECT_NE(r.Render().find("\ncb 9.5\n"), std::string::npos);
    r.AddCallbackCounter("cb_total", "h", [] { return 3.0; });
    EXPECT_NE(r.Render().find("# TYPE cb_total counter\ncb_total 3\n"), std::string::npos);
}

TEST(Metrics, ConcurrentUpdatesAreExact) {
    Registry r;
    auto& fam = r.Counter("conc_total", "h", {"k"});
    auto& gauge = r.Gauge("conc_gauge", "h");
    auto& hist = r.Histogram("conc_seconds", "h", {0.5, 2});
    constexpr int kThreads = 4;
    constexpr int kIters = 100000;
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            Counter& c = fam.With({"same"});  // concurrent creation of one series
            for (int i = 0; i < kIters; ++i) {
                c.Inc();
                gauge.Add(1);
                hist.Observe(1.0);
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    constexpr uint64_t kTotal = uint64_t{kThreads} * kIters;
    EXPECT_EQ(fam.With({"same"}).Value(), kTotal);
    EXPECT_DOUBLE_EQ(gauge.Value(), static_cast<double>(kTotal));
    EXPECT_EQ(hist.Count(), kTotal);
    EXPECT_EQ(hist.CumulativeCount(0), 0u);
    EXPECT_EQ(hist.CumulativeCount(1), kTotal);
    EXPECT_DOUBLE_EQ(hist.Sum(), static_cast<double>(kTotal));
}

TEST(Metrics, HistogramBucketsAreCumulativeAndInclusive) {
    Registry r;
    auto& h = r.Histogram("b", "h", {1, 2, 5});
    for (double v : {0.5, 1.0, 1.5, 3.0, 10.0, std::nan("")}) {
        h.Observe(v);
    }
    EXPECT_EQ(h.BucketCount(0), 2u);  // 0.5 and 1 (upper bound inclusive)
    EXPECT_EQ(h.BucketCount(1), 1u);
    EXPECT_EQ(h.CumulativeCount(0), 2u);
    EXPECT_EQ(h.CumulativeCount(1), 3u);
    EXPECT_EQ(h.CumulativeCount(2), 4u);
    EXPECT_EQ(h.CumulativeCount(3), 6u);  // +Inf: 10 and NaN
    EXPECT_EQ(h.Count(), 6u);
    EXPECT_DOUBLE_EQ(h.Sum(), 16.0);  // NaN not added
    const std::string text = r.Render();
    EXPECT_NE(text.find("b_bucket{le=\"2\"} 3\nb_bucket{le=\"5\"} 4\nb_bucket{le=\"+Inf\"} 6\n"),
              std::string::npos);
}

TEST(Metrics, QuantileInterpolatesWithinBucket) {
    Registry r;
    auto& h = r.Histogram("q", "h", {1, 2, 4});
    EXPECT_TRUE(std::isnan(h.Quantile(0.5)));
    for (int i = 0; i < 4; ++i) {
        h.Observe(0.5);
        h.Observe(1.5);
    }
    h.Observe(3);
    h.Observe(3);
    EXPECT_DOUBLE_EQ(h.Quantile(0.2), 0.5);   // rank 2 of 4 in (0,1]
    EXPECT_DOUBLE_EQ(h.Quantile(0.5), 1.25);  // rank 5: 1 + (5-4)/4
    EXPECT_DOUBLE_EQ(h.Quantile(0.9), 3.0);   // rank 9: 2 + 2*(9-8)/2
    EXPECT_DOUBLE_EQ(h.Quantile(1.0), 4.0);
    h.Observe(100);
    h.Observe(100);
    h.Observe(100);
    EXPECT_DOUBLE_EQ(h.Quantile(0.99), 4.0);  // in +Inf: highest finite bound
}

}  // namespace
}  // namespace conduit::obs
