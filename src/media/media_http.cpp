#include "media/media_http.hpp"

#include "core/strings.hpp"

#include <memory>

namespace conduit::media {

namespace {

constexpr size_t kPiece = 64 * 1024;
constexpr size_t kHighWater = 256 * 1024;

net::Response JsonError(int status, std::string_view code, std::string_view message) {
    std::string body =
        "{\"error\":{\"message\":" + core::JsonQuote(message) +
        ",\"type\":\"invalid_request_error\",\"param\":null,\"code\":" + core::JsonQuote(code) +
        "}}";
    return net::Response::Json(status, std::move(body));
}

/// Pumps a reader into the exchange, pausing while the client is behind.
struct Pump : std::enable_shared_from_this<Pump> {
    net::ExchangePtr ex;
    std::unique_ptr<MediaReader> reader;

    void Run() {
        while (!ex->closed()) {
            if (ex->BufferedBytes() > kHighWater) {
                auto self = shared_from_this();
                ex->SetOnDrain([self] { self->ex->loop().Post([self] { self->Run(); }); });
                return;
            }
            auto piece = reader->Next(kPiece);
            if (!piece || piece->empty()) {
                // A read error mid-body cannot be reported in-band: drop the connection.
                if (!piece) {
                    ex->Abort();
                } else {
                    ex->EndStream();
                }
                return;
            }
            ex->Write(std::move(*piece));
        }
    }
};

}  // namespace

std::optional<ByteRange> ParseRange(std::string_view header, uint64_t size, bool& satisfiable) {
    satisfiable = true;
    header = core::Trim(header);
    if (header.empty() || !core::IStartsWith(header, "bytes=")) {
        return std::nullopt;
    }
    std::string_view spec = core::Trim(header.substr(6));
    if (spec.find(',') != std::string_view::npos) {
        return std::nullopt;  // multiple ranges: serve the whole object (allowed by RFC 9110)
    }
    size_t dash = spec.find('-');
    if (dash == std::string_view::npos) {
        return std::nullopt;
    }
    std::string_view a = core::Trim(spec.substr(0, dash));
    std::string_view b = core::Trim(spec.substr(dash + 1));
    ByteRange r;
    if (a.empty()) {  // suffix: last n bytes
        auto n = core::ParseInt(b);
        if (!n || *n <= 0) {
            return std::nullopt;
        }
        if (size == 0) {
            satisfiable = false;
            return ByteRange{};
        }
        uint64_t len = std::min<uint64_t>(static_cast<uint64_t>(*n), size);
        r.start = size - len;
        r.length = len;
        return r;
    }
    auto start = core::ParseInt(a);
    if (!start || *start < 0) {
        return std::nullopt;
    }
    if (static_cast<uint64_t>(*start) >= size) {
        satisfiable = false;
        return ByteRange{};
    }
    uint64_t end = size - 1;
    if (!b.empty()) {
        auto e = core::ParseInt(b);
        if (!e || *e < *start) {
            return std::nullopt;
        }
        end = std::min<uint64_t>(static_cast<uint64_t>(*e), size - 1);
    }
    r.start = static_cast<uint64_t>(*start);
    r.length = end - r.start + 1;
    return r;
}

void ServeMedia(const net::ExchangePtr& ex, MediaStore& store, std::string_view key) {
    auto info = store.Stat(key);
    if (!info) {
        ex->Respond(JsonError(500, "internal_error", "The media store failed."));
        return;
    }
    if (!info->has_value()) {
        ex->Respond(JsonError(404, "not_found", "No such media."));
        return;
    }
    const MediaInfo& m = **info;
    const auto& req = ex->request();
    net::Headers h;
    h.Add("Content-Type", m.content_type);
    h.Add("ETag", m.etag);
    h.Add("Accept-Ranges", "bytes");
    h.Add("Cache-Control", "public, max-age=3600");
    if (auto inm = req.headers.Get("if-none-match"); !inm.empty() && inm == m.etag) {
        net::Response r;
        r.status = 304;
        r.headers = std::move(h);
        ex->Respond(std::move(r));
        return;
    }
    bool satisfiable = true;
    auto range = ParseRange(req.headers.Get("range"), m.size, satisfiable);
    if (!satisfiable) {
        net::Response r = JsonError(416, "range_not_satisfiable", "The range is past the end.");
        r.headers.Add("Content-Range", "bytes */" + std::to_string(m.size));
        ex->Respond(std::move(r));
        return;
    }
    uint64_t start = range ? range->start : 0;
    uint64_t length = range ? range->length : m.size;
    int status = range ? 206 : 200;
    if (range) {
        h.Add("Content-Range", "bytes " + std::to_string(start) + "-" +
                                   std::to_string(start + length - 1) + "/" +
                                   std::to_string(m.size));
    }
    if (req.method == "HEAD" || length == 0) {
        ex->BeginFixedLength(status, std::move(h), length);
        ex->EndStream();
        return;
    }
    auto reader = store.Open(key, start, length);
    if (!reader) {
        ex->Respond(JsonError(404, "not_found", "No such media."));
        return;
    }
    ex->BeginFixedLength(status, std::move(h), length);
    auto pump = std::make_shared<Pump>();
    pump->ex = ex;
    pump->reader = std::move(*reader);
    pump->Run();
}

}  // namespace conduit::media
