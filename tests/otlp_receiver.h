// Runs tests/otlp/receiver.js (a test OTLP collector built on the official OpenTelemetry JS
// decoder) as a child process for one test: its own ports, its own output file.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

extern char** environ;

namespace pitlane::testing {

class OtlpReceiver {
 public:
  OtlpReceiver() {
    char dir[] = "/tmp/pitlane-otlp-XXXXXX";
    dir_ = mkdtemp(dir) ? dir : "/tmp";
    out_ = dir_ + "/requests.jsonl";
  }
  ~OtlpReceiver() {
    if (pid_ > 0) {
      if (stdin_ >= 0) close(stdin_);  // the receiver exits at end of input
      for (int i = 0; i < 200 && waitpid(pid_, nullptr, WNOHANG) == 0; ++i) usleep(10000);
      if (kill(pid_, SIGKILL) == 0) waitpid(pid_, nullptr, 0);
    }
    if (stdout_ >= 0) close(stdout_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  OtlpReceiver(const OtlpReceiver&) = delete;
  OtlpReceiver& operator=(const OtlpReceiver&) = delete;

  // Starts the receiver with extra arguments (e.g. {"--fail-first", "3"}); false (with a test
  // failure saying why) when node or the fixture is missing or it does not come up.
  bool Start(const std::vector<std::string>& extra = {}) {
    const std::string fixture = PITLANE_OTLP_FIXTURE_DIR;
    if (!std::filesystem::exists(fixture + "/node_modules/@grpc/grpc-js")) {
      ADD_FAILURE() << "the OTLP test fixture is not installed: run `npm ci --prefix " << fixture
                    << "` (build.sh test does)";
      return false;
    }
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return false;
    std::vector<std::string> args = {PITLANE_NODE, fixture + "/receiver.js", "--out", out_};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    const int rc = posix_spawn(&pid_, PITLANE_NODE, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
    if (rc != 0) {
      ADD_FAILURE() << "cannot start " << PITLANE_NODE;
      pid_ = -1;
      return false;
    }
    const std::string ready = ReadLine(std::chrono::seconds(20));
    if (std::sscanf(ready.c_str(), "ready %d %d", &http_port_, &grpc_port_) != 2) {
      ADD_FAILURE() << "the receiver did not start: \"" << ready << "\"";
      return false;
    }
    return true;
  }

  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }

  // Everything recorded so far, one JSON object per request.
  std::vector<nlohmann::json> Requests() const {
    std::vector<nlohmann::json> out;
    std::ifstream f(out_);
    std::string line;
    while (std::getline(f, line)) {
      if (line.empty()) continue;
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded()) out.push_back(std::move(j));
    }
    return out;
  }

 private:
  std::string ReadLine(std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    std::string line;
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{stdout_, POLLIN, 0};
      if (poll(&p, 1, 100) != 1) continue;
      char c;
      if (read(stdout_, &c, 1) != 1) break;
      if (c == '\n') return line;
      line.push_back(c);
    }
    return line;
  }

  std::string dir_, out_;
  pid_t pid_ = -1;
  int stdin_ = -1, stdout_ = -1;
  int http_port_ = 0, grpc_port_ = 0;
};

}  // namespace pitlane::testing
