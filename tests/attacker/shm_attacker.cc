// shm_attacker: what a hostile process can do to /dev/shm, with nothing but system calls.
//
// Deliberately independent of pitlane: no pitlane header, no pitlane library. Offsets into
// segments are given by the caller (the tests take them from the layout specification in
// shm_layout.h), so this program encodes no knowledge of the format at all. Every action is an
// open/pwrite/ftruncate/mkfifo on a path under /dev/shm, optionally after dropping to another
// uid, exactly as an unrelated process would do it.
//
//   shm_attacker [--uid UID] create   PATH MODE BYTES      O_EXCL create, fchmod MODE (octal)
//   shm_attacker [--uid UID] fifo     PATH                 mkfifo 0600
//   shm_attacker [--uid UID] truncate PATH BYTES           one ftruncate
//   shm_attacker [--uid UID] write64  PATH OFFSET VALUE    pwrite of a little-endian uint64
//   shm_attacker [--uid UID] writestr PATH OFFSET TEXT     pwrite of TEXT and a NUL
//   shm_attacker [--uid UID] unlink   PATH                 unlink
//   shm_attacker [--uid UID] churn    PREFIX MS            for MS milliseconds, in alternate
//                                                          passes, ftruncate every
//                                                          /dev/shm/PREFIX* file to 0 (or 4096)
//                                                          and back to its first-seen size,
//                                                          re-creating the ones removed
//
// Exit status: 0 done, 1 the system call failed (message on stderr), 2 usage.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

int Fail(const char* what, const std::string& path) {
  std::fprintf(stderr, "shm_attacker: %s %s: %s\n", what, path.c_str(), std::strerror(errno));
  return 1;
}

int OpenRw(const std::string& path) { return ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC); }

int Churn(const std::string& prefix, long ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  std::map<std::string, off_t> original;  // size when first seen
  uint64_t round = 0;
  while (std::chrono::steady_clock::now() < end) {
    if (DIR* d = ::opendir("/dev/shm")) {
      while (dirent* e = ::readdir(d)) {
        if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) != 0) continue;
        const std::string p = std::string("/dev/shm/") + e->d_name;
        struct stat st;
        if (original.count(p) == 0 && ::lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
          original[p] = st.st_size;
        }
      }
      ::closedir(d);
    }
    // Every file shrinks in one pass and is restored in the next, so half of the time any
    // reader that sized a file before a shrinking pass holds a mapping past its end.
    const off_t shrink_to = (round / 2) % 2 == 0 ? 0 : 4096;
    for (const auto& [p, size] : original) {
      // Removed by someone (a host cleaning up stale segments): put it back.
      const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
      if (fd < 0) continue;
      (void)::ftruncate(fd, round % 2 == 0 ? shrink_to : size);
      ::close(fd);
    }
    ++round;
  }
  std::printf("%llu rounds\n", static_cast<unsigned long long>(round));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int a = 1;
  if (a + 1 < argc && std::strcmp(argv[a], "--uid") == 0) {
    const uid_t uid = static_cast<uid_t>(std::strtoul(argv[a + 1], nullptr, 10));
    if (::setgid(uid) != 0 || ::setuid(uid) != 0) return Fail("setuid", argv[a + 1]);
    a += 2;
  }
  if (a >= argc) return 2;
  const std::string cmd = argv[a];
  const int n = argc - a - 1;
  char** arg = argv + a + 1;
  if (cmd == "create" && n == 3) {
    const int fd = ::open(arg[0], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return Fail("create", arg[0]);
    if (::fchmod(fd, static_cast<mode_t>(std::strtoul(arg[1], nullptr, 8))) != 0) {
      return Fail("fchmod", arg[0]);
    }
    if (::ftruncate(fd, std::strtoll(arg[2], nullptr, 10)) != 0) return Fail("ftruncate", arg[0]);
    ::close(fd);
    return 0;
  }
  if (cmd == "fifo" && n == 1) {
    if (::mkfifo(arg[0], 0600) != 0) return Fail("mkfifo", arg[0]);
    return 0;
  }
  if (cmd == "unlink" && n == 1) {
    if (::unlink(arg[0]) != 0) return Fail("unlink", arg[0]);
    return 0;
  }
  if (cmd == "truncate" && n == 2) {
    const int fd = OpenRw(arg[0]);
    if (fd < 0) return Fail("open", arg[0]);
    if (::ftruncate(fd, std::strtoll(arg[1], nullptr, 10)) != 0) return Fail("ftruncate", arg[0]);
    ::close(fd);
    return 0;
  }
  if ((cmd == "write64" || cmd == "writestr") && n == 3) {
    const int fd = OpenRw(arg[0]);
    if (fd < 0) return Fail("open", arg[0]);
    const off_t off = std::strtoll(arg[1], nullptr, 0);
    ssize_t w;
    if (cmd == "write64") {
      const uint64_t v = std::strtoull(arg[2], nullptr, 0);
      uint8_t bytes[8];
      for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(v >> (8 * i));
      w = ::pwrite(fd, bytes, sizeof(bytes), off);
    } else {
      w = ::pwrite(fd, arg[2], std::strlen(arg[2]) + 1, off);
    }
    if (w < 0) return Fail("pwrite", arg[0]);
    ::close(fd);
    return 0;
  }
  if (cmd == "churn" && n == 2) return Churn(arg[0], std::strtol(arg[1], nullptr, 10));
  std::fprintf(stderr, "shm_attacker: bad arguments (see the comment at the top of the source)\n");
  return 2;
}
