// Opening a segment file safely: the checks every pitlane process makes before it maps a
// segment, whoever created it (see "Threat model" in README.md).
//
// /dev/shm is world-writable (sticky): anyone may put a file there under a name pitlane will
// open. So a segment is opened with O_NOFOLLOW (a symlink planted under the name is refused,
// not followed) and O_NONBLOCK (a FIFO planted under the name would otherwise block open()
// forever), and is adopted only when it is a regular file owned by the effective uid with mode
// exactly 0600: a file another uid owns, or one another uid may write, can be truncated or
// rewritten by that uid, so it is refused with an error naming the file, its owner, its mode
// and the fix.
#pragma once

#include <sys/stat.h>

#include <string>

#include "pitlane/status.h"

namespace pitlane::shm::internal {

// "/dev/shm" + name; `name` is a POSIX shm name ("/pitlane.<ns>....").
std::string SegmentPath(const std::string& name);

// open(2) of a segment file, with O_CLOEXEC, never returning a descriptor below 3. A process
// that closed its standard streams (a daemon, `cmd >&-`) gets 0, 1 or 2 from open(), and its
// own writes to stdout or stderr would then land in the segment: the registry's descriptor is
// held for the host's lifetime. Such a descriptor is moved to 3 or above. With O_CREAT|O_EXCL,
// a file it created but could not move is unlinked again. -1 with errno on failure.
int OpenSegmentFd(const std::string& path, int flags, mode_t mode = 0);

// "owner nobody (uid 65534), mode 0666, a regular file"
std::string DescribeFile(const struct stat& st);

// Ok when `st` (of the file behind `name`) may be adopted: a regular file owned by the
// effective uid with mode exactly 0600. Otherwise FAILED_PRECONDITION (PERMISSION_DENIED for
// another owner) naming the file, its owner, its mode and the fix.
Status CheckSegmentFile(const struct stat& st, const std::string& name);

// An open segment file that passed CheckSegmentFile. Owns `fd` (O_CLOEXEC).
struct SegmentFile {
  int fd = -1;
  struct stat st {};
};

// Opens the segment `name` read-write or read-only without following symlinks and without
// blocking, then checks it with CheckSegmentFile (closing it on failure). NOT_FOUND when it
// does not exist.
Result<SegmentFile> OpenSegmentFile(const std::string& name, bool writable);

}  // namespace pitlane::shm::internal
