#include "obs/process_metrics.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>

namespace conduit::obs {
namespace {

// The value of the unlabelled sample `name` in an exposition, or NaN when absent.
double Sample(const std::string& text, const std::string& name) {
    const std::string needle = "\n" + name + " ";
    const auto pos = text.find(needle);
    if (pos == std::string::npos) {
        return std::nan("");
    }
    return std::strtod(text.c_str() + pos + needle.size(), nullptr);
}

TEST(ProcessMetrics, RssIsPlausible) {
    const int64_t rss = ReadRssBytes();
    EXPECT_GT(rss, 1 << 20);            // a running gtest binary uses more than 1 MiB
    EXPECT_LT(rss, int64_t{64} << 30);  // and less than 64 GiB
    // Touching 32 MiB must show up in the resident set.
    std::vector<char> block(32u << 20, 1);
    EXPECT_GE(ReadRssBytes(), rss + (16 << 20));
    EXPECT_EQ(block[12345], 1);
}

TEST(ProcessMetrics, OpenFdsCountsExactly) {
    const int before = ReadOpenFds();
    EXPECT_GE(before, 3);  // stdin, stdout, stderr
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(ReadOpenFds(), before + 1);
    ::close(fd);
    EXPECT_EQ(ReadOpenFds(), before);
}

TEST(ProcessMetrics, RegistersStandardMetrics) {
    Registry r;
    RegisterProcessMetrics(r);
    RegisterProcessMetrics(r);  // idempotent
    const std::string text = r.Render();
    for (const char* type_line : {
             "# TYPE process_resident_memory_bytes gauge\n",
             "# TYPE process_virtual_memory_bytes gauge\n",
             "# TYPE process_open_fds gauge\n",
             "# TYPE process_max_fds gauge\n",
             "# TYPE process_cpu_seconds_total counter\n",
             "# TYPE process_start_time_seconds gauge\n",
             "# TYPE process_threads gauge\n",
         }) {
        EXPECT_NE(text.find(type_line), std::string::npos) << type_line;
    }
    const double rss = Sample(text, "process_resident_memory_bytes");
    const double vsz = Sample(text, "process_virtual_memory_bytes");
    EXPECT_GT(rss, 0);
    EXPECT_GE(vsz, rss);
    const double fds = Sample(text, "process_open_fds");
    EXPECT_GE(fds, 3);
    EXPECT_GE(Sample(text, "process_max_fds"), fds);
    EXPECT_GE(Sample(text, "process_cpu_seconds_total"), 0);
    EXPECT_GE(Sample(text, "process_threads"), 1);
    const double now = static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(
                                               std::chrono::system_clock::now().time_since_epoch())
                                               .count());
    const double start = Sample(text, "process_start_time_seconds");
    EXPECT_LE(start, now + 1);
    EXPECT_GT(start, now - 3600);  // this test process started moments ago
}

}  // namespace
}  // namespace conduit::obs
