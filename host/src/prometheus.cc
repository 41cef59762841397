#include "pitlane/prometheus.h"

#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>
#include <utility>

#include "pitlane/exporter.h"

namespace pitlane {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string_view MetricKindName(MetricKind kind) {
  switch (kind) {
    case MetricKind::kCounter: return "counter";
    case MetricKind::kLastValue: return "last_value";
    case MetricKind::kSum: return "sum";
    case MetricKind::kSummary: return "summary";
    case MetricKind::kHistogram: return "histogram";
  }
  return "unknown";
}

namespace {

bool IsNameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9'); }

// Label names: [a-zA-Z_][a-zA-Z0-9_]* (no colon).
std::string SanitizeLabelName(std::string_view name) {
  std::string out = SanitizeMetricName(name);
  std::replace(out.begin(), out.end(), ':', '_');
  return out;
}

// Replaces every invalid UTF-8 sequence with U+FFFD: Prometheus rejects a scrape whose label
// values are not UTF-8.
std::string ValidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4, cp = c & 0x07;
    }
    bool ok = n != 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are invalid too.
    if (ok && ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
               (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)) {
      ok = false;
    }
    if (ok) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out.append("\xEF\xBF\xBD");
      ++i;
    }
  }
  return out;
}

// Label value: backslash, double quote and line feed escaped (exposition format 0.0.4).
void AppendLabelValue(std::string& out, std::string_view raw) {
  for (char c : ValidUtf8(raw)) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out.push_back(c);
    }
  }
}

// HELP text: backslash and line feed escaped.
std::string EscapeHelp(std::string_view raw) {
  std::string out;
  for (char c : ValidUtf8(raw)) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

// The shortest digits that parse back to the same double (std::to_chars without a precision),
// so `le="0.1"` (a query for le="0.1" matches) rather than 0.10000000000000001: in plain
// notation from 1e-5 up to 1e21 (`100000`, `1073741824`, `0.00025`), in scientific notation
// outside (`5e-09`), where plain would be mostly zeros.
std::string FormatDouble(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];  // plain notation within [1e-5, 1e21): at most 17 digits, zeros and a point
  const char* end = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific).ptr;
  const char* e = std::find(static_cast<const char*>(buf), end, 'e');
  int exponent = 0;
  if (e != end) std::from_chars(e + (e[1] == '+' ? 2 : 1), end, exponent);  // "e+01", "e-04"
  if (v != 0 && (exponent < -5 || exponent >= 21)) {
    return std::string(static_cast<const char*>(buf), end);
  }
  end = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed).ptr;
  return std::string(static_cast<const char*>(buf), end);
}

// `v` rounded to 15 significant digits: bucket bounds scaled by a unit factor (0.00025 s →
// 250000 ns) lose the binary noise of the multiplication and print as written.
double RoundTo15Digits(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.15g", v);
  return std::strtod(buf, nullptr);
}

using Labels = std::vector<std::pair<std::string, std::string>>;

