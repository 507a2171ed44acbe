#include "store/store.hpp"

namespace conduit::store {

// Defaults for adapters that do not (yet) implement the task and webhook parts of the port.
namespace {
tl::unexpected<core::Error> NotSupported() {
    return core::Fail(core::ErrorCode::kInternal, "not supported by this store adapter");
}
}  // namespace

Result<std::pair<domain::AsyncTask, bool>> Store::CreateTask(const domain::AsyncTask&) {
    return NotSupported();
}
Result<std::optional<domain::AsyncTask>> Store::GetTask(std::string_view) { return NotSupported(); }
Result<std::optional<domain::AsyncTask>> Store::UpdateTask(const domain::AsyncTask&) {
    return NotSupported();
}
Result<std::vector<domain::AsyncTask>> Store::ListTasks(const TaskQuery&) { return NotSupported(); }
Result<std::optional<WebhookSecret>> Store::GetWebhookSecret(Id) { return NotSupported(); }
Result<void> Store::PutWebhookSecret(const WebhookSecret&) { return NotSupported(); }
Result<void> Store::UpsertWebhookDeliveries(const std::vector<WebhookDelivery>&) {
    return NotSupported();
}
Result<std::optional<WebhookDelivery>> Store::GetWebhookDelivery(std::string_view) {
    return NotSupported();
}
Result<std::vector<WebhookDelivery>> Store::ListWebhookDeliveries(const WebhookDeliveryQuery&) {
    return NotSupported();
}

}  // namespace conduit::store
