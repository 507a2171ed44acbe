#pragma once

// Shared fixture of the mock provider's integration tests: a MockProvider on its own runtime and
// a curl client on another, with helpers to run calls and read their replies.

#include "fakes/test_support.hpp"
#include "http_client/client.hpp"
#include "json/helpers.hpp"
#include "json/sse.hpp"
#include "mock-provider/mock_provider.hpp"
#include "net/runtime.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace conduit::mock::test {

using conduit::testing::WaitFor;
namespace bj = boost::json;

/// One HTTP call's result, filled on the client loop and read by the test thread.
struct Reply {
    std::atomic<bool> done{false};
    std::atomic<int> data_calls{0};
    int status = 0;
    net::Headers headers;
    http_client::Outcome outcome;
    std::chrono::steady_clock::time_point started;
    std::chrono::steady_clock::time_point finished;

    std::string Body() const {
        std::lock_guard l(mu);
        return body;
    }
    void Append(std::string_view d) {
        std::lock_guard l(mu);
        body.append(d);
    }

    mutable std::mutex mu;
    std::string body;
};

/// Data fields of the SSE events of `body`, in order.
inline std::vector<std::string> SseData(std::string_view body) {
    json::SseScanner scanner;
    std::vector<std::string> out;
    scanner.Feed(body, [&](const json::SseScanner::Event& e) {
        if (e.has_data) {
            out.push_back(e.data);
        }
    });
    return out;
}

inline bj::object Obj(std::string_view text) {
    auto o = json::ParseObject(text);
    EXPECT_TRUE(o.has_value()) << text;
    return o ? *o : bj::object();
}

class MockProviderFixture : public ::testing::Test {
protected:
    void SetUp() override { StartMock(MockOptions{}); }

    void StartMock(MockOptions opt) {
        opt.host = "127.0.0.1";
        opt.port = 0;
        mock_ = std::make_unique<MockProvider>(opt);
        auto port = mock_->Start(mock_rt_);
        ASSERT_TRUE(port.has_value()) << port.error().message;
        port_ = *port;
        mock_rt_.Start();
        client_rt_.Start();
        RunOnClient([this] {
            client_ = http_client::MakeCurlClient(client_rt_.loop(0), http_client::PoolOptions{});
        });
    }

    void TearDown() override {
        RunOnClient([this] {
            for (auto& c : calls_) {
                c->Cancel();
            }
            calls_.clear();
            client_.reset();
        });
        client_rt_.Stop();
        // Quiesce the server while its runtime still runs, then destroy it (see StopAndWait).
        EXPECT_TRUE(mock_->StopAndWait(std::chrono::milliseconds(2000)));
        mock_.reset();
        mock_rt_.Stop();
    }

    void RunOnClient(std::function<void()> fn) {
        std::atomic<bool> done{false};
        client_rt_.loop(0).Post([&] {
            fn();
            done = true;
        });
        ASSERT_TRUE(WaitFor([&] { return done.load(); }));
    }

    std::string Url(std::string_view path) const {
        return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
    }

    /// Starts a call; the reply fills in asynchronously.
    std::shared_ptr<Reply> Start(std::string method,
                                 std::string_view path,
                                 std::string body = {},
                                 net::Headers headers = {}) {
        auto reply = std::make_shared<Reply>();
        http_client::Request req;
        req.method = std::move(method);
        req.url = Url(path);
        req.body = std::move(body);
        req.headers = std::move(headers);
        if (!req.body.empty()) {
            req.headers.Add("Content-Type", "application/json");
        }
        RunOnClient([&] {
            http_client::Callbacks cb;
            cb.on_headers = [reply](int s, net::Headers h) {
                reply->status = s;
                reply->headers = std::move(h);
            };
            cb.on_data = [reply](std::string_view d) {
                reply->Append(d);
                reply->data_calls.fetch_add(1);
                return true;
            };
            cb.on_done = [reply](const http_client::Outcome& o) {
                reply->outcome = o;
                reply->finished = std::chrono::steady_clock::now();
                reply->done = true;
            };
            reply->started = std::chrono::steady_clock::now();
            calls_.push_back(client_->Start(std::move(req), std::move(cb)));
        });
        return reply;
    }

    /// Runs a call to completion.
    std::shared_ptr<Reply> Do(std::string method,
                              std::string_view path,
                              std::string body = {},
                              net::Headers headers = {}) {
        auto reply = Start(std::move(method), path, std::move(body), std::move(headers));
        EXPECT_TRUE(WaitFor([&] { return reply->done.load(); })) << path;
        EXPECT_EQ(reply->outcome.failure, http_client::Failure::kNone) << reply->outcome.message;
        return reply;
    }
    std::shared_ptr<Reply> Post(std::string_view path, std::string_view body) {
        return Do("POST", path, std::string(body));
    }

    /// Content deltas (chat) of a stream body, and the other events, in order.
    struct Parsed {
        bool role_first = false;
        std::vector<std::string> contents;
        std::vector<std::string> finish_reasons;
        std::optional<bj::object> usage_chunk;
        bool done_last = false;
        size_t events = 0;
    };
    static Parsed ParseChatStream(std::string_view body) {
        Parsed p;
        auto data = SseData(body);
        p.events = data.size();
        p.done_last = !data.empty() && data.back() == "[DONE]";
        for (size_t i = 0; i < data.size(); ++i) {
            if (data[i] == "[DONE]") {
                EXPECT_EQ(i + 1, data.size()) << "[DONE] must be last";
                continue;
            }
            bj::object o = Obj(data[i]);
            EXPECT_EQ(o["object"].as_string(), "chat.completion.chunk");
            EXPECT_EQ(o["model"].as_string(), "gpt-4o-mini");
            const bj::array& choices = o["choices"].as_array();
            if (choices.empty()) {
                EXPECT_FALSE(p.usage_chunk) << "one usage chunk";
                p.usage_chunk = o;
                EXPECT_EQ(i + 2, data.size()) << "usage chunk comes right before [DONE]";
                continue;
            }
            const bj::object& choice = choices[0].as_object();
            const bj::object& delta = choice.at("delta").as_object();
            if (delta.contains("role")) {
                EXPECT_EQ(i, 0U) << "role chunk first";
                EXPECT_EQ(delta.at("role").as_string(), "assistant");
                p.role_first = true;
            } else if (!choice.at("finish_reason").is_null()) {
                p.finish_reasons.emplace_back(choice.at("finish_reason").as_string());
                EXPECT_TRUE(delta.empty());
            } else {
                EXPECT_TRUE(p.finish_reasons.empty()) << "content after finish";
                p.contents.emplace_back(delta.at("content").as_string());
            }
        }
        return p;
    }
    static std::string Join(const std::vector<std::string>& v) {
        std::string s;
        for (const auto& x : v) {
            s += x;
        }
        return s;
    }

    net::Runtime mock_rt_{2};
    net::Runtime client_rt_{1};
    std::unique_ptr<MockProvider> mock_;
    std::unique_ptr<http_client::Client> client_;
    std::vector<http_client::CallPtr> calls_;  // client loop only
    uint16_t port_ = 0;
};

}  // namespace conduit::mock::test
