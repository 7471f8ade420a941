#include "base/sha256.h"

#include <string>

#include "gtest/gtest.h"

namespace nvfp4 {
namespace {

TEST(Sha256Test, KnownDigests) {
  EXPECT_EQ(Sha256::Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256::Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, IncrementalEqualsOneShot) {
  const std::string text(100000, 'q');
  Sha256 h;
  for (size_t i = 0; i < text.size(); i += 777) h.Update(std::string_view(text).substr(i, 777));
  EXPECT_EQ(h.HexDigest(), Sha256::Hex(text));
}

}  // namespace
}  // namespace nvfp4
