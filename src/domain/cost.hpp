#pragma once

#include "domain/entities.hpp"

#include <cstdint>

namespace conduit::domain {

/// What a request consumed, as reported by the provider (or estimated).
struct UsageAmounts {
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
    int64_t images = 0;
    double video_seconds = 0;
};

enum class RequestKind { kChat, kCompletion, kEmbedding, kImage, kVideo };

/// Exact cost in micro-units of `usage` under `cost` (nullptr = free). Each component is
/// rounded half up to whole micro-units separately, then summed:
/// chat/completion: prompt × input + completion × output (per million tokens);
/// embedding: prompt × embedding price (the input price when no embedding price is set);
/// image: images × per-image price; video: seconds × per-second price (rounded half up).
Micros ComputeCost(const ModelCost* cost, RequestKind kind, const UsageAmounts& usage);

}  // namespace conduit::domain
