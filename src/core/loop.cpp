#include "core/loop.hpp"

namespace conduit::core {

namespace {
thread_local Loop* current_loop = nullptr;
}  // namespace

Loop* CurrentLoop() { return current_loop; }
void SetCurrentLoop(Loop* loop) { current_loop = loop; }

}  // namespace conduit::core
