// The event catalog: parser of the text format (documented at the top of schemas/catalog.txt),
// name -> id indexes, the normalised hash, and the compiled-in default.
#include "pitlane/catalog.h"

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <utility>

#include "pitlane/glob.h"

namespace pitlane {
namespace internal {
extern const std::string_view kDefaultCatalogText;  // generated from schemas/catalog.txt
}  // namespace internal

namespace {

constexpr size_t kMaxIds = 65535;  // ids are uint16_t and 0 means "unknown"
constexpr uint64_t kFnvOffset = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

uint64_t Fnv1a64(std::string_view bytes) {
  uint64_t h = kFnvOffset;
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= kFnvPrime;
  }
  return h;
}

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

// Dot-separated non-empty segments of [A-Za-z0-9_-].
bool IsDottedName(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '.') {
      if (s[i - 1] == '.') return false;
    } else if (!IsNameChar(s[i])) {
      return false;
    }
  }
  return true;
}

bool IsKey(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (!IsNameChar(c) && c != '.') return false;
  }
  return true;
}

std::optional<Layer> ParseLayer(std::string_view s) {
  if (s == "infrastructure") return Layer::kInfrastructure;
  if (s == "worker") return Layer::kWorker;
  if (s == "transport") return Layer::kTransport;
  return std::nullopt;
}

std::optional<SpanRole> ParseRole(std::string_view s) {
  if (s == "none") return SpanRole::kNone;
  if (s == "start") return SpanRole::kStart;
  if (s == "stop") return SpanRole::kStop;
  if (s == "exception") return SpanRole::kException;
  return std::nullopt;
}

std::vector<std::string_view> Tokenize(std::string_view line) {
  std::vector<std::string_view> tokens;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) tokens.push_back(line.substr(start, i - start));
  }
  return tokens;
}

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '"' && c != '\\') {
      out += c;
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    }
  }
  out += '"';
  return out;
}

// A key line remembered until max_key_bytes is known (limits may come after the keys).
struct PendingKey {
  std::string_view directive;
  std::string key;
  size_t line;
};

}  // namespace

std::string_view LayerName(Layer layer) {
  switch (layer) {
    case Layer::kInfrastructure:
      return "infrastructure";
    case Layer::kWorker:
      return "worker";
    case Layer::kTransport:
      return "transport";
  }
  return "unknown";
}

std::string_view SpanRoleName(SpanRole role) {
  switch (role) {
    case SpanRole::kNone:
      return "none";
    case SpanRole::kStart:
      return "start";
    case SpanRole::kStop:
      return "stop";
    case SpanRole::kException:
      return "exception";
  }
  return "unknown";
}

// The index copies its keys into one shared arena so that the slots' string_views stay valid
// when the Catalog holding the index is copied or moved.
void Catalog::Index::Build(const std::vector<std::pair<std::string_view, uint16_t>>& entries) {
  size_t capacity = 1;
  while (capacity < 2 * entries.size()) capacity <<= 1;
  size_t arena_bytes = 0;
  for (const auto& [key, id] : entries) arena_bytes += key.size();
  auto arena = std::make_shared<std::string>();
  arena->reserve(arena_bytes);  // no reallocation below: views into it stay valid
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  for (const auto& [key, id] : entries) {
    const size_t offset = arena->size();
    arena->append(key);
    const std::string_view stored(arena->data() + offset, key.size());
    for (uint64_t i = Fnv1a64(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].id == 0) {
        slots_[i] = Slot{stored, id};
        break;
      }
    }
  }
  arena_ = std::move(arena);
}

uint16_t Catalog::Index::Find(std::string_view key) const {
  if (slots_.empty()) return 0;  // a default-constructed Catalog
  // Capacity >= 2 × entries guarantees an empty slot, so the probe terminates.
  for (uint64_t i = Fnv1a64(key) & mask_;; i = (i + 1) & mask_) {
    const Slot& slot = slots_[i];
    if (slot.id == 0) return 0;
    if (slot.key == key) return slot.id;
  }
}

// The text format, one line at a time, into a Catalog under construction; then the checks that
// need the whole text, the normalised hash and the indexes.
class Catalog::Parser {
 public:
  explicit Parser(std::string_view origin) : origin_(origin), cat_(std::make_shared<Catalog>()) {}

