// The local-directory MediaStore adapter against a real temp directory: key validation, the
// writer / reader lifecycle, atomic publication and PublicUrl.

#include "media/media_store.hpp"

#include "fakes/test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace conduit::media {
namespace {

namespace fs = std::filesystem;
using conduit::testing::TempDir;

// --- IsValidMediaKey ------------------------------------------------------------------------

TEST(MediaKeyTest, AcceptsRelativeKeysOfSafeSegments) {
    EXPECT_TRUE(IsValidMediaKey("a"));
    EXPECT_TRUE(IsValidMediaKey("tasks/task_0123abcd/1-0.mp4"));
    EXPECT_TRUE(IsValidMediaKey("A-Z_a-z.0-9/x.png"));
    EXPECT_TRUE(IsValidMediaKey("..."));  // not a traversal: an ordinary (odd) file name
    EXPECT_TRUE(IsValidMediaKey(".hidden"));
    EXPECT_TRUE(IsValidMediaKey(std::string(512, 'k')));
}

TEST(MediaKeyTest, RejectsTraversalAndDotSegments) {
    for (const char* k : {"..", ".", "../x", "x/..", "a/../b", "a/./b", "./a", "../../etc/passwd",
                          "tasks/../../secret"}) {
        EXPECT_FALSE(IsValidMediaKey(k)) << k;
    }
}

TEST(MediaKeyTest, RejectsAbsoluteAndEmptySegments) {
    for (const char* k : {"", "/", "/etc/passwd", "/a", "a/", "a//b", "//a"}) {
        EXPECT_FALSE(IsValidMediaKey(k)) << '"' << k << '"';
    }
}

TEST(MediaKeyTest, RejectsEncodedAndForeignCharacters) {
    for (const char* k : {"%2e%2e/x", "%2e%2e", "a%2fb", "a\\b", "..\\x", "a b", "a\tb", "a:b",
                          "a?b", "a#b", "a*b", "caf\xc3\xa9", "~/x", "a\nb"}) {
        EXPECT_FALSE(IsValidMediaKey(k)) << k;
    }
    EXPECT_FALSE(IsValidMediaKey(std::string("a\0b", 3)));
}

TEST(MediaKeyTest, RejectsOverlongKeys) {
    EXPECT_FALSE(IsValidMediaKey(std::string(513, 'k')));
    std::string nested;
    while (nested.size() < 600) {
        nested += "abc/";
    }
    nested += "x";
    EXPECT_FALSE(IsValidMediaKey(nested));
}

TEST(MediaKeyTest, RejectsTheStoresOwnSidecarAndTemporaryNames) {
    // The adapter keeps "<file>.type" sidecars and "<file>.tmp-<hex>" partial files next to the
    // objects; neither may be addressed as an object.
    EXPECT_FALSE(IsValidMediaKey("x.mp4.type"));
    EXPECT_FALSE(IsValidMediaKey("a/b.type"));
    EXPECT_FALSE(IsValidMediaKey("x.mp4.tmp-0123456789ab"));
    EXPECT_FALSE(IsValidMediaKey("dir.tmp-1/x"));
    EXPECT_TRUE(IsValidMediaKey("x.types"));
    EXPECT_TRUE(IsValidMediaKey("type"));
}

// --- Local store ----------------------------------------------------------------------------

class LocalMediaStoreTest : public ::testing::Test {
protected:
    void SetUp() override {
        root_ = dir_.path() / "media";
        auto opened = OpenLocalMediaStore(root_.string(), "http://gw.example:8080/");
        ASSERT_TRUE(opened.has_value()) << opened.error().message;
        store_ = std::move(*opened);
    }

