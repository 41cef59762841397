// The table of shared mappings this process holds, so that a SIGBUS inside one of them cannot
// kill the process.
//
// Whoever can open a segment read-write can ftruncate it (named tmpfs files cannot be sealed),
// and touching a page of a mapping past the file's new end raises SIGBUS. The host copies ring
// data under a guard, but other accesses cannot all take one: the worker's emit path writes its
// ring with no syscall and no sigsetjmp per record, the worker reads its control block on every
// emit, the host polls the registry on every pass. So every mapping of a segment is entered in
// this table, and the process-wide SIGBUS handler asks RescueFault() first: a fault inside a
// registered mapping replaces the whole mapping with private anonymous zero pages (mmap
// MAP_FIXED, same address and length) and marks it lost. The faulting instruction is then
// retried and succeeds: a reader sees zeros, a writer writes into memory nobody reads. The
// owner of the mapping notices through MappingLost() (off the hot path) and abandons the ring
// or the registry. A fault anywhere else keeps its normal meaning.
#pragma once

#include <cstddef>

namespace pitlane::shm::internal {

inline constexpr size_t kMaxSharedMappings = 4096;

// Installs the process-wide SIGBUS handler (once; shm.cc) that calls RescueFault, then the
// guard of RunGuarded, then the previous handler.
void InstallSigbusHandler();

// Enters [base, base + bytes) in the table (installing the handler first). False when the
// table is full (the caller refuses to map more segments rather than hold one it cannot
// rescue).
bool RegisterMapping(void* base, size_t bytes);
// Removes the mapping at `base` from the table. Call before munmap: once it returns, no rescue
// of that range is in flight and none will start, so the address range may be reused.
void ForgetMapping(void* base);
// True once a fault inside the registered mapping containing `addr` replaced it with zeros.
bool MappingLost(const void* addr);
// Async-signal-safe (atomics and one mmap system call). If `addr` lies in a registered
// mapping: replaces that mapping with private zero pages, marks it lost and returns true.
bool RescueFault(const void* addr);

}  // namespace pitlane::shm::internal
