#include "fakes/test_support.hpp"
#include "http_client/client.hpp"
#include "net/http_server.hpp"
#include "net/router.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

namespace conduit::http_client {
namespace {

using conduit::testing::WaitFor;
using namespace std::chrono_literals;

/// Upstream server plus a client on a separate runtime.
class HttpClientTest : public ::testing::TestWithParam<ClientKind> {
protected:
    void SetUp() override {
        router_.Add("GET", "/ok", [](const net::ExchangePtr& ex) {
            net::Response r = net::Response::Text(200, "fine");
            r.headers.Add("X-Upstream", "yes");
            ex->Respond(std::move(r));
        });
        router_.Add("POST", "/echo", [](const net::ExchangePtr& ex) {
            ex->Respond(net::Response::Text(
                201, "got:" + ex->request().body + ":" +
                         std::string(ex->request().headers.Get("authorization"))));
        });
        router_.Add("GET", "/big-stream", [](const net::ExchangePtr& ex) {
            ex->BeginStream(200, net::Headers{});
            for (int i = 0; i < 200; ++i) {
                ex->Write(std::string(1000, static_cast<char>('a' + i % 26)));
            }
            ex->EndStream();
        });
        router_.Add("GET", "/hang", [this](const net::ExchangePtr& ex) {
            ex->SetOnClose([this] { upstream_saw_close_ = true; });
            std::lock_guard l(mu_);
            parked_.push_back(ex);
        });
        router_.Add("GET", "/stall-after-headers", [this](const net::ExchangePtr& ex) {
            ex->BeginStream(200, net::Headers{});
            ex->Write("first");
            std::lock_guard l(mu_);
            parked_.push_back(ex);
        });
        router_.Add("GET", "/chunked", [](const net::ExchangePtr& ex) {
            net::Headers h;
            h.Add("X-Kind", "chunked");
            ex->BeginStream(200, h);
            ex->Write("alpha-");
            ex->Write("beta-");
            ex->Write(std::string(50000, 'g'));
            ex->EndStream();
        });
        router_.Add("GET", "/count", [this](const net::ExchangePtr& ex) {
            ex->Respond(net::Response::Text(200, std::to_string(++served_)));
        });
        net::ServerOptions opt;
        opt.host = "127.0.0.1";
        opt.port = 0;
        opt.idle_timeout = std::chrono::milliseconds(300);  // upstream closes idle keep-alives
        server_ = std::make_unique<net::HttpServer>(
            upstream_rt_, opt, [this](const net::ExchangePtr& ex) {
                auto& req = ex->request();
                auto m = router_.Match(req.method, req.path(), req.path_params);
                if (m.handler == nullptr) {
                    ex->Respond(net::Response::Text(404, "no"));
                    return;
                }
                (*m.handler)(ex);
            });
        port_ = *server_->Start();
        upstream_rt_.Start();
        client_rt_.Start();
        RunOnClient([this] { client_ = MakeClient(client_rt_.loop(0), pool_, GetParam()); });
    }
    void TearDown() override {
        RunOnClient([this] { client_.reset(); });
        client_rt_.Stop();
        upstream_rt_.Stop();
        parked_.clear();
    }
    void RunOnClient(std::function<void()> fn) {
        std::atomic<bool> done{false};
        client_rt_.loop(0).Post([&] {
            fn();
            done = true;
        });
        ASSERT_TRUE(WaitFor([&] { return done.load(); }));
    }
    std::string Url(const std::string& path) {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }

    struct Result {
        std::atomic<bool> done{false};
        int status = 0;
        net::Headers headers;
        std::string body;
        Outcome outcome;
    };
    CallPtr Start(Request req,
                  Result& res,
                  std::function<bool(std::string_view)> on_data = {},
                  CallPtr* loop_side_handle = nullptr) {
        CallPtr call;
        RunOnClient([&] {
            Callbacks cb;
            cb.on_headers = [&res](int s, net::Headers h) {
                res.status = s;
                res.headers = std::move(h);
            };
            cb.on_data = on_data ? on_data : [&res](std::string_view d) {
                res.body.append(d);
                return true;
            };
            cb.on_done = [&res](const Outcome& o) {
                res.outcome = o;
                res.done = true;
            };
            call = client_->Start(std::move(req), std::move(cb));
            if (loop_side_handle != nullptr) {
                *loop_side_handle = call;  // set on the loop thread, before any callback
            }
        });
        return call;
    }

