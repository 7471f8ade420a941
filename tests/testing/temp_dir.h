// A fresh temporary directory for a test, removed with its contents on destruction.
//
//   TempDir tmp;
//   WriteSomething(tmp.Path("out.safetensors"));   // <tmp>/out.safetensors
#ifndef NVFP4_TESTS_TESTING_TEMP_DIR_H_
#define NVFP4_TESTS_TESTING_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <string_view>

namespace nvfp4::testing {

class TempDir {
 public:
  // Under $TMPDIR (std::filesystem::temp_directory_path), named nvfp4_test_XXXXXX.
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "nvfp4_test_XXXXXX").string();
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // <dir>/<name> (name may hold subdirectories; nothing is created).
  std::string Path(std::string_view name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace nvfp4::testing

#endif  // NVFP4_TESTS_TESTING_TEMP_DIR_H_
