// Units of measurement values: the catalog declares one per measurement key (catalog.txt,
// `measurement duration nanosecond`), and exporters convert values to the unit they publish
// (Prometheus: base units, seconds and bytes; a MetricSpec's `unit: {native, millisecond}`).
//
// The names and conversions are Telemetry.Metrics' (`:native`, `:second`, `:millisecond`,
// `:microsecond`, `:nanosecond`, `:byte`, `:kilobyte`, `:megabyte`; a kilobyte is 1024 bytes).
// `native` is the unit workers record times in: nanoseconds (Snakepit's `System.monotonic_time`
// native unit on Linux, and what pitlane's spans measure).
#pragma once

#include <cstdint>
#include <string_view>

namespace pitlane {

enum class Unit : uint8_t {
  kNone,  // a count, a ratio, an id: no unit, never converted
  kNanosecond,
  kMicrosecond,
  kMillisecond,
  kSecond,
  kByte,
  kKilobyte,
  kMegabyte,
};

enum class UnitDimension : uint8_t { kNone, kTime, kMemory };

constexpr UnitDimension DimensionOf(Unit u) {
  switch (u) {
    case Unit::kNanosecond:
    case Unit::kMicrosecond:
    case Unit::kMillisecond:
    case Unit::kSecond: return UnitDimension::kTime;
    case Unit::kByte:
    case Unit::kKilobyte:
    case Unit::kMegabyte: return UnitDimension::kMemory;
    case Unit::kNone: break;
  }
  return UnitDimension::kNone;
}

// How many base units (seconds, bytes) one `u` is; 1 for kNone.
constexpr double BaseUnitsPer(Unit u) {
  switch (u) {
    case Unit::kNanosecond: return 1e-9;
    case Unit::kMicrosecond: return 1e-6;
    case Unit::kMillisecond: return 1e-3;
    case Unit::kKilobyte: return 1024;
    case Unit::kMegabyte: return 1024.0 * 1024.0;
    case Unit::kSecond:
    case Unit::kByte:
    case Unit::kNone: break;
  }
  return 1;
}

// The base unit of `u`'s dimension (kSecond, kByte), or kNone.
constexpr Unit BaseUnitOf(Unit u) {
  switch (DimensionOf(u)) {
    case UnitDimension::kTime: return Unit::kSecond;
    case UnitDimension::kMemory: return Unit::kByte;
    case UnitDimension::kNone: break;
  }
  return Unit::kNone;
}

// The singular name as the catalog and specs spell it ("nanosecond"; "" for kNone).
constexpr std::string_view UnitName(Unit u) {
  switch (u) {
    case Unit::kNanosecond: return "nanosecond";
    case Unit::kMicrosecond: return "microsecond";
    case Unit::kMillisecond: return "millisecond";
    case Unit::kSecond: return "second";
    case Unit::kByte: return "byte";
    case Unit::kKilobyte: return "kilobyte";
    case Unit::kMegabyte: return "megabyte";
    case Unit::kNone: break;
  }
  return "";
}

// Parses a unit name; "native" is kNanosecond, "none" or "unit" is kNone. Returns false for
// anything else.
constexpr bool ParseUnit(std::string_view name, Unit* out) {
  if (name == "native") {
    *out = Unit::kNanosecond;
    return true;
  }
  if (name == "none" || name == "unit") {
    *out = Unit::kNone;
    return true;
  }
  for (Unit u : {Unit::kNanosecond, Unit::kMicrosecond, Unit::kMillisecond, Unit::kSecond,
                 Unit::kByte, Unit::kKilobyte, Unit::kMegabyte}) {
    if (name == UnitName(u)) {
      *out = u;
      return true;
    }
  }
  return false;
}

// Multiplier taking a value in `from` to `to`. REQUIRES: DimensionOf(from) == DimensionOf(to).
constexpr double UnitFactor(Unit from, Unit to) { return BaseUnitsPer(from) / BaseUnitsPer(to); }

}  // namespace pitlane
