#pragma once

#include "config/config.hpp"
#include "core/error.hpp"

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::config {

/// Looks up one environment variable; nullopt when unset. Tests pass a map-backed fake.
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;

/// The real process environment (std::getenv). Call at start-up only: getenv is not safe against
/// a concurrent setenv.
EnvLookup ProcessEnv();

/// What `conduit serve` should do: run with `config`, or print `help_text` and exit 0.
struct LoadOutcome {
    Config config;
    bool help_requested = false;
    std::string help_text;  // set only when help_requested
};

/// Builds the serve Config from `args` (the arguments after `serve`, without the program name),
/// the environment and the YAML file chosen by --config / CONDUIT_CONFIG. Precedence per setting:
/// command-line flag > environment (primary CONDUIT_* name, then aliases) > file > default.
/// Empty environment values count as unset. The merged Config is normalised (log format and level
/// lowercased) and passed through Validate().
///
/// Errors (kInvalidRequest) name the flag, variable, file key or setting at fault and never contain
/// a secret: unknown flags, unknown YAML keys, unparsable numbers, unreadable or malformed files,
/// validation failures. With --help/-h the result has help_requested set and nothing else is read.
/// Never throws. Call at start-up; not for the event loop (reads a file).
core::Result<LoadOutcome> LoadServeConfig(const std::vector<std::string>& args,
                                          const EnvLookup& env);

}  // namespace conduit::config
