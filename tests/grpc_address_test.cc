// Which gRPC addresses a host or worker accepts: gRPC itself takes a port modulo 65536 and
// defers everything else to the first connect, so a typo must be refused before that.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <string>

#include "pitlane/grpc_common.h"
#include "pitlane/host.h"

namespace pitlane {
namespace {

using internal::AddressUse;
using internal::ParseDialSpec;
using internal::ValidateGrpcAddress;

TEST(GrpcAddressTest, HostPortFormsAreAccepted) {
  for (const char* a : {"127.0.0.1:7070", "0.0.0.0:0", "localhost:1", "host-1.example.com:65535",
                        "[::1]:7070", "[::]:0", "[fe80::1%eth0]:50051"}) {
    EXPECT_TRUE(ValidateGrpcAddress(a, AddressUse::kServe, "--grpc-listen").ok()) << a;
  }
}

TEST(GrpcAddressTest, EachMalformedAddressIsRefusedSayingWhy) {
  const struct {
    const char* address;
    const char* why;
  } cases[] = {
      {"127.0.0.1:470400", "not a number in 0-65535"},
      {"127.0.0.1:99999", "port out of range"},
      {"127.0.0.1:-1", "not a number"},
      {"127.0.0.1:", "not a number"},
      {"127.0.0.1:80x", "not a number"},
      {"noport", "no port"},
      {"a=b=c", "no port"},
      {":7070", "no host"},
      {"::1:7070", "IPv6 host must be in brackets"},
      {"[::1:7070", "unterminated"},
      {"[zz]:7070", "not an IPv6 address"},
      {"bad host:7070", "not a name or an IP address"},
      {"a=b:7070", "not a name or an IP address"},
  };
  for (const auto& c : cases) {
    const Status s = ValidateGrpcAddress(c.address, AddressUse::kServe, "--grpc-listen");
    ASSERT_FALSE(s.ok()) << c.address;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find(c.why), std::string::npos) << c.address << ": " << s.message();
    EXPECT_NE(s.message().find(std::string("--grpc-listen \"") + c.address + "\""),
              std::string::npos)
        << s.message();
  }
}

TEST(GrpcAddressTest, PortZeroServesAnyPortButCannotBeDialed) {
  EXPECT_TRUE(ValidateGrpcAddress("127.0.0.1:0", AddressUse::kServe, "x").ok());
  const Status s = ValidateGrpcAddress("127.0.0.1:0", AddressUse::kDial, "x");
  EXPECT_NE(s.message().find("port 0 cannot be dialed"), std::string::npos) << s.message();
}

TEST(GrpcAddressTest, DialSpecSplitsAtTheFirstEqualsSign) {
  Result<internal::DialSpec> named = ParseDialSpec("py-1=10.0.0.5:50051", "--grpc-dial");
  ASSERT_TRUE(named.ok()) << named.status().ToString();
  EXPECT_EQ(named->id, "py-1");
  EXPECT_EQ(named->address, "10.0.0.5:50051");
  Result<internal::DialSpec> bare = ParseDialSpec("10.0.0.5:50051", "--grpc-dial");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->id, "10.0.0.5:50051");
  for (const char* bad : {"a=b=c", "=h:1", "noport", "w=h:0", "w="}) {
    EXPECT_EQ(ParseDialSpec(bad, "--grpc-dial").status().code(), StatusCode::kInvalidArgument)
        << bad;
  }
}

bool SegmentsOf(const std::string& ns) {
  const std::string prefix = "pitlane." + ns + ".";
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) return true;
  }
  return false;
}

TEST(GrpcAddressTest, FailedHostStartLeavesNothingInDevShm) {
  HostOptions o;
  o.ns = "gaddr" + std::to_string(getpid());
  o.grpc_listen = "127.0.0.1:470400";
  Result<std::unique_ptr<Host>> h = Host::Start(o);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(SegmentsOf(o.ns));
  o.grpc_listen.clear();
  o.grpc_dial = {"w=a=b=c"};
  h = Host::Start(o);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(SegmentsOf(o.ns));

  // A valid address that cannot be served (the port is taken).
  o.grpc_dial.clear();
  o.grpc_listen = "127.0.0.1:0";
  Result<std::unique_ptr<Host>> first = Host::Start(o);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  HostOptions second = o;
  second.ns = o.ns + "b";
  second.grpc_listen = "127.0.0.1:" + std::to_string((*first)->grpc_port());
  h = Host::Start(second);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(SegmentsOf(second.ns));
}

}  // namespace
}  // namespace pitlane
