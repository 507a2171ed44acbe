#include "obs/process_metrics.hpp"

#include <cmath>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

namespace conduit::obs {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string ReadFile(const char* path) {
    std::ifstream in(path);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Fields of /proc/self/stat after the command name, which is in parentheses and may contain
// spaces; fields[0] is field 3 ("state") of proc(5).
std::vector<std::string> ReadStatFields() {
    const std::string stat = ReadFile("/proc/self/stat");
    const auto close = stat.rfind(')');
    std::vector<std::string> fields;
    if (close == std::string::npos) {
        return fields;
    }
    std::istringstream in(stat.substr(close + 1));
    for (std::string f; in >> f;) {
        fields.push_back(f);
    }
    return fields;
}

// Field `n` (1-based, as numbered in proc(5)) of /proc/self/stat as a number.
double StatField(const std::vector<std::string>& fields, std::size_t n) {
    if (n < 3 || n - 3 >= fields.size()) {
        return kNaN;
    }
    return std::strtod(fields[n - 3].c_str(), nullptr);
}

// Field `n` (0-based) of /proc/self/statm, in pages.
double StatmPages(int n) {
    std::istringstream in(ReadFile("/proc/self/statm"));
    double v = kNaN;
    for (int i = 0; i <= n; ++i) {
        if (!(in >> v)) {
            return kNaN;
        }
    }
    return v;
}

double PageSize() { return static_cast<double>(sysconf(_SC_PAGESIZE)); }
double ClockTicks() { return static_cast<double>(sysconf(_SC_CLK_TCK)); }

double BootTimeSeconds() {
    std::istringstream in(ReadFile("/proc/stat"));
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("btime ")) {
            return std::strtod(line.c_str() + 6, nullptr);
        }
    }
    return kNaN;
}

double MaxFds() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return kNaN;
    }
    return rl.rlim_cur == RLIM_INFINITY ? std::numeric_limits<double>::infinity()
                                        : static_cast<double>(rl.rlim_cur);
}

}  // namespace

int64_t ReadRssBytes() {
    const double pages = StatmPages(1);
    return !std::isnan(pages) ? static_cast<int64_t>(pages * PageSize()) : -1;
}

int ReadOpenFds() {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) {
        return -1;
    }
    int count = 0;
    // readdir is safe here: the stream is private to this call.
    while (const dirent* e = readdir(dir)) {  // NOLINT(concurrency-mt-unsafe)
        if (e->d_name[0] != '.') {
            ++count;
        }
    }
    closedir(dir);
    return count - 1;  // the directory stream's own descriptor
}

void RegisterProcessMetrics(Registry& registry) {
    registry.AddCallbackGauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                              [] {
                                  const int64_t rss = ReadRssBytes();
                                  return rss < 0 ? kNaN : static_cast<double>(rss);
                              });
    registry.AddCallbackGauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                              [] { return StatmPages(0) * PageSize(); });
    registry.AddCallbackGauge("process_open_fds", "Number of open file descriptors.", [] {
        const int fds = ReadOpenFds();
        return fds < 0 ? kNaN : static_cast<double>(fds);
    });
    registry.AddCallbackGauge("process_max_fds", "Maximum number of open file descriptors.",
                              [] { return MaxFds(); });
    registry.AddCallbackCounter("process_cpu_seconds_total",
                                "Total user and system CPU time spent in seconds.", [] {
                                    const auto f = ReadStatFields();
                                    return (StatField(f, 14) + StatField(f, 15)) / ClockTicks();
                                });
    // Constant for the life of the process: computed once.
    const double start = BootTimeSeconds() + StatField(ReadStatFields(), 22) / ClockTicks();
    registry.AddCallbackGauge("process_start_time_seconds",
                              "Start time of the process since unix epoch in seconds.",
                              [start] { return start; });
    registry.AddCallbackGauge("process_threads", "Number of OS threads in the process.",
                              [] { return StatField(ReadStatFields(), 20); });
}

}  // namespace conduit::obs
