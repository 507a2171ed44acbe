// GET|HEAD /v1/media/{key*} over real sockets: a net::HttpServer on a net::Runtime with the
// route wired as the app wires it (router → media::ServeMedia over the local store in a temp
// directory), and raw TCP clients (exact bytes on the wire, hostile targets, slow readers).

#include "fakes/test_support.hpp"
#include "media/media_http.hpp"
#include "media/media_store.hpp"
#include "net/http_server.hpp"
#include "net/router.hpp"
#include "net/runtime.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

namespace conduit::media {
namespace {

using conduit::testing::RawClient;
using conduit::testing::TempDir;
using conduit::testing::WaitFor;
using namespace std::chrono_literals;

std::string Bytes(size_t n, uint32_t seed) {
    std::string s(n, '\0');
    uint32_t x = seed;
    for (size_t i = 0; i < n; ++i) {
        x = x * 1664525u + 1013904223u;
        s[i] = static_cast<char>(x >> 24);
    }
    return s;
}

/// A parsed HTTP/1.1 response (headers lower-cased).
struct Parsed {
    int status = 0;
    std::map<std::string, std::string> headers;
    std::string body;
    bool complete_head = false;
};

Parsed Parse(const std::string& raw) {
    Parsed p;
    size_t end = raw.find("\r\n\r\n");
    if (end == std::string::npos || raw.size() < 12) {
        return p;
    }
    p.complete_head = true;
    p.status = std::atoi(raw.substr(9, 3).c_str());
    size_t line = raw.find("\r\n") + 2;
    while (line < end) {
        size_t eol = raw.find("\r\n", line);
        std::string h = raw.substr(line, eol - line);
        size_t colon = h.find(':');
        if (colon != std::string::npos) {
            std::string name = h.substr(0, colon);
            for (auto& c : name) {
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            }
            size_t v = h.find_first_not_of(' ', colon + 1);
            p.headers[name] = v == std::string::npos ? std::string() : h.substr(v);
        }
        line = eol + 2;
    }
    p.body = raw.substr(end + 4);
    return p;
}

class MediaOverHttpTest : public ::testing::Test {
protected:
    void SetUp() override {
        root_ = dir_.path() / "media";
        auto opened = OpenLocalMediaStore(root_.string(), "http://127.0.0.1");
        ASSERT_TRUE(opened.has_value());
        store_ = std::move(*opened);
        small_ = Bytes(1000, 1);
        big_ = Bytes(8u << 20, 2);
        Put("tasks/t1/1-0.mp4", small_, "video/mp4");
        Put("tasks/t1/big.mp4", big_, "video/mp4");
        {
            std::ofstream secret(dir_.path() / "secret.txt");
            secret << "TOP-SECRET";
        }

        // The route as tasks::RegisterTaskRoutes registers it (HEAD falls back to GET).
        router_.Add("GET", "/v1/media/{key*}", [this](const net::ExchangePtr& ex) {
            ServeMedia(ex, *store_, ex->request().path_params.at(0));
        });
        net::ServerOptions opt;
        opt.host = "127.0.0.1";
        opt.port = 0;
        server_ = std::make_unique<net::HttpServer>(rt_, opt, [this](const net::ExchangePtr& ex) {
            auto& req = ex->request();
            auto m = router_.Match(req.method, req.path(), req.path_params);
            if (m.handler == nullptr) {
                ex->Respond(net::Response::Text(m.path_matched ? 405 : 404, "no route"));
                return;
            }
            (*m.handler)(ex);
        });
        auto port = server_->Start();
        ASSERT_TRUE(port.has_value());
        port_ = *port;
        rt_.Start();
    }

    void TearDown() override {
        std::atomic<bool> done{false};
        server_->Shutdown(1000ms, [&] { done = true; });
        EXPECT_TRUE(WaitFor([&] { return done.load(); }));
        rt_.Stop();
    }

    void Put(const std::string& key, const std::string& bytes, const std::string& type) {
        auto w = store_->Create(key, type);
        ASSERT_TRUE(w.has_value());
        ASSERT_TRUE((*w)->Append(bytes).has_value());
        ASSERT_TRUE((*w)->Commit().has_value());
    }