  Result<std::shared_ptr<const Catalog>> Run(std::string_view text) {
    size_t pos = 0;
    while (pos < text.size()) {
      size_t eol = text.find('\n', pos);
      if (eol == std::string_view::npos) eol = text.size();
      std::string_view line = text.substr(pos, eol - pos);
      pos = eol + 1;
      ++line_no_;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      const std::vector<std::string_view> tok = Tokenize(line);
      if (tok.empty() || tok[0].front() == '#') continue;
      if (Status s = ParseLine(tok); !s.ok()) return s;
    }
    if (!have_root_) return InvalidArgument(std::string(origin_) + ": missing 'root <name>' line");
    for (const PendingKey& k : keys_) {
      if (k.key.size() > cat_->limits_.max_key_bytes) {
        return Error(k.line, std::string(k.directive) + " key " + Quote(k.key) + " is " +
                                 std::to_string(k.key.size()) + " bytes, over max_key_bytes " +
                                 std::to_string(cat_->limits_.max_key_bytes));
      }
    }
    cat_->hash_ = Fnv1a64(Normalised());
    BuildIndexes();
    return std::shared_ptr<const Catalog>(std::move(cat_));
  }

 private:
  struct LimitSlot {
    std::string_view name;
    uint32_t* value;
    size_t line = 0;  // 0: not set by the text
  };

  Status Error(size_t line, const std::string& what) const {
    return InvalidArgument(std::string(origin_) + ":" + std::to_string(line) + ": " + what);
  }

  Status ParseLine(const std::vector<std::string_view>& tok) {
    const std::string_view directive = tok[0];
    if (directive == "root") return ParseRoot(tok);
    if (directive == "limit") return ParseLimit(tok);
    if (directive == "measurement" || directive == "metadata") return ParseKey(tok);
    if (directive == "event") return ParseEvent(tok);
    return Error(line_no_, "unknown directive " + Quote(directive) +
                               " (expected root, limit, measurement, metadata or event)");
  }

  Status ParseRoot(const std::vector<std::string_view>& tok) {
    if (tok.size() != 2) return Error(line_no_, "expected 'root <name>'");
    if (have_root_) return Error(line_no_, "duplicate 'root' line");
    if (!IsDottedName(tok[1])) {
      return Error(line_no_,
                   "root " + Quote(tok[1]) + " is not a dotted name of [A-Za-z0-9_-] segments");
    }
    cat_->root_ = std::string(tok[1]);
    have_root_ = true;
    return Status::Ok();
  }

  Status ParseLimit(const std::vector<std::string_view>& tok) {
    if (tok.size() != 3) return Error(line_no_, "expected 'limit <name> <integer>'");
    LimitSlot* slot = nullptr;
    for (LimitSlot& l : limits_) {
      if (l.name == tok[1]) slot = &l;
    }
    if (slot == nullptr) return Error(line_no_, "unknown limit " + Quote(tok[1]));
    if (slot->line != 0) {
      return Error(line_no_, "duplicate limit " + Quote(tok[1]) + " (first set on line " +
                                 std::to_string(slot->line) + ")");
    }
    uint32_t value = 0;
    const char* first = tok[2].data();
    const char* last = first + tok[2].size();
    const auto [ptr, ec] = std::from_chars(first, last, value);
    if (ec != std::errc() || ptr != last || value == 0) {
      return Error(line_no_, "limit " + Quote(tok[1]) + " value " + Quote(tok[2]) +
                                 " is not an integer in [1, 4294967295]");
    }
    *slot->value = value;
    slot->line = line_no_;
    return Status::Ok();
  }

  // `measurement <key> [<unit>]` or `metadata <key>`.
  Status ParseKey(const std::vector<std::string_view>& tok) {
    const std::string_view directive = tok[0];
    const bool is_measurement = directive == "measurement";
    if (tok.size() != 2 && !(is_measurement && tok.size() == 3)) {
      return Error(line_no_, is_measurement ? "expected 'measurement <key> [<unit>]'"
                                            : "expected 'metadata <key>'");
    }
    if (!IsKey(tok[1])) {
      return Error(line_no_, std::string(directive) + " key " + Quote(tok[1]) +
                                 " is not made of [A-Za-z0-9_.-]");
    }
    Unit unit = Unit::kNone;
    if (tok.size() == 3 && !ParseUnit(tok[2], &unit)) {
      return Error(line_no_, "measurement unit " + Quote(tok[2]) +
                                 " is not one of nanosecond, microsecond, millisecond, second, "
                                 "byte, kilobyte, megabyte, none");
    }
    auto& seen = is_measurement ? measurement_seen_ : metadata_seen_;
    auto& list = is_measurement ? cat_->measurement_keys_ : cat_->metadata_keys_;
    const auto [it, inserted] = seen.emplace(std::string(tok[1]), line_no_);
    if (!inserted) {
      return Error(line_no_, "duplicate " + std::string(directive) + " key " + Quote(tok[1]) +
                                 " (first on line " + std::to_string(it->second) + ")");
    }
    if (list.size() >= kMaxIds) {
      return Error(line_no_, "more than " + std::to_string(kMaxIds) + " " +
                                 std::string(directive) + " keys");
    }
    list.emplace_back(tok[1]);
    if (is_measurement) cat_->measurement_units_.push_back(unit);
    keys_.push_back(PendingKey{directive, std::string(tok[1]), line_no_});
    return Status::Ok();
  }

