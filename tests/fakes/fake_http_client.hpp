#pragma once

#include "http_client/client.hpp"

#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace conduit::testing {

/// A scripted http_client::Client: records each request and lets the test drive the response
/// (headers, chunks, completion) by hand, on the test thread.
class FakeHttpClient final : public http_client::Client {
public:
    struct FakeCall final : http_client::Call {
        http_client::Request request;
        http_client::Callbacks cb;
        bool cancelled = false;
        int resumes = 0;
        void Cancel() override {
            cancelled = true;
            cb = {};  // like the real client: release the callbacks (and what they own)
        }
        void Resume() override { ++resumes; }
        http_client::Outcome Timing() const override {
            http_client::Outcome o;
            o.started_ns = 1;
            o.sent_ns = 1;
            return o;
        }

        void Headers(int status, net::Headers h = {}) {
            if (!cancelled && cb.on_headers) {
                cb.on_headers(status, std::move(h));
            }
        }
        /// Delivers a chunk; returns what the consumer answered (false = paused).
        bool Data(std::string_view d) { return cancelled || !cb.on_data ? true : cb.on_data(d); }
        void Done(http_client::Failure f = http_client::Failure::kNone, std::string msg = {}) {
            if (cancelled || !cb.on_done) {
                return;
            }
            http_client::Outcome o;
            o.failure = f;
            o.message = std::move(msg);
            o.started_ns = 1;
            o.headers_ns = 2;
            o.finished_ns = 3;
            auto done = std::move(cb.on_done);
            done(o);
        }
    };

    http_client::CallPtr Start(http_client::Request request,
                               http_client::Callbacks callbacks) override {
        auto c = std::make_shared<FakeCall>();
        c->request = std::move(request);
        c->cb = std::move(callbacks);
        calls.push_back(c);
        return c;
    }
    size_t Active() const override { return calls.size(); }

    ~FakeHttpClient() override {
        for (auto& c : calls) {
            c->cb = {};  // break call → callbacks → owner → call cycles of unfinished calls
        }
    }

    std::vector<std::shared_ptr<FakeCall>> calls;
};

}  // namespace conduit::testing
