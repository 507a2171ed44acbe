#include "json/json_peek.hpp"

#include "core/strings.hpp"
#include "json/simd_parser.hpp"

#include <boost/json/parse.hpp>

#include <algorithm>
#include <array>
#include <string>
#include <string_view>
#include <utility>

namespace conduit::json {

namespace {

namespace od = simdjson::ondemand;

constexpr std::string_view kUnparsable = "We could not parse the JSON body of your request.";

tl::unexpected<core::Error> ParseFailure() {
    return core::Fail(core::ErrorCode::kInvalidRequest, std::string(kUnparsable));
}

tl::unexpected<core::Error> TypeFailure(std::string_view param, std::string_view expected) {
    std::string message = "Invalid type for '";
    message.append(param).append("': expected ").append(expected).append(".");
    return core::Fail(core::ErrorCode::kInvalidRequest, std::move(message), std::string(param));
}

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/// simdjson's raw tokens run up to the next token; drop the trailing whitespace.
std::string_view TrimToken(std::string_view token) {
    while (!token.empty() && IsJsonSpace(token.back())) {
        token.remove_suffix(1);
    }
    return token;
}

/// Outcome of reading one typed member.
enum class Read { kValue, kNull, kWrongType, kMalformed };

/// Classifies `v`: kNull for a valid `null`, kMalformed when simdjson cannot tell its type.
Read Classify(od::value& v, od::json_type& type) {
    if (v.type().get(type) != simdjson::SUCCESS) {
        return Read::kMalformed;
    }
    if (type == od::json_type::null) {
        bool is_null = false;
        if (v.is_null().get(is_null) != simdjson::SUCCESS || !is_null) {
            return Read::kMalformed;
        }
        return Read::kNull;
    }
    return Read::kValue;
}

Read ReadString(od::value& v, std::optional<std::string>& out) {
    od::json_type type{};
    Read r = Classify(v, type);
    if (r != Read::kValue) {
        if (r == Read::kNull) {
            out.reset();
        }
        return r;
    }
    if (type != od::json_type::string) {
        return Read::kWrongType;
    }
    std::string_view s;
    if (v.get_string().get(s) != simdjson::SUCCESS) {
        return Read::kMalformed;
    }
    out.emplace(s);
    return Read::kValue;
}

Read ReadBool(od::value& v, std::optional<bool>& out) {
    od::json_type type{};
    Read r = Classify(v, type);
    if (r != Read::kValue) {
        if (r == Read::kNull) {
            out.reset();
        }
        return r;
    }
    if (type != od::json_type::boolean) {
        return Read::kWrongType;
    }
    bool b = false;
    if (v.get_bool().get(b) != simdjson::SUCCESS) {
        return Read::kMalformed;
    }
    out = b;
    return Read::kValue;
}

Read ReadInt(od::value& v, std::optional<int64_t>& out) {
    od::json_type type{};
    Read r = Classify(v, type);
    if (r != Read::kValue) {
        if (r == Read::kNull) {
            out.reset();
        }
        return r;
    }
    if (type != od::json_type::number) {
        return Read::kWrongType;
    }
    int64_t i = 0;
    // A fraction, an exponent or an out-of-range value all mean "not an int64".
    if (v.get_int64().get(i) != simdjson::SUCCESS) {
        return Read::kWrongType;
    }
    out = i;
    return Read::kValue;
}

/// Turns a Read outcome into the request's error, if any.
std::optional<tl::unexpected<core::Error>> Check(Read r,
                                                 std::string_view param,
                                                 std::string_view expected) {
    switch (r) {
        case Read::kValue:
        case Read::kNull:
            return std::nullopt;
        case Read::kWrongType:
            return TypeFailure(param, expected);
        case Read::kMalformed:
            break;
    }
    return ParseFailure();
}

size_t OffsetIn(std::string_view body, std::string_view token) {
    return static_cast<size_t>(token.data() - body.data());
}

/// Reads `stream_options`, an object or null.
std::optional<tl::unexpected<core::Error>> ReadStreamOptions(std::string_view body,
                                                             od::value& v,
                                                             PeekedRequest& out) {
    od::json_type type{};
    Read r = Classify(v, type);
    if (r == Read::kMalformed) {
        return ParseFailure();
    }
    const std::string_view token = TrimToken(v.raw_json_token());
    out.stream_options_offset = OffsetIn(body, token);
    out.stream_options_length = token.size();
    out.stream_options_empty = true;
    out.has_stream_options = false;
    out.include_usage.reset();
    out.include_usage_offset = 0;
    out.include_usage_length = 0;
    if (r == Read::kNull) {
        return std::nullopt;
    }
    if (type != od::json_type::object) {
        return TypeFailure("stream_options", "an object");
    }
    out.stream_options_length = 1;  // just the '{'
    out.has_stream_options = true;
    od::object options;
    if (v.get_object().get(options) != simdjson::SUCCESS) {
        return ParseFailure();
    }
    for (auto member : options) {
        od::field field;
        std::string_view key;
        if (std::move(member).get(field) != simdjson::SUCCESS ||
            field.unescaped_key().get(key) != simdjson::SUCCESS) {
            return ParseFailure();
        }
        out.stream_options_empty = false;
        if (key != "include_usage") {
            continue;
        }
        od::value value = field.value();
        const std::string_view usage_token = TrimToken(value.raw_json_token());
        out.include_usage_offset = OffsetIn(body, usage_token);
        out.include_usage_length = usage_token.size();
        if (auto e = Check(ReadBool(value, out.include_usage), "stream_options.include_usage",
                           "a boolean")) {
            return e;
        }
    }
    return std::nullopt;
}

core::Result<PeekedRequest> PeekWith(od::parser& parser, std::string& body) {
    detail::EnsurePadding(body);
    const std::string_view text(body);
    od::document doc;
    if (parser.iterate(simdjson::padded_string_view(body.data(), body.size(), body.capacity()))
            .get(doc) != simdjson::SUCCESS) {
        return ParseFailure();
    }
    od::json_type top{};
    if (doc.type().get(top) != simdjson::SUCCESS) {
        return ParseFailure();
    }
    if (top != od::json_type::object) {
        // Rare path: say "malformed" or "not an object" correctly.
        boost::system::error_code ec;
        (void)boost::json::parse(text, ec);
        if (ec) {
            return ParseFailure();
        }
        return core::Fail(core::ErrorCode::kInvalidRequest,
                          "The request body must be a JSON object.");
    }
    od::object object;
    if (doc.get_object().get(object) != simdjson::SUCCESS) {
        return ParseFailure();
    }

    PeekedRequest out;
    out.object_offset =
        static_cast<size_t>(std::find_if_not(text.begin(), text.end(), IsJsonSpace) - text.begin());
    std::optional<int64_t> max_tokens;
    std::optional<int64_t> max_completion_tokens;

    for (auto member : object) {
        od::field field;
        std::string_view key;
        if (std::move(member).get(field) != simdjson::SUCCESS ||
            field.unescaped_key().get(key) != simdjson::SUCCESS) {
            return ParseFailure();
        }
        out.object_empty = false;
        if (key.empty()) {
            continue;
        }
        // Dispatch on the first letter first: most members of a chat body are none of ours.
        switch (key.front()) {
            case 'm': {
                if (key == "model") {
                    od::value v = field.value();
                    // The span of a null is kept too, so a rewrite replaces it instead of adding
                    // a duplicate key.
                    const std::string_view raw = TrimToken(v.raw_json_token());
                    if (auto e = Check(ReadString(v, out.model), key, "a string")) {
                        return *e;
                    }
                    out.model_offset = OffsetIn(text, raw);
                    out.model_length = raw.size();
                } else if (key == "messages") {
                    od::value v = field.value();
                    od::json_type type{};
                    const Read r = Classify(v, type);
                    if (r == Read::kMalformed) {
                        return ParseFailure();
                    }
                    out.has_messages = r != Read::kNull;
                } else if (key == "max_tokens") {
                    od::value v = field.value();
                    if (auto e = Check(ReadInt(v, max_tokens), key, "an integer")) {
                        return *e;
                    }
                } else if (key == "max_completion_tokens") {
                    od::value v = field.value();
                    if (auto e = Check(ReadInt(v, max_completion_tokens), key, "an integer")) {
                        return *e;
                    }
                }
                break;
            }
            case 's': {
                if (key == "stream") {
                    od::value v = field.value();
                    if (auto e = Check(ReadBool(v, out.stream), key, "a boolean")) {
                        return *e;
                    }
                } else if (key == "stream_options") {
                    od::value v = field.value();
                    if (auto e = ReadStreamOptions(text, v, out)) {
                        return *e;
                    }
                } else if (key == "size") {
                    od::value v = field.value();
                    if (auto e = Check(ReadString(v, out.size), key, "a string")) {
                        return *e;
                    }
                }
                break;
            }
            case 'n': {
                if (key == "n") {
                    od::value v = field.value();
                    if (auto e = Check(ReadInt(v, out.n), key, "an integer")) {
                        return *e;
                    }
                }
                break;
            }
            case 'e': {
                if (key == "encoding_format") {
                    od::value v = field.value();
                    if (auto e = Check(ReadString(v, out.encoding_format), key, "a string")) {
                        return *e;
                    }
                }
                break;
            }
            case 'p':
            case 'i': {
                if (key == "prompt" || key == "input") {
                    od::value v = field.value();
                    od::json_type type{};
                    Read r = Classify(v, type);
                    if (r == Read::kMalformed) {
                        return ParseFailure();
                    }
                    (key == "prompt" ? out.has_prompt : out.has_input) = r != Read::kNull;
                }
                break;
            }
            case 'r': {
                if (key == "response_format") {
                    od::value v = field.value();
                    od::json_type type{};
                    Read r = Classify(v, type);
                    if (r == Read::kMalformed) {
                        return ParseFailure();
                    }
                    out.response_format_str.reset();
                    if (r == Read::kValue && type == od::json_type::string &&
                        ReadString(v, out.response_format_str) == Read::kMalformed) {
                        return ParseFailure();
                    }
                }
                break;
            }
            default:
                break;
        }
    }

    // The object is closed; anything but whitespace after it is an error.
    const char* trailing = nullptr;
    if (doc.current_location().get(trailing) != simdjson::OUT_OF_BOUNDS) {
        return ParseFailure();
    }
    out.max_tokens = max_completion_tokens ? max_completion_tokens : max_tokens;
    return out;
}

/// What an edit writes in place of its span.
enum class EditKind { kModelLiteral, kFixed, kTopMembers };

struct Edit {
    size_t offset = 0;
    size_t length = 0;  // bytes of the body replaced; 0 = pure insertion
    EditKind kind = EditKind::kFixed;
    std::string_view fixed;
};

constexpr std::string_view kUsageMember = R"("stream_options":{"include_usage":true})";
constexpr std::string_view kUsageObject = R"({"include_usage":true})";

}  // namespace

core::Result<PeekedRequest> PeekRequest(std::string& body) {
    return detail::WithParser(body.size(),
                              [&body](od::parser& parser) { return PeekWith(parser, body); });
}

bool NeedsIncludeUsage(const PeekedRequest& peek) {
    return peek.stream.value_or(false) && !peek.include_usage.value_or(false);
}

std::string RewriteForUpstream(std::string_view body,
                               const PeekedRequest& peek,
                               std::optional<std::string_view> new_model,
                               bool force_include_usage) {
    std::array<Edit, 3> edits{};
    size_t count = 0;
    bool insert_model = false;
    bool insert_usage = false;

    if (new_model) {
        if (peek.model_length > 0) {
            edits[count++] = Edit{peek.model_offset, peek.model_length, EditKind::kModelLiteral};
        } else {
            insert_model = true;
        }
    }
    if (force_include_usage && NeedsIncludeUsage(peek)) {
        if (peek.stream_options_length == 0) {
            insert_usage = true;
        } else if (!peek.has_stream_options) {  // "stream_options": null
            edits[count++] = Edit{peek.stream_options_offset, peek.stream_options_length,
                                  EditKind::kFixed, kUsageObject};
        } else if (peek.include_usage_length > 0) {  // include_usage: false / null
            edits[count++] = Edit{peek.include_usage_offset, peek.include_usage_length,
                                  EditKind::kFixed, "true"};
        } else {
            edits[count++] =
                Edit{peek.stream_options_offset + 1, 0, EditKind::kFixed,
                     peek.stream_options_empty ? std::string_view(R"("include_usage":true)")
                                               : std::string_view(R"("include_usage":true,)")};
        }
    }
    if (insert_model || insert_usage) {
        edits[count++] = Edit{peek.object_offset + 1, 0, EditKind::kTopMembers};
    }
    for (size_t i = 0; i < count; ++i) {
        if (edits[i].offset + edits[i].length > body.size()) {
            return std::string(body);  // `peek` does not describe this body; change nothing
        }
    }
    std::sort(edits.begin(), edits.begin() + static_cast<std::ptrdiff_t>(count),
              [](const Edit& a, const Edit& b) { return a.offset < b.offset; });

    std::string out;
    out.reserve(body.size() + (new_model ? new_model->size() + 16 : 0) +
                (force_include_usage ? kUsageMember.size() + 2 : 0));
    auto append_model = [&out, &new_model] {
        out.push_back('"');
        core::AppendJsonEscaped(out, *new_model);
        out.push_back('"');
    };
    size_t cursor = 0;
    for (size_t i = 0; i < count; ++i) {
        const Edit& edit = edits[i];
        out.append(body.substr(cursor, edit.offset - cursor));
        switch (edit.kind) {
            case EditKind::kModelLiteral:
                append_model();
                break;
            case EditKind::kFixed:
                out.append(edit.fixed);
                break;
            case EditKind::kTopMembers:
                if (insert_model) {
                    out.append(R"("model":)");
                    append_model();
                    if (insert_usage) {
                        out.push_back(',');
                    }
                }
                if (insert_usage) {
                    out.append(kUsageMember);
                }
                if (!peek.object_empty) {
                    out.push_back(',');
                }
                break;
        }
        cursor = edit.offset + edit.length;
    }
    out.append(body.substr(cursor));
    return out;
}

std::string ReplaceModel(std::string_view body,
                         const PeekedRequest& peek,
                         std::string_view new_model) {
    return RewriteForUpstream(body, peek, new_model, false);
}

std::string ForceIncludeUsage(std::string_view body, const PeekedRequest& peek) {
    return RewriteForUpstream(body, peek, std::nullopt, true);
}

}  // namespace conduit::json
