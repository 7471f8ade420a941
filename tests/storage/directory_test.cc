// The directories of storage/directory.h, checked against the LocalObjectStore (local paths: the
// rename fast path) and the in-memory fake (no local paths: scratch staging and uploads) alike.
#include "storage/directory.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/local_store.h"
#include "storage/memory_store.h"
#include "tests/testing/files.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::storage {
namespace {

namespace fs = std::filesystem;
using ::nvfp4::testing::IsOk;
using ::nvfp4::testing::StatusIs;
using ::nvfp4::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A store and the URI of a directory in it.
struct LocalFactory {
  static constexpr bool kLocal = true;
  std::unique_ptr<ObjectStore> Make(const TempDir& tmp) {
    auto s = LocalObjectStore::Create({tmp.Path("root")});
    EXPECT_THAT(s, IsOk());
    return s.ok() ? std::unique_ptr<ObjectStore>(std::move(s).value()) : nullptr;
  }
  std::string Root(const TempDir& tmp) const { return "file://" + tmp.Path("root"); }
};
struct MemoryFactory {
  static constexpr bool kLocal = false;
  std::unique_ptr<ObjectStore> Make(const TempDir&) {
    return std::make_unique<MemoryObjectStore>();
  }
  std::string Root(const TempDir&) const { return "s3://bucket/root"; }
};

template <typename Factory>
class DirectoryContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = factory_.Make(tmp_);
    ASSERT_NE(store_, nullptr);
  }
  std::string Uri(const std::string& rel) const { return JoinUri(factory_.Root(tmp_), rel); }
  std::unique_ptr<StagedOutputDirectory> Staged(const std::string& rel, bool overwrite = false) {
    StagedOutputDirectory::Options o;
    o.overwrite = overwrite;
    o.scratch_root = tmp_.Path("scratch");
    auto d = StagedOutputDirectory::Open(store_.get(), Uri(rel), o);
    EXPECT_THAT(d, IsOk());
    return d.ok() ? std::move(*d) : nullptr;
  }
  std::unique_ptr<SharedOutputDirectory> Shared(const std::string& rel) {
    SharedOutputDirectory::Options o;
    o.scratch_root = tmp_.Path("scratch");
    auto d = SharedOutputDirectory::Open(store_.get(), Uri(rel), o);
    EXPECT_THAT(d, IsOk());
    return d.ok() ? std::move(*d) : nullptr;
  }
  // The names under `rel` (empty when there is nothing).
  std::vector<std::string> Names(const std::string& rel) {
    std::vector<std::string> names;
    auto list = store_->List(Uri(rel));
    if (!list.ok()) {
      EXPECT_THAT(list.status(), StatusIs(absl::StatusCode::kNotFound));
      return names;
    }
    for (const ObjectInfo& o : *list) names.push_back(o.name);
    return names;
  }
  std::string Read(const std::string& rel) {
    auto s = store_->ReadAll(Uri(rel));
    return s.ok() ? *s : "<" + s.status().ToString() + ">";
  }

  TempDir tmp_;
  Factory factory_;
  std::unique_ptr<ObjectStore> store_;
};

using Factories = ::testing::Types<LocalFactory, MemoryFactory>;
TYPED_TEST_SUITE(DirectoryContractTest, Factories);

void Write(const std::string& staging, const std::string& name, const std::string& bytes) {
  fs::create_directories((fs::path(staging) / name).parent_path());
  std::ofstream(fs::path(staging) / name, std::ios::binary) << bytes;
}

TYPED_TEST(DirectoryContractTest, LocalPathIsTheCapabilityOfLocalStoresOnly) {
  auto p = this->store_->LocalPath(this->Uri("a/b"));
  ASSERT_THAT(p, IsOk());
  if (TypeParam::kLocal) {
    ASSERT_TRUE(p->has_value());
    EXPECT_EQ(**p, fs::canonical(this->tmp_.Path("root")) / "a/b");
    EXPECT_THAT(this->store_->LocalPath("file:///etc/passwd"),
                StatusIs(absl::StatusCode::kPermissionDenied));
  } else {
    EXPECT_EQ(*p, std::nullopt);
  }
}

