#include "webhooks/message.hpp"

#include "core/ids.hpp"
#include "json/helpers.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

namespace conduit::webhooks {

namespace bj = boost::json;

namespace {

bj::array HeadersArray(const HeaderList& headers) {
    bj::array arr;
    arr.reserve(headers.size());
    for (const auto& [name, value] : headers) {
        bj::array pair;
        pair.emplace_back(bj::string_view(name.data(), name.size()));
        pair.emplace_back(bj::string_view(value.data(), value.size()));
        arr.emplace_back(std::move(pair));
    }
    return arr;
}

HeaderList HeadersFrom(const bj::value& v) {
    HeaderList out;
    if (const bj::array* arr = v.if_array()) {
        for (const auto& item : *arr) {
            const bj::array* pair = item.if_array();
            if (pair == nullptr || pair->size() != 2 || !(*pair)[0].is_string() ||
                !(*pair)[1].is_string()) {
                continue;
            }
            out.emplace_back(std::string((*pair)[0].get_string()),
                             std::string((*pair)[1].get_string()));
        }
    } else if (const bj::object* obj = v.if_object()) {
        for (const auto& member : *obj) {
            if (member.value().is_string()) {
                out.emplace_back(std::string(member.key()),
                                 std::string(member.value().get_string()));
            }
        }
    }
    return out;
}

bool GetText(const bj::object& o, std::string_view key, std::string& out) {
    const bj::value* v = o.if_contains(key);
    if (v == nullptr || !v->is_string()) {
        return false;
    }
    out.assign(v->get_string().data(), v->get_string().size());
    return true;
}

int64_t GetInt(const bj::object& o, std::string_view key) {
    const bj::value* v = o.if_contains(key);
    if (v == nullptr) {
        return 0;
    }
    if (v->is_int64()) {
        return v->get_int64();
    }
    if (v->is_uint64()) {
        return static_cast<int64_t>(v->get_uint64());
    }
    return 0;
}

}  // namespace

std::string EncodeDelivery(const QueuedDelivery& m) {
    bj::object o;
    o["v"] = 1;
    o["id"] = m.id;
    o["type"] = m.event_type;
    o["task"] = m.task_id;
    o["vk"] = m.virtual_key_id;
    o["url"] = m.url;
    o["headers"] = HeadersArray(m.headers);
    o["payload"] = m.payload;
    o["created"] = m.created_at_ms;
    o["published"] = m.published_at_ms;
    o["prior"] = m.prior_attempts;
    o["deferrals"] = m.deferrals;
    o["redelivery"] = m.redelivery;
    return json::Serialize(o);
}

core::Result<QueuedDelivery> DecodeDelivery(std::string_view body) {
    auto parsed = json::ParseObject(body);
    if (!parsed) {
        return core::Fail(core::ErrorCode::kInvalidRequest,
                          "malformed webhook delivery message: not a JSON object");
    }
    const bj::object& o = *parsed;
    QueuedDelivery m;
    if (!GetText(o, "id", m.id) || m.id.empty() || !GetText(o, "url", m.url) ||
        !GetText(o, "payload", m.payload)) {
        return core::Fail(core::ErrorCode::kInvalidRequest,
                          "malformed webhook delivery message: id, url and payload are required");
    }
    GetText(o, "type", m.event_type);
    GetText(o, "task", m.task_id);
    m.virtual_key_id = GetInt(o, "vk");
    if (const bj::value* h = o.if_contains("headers")) {
        m.headers = HeadersFrom(*h);
    }
    m.created_at_ms = GetInt(o, "created");
    m.published_at_ms = GetInt(o, "published");
    m.prior_attempts = static_cast<int>(GetInt(o, "prior"));
    m.deferrals = static_cast<int>(GetInt(o, "deferrals"));
    if (const bj::value* r = o.if_contains("redelivery"); r != nullptr && r->is_bool()) {
        m.redelivery = r->get_bool();
    }
    return m;
}

std::string EncodeHeaders(const HeaderList& headers) {
    return json::Serialize(HeadersArray(headers));
}

HeaderList DecodeHeaders(std::string_view text) {
    if (text.empty()) {
        return {};
    }
    boost::system::error_code ec;
    bj::value v = bj::parse(bj::string_view(text.data(), text.size()), ec);
    if (ec) {
        return {};
    }
    return HeadersFrom(v);
}

std::string NewDeliveryId() { return "msg_" + core::NewUuidV7(); }

store::WebhookDelivery RowFor(const QueuedDelivery& m) {
    store::WebhookDelivery row;
    row.id = m.id;
    row.task_id = m.task_id;
    row.virtual_key_id = m.virtual_key_id;
    row.event_type = m.event_type;
    row.url = m.url;
    row.headers_json = EncodeHeaders(m.headers);
    row.payload = m.payload;
    row.created_at_ms = m.created_at_ms;
    return row;
}

}  // namespace conduit::webhooks
