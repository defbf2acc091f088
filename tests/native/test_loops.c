/* Several loops in one server, through real sockets: krait_server_run with 3 loops, client
 * threads pipelining a static request, a script request (no workers: it moves to the hub,
 * which answers 503) and a static one again on each connection, in order. Then a graceful
 * stop: every thread joins, every connection is closed and freed (ASan's leak check), and
 * the counters add up. Built under ASan+UBSan with the other tests, and under TSan by
 * scripts/test (the data shared between loops). */
#define _GNU_SOURCE
#include <stdint.h>

#include "loops_harness.h"

#define CLIENTS 6
#define CONNS_EACH 40

static const char reqs[] = "GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n"
                           "GET /page.py HTTP/1.1\r\nHost: a\r\n\r\n"
                           "GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n";

/* A scrape while the loops count: every counter read from another thread, as the metrics
 * listener does (ThreadSanitizer checks that nothing here is a data race). */
static int scraping = 1;
static int64_t scrapes;

static void *scraper(void *arg)
{
    int64_t v[KRAIT_STAT_COUNT];
    while (__atomic_load_n(&scraping, __ATOMIC_ACQUIRE)) {
        krait_server_stats(arg, v, KRAIT_STAT_COUNT);
        scrapes++;
        usleep(200);
    }
    return NULL;
}

int main(void)
{
    loops_site site;
    loops_site_new(&site, "/tmp/krait-loops-XXXXXX", "<p>hello from a loop</p>\n");
    krait_server *srv = site.srv;
    if (!srv)
        return done();
    ok(krait_server_set_loops(srv, 0) == KRAIT_EINVAL, "0 loops refused");
    ok(krait_server_set_loops(srv, 65) == KRAIT_EINVAL, "65 loops refused");
    ok(krait_server_set_loops(srv, 3) == KRAIT_OK, "3 loops");
    loops_clients c = {.port = loops_site_listen(&site), .reqs = reqs, .want = {200, 503, 200},
                       .conns = CONNS_EACH};

    pthread_t run, scrape;
    pthread_create(&run, NULL, runner, srv);
    pthread_create(&scrape, NULL, scraper, srv);
    int bad_answers = run_clients(&c, CLIENTS);
    krait_server_stop(srv);
    pthread_join(run, NULL);
    __atomic_store_n(&scraping, 0, __ATOMIC_RELEASE);
    pthread_join(scrape, NULL);
    ok(scrapes > 0, "scraped while serving");

    ok(bad_answers == 0, "every connection got 200, 503, 200 in order (%d did not)",
       bad_answers);
    int64_t accepted = 0, served = 0;
    for (int i = 0; i < 3; i++) {
        accepted += krait_server_loop_stat(srv, i, KRAIT_STAT_CONNS);
        served += krait_server_loop_stat(srv, i, KRAIT_STAT_REQUESTS);
    }
    ok(krait_server_loop_stat(srv, 3, KRAIT_STAT_CONNS) == -1, "no fourth loop");
    ok(accepted == CLIENTS * CONNS_EACH, "accepted %lld", (long long)accepted);
    ok(served == 3 * CLIENTS * CONNS_EACH, "each request counted once: %lld", (long long)served);
    ok(krait_server_stat(srv, KRAIT_STAT_REQUESTS) == served, "the sum is the total");
    ok(krait_server_stat(srv, KRAIT_STAT_CONNS) == 0, "no connection left open");

    /* The metrics' counters, summed over the loops: two static 200s and one 503 for the
     * script (no workers) per connection, each in one latency bucket; every byte sent. */
    int64_t v[KRAIT_STAT_COUNT];
    krait_server_stats(srv, v, KRAIT_STAT_COUNT);
    int64_t n = CLIENTS * CONNS_EACH, in_buckets = 0, responses = 0;
    ok(v[KRAIT_STAT_RESPONSES + 5 * KRAIT_KIND_STATIC + 1] == 2 * n, "static 2xx: %lld",
       (long long)v[KRAIT_STAT_RESPONSES + 5 * KRAIT_KIND_STATIC + 1]);
    ok(v[KRAIT_STAT_RESPONSES + 5 * KRAIT_KIND_PYTHON + 4] == n, "python 5xx: %lld",
       (long long)v[KRAIT_STAT_RESPONSES + 5 * KRAIT_KIND_PYTHON + 4]);
    for (int k = 0; k < 15; k++)
        responses += v[KRAIT_STAT_RESPONSES + k];
    for (int b = 0; b < KRAIT_LATENCY_BUCKETS; b++)
        in_buckets += v[KRAIT_STAT_LATENCY + b];
    ok(responses == 3 * n && in_buckets == 3 * n, "%lld responses, %lld in buckets",
       (long long)responses, (long long)in_buckets);
    ok(v[KRAIT_STAT_BYTES_IN] == n * (int64_t)(sizeof reqs - 1),
       "bytes in: %lld", (long long)v[KRAIT_STAT_BYTES_IN]);
    ok(v[KRAIT_STAT_BYTES_OUT] > 0 && v[KRAIT_STAT_LATENCY_SUM_US] > 0, "bytes out, time taken");
    ok(v[KRAIT_STAT_DRAINING] == 1, "stopped: draining");

    /* One access-log line per request, never two run together. */
    close(site.logfd);
    FILE *f = fopen(site.logpath, "r");
    char line[2048];
    int lines = 0, well_formed = 0;
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        well_formed += strstr(line, "\"GET /") != NULL && strchr(line, '\n') != NULL &&
                       strstr(strstr(line, "\"GET /") + 1, "\"GET /") == NULL;
    }
    if (f)
        fclose(f);
    ok(lines == 3 * CLIENTS * CONNS_EACH, "%d log lines", lines);
    ok(well_formed == lines, "%d of %d log lines well formed", well_formed, lines);
    loops_site_free(&site);
    return done();
}
