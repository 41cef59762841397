#include "segment_file.h"

#include <fcntl.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace pitlane::shm::internal {
namespace {

std::string UserName(uid_t uid) {
  passwd pw;
  passwd* found = nullptr;
  char buf[1024];
  if (::getpwuid_r(uid, &pw, buf, sizeof(buf), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return "?";
}

const char* FileType(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a regular file";
}

}  // namespace

std::string SegmentPath(const std::string& name) { return "/dev/shm" + name; }

std::string DescribeFile(const struct stat& st) {
  char mode[16];
  std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return "owner " + UserName(st.st_uid) + " (uid " + std::to_string(st.st_uid) + "), mode " +
         mode + ", " + FileType(st.st_mode);
}

Status CheckSegmentFile(const struct stat& st, const std::string& name) {
  const std::string path = SegmentPath(name);
  const uid_t me = ::geteuid();
  if (!S_ISREG(st.st_mode)) {
    return FailedPrecondition("refusing " + path + " (" + DescribeFile(st) +
                              "): a segment must be a regular file; remove it (rm " + path +
                              ") if nothing of yours uses it");
  }
  if (st.st_uid != me) {
    return PermissionDenied("refusing " + path + " (" + DescribeFile(st) +
                            "): it is not owned by uid " + std::to_string(me) + " (" +
                            UserName(me) + "), so its owner could truncate or rewrite it; " +
                            "remove it as its owner or root (rm " + path +
                            "), or run every process of this namespace as uid " +
                            std::to_string(st.st_uid));
  }
  if ((st.st_mode & 07777) != 0600) {
    return FailedPrecondition("refusing " + path + " (" + DescribeFile(st) +
                              "): pitlane segments have mode 0600 so that no other uid can " +
                              "open them; remove it (rm " + path + ") and start again");
  }
  return Status::Ok();
}

int OpenSegmentFd(const std::string& path, int flags, mode_t mode) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0 || fd > STDERR_FILENO) return fd;
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
  const int err = errno;
  ::close(fd);
  if (moved < 0 && (flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL)) ::unlink(path.c_str());
  errno = err;
  return moved;
}

Result<SegmentFile> OpenSegmentFile(const std::string& name, bool writable) {
  const std::string path = SegmentPath(name);
  const int fd = OpenSegmentFd(path, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound("segment " + name + " does not exist");
    struct stat st;
    const std::string what =
        ::lstat(path.c_str(), &st) == 0 ? " (" + DescribeFile(st) + ")" : std::string();
    if (err == ELOOP) {
      return FailedPrecondition("refusing " + path + what + ": a symbolic link is never " +
                                "followed; remove it (rm " + path + ")");
    }
    if (err == EACCES || err == EPERM) {
      const uid_t me = ::geteuid();
      // Segments are 0600: only their owner opens them. The fix is to be that owner, or to stay
      // out of its namespace; a file of our own that we may not open has the wrong mode.
      std::string fix;
      if (what.empty()) {
        fix = "run as the user who owns this namespace's segments, or choose another namespace "
              "(--ns / PITLANE_NAMESPACE)";
      } else if (st.st_uid != me) {
        fix = "run as uid " + std::to_string(st.st_uid) + " (" + UserName(st.st_uid) +
              "), the owner of this namespace's segments (a namespace's host, workers and " +
              "pitlane stat share one uid), or choose another namespace (--ns / " +
              "PITLANE_NAMESPACE)";
      } else {
        fix = "pitlane segments have mode 0600; remove it (rm " + path + ") and start again";
      }
      return PermissionDenied("cannot open " + path + what + (writable ? " read-write" : "") +
                              " as uid " + std::to_string(me) + ": " + std::strerror(err) +
                              "; " + fix);
    }
    return Unavailable("cannot open " + path + what + ": " + std::strerror(err));
  }
  SegmentFile f;
  f.fd = fd;
  if (::fstat(fd, &f.st) != 0) {
    const int err = errno;
    ::close(fd);
    return Unavailable("cannot stat " + path + ": " + std::strerror(err));
  }
  if (Status s = CheckSegmentFile(f.st, name); !s.ok()) {
    ::close(fd);
    return s;
  }
  return f;
}

}  // namespace pitlane::shm::internal