  // `event <canonical> <layer> <role> [<wire-name> ...]`
  Status ParseEvent(const std::vector<std::string_view>& tok) {
    if (tok.size() < 4) {
      return Error(line_no_, "expected 'event <canonical> <layer> <role> [<wire-name> ...]'");
    }
    if (cat_->events_.size() >= kMaxIds) {
      return Error(line_no_, "more than " + std::to_string(kMaxIds) + " events");
    }
    CatalogEvent ev;
    ev.id = static_cast<uint16_t>(cat_->events_.size() + 1);
    if (!IsDottedName(tok[1])) {
      return Error(line_no_, "event name " + Quote(tok[1]) +
                                 " is not a dotted name of [A-Za-z0-9_-] segments");
    }
    ev.canonical = std::string(tok[1]);
    const std::optional<Layer> layer = ParseLayer(tok[2]);
    if (!layer) {
      return Error(line_no_, "event " + Quote(tok[1]) + ": bad layer " + Quote(tok[2]) +
                                 " (expected infrastructure, worker or transport)");
    }
    ev.layer = *layer;
    const std::optional<SpanRole> role = ParseRole(tok[3]);
    if (!role) {
      return Error(line_no_, "event " + Quote(tok[1]) + ": bad role " + Quote(tok[3]) +
                                 " (expected none, start, stop or exception)");
    }
    ev.role = *role;
    if (Status s = ParseWireNames(tok, &ev); !s.ok()) return s;
    return AddEvent(std::move(ev));
  }

  Status ParseWireNames(const std::vector<std::string_view>& tok, CatalogEvent* ev) const {
    for (size_t i = 4; i < tok.size(); ++i) {
      if (!IsDottedName(tok[i])) {
        return Error(line_no_, "event " + Quote(tok[1]) + ": wire name " + Quote(tok[i]) +
                                   " is not a dotted name of [A-Za-z0-9_-] segments");
      }
      for (const std::string& w : ev->wire_names) {
        if (w == tok[i]) {
          return Error(line_no_,
                       "event " + Quote(tok[1]) + ": duplicate wire name " + Quote(tok[i]));
        }
      }
      ev->wire_names.emplace_back(tok[i]);
    }
    if (ev->layer == Layer::kWorker && ev->wire_names.empty()) {
      return Error(line_no_, "worker-layer event " + Quote(tok[1]) + " has no wire names");
    }
    if (ev->layer != Layer::kWorker && !ev->wire_names.empty()) {
      return Error(line_no_, std::string(LayerName(ev->layer)) + "-layer event " +
                                 Quote(tok[1]) +
                                 " has wire names; only worker-layer events may have them");
    }
    return Status::Ok();
  }

  // Canonical and wire names share one namespace across events; an event may repeat its own
  // canonical name as a wire name.
  Status AddEvent(CatalogEvent ev) {
    std::vector<std::string_view> names{ev.canonical};
    for (const std::string& w : ev.wire_names) {
      if (w != ev.canonical) names.push_back(w);
    }
    for (const std::string_view name : names) {
      const auto it = event_names_.find(std::string(name));
      if (it != event_names_.end()) {
        return Error(line_no_, "duplicate event name " + Quote(name) + " (already used by " +
                                   Quote(cat_->events_[it->second - 1].canonical) + ")");
      }
    }
    for (const std::string_view name : names) event_names_.emplace(std::string(name), ev.id);
    cat_->events_.push_back(std::move(ev));
    return Status::Ok();
  }

  // Normalised form for the hash: every token separated by one space, one item per line, the
  // effective limits always present. Sets each event's host name on the way.
  std::string Normalised() {
    std::string norm = "pitlane-catalog 1\nroot " + cat_->root_ + "\n";
    for (const LimitSlot& l : limits_) {
      norm += "limit " + std::string(l.name) + " " + std::to_string(*l.value) + "\n";
    }
    for (const std::string& k : cat_->measurement_keys_) norm += "measurement " + k + "\n";
    for (const std::string& k : cat_->metadata_keys_) norm += "metadata " + k + "\n";
    for (CatalogEvent& ev : cat_->events_) {
      ev.host_name = cat_->root_ + "." + ev.canonical;
      norm += "event " + ev.canonical + " " + std::string(LayerName(ev.layer)) + " " +
              std::string(SpanRoleName(ev.role));
      for (const std::string& w : ev.wire_names) norm += " " + w;
      norm += "\n";
    }
    return norm;
  }