TYPED_TEST(DirectoryContractTest, InputListsReadsAndChecksExistence) {
  ObjectStore& s = *this->store_;
  ASSERT_THAT(s.WriteAll(this->Uri("in/config.json"), "{}"), IsOk());
  ASSERT_THAT(s.WriteAll(this->Uri("in/sub/model.bin"), "hello world"), IsOk());
  auto in = StoreInputDirectory::Open(&s, this->Uri("in/"));
  ASSERT_THAT(in, IsOk());
  EXPECT_EQ((*in)->Describe(), this->Uri("in"));
  EXPECT_THAT(*(*in)->ListFiles(), ElementsAre("config.json", "sub/model.bin"));
  EXPECT_TRUE((*in)->Exists("sub/model.bin"));
  EXPECT_FALSE((*in)->Exists("nope"));
  auto src = (*in)->OpenFile("sub/model.bin");
  ASSERT_THAT(src, IsOk());
  EXPECT_EQ(*(*src)->Size(), 11u);
  uint8_t buf[5];
  ASSERT_THAT((*src)->ReadAt(6, buf), IsOk());
  EXPECT_EQ(std::string(reinterpret_cast<char*>(buf), 5), "world");
  EXPECT_THAT((*src)->ReadAt(8, buf), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(*(*in)->ReadSmallFile("config.json"), "{}");
  EXPECT_THAT((*in)->ReadSmallFile("sub/model.bin", 4),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT((*in)->OpenFile("nope"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(StoreInputDirectory::Open(&s, this->Uri("missing")),
              StatusIs(absl::StatusCode::kNotFound));
}

TYPED_TEST(DirectoryContractTest, StagedOutputAppearsOnlyOnCommit) {
  auto out = this->Staged("out");
  ASSERT_NE(out, nullptr);
  EXPECT_EQ(out->PublishesByRename(), TypeParam::kLocal);
  auto staging = out->Begin();
  ASSERT_THAT(staging, IsOk());
  Write(*staging, "config.json", "{}");
  Write(*staging, "model.safetensors", "weights");
  Write(*staging, "sub/x.txt", "x");
  EXPECT_THAT(this->Names("out"), IsEmpty());
  ASSERT_THAT(out->Commit(), IsOk());
  EXPECT_THAT(this->Names("out"), ElementsAre("config.json", "model.safetensors", "sub/x.txt"));
  EXPECT_EQ(this->Read("out/model.safetensors"), "weights");
  EXPECT_FALSE(fs::exists(*staging));
  if (!TypeParam::kLocal) {  // uploaded, config.json last, each with its size and sha256
    ASSERT_EQ(out->published().size(), 3u);
    EXPECT_EQ(out->published().back().name, "config.json");
    EXPECT_EQ(out->published()[0].size, 7);
    EXPECT_EQ(out->published()[0].sha256.size(), 64u);
  }
}

TYPED_TEST(DirectoryContractTest, AbortAndDestructionPublishNothing) {
  std::string staging;
  {
    auto out = this->Staged("out");
    ASSERT_NE(out, nullptr);
    auto s = out->Begin();
    ASSERT_THAT(s, IsOk());
    staging = *s;
    Write(staging, "a", "1");
    out->Abort();
    EXPECT_FALSE(fs::exists(staging));
    auto again = out->Begin();
    ASSERT_THAT(again, IsOk());
    staging = *again;
    Write(staging, "b", "2");
  }  // destroyed without Commit
  EXPECT_FALSE(fs::exists(staging));
  EXPECT_THAT(this->Names("out"), IsEmpty());
}

TYPED_TEST(DirectoryContractTest, ExistingOutputIsRefusedUnlessOverwrite) {
  ASSERT_THAT(this->store_->WriteAll(this->Uri("out/old.txt"), "old"), IsOk());
  auto out = this->Staged("out");
  ASSERT_NE(out, nullptr);
  EXPECT_THAT(out->Begin(), StatusIs(absl::StatusCode::kAlreadyExists));
  auto over = this->Staged("out", /*overwrite=*/true);
  ASSERT_NE(over, nullptr);
  auto staging = over->Begin();
  ASSERT_THAT(staging, IsOk());
  Write(*staging, "new.txt", "new");
  ASSERT_THAT(over->Commit(), IsOk());
  EXPECT_EQ(this->Read("out/new.txt"), "new");
  // A local target is replaced as a whole; an object prefix keeps the objects not rewritten.
  if (TypeParam::kLocal) {
    EXPECT_THAT(this->Names("out"), ElementsAre("new.txt"));
  } else {
    EXPECT_THAT(this->Names("out"), ElementsAre("new.txt", "old.txt"));
  }
}

TYPED_TEST(DirectoryContractTest, ResumableStagingIsKeptByAbortAndRemovedByDiscard) {
  std::string first;
  {
    auto out = this->Staged("out");
    ASSERT_NE(out, nullptr);
    ASSERT_THAT(out->SetResumeKey("job-1"), IsOk());
    auto staging = out->Begin();
    ASSERT_THAT(staging, IsOk());
    first = *staging;
    Write(first, "partial", "p");
    out->Abort();
  }
  EXPECT_TRUE(fs::exists(fs::path(first) / "partial"));
  auto out = this->Staged("out");
  ASSERT_NE(out, nullptr);
  EXPECT_THAT(out->SetResumeKey("../x"), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(out->SetResumeKey("job-1"), IsOk());
  auto staging = out->Begin();
  ASSERT_THAT(staging, IsOk());
  EXPECT_EQ(*staging, first);
  EXPECT_EQ(::nvfp4::testing::ReadFile(fs::path(first) / "partial"), "p");
  out->Discard();
  EXPECT_FALSE(fs::exists(first));
  EXPECT_THAT(this->Names("out"), IsEmpty());
}

TYPED_TEST(DirectoryContractTest, SharedOutputTakesFilesFromSeveralWriters) {
  auto a = this->Shared("out");
  auto b = this->Shared("out");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->PublishesByRename(), TypeParam::kLocal);
  auto sa = a->Begin();
  auto sb = b->Begin();
  ASSERT_THAT(sa, IsOk());
  ASSERT_THAT(sb, IsOk());
  EXPECT_NE(*sa, *sb);
  Write(*sa, "model-00001.safetensors", "one");
  Write(*sb, "model-00002.safetensors", "two");
  ASSERT_THAT(b->Commit(), IsOk());
  ASSERT_THAT(a->Commit(), IsOk());
  EXPECT_THAT(this->Names("out"),
              ElementsAre("model-00001.safetensors", "model-00002.safetensors"));
  // A later writer (finalize) adds its files and replaces same-named ones, leaving the rest.
  auto c = this->Shared("out");
  ASSERT_NE(c, nullptr);
  auto sc = c->Begin();
  ASSERT_THAT(sc, IsOk());
  Write(*sc, "config.json", "{}");
  Write(*sc, "model-00002.safetensors", "TWO");
  ASSERT_THAT(c->Commit(), IsOk());
  EXPECT_THAT(this->Names("out"),
              ElementsAre("config.json", "model-00001.safetensors", "model-00002.safetensors"));
  EXPECT_EQ(this->Read("out/model-00001.safetensors"), "one");
  EXPECT_EQ(this->Read("out/model-00002.safetensors"), "TWO");
  // Abort publishes nothing.
  auto d = this->Shared("out");
  ASSERT_NE(d, nullptr);
  auto sd = d->Begin();
  ASSERT_THAT(sd, IsOk());
  Write(*sd, "stray.txt", "x");
  d->Abort();
  EXPECT_FALSE(fs::exists(*sd));
  EXPECT_EQ(this->Names("out").size(), 3u);
}

// ---- locations ----

TEST(DirectoryLocationTest, LocalPathsWithoutDataRootsAreUnconfinedAndDescribedAsWritten) {
  TempDir tmp;
  fs::create_directories(tmp.Path("in/sub"));
  std::ofstream(tmp.Path("in/.hidden")) << "h";
  std::ofstream(tmp.Path("in/sub/a")) << "a";
  StorageRouter none(nullptr, nullptr);
  auto in = OpenInputDirectory("file://" + tmp.Path("in") + "/", none);
  ASSERT_THAT(in, IsOk());
  EXPECT_EQ((*in)->Describe(), tmp.Path("in"));
  EXPECT_THAT(*(*in)->ListFiles(), ElementsAre(".hidden", "sub/a"));  // a plain directory walk
  EXPECT_THAT(OpenLocalInputDirectory(tmp.Path("missing")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no such directory")));
  EXPECT_THAT(OpenLocalInputDirectory(tmp.Path("in/sub/a")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a directory")));
  auto out = OpenOutputDirectory(tmp.Path("out"), none);
  ASSERT_THAT(out, IsOk());
  EXPECT_TRUE((*out)->PublishesByRename());
  EXPECT_EQ((*out)->Describe(), tmp.Path("out"));
  auto staging = (*out)->Begin();
  ASSERT_THAT(staging, IsOk());
  EXPECT_EQ(fs::path(*staging).parent_path(), fs::path(tmp.Path("out")).parent_path());
  EXPECT_THAT(OpenInputDirectory("s3://bucket/x", none),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("S3 is not configured")));
  EXPECT_THAT(OpenInputDirectory("gs://bucket/x", none),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(OpenOutputDirectory("", none), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DirectoryLocationTest, DataRootsConfineLocalPaths) {
  TempDir tmp;
  StoreConfig config;
  config.data_roots = {tmp.Path("data")};
  auto router = MakeStorageRouter(config);
  ASSERT_THAT(router, IsOk());
  ASSERT_THAT((*router)->WriteAll("file://" + tmp.Path("data/in/a"), "a"), IsOk());
  auto in = OpenInputDirectory("file://" + tmp.Path("data/in"), **router);
  ASSERT_THAT(in, IsOk());
  EXPECT_THAT(*(*in)->ListFiles(), ElementsAre("a"));
  EXPECT_THAT(OpenInputDirectory(tmp.Path("elsewhere"), **router),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(OpenOutputDirectory("file://" + tmp.Path("elsewhere"), **router),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(OpenSharedOutputDirectory(tmp.Path("elsewhere"), **router),
              StatusIs(absl::StatusCode::kPermissionDenied));
  auto file = OpenObjectFile(tmp.Path("data/in/a"), **router);
  ASSERT_THAT(file, IsOk());
  EXPECT_EQ(*(*file)->Size(), 1u);
}

}  // namespace
}  // namespace nvfp4::storage
