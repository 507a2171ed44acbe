#include "bus/work_queue.hpp"

#include <cstdint>

namespace conduit::bus {

int PartitionOf(std::string_view key, int partitions) {
    if (partitions <= 1) {
        return 0;
    }
    // FNV-1a, 64-bit: stable across processes, platforms and restarts.
    uint64_t hash = 14695981039346656037ULL;
    for (char c : key) {
        hash ^= static_cast<unsigned char>(c);
        hash *= 1099511628211ULL;
    }
    return static_cast<int>(hash % static_cast<uint64_t>(partitions));
}

}  // namespace conduit::bus