    /// Writes `bytes` under `key` in pieces of `piece` and commits.
    MediaInfo Put(const std::string& key,
                  const std::string& bytes,
                  const std::string& type = "video/mp4",
                  size_t piece = 1000) {
        auto w = store_->Create(key, type);
        EXPECT_TRUE(w.has_value()) << key;
        if (!w) {
            return {};
        }
        for (size_t i = 0; i < bytes.size(); i += piece) {
            EXPECT_TRUE((*w)->Append(std::string_view(bytes).substr(i, piece)).has_value());
        }
        auto info = (*w)->Commit();
        EXPECT_TRUE(info.has_value());
        return info ? *info : MediaInfo{};
    }

    /// Reads [offset, offset + length) of `key` in pieces of `piece`.
    std::string Read(const std::string& key, uint64_t offset, uint64_t length, size_t piece = 7) {
        auto r = store_->Open(key, offset, length);
        EXPECT_TRUE(r.has_value()) << key;
        if (!r) {
            return {};
        }
        std::string out;
        for (int guard = 0; guard < 1'000'000; ++guard) {
            auto p = (*r)->Next(piece);
            EXPECT_TRUE(p.has_value());
            if (!p || p->empty()) {
                break;
            }
            EXPECT_LE(p->size(), piece);
            out += *p;
        }
        return out;
    }

    /// Every regular file under the store's root (relative paths).
    std::vector<std::string> Files() const {
        std::vector<std::string> out;
        for (const auto& e : fs::recursive_directory_iterator(root_)) {
            if (e.is_regular_file()) {
                out.push_back(fs::relative(e.path(), root_).string());
            }
        }
        std::sort(out.begin(), out.end());
        return out;
    }

    static std::string Bytes(size_t n) {
        std::string s(n, '\0');
        for (size_t i = 0; i < n; ++i) {
            s[i] = static_cast<char>((i * 131 + 7) % 251);
        }
        return s;
    }

