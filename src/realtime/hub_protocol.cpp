#include "realtime/hub_protocol.hpp"

#include "core/strings.hpp"
#include "json/helpers.hpp"

#include <boost/json/parse.hpp>

#include <cmath>

namespace conduit::realtime {
namespace bj = boost::json;

bool IsTrackable(MessageType type) {
    const int t = static_cast<int>(type);
    return t >= 1 && t <= 5;
}

bool FrameReader::Feed(std::string_view data, std::vector<std::string>& records) {
    while (!data.empty()) {
        const size_t rs = data.find(kRecordSeparator);
        if (rs == std::string_view::npos) {
            if (buffer_.size() + data.size() > max_) {
                buffer_.clear();
                return false;
            }
            buffer_.append(data);
            return true;
        }
        if (buffer_.size() + rs > max_) {
            buffer_.clear();
            return false;
        }
        if (buffer_.empty()) {
            records.emplace_back(data.substr(0, rs));
        } else {
            buffer_.append(data.substr(0, rs));
            records.push_back(std::move(buffer_));
            buffer_.clear();
        }
        data.remove_prefix(rs + 1);
    }
    return true;
}

namespace {

/// Parses `text` as a JSON object; nullptr-like empty optional on failure.
std::optional<bj::object> ParseObjectText(std::string_view text) {
    boost::system::error_code ec;
    bj::parse_options opts;
    opts.max_depth = 64;
    bj::value v = bj::parse(text, ec, {}, opts);
    if (ec || !v.is_object()) {
        return std::nullopt;
    }
    return std::move(v.as_object());
}

/// An integer from a JSON number with an integral value.
std::optional<int64_t> AsInteger(const bj::value& v) {
    if (v.is_int64()) {
        return v.as_int64();
    }
    if (v.is_uint64() && v.as_uint64() <= static_cast<uint64_t>(INT64_MAX)) {
        return static_cast<int64_t>(v.as_uint64());
    }
    if (v.is_double()) {
        const double d = v.as_double();
        if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9.0e15) {
            return static_cast<int64_t>(d);
        }
    }
    return std::nullopt;
}

void AppendString(std::string& out, std::string_view s) {
    out += '"';
    core::AppendJsonEscaped(out, s);
    out += '"';
}

}  // namespace

std::optional<HandshakeRequest> ParseHandshake(std::string_view record, std::string& error) {
    auto obj = ParseObjectText(record);
    if (!obj) {
        error = "Handshake was canceled.";
        return std::nullopt;
    }
    HandshakeRequest req;
    const auto* protocol = obj->if_contains("protocol");
    const auto* version = obj->if_contains("version");
    if (protocol == nullptr || !protocol->is_string()) {
        error = "Missing or invalid 'protocol' property in handshake request.";
        return std::nullopt;
    }
    std::optional<int64_t> v = version != nullptr ? AsInteger(*version) : std::nullopt;
    if (!v) {
        error = "Missing or invalid 'version' property in handshake request.";
        return std::nullopt;
    }
    req.protocol = std::string(protocol->as_string());
    req.version = *v;
    return req;
}

std::string ValidateHandshake(const HandshakeRequest& request, bool allow_version_2) {
    if (request.protocol != "json") {
        return "The protocol '" + request.protocol + "' is not supported.";
    }
    const int64_t max_version = allow_version_2 ? 2 : 1;
    if (request.version < 1 || request.version > max_version) {
        return "The server does not support version " + std::to_string(request.version) +
               " of the 'json' protocol.";
    }
    return {};
}

std::string HandshakeResponse() { return std::string("{}") + kRecordSeparator; }

std::string HandshakeErrorResponse(std::string_view error) {
    std::string out = "{\"error\":";
    AppendString(out, error);
    out += '}';
    out += kRecordSeparator;
    return out;
}

