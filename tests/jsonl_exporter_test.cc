// JsonLinesExporter end to end: a real host and worker in one process; whatever bytes the
// worker sends, every line the exporter writes parses back as JSON with the expected values;
// a slow exporter overflows its bounded queue (counted) without stalling the poll loop.
#include "pitlane/jsonl_exporter.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <condition_variable>
#include <filesystem>
#include <cstdio>
#include <limits>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "pitlane/host.h"
#include "pitlane/worker.h"
#include "testing.h"

namespace pitlane {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD

std::vector<std::string> ReadLines(FILE* f) {
  std::rewind(f);
  std::vector<std::string> lines;
  std::string line;
  for (int c; (c = std::fgetc(f)) != EOF;) {
    if (c == '\n') {
      lines.push_back(std::move(line));
      line.clear();
    } else {
      line += static_cast<char>(c);
    }
  }
  EXPECT_TRUE(line.empty()) << "last line not terminated: " << line;
  return lines;
}

class JsonLinesExporterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = testing::StartHost(ns_.name());
    ASSERT_NE(host_, nullptr);
    worker_ = testing::StartWorker(ns_.name(), "jsonl-worker");
    ASSERT_NE(worker_, nullptr);
    out_ = std::tmpfile();
    ASSERT_NE(out_, nullptr);
  }
  void TearDown() override {
    if (out_ != nullptr) std::fclose(out_);
  }

  testing::ScopedNamespace ns_;
  std::unique_ptr<Host> host_;
  std::unique_ptr<Worker> worker_;
  FILE* out_ = nullptr;
};

TEST_F(JsonLinesExporterTest, HostileStringsBecomeValidJsonLinesWithTheirValues) {
  JsonLinesExporter exporter(out_);
  exporter.Start();
  ASSERT_TRUE(exporter.AttachTo(*host_, "jsonl").ok());

  const std::string quotes = "say \"hi\" \\ back\\slash";
  const std::string controls = std::string("nl\nret\rtab\tnul") + '\0' + "\x01\x1f\x7f end";
  const std::string kib(1024, 'k');
  const std::string kib_hostile = [] {
    std::string s;
    while (s.size() < 1024) s += "\"\\\n\x01";
    return s.substr(0, 1024);
  }();
  const std::string unicode = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x9A\x80";  // valid UTF-8
  const std::string corr = "corr\"id\n";
  ASSERT_EQ(worker_->Emit("python.call.stop", {{"duration", int64_t{123456789}},
                                                {"cpu_percent", 12.5}},
                          {{"quotes", quotes},
                           {"controls", controls},
                           {"kib", kib},
                           {"kib_hostile", kib_hostile},
                           {"unicode", unicode},
                           {"invalid", "bad \xFF\xFE end"},
                           {"truncated", "x\xC3"}},
                          corr),
            EmitResult::kOk);
  ASSERT_EQ(worker_->Emit("python.call.start", {{"system_time", int64_t{-5}}}), EmitResult::kOk);
  ASSERT_TRUE(host_->DrainAll(5s));
  exporter.Stop();

  const std::vector<std::string> lines = ReadLines(out_);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(exporter.lines_written(), 2u);
  EXPECT_EQ(exporter.write_errors(), 0u);
  for (const std::string& line : lines) {
    EXPECT_TRUE(Json::accept(line)) << line;  // strict: rejects invalid UTF-8 too
  }
  const Json a = Json::parse(lines[0]);
  EXPECT_EQ(a["name"], "snakepit.python.call.stop");
  EXPECT_GT(a["timestamp_ns"].get<int64_t>(), 0);
  EXPECT_EQ(a["correlation_id"], corr);
  EXPECT_EQ(a["measurements"]["duration"].get<int64_t>(), 123456789);
  EXPECT_DOUBLE_EQ(a["measurements"]["cpu_percent"].get<double>(), 12.5);
  const Json& md = a["metadata"];
  EXPECT_EQ(md["quotes"], quotes);
  EXPECT_EQ(md["controls"], controls);
  EXPECT_EQ(md["kib"], kib);
  EXPECT_EQ(md["kib_hostile"], kib_hostile);
  EXPECT_EQ(md["unicode"], unicode);
  EXPECT_EQ(md["invalid"], "bad " + kReplacement + kReplacement + " end");
  EXPECT_EQ(md["truncated"], "x" + kReplacement);
  EXPECT_EQ(a["worker_id"], "jsonl-worker");
  EXPECT_EQ(a["worker_pid"].get<uint32_t>(), static_cast<uint32_t>(getpid()));
  EXPECT_EQ(a["transport"], "shm");

  const Json b = Json::parse(lines[1]);
  EXPECT_EQ(b["name"], "snakepit.python.call.start");
  EXPECT_EQ(b["measurements"]["system_time"].get<int64_t>(), -5);
  EXPECT_EQ(b["correlation_id"], "");
}