// Writes one family at a time: HELP and TYPE, then its samples.
class Writer {
 public:
  void Family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += EscapeHelp(help);
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void Sample(std::string_view name, const Labels& labels, std::string_view value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      for (size_t i = 0; i < labels.size(); ++i) {
        if (i) out_ += ',';
        out_ += labels[i].first;
        out_ += "=\"";
        AppendLabelValue(out_, labels[i].second);
        out_ += '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  void Sample(std::string_view name, const Labels& labels, uint64_t v) {
    Sample(name, labels, std::to_string(v));
  }
  void Sample(std::string_view name, const Labels& labels, double v) {
    Sample(name, labels, FormatDouble(v));
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// ---- HTTP content coding ----

// Does an Accept-Encoding header allow gzip? A `gzip` (or `*`) token whose q is not 0.
bool AcceptsGzip(std::string_view header) {
  while (!header.empty()) {
    const size_t comma = header.find(',');
    std::string_view item = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    const size_t semi = item.find(';');
    std::string_view coding = item.substr(0, semi);
    while (!coding.empty() && coding.front() == ' ') coding.remove_prefix(1);
    while (!coding.empty() && coding.back() == ' ') coding.remove_suffix(1);
    if (coding != "gzip" && coding != "*") continue;
    if (semi == std::string_view::npos) return true;
    std::string_view params = item.substr(semi + 1);
    const size_t q = params.find("q=");
    if (q == std::string_view::npos) return true;
    return std::strtod(std::string(params.substr(q + 2)).c_str(), nullptr) > 0;
  }
  return false;
}

// `body` as a gzip member (RFC 1952); nullopt if zlib fails (the body is then sent as is).
std::optional<std::string> Gzip(const std::string& body) {
  z_stream z{};
  // windowBits 15 + 16: a gzip header and trailer instead of zlib's.
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return std::nullopt;
  }
  std::string out(deflateBound(&z, body.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(body.data()));
  z.avail_in = static_cast<uInt>(body.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);  // pairs with deflateInit2 above
  if (rc != Z_STREAM_END) return std::nullopt;
  return out;
}

// ---- MetricSpec text form ----

class SpecParser {
 public:
  explicit SpecParser(std::string_view text) : s_(text) {}

  Result<MetricSpec> Parse() {
    MetricSpec spec;
    const std::string kind = Ident();
    if (kind == "counter") spec.kind = MetricKind::kCounter;
    else if (kind == "last_value") spec.kind = MetricKind::kLastValue;
    else if (kind == "sum") spec.kind = MetricKind::kSum;
    else if (kind == "summary") spec.kind = MetricKind::kSummary;
    else if (kind == "histogram") spec.kind = MetricKind::kHistogram;
    else return Error("expected counter, last_value, sum, summary or histogram, found \"" + kind + "\"");
    if (!Eat('(')) return Error("expected '(' after " + kind);
    Result<std::string> full = NameOrString();
    if (!full.ok()) return full.status();
    const size_t dot = full->rfind('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == full->size()) {
      return Error("metric name \"" + *full +
                   "\" must be <event>.<measurement>, e.g. snakepit.python.call.stop.duration");
    }
    spec.event = full->substr(0, dot);
    spec.measurement = full->substr(dot + 1);
    while (Eat(',')) {
      const std::string key = Ident();
      if (!Eat(':')) return Error("expected ':' after option \"" + key + "\"");
      if (key == "tags") {
        if (!Eat('[')) return Error("expected '[' after tags:");
        if (!Eat(']')) {
          do {
            Eat(':');  // Elixir atom syntax
            std::string tag = Ident();
            if (tag.empty()) return Error("expected a tag name");
            spec.tags.push_back(std::move(tag));
          } while (Eat(','));
          if (!Eat(']')) return Error("expected ']' after the tags");
        }
      } else if (key == "buckets") {
        if (!Eat('[')) return Error("expected '[' after buckets:");
        do {
          Skip();
          const char* begin = s_.data() + pos_;
          double v = 0;
          const auto [end, ec] = std::from_chars(begin, s_.data() + s_.size(), v);
          if (ec != std::errc() || !std::isfinite(v)) return Error("expected a bucket bound");
          pos_ += static_cast<size_t>(end - begin);
          spec.buckets.push_back(v);
        } while (Eat(','));
        if (!Eat(']')) return Error("expected ']' after the buckets");
      } else if (key == "unit") {
        // `unit: u` (the measurement's unit) or `unit: {from, to}` (convert).
        const bool pair = Eat('{');
        Result<Unit> from = UnitToken();
        if (!from.ok()) return from.status();
        spec.unit_from = *from;
        if (pair) {
          if (!Eat(',')) return Error("expected ',' between the units of unit: {from, to}");
          Result<Unit> to = UnitToken();
          if (!to.ok()) return to.status();
          if (DimensionOf(*from) != DimensionOf(*to)) {
            return Error("unit: cannot convert " + std::string(UnitName(*from)) + " to " +
                         std::string(UnitName(*to)));
          }
          spec.unit_to = *to;
          if (!Eat('}')) return Error("expected '}' after unit: {from, to}");
        }
      } else if (key == "help" || key == "description") {  // Telemetry.Metrics: description
        Result<std::string> h = QuotedString();
        if (!h.ok()) return h.status();
        spec.help = std::move(*h);
      } else if (key == "name") {
        Result<std::string> n = NameOrString();
        if (!n.ok()) return n.status();
        spec.name = std::move(*n);
      } else {
        return Error("unknown option \"" + key +
                     "\" (tags, buckets, unit, help or description, name)");
      }
    }
    if (!Eat(')')) return Error("expected ',' or ')'");
    Skip();
    if (pos_ != s_.size()) return Error("unexpected text after ')'");
    return spec;
  }

 private:
  void Skip() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t')) ++pos_;
  }
  bool Eat(char c) {
    Skip();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  std::string Ident() {
    Skip();
    const size_t b = pos_;
    while (pos_ < s_.size() && (IsNameChar(s_[pos_]) && s_[pos_] != ':')) ++pos_;
    return std::string(s_.substr(b, pos_ - b));
  }
  Result<Unit> UnitToken() {
    Eat(':');  // Elixir atom syntax
    const std::string name = Ident();
    Unit u = Unit::kNone;
    if (!ParseUnit(name, &u)) {
      return Error("unknown unit \"" + name +
                   "\" (native, nanosecond, microsecond, millisecond, second, byte, kilobyte, "
                   "megabyte)");
    }
    return u;
  }
  Result<std::string> QuotedString() {
    if (!Eat('"')) return Error("expected a double-quoted string");
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      if (s_[pos_] == '\\' && pos_ + 1 < s_.size()) ++pos_;
      out.push_back(s_[pos_++]);
    }
    if (pos_ >= s_.size()) return Error("unterminated string");
    ++pos_;
    return out;
  }
  Result<std::string> NameOrString() {
    Skip();
    if (pos_ < s_.size() && s_[pos_] == '"') return QuotedString();
    const size_t b = pos_;
    while (pos_ < s_.size() && (IsNameChar(s_[pos_]) || s_[pos_] == '.' || s_[pos_] == '-')) {
      ++pos_;
    }
    if (b == pos_) return Error("expected a metric name");
    return std::string(s_.substr(b, pos_ - b));
  }
  Status Error(const std::string& what) const {
    return InvalidArgument("metric spec \"" + std::string(s_) + "\" at column " +
                           std::to_string(pos_ + 1) + ": " + what);
  }

  std::string_view s_;
  size_t pos_ = 0;
};

// Default histogram bounds for a unit, in that unit: durations from 100 µs to 10 s (Prometheus'
// defaults with finer steps below 5 ms, where a Python call often ends), sizes from 64 B to
// 1 GiB by factors of 4, plain numbers from 1 to 100000 in 1-2.5-5 steps.
std::vector<double> DefaultBuckets(Unit unit) {
  static const double kSeconds[] = {.0001, .00025, .0005, .001, .0025, .005, .01, .025,
                                    .05,   .1,     .25,   .5,   1,     2.5,  5,   10};
  std::vector<double> out;
  switch (DimensionOf(unit)) {
    case UnitDimension::kTime:
      for (double b : kSeconds) out.push_back(RoundTo15Digits(b * UnitFactor(Unit::kSecond, unit)));
      break;
    case UnitDimension::kMemory:
      for (double b = 64; b <= 1024.0 * 1024 * 1024; b *= 4) {
        out.push_back(RoundTo15Digits(b * UnitFactor(Unit::kByte, unit)));
      }
      break;
    case UnitDimension::kNone:
      for (double decade = 1; decade <= 100000; decade *= 10) {
        for (double step : {1.0, 2.5, 5.0}) {
          if (decade * step <= 100000) out.push_back(decade * step);
        }
      }
      break;
  }
  return out;
}

// The plural a conventional name ends with ("seconds"); "" for Unit::kNone.
std::string UnitSuffix(Unit unit) {
  return unit == Unit::kNone ? std::string() : std::string(UnitName(unit)) + "s";
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::string SanitizeMetricName(std::string_view name) {
  std::string out;
  out.reserve(name.size() + 1);
  if (name.empty() || !IsNameStart(name[0])) out.push_back('_');
  for (char c : name) out.push_back(IsNameChar(c) ? c : '_');
  return out;
}

Result<MetricSpec> MetricSpec::Parse(std::string_view text) { return SpecParser(text).Parse(); }

std::string MetricSpec::MetricName() const {
  return SanitizeMetricName(name.empty() ? event + "." + measurement : name);
}

bool ParseMetricNaming(std::string_view text, MetricNaming* out) {
  if (text == "conventional") *out = MetricNaming::kConventional;
  else if (text == "snakepit") *out = MetricNaming::kSnakepit;
  else return false;
  return true;
}

// ---- Aggregation of event-derived metrics (exporter thread) ----

namespace {

struct Series {
  uint64_t count = 0;
  double sum = 0;
  double last = 0;
  std::vector<uint64_t> buckets;  // per bound, not cumulative
};

struct Metric {
  MetricSpec spec;
  std::string name;
  Unit unit = Unit::kNone;  // what the exported values are in
  double factor = 1;        // measurement value × factor = exported value
  std::vector<std::string> label_names;
  std::map<std::vector<std::string>, Series> series;
  uint64_t series_overflow = 0;
};

class Aggregator final : public AsyncExporter {
 public:
  Aggregator(std::vector<Metric> metrics, size_t max_series, size_t capacity)
      : AsyncExporter(capacity), metrics_(std::move(metrics)), max_series_(max_series) {
    for (size_t i = 0; i < metrics_.size(); ++i) by_event_[metrics_[i].spec.event].push_back(i);
  }
  ~Aggregator() override { Stop(); }

  // Appends every metric family; takes the lock against the exporter thread.
  void Render(Writer& w) {
    std::lock_guard<std::mutex> lock(mu_);
    w.Family("pitlane_metric_series_overflow_total", "counter",
             "Events not aggregated because their metric already had max_series_per_metric "
             "label sets.");
    for (const Metric& m : metrics_) {
      w.Sample("pitlane_metric_series_overflow_total", {{"metric", m.name}}, m.series_overflow);
    }
    for (const Metric& m : metrics_) RenderMetric(w, m);
  }

 protected:
  void Export(const OwnedEvent& e) override {
    auto it = by_event_.find(e.name);
    if (it == by_event_.end()) return;
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t index : it->second) Apply(metrics_[index], e);
  }

 private:
  void Apply(Metric& m, const OwnedEvent& e) {
    double value = 0;
    if (m.spec.kind != MetricKind::kCounter) {
      const OwnedEvent::Measurement* x = e.measurement(m.spec.measurement);
      if (x == nullptr || x->kind == Value::Kind::kString) return;
      value = (x->kind == Value::Kind::kInt ? static_cast<double>(x->i) : x->d) * m.factor;
    }
    std::vector<std::string> key;
    key.reserve(m.spec.tags.size());
    for (const std::string& tag : m.spec.tags) {
      const std::string* v = e.meta(tag);
      key.push_back(v ? *v : tag == "worker_id" ? e.worker_id : std::string());
    }
    auto it = m.series.find(key);
    if (it == m.series.end()) {
      if (m.series.size() >= max_series_) {
        ++m.series_overflow;
        return;
      }
      Series s;
      if (m.spec.kind == MetricKind::kHistogram) s.buckets.assign(m.spec.buckets.size(), 0);
      it = m.series.emplace(std::move(key), std::move(s)).first;
    }
    Series& s = it->second;
    ++s.count;
    s.sum += value;
    s.last = value;
    if (m.spec.kind == MetricKind::kHistogram) {
      for (size_t b = 0; b < m.spec.buckets.size(); ++b) {
        if (value <= m.spec.buckets[b]) {
          ++s.buckets[b];
          break;
        }
      }
    }
  }

  static void RenderMetric(Writer& w, const Metric& m) {
    std::string help = m.spec.help;
    if (help.empty()) {
      help = std::string(MetricKindName(m.spec.kind)) + " of " + m.spec.event +
             (m.spec.kind == MetricKind::kCounter ? std::string(" events")
                                                  : " measurement " + m.spec.measurement);
      if (m.unit != Unit::kNone) help += ", in " + UnitSuffix(m.unit);
      help += ".";
    }
    static constexpr std::string_view kTypes[] = {"counter", "gauge", "counter", "summary",
                                                  "histogram"};
    w.Family(m.name, kTypes[static_cast<size_t>(m.spec.kind)], help);
    for (const auto& [key, s] : m.series) {
      Labels labels;
      for (size_t i = 0; i < key.size(); ++i) labels.emplace_back(m.label_names[i], key[i]);
      switch (m.spec.kind) {
        case MetricKind::kCounter: w.Sample(m.name, labels, s.count); break;
        case MetricKind::kLastValue: w.Sample(m.name, labels, s.last); break;
        case MetricKind::kSum: w.Sample(m.name, labels, s.sum); break;
        case MetricKind::kHistogram: {
          uint64_t cumulative = 0;
          for (size_t b = 0; b < s.buckets.size(); ++b) {
            cumulative += s.buckets[b];
            Labels with_le = labels;
            with_le.emplace_back("le", FormatDouble(m.spec.buckets[b]));
            w.Sample(m.name + "_bucket", with_le, cumulative);
          }
          Labels inf = labels;
          inf.emplace_back("le", "+Inf");
          w.Sample(m.name + "_bucket", inf, s.count);
          [[fallthrough]];
        }
        case MetricKind::kSummary:
          w.Sample(m.name + "_sum", labels, s.sum);
          w.Sample(m.name + "_count", labels, s.count);
          break;
      }
    }
  }

  std::mutex mu_;  // guards metrics_' series against Render on the HTTP thread
  std::vector<Metric> metrics_;
  std::map<std::string, std::vector<size_t>, std::less<>> by_event_;  // immutable after ctor
  const size_t max_series_;
};

// ---- The process, from /proc/self (the names of the Prometheus client libraries) ----

void RenderProcess(Writer& w) {
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces and parentheses): state is field 3.
  std::vector<std::string> f;
  const size_t paren = stat.rfind(')');
  if (paren != std::string::npos) {
    std::istringstream in(stat.substr(paren + 1));
    for (std::string t; in >> t;) f.push_back(t);
  }
  if (f.size() < 22) return;  // not Linux /proc: no process_* series
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  auto field = [&f](size_t n) { return std::strtod(f[n - 3].c_str(), nullptr); };  // 1-based
  uint64_t boot_time = 0;
  {
    std::ifstream proc_stat("/proc/stat");
    for (std::string line; std::getline(proc_stat, line);) {
      if (line.rfind("btime ", 0) == 0) boot_time = std::strtoull(line.c_str() + 6, nullptr, 10);
    }
  }
  uint64_t open_fds = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++open_fds;
  }
  rlimit nofile{};
  ::getrlimit(RLIMIT_NOFILE, &nofile);

  w.Family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
  w.Sample("process_cpu_seconds_total", {}, (field(14) + field(15)) / ticks);
  w.Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  w.Sample("process_resident_memory_bytes", {},
           field(24) * static_cast<double>(::sysconf(_SC_PAGESIZE)));
  w.Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
  w.Sample("process_virtual_memory_bytes", {}, field(23));
  w.Family("process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
  w.Sample("process_start_time_seconds", {}, static_cast<double>(boot_time) + field(22) / ticks);
  w.Family("process_open_fds", "gauge", "Number of open file descriptors.");
  w.Sample("process_open_fds", {}, open_fds);
  w.Family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
  w.Sample("process_max_fds", {}, static_cast<uint64_t>(nofile.rlim_cur));
}

// ---- Transport counters (scrape time) ----

// The worker_id of the series that carry the totals of the workers Host::Departed() sums.
constexpr const char* kDepartedWorkerId = "(departed)";

// The conventional name of a spec's metric: `<event>_<measurement>_<unit>s`, the measurement
// without a unit it spells itself (duration_ms exported in seconds is ..._duration_seconds),
// and `_total` on counters (counter and sum).
std::string ConventionalName(const MetricSpec& spec, Unit unit) {
  std::string measurement = spec.measurement;
  if (unit != Unit::kNone) {
    for (std::string_view spelled : {"_ns", "_us", "_ms", "_s", "_bytes", "_kb", "_mb"}) {
      if (EndsWith(measurement, spelled) && measurement.size() > spelled.size()) {
        measurement.resize(measurement.size() - spelled.size());
        break;
      }
    }
  }
  std::string name = SanitizeMetricName(spec.event + "." + measurement);
  const std::string suffix = UnitSuffix(unit);
  if (!suffix.empty() && !EndsWith(name, "_" + suffix)) name += "_" + suffix;
  const bool counter = spec.kind == MetricKind::kCounter || spec.kind == MetricKind::kSum;
  if (counter && !EndsWith(name, "_total")) name += "_total";
  return name;
}

}  // namespace

// ---- HTTP ----

class PrometheusExporter::Impl {
 public:
  Impl(Host& host, PrometheusOptions options) : host_(host), options_(std::move(options)) {}

