/* stats.c: the counters of the metrics listener — what a loop counts per response, the
 * gauges the hub publishes, and the sums another thread reads (krait_server_stats). */
#ifndef KRAIT_STATS_H
#define KRAIT_STATS_H

#include "core.h"

/* The latency bucket of a response that took ns nanoseconds: the first whose bound is at
 * least ns (Prometheus buckets are "less than or equal"), KRAIT_LATENCY_BUCKETS - 1 (+Inf)
 * past the last bound. Sans-IO. */
int krait__latency_bucket(int64_t ns);
/* A response is out: count it by kind (KRAIT_KIND_*) and status class, and its latency.
 * A status outside 100..599 (none was set) is not counted. Owning loop only. */
void krait__stat_response(struct krait_server *srv, int status, int kind, int64_t ns);
/* The hub, at the end of a turn: workers busy and idle, requests waiting, for other threads
 * to read. */
void krait__stat_publish_hub(struct krait_server *srv);

#endif
