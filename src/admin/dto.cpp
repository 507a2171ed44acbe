#include "admin/dto.hpp"

#include "domain/snapshot.hpp"

namespace conduit::admin::detail {

std::string_view TransactionTypeName(domain::TransactionType type) {
    switch (type) {
        case domain::TransactionType::kCredit:
            return "Credit";
        case domain::TransactionType::kDebit:
            return "Debit";
        case domain::TransactionType::kRefund:
            return "Refund";
        case domain::TransactionType::kAdjustment:
            return "Adjustment";
    }
    return "Adjustment";
}

std::string_view ReferenceTypeName(domain::ReferenceType type) {
    switch (type) {
        case domain::ReferenceType::kManual:
            return "Manual";
        case domain::ReferenceType::kVirtualKey:
            return "VirtualKey";
        case domain::ReferenceType::kSystem:
            return "System";
        case domain::ReferenceType::kInitial:
            return "Initial";
    }
    return "Manual";
}

std::string ProviderKeyHint(std::string_view api_key) {
    constexpr size_t kMinLengthForHint = 12;
    constexpr size_t kHintLength = 4;
    if (api_key.size() < kMinLengthForHint) {
        return {};
    }
    return std::string(api_key.substr(api_key.size() - kHintLength));
}

std::string MaskedProviderKey(std::string_view hint) {
    std::string out = "\xE2\x80\xA6";  // "…"
    out.append(hint);
    return out;
}

void WriteGroup(JsonWriter& w, const domain::VirtualKeyGroup& g, int64_t key_count, bool close) {
    w.BeginObject()
        .IntField("id", g.id)
        .StringField("groupName", g.group_name)
        .NullableStringField("externalGroupId", g.external_group_id)
        .MoneyField("balance", g.balance)
        .MoneyField("lifetimeCreditsAdded", g.lifetime_credits_added)
        .MoneyField("lifetimeSpent", g.lifetime_spent)
        .IntField("virtualKeyCount", key_count)
        .TimestampField("createdAt", g.created_at_ms)
        .TimestampField("updatedAt", g.updated_at_ms);
    if (close) {
        w.EndObject();
    }
}

void WriteTransaction(JsonWriter& w, const domain::GroupTransaction& t) {
    w.BeginObject()
        .IntField("id", t.id)
        .IntField("virtualKeyGroupId", t.group_id)
        .StringField("transactionType", TransactionTypeName(t.type))
        .MoneyField("amount", t.amount)
        .MoneyField("balanceAfter", t.balance_after)
        .StringField("referenceType", ReferenceTypeName(t.reference_type))
        .OptStringField("referenceId", t.reference_id)
        .OptStringField("description", t.description)
        .OptStringField("initiatedBy", t.initiated_by)
        .TimestampField("createdAt", t.created_at_ms)
        .EndObject();
}

void WriteKeyInfo(JsonWriter& w, const domain::VirtualKey& k) {
    w.BeginObject()
        .IntField("id", k.id)
        .StringField("keyName", k.key_name)
        .StringField("keyPrefix", k.key_prefix)
        .OptStringField("allowedModels", k.allowed_models)
        .IntField("virtualKeyGroupId", k.group_id)
        .BoolField("isEnabled", k.is_enabled)
        .OptTimestampField("expiresAt", k.expires_at_ms)
        .OptStringField("metadata", k.metadata)
        .OptIntField("rateLimitRpm", k.rate_limit_rpm)
        .OptIntField("rateLimitRpd", k.rate_limit_rpd)
        .OptIntField("rateLimitTpm", k.rate_limit_tpm)
        .Key("maxBudget");
    if (k.max_budget) {
        w.Money(*k.max_budget);
    } else {
        w.Null();
    }
    w.OptStringField("budgetDuration", k.budget_duration)
        .OptStringField("description", k.description)
        .TimestampField("createdAt", k.created_at_ms)
        .TimestampField("updatedAt", k.updated_at_ms)
        .EndObject();
}

void WriteProvider(JsonWriter& w, const domain::Provider& p, int64_t key_count) {
    w.BeginObject()
        .IntField("id", p.id)
        .IntField("providerType", static_cast<int64_t>(p.type))
        .StringField("providerTypeName", domain::ProviderTypeName(p.type))
        .StringField("providerName", p.name)
        .OptStringField("baseUrl", p.base_url)
        .BoolField("isEnabled", p.is_enabled)
        .IntField("keyCount", key_count)
        .TimestampField("createdAt", p.created_at_ms)
        .TimestampField("updatedAt", p.updated_at_ms)
        .EndObject();
}

void WriteProviderKey(JsonWriter& w, const domain::ProviderKey& k) {
    w.BeginObject()
        .IntField("id", k.id)
        .IntField("providerId", k.provider_id)
        .OptStringField("keyName", k.key_name)
        .StringField("apiKey", MaskedProviderKey(k.key_hint))
        .OptStringField("baseUrl", k.base_url)
        .OptStringField("organization", k.organization)
        .BoolField("isPrimary", k.is_primary)
        .BoolField("isEnabled", k.is_enabled)
        .TimestampField("createdAt", k.created_at_ms)
        .TimestampField("updatedAt", k.updated_at_ms)
        .EndObject();
}

void WriteMapping(JsonWriter& w, const domain::ModelMapping& m) {
    w.BeginObject()
        .IntField("id", m.id)
        .StringField("modelAlias", m.model_alias)
        .StringField("providerModelId", m.provider_model_id)
        .IntField("providerId", m.provider_id)
        .BoolField("isEnabled", m.is_enabled)
        .IntField("priority", m.priority)
        .OptIntField("maxContextTokensOverride", m.max_context_tokens_override)
        .BoolField("supportsChat", m.supports_chat)
        .BoolField("supportsStreaming", m.supports_streaming)
        .BoolField("supportsEmbeddings", m.supports_embeddings)
        .BoolField("supportsImageGeneration", m.supports_image_generation)
        .BoolField("supportsVideoGeneration", m.supports_video_generation)
        .BoolField("supportsVision", m.supports_vision)
        .BoolField("supportsFunctionCalling", m.supports_function_calling)
        .TimestampField("createdAt", m.created_at_ms)
        .TimestampField("updatedAt", m.updated_at_ms)
        .EndObject();
}

void WriteCost(JsonWriter& w, const domain::ModelCost& c) {
    w.BeginObject().IntField("id", c.id).StringField("costName", c.cost_name);
    w.Key("modelProviderMappingIds").BeginArray();
    for (domain::Id id : c.mapping_ids) {
        w.Int(id);
    }
    w.EndArray()
        .MoneyField("inputCostPerMillionTokens", c.input_per_million)
        .MoneyField("outputCostPerMillionTokens", c.output_per_million)
        .MoneyField("embeddingCostPerMillionTokens", c.embedding_per_million)
        .MoneyField("imageCostPerImage", c.image_per_image)
        .MoneyField("videoCostPerSecond", c.video_per_second)
        .IntField("priority", c.priority)
        .OptStringField("description", c.description)
        .TimestampField("createdAt", c.created_at_ms)
        .TimestampField("updatedAt", c.updated_at_ms)
        .EndObject();
}

void WriteRequestLog(JsonWriter& w, const domain::RequestLogRow& r) {
    w.BeginObject()
        .IntField("id", r.id)
        .StringField("requestId", r.request_id)
        .IntField("virtualKeyId", r.virtual_key_id)
        .IntField("virtualKeyGroupId", r.group_id)
        .StringField("modelAlias", r.model_alias)
        .StringField("providerModel", r.provider_model)
        .StringField("requestType", r.request_type)
        .IntField("inputTokens", r.input_tokens)
        .IntField("outputTokens", r.output_tokens)
        .MoneyField("cost", r.cost)
        .IntField("responseTimeMs", r.response_time_ms)
        .IntField("statusCode", r.status_code)
        .BoolField("streamed", r.streamed)
        .BoolField("usageEstimated", r.usage_estimated)
        .OptStringField("clientIp", r.client_ip)
        .TimestampField("timestamp", r.timestamp_ms)
        .EndObject();
}

}  // namespace conduit::admin::detail
