#include "admin/json_writer.hpp"

#include "core/clock.hpp"
#include "core/strings.hpp"

#include <utility>

namespace conduit::admin {

void JsonWriter::BeforeValue() {
    if (after_key_) {
        after_key_ = false;
        return;
    }
    if (!first_.empty()) {
        if (!first_.back()) {
            out_.push_back(',');
        }
        first_.back() = false;
    }
}

JsonWriter& JsonWriter::BeginObject() {
    BeforeValue();
    out_.push_back('{');
    first_.push_back(true);
    return *this;
}

JsonWriter& JsonWriter::EndObject() {
    out_.push_back('}');
    if (!first_.empty()) {
        first_.pop_back();
    }
    return *this;
}

JsonWriter& JsonWriter::BeginArray() {
    BeforeValue();
    out_.push_back('[');
    first_.push_back(true);
    return *this;
}

JsonWriter& JsonWriter::EndArray() {
    out_.push_back(']');
    if (!first_.empty()) {
        first_.pop_back();
    }
    return *this;
}

JsonWriter& JsonWriter::Key(std::string_view key) {
    BeforeValue();
    out_.push_back('"');
    core::AppendJsonEscaped(out_, key);
    out_.append("\":");
    after_key_ = true;
    return *this;
}

JsonWriter& JsonWriter::String(std::string_view value) {
    BeforeValue();
    out_.push_back('"');
    core::AppendJsonEscaped(out_, value);
    out_.push_back('"');
    return *this;
}

JsonWriter& JsonWriter::Int(int64_t value) {
    BeforeValue();
    out_.append(std::to_string(value));
    return *this;
}

JsonWriter& JsonWriter::Bool(bool value) {
    BeforeValue();
    out_.append(value ? "true" : "false");
    return *this;
}

JsonWriter& JsonWriter::Null() {
    BeforeValue();
    out_.append("null");
    return *this;
}

JsonWriter& JsonWriter::Money(core::Micros micros) {
    BeforeValue();
    out_.append(core::FormatMoney(micros));
    return *this;
}

JsonWriter& JsonWriter::Timestamp(int64_t unix_ms) { return String(core::FormatIso8601(unix_ms)); }

JsonWriter& JsonWriter::Raw(std::string_view json) {
    BeforeValue();
    out_.append(json);
    return *this;
}

JsonWriter& JsonWriter::StringField(std::string_view key, std::string_view value) {
    return Key(key).String(value);
}

JsonWriter& JsonWriter::OptStringField(std::string_view key, std::string_view value) {
    Key(key);
    return value.empty() ? Null() : String(value);
}

JsonWriter& JsonWriter::NullableStringField(std::string_view key,
                                            const std::optional<std::string>& value) {
    Key(key);
    return value ? String(*value) : Null();
}

JsonWriter& JsonWriter::IntField(std::string_view key, int64_t value) {
    return Key(key).Int(value);
}

JsonWriter& JsonWriter::OptIntField(std::string_view key, const std::optional<int64_t>& value) {
    Key(key);
    return value ? Int(*value) : Null();
}

JsonWriter& JsonWriter::BoolField(std::string_view key, bool value) { return Key(key).Bool(value); }

JsonWriter& JsonWriter::MoneyField(std::string_view key, core::Micros micros) {
    return Key(key).Money(micros);
}

JsonWriter& JsonWriter::TimestampField(std::string_view key, int64_t unix_ms) {
    return Key(key).Timestamp(unix_ms);
}

JsonWriter& JsonWriter::OptTimestampField(std::string_view key,
                                          const std::optional<int64_t>& unix_ms) {
    Key(key);
    return unix_ms ? Timestamp(*unix_ms) : Null();
}

std::string JsonWriter::Take() {
    std::string out = std::move(out_);
    out_.clear();
    first_.clear();
    after_key_ = false;
    return out;
}

}  // namespace conduit::admin
