// POST /api/notifications/announcements: a SystemAnnouncement(message, severity) to every client
// of /hubs/notifications on every instance. No store work: validated and handed to the
// announcer on the loop thread (it is also the broadcast trigger of the hub benchmarks).
#include "admin/handler_support.hpp"
#include "admin/json_writer.hpp"
#include "core/strings.hpp"

#include <boost/json/value.hpp>

namespace conduit::admin::detail {
namespace {

constexpr size_t kMaxMessageBytes = 16 * 1024;  // well below the hubs' 32 KB message limit

bool IsSeverity(std::string_view s) {
    return s == "info" || s == "warning" || s == "error" || s == "critical";
}

void Announce(const net::ExchangePtr& ex, const DepsPtr& deps) {
    auto body = ParseBody(ex->request());
    if (!body) {
        RespondError(ex, body.error());
        return;
    }
    const boost::json::value* message = body->if_contains("message");
    if (message == nullptr || !message->is_string() || message->as_string().empty()) {
        RespondError(ex, BadParam("message", "message is required (a non-empty string)."));
        return;
    }
    if (message->as_string().size() > kMaxMessageBytes) {
        RespondError(ex, BadParam("message", "message must be at most " +
                                                 std::to_string(kMaxMessageBytes) + " bytes."));
        return;
    }
    std::string severity = "info";
    if (const boost::json::value* sv = body->if_contains("severity");
        sv != nullptr && !sv->is_null()) {
        if (!sv->is_string() || !IsSeverity(sv->as_string())) {
            RespondError(ex, BadParam("severity",
                                      "severity must be one of info, warning, error, critical."));
            return;
        }
        severity = std::string(sv->as_string());
    }
    if (!deps->announce) {
        RespondError(ex, core::Error{core::ErrorCode::kUnavailable,
                                     "Announcements are not available on this instance.", ""});
        return;
    }
    std::string text(message->as_string());  // verbatim
    deps->announce(text, severity);
    JsonWriter w;
    w.BeginObject();
    w.BoolField("accepted", true);
    w.StringField("severity", severity);
    w.EndObject();
    ex->Respond(JsonReply(202, w.Take()));
}

}  // namespace

void RegisterNotificationRoutes(net::Router& router, const DepsPtr& deps) {
    AddRoute(router, deps, "POST", "/api/notifications/announcements", Announce);
}

}  // namespace conduit::admin::detail
