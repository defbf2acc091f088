/* The counters behind the metrics listener (docs/design.md, "Metrics"). Each loop writes
 * only its own krait_server.stats, with relaxed atomic stores and no lock (nothing on the
 * static path waits for another thread); a scrape sums the loops' values with relaxed loads.
 * Gauges that only the hub knows (its workers, its wait queue) are published once a turn. */
#include "stats.h"

/* Upper bounds of the latency buckets, in microseconds: 0.5 ms to 10 s, roughly 1-2.5-5 per
 * decade, as Prometheus' default buckets (which start at 5 ms; a static file takes well under
 * a millisecond, so three more below). */
static const int64_t bounds_us[KRAIT_LATENCY_BUCKETS - 1] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
    5000000, 10000000,
};

int64_t krait_latency_bound_us(int i)
{
    if (i < 0 || i >= KRAIT_LATENCY_BUCKETS - 1)
        return -1;
    return bounds_us[i];
}

int krait__latency_bucket(int64_t ns)
{
    int i = 0;
    while (i < KRAIT_LATENCY_BUCKETS - 1 && ns > bounds_us[i] * 1000)
        i++;
    return i;
}

void krait__stat_response(struct krait_server *srv, int status, int kind, int64_t ns)
{
    if (status < 100 || status > 599 || kind < 0 || kind > KRAIT_KIND_WEBSOCKET)
        return;
    if (ns < 0)
        ns = 0;
    KRAIT__STAT_ADD(srv, KRAIT_STAT_RESPONSES + kind * 5 + status / 100 - 1, 1);
    KRAIT__STAT_ADD(srv, KRAIT_STAT_LATENCY + krait__latency_bucket(ns), 1);
    /* Microseconds: a sum in nanoseconds would pass INT64_MAX after 292 years of summed
     * latency, which long streams and many loops reach in days. */
    KRAIT__STAT_ADD(srv, KRAIT_STAT_LATENCY_SUM_US, (ns + 500) / 1000);
}

void krait__stat_publish_hub(struct krait_server *srv)
{
    int busy = 0, idle = 0;
    for (int i = 0; i < srv->nworkers; i++) {
        const krait__worker *w = &srv->workers[i];
        if (w->fd < 0)
            continue;
        if (w->njobs)
            busy++;
        else if (!w->retiring)
            idle++;
    }
    KRAIT__STAT_SET(srv, KRAIT_STAT_WORKERS_BUSY, busy);
    KRAIT__STAT_SET(srv, KRAIT_STAT_WORKERS_IDLE, idle);
    KRAIT__STAT_SET(srv, KRAIT_STAT_QUEUE, srv->nwait);
}

int krait_server_stats(krait_server *srv, int64_t *out, int n)
{
    if (!srv || !out || n < 0)
        return KRAIT_EINVAL;
    if (n > KRAIT_STAT_COUNT)
        n = KRAIT_STAT_COUNT;
    for (int k = 0; k < n; k++)
        out[k] = 0;
    for (int i = 0; i < KRAIT__MAX_LOOPS; i++) {
        krait_server *lp = __atomic_load_n(&srv->loops[i], __ATOMIC_ACQUIRE);
        if (!lp)
            continue;
        for (int k = 0; k < n; k++)
            out[k] += __atomic_load_n(&lp->stats[k], __ATOMIC_RELAXED);
    }
    if (n > KRAIT_STAT_CONNS)
        out[KRAIT_STAT_CONNS] = __atomic_load_n(&srv->total_conns, __ATOMIC_RELAXED);
    return n;
}

int krait_server_worker_end(krait_server *srv, int slot)
{
    if (slot < 0 || slot >= KRAIT__MAX_WORKERS)
        return KRAIT_EINVAL;
    return srv->workers[slot].end;
}
