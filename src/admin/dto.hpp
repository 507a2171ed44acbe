#pragma once

// Internal to the admin component: the JSON shapes of the admin API (camelCase, as the
// original's DTOs). Money is written as exact decimals, timestamps as ISO-8601 UTC strings,
// absent optional values as null. Secrets never appear: virtual keys only by prefix, provider
// API keys only masked.

#include "admin/json_writer.hpp"
#include "domain/entities.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace conduit::admin::detail {

/// "Credit", "Debit", "Refund", "Adjustment".
std::string_view TransactionTypeName(domain::TransactionType type);
/// "Manual", "VirtualKey", "System", "Initial".
std::string_view ReferenceTypeName(domain::ReferenceType type);

/// The display hint stored for a provider API key: its last 4 characters, or "" for keys too
/// short to reveal any part of (fewer than 12 characters).
std::string ProviderKeyHint(std::string_view api_key);
/// What responses show instead of a provider API key: "…" + hint.
std::string MaskedProviderKey(std::string_view hint);

/// `{id, groupName, externalGroupId, balance, lifetimeCreditsAdded, lifetimeSpent,
/// virtualKeyCount, createdAt, updatedAt}`. Leaves the object open when `close` is false (so
/// that callers can append members).
void WriteGroup(JsonWriter& w,
                const domain::VirtualKeyGroup& g,
                int64_t key_count,
                bool close = true);
/// `{id, virtualKeyGroupId, transactionType, amount, balanceAfter, referenceType, referenceId,
/// description, initiatedBy, createdAt}`.
void WriteTransaction(JsonWriter& w, const domain::GroupTransaction& t);
/// keyInfo: `{id, keyName, keyPrefix, allowedModels, virtualKeyGroupId, isEnabled, expiresAt,
/// metadata, rateLimitRpm, rateLimitRpd, description, createdAt, updatedAt}` (never the hash).
void WriteKeyInfo(JsonWriter& w, const domain::VirtualKey& k);
/// `{id, providerType, providerTypeName, providerName, baseUrl, isEnabled, keyCount, createdAt,
/// updatedAt}`.
void WriteProvider(JsonWriter& w, const domain::Provider& p, int64_t key_count);
/// `{id, providerId, keyName, apiKey (masked), baseUrl, organization, isPrimary, isEnabled,
/// createdAt, updatedAt}`.
void WriteProviderKey(JsonWriter& w, const domain::ProviderKey& k);
/// `{id, modelAlias, providerModelId, providerId, isEnabled, priority, maxContextTokensOverride,
/// supportsChat, supportsStreaming, supportsEmbeddings, supportsImageGeneration,
/// supportsVideoGeneration, supportsVision, supportsFunctionCalling, createdAt, updatedAt}`.
void WriteMapping(JsonWriter& w, const domain::ModelMapping& m);
/// `{id, costName, modelProviderMappingIds, inputCostPerMillionTokens,
/// outputCostPerMillionTokens, embeddingCostPerMillionTokens, imageCostPerImage,
/// videoCostPerSecond, priority, description, createdAt, updatedAt}`.
void WriteCost(JsonWriter& w, const domain::ModelCost& c);
/// `{id, requestId, virtualKeyId, virtualKeyGroupId, modelAlias, providerModel, requestType,
/// inputTokens, outputTokens, cost, responseTimeMs, statusCode, streamed, usageEstimated,
/// clientIp, timestamp}`.
void WriteRequestLog(JsonWriter& w, const domain::RequestLogRow& r);

}  // namespace conduit::admin::detail