    /// One request on a fresh connection (Connection: close), read to the end.
    Parsed Request(const std::string& method,
                   const std::string& target,
                   const std::string& extra_headers = {}) {
        RawClient c("127.0.0.1", port_);
        EXPECT_TRUE(c.connected());
        EXPECT_TRUE(c.Send(method + " " + target + " HTTP/1.1\r\nHost: t\r\n" + extra_headers +
                           "Connection: close\r\n\r\n"));
        bool closed = false;
        std::string raw = c.ReadToClose(10000, &closed);
        EXPECT_TRUE(closed) << target;
        return Parse(raw);
    }

    TempDir dir_;
    std::filesystem::path root_;
    std::unique_ptr<MediaStore> store_;
    std::string small_;
    std::string big_;
    net::Runtime rt_{2};
    net::Router router_;
    std::unique_ptr<net::HttpServer> server_;
    uint16_t port_ = 0;
};

TEST_F(MediaOverHttpTest, GetServesTheExactBytesWithContentLength) {
    Parsed r = Request("GET", "/v1/media/tasks/t1/1-0.mp4");
    ASSERT_TRUE(r.complete_head);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["content-length"], "1000");
    EXPECT_EQ(r.headers["content-type"], "video/mp4");
    EXPECT_EQ(r.headers["accept-ranges"], "bytes");
    EXPECT_FALSE(r.headers["etag"].empty());
    EXPECT_FALSE(r.headers.contains("transfer-encoding")) << "fixed-length framing";
    EXPECT_EQ(r.body, small_);
}

TEST_F(MediaOverHttpTest, LargeFileArrivesIntact) {
    Parsed r = Request("GET", "/v1/media/tasks/t1/big.mp4");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["content-length"], std::to_string(big_.size()));
    EXPECT_EQ(r.body.size(), big_.size());
    EXPECT_TRUE(r.body == big_);
}

TEST_F(MediaOverHttpTest, RangesOverTheWire) {
    Parsed r = Request("GET", "/v1/media/tasks/t1/big.mp4", "Range: bytes=1000000-1000099\r\n");
    EXPECT_EQ(r.status, 206);
    EXPECT_EQ(r.headers["content-length"], "100");
    EXPECT_EQ(r.headers["content-range"], "bytes 1000000-1000099/" + std::to_string(big_.size()));
    EXPECT_EQ(r.body, big_.substr(1000000, 100));

    Parsed tail = Request("GET", "/v1/media/tasks/t1/big.mp4", "Range: bytes=-5\r\n");
    EXPECT_EQ(tail.status, 206);
    EXPECT_EQ(tail.body, big_.substr(big_.size() - 5));

    Parsed open = Request("GET", "/v1/media/tasks/t1/1-0.mp4", "Range: bytes=600-\r\n");
    EXPECT_EQ(open.status, 206);
    EXPECT_EQ(open.headers["content-range"], "bytes 600-999/1000");
    EXPECT_EQ(open.body, small_.substr(600));

    Parsed past = Request("GET", "/v1/media/tasks/t1/1-0.mp4", "Range: bytes=1000-\r\n");
    EXPECT_EQ(past.status, 416);
    EXPECT_EQ(past.headers["content-range"], "bytes */1000");
}

TEST_F(MediaOverHttpTest, HeadHasTheLengthButNoBody) {
    Parsed r = Request("HEAD", "/v1/media/tasks/t1/big.mp4");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["content-length"], std::to_string(big_.size()));
    EXPECT_TRUE(r.body.empty()) << r.body.size() << " body bytes after a HEAD";
}

TEST_F(MediaOverHttpTest, ConditionalGetWithTheEtag) {
    Parsed first = Request("GET", "/v1/media/tasks/t1/1-0.mp4");
    ASSERT_FALSE(first.headers["etag"].empty());
    Parsed again = Request("GET", "/v1/media/tasks/t1/1-0.mp4",
                           "If-None-Match: " + first.headers["etag"] + "\r\n");
    EXPECT_EQ(again.status, 304);
    EXPECT_TRUE(again.body.empty());
}

