#include "base/fd_io.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace nvfp4 {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "." + std::to_string(::getpid())))
      .string();
}

std::string ReadAllFd(int fd) {
  std::string out;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

TEST(WriteAllTest, WritesEverythingAtTheFileOffset) {
  const std::string path = TempPath("nvfp4_fd_io_write");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(WriteAll(fd, std::string_view("hello "), "write").ok());
  const std::vector<uint8_t> bytes = {'w', 'o', 'r', 'l', 'd'};
  ASSERT_TRUE(WriteAll(fd, bytes, "write").ok());
  ASSERT_TRUE(PWriteAll(fd, std::vector<uint8_t>{'W'}, 6, "pwrite").ok());
  ASSERT_EQ(::lseek(fd, 0, SEEK_SET), 0);
  EXPECT_EQ(ReadAllFd(fd), "hello World");
  ::close(fd);
  std::filesystem::remove(path);
}

TEST(WriteAllTest, ErrorsNameWhatAndMapErrno) {
  const absl::Status s = WriteAll(-1, std::string_view("x"), "cannot write nowhere");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);  // EBADF
  EXPECT_EQ(s.message().substr(0, 22), "cannot write nowhere: ");
  const std::string path = TempPath("nvfp4_fd_io_ro");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  EXPECT_FALSE(PWriteAll(fd, std::vector<uint8_t>{1}, 0, "pwrite").ok());
  ::close(fd);
  std::filesystem::remove(path);
}

void OnSignal(int) {}

// A writer blocked on a full pipe is interrupted by signals (installed without SA_RESTART, so
// write(2) returns EINTR or a short count): WriteAll goes on until every byte is through.
TEST(WriteAllTest, RetriesWhenInterrupted) {
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART
  struct sigaction old = {};
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  std::string data(4 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + (i >> 12));
  std::atomic<bool> done{false};
  absl::Status status;
  pthread_t writer_id{};
  std::atomic<bool> started{false};
  std::thread writer([&] {
    writer_id = ::pthread_self();
    started = true;
    status = WriteAll(p[1], data, "write pipe");
    ::close(p[1]);
    done = true;
  });
  while (!started) std::this_thread::yield();
  // Interrupt the blocked writer a few times before reading anything.
  for (int i = 0; i < 20 && !done; ++i) {
    ::pthread_kill(writer_id, SIGUSR1);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  std::string got;
  std::thread reader([&] { got = ReadAllFd(p[0]); });
  // And while it drains.
  for (int i = 0; i < 200 && !done; ++i) {
    ::pthread_kill(writer_id, SIGUSR1);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  writer.join();
  reader.join();
  ::close(p[0]);
  ::sigaction(SIGUSR1, &old, nullptr);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(got.size(), data.size());
  EXPECT_TRUE(got == data);
}

}  // namespace
}  // namespace nvfp4