ParseResult ParseMessage(std::string_view record) {
    ParseResult r;
    auto parsed = ParseObjectText(record);
    if (!parsed) {
        r.error = "Error parsing JSON hub message.";
        return r;
    }
    const bj::object& obj = *parsed;
    const auto* type_v = obj.if_contains("type");
    std::optional<int64_t> type = type_v != nullptr ? AsInteger(*type_v) : std::nullopt;
    if (!type) {
        r.error = "Missing required property 'type'.";
        return r;
    }
    if (*type < 1 || *type > 9) {
        r.status = ParseResult::Status::kUnknownType;
        return r;
    }
    HubMessage& m = r.message;
    m.type = static_cast<MessageType>(*type);

    auto get_string = [&](std::string_view key, bool required,
                          std::optional<std::string>& out) -> bool {
        const auto* v = obj.if_contains(key);
        if (v == nullptr || v->is_null()) {
            if (required) {
                r.error = "Missing required property '" + std::string(key) + "'.";
                return false;
            }
            return true;
        }
        if (!v->is_string()) {
            r.error = "Expected '" + std::string(key) + "' to be of type String.";
            return false;
        }
        out = std::string(v->as_string());
        return true;
    };

    switch (m.type) {
        case MessageType::kInvocation:
        case MessageType::kStreamInvocation: {
            const bool stream = m.type == MessageType::kStreamInvocation;
            if (!get_string("invocationId", stream, m.invocation_id)) {
                return r;
            }
            std::optional<std::string> target;
            if (!get_string("target", true, target)) {
                return r;
            }
            m.target = std::move(*target);
            const auto* args = obj.if_contains("arguments");
            if (args == nullptr || !args->is_array()) {
                r.error = args == nullptr ? "Missing required property 'arguments'."
                                          : "Expected 'arguments' to be of type Array.";
                return r;
            }
            m.arguments = args->as_array();
            if (const auto* ids = obj.if_contains("streamIds"); ids != nullptr && !ids->is_null()) {
                if (!ids->is_array()) {
                    r.error = "Expected 'streamIds' to be of type Array.";
                    return r;
                }
                for (const auto& id : ids->as_array()) {
                    if (!id.is_string()) {
                        r.error = "Expected 'streamIds' to contain strings.";
                        return r;
                    }
                    m.stream_ids.emplace_back(id.as_string());
                }
            }
            break;
        }
        case MessageType::kStreamItem: {
            if (!get_string("invocationId", true, m.invocation_id)) {
                return r;
            }
            const auto* item = obj.if_contains("item");
            if (item == nullptr) {
                r.error = "Missing required property 'item'.";
                return r;
            }
            m.item = *item;
            break;
        }
        case MessageType::kCompletion: {
            if (!get_string("invocationId", true, m.invocation_id)) {
                return r;
            }
            const auto* result = obj.if_contains("result");
            const auto* error = obj.if_contains("error");
            if (result != nullptr && error != nullptr && !error->is_null()) {
                r.error = "The 'error' and 'result' properties are mutually exclusive.";
                return r;
            }
            if (error != nullptr && !error->is_null()) {
                if (!error->is_string()) {
                    r.error = "Expected 'error' to be of type String.";
                    return r;
                }
                m.error = std::string(error->as_string());
            } else if (result != nullptr) {
                m.result = *result;
            }
            break;
        }
        case MessageType::kCancelInvocation:
            if (!get_string("invocationId", true, m.invocation_id)) {
                return r;
            }
            break;
        case MessageType::kPing:
            break;
        case MessageType::kClose: {
            if (!get_string("error", false, m.error)) {
                return r;
            }
            if (const auto* ar = obj.if_contains("allowReconnect"); ar != nullptr) {
                if (!ar->is_bool() && !ar->is_null()) {
                    r.error = "Expected 'allowReconnect' to be of type Boolean.";
                    return r;
                }
                m.allow_reconnect = ar->is_bool() && ar->as_bool();
            }
            break;
        }
        case MessageType::kAck:
        case MessageType::kSequence: {
            const auto* seq = obj.if_contains("sequenceId");
            std::optional<int64_t> n = seq != nullptr ? AsInteger(*seq) : std::nullopt;
            if (!n) {
                r.error = "Missing or invalid property 'sequenceId'.";
                return r;
            }
            m.sequence_id = *n;
            break;
        }
    }
    r.status = ParseResult::Status::kOk;
    return r;
}

