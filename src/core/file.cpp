#include "core/file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace tb {

void write_file_atomic(const std::string& path,
                       const std::function<bool(const std::string&)>& fill) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  errno = 0;
  if (!fill(tmp)) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: write failed ({})", path, err ? std::strerror(err) : "disk full?");
  }
  // Test hook (tests/cli/faults_test.cpp): a kill -9 in the middle of writing a file whose path
  // holds this text, with half the temp file written and before the rename.
  const char* kill_in = std::getenv("TRAINBENCH_TEST_KILL_IN_WRITE");
  if (kill_in && *kill_in && path.find(kill_in) != std::string::npos) {
    std::error_code size_ec;
    if (::truncate(tmp.c_str(), off_t(fs::file_size(tmp, size_ec) / 2)) == 0) ::raise(SIGKILL);
  }
  // fsync through a fresh descriptor covers writers (zlib, stdio) that keep theirs private.
  const int fd = ::open(tmp.c_str(), O_RDONLY);
  const bool synced = fd >= 0 && ::fsync(fd) == 0;
  if (fd >= 0) ::close(fd);
  if (!synced || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot put the file in place ({})", path, std::strerror(err));
  }
}

void remove_stale_temps(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string prefix = target.filename().string() + ".tmp.";
  std::error_code ec;
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string pid = name.substr(prefix.size());
    if (pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (::kill(pid_t(std::stol(pid)), 0) == 0 || errno == EPERM) continue;  // its writer lives
    std::error_code remove_ec;
    fs::remove(it->path(), remove_ec);
  }
}

void write_text_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, [&text](const std::string& tmp) {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return false;
    if (!write_all(fd, text.data(), text.size())) {
      const int err = errno;
      ::close(fd);
      errno = err;
      return false;
    }
    return ::close(fd) == 0;
  });
}

bool write_all(int fd, const void* data, size_t bytes) {
  for (size_t done = 0; done < bytes;) {
    const ssize_t k = ::write(fd, static_cast<const char*>(data) + done, bytes - done);
    if (k <= 0) return false;
    done += size_t(k);
  }
  return true;
}

}  // namespace tb