TEST(JsonLinesFormatTest, NonFiniteDoublesAreNullAndInvalidKeysAreReplaced) {
  OwnedEvent e;
  e.name = "snakepit.python.cpu.sampled";
  e.measurements.push_back({"nan", Value::Kind::kDouble, 0,
                            std::numeric_limits<double>::quiet_NaN(), ""});
  e.measurements.push_back({"inf", Value::Kind::kDouble, 0,
                            -std::numeric_limits<double>::infinity(), ""});
  e.measurements.push_back({"text", Value::Kind::kString, 0, 0, "a\"b"});
  e.metadata.emplace_back("k\xFF", "v");
  e.metadata.emplace_back("dup", "first");
  e.metadata.emplace_back("dup", "last");
  const Json j = Json::parse(JsonLinesExporter::Format(e));
  EXPECT_TRUE(j["measurements"]["nan"].is_null());
  EXPECT_TRUE(j["measurements"]["inf"].is_null());
  EXPECT_EQ(j["measurements"]["text"], "a\"b");
  EXPECT_EQ(j["metadata"]["k" + kReplacement], "v");
  EXPECT_EQ(j["metadata"]["dup"], "last");
  EXPECT_EQ(j["transport"], "shm");
}

TEST(JsonLinesOpenTest, UnopenablePathNamesThePathAndTheReason) {
  const std::string path = "/nonexistent-pitlane-dir/events.jsonl";
  auto r = JsonLinesExporter::OpenFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("No such file or directory"), std::string::npos)
      << r.status().message();
}

TEST_F(JsonLinesExporterTest, OpenFileAppendsToAnExistingFile) {
  char path[] = "/tmp/pitlane-jsonl-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "{\"before\":1}\n", 13), 13);
  close(fd);
  {
    auto r = JsonLinesExporter::OpenFile(path);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    JsonLinesExporter& exporter = *r.value();
    exporter.Start();
    ASSERT_TRUE(exporter.AttachTo(*host_, "jsonl-file").ok());
    ASSERT_EQ(worker_->Emit("python.call.start", {{"system_time", int64_t{7}}}), EmitResult::kOk);
    ASSERT_TRUE(host_->DrainAll(5s));
    ASSERT_TRUE(host_->Detach("jsonl-file"));
  }  // destruction stops, flushes and closes
  FILE* f = std::fopen(path, "r");
  ASSERT_NE(f, nullptr);
  const std::vector<std::string> lines = ReadLines(f);
  std::fclose(f);
  unlink(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "{\"before\":1}");
  EXPECT_EQ(Json::parse(lines[1])["measurements"]["system_time"], 7);
}

// The report the host's status line and `pitlane stat` show: the kind, where the lines go and
// every count, each equal to its accessor.
TEST_F(JsonLinesExporterTest, ReportNamesTheFileAndEveryCount) {
  char path[] = "/tmp/pitlane-jsonl-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  auto r = JsonLinesExporter::OpenFile(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  JsonLinesExporter& exporter = *r.value();
  exporter.Start();
  ASSERT_TRUE(exporter.AttachTo(*host_, "jsonl-file").ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(worker_->Emit("python.call.start", {{"system_time", int64_t{i}}}), EmitResult::kOk);
  }
  ASSERT_TRUE(host_->DrainAll(5s));
  ASSERT_TRUE(host_->Detach("jsonl-file"));
  exporter.Stop();
  const ExporterReport report = exporter.Report();
  unlink(path);
  EXPECT_EQ(report.name, "jsonl");
  EXPECT_EQ(report.target, path);
  const std::vector<std::pair<std::string, uint64_t>> want = {
      {"lines_written", 3}, {"overflow", 0},      {"write_errors", 0},
      {"lines_lost", 0},    {"reopens", 0},       {"reopen_errors", 0}};
  EXPECT_EQ(report.counts, want);
  EXPECT_EQ(JsonLinesExporter(out_).Report().target, "the caller's stream");
  EXPECT_EQ(JsonLinesExporter(stdout).Report().target, "stdout");
}