TEST_F(MediaOverHttpTest, NothingOutsideTheStoreIsReachable) {
    for (const char* target :
         {"/v1/media/../secret.txt", "/v1/media/..%2fsecret.txt", "/v1/media/%2e%2e/secret.txt",
          "/v1/media/%2E%2E/secret.txt", "/v1/media/tasks/%2e%2e/%2e%2e/secret.txt",
          "/v1/media/tasks/..%2F..%2Fsecret.txt", "/v1/media/%2fetc%2fpasswd",
          "/v1/media//etc/passwd", "/v1/media/tasks/t1/1-0.mp4.type",
          "/v1/media/tasks/t1/1-0.mp4%00.png", "/v1/media/tasks", "/v1/media/tasks/t1",
          "/v1/media/tasks/t1/1-0.mp4/..", "/v1/media/%5c..%5csecret.txt"}) {
        Parsed r = Request("GET", target);
        EXPECT_TRUE(r.status == 404 || r.status == 400) << target << " → " << r.status;
        EXPECT_EQ(r.body.find("TOP-SECRET"), std::string::npos) << target;
        EXPECT_EQ(r.body.find("root:"), std::string::npos) << target;
    }
    // The real object is still served (the checks above are not just "everything fails").
    EXPECT_EQ(Request("GET", "/v1/media/tasks/t1/1-0.mp4").status, 200);
}

/// A blocking client socket with a small receive buffer, so the server has to wait for it.
class SlowSocket {
public:
    explicit SlowSocket(uint16_t port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        int rcvbuf = 8 * 1024;
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
        ok_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    }
    ~SlowSocket() { Close(); }
    bool ok() const { return ok_; }
    bool Send(const std::string& s) {
        return ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
    }
    /// Reads up to `n` bytes in small pieces (waits at most 10 s per piece). Returns what came.
    std::string Read(size_t n, size_t piece = 4096) {
        std::string out;
        char buf[4096];
        while (out.size() < n) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 10000) <= 0) {
                break;
            }
            ssize_t got = ::recv(fd_, buf, std::min({sizeof(buf), piece, n - out.size()}), 0);
            if (got <= 0) {
                break;
            }
            out.append(buf, static_cast<size_t>(got));
        }
        return out;
    }
    /// Reads one response whose body is Content-Length framed.
    Parsed ReadResponse(size_t body_piece = 4096) {
        std::string head;
        while (head.find("\r\n\r\n") == std::string::npos) {
            std::string b = Read(1, 1);
            if (b.empty()) {
                return Parse(head);
            }
            head += b;
        }
        Parsed p = Parse(head);
        size_t length = static_cast<size_t>(std::atoll(p.headers["content-length"].c_str()));
        p.body = Read(length, body_piece);
        return p;
    }
    void Close() {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }

private:
    int fd_ = -1;
    bool ok_ = false;
};

TEST_F(MediaOverHttpTest, SlowReaderGetsEveryByteAndALeavingReaderFreesTheExchange) {
    {
        SlowSocket s(port_);
        ASSERT_TRUE(s.ok());
        ASSERT_TRUE(s.Send("GET /v1/media/tasks/t1/big.mp4 HTTP/1.1\r\nHost: t\r\n\r\n"));
        Parsed r = s.ReadResponse(1024);
        ASSERT_EQ(r.status, 200);
        ASSERT_EQ(r.body.size(), big_.size());
        EXPECT_TRUE(r.body == big_);
        // Keep-alive: the connection serves the next request too.
        ASSERT_TRUE(s.Send("GET /v1/media/tasks/t1/1-0.mp4 HTTP/1.1\r\nHost: t\r\n\r\n"));
        Parsed next = s.ReadResponse();
        EXPECT_EQ(next.status, 200);
        EXPECT_EQ(next.body, small_);
    }
    ASSERT_TRUE(WaitFor([&] { return server_->InFlight() == 0; }));

    // A reader that leaves mid-body: the pump stops and the exchange is released.
    {
        SlowSocket s(port_);
        ASSERT_TRUE(s.ok());
        ASSERT_TRUE(s.Send("GET /v1/media/tasks/t1/big.mp4 HTTP/1.1\r\nHost: t\r\n\r\n"));
        std::string part = s.Read(256 * 1024);
        ASSERT_EQ(part.size(), 256u * 1024);
        ASSERT_TRUE(WaitFor([&] { return server_->InFlight() == 1; }));
    }
    EXPECT_TRUE(WaitFor([&] { return server_->InFlight() == 0; }));
    EXPECT_TRUE(WaitFor([&] { return server_->ActiveConnections() == 0; }));
    EXPECT_EQ(Request("GET", "/v1/media/tasks/t1/1-0.mp4").body, small_);
}

}  // namespace
}  // namespace conduit::media