  ~Impl() {
    if (!handler_id_.empty()) host_.Detach(handler_id_);
    if (aggregator_) aggregator_->Stop();
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  Status Init() {
    std::vector<Metric> metrics;
    std::set<std::string> names;
    for (const MetricSpec& spec : options_.specs) {
      Result<Metric> m = CompileMetric(spec, &names);
      if (!m.ok()) return m.status();
      metrics.push_back(std::move(m).value());
    }
    if (Status s = Listen(); !s.ok()) return s;
    if (!metrics.empty()) {
      if (Status s = StartAggregator(std::move(metrics)); !s.ok()) return s;
    }
    Accept();
    thread_ = std::thread([this] { io_.run(); });
    return Status::Ok();
  }

  std::string Render() {
    Writer w;
    RenderTransport(w);
    if (aggregator_) aggregator_->Render(w);
    RenderProcess(w);
    char hash[17];
    std::snprintf(hash, sizeof hash, "%016llx",
                  static_cast<unsigned long long>(host_.catalog().hash()));
    w.Family("pitlane_build_info", "gauge",
             "Always 1: the pitlane version serving these metrics and its catalog's hash.");
    w.Sample("pitlane_build_info", {{"version", PITLANE_VERSION}, {"catalog_hash", hash}},
             uint64_t{1});
    std::string out = w.Take();
    if (options_.extra) out += options_.extra();
    return out;
  }

  uint16_t port() const { return port_; }
  uint64_t exported() const { return aggregator_ ? aggregator_->exported() : 0; }
  uint64_t overflow() const { return aggregator_ ? aggregator_->overflow() : 0; }

 private:
  class Session : public std::enable_shared_from_this<Session> {
   public:
    Session(tcp::socket socket, Impl& impl) : stream_(std::move(socket)), impl_(impl) {}

    void Read() {
      request_ = {};
      stream_.expires_after(std::chrono::seconds(30));
      http::async_read(stream_, buffer_, request_,
                       [self = shared_from_this()](beast::error_code ec, size_t) {
                         self->OnRead(ec);
                       });
    }

   private:
    void OnRead(beast::error_code ec) {
      if (ec) {
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        return;
      }
      response_ = {};
      response_.version(request_.version());
      response_.keep_alive(request_.keep_alive());
      response_.set(http::field::server, "pitlane");
      const beast::string_view target = request_.target();
      const beast::string_view path = target.substr(0, target.find('?'));
      const bool head = request_.method() == http::verb::head;
      if (request_.method() != http::verb::get && !head) {
        response_.result(http::status::method_not_allowed);
        response_.set(http::field::allow, "GET, HEAD");
        response_.set(http::field::content_type, "text/plain; charset=utf-8");
        response_.body() = "method not allowed\n";
      } else if (path != "/metrics") {
        response_.result(http::status::not_found);
        response_.set(http::field::content_type, "text/plain; charset=utf-8");
        response_.body() = "not found; metrics are at /metrics\n";
      } else {
        response_.result(http::status::ok);
        response_.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
        response_.set(http::field::vary, "Accept-Encoding");
        response_.body() = impl_.Render();
        const beast::string_view accept = request_[http::field::accept_encoding];
        if (AcceptsGzip(std::string_view(accept.data(), accept.size()))) {
          if (std::optional<std::string> z = Gzip(response_.body())) {
            response_.body() = std::move(*z);
            response_.set(http::field::content_encoding, "gzip");
          }
        }
      }
      response_.prepare_payload();
      if (head) response_.body().clear();  // Content-Length stays that of the GET body
      stream_.expires_after(std::chrono::seconds(30));
      http::async_write(stream_, response_,
                        [self = shared_from_this()](beast::error_code wec, size_t) {
                          if (wec) return;
                          if (!self->response_.keep_alive()) {
                            self->stream_.socket().shutdown(tcp::socket::shutdown_send, wec);
                            return;
                          }
                          self->Read();
                        });
    }

    beast::tcp_stream stream_;
    Impl& impl_;
    beast::flat_buffer buffer_;
    http::request<http::string_body> request_;
    http::response<http::string_body> response_;
  };

  // A spec checked against the catalog and the names taken so far (`names`), with its exported
  // name, unit, buckets and label names.
  Result<Metric> CompileMetric(const MetricSpec& spec, std::set<std::string>* names) const {
    Metric m;
    m.spec = spec;
    const std::string what = std::string(MetricKindName(spec.kind)) + "(" + spec.event + "." +
                             spec.measurement + ")";
    const Catalog& catalog = host_.catalog();
    if (catalog.FindHostEvent(spec.event) == 0) {
      return InvalidArgument("metric " + what + ": no event \"" + spec.event +
                             "\" in the catalog (the name is <event>.<measurement>; a counter "
                             "ends with a segment such as .count)");
    }
    Unit catalog_unit = Unit::kNone;
    if (spec.kind != MetricKind::kCounter) {
      const uint16_t key = catalog.MeasurementKeyId(spec.measurement);
      if (key == 0) {
        return InvalidArgument("metric " + what + ": no measurement key \"" + spec.measurement +
                               "\" in the catalog");
      }
      catalog_unit = catalog.MeasurementUnit(key);
    }
    const bool conventional = options_.naming == MetricNaming::kConventional;
    const Unit from = spec.unit_from.value_or(catalog_unit);
    // Conventional names are in base units whatever the spec's target (promtool flags
    // `_milliseconds`); the Snakepit naming converts as Telemetry.Metrics does.
    m.unit = conventional ? BaseUnitOf(from) : spec.unit_to.value_or(from);
    m.factor = UnitFactor(from, m.unit);
    m.name = !spec.name.empty() ? SanitizeMetricName(spec.name)
             : conventional     ? ConventionalName(spec, m.unit)
                                : spec.MetricName();
    if (!names->insert(m.name).second || m.name.rfind("pitlane_", 0) == 0 ||
        m.name.rfind("process_", 0) == 0) {
      return InvalidArgument("metric " + what + ": name \"" + m.name +
                             "\" is used twice or collides with pitlane_* or process_* series");
    }
    if (spec.kind == MetricKind::kHistogram) {
      if (m.spec.buckets.empty()) m.spec.buckets = DefaultBuckets(m.unit);
      std::sort(m.spec.buckets.begin(), m.spec.buckets.end());
      m.spec.buckets.erase(std::unique(m.spec.buckets.begin(), m.spec.buckets.end()),
                           m.spec.buckets.end());
    }
    std::set<std::string> label_set;
    for (const std::string& tag : spec.tags) {
      std::string label = SanitizeLabelName(tag);
      if (label == "le" || label.rfind("__", 0) == 0 || !label_set.insert(label).second) {
        return InvalidArgument("metric " + what + ": tag \"" + tag +
                               "\" is repeated or a reserved label name");
      }
      m.label_names.push_back(std::move(label));
    }
    return m;
  }

  // Binds options_.listen ("host:port", "[v6]:port", ":port" for every address).
  Status Listen() {
    const std::string& listen = options_.listen;
    const size_t colon = listen.rfind(':');
    if (colon == std::string::npos) {
      return InvalidArgument("listen address \"" + listen + "\" is not host:port");
    }
    std::string host_part = listen.substr(0, colon);
    if (host_part.size() >= 2 && host_part.front() == '[' && host_part.back() == ']') {
      host_part = host_part.substr(1, host_part.size() - 2);
    }
    unsigned port = 0;
    const std::string port_part = listen.substr(colon + 1);
    const auto [p, ec] =
        std::from_chars(port_part.data(), port_part.data() + port_part.size(), port);
    if (ec != std::errc() || p != port_part.data() + port_part.size() || port > 65535) {
      return InvalidArgument("listen address \"" + listen + "\" has no valid port");
    }
    beast::error_code err;
    const asio::ip::address addr =
        asio::ip::make_address(host_part.empty() ? "0.0.0.0" : host_part, err);
    if (err) {
      return InvalidArgument("listen address \"" + listen + "\": " + err.message());
    }
    const tcp::endpoint endpoint(addr, static_cast<uint16_t>(port));
    acceptor_.open(endpoint.protocol(), err);
    if (!err) acceptor_.set_option(asio::socket_base::reuse_address(true), err);
    if (!err) acceptor_.bind(endpoint, err);
    if (!err) acceptor_.listen(asio::socket_base::max_listen_connections, err);
    if (err) return Unavailable("cannot listen on " + listen + ": " + err.message());
    port_ = acceptor_.local_endpoint().port();
    return Status::Ok();
  }

  // Starts the aggregator of the event metrics and attaches it to their events.
  Status StartAggregator(std::vector<Metric> metrics) {
    std::vector<std::string> events;
    for (const Metric& m : metrics) events.push_back(m.spec.event);
    aggregator_ = std::make_shared<Aggregator>(std::move(metrics), options_.max_series_per_metric,
                                               options_.queue_capacity);
    aggregator_->Start();
    static std::atomic<uint64_t> next_id{0};
    handler_id_ = "prometheus#" + std::to_string(next_id.fetch_add(1));
    // The host may call a handler snapshot briefly after Detach: the closure owns the
    // aggregator so it outlives that call.
    Handler push = aggregator_->handler();
    Status s = host_.AttachMany(handler_id_, events,
                                [agg = aggregator_, push](const EventView& v) { push(v); });
    if (!s.ok()) handler_id_.clear();
    return s;
  }

  void Accept() {
    acceptor_.async_accept(asio::make_strand(io_), [this](beast::error_code ec,
                                                          tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) std::make_shared<Session>(std::move(socket), *this)->Read();
      Accept();
    });
  }