    TempDir dir_;
    fs::path root_;
    std::unique_ptr<MediaStore> store_;
};

TEST_F(LocalMediaStoreTest, OpeningCreatesTheRootDirectory) {
    EXPECT_TRUE(fs::is_directory(root_));
}

TEST_F(LocalMediaStoreTest, CreateAppendCommitStatOpenDelete) {
    const std::string bytes = Bytes(10'000);
    MediaInfo info = Put("tasks/t1/1-0.mp4", bytes);
    EXPECT_EQ(info.key, "tasks/t1/1-0.mp4");
    EXPECT_EQ(info.content_type, "video/mp4");
    EXPECT_EQ(info.size, bytes.size());
    EXPECT_FALSE(info.etag.empty());
    EXPECT_GT(info.modified_at_ms, 0);

    auto st = store_->Stat("tasks/t1/1-0.mp4");
    ASSERT_TRUE(st.has_value());
    ASSERT_TRUE(st->has_value());
    EXPECT_EQ((*st)->key, "tasks/t1/1-0.mp4");
    EXPECT_EQ((*st)->size, bytes.size());
    EXPECT_EQ((*st)->content_type, "video/mp4");
    EXPECT_EQ((*st)->etag.front(), '"') << "a strong validator is a quoted string";
    EXPECT_EQ((*st)->etag.back(), '"');

    EXPECT_EQ(Read("tasks/t1/1-0.mp4", 0, bytes.size()), bytes);
    EXPECT_TRUE(fs::exists(root_ / "tasks" / "t1" / "1-0.mp4")) << "keys map to paths";

    auto del = store_->Delete("tasks/t1/1-0.mp4");
    ASSERT_TRUE(del.has_value());
    EXPECT_TRUE(*del);
    auto gone = store_->Stat("tasks/t1/1-0.mp4");
    ASSERT_TRUE(gone.has_value());
    EXPECT_FALSE(gone->has_value());
    auto open = store_->Open("tasks/t1/1-0.mp4", 0, 10);
    ASSERT_FALSE(open.has_value());
    EXPECT_EQ(open.error().code, core::ErrorCode::kNotFound);
    auto again = store_->Delete("tasks/t1/1-0.mp4");
    ASSERT_TRUE(again.has_value());
    EXPECT_FALSE(*again) << "deleting a missing key reports false";
    EXPECT_TRUE(Files().empty()) << "the content-type sidecar is deleted too";
}

TEST_F(LocalMediaStoreTest, CommitReturnsTheValidatorThatStatReports) {
    MediaInfo info = Put("etag/x.png", Bytes(333), "image/png");
    auto st = store_->Stat("etag/x.png");
    ASSERT_TRUE(st.has_value() && st->has_value());
    EXPECT_EQ(info.etag, (*st)->etag);
    EXPECT_EQ(info.modified_at_ms, (*st)->modified_at_ms);
}

TEST_F(LocalMediaStoreTest, OpenReadsTheRequestedRangeClippedToTheEnd) {
    const std::string bytes = Bytes(1000);
    Put("r/x.bin", bytes, "application/octet-stream");
    EXPECT_EQ(Read("r/x.bin", 0, 1000), bytes);
    EXPECT_EQ(Read("r/x.bin", 10, 20), bytes.substr(10, 20));
    EXPECT_EQ(Read("r/x.bin", 990, 100), bytes.substr(990)) << "length clipped to the end";
    EXPECT_EQ(Read("r/x.bin", 999, 1), bytes.substr(999));
    EXPECT_EQ(Read("r/x.bin", 0, 0), "");
    EXPECT_EQ(Read("r/x.bin", 1000, 5), "") << "offset at the end: empty";
    EXPECT_EQ(Read("r/x.bin", 5000, 5), "") << "offset past the end: empty";
    EXPECT_EQ(Read("r/x.bin", 0, UINT64_MAX, 4096), bytes) << "no overflow on huge lengths";
    EXPECT_EQ(Read("r/x.bin", 500, UINT64_MAX, 3), bytes.substr(500));
}

TEST_F(LocalMediaStoreTest, NextNeverReturnsMoreThanAsked) {
    Put("n/x.bin", Bytes(100));
    auto r = store_->Open("n/x.bin", 0, 100);
    ASSERT_TRUE(r.has_value());
    auto a = (*r)->Next(60);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->size(), 60u);
    auto b = (*r)->Next(60);
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(b->size(), 40u);
    auto c = (*r)->Next(60);
    ASSERT_TRUE(c.has_value());
    EXPECT_TRUE(c->empty());
    auto d = (*r)->Next(60);
    ASSERT_TRUE(d.has_value());
    EXPECT_TRUE(d->empty()) << "stays exhausted";
}

TEST_F(LocalMediaStoreTest, NothingIsVisibleBeforeCommit) {
    auto w = store_->Create("p/partial.mp4", "video/mp4");
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE((*w)->Append(Bytes(5000)).has_value());
    auto st = store_->Stat("p/partial.mp4");
    ASSERT_TRUE(st.has_value());
    EXPECT_FALSE(st->has_value()) << "a reader never sees a partial object";
    auto open = store_->Open("p/partial.mp4", 0, 100);
    ASSERT_FALSE(open.has_value());
    EXPECT_EQ(open.error().code, core::ErrorCode::kNotFound);
    // The partial file exists only under a name that is not a valid key.
    auto files = Files();
    ASSERT_EQ(files.size(), 1u);
    EXPECT_FALSE(IsValidMediaKey(files[0])) << files[0];

    ASSERT_TRUE((*w)->Append("tail").has_value());
    auto info = (*w)->Commit();
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->size, 5004u);
    auto visible = store_->Stat("p/partial.mp4");
    ASSERT_TRUE(visible.has_value() && visible->has_value());
    EXPECT_EQ((*visible)->size, 5004u);
    // video/mp4 is what ".mp4" implies: no sidecar type file.
    EXPECT_EQ(Files(), (std::vector<std::string>{"p/partial.mp4"}));
    EXPECT_EQ((*visible)->content_type, "video/mp4");
}

