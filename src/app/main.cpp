// conduit: the gateway executable. `conduit serve [flags]` runs the server; see --help.
#include "app/app.hpp"
#include "config/loader.hpp"
#include "obs/logging.hpp"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr const char* kVersion = "0.1.0";

void PrintUsage() {
    std::printf(
        "Conduit %s — OpenAI-compatible LLM gateway\n\n"
        "Usage:\n"
        "  conduit serve [flags]   run the gateway (see `conduit serve --help`)\n"
        "  conduit version         print the version\n",
        kVersion);
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        PrintUsage();
        return args.empty() ? 2 : 0;
    }
    if (args[0] == "version" || args[0] == "--version") {
        std::printf("conduit %s\n", kVersion);
        return 0;
    }
    if (args[0] != "serve") {
        std::fprintf(stderr, "unknown command '%s'\n\n", args[0].c_str());
        PrintUsage();
        return 2;
    }
    args.erase(args.begin());
    auto loaded = conduit::config::LoadServeConfig(args, conduit::config::ProcessEnv());
    if (!loaded) {
        std::fprintf(stderr, "configuration error: %s\n", loaded.error().message.c_str());
        return 2;
    }
    if (loaded->help_requested) {
        std::printf("%s", loaded->help_text.c_str());
        return 0;
    }
    auto& cfg = loaded->config;
    conduit::obs::InitLogging(conduit::obs::ParseLogFormat(cfg.log.format), cfg.log.level);
    conduit::app::App app(cfg);
    if (auto r = app.Init(); !r) {
        spdlog::critical("start-up failed: {}", r.error().message);
        return 1;
    }
    return app.Run();
}