  void RenderTransport(Writer& w) {
    const std::vector<WorkerInfo> workers = host_.Workers();
    // Workers gone past the host's departed_retention, summed under one id: sums over
    // workers never go back when a worker's own series go.
    const DepartedWorkers departed = host_.Departed();
    RenderWorkerCounters(w, workers, departed);
    RenderRingsAndLaw(w, workers, departed);
    RenderHostCounters(w, host_.Stats());
  }

  // The per-worker outcome counters. Per worker id: Host::Workers() carries the totals of every
  // ring (live and reclaimed) and of the ringless threads.
  static void RenderWorkerCounters(Writer& w, const std::vector<WorkerInfo>& workers,
                                   const DepartedWorkers& departed) {
    std::map<std::string, Tally> totals;
    for (const WorkerInfo& wi : workers) totals[wi.id] += wi;
    if (departed.workers > 0) totals[kDepartedWorkerId] += departed;
    auto per_worker = [&](std::string_view name, std::string_view help, auto field) {
      w.Family(name, "counter", help);
      for (const auto& [id, t] : totals) w.Sample(name, {{"worker_id", id}}, field(t));
    };
    per_worker("pitlane_events_total",
               "Events the worker emitted (published + dropped + suppressed).",
               [](const Tally& t) { return t.emitted; });
    per_worker("pitlane_published_total", "Events the worker wrote into a ring.",
               [](const Tally& t) { return t.published; });
    per_worker("pitlane_delivered_total", "Events the host validated and handed to handlers.",
               [](const Tally& t) { return t.delivered; });
    per_worker("pitlane_truncated_total", "Delivered events with a value cut to max_value_bytes.",
               [](const Tally& t) { return t.truncated; });
    // One family of per-reason series; `reasons` lists (reason, count) of a worker's totals.
    auto by_reason = [&](std::string_view name, std::string_view help, auto reasons) {
      w.Family(name, "counter", help);
      for (const auto& [id, t] : totals) {
        for (const auto& [reason, v] : reasons(t)) {
          w.Sample(name, {{"worker_id", id}, {"reason", reason}}, v);
        }
      }
    };
    using Reasons = std::vector<std::pair<std::string, uint64_t>>;
    by_reason("pitlane_dropped_total", "Events the worker dropped, by reason.",
              [](const Tally& t) {
                return Reasons{{"full", t.dropped_full},
                               {"too_large", t.dropped_too_large},
                               {"no_ring", t.dropped_no_ring},
                               {"in_flight", t.dropped_in_flight}};
              });
    by_reason("pitlane_suppressed_total", "Events the worker's gate suppressed, by reason.",
              [](const Tally& t) {
                return Reasons{{"disabled", t.suppressed_disabled},
                               {"sampled", t.suppressed_sampled},
                               {"filtered", t.suppressed_filtered}};
              });
    by_reason("pitlane_rejected_total", "Published events the host rejected, by reason.",
              [](const Tally& t) {
                Reasons r;
                for (uint32_t i = 0; i < shm::kRejectReasonCount; ++i) {
                  r.emplace_back(shm::RejectReasonName(i), t.rejected[i]);
                }
                return r;
              });
  }