  // Views into cat_'s strings are only used while building; each index keeps its own copy.
  void BuildIndexes() {
    std::vector<std::pair<std::string_view, uint16_t>> worker, host, canonical, measurement,
        metadata;
    for (const CatalogEvent& ev : cat_->events_) {
      host.emplace_back(ev.host_name, ev.id);
      canonical.emplace_back(ev.canonical, ev.id);
      if (!ev.admitted_from_workers()) continue;
      worker.emplace_back(ev.canonical, ev.id);
      for (const std::string& w : ev.wire_names) {
        if (w != ev.canonical) worker.emplace_back(w, ev.id);
      }
    }
    for (size_t i = 0; i < cat_->measurement_keys_.size(); ++i) {
      measurement.emplace_back(cat_->measurement_keys_[i], static_cast<uint16_t>(i + 1));
    }
    for (size_t i = 0; i < cat_->metadata_keys_.size(); ++i) {
      metadata.emplace_back(cat_->metadata_keys_[i], static_cast<uint16_t>(i + 1));
    }
    cat_->worker_index_.Build(worker);
    cat_->host_index_.Build(host);
    cat_->canonical_index_.Build(canonical);
    cat_->measurement_index_.Build(measurement);
    cat_->metadata_index_.Build(metadata);
  }

  std::string_view origin_;
  std::shared_ptr<Catalog> cat_;
  size_t line_no_ = 0;
  bool have_root_ = false;
  LimitSlot limits_[5] = {
      {"max_measurements", &cat_->limits_.max_measurements},
      {"max_metadata", &cat_->limits_.max_metadata},
      {"max_key_bytes", &cat_->limits_.max_key_bytes},
      {"max_correlation_id_bytes", &cat_->limits_.max_correlation_id_bytes},
      {"max_value_bytes", &cat_->limits_.max_value_bytes},
  };
  std::vector<PendingKey> keys_;
  // Every canonical and wire name, with the event that owns it: one namespace across events.
  std::unordered_map<std::string, uint16_t> event_names_;
  std::unordered_map<std::string, size_t> measurement_seen_, metadata_seen_;
};

Result<std::shared_ptr<const Catalog>> Catalog::Parse(std::string_view text,
                                                      std::string_view origin) {
  return Parser(origin).Run(text);
}

Result<std::shared_ptr<const Catalog>> Catalog::LoadFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    std::string what = "catalog file \"" + path + "\": " + std::strerror(err);
    if (err == ENOENT || err == ENOTDIR) return NotFound(std::move(what));
    if (err == EACCES || err == EPERM) return PermissionDenied(std::move(what));
    return Unavailable(std::move(what));
  }
  std::string text;
  char buf[1 << 14];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return Unavailable("catalog file \"" + path + "\": read error");
  return Parse(text, path);
}

std::shared_ptr<const Catalog> Catalog::Default() {
  // Thread-safe static initialisation. The text is compiled in and a test parses it, so the
  // abort below cannot fire in a build that passed its tests.
  static const std::shared_ptr<const Catalog> catalog = [] {
    auto parsed = Parse(internal::kDefaultCatalogText, "schemas/catalog.txt (compiled in)");
    if (!parsed.ok()) {
      std::fprintf(stderr, "pitlane: the compiled-in default catalog is invalid: %s\n",
                   parsed.status().ToString().c_str());
      std::abort();
    }
    return std::move(parsed).value();
  }();
  return catalog;
}

uint16_t Catalog::FindWorkerEvent(std::string_view name) const { return worker_index_.Find(name); }

uint16_t Catalog::FindHostEvent(std::string_view host_name) const {
  return host_index_.Find(host_name);
}

uint16_t Catalog::FindCanonical(std::string_view canonical) const {
  return canonical_index_.Find(canonical);
}

uint16_t Catalog::MeasurementKeyId(std::string_view key) const {
  return measurement_index_.Find(key);
}

uint16_t Catalog::MetadataKeyId(std::string_view key) const { return metadata_index_.Find(key); }

bool Catalog::PatternMatchesEvent(std::string_view pattern, uint16_t id) const {
  if (id == 0 || id > events_.size()) return false;
  const CatalogEvent& ev = event(id);
  if (GlobMatch(pattern, ev.canonical)) return true;
  for (const std::string& w : ev.wire_names) {
    if (GlobMatch(pattern, w)) return true;
  }
  return false;
}

}  // namespace pitlane