void WriteInvocation(std::string& out,
                     std::optional<std::string_view> invocation_id,
                     std::string_view target,
                     std::string_view arguments_json,
                     const std::vector<std::string>& stream_ids) {
    out += "{\"type\":1,";
    if (invocation_id) {
        out += "\"invocationId\":";
        AppendString(out, *invocation_id);
        out += ',';
    }
    out += "\"target\":";
    AppendString(out, target);
    out += ",\"arguments\":";
    out += arguments_json.empty() ? std::string_view("[]") : arguments_json;
    if (!stream_ids.empty()) {
        out += ",\"streamIds\":[";
        for (size_t i = 0; i < stream_ids.size(); ++i) {
            if (i > 0) {
                out += ',';
            }
            AppendString(out, stream_ids[i]);
        }
        out += ']';
    }
    out += '}';
    out += kRecordSeparator;
}

void WriteStreamItem(std::string& out, std::string_view invocation_id, std::string_view item_json) {
    out += "{\"type\":2,\"invocationId\":";
    AppendString(out, invocation_id);
    out += ",\"item\":";
    out += item_json.empty() ? std::string_view("null") : item_json;
    out += '}';
    out += kRecordSeparator;
}

void WriteCompletion(std::string& out,
                     std::string_view invocation_id,
                     std::optional<std::string_view> result_json,
                     std::optional<std::string_view> error) {
    out += "{\"type\":3,\"invocationId\":";
    AppendString(out, invocation_id);
    if (error) {
        out += ",\"error\":";
        AppendString(out, *error);
    } else if (result_json) {
        out += ",\"result\":";
        out += result_json->empty() ? std::string_view("null") : *result_json;
    }
    out += '}';
    out += kRecordSeparator;
}

void WriteStreamInvocation(std::string& out,
                           std::string_view invocation_id,
                           std::string_view target,
                           std::string_view arguments_json) {
    out += "{\"type\":4,\"invocationId\":";
    AppendString(out, invocation_id);
    out += ",\"target\":";
    AppendString(out, target);
    out += ",\"arguments\":";
    out += arguments_json.empty() ? std::string_view("[]") : arguments_json;
    out += '}';
    out += kRecordSeparator;
}

void WriteCancelInvocation(std::string& out, std::string_view invocation_id) {
    out += "{\"type\":5,\"invocationId\":";
    AppendString(out, invocation_id);
    out += '}';
    out += kRecordSeparator;
}

void WritePing(std::string& out) {
    out += "{\"type\":6}";
    out += kRecordSeparator;
}

void WriteClose(std::string& out, std::optional<std::string_view> error, bool allow_reconnect) {
    out += "{\"type\":7";
    if (error && !error->empty()) {
        out += ",\"error\":";
        AppendString(out, *error);
    }
    if (allow_reconnect) {
        out += ",\"allowReconnect\":true";
    }
    out += '}';
    out += kRecordSeparator;
}

void WriteAck(std::string& out, int64_t sequence_id) {
    out += "{\"type\":8,\"sequenceId\":";
    out += std::to_string(sequence_id);
    out += '}';
    out += kRecordSeparator;
}

void WriteSequence(std::string& out, int64_t sequence_id) {
    out += "{\"type\":9,\"sequenceId\":";
    out += std::to_string(sequence_id);
    out += '}';
    out += kRecordSeparator;
}

std::string ToJson(const boost::json::value& value) { return json::Serialize(value); }

}  // namespace conduit::realtime
