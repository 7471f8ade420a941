// The ObjectStore contract (storage/object_store.h), checked against LocalObjectStore and the
// in-memory fake MemoryObjectStore alike, so that tests using the fake test what production does.
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/local_store.h"
#include "storage/memory_store.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace nvfp4::storage {
namespace {

using ::nvfp4::testing::IsOk;
using ::nvfp4::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::Field;

// A store and the URI of a directory in it.
struct LocalFactory {
  ::nvfp4::testing::TempDir tmp;
  std::unique_ptr<ObjectStore> Make() {
    auto s = LocalObjectStore::Create({tmp.path().string()});
    EXPECT_THAT(s, IsOk());
    return s.ok() ? std::unique_ptr<ObjectStore>(std::move(s).value()) : nullptr;
  }
  std::string Root() const { return "file://" + tmp.path().string(); }
};
struct MemoryFactory {
  std::unique_ptr<ObjectStore> Make() { return std::make_unique<MemoryObjectStore>(); }
  std::string Root() const { return "file:///memory/root"; }
};

template <typename Factory>
class ObjectStoreContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = factory_.Make();
    ASSERT_NE(store_, nullptr);
  }
  std::string Uri(const std::string& rel) const { return JoinUri(factory_.Root(), rel); }
  Factory factory_;
  std::unique_ptr<ObjectStore> store_;
};

using Factories = ::testing::Types<LocalFactory, MemoryFactory>;
TYPED_TEST_SUITE(ObjectStoreContractTest, Factories);

TYPED_TEST(ObjectStoreContractTest, WriteSizeReadList) {
  ObjectStore& s = *this->store_;
  ASSERT_THAT(s.WriteAll(this->Uri("d/b.bin"), "hello world"), IsOk());
  ASSERT_THAT(s.WriteAll(this->Uri("d/a/c.txt"), "abc"), IsOk());
  EXPECT_EQ(*s.Size(this->Uri("d/b.bin")), 11);
  char buf[5];
  ASSERT_THAT(s.ReadAt(this->Uri("d/b.bin"), 6, 5, buf), IsOk());
  EXPECT_EQ(std::string(buf, 5), "world");
  EXPECT_EQ(*s.ReadAll(this->Uri("d/a/c.txt")), "abc");
  auto list = s.List(this->Uri("d"));
  ASSERT_THAT(list, IsOk());
  EXPECT_THAT(*list,
              ElementsAre(Field(&ObjectInfo::name, "a/c.txt"), Field(&ObjectInfo::name, "b.bin")));
  EXPECT_EQ((*list)[1].size, 11);
}

TYPED_TEST(ObjectStoreContractTest, AbsentAndOutOfRange) {
  ObjectStore& s = *this->store_;
  EXPECT_THAT(s.Size(this->Uri("nope.bin")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(s.List(this->Uri("no-such-dir")), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(s.WriteAll(this->Uri("f.bin"), "12345"), IsOk());
  char buf[8];
  EXPECT_THAT(s.ReadAt(this->Uri("f.bin"), 3, 3, buf), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(s.ReadAt(this->Uri("f.bin"), 5, 0, buf), IsOk());
}

TYPED_TEST(ObjectStoreContractTest, DeleteRemovesAndCopyDuplicates) {
  ObjectStore& s = *this->store_;
  std::string big(9u << 20, '\0');  // more than one 8 MiB read of the default Copy
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 % 251);
  ASSERT_THAT(s.WriteAll(this->Uri("c/src.bin"), big), IsOk());
  ASSERT_THAT(s.Copy(this->Uri("c/src.bin"), this->Uri("c/sub/dst.bin")), IsOk());
  EXPECT_TRUE(*s.ReadAll(this->Uri("c/sub/dst.bin")) == big);
  EXPECT_THAT(s.Copy(this->Uri("c/none.bin"), this->Uri("c/x.bin")),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(s.Delete(this->Uri("c/src.bin")), IsOk());
  EXPECT_THAT(s.Size(this->Uri("c/src.bin")), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(s.Delete(this->Uri("c/src.bin")), IsOk());  // absent: OK
  EXPECT_EQ(s.ReadAll(this->Uri("c/sub/dst.bin"))->size(), big.size());
}

TYPED_TEST(ObjectStoreContractTest, WritesPublishOnlyOnCommit) {
  ObjectStore& s = *this->store_;
  {
    auto w = s.OpenWrite(this->Uri("x.bin"));
    ASSERT_THAT(w, IsOk());
    ASSERT_THAT((*w)->Append("partial"), IsOk());
    EXPECT_EQ((*w)->bytes_written(), 7);
    EXPECT_THAT(s.Size(this->Uri("x.bin")), StatusIs(absl::StatusCode::kNotFound));
    (*w)->Abort();
  }
  EXPECT_THAT(s.Size(this->Uri("x.bin")), StatusIs(absl::StatusCode::kNotFound));
  {
    auto w = s.OpenWrite(this->Uri("x.bin"));
    ASSERT_THAT(w, IsOk());
    ASSERT_THAT((*w)->Append("dropped"), IsOk());
  }  // destroyed without Commit: aborted
  EXPECT_THAT(s.Size(this->Uri("x.bin")), StatusIs(absl::StatusCode::kNotFound));
  auto w = s.OpenWrite(this->Uri("x.bin"));
  ASSERT_THAT(w, IsOk());
  ASSERT_THAT((*w)->Append("one "), IsOk());
  ASSERT_THAT((*w)->Append("two"), IsOk());
  ASSERT_THAT((*w)->Commit(), IsOk());
  EXPECT_EQ(*s.ReadAll(this->Uri("x.bin")), "one two");
  EXPECT_THAT((*w)->Append("late"), StatusIs(absl::StatusCode::kFailedPrecondition));
  // A second write replaces the object whole.
  ASSERT_THAT(s.WriteAll(this->Uri("x.bin"), "new"), IsOk());
  EXPECT_EQ(*s.ReadAll(this->Uri("x.bin")), "new");
}

TEST(MemoryObjectStoreTest, S3PrefixesListEmptyAndUrisAreChecked) {
  MemoryObjectStore s;
  EXPECT_THAT(s.List("s3://bucket/empty"), IsOk());
  EXPECT_THAT(s.Size("http://x/y"), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(s.WriteAll("s3://bucket/p/k", "v"), IsOk());
  EXPECT_EQ(s.List("s3://bucket/p/")->size(), 1u);
  EXPECT_EQ(s.object_count(), 1u);
}

}  // namespace
}  // namespace nvfp4::storage