TEST_F(LocalMediaStoreTest, AnUncommittedWriterLeavesNothing) {
    {
        auto w = store_->Create("u/never.mp4", "video/mp4");
        ASSERT_TRUE(w.has_value());
        ASSERT_TRUE((*w)->Append(Bytes(70'000)).has_value());
    }
    auto st = store_->Stat("u/never.mp4");
    ASSERT_TRUE(st.has_value());
    EXPECT_FALSE(st->has_value());
    EXPECT_TRUE(Files().empty()) << "the partial file was removed";
}

TEST_F(LocalMediaStoreTest, AnAbandonedRewriteKeepsThePreviousObject) {
    const std::string v1 = Bytes(300);
    Put("o/x.png", v1, "image/png");
    {
        auto w = store_->Create("o/x.png", "image/jpeg");
        ASSERT_TRUE(w.has_value());
        ASSERT_TRUE((*w)->Append("half").has_value());
    }
    auto st = store_->Stat("o/x.png");
    ASSERT_TRUE(st.has_value() && st->has_value());
    EXPECT_EQ((*st)->size, v1.size());
    EXPECT_EQ((*st)->content_type, "image/png");
    EXPECT_EQ(Read("o/x.png", 0, 1000), v1);
}

TEST_F(LocalMediaStoreTest, AReaderKeepsTheVersionItOpenedAcrossAReplace) {
    const std::string v1(50'000, 'a');
    const std::string v2(80'000, 'b');
    Put("swap/x.bin", v1);
    auto r = store_->Open("swap/x.bin", 0, UINT64_MAX);
    ASSERT_TRUE(r.has_value());
    auto first = (*r)->Next(1000);
    ASSERT_TRUE(first.has_value());
    Put("swap/x.bin", v2);  // atomic replace while the reader is mid-way
    std::string rest;
    for (;;) {
        auto p = (*r)->Next(4096);
        ASSERT_TRUE(p.has_value());
        if (p->empty()) {
            break;
        }
        rest += *p;
    }
    EXPECT_EQ(*first + rest, v1) << "the old reader sees the whole old object, never a mix";
    EXPECT_EQ(Read("swap/x.bin", 0, UINT64_MAX, 4096), v2) << "new readers see the new one";
}

TEST_F(LocalMediaStoreTest, CommitAndAppendAfterCommitFail) {
    auto w = store_->Create("c/x.bin", "application/octet-stream");
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE((*w)->Append("abc").has_value());
    ASSERT_TRUE((*w)->Commit().has_value());
    EXPECT_FALSE((*w)->Append("more").has_value());
    EXPECT_FALSE((*w)->Commit().has_value());
    EXPECT_EQ(Read("c/x.bin", 0, 100), "abc");
}

TEST_F(LocalMediaStoreTest, ATypeOtherThanTheExtensionsIsKeptAndDroppedOnReplace) {
    Put("t/clip.mp4", "abc", "video/x-custom");
    auto st = store_->Stat("t/clip.mp4");
    ASSERT_TRUE(st.has_value() && st->has_value());
    EXPECT_EQ((*st)->content_type, "video/x-custom");
    Put("t/clip.mp4", "abcd", "video/mp4");  // the extension's own type again
    st = store_->Stat("t/clip.mp4");
    ASSERT_TRUE(st.has_value() && st->has_value());
    EXPECT_EQ((*st)->content_type, "video/mp4");
    EXPECT_EQ(Files(), (std::vector<std::string>{"t/clip.mp4"})) << "no stale sidecar";
}

TEST_F(LocalMediaStoreTest, EmptyObjectsAndDefaultContentType) {
    auto w = store_->Create("e/empty", "");
    ASSERT_TRUE(w.has_value());
    auto info = (*w)->Commit();
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->size, 0u);
    auto st = store_->Stat("e/empty");
    ASSERT_TRUE(st.has_value() && st->has_value());
    EXPECT_EQ((*st)->size, 0u);
    EXPECT_EQ((*st)->content_type, "application/octet-stream");
    EXPECT_EQ(Read("e/empty", 0, 10), "");
}

TEST_F(LocalMediaStoreTest, InvalidKeysAreRefusedEverywhere) {
    // A file outside the root that a traversal would reach.
    {
        std::ofstream f(dir_.path() / "secret.txt");
        f << "top secret";
    }
    for (const char* k : {"../secret.txt", "/etc/passwd", "a//b", "", "x.type", "%2e%2e/x"}) {
        auto w = store_->Create(k, "text/plain");
        ASSERT_FALSE(w.has_value()) << k;
        EXPECT_EQ(w.error().code, core::ErrorCode::kInvalidRequest) << k;
        auto st = store_->Stat(k);
        ASSERT_TRUE(st.has_value()) << k;
        EXPECT_FALSE(st->has_value()) << k;
        auto open = store_->Open(k, 0, 100);
        ASSERT_FALSE(open.has_value()) << k;
        EXPECT_EQ(open.error().code, core::ErrorCode::kNotFound) << k;
        auto del = store_->Delete(k);
        ASSERT_TRUE(del.has_value()) << k;
        EXPECT_FALSE(*del) << k;
    }
    EXPECT_TRUE(fs::exists(dir_.path() / "secret.txt"));
    // The sidecar of a real object is not addressable either.
    Put("s/x.mp4", "data");
    auto side = store_->Stat("s/x.mp4.type");
    ASSERT_TRUE(side.has_value());
    EXPECT_FALSE(side->has_value());
}

TEST_F(LocalMediaStoreTest, DirectoriesAreNotObjects) {
    Put("tasks/t1/1-0.mp4", Bytes(10));
    for (const char* k : {"tasks", "tasks/t1"}) {
        auto st = store_->Stat(k);
        ASSERT_TRUE(st.has_value()) << k;
        EXPECT_FALSE(st->has_value()) << k << " is a directory, not an object";
        auto open = store_->Open(k, 0, 100);
        ASSERT_FALSE(open.has_value()) << k;
        EXPECT_EQ(open.error().code, core::ErrorCode::kNotFound) << k;
    }
}

TEST_F(LocalMediaStoreTest, ConcurrentWritersOfOneKeyNeverInterleave) {
    auto a = store_->Create("k/x.bin", "application/octet-stream");
    auto b = store_->Create("k/x.bin", "application/octet-stream");
    ASSERT_TRUE(a.has_value() && b.has_value());
    ASSERT_TRUE((*a)->Append(std::string(1000, 'a')).has_value());
    ASSERT_TRUE((*b)->Append(std::string(2000, 'b')).has_value());
    ASSERT_TRUE((*a)->Append(std::string(1000, 'a')).has_value());
    ASSERT_TRUE((*b)->Commit().has_value());
    EXPECT_EQ(Read("k/x.bin", 0, UINT64_MAX, 4096), std::string(2000, 'b'));
    ASSERT_TRUE((*a)->Commit().has_value());
    EXPECT_EQ(Read("k/x.bin", 0, UINT64_MAX, 4096), std::string(2000, 'a')) << "last commit wins";
}

TEST_F(LocalMediaStoreTest, PublicUrlJoinsTheBaseAndTheKey) {
    EXPECT_EQ(store_->PublicUrl("tasks/t/1-0.mp4"),
              "http://gw.example:8080/v1/media/tasks/t/1-0.mp4")
        << "trailing slashes of the base are dropped";
    auto other = OpenLocalMediaStore((dir_.path() / "m2").string(), "https://cdn.example.com");
    ASSERT_TRUE(other.has_value());
    EXPECT_EQ((*other)->PublicUrl("a.png"), "https://cdn.example.com/v1/media/a.png");
}

TEST_F(LocalMediaStoreTest, OpeningFailsWhenTheRootCannotBeCreated) {
    {
        std::ofstream f(dir_.path() / "file");
        f << "x";
    }
    auto bad = OpenLocalMediaStore((dir_.path() / "file" / "media").string(), "http://x");
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().code, core::ErrorCode::kInternal);
}

}  // namespace
}  // namespace conduit::media
