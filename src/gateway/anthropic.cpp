#include "gateway/anthropic.hpp"

#include "core/strings.hpp"
#include "gateway/errors.hpp"
#include "json/helpers.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <utility>

namespace conduit::gateway::anthropic {

namespace {

namespace bj = boost::json;
using core::ErrorCode;
using namespace std::string_view_literals;

constexpr int kMaxJsonDepth = 64;

std::string_view View(const bj::string& s) { return {s.data(), s.size()}; }

tl::unexpected<core::Error> Invalid(std::string message, std::string param) {
    return core::Fail(ErrorCode::kInvalidRequest, std::move(message), std::move(param));
}

std::string Indexed(std::string_view base, size_t i) {
    std::string out(base);
    out += '[';
    out += std::to_string(i);
    out += ']';
    return out;
}

/// Parses a JSON text with the gateway's depth limit; nullopt when it does not parse.
std::optional<bj::value> ParseValue(std::string_view text) {
    bj::parse_options options;
    options.max_depth = kMaxJsonDepth;
    boost::system::error_code ec;
    bj::value v = bj::parse(bj::string_view(text.data(), text.size()), ec, {}, options);
    if (ec) {
        return std::nullopt;
    }
    return v;
}

const bj::value* Member(const bj::object& o, std::string_view key) {
    const bj::value* v = o.if_contains(bj::string_view(key.data(), key.size()));
    return v == nullptr || v->is_null() ? nullptr : v;
}

std::string_view StringMember(const bj::object& o, std::string_view key) {
    const bj::value* v = Member(o, key);
    return v != nullptr && v->is_string() ? View(v->get_string()) : std::string_view();
}

int64_t IntMember(const bj::object& o, std::string_view key) {
    const bj::value* v = Member(o, key);
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

bj::object TextBlock(std::string_view text) {
    bj::object b;
    b["type"] = "text";
    b["text"] = bj::string_view(text.data(), text.size());
    return b;
}

// ---------------------------------------------------------------------------------------------
// Request

/// Text of a `content` that may only hold text (system, tool): a string, or an array of
/// `text` parts (joined with `separator`).
core::Result<std::string> TextOnly(const bj::value& content,
                                   const std::string& param,
                                   std::string_view role,
                                   std::string_view separator) {
    if (content.is_string()) {
        return std::string(View(content.get_string()));
    }
    if (!content.is_array()) {
        return Invalid("Invalid type for '" + param + "': expected a string or an array of parts.",
                       param);
    }
    std::string out;
    const bj::array& parts = content.get_array();
    for (size_t i = 0; i < parts.size(); ++i) {
        std::string p = Indexed(param, i);
        const bj::object* part = parts[i].if_object();
        if (part == nullptr) {
            return Invalid("Invalid type for '" + p + "': expected an object.", p);
        }
        std::string_view type = StringMember(*part, "type");
        const bj::value* text = Member(*part, "text");
        if (type != "text" || text == nullptr || !text->is_string()) {
            return Invalid("Only text parts are supported in " + std::string(role) +
                               " messages for Anthropic models ('" + p + "').",
                           p);
        }
        if (!out.empty() && !text->get_string().empty()) {
            out += separator;
        }
        out += View(text->get_string());
    }
    return out;
}

/// An image block for an OpenAI `image_url` part.
core::Result<bj::object> ImageBlock(const bj::object& part, const std::string& param) {
    const bj::value* image = Member(part, "image_url");
    std::string_view url;
    if (image != nullptr && image->is_string()) {
        url = View(image->get_string());
    } else if (image != nullptr && image->is_object()) {
        url = StringMember(image->get_object(), "url");
    }
    if (url.empty()) {
        return Invalid("Missing required parameter: '" + param + ".image_url.url'.",
                       param + ".image_url.url");
    }
    bj::object source;
    if (core::IStartsWith(url, "data:")) {
        size_t comma = url.find(',');
        std::string_view header = url.substr(5, comma == std::string_view::npos ? 0 : comma - 5);
        if (comma == std::string_view::npos || !header.ends_with(";base64")) {
            return Invalid("Invalid image data URL in '" + param +
                               "': expected 'data:<media type>;base64,<data>'.",
                           param + ".image_url.url");
        }
        std::string media = core::ToLower(header.substr(0, header.find(';')));
        if (media == "image/jpg") {
            media = "image/jpeg";
        }
        if (media != "image/jpeg" && media != "image/png" && media != "image/gif" &&
            media != "image/webp") {
            return Invalid("Unsupported image type '" + media + "' in '" + param +
                               "': Anthropic models accept image/jpeg, image/png, image/gif and "
                               "image/webp.",
                           param + ".image_url.url");
        }
        std::string_view data = url.substr(comma + 1);
        if (data.empty()) {
            return Invalid("Empty image data in '" + param + "'.", param + ".image_url.url");
        }
        source["type"] = "base64";
        source["media_type"] = media;
        source["data"] = bj::string_view(data.data(), data.size());
    } else if (core::IStartsWith(url, "http://") || core::IStartsWith(url, "https://")) {
        source["type"] = "url";
        source["url"] = bj::string_view(url.data(), url.size());
    } else {
        return Invalid(
            "Invalid image URL in '" + param + "': expected an http(s) URL or a base64 data URL.",
            param + ".image_url.url");
    }
    bj::object block;
    block["type"] = "image";
    block["source"] = std::move(source);
    return block;
}

/// Appends the content blocks of a user or assistant `content` to `blocks`. Empty texts are
/// dropped (Anthropic rejects empty text blocks).
core::Result<void> AppendContent(const bj::value& content,
                                 const std::string& param,
                                 bool user,
                                 bj::array& blocks) {
    if (content.is_string()) {
        if (!content.get_string().empty()) {
            blocks.emplace_back(TextBlock(View(content.get_string())));
        }
        return {};
    }
    if (!content.is_array()) {
        return Invalid("Invalid type for '" + param + "': expected a string or an array of parts.",
                       param);
    }
    const bj::array& parts = content.get_array();
    for (size_t i = 0; i < parts.size(); ++i) {
        std::string p = Indexed(param, i);
        const bj::object* part = parts[i].if_object();
        if (part == nullptr) {
            return Invalid("Invalid type for '" + p + "': expected an object.", p);
        }
        std::string_view type = StringMember(*part, "type");
        if (type == "text" || (!user && type == "refusal")) {
            const bj::value* text = Member(*part, type == "text" ? "text"sv : "refusal"sv);
            if (text == nullptr || !text->is_string()) {
                return Invalid(
                    "Invalid type for '" + p + "." + std::string(type) + "': expected a string.",
                    p + "." + std::string(type));
            }
            if (!text->get_string().empty()) {
                blocks.emplace_back(TextBlock(View(text->get_string())));
            }
        } else if (user && type == "image_url") {
            auto block = ImageBlock(*part, p);
            if (!block) {
                return tl::unexpected(std::move(block.error()));
            }
            blocks.emplace_back(std::move(*block));
        } else {
            return Invalid("Content part type '" + std::string(type) + "' in '" + p +
                               "' is not supported for Anthropic models.",
                           p + ".type");
        }
    }
    return {};
}

/// tool_use blocks for an assistant message's `tool_calls`.
core::Result<void> AppendToolCalls(const bj::value& calls,
                                   const std::string& param,
                                   bj::array& blocks) {
    if (!calls.is_array()) {
        return Invalid("Invalid type for '" + param + "': expected an array.", param);
    }
    const bj::array& list = calls.get_array();
    for (size_t i = 0; i < list.size(); ++i) {
        std::string p = Indexed(param, i);
        const bj::object* call = list[i].if_object();
        if (call == nullptr) {
            return Invalid("Invalid type for '" + p + "': expected an object.", p);
        }
        std::string_view type = StringMember(*call, "type");
        if (!type.empty() && type != "function") {
            return Invalid("Tool call type '" + std::string(type) + "' in '" + p +
                               "' is not supported for Anthropic models.",
                           p + ".type");
        }
        std::string_view id = StringMember(*call, "id");
        if (id.empty()) {
            return Invalid("Missing required parameter: '" + p + ".id'.", p + ".id");
        }
        const bj::value* fn = Member(*call, "function");
        if (fn == nullptr || !fn->is_object()) {
            return Invalid("Missing required parameter: '" + p + ".function'.", p + ".function");
        }
        std::string_view name = StringMember(fn->get_object(), "name");
        if (name.empty()) {
            return Invalid("Missing required parameter: '" + p + ".function.name'.",
                           p + ".function.name");
        }
        bj::value input = bj::object();
        const bj::value* args = Member(fn->get_object(), "arguments");
        if (args != nullptr) {
            if (!args->is_string()) {
                return Invalid(
                    "Invalid type for '" + p + ".function.arguments': expected a string.",
                    p + ".function.arguments");
            }
            std::string_view text = core::Trim(View(args->get_string()));
            if (!text.empty()) {
                auto parsed = ParseValue(text);
                if (!parsed || !parsed->is_object()) {
                    return Invalid("Invalid value for '" + p +
                                       ".function.arguments': expected a JSON object in a string.",
                                   p + ".function.arguments");
                }
                input = std::move(*parsed);
            }
        }
        bj::object block;
        block["type"] = "tool_use";
        block["id"] = bj::string_view(id.data(), id.size());
        block["name"] = bj::string_view(name.data(), name.size());
        block["input"] = std::move(input);
        blocks.emplace_back(std::move(block));
    }
    return {};
}

/// Appends `blocks` as a turn of `role`, merged into the previous turn when it has the same role.
void AddTurn(bj::array& messages, std::string_view role, bj::array blocks) {
    if (blocks.empty()) {
        return;
    }
    if (!messages.empty()) {
        bj::object& last = messages.back().as_object();
        if (View(last["role"].as_string()) == role) {
            bj::array& content = last["content"].as_array();
            for (auto& b : blocks) {
                content.emplace_back(std::move(b));
            }
            return;
        }
    }
    bj::object m;
    m["role"] = bj::string_view(role.data(), role.size());
    m["content"] = std::move(blocks);
    messages.emplace_back(std::move(m));
}

core::Result<bj::array> TranslateTools(const bj::value& tools) {
    if (!tools.is_array()) {
        return Invalid("Invalid type for 'tools': expected an array.", "tools");
    }
    bj::array out;
    const bj::array& list = tools.get_array();
    for (size_t i = 0; i < list.size(); ++i) {
        std::string p = Indexed("tools", i);
        const bj::object* tool = list[i].if_object();
        if (tool == nullptr) {
            return Invalid("Invalid type for '" + p + "': expected an object.", p);
        }
        std::string_view type = StringMember(*tool, "type");
        if (type != "function") {
            return Invalid("Tool type '" + std::string(type) + "' in '" + p +
                               "' is not supported for Anthropic models (only 'function').",
                           p + ".type");
        }
        const bj::value* fn = Member(*tool, "function");
        if (fn == nullptr || !fn->is_object()) {
            return Invalid("Missing required parameter: '" + p + ".function'.", p + ".function");
        }
        const bj::object& f = fn->get_object();
        std::string_view name = StringMember(f, "name");
        if (name.empty()) {
            return Invalid("Missing required parameter: '" + p + ".function.name'.",
                           p + ".function.name");
        }
        bj::object t;
        t["name"] = bj::string_view(name.data(), name.size());
        if (const bj::value* d = Member(f, "description")) {
            if (!d->is_string()) {
                return Invalid(
                    "Invalid type for '" + p + ".function.description': expected a string.",
                    p + ".function.description");
            }
            t["description"] = *d;
        }
        bj::object schema;
        if (const bj::value* params = Member(f, "parameters")) {
            if (!params->is_object()) {
                return Invalid(
                    "Invalid type for '" + p + ".function.parameters': expected an object.",
                    p + ".function.parameters");
            }
            schema = params->get_object();
        }
        if (!schema.contains("type")) {
            // Anthropic requires an object schema; OpenAI allows omitting it.
            schema["type"] = "object";
            if (!schema.contains("properties")) {
                schema["properties"] = bj::object();
            }
        }
        t["input_schema"] = std::move(schema);
        out.emplace_back(std::move(t));
    }
    return out;
}

/// Anthropic tool_choice for OpenAI's; a null value when the default applies.
core::Result<bj::value> TranslateToolChoice(const bj::value* choice) {
    bj::object out;
    if (choice == nullptr) {
        return bj::value();
    }
    if (choice->is_string()) {
        std::string_view c = View(choice->get_string());
        if (c == "auto") {
            out["type"] = "auto";
        } else if (c == "none") {
            out["type"] = "none";
        } else if (c == "required") {
            out["type"] = "any";
        } else {
            return Invalid(
                "Invalid value for 'tool_choice': expected 'auto', 'none', "
                "'required' or a function.",
                "tool_choice");
        }
        return bj::value(std::move(out));
    }
    if (choice->is_object()) {
        const bj::object& o = choice->get_object();
        const bj::value* fn = Member(o, "function");
        std::string_view name =
            fn != nullptr && fn->is_object() ? StringMember(fn->get_object(), "name") : ""sv;
        if (StringMember(o, "type") != "function" || name.empty()) {
            return Invalid(
                "Invalid value for 'tool_choice': expected "
                "{\"type\":\"function\",\"function\":{\"name\":…}}.",
                "tool_choice");
        }
        out["type"] = "tool";
        out["name"] = bj::string_view(name.data(), name.size());
        return bj::value(std::move(out));
    }
    return Invalid("Invalid type for 'tool_choice': expected a string or an object.",
                   "tool_choice");
}

core::Result<void> TranslateMessages(const bj::value& value,
                                     std::string& system,
                                     bj::array& messages) {
    if (!value.is_array()) {
        return Invalid("Invalid type for 'messages': expected an array.", "messages");
    }
    const bj::array& list = value.get_array();
    for (size_t i = 0; i < list.size(); ++i) {
        std::string p = Indexed("messages", i);
        const bj::object* msg = list[i].if_object();
        if (msg == nullptr) {
            return Invalid("Invalid type for '" + p + "': expected an object.", p);
        }
        const bj::value* role_value = Member(*msg, "role");
        if (role_value == nullptr || !role_value->is_string()) {
            return Invalid("Missing required parameter: '" + p + ".role'.", p + ".role");
        }
        std::string_view role = View(role_value->get_string());
        const bj::value* content = Member(*msg, "content");
        std::string cp = p + ".content";
        if (role == "system" || role == "developer") {
            if (content == nullptr) {
                return Invalid("Missing required parameter: '" + cp + "'.", cp);
            }
            auto text = TextOnly(*content, cp, role, "\n");
            if (!text) {
                return tl::unexpected(std::move(text.error()));
            }
            if (!text->empty()) {
                if (!system.empty()) {
                    system += "\n\n";
                }
                system += *text;
            }
        } else if (role == "user") {
            if (content == nullptr) {
                return Invalid("Missing required parameter: '" + cp + "'.", cp);
            }
            bj::array blocks;
            if (auto r = AppendContent(*content, cp, true, blocks); !r) {
                return r;
            }
            AddTurn(messages, "user", std::move(blocks));
        } else if (role == "assistant") {
            bj::array blocks;
            if (content != nullptr) {
                if (auto r = AppendContent(*content, cp, false, blocks); !r) {
                    return r;
                }
            }
            if (const bj::value* calls = Member(*msg, "tool_calls")) {
                if (auto r = AppendToolCalls(*calls, p + ".tool_calls", blocks); !r) {
                    return r;
                }
            }
            AddTurn(messages, "assistant", std::move(blocks));
        } else if (role == "tool") {
            std::string_view id = StringMember(*msg, "tool_call_id");
            if (id.empty()) {
                return Invalid("Missing required parameter: '" + p + ".tool_call_id'.",
                               p + ".tool_call_id");
            }
            bj::object block;
            block["type"] = "tool_result";
            block["tool_use_id"] = bj::string_view(id.data(), id.size());
            if (content != nullptr) {
                auto text = TextOnly(*content, cp, role, "");
                if (!text) {
                    return tl::unexpected(std::move(text.error()));
                }
                if (!text->empty()) {
                    block["content"] = *text;
                }
            }
            bj::array blocks;
            blocks.emplace_back(std::move(block));
            AddTurn(messages, "user", std::move(blocks));
        } else {
            return Invalid("Invalid value for '" + p + ".role': '" + std::string(role) +
                               "' is not supported for Anthropic models (system, developer, "
                               "user, assistant, tool).",
                           p + ".role");
        }
    }
    if (messages.empty()) {
        return Invalid(
            "'messages' must contain at least one user or assistant message with "
            "content.",
            "messages");
    }
    return {};
}

core::Result<std::optional<double>> GetNumber(const bj::object& o, std::string_view key) {
    const bj::value* v = Member(o, key);
    if (v == nullptr) {
        return std::optional<double>();
    }
    if (!v->is_number()) {
        return Invalid("Invalid type for '" + std::string(key) + "': expected a number.",
                       std::string(key));
    }
    return std::optional<double>(v->to_number<double>());
}

}  // namespace

core::Result<AnthropicRequest> TranslateChatRequest(std::string_view openai_body,
                                                    std::string_view provider_model_id,
                                                    const RequestOptions& options) {
    auto parsed = json::ParseObject(openai_body);
    if (!parsed) {
        return tl::unexpected(std::move(parsed.error()));
    }
    const bj::object& in = *parsed;
    AnthropicRequest result;

    auto n = json::GetInt64(in, "n");
    if (!n) {
        return tl::unexpected(std::move(n.error()));
    }
    if (*n && **n != 1) {
        return Invalid("Anthropic models return one choice per request: 'n' must be 1.", "n");
    }

    for (std::string_view legacy : {"functions"sv, "function_call"sv}) {
        if (Member(in, legacy) != nullptr) {
            return Invalid("The legacy '" + std::string(legacy) +
                               "' parameter is not supported for Anthropic models; use 'tools' "
                               "and 'tool_choice'.",
                           std::string(legacy));
        }
    }

    int64_t max_tokens = options.default_max_tokens;
    for (std::string_view key : {"max_completion_tokens"sv, "max_tokens"sv}) {
        auto v = json::GetInt64(in, key);
        if (!v) {
            return tl::unexpected(std::move(v.error()));
        }
        if (*v) {
            if (**v < 1) {
                return Invalid("Invalid value for '" + std::string(key) + "': must be at least 1.",
                               std::string(key));
            }
            max_tokens = **v;
            break;
        }
    }
    result.max_tokens = max_tokens;

    auto stream = json::GetBool(in, "stream");
    if (!stream) {
        return tl::unexpected(std::move(stream.error()));
    }
    result.stream = stream->value_or(false);
    if (const bj::value* so = Member(in, "stream_options"); so != nullptr && so->is_object()) {
        auto include = json::GetBool(so->get_object(), "include_usage");
        if (!include) {
            include.error().param = "stream_options.include_usage";
            include.error().message =
                "Invalid type for 'stream_options.include_usage': expected a boolean.";
            return tl::unexpected(std::move(include.error()));
        }
        result.include_usage = include->value_or(false);
    }

    const bj::value* messages_value = Member(in, "messages");
    if (messages_value == nullptr) {
        return Invalid("Missing required parameter: 'messages'.", "messages");
    }
    std::string system;
    bj::array messages;
    if (auto r = TranslateMessages(*messages_value, system, messages); !r) {
        return tl::unexpected(std::move(r.error()));
    }

    bj::object out;
    out["model"] = bj::string_view(provider_model_id.data(), provider_model_id.size());
    out["max_tokens"] = max_tokens;
    if (!system.empty()) {
        out["system"] = system;
    }
    out["messages"] = std::move(messages);

    if (const bj::value* stop = Member(in, "stop")) {
        bj::array sequences;
        if (stop->is_string()) {
            sequences.emplace_back(stop->get_string());
        } else if (stop->is_array()) {
            for (const auto& s : stop->get_array()) {
                if (!s.is_string()) {
                    return Invalid(
                        "Invalid type for 'stop': expected a string or an array of "
                        "strings.",
                        "stop");
                }
                sequences.emplace_back(s.get_string());
            }
        } else {
            return Invalid("Invalid type for 'stop': expected a string or an array of strings.",
                           "stop");
        }
        if (!sequences.empty()) {
            out["stop_sequences"] = std::move(sequences);
        }
    }
    for (std::string_view key : {"temperature"sv, "top_p"sv}) {
        auto v = GetNumber(in, key);
        if (!v) {
            return tl::unexpected(std::move(v.error()));
        }
        if (*v) {
            out[bj::string_view(key.data(), key.size())] = *Member(in, key);
        }
    }

    if (const bj::value* tools = Member(in, "tools")) {
        auto translated = TranslateTools(*tools);
        if (!translated) {
            return tl::unexpected(std::move(translated.error()));
        }
        auto choice = TranslateToolChoice(Member(in, "tool_choice"));
        if (!choice) {
            return tl::unexpected(std::move(choice.error()));
        }
        auto parallel = json::GetBool(in, "parallel_tool_calls");
        if (!parallel) {
            return tl::unexpected(std::move(parallel.error()));
        }
        if (!translated->empty()) {
            out["tools"] = std::move(*translated);
            if (*parallel && !**parallel) {
                if (choice->is_null()) {
                    choice->emplace_object()["type"] = "auto";
                }
                if (View(choice->as_object()["type"].as_string()) != "none") {
                    choice->as_object()["disable_parallel_tool_use"] = true;
                }
            }
            if (!choice->is_null()) {
                out["tool_choice"] = std::move(*choice);
            }
        }
    }

    auto user = json::GetString(in, "user");
    if (!user) {
        return tl::unexpected(std::move(user.error()));
    }
    if (*user && !(*user)->empty()) {
        bj::object metadata;
        metadata["user_id"] = **user;
        out["metadata"] = std::move(metadata);
    }
    if (result.stream) {
        out["stream"] = true;
    }
    if (options.forward_mock_fields) {
        for (const auto& kv : in) {
            if (kv.key().starts_with("mock_")) {
                out[kv.key()] = kv.value();
            }
        }
    }
    result.body = json::Serialize(out);
    return result;
}

net::Headers UpstreamHeaders(std::string_view api_key, bool stream) {
    net::Headers h;
    h.reserve(4);
    if (!api_key.empty()) {
        h.Add("x-api-key", std::string(api_key));
    }
    h.Add("anthropic-version", std::string(kApiVersion));
    h.Add("content-type", "application/json");
    h.Add("accept", stream ? "text/event-stream" : "application/json");
    return h;
}

// ---------------------------------------------------------------------------------------------
// Responses

json::Usage Usage::ToOpenAI() const {
    json::Usage u;
    u.prompt_tokens = PromptTokens();
    u.completion_tokens = output_tokens;
    u.total_tokens = u.prompt_tokens + u.completion_tokens;
    u.present = present;
    return u;
}

std::string_view FinishReason(std::string_view stop_reason) {
    if (stop_reason == "max_tokens" || stop_reason == "model_context_window_exceeded") {
        return "length";
    }
    if (stop_reason == "tool_use") {
        return "tool_calls";
    }
    if (stop_reason == "refusal") {
        return "content_filter";
    }
    return "stop";
}

namespace {

/// Reads the counts present in an Anthropic `usage` object into `usage` (absent counts keep
/// their value: message_delta repeats only some of them).
void ReadUsage(const bj::value* value, Usage& usage) {
    if (value == nullptr || !value->is_object()) {
        return;
    }
    const bj::object& u = value->get_object();
    usage.present = true;
    auto read = [&](std::string_view key, int64_t& field) {
        if (Member(u, key) != nullptr) {
            field = IntMember(u, key);
        }
    };
    read("input_tokens", usage.input_tokens);
    read("output_tokens", usage.output_tokens);
    read("cache_creation_input_tokens", usage.cache_creation_input_tokens);
    read("cache_read_input_tokens", usage.cache_read_input_tokens);
}

void AppendUsageJson(std::string& out, const Usage& usage) {
    out += R"("usage":{"prompt_tokens":)";
    out += std::to_string(usage.PromptTokens());
    out += R"(,"completion_tokens":)";
    out += std::to_string(usage.output_tokens);
    out += R"(,"total_tokens":)";
    out += std::to_string(usage.PromptTokens() + usage.output_tokens);
    out += R"(,"prompt_tokens_details":{"cached_tokens":)";
    out += std::to_string(usage.cache_read_input_tokens);
    out += "}}";
}

}  // namespace

core::Result<ChatResponse> TranslateChatResponse(std::string_view anthropic_body,
                                                 std::string_view alias,
                                                 int64_t created_s) {
    auto invalid = [] {
        return core::Fail(ErrorCode::kUpstreamError,
                          "The upstream provider returned an invalid Messages API response.");
    };
    auto parsed = ParseValue(anthropic_body);
    if (!parsed || !parsed->is_object()) {
        return invalid();
    }
    const bj::object& in = parsed->get_object();
    const bj::value* content = Member(in, "content");
    if (StringMember(in, "type") != "message" || content == nullptr || !content->is_array()) {
        return invalid();
    }
    ChatResponse result;
    std::string text;
    bool has_text = false;
    bj::array tool_calls;
    for (const auto& b : content->get_array()) {
        const bj::object* block = b.if_object();
        if (block == nullptr) {
            return invalid();
        }
        std::string_view type = StringMember(*block, "type");
        if (type == "text") {
            has_text = true;
            text += StringMember(*block, "text");
        } else if (type == "tool_use") {
            bj::object fn;
            fn["name"] = StringMember(*block, "name");
            const bj::value* input = Member(*block, "input");
            fn["arguments"] = input != nullptr ? json::Serialize(*input) : std::string("{}");
            bj::object call;
            call["id"] = StringMember(*block, "id");
            call["type"] = "function";
            call["function"] = std::move(fn);
            tool_calls.emplace_back(std::move(call));
        }
        // thinking, redacted_thinking, server tool blocks, …: not part of OpenAI's shape.
    }
    ReadUsage(Member(in, "usage"), result.usage);

    bj::object message;
    message["role"] = "assistant";
    if (has_text || tool_calls.empty()) {
        message["content"] = text;
    } else {
        message["content"] = nullptr;
    }
    message["refusal"] = nullptr;
    if (!tool_calls.empty()) {
        message["tool_calls"] = std::move(tool_calls);
    }
    bj::object choice;
    choice["index"] = 0;
    choice["message"] = std::move(message);
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = FinishReason(StringMember(in, "stop_reason"));

    std::string id(StringMember(in, "id"));
    std::string out;
    out.reserve(anthropic_body.size() + 256);
    out += R"({"id":)";
    out += core::JsonQuote(id);
    out += R"(,"object":"chat.completion","created":)";
    out += std::to_string(created_s);
    out += R"(,"model":)";
    out += core::JsonQuote(alias);
    out += R"(,"choices":[)";
    json::SerializeTo(out, choice);
    out += "],";
    AppendUsageJson(out, result.usage);
    out += '}';
    result.body = std::move(out);
    return result;
}

MappedError MapError(int upstream_status, std::string_view anthropic_body) {
    std::string type;
    std::string message;
    if (auto parsed = ParseValue(anthropic_body); parsed && parsed->is_object()) {
        const bj::value* err = Member(parsed->get_object(), "error");
        if (err != nullptr && err->is_object()) {
            type = StringMember(err->get_object(), "type");
            message = StringMember(err->get_object(), "message");
        }
    }
    auto make = [&](ErrorCode code, std::string text) {
        MappedError m;
        m.error = core::Error{code, std::move(text), ""};
        m.status = HttpStatus(code);
        m.anthropic_type = type;
        return m;
    };
    auto client_message = [&](std::string_view fallback) {
        return message.empty() ? std::string(fallback) : message;
    };
    std::string status_text =
        upstream_status > 0 ? " (HTTP " + std::to_string(upstream_status) + ")" : "";
    if (type == "invalid_request_error") {
        return make(ErrorCode::kInvalidRequest,
                    client_message("The upstream provider rejected the request."));
    }
    if (type == "authentication_error") {
        // Anthropic's text talks about *its* API key (the deployment's), not the client's key.
        return make(ErrorCode::kUnauthorized,
                    "The upstream provider rejected the API key configured for this model.");
    }
    if (type == "permission_error") {
        return make(ErrorCode::kForbidden,
                    client_message("The upstream provider denied access to this model."));
    }
    if (type == "not_found_error") {
        return make(ErrorCode::kNotFound,
                    client_message("The upstream provider does not know this resource."));
    }
    if (type == "request_too_large") {
        return make(ErrorCode::kRequestTooLarge,
                    client_message("The request is too large for the upstream provider."));
    }
    if (type == "rate_limit_error") {
        return make(ErrorCode::kRateLimited,
                    client_message("The upstream provider's rate limit was reached."));
    }
    if (type == "overloaded_error" || (type.empty() && upstream_status == 529)) {
        return make(ErrorCode::kUnavailable,
                    "The upstream provider is overloaded" + status_text + "; retry later.");
    }
    if (type == "timeout_error" || (type.empty() && upstream_status == 504)) {
        return make(ErrorCode::kUpstreamTimeout,
                    "The upstream provider timed out" + status_text + ".");
    }
    if (type == "billing_error") {
        return make(
            ErrorCode::kUpstreamError,
            "The upstream provider refused the request for billing reasons" + status_text + ".");
    }
    if (upstream_status >= 400 && upstream_status < 500) {
        return make(CodeForStatus(upstream_status),
                    client_message("The upstream provider returned HTTP " +
                                   std::to_string(upstream_status) + "."));
    }
    // api_error, unknown types and 5xx: a provider fault; its text may reveal internals.
    std::string what = type.empty() ? std::string() : " (" + type + ")";
    if (upstream_status > 0) {
        return make(ErrorCode::kUpstreamError, "The upstream provider returned HTTP " +
                                                   std::to_string(upstream_status) + what + ".");
    }
    return make(ErrorCode::kUpstreamError, "The upstream provider failed" + what + ".");
}

// ---------------------------------------------------------------------------------------------
// Streams

AnthropicStreamTranslator::AnthropicStreamTranslator(Options options)
    : options_(std::move(options)) {}

void AnthropicStreamTranslator::AppendChunkStart(std::string& out) const {
    out += R"(data: {"id":)";
    out += core::JsonQuote(id_);
    out += R"(,"object":"chat.completion.chunk","created":)";
    out += std::to_string(options_.created_s);
    out += R"(,"model":)";
    out += core::JsonQuote(options_.alias);
    out += ',';
}

void AnthropicStreamTranslator::EmitError(MappedError error, std::string& out) {
    out += "data: ";
    out += ErrorBody(error.error);
    out += "\n\n";
    finished_ = true;
    failed_ = std::move(error);
}

bool AnthropicStreamTranslator::Feed(std::string_view bytes, std::string& out) {
    return scanner_.Feed(bytes, [&](const json::SseScanner::Event& ev) { OnEvent(ev, out); });
}

void AnthropicStreamTranslator::OnEvent(const json::SseScanner::Event& event, std::string& out) {
    if (event.is_comment_only || !event.has_data) {
        return;
    }
    OnEvent(event.event_name, event.data, out);
}

void AnthropicStreamTranslator::OnEvent(std::string_view event_name,
                                        std::string_view data,
                                        std::string& out) {
    if (finished_) {
        return;
    }
    auto parsed = ParseValue(data);
    if (!parsed || !parsed->is_object()) {
        MappedError unreadable = MapError(0, "");
        unreadable.error.message = "The upstream provider sent an unreadable stream event.";
        EmitError(std::move(unreadable), out);
        return;
    }
    const bj::object& o = parsed->get_object();
    std::string_view type = StringMember(o, "type");
    if (type.empty()) {
        type = event_name;
    }
    auto role_chunk = [&] {
        started_ = true;
        AppendChunkStart(out);
        out += R"("choices":[{"index":0,"delta":{"role":"assistant","content":""},)"
               R"("logprobs":null,"finish_reason":null}]})"
               "\n\n";
    };
    auto content_chunk = [&](std::string_view text) {
        if (!started_) {
            role_chunk();
        }
        ++content_chunks_;
        AppendChunkStart(out);
        out += R"("choices":[{"index":0,"delta":{"content":")";
        core::AppendJsonEscaped(out, text);
        out += R"("},"logprobs":null,"finish_reason":null}]})"
               "\n\n";
    };
    auto finish_chunk = [&] {
        if (!started_) {
            role_chunk();
        }
        AppendChunkStart(out);
        out += R"("choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":")";
        out += FinishReason(stop_reason_);
        out += R"("}]})"
               "\n\n";
    };

    if (type == "message_start") {
        if (const bj::value* m = Member(o, "message"); m != nullptr && m->is_object()) {
            id_ = StringMember(m->get_object(), "id");
            ReadUsage(Member(m->get_object(), "usage"), usage_);
        }
        if (!started_) {
            role_chunk();
        }
    } else if (type == "content_block_start") {
        int64_t index = IntMember(o, "index");
        const bj::value* b = Member(o, "content_block");
        if (b == nullptr || !b->is_object() || index < 0 || index > 100000) {
            return;
        }
        const bj::object& block = b->get_object();
        std::string_view block_type = StringMember(block, "type");
        if (tool_index_.size() <= static_cast<size_t>(index)) {
            tool_index_.resize(static_cast<size_t>(index) + 1, -1);
        }
        if (block_type == "text") {
            std::string_view text = StringMember(block, "text");
            if (!text.empty()) {
                content_chunk(text);
            }
        } else if (block_type == "tool_use") {
            if (!started_) {
                role_chunk();
            }
            int64_t k = tool_count_++;
            tool_index_[static_cast<size_t>(index)] = k;
            ++content_chunks_;
            AppendChunkStart(out);
            out += R"("choices":[{"index":0,"delta":{"tool_calls":[{"index":)";
            out += std::to_string(k);
            out += R"(,"id":)";
            out += core::JsonQuote(StringMember(block, "id"));
            out += R"(,"type":"function","function":{"name":)";
            out += core::JsonQuote(StringMember(block, "name"));
            out += R"(,"arguments":""}}]},"logprobs":null,"finish_reason":null}]})"
                   "\n\n";
        }
    } else if (type == "content_block_delta") {
        const bj::value* d = Member(o, "delta");
        if (d == nullptr || !d->is_object()) {
            return;
        }
        const bj::object& delta = d->get_object();
        std::string_view delta_type = StringMember(delta, "type");
        if (delta_type == "text_delta") {
            std::string_view text = StringMember(delta, "text");
            if (!text.empty()) {
                content_chunk(text);
            }
        } else if (delta_type == "input_json_delta") {
            int64_t index = IntMember(o, "index");
            std::string_view partial = StringMember(delta, "partial_json");
            if (index < 0 || static_cast<size_t>(index) >= tool_index_.size() ||
                tool_index_[static_cast<size_t>(index)] < 0 || partial.empty()) {
                return;
            }
            ++content_chunks_;
            AppendChunkStart(out);
            out += R"("choices":[{"index":0,"delta":{"tool_calls":[{"index":)";
            out += std::to_string(tool_index_[static_cast<size_t>(index)]);
            out += R"(,"function":{"arguments":")";
            core::AppendJsonEscaped(out, partial);
            out += R"("}}]},"logprobs":null,"finish_reason":null}]})"
                   "\n\n";
        }
        // thinking_delta, signature_delta, citations_delta: no OpenAI counterpart.
    } else if (type == "message_delta") {
        if (const bj::value* d = Member(o, "delta"); d != nullptr && d->is_object()) {
            stop_reason_ = StringMember(d->get_object(), "stop_reason");
        }
        ReadUsage(Member(o, "usage"), usage_);
        if (stop_reason_.empty()) {
            stop_reason_ = "end_turn";
        }
        finish_chunk();
    } else if (type == "message_stop") {
        if (stop_reason_.empty()) {
            stop_reason_ = "end_turn";
            finish_chunk();
        }
        if (options_.include_usage) {
            AppendChunkStart(out);
            out += R"("choices":[],)";
            AppendUsageJson(out, usage_);
            out += "}\n\n";
        }
        out += "data: [DONE]\n\n";
        finished_ = true;
    } else if (type == "error") {
        EmitError(MapError(0, data), out);
    }
    // ping, content_block_stop and event types added later: nothing to send.
}

}  // namespace conduit::gateway::anthropic
