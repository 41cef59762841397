// The one place pitlane's defaults and environment variables are defined (README "Defaults"
// documents the same table).
//
// | setting                    | environment variable  | default                          |
// |----------------------------|-----------------------|----------------------------------|
// | namespace                  | PITLANE_NAMESPACE     | default                          |
// | worker id                  | PITLANE_WORKER_ID     | <hostname>-<pid>                 |
// | transport                  | PITLANE_TRANSPORT     | auto                             |
// | remote host address        | PITLANE_GRPC_TARGET   | unset                            |
// | serve for a dialing host   | PITLANE_GRPC_LISTEN   | unset                            |
// | gRPC bearer token          | PITLANE_GRPC_TOKEN    | unset                            |
// | gRPC TLS CA (worker side)  | PITLANE_GRPC_TLS_CA   | unset (plaintext)                |
// | gRPC queue size (bytes)    | PITLANE_GRPC_QUEUE_BYTES | 4194304 (4 MiB)               |
// | ring data size (bytes)     | PITLANE_RING_BYTES    | 262144 (256 KiB); Python 4 MiB   |
// | node / pool_name context   | PITLANE_NODE / PITLANE_POOL_NAME (host) | hostname / default |
#pragma once

#include <cstdint>
#include <string>

#include "pitlane/status.h"

namespace pitlane::defaults {

inline constexpr const char* kNamespaceEnv = "PITLANE_NAMESPACE";
inline constexpr const char* kWorkerIdEnv = "PITLANE_WORKER_ID";
inline constexpr const char* kTransportEnv = "PITLANE_TRANSPORT";
inline constexpr const char* kGrpcTargetEnv = "PITLANE_GRPC_TARGET";
inline constexpr const char* kGrpcListenEnv = "PITLANE_GRPC_LISTEN";
inline constexpr const char* kGrpcTokenEnv = "PITLANE_GRPC_TOKEN";
inline constexpr const char* kGrpcTlsCaEnv = "PITLANE_GRPC_TLS_CA";
inline constexpr const char* kGrpcQueueBytesEnv = "PITLANE_GRPC_QUEUE_BYTES";
inline constexpr const char* kRingBytesEnv = "PITLANE_RING_BYTES";
inline constexpr const char* kNodeEnv = "PITLANE_NODE";
inline constexpr const char* kPoolNameEnv = "PITLANE_POOL_NAME";

// Ring data size. Sizing rule: a ring must hold the largest burst one thread emits while the
// host may be off its CPU, i.e. burst events x record bytes (a typical record is ~200 B from
// C++, ~300 B from Python), rounded up to a power of two. C++: 256 KiB holds ~1,200 records,
// a 1 ms host stall at 1 M events/s, and 64 threads' rings cost 16 MiB. Python workers emit
// in bursts (a request's spans, a loop) and have few emitting threads: a 10,000-event burst
// from one Python thread takes 2.4-14 ms; with a back-off host on a loaded 2-vCPU machine a
// 1 MiB ring dropped 38-65 % of it and 2 MiB up to 10 %, 4 MiB none (README "Defaults").
inline constexpr uint64_t kRingBytes = uint64_t{256} << 10;
inline constexpr uint64_t kPythonRingBytes = uint64_t{4} << 20;

inline constexpr const char* kNamespace = "default";
inline constexpr const char* kPoolName = "default";

std::string Hostname();
std::string Namespace();         // PITLANE_NAMESPACE or "default"
std::string WorkerId();          // PITLANE_WORKER_ID or <hostname>-<pid>
std::string Node();              // PITLANE_NODE or the hostname
std::string PoolName();          // PITLANE_POOL_NAME or "default"
// PITLANE_RING_BYTES (a power of two in [4096, 64 MiB]) or kRingBytes; INVALID_ARGUMENT naming
// the variable and value otherwise.
Result<uint64_t> RingBytes();

}  // namespace pitlane::defaults
