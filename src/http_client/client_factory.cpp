#include "core/strings.hpp"
#include "http_client/client.hpp"
#include "http_client/http1.hpp"

#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

namespace conduit::http_client {

namespace {

std::string Env(const char* lower, const char* upper) {
    const char* v = std::getenv(lower);
    if (v == nullptr || *v == '\0') {
        v = std::getenv(upper);
    }
    return v == nullptr ? std::string() : std::string(v);
}

/// The proxy environment (read once): which URLs libcurl must carry because they go through a
/// proxy the native client does not speak.
class ProxyRules {
public:
    ProxyRules()
        : http_(Env("http_proxy", "HTTP_PROXY")),
          https_(Env("https_proxy", "HTTPS_PROXY")),
          all_(Env("all_proxy", "ALL_PROXY")),
          no_proxy_(core::SplitTrimmed(Env("no_proxy", "NO_PROXY"), ',')) {}

    bool any() const { return !http_.empty() || !https_.empty() || !all_.empty(); }

    bool Proxied(const std::string& url) const {
        ParsedUrl u;
        if (!ParseHttpUrl(url, u)) {
            return false;
        }
        const std::string& proxy =
            !(u.tls ? https_ : http_).empty() ? (u.tls ? https_ : http_) : all_;
        if (proxy.empty()) {
            return false;
        }
        for (const auto& entry : no_proxy_) {
            std::string e = core::ToLower(entry);
            if (e == "*") {
                return false;
            }
            if (!e.empty() && e.front() == '.') {
                e.erase(0, 1);
            }
            if (u.host == e || (u.host.size() > e.size() && u.host.ends_with("." + e))) {
                return false;
            }
        }
        return true;
    }

private:
    std::string http_;
    std::string https_;
    std::string all_;
    std::vector<std::string> no_proxy_;
};

/// Native for direct connections, libcurl for proxied URLs.
class RoutingClient final : public Client {
public:
    RoutingClient(core::Loop& loop, PoolOptions options)
        : native_(MakeNativeClient(loop, options)), curl_(MakeCurlClient(loop, options)) {}

    CallPtr Start(Request request, Callbacks callbacks) override {
        if (rules_.any() && Proxied(request.url)) {
            return curl_->Start(std::move(request), std::move(callbacks));
        }
        return native_->Start(std::move(request), std::move(callbacks));
    }
    size_t Active() const override { return native_->Active() + curl_->Active(); }

private:
    /// Memoised per URL (this client lives on one loop: no lock needed).
    bool Proxied(const std::string& url) {
        auto it = memo_.find(url);
        if (it == memo_.end()) {
            if (memo_.size() > 4096) {
                memo_.clear();
            }
            it = memo_.emplace(url, rules_.Proxied(url)).first;
        }
        return it->second;
    }

    ProxyRules rules_;
    std::unordered_map<std::string, bool> memo_;
    std::unique_ptr<Client> native_;
    std::unique_ptr<Client> curl_;
};

}  // namespace

bool ParseClientKind(std::string_view text, ClientKind& out) {
    if (text == "auto") {
        out = ClientKind::kAuto;
    } else if (text == "native") {
        out = ClientKind::kNative;
    } else if (text == "curl") {
        out = ClientKind::kCurl;
    } else {
        return false;
    }
    return true;
}

std::unique_ptr<Client> MakeClient(core::Loop& loop, PoolOptions options, ClientKind kind) {
    switch (kind) {
        case ClientKind::kNative:
            return MakeNativeClient(loop, options);
        case ClientKind::kCurl:
            return MakeCurlClient(loop, options);
        case ClientKind::kAuto:
            return std::make_unique<RoutingClient>(loop, options);
    }
    return MakeNativeClient(loop, options);
}

}  // namespace conduit::http_client