    net::Runtime upstream_rt_{1};
    net::Runtime client_rt_{1};
    net::Router router_;
    std::unique_ptr<net::HttpServer> server_;
    std::unique_ptr<Client> client_;
    uint16_t port_ = 0;
    std::mutex mu_;
    std::vector<net::ExchangePtr> parked_;
    std::atomic<bool> upstream_saw_close_{false};
    std::atomic<int> served_{0};
    PoolOptions pool_;
};

TEST_P(HttpClientTest, GetReturnsStatusHeadersAndBody) {
    Result res;
    Request req;
    req.method = "GET";
    req.url = Url("/ok");
    Start(req, res);
    ASSERT_TRUE(WaitFor([&] { return res.done.load(); }));
    EXPECT_EQ(res.outcome.failure, Failure::kNone);
    EXPECT_EQ(res.status, 200);
    EXPECT_EQ(res.headers.Get("x-upstream"), "yes");
    EXPECT_EQ(res.body, "fine");
    EXPECT_GT(res.outcome.headers_ns, res.outcome.started_ns);
}

TEST_P(HttpClientTest, PostSendsBodyAndHeadersAndReusesConnection) {
    for (int i = 0; i < 2; ++i) {
        Result res;
        Request req;
        req.url = Url("/echo");
        req.body = "payload" + std::to_string(i);
        req.headers.Add("Authorization", "Bearer upstream-key");
        Start(req, res);
        ASSERT_TRUE(WaitFor([&] { return res.done.load(); }));
        EXPECT_EQ(res.status, 201);
        EXPECT_EQ(res.body, "got:payload" + std::to_string(i) + ":Bearer upstream-key");
        if (i == 1) {
            EXPECT_TRUE(res.outcome.reused_connection);
        }
    }
}

TEST_P(HttpClientTest, PauseAndResumeDeliverEveryByteInOrder) {
    Result res;
    std::string got;
    int calls = 0;
    int refusals = 0;
    CallPtr call;  // written and read on the client loop thread only
    auto on_data = [&](std::string_view d) {
        // Refuse every other delivery (up to 20 times); the same bytes must come back after
        // Resume(), which is posted to run after this callback returns.
        if (++calls % 2 == 0 && refusals < 20) {
            ++refusals;
            client_rt_.loop(0).Post([&] { call->Resume(); });
            return false;
        }
        got.append(d);
        return true;
    };
    Request req;
    req.method = "GET";
    req.url = Url("/big-stream");
    Start(req, res, on_data, &call);
    ASSERT_TRUE(WaitFor([&] { return res.done.load(); }));
    EXPECT_EQ(res.outcome.failure, Failure::kNone);
    EXPECT_GT(refusals, 0);
    ASSERT_EQ(got.size(), 200u * 1000u);
    for (int i = 0; i < 200; ++i) {
        ASSERT_EQ(got[static_cast<size_t>(i) * 1000], static_cast<char>('a' + i % 26));
        ASSERT_EQ(got[static_cast<size_t>(i) * 1000 + 999], static_cast<char>('a' + i % 26));
    }
}

TEST_P(HttpClientTest, ConnectionRefusedIsAConnectFailure) {
    Result res;
    Request req;
    req.method = "GET";
    req.url = "http://127.0.0.1:1/nothing";
    Start(req, res);
    ASSERT_TRUE(WaitFor([&] { return res.done.load(); }));
    EXPECT_EQ(res.outcome.failure, Failure::kConnect);
    EXPECT_EQ(res.outcome.status, 0);
}

TEST_P(HttpClientTest, FirstByteTimeoutFiresAndReleasesTheUpstream) {
    Result res;
    Request req;
    req.method = "GET";
    req.url = Url("/hang");
    req.timeouts.first_byte = 200ms;
    auto start = std::chrono::steady_clock::now();
    Start(req, res);
    ASSERT_TRUE(WaitFor([&] { return res.done.load(); }));
    EXPECT_EQ(res.outcome.failure, Failure::kTimeout);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
    // The upstream connection is closed (not left hanging in the pool).
    EXPECT_TRUE(WaitFor([&] { return upstream_saw_close_.load(); }));
}

TEST_P(HttpClientTest, IdleTimeoutBetweenChunks) {
    Result res;
    Request req;
    req.method = "GET";
    req.url = Url("/stall-after-headers");
    req.timeouts.idle = 200ms;
    Start(req, res);
    ASSERT_TRUE(WaitFor([&] { return res.done.load(); }));
    EXPECT_EQ(res.outcome.failure, Failure::kTimeout);
    EXPECT_EQ(res.status, 200);
    EXPECT_EQ(res.body, "first");
}

TEST_P(HttpClientTest, CancelStopsCallbacksAndClosesUpstreamConnection) {
    Result res;
    Request req;
    req.method = "GET";
    req.url = Url("/hang");
    auto call = Start(req, res);
    ASSERT_TRUE(WaitFor([&] {
        std::lock_guard l(mu_);
        return !parked_.empty();
    }));
    RunOnClient([&] { call->Cancel(); });
    EXPECT_TRUE(WaitFor([&] { return upstream_saw_close_.load(); }));
    EXPECT_FALSE(res.done.load());
    RunOnClient([&] { EXPECT_EQ(client_->Active(), 0u); });
}

TEST_P(HttpClientTest, ChunkedResponsesAreDechunked) {
    Result res;
    Request req;
    req.method = "GET";
    req.url = Url("/chunked");
    Start(req, res);
    ASSERT_TRUE(WaitFor([&] { return res.done.load(); }));
    EXPECT_EQ(res.outcome.failure, Failure::kNone) << res.outcome.message;
    EXPECT_EQ(res.headers.Get("x-kind"), "chunked");
    EXPECT_EQ(res.body, "alpha-beta-" + std::string(50000, 'g'));
}

TEST_P(HttpClientTest, AStaleKeepAliveConnectionIsRetriedTransparently) {
    for (int i = 0; i < 2; ++i) {
        Result res;
        Request req;
        req.url = Url("/echo");
        req.body = "x";
        Start(req, res);
        ASSERT_TRUE(WaitFor([&] { return res.done.load(); }));
        EXPECT_EQ(res.outcome.failure, Failure::kNone) << res.outcome.message;
        EXPECT_EQ(res.status, 201);
        if (i == 0) {
            // Let the upstream close the idle pooled connection (its idle timeout is 300 ms).
            ASSERT_TRUE(WaitFor([&] { return server_->ActiveConnections() == 0; }));
        }
    }
}

TEST_P(HttpClientTest, CallsQueueWhenThePoolIsFull) {
    pool_.max_connections_per_host = 2;
    pool_.max_total_connections = 2;
    RunOnClient([this] { client_ = MakeClient(client_rt_.loop(0), pool_, GetParam()); });
    std::vector<std::unique_ptr<Result>> results;
    for (int i = 0; i < 20; ++i) {
        results.push_back(std::make_unique<Result>());
        Request req;
        req.method = "GET";
        req.url = Url("/count");
        Start(req, *results.back());
    }
    for (auto& r : results) {
        ASSERT_TRUE(WaitFor([&] { return r->done.load(); }));
        EXPECT_EQ(r->outcome.failure, Failure::kNone) << r->outcome.message;
    }
    EXPECT_EQ(served_.load(), 20);
    EXPECT_LE(server_->ActiveConnections(), 2);
}

TEST_P(HttpClientTest, TimingIsOrdered) {
    Result res;
    Request req;
    req.method = "GET";
    req.url = Url("/ok");
    Start(req, res);
    ASSERT_TRUE(WaitFor([&] { return res.done.load(); }));
    const auto& o = res.outcome;
    EXPECT_GT(o.sent_ns, 0);
    EXPECT_GE(o.sent_ns, o.started_ns);
    EXPECT_GE(o.first_byte_ns, o.sent_ns);
    EXPECT_GE(o.headers_ns, o.first_byte_ns);
    EXPECT_GE(o.finished_ns, o.headers_ns);
}

INSTANTIATE_TEST_SUITE_P(Clients,
                         HttpClientTest,
                         ::testing::Values(ClientKind::kNative, ClientKind::kCurl),
                         [](const ::testing::TestParamInfo<ClientKind>& info) {
                             return info.param == ClientKind::kNative ? "native" : "curl";
                         });

}  // namespace
}  // namespace conduit::http_client
