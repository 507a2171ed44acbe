#pragma once

#include "core/money.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conduit::admin {

/// A minimal streaming JSON writer for admin responses. Money is written as an exact decimal
/// number (core::FormatMoney), never through a double, so 0.3 stays "0.3".
///
/// Commas are inserted automatically; the caller is responsible for balanced Begin/End calls and
/// for calling Key() before every value inside an object. Not thread-safe (one per response).
class JsonWriter {
public:
    JsonWriter& BeginObject();
    JsonWriter& EndObject();
    JsonWriter& BeginArray();
    JsonWriter& EndArray();
    /// Writes an object member name; the next value call writes its value.
    JsonWriter& Key(std::string_view key);

    JsonWriter& String(std::string_view value);
    JsonWriter& Int(int64_t value);
    JsonWriter& Bool(bool value);
    JsonWriter& Null();
    /// Micro-units as an exact decimal JSON number ("12.5", "0.000001", "3").
    JsonWriter& Money(core::Micros micros);
    /// Unix milliseconds as an ISO-8601 UTC string.
    JsonWriter& Timestamp(int64_t unix_ms);
    /// Already-serialised JSON text, inserted verbatim.
    JsonWriter& Raw(std::string_view json);

    // Member shorthands: Key(key) followed by the value.
    JsonWriter& StringField(std::string_view key, std::string_view value);
    /// The string, or null when it is empty (the store keeps absent text as "").
    JsonWriter& OptStringField(std::string_view key, std::string_view value);
    JsonWriter& NullableStringField(std::string_view key, const std::optional<std::string>& value);
    JsonWriter& IntField(std::string_view key, int64_t value);
    JsonWriter& OptIntField(std::string_view key, const std::optional<int64_t>& value);
    JsonWriter& BoolField(std::string_view key, bool value);
    JsonWriter& MoneyField(std::string_view key, core::Micros micros);
    JsonWriter& TimestampField(std::string_view key, int64_t unix_ms);
    JsonWriter& OptTimestampField(std::string_view key, const std::optional<int64_t>& unix_ms);

    /// The text written so far.
    const std::string& str() const { return out_; }
    /// Moves the text out; the writer is empty afterwards.
    std::string Take();

private:
    void BeforeValue();

    std::string out_;
    std::vector<bool> first_;  // per open container: no element written yet
    bool after_key_ = false;
};

}  // namespace conduit::admin
