// The LTTng-UST tracepoint the benchmarks compare pitlane's emit with: the typical event
// (bench_util.h TypicalEvent) with the same fields — an event id, the correlation id, three
// measurements (two integers, one float) and three metadata strings. LTTng stamps its own
// clock, as pitlane's worker does.
#undef LTTNG_UST_TRACEPOINT_PROVIDER
#define LTTNG_UST_TRACEPOINT_PROVIDER pitlane_bench

#undef LTTNG_UST_TRACEPOINT_INCLUDE
#define LTTNG_UST_TRACEPOINT_INCLUDE "lttng/pitlane_bench_tp.h"

#if !defined(PITLANE_BENCH_TP_H) || defined(LTTNG_UST_TRACEPOINT_HEADER_MULTI_READ)
#define PITLANE_BENCH_TP_H

#include <lttng/tracepoint.h>

LTTNG_UST_TRACEPOINT_EVENT(
    pitlane_bench, typical_event,
    LTTNG_UST_TP_ARGS(uint16_t, event_id, const char*, correlation_id, int64_t, duration,
                      int64_t, response_size, double, cpu_percent, const char*, command,
                      const char*, worker_id, const char*, result),
    LTTNG_UST_TP_FIELDS(
        lttng_ust_field_integer(uint16_t, event_id, event_id)
        lttng_ust_field_string(correlation_id, correlation_id)
        lttng_ust_field_integer(int64_t, duration, duration)
        lttng_ust_field_integer(int64_t, response_size, response_size)
        lttng_ust_field_float(double, cpu_percent, cpu_percent)
        lttng_ust_field_string(command, command)
        lttng_ust_field_string(worker_id, worker_id)
        lttng_ust_field_string(result, result)))

#endif  // PITLANE_BENCH_TP_H

#include <lttng/tracepoint-event.h>