  // Ring fill, the law on settled numbers and the worker population.
  void RenderRingsAndLaw(Writer& w, const std::vector<WorkerInfo>& workers,
                         const DepartedWorkers& departed) {
    w.Family("pitlane_ring_fill_ratio", "gauge", "Used fraction of each live ring.");
    for (const RingStats& r : host_.Rings()) {
      if (r.reclaimed) continue;
      const double ratio = r.capacity == 0 ? 0.0
                                           : static_cast<double>(r.used_bytes) /
                                                 static_cast<double>(r.capacity);
      w.Sample("pitlane_ring_fill_ratio", {{"worker_id", r.worker_id}, {"segment", r.segment}},
               ratio);
    }
    // The law on settled numbers: a gone worker (not alive, no live ring) or the departed sum;
    // a live worker's counts move while they are read, so it shows 0.
    w.Family("pitlane_unaccounted_events", "gauge",
             "Events of gone workers the conservation law does not account for (emitted = "
             "suppressed + dropped + published, published = delivered + rejected); 0 unless "
             "something is broken.");
    std::map<std::string, uint64_t> unaccounted;
    for (const WorkerInfo& wi : workers) unaccounted[wi.id] += wi.Gone() ? wi.Unaccounted() : 0;
    if (departed.workers > 0) unaccounted[kDepartedWorkerId] = departed.unaccounted;
    for (const auto& [id, u] : unaccounted) {
      w.Sample("pitlane_unaccounted_events", {{"worker_id", id}}, u);
    }
    uint64_t alive = 0;
    for (const WorkerInfo& wi : workers) alive += wi.alive ? 1 : 0;
    w.Family("pitlane_workers_alive", "gauge", "Worker processes attached and alive.");
    w.Sample("pitlane_workers_alive", {}, alive);
    w.Family("pitlane_workers_departed_total", "counter",
             "Gone workers whose series were retired into worker_id=\"(departed)\".");
    w.Sample("pitlane_workers_departed_total", {}, departed.workers);
  }

