// The probes of pitlane_bench_tp.h, compiled once and linked into pitlane_bench.
#define LTTNG_UST_TRACEPOINT_CREATE_PROBES
#define LTTNG_UST_TRACEPOINT_DEFINE
#include "lttng/pitlane_bench_tp.h"
