#include "storage/local_store.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::storage {
namespace {
namespace fs = std::filesystem;

class LocalStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = tmp_.path();
    fs::create_directories(base_ / "root");
    fs::create_directories(base_ / "outside");
    auto s = LocalObjectStore::Create({(base_ / "root").string()});
    ASSERT_TRUE(s.ok());
    store_ = *std::move(s);
  }
  std::string Uri(const std::string& rel) { return "file://" + (base_ / rel).string(); }
  ::nvfp4::testing::TempDir tmp_;
  fs::path base_;  // tmp_
  std::unique_ptr<LocalObjectStore> store_;
};

TEST_F(LocalStoreTest, WriteReadListRoundTrip) {
  ASSERT_TRUE(store_->WriteAll(Uri("root/a/b.bin"), "hello world").ok());
  auto size = store_->Size(Uri("root/a/b.bin"));
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, 11);
  char buf[5];
  ASSERT_TRUE(store_->ReadAt(Uri("root/a/b.bin"), 6, 5, buf).ok());
  EXPECT_EQ(std::string(buf, 5), "world");
  EXPECT_TRUE(absl::IsOutOfRange(store_->ReadAt(Uri("root/a/b.bin"), 8, 5, buf)));
  auto list = store_->List(Uri("root"));
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "a/b.bin");
  // Relative file:// paths resolve against the first root.
  EXPECT_TRUE(store_->Size("file://a/b.bin").ok());
}

TEST_F(LocalStoreTest, WriterIsAtomic) {
  auto w = store_->OpenWrite(Uri("root/x.bin"));
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append("partial").ok());
  EXPECT_TRUE(absl::IsNotFound(store_->Size(Uri("root/x.bin")).status()));
  (*w)->Abort();
  EXPECT_TRUE(absl::IsNotFound(store_->Size(Uri("root/x.bin")).status()));
  EXPECT_TRUE(store_->List(Uri("root"))->empty());  // no temp files left
}

TEST_F(LocalStoreTest, RefusesEscapes) {
  EXPECT_TRUE(absl::IsInvalidArgument(store_->Size(Uri("root/../outside/f")).status()));
  EXPECT_TRUE(absl::IsPermissionDenied(store_->WriteAll(Uri("outside/f"), "x")));
  fs::create_directory_symlink(base_ / "outside", base_ / "root" / "link");
  EXPECT_TRUE(absl::IsPermissionDenied(store_->WriteAll(Uri("root/link/f"), "x")));
  EXPECT_FALSE(fs::exists(base_ / "outside" / "f"));
  EXPECT_TRUE(absl::IsPermissionDenied(store_->Size("file:///etc/passwd").status()));
}

TEST(StorageUriTest, Parses) {
  auto s3 = ParseStorageUri("s3://bucket/some/prefix");
  ASSERT_TRUE(s3.ok());
  EXPECT_EQ(s3->bucket, "bucket");
  EXPECT_EQ(s3->path, "some/prefix");
  EXPECT_FALSE(ParseStorageUri("http://x").ok());
  EXPECT_FALSE(ParseStorageUri("s3:///key").ok());
  EXPECT_EQ(JoinUri("s3://b/p/", "/f.json"), "s3://b/p/f.json");
}

}  // namespace
}  // namespace nvfp4::storage