  void RenderHostCounters(Writer& w, const HostStats& stats) {
    auto host_total = [&](std::string_view name, std::string_view help, uint64_t v) {
      w.Family(name, "counter", help);
      w.Sample(name, {}, v);
    };
    host_total("pitlane_host_events_total", "Events the host emitted itself.", stats.host_events);
    host_total("pitlane_handler_errors_total", "Handlers detached because they threw.",
               stats.handler_errors);
    host_total("pitlane_quarantined_rings_total", "Rings the host stopped reading as corrupt.",
               stats.quarantined_rings);
    host_total("pitlane_workers_terminated_total", "Worker processes seen to die.",
               stats.workers_terminated);
    w.Family("pitlane_quarantined_by_reason_total", "counter",
             "Rings the host stopped reading as corrupt, by what was wrong.");
    for (uint32_t i = 1; i < shm::kQuarantineReasonCount; ++i) {
      w.Sample("pitlane_quarantined_by_reason_total", {{"reason", shm::QuarantineReasonName(i)}},
               stats.quarantined_by_reason[i]);
    }
    host_total("pitlane_exporter_overflow_total",
               "Events the Prometheus exporter dropped because its queue was full.", overflow());
  }

  Host& host_;
  PrometheusOptions options_;
  std::shared_ptr<Aggregator> aggregator_;
  std::string handler_id_;

  asio::io_context io_{1};
  tcp::acceptor acceptor_{io_};
  uint16_t port_ = 0;
  std::thread thread_;
};

Result<std::unique_ptr<PrometheusExporter>> PrometheusExporter::Start(Host& host,
                                                                      PrometheusOptions options) {
  auto impl = std::make_unique<Impl>(host, std::move(options));
  if (Status s = impl->Init(); !s.ok()) return s;
  return std::unique_ptr<PrometheusExporter>(new PrometheusExporter(std::move(impl)));
}

PrometheusExporter::PrometheusExporter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PrometheusExporter::~PrometheusExporter() = default;

std::string PrometheusExporter::Render() { return impl_->Render(); }
uint16_t PrometheusExporter::port() const { return impl_->port(); }
uint64_t PrometheusExporter::exported() const { return impl_->exported(); }
uint64_t PrometheusExporter::overflow() const { return impl_->overflow(); }

}  // namespace pitlane
