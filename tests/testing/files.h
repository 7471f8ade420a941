// Whole files and directory trees in tests.
//
//   WriteFile(tmp.Path("a.bin"), bytes);
//   EXPECT_EQ(ReadFile(tmp.Path("a.bin")), bytes);
//   EXPECT_EQ(DirectorySnapshot(single_run), DirectorySnapshot(sharded_run));  // byte for byte
#ifndef NVFP4_TESTS_TESTING_FILES_H_
#define NVFP4_TESTS_TESTING_FILES_H_

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

namespace nvfp4::testing {

// The bytes of `path` ("" when it cannot be read).
inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Replaces `path` with `bytes`.
inline void WriteFile(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Relative path -> contents of every regular file below `dir` (empty when `dir` does not exist).
inline std::map<std::string, std::string> DirectorySnapshot(const std::filesystem::path& dir) {
  std::map<std::string, std::string> m;
  if (!std::filesystem::exists(dir)) return m;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) {
      m[std::filesystem::relative(e.path(), dir).string()] = ReadFile(e.path());
    }
  }
  return m;
}

}  // namespace nvfp4::testing

#endif  // NVFP4_TESTS_TESTING_FILES_H_