// logrotate's create mode: the file is renamed, a reopen request (SIGHUP in pitlane host) makes
// the next lines go to a new file at the path.
TEST_F(JsonLinesExporterTest, ReopenAfterARenameWritesToANewFileAtThePath) {
  char dir[] = "/tmp/pitlane-jsonl-rotate-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/events.jsonl";
  const std::string rotated = path + ".1";
  auto r = JsonLinesExporter::OpenFile(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  JsonLinesExporter& exporter = *r.value();
  exporter.Start();
  ASSERT_TRUE(exporter.AttachTo(*host_, "jsonl-rotate").ok());
  auto emit_and_wait = [&](int64_t v, uint64_t written) {
    ASSERT_EQ(worker_->Emit("python.call.start", {{"request_size", v}}), EmitResult::kOk);
    ASSERT_TRUE(host_->DrainAll(5s));
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (exporter.lines_written() < written && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_EQ(exporter.lines_written(), written);
  };
  emit_and_wait(1, 1);
  ASSERT_EQ(std::rename(path.c_str(), rotated.c_str()), 0);
  emit_and_wait(2, 2);  // still the renamed file: nobody asked for a reopen
  exporter.RequestReopen();
  emit_and_wait(3, 3);
  ASSERT_TRUE(host_->Detach("jsonl-rotate"));
  exporter.Stop();
  EXPECT_EQ(exporter.reopens(), 1u);
  EXPECT_EQ(exporter.reopen_errors(), 0u);
  auto values = [](const std::string& file) {
    std::vector<int64_t> out;
    FILE* f = std::fopen(file.c_str(), "r");
    EXPECT_NE(f, nullptr) << file;
    if (f == nullptr) return out;
    for (const std::string& line : ReadLines(f)) {
      out.push_back(Json::parse(line)["measurements"]["request_size"].get<int64_t>());
    }
    std::fclose(f);
    return out;
  };
  EXPECT_EQ(values(rotated), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(values(path), (std::vector<int64_t>{3}));
  std::filesystem::remove_all(dir);
}

// `pitlane host --jsonl | head -1`: once the reader is gone nothing more is written, and what
// could not be written is counted.
TEST_F(JsonLinesExporterTest, ABrokenPipeStopsWritingAndCountsWhatWasLost) {
  std::signal(SIGPIPE, SIG_IGN);  // as the CLI does: EPIPE instead of death
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  FILE* w = fdopen(fds[1], "w");
  ASSERT_NE(w, nullptr);
  close(fds[0]);  // the reader left
  JsonLinesExporter exporter(w);
  exporter.Start();
  ASSERT_TRUE(exporter.AttachTo(*host_, "jsonl-pipe").ok());
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(worker_->Emit("python.call.stop"), EmitResult::kOk);
    ASSERT_TRUE(host_->DrainAll(5s));
  }
  ASSERT_TRUE(host_->Detach("jsonl-pipe"));
  exporter.Stop();
  fclose(w);
  EXPECT_TRUE(exporter.broken_pipe());
  EXPECT_EQ(exporter.lines_written(), 0u);
  EXPECT_EQ(exporter.lines_lost(), 5u);
  EXPECT_EQ(exporter.write_errors(), 1u);  // the one write that found the pipe closed
}

// Blocks in Export until released: the poll loop must keep delivering meanwhile.
class StuckExporter : public JsonLinesExporter {
 public:
  StuckExporter(FILE* out, size_t capacity) : JsonLinesExporter(out, capacity) {}
  ~StuckExporter() override {
    Release();
    Stop();
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  bool WaitEntered(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return entered_; });
  }

 protected:
  void Export(const OwnedEvent& event) override {
    std::unique_lock<std::mutex> lock(mu_);
    entered_ = true;
    cv_.notify_all();
    cv_.wait(lock, [this] { return released_; });
    lock.unlock();
    std::this_thread::sleep_for(100us);  // still slow once released
    JsonLinesExporter::Export(event);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false;
  bool released_ = false;
};

TEST_F(JsonLinesExporterTest, SlowExporterOverflowsCountedWithoutStallingThePollLoop) {
  constexpr uint64_t kEvents = 1000;
  StuckExporter exporter(out_, /*capacity=*/8);
  exporter.Start();
  ASSERT_TRUE(exporter.AttachTo(*host_, "slow").ok());
  for (uint64_t i = 0; i < kEvents; ++i) {
    ASSERT_EQ(worker_->Emit("python.call.start", {{"system_time", static_cast<int64_t>(i)}}),
              EmitResult::kOk);
  }
  ASSERT_TRUE(host_->DrainAll(10s));
  // Every event reached the handler while the exporter thread sat in its first Export.
  ASSERT_TRUE(exporter.WaitEntered(5s));
  EXPECT_EQ(host_->Stats().delivered, kEvents);
  EXPECT_EQ(exporter.exported(), 0u);
  EXPECT_GE(exporter.overflow(), kEvents - 2 * exporter.capacity() - 1);

  exporter.Release();
  exporter.Stop();
  EXPECT_GT(exporter.overflow(), 0u);
  EXPECT_EQ(exporter.exported() + exporter.overflow(), kEvents);
  EXPECT_EQ(exporter.lines_written(), exporter.exported());
  const std::vector<std::string> lines = ReadLines(out_);
  EXPECT_EQ(lines.size(), exporter.exported());
  for (const std::string& line : lines) EXPECT_TRUE(Json::accept(line)) << line;
}

}  // namespace
}  // namespace pitlane
