/* stats.c: latency buckets at their bounds, responses counted by kind and status class, and
 * krait_server_stats summing every loop's counters (a clone loop as krait_server_run makes
 * them). Under ASan+UBSan with the other tests. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>

#include "harness.h"
#include "krait.h"
#include "server.h"
#include "stats.h"

static void test_buckets(void)
{
    ok(krait_latency_bound_us(0) == 500, "first bound 0.5 ms");
    ok(krait_latency_bound_us(KRAIT_LATENCY_BUCKETS - 2) == 10000000, "last bound 10 s");
    ok(krait_latency_bound_us(KRAIT_LATENCY_BUCKETS - 1) == -1, "+Inf has no bound");
    ok(krait_latency_bound_us(-1) == -1, "no bucket -1");
    for (int i = 1; i < KRAIT_LATENCY_BUCKETS - 1; i++)
        ok(krait_latency_bound_us(i) > krait_latency_bound_us(i - 1), "bounds rise at %d", i);
    ok(krait__latency_bucket(0) == 0, "0 ns: first bucket");
    ok(krait__latency_bucket(500000) == 0, "exactly 0.5 ms: le=0.0005");
    ok(krait__latency_bucket(500001) == 1, "just past 0.5 ms: le=0.001");
    ok(krait__latency_bucket(1000000) == 1, "exactly 1 ms: le=0.001");
    ok(krait__latency_bucket(3000000) == 3, "3 ms: le=0.005");
    ok(krait__latency_bucket(10000000000LL) == KRAIT_LATENCY_BUCKETS - 2, "exactly 10 s");
    ok(krait__latency_bucket(10000000001LL) == KRAIT_LATENCY_BUCKETS - 1, "past 10 s: +Inf");
    ok(krait__latency_bucket(INT64_MAX) == KRAIT_LATENCY_BUCKETS - 1, "INT64_MAX: +Inf");
    for (int i = 0; i < KRAIT_LATENCY_BUCKETS - 1; i++) {
        int64_t ns = krait_latency_bound_us(i) * 1000;
        ok(krait__latency_bucket(ns) == i, "bound %d is in its bucket", i);
        ok(krait__latency_bucket(ns + 1) == i + 1, "bound %d + 1 ns is in the next", i);
    }
}

static void test_counting(void)
{
    char dir[] = "/tmp/krait-stats-XXXXXX";
    if (!mkdtemp(dir)) {
        ok(0, "mkdtemp");
        return;
    }
    char err[256];
    krait_server *hub = krait_server_new(dir, err, sizeof err);
    ok(hub != NULL, "server: %s", err);
    if (!hub)
        return;
    int64_t v[KRAIT_STAT_COUNT];
    ok(krait_server_stats(hub, v, KRAIT_STAT_COUNT) == KRAIT_STAT_COUNT, "all filled");
    int zero = 1;
    for (int k = 0; k < KRAIT_STAT_COUNT; k++)
        zero &= v[k] == 0;
    ok(zero, "a new server counted nothing");

    krait__stat_response(hub, 200, KRAIT_KIND_STATIC, 100000);        /* 0.1 ms */
    krait__stat_response(hub, 404, KRAIT_KIND_STATIC, 700000);        /* 0.7 ms */
    krait__stat_response(hub, 502, KRAIT_KIND_PYTHON, 20000000);      /* 20 ms */
    krait__stat_response(hub, 101, KRAIT_KIND_WEBSOCKET, 2000000);    /* 2 ms */
    krait__stat_response(hub, 0, KRAIT_KIND_STATIC, 5);               /* no status: none */
    krait__stat_response(hub, 600, KRAIT_KIND_STATIC, 5);
    krait__stat_response(hub, 200, 7, 5);                             /* no such kind */

    /* A second loop, as krait_server_run starts them: its counters join the sums. */
    krait_server *lp = krait__server_clone(hub, 1);
    ok(lp != NULL, "clone");
    if (lp) {
        hub->loops[1] = lp;
        krait__stat_response(lp, 200, KRAIT_KIND_STATIC, 100000000000LL);  /* 100 s */
        krait__stat_response(lp, 302, KRAIT_KIND_PYTHON, 500000);
        KRAIT__STAT_ADD(lp, KRAIT_STAT_BYTES_OUT, 1234);
    }
    KRAIT__STAT_ADD(hub, KRAIT_STAT_BYTES_OUT, 66);
    krait_server_stats(hub, v, KRAIT_STAT_COUNT);
    int s = KRAIT_STAT_RESPONSES, p = s + 5 * KRAIT_KIND_PYTHON, w = s + 5 * KRAIT_KIND_WEBSOCKET;
    ok(v[s + 1] == 2, "static 2xx on both loops: %lld", (long long)v[s + 1]);
    ok(v[s + 3] == 1 && v[p + 4] == 1 && v[p + 2] == 1 && v[w + 0] == 1, "4xx, 5xx, 3xx, 1xx");
    int64_t responses = 0;
    for (int k = s; k < s + 15; k++)
        responses += v[k];
    ok(responses == 6, "six responses counted: %lld", (long long)responses);
    int64_t in_buckets = 0;
    for (int b = 0; b < KRAIT_LATENCY_BUCKETS; b++)
        in_buckets += v[KRAIT_STAT_LATENCY + b];
    ok(in_buckets == responses, "each in one bucket");
    ok(v[KRAIT_STAT_LATENCY + 0] == 2, "0.1 ms and 0.5 ms in le=0.0005");
    ok(v[KRAIT_STAT_LATENCY + 1] == 1, "0.7 ms in le=0.001");
    ok(v[KRAIT_STAT_LATENCY + 2] == 1, "2 ms in le=0.0025");
    ok(v[KRAIT_STAT_LATENCY + 5] == 1, "20 ms in le=0.025");
    ok(v[KRAIT_STAT_LATENCY + KRAIT_LATENCY_BUCKETS - 1] == 1, "100 s in +Inf");
    ok(v[KRAIT_STAT_LATENCY_SUM_US] ==
           100 + 700 + 20000 + 2000 + 100000000LL + 500, "sum of latencies (us)");
    ok(v[KRAIT_STAT_BYTES_OUT] == 1300, "bytes summed over loops");
    ok(krait_server_stat(hub, KRAIT_STAT_BYTES_OUT) == 1300, "krait_server_stat agrees");
    ok(krait_server_loop_stat(hub, 1, KRAIT_STAT_BYTES_OUT) == 1234, "one loop's own");
    ok(krait_server_stats(hub, v, 3) == 3, "a prefix");
    ok(krait_server_stats(hub, v, KRAIT_STAT_COUNT + 10) == KRAIT_STAT_COUNT, "capped");
    ok(krait_server_stats(hub, v, -1) == KRAIT_EINVAL, "negative count refused");

    /* The hub's gauges: no worker, nothing waiting. */
    krait__stat_publish_hub(hub);
    ok(krait_server_stat(hub, KRAIT_STAT_WORKERS_BUSY) == 0 &&
           krait_server_stat(hub, KRAIT_STAT_WORKERS_IDLE) == 0 &&
           krait_server_stat(hub, KRAIT_STAT_QUEUE) == 0, "no workers, no queue");
    ok(krait_server_worker_end(hub, -1) == KRAIT_EINVAL, "no slot -1");
    ok(krait_server_worker_end(hub, 0) == KRAIT_WORKER_END_RETIRED, "a fresh slot");
    krait_server_free(hub);
    rmdir(dir);
}

int main(void)
{
    test_buckets();
    test_counting();
    return done();
}
