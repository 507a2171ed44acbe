#include "redis/resp.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <string>
#include <utility>

namespace conduit::redis {
namespace {

Reply Convert(const redisReply* r) {
    Reply out;
    switch (r->type) {
        case REDIS_REPLY_STRING:
            out.type = Reply::Type::kString;
            out.str.assign(r->str, r->len);
            break;
        case REDIS_REPLY_STATUS:
            out.type = Reply::Type::kStatus;
            out.str.assign(r->str, r->len);
            break;
        case REDIS_REPLY_ERROR:
            out.type = Reply::Type::kError;
            out.str.assign(r->str, r->len);
            break;
        case REDIS_REPLY_INTEGER:
            out.type = Reply::Type::kInteger;
            out.integer = r->integer;
            break;
        case REDIS_REPLY_ARRAY:
            out.type = Reply::Type::kArray;
            out.elements.reserve(r->elements);
            for (size_t i = 0; i < r->elements; ++i) {
                out.elements.push_back(Convert(r->element[i]));
            }
            break;
        default:
            out.type = Reply::Type::kNil;
            break;
    }
    return out;
}

}  // namespace

std::string Reply::Describe() const {
    switch (type) {
        case Type::kString: {
            std::string out(1, '"');
            out.append(str, 0, std::min<size_t>(str.size(), 64));
            out.append(str.size() > 64 ? "...\"" : "\"");
            return out;
        }
        case Type::kStatus:
            return std::string(1, '+').append(str);
        case Type::kError:
            return std::string(1, '-').append(str);
        case Type::kInteger:
            return ":" + std::to_string(integer);
        case Type::kNil:
            return "(nil)";
        case Type::kArray: {
            std::string out = "[";
            for (size_t i = 0; i < elements.size(); ++i) {
                out += (i ? ", " : "") + elements[i].Describe();
            }
            return out + "]";
        }
    }
    return "?";
}

void AppendCommand(std::string& out, std::span<const std::string_view> args) {
    out += '*';
    out += std::to_string(args.size());
    out += "\r\n";
    for (std::string_view a : args) {
        out += '$';
        out += std::to_string(a.size());
        out += "\r\n";
        out.append(a.data(), a.size());
        out += "\r\n";
    }
}

std::string EncodeCommand(std::span<const std::string_view> args) {
    std::string out;
    size_t size = 16;
    for (std::string_view a : args) {
        size += a.size() + 16;
    }
    out.reserve(size);
    AppendCommand(out, args);
    return out;
}

struct ReplyReader::Impl {
    redisReader* reader = redisReaderCreate();
    ~Impl() { redisReaderFree(reader); }
};

ReplyReader::ReplyReader() : impl_(std::make_unique<Impl>()) {
    // Keep the reader's buffer however large a reply gets (default: shrink above 16 KB idle).
    impl_->reader->maxbuf = 0;
}

ReplyReader::~ReplyReader() = default;

void ReplyReader::Feed(std::string_view bytes) {
    redisReaderFeed(impl_->reader, bytes.data(), bytes.size());
}

core::Result<std::optional<Reply>> ReplyReader::Next() {
    void* raw = nullptr;
    if (redisReaderGetReply(impl_->reader, &raw) != REDIS_OK) {
        return core::Fail(core::ErrorCode::kUpstreamError,
                          std::string("Redis protocol error: ") + impl_->reader->errstr);
    }
    if (raw == nullptr) {
        return std::optional<Reply>();
    }
    auto* reply = static_cast<redisReply*>(raw);
    Reply out = Convert(reply);
    freeReplyObject(reply);
    return std::optional<Reply>(std::move(out));
}

}  // namespace conduit::redis
