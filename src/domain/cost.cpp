#include "domain/cost.hpp"

#include <cmath>

namespace conduit::domain {

Micros ComputeCost(const ModelCost* cost, RequestKind kind, const UsageAmounts& usage) {
    if (cost == nullptr) {
        return 0;
    }
    switch (kind) {
        case RequestKind::kChat:
        case RequestKind::kCompletion:
            return core::CostPerMillion(usage.prompt_tokens, cost->input_per_million) +
                   core::CostPerMillion(usage.completion_tokens, cost->output_per_million);
        case RequestKind::kEmbedding: {
            Micros price = cost->embedding_per_million != 0 ? cost->embedding_per_million
                                                            : cost->input_per_million;
            return core::CostPerMillion(usage.prompt_tokens, price);
        }
        case RequestKind::kImage:
            return usage.images * cost->image_per_image;
        case RequestKind::kVideo:
            return static_cast<Micros>(
                std::llround(usage.video_seconds * static_cast<double>(cost->video_per_second)));
    }
    return 0;
}

}  // namespace conduit::domain
