/* The JSON access log with three loops, through real sockets (krait_server_run): client
 * threads pipeline a static request whose target holds bytes to escape, a script request (no
 * workers: it moves to the hub, which answers 503) and a 404 on each connection. After a
 * graceful stop every line of the log must be one JSON object with the line's 17 keys
 * (json_check.h), one per request, from more than one loop. Built under ASan+UBSan with the
 * other tests, and under TSan by scripts/test (the log is what the loops share). */
#define _GNU_SOURCE
#include "loops_harness.h"
#include "json_check.h"

#define CLIENTS 4
#define CONNS_EACH 30
#define NLOOPS 3

static const char reqs[] =
    "GET /index.html?q=\"\\\xff\xc3\xa9 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\"\\\xfe\r\n\r\n"
    "GET /page.py HTTP/1.1\r\nHost: a\r\n\r\n"
    "HEAD /missing HTTP/1.1\r\nHost: a\r\n\r\n";
static const int want[3] = {200, 503, 404};

static int val_is(const jc_pair *p, const char *text)
{
    return p->val_len == strlen(text) && memcmp(p->val, text, p->val_len) == 0;
}

int main(void)
{
    loops_site site;
    loops_site_new(&site, "/tmp/krait-logjson-XXXXXX", "<p>hello</p>\n");
    krait_server *srv = site.srv;
    if (!srv)
        return done();
    ok(krait_server_set_loops(srv, NLOOPS) == KRAIT_OK, "loops");
    ok(krait_server_set_access_log_format(srv, 2) == KRAIT_EINVAL, "format 2 refused");
    ok(krait_server_set_access_log_format(srv, -1) == KRAIT_EINVAL, "format -1 refused");
    ok(krait_server_set_access_log_format(srv, KRAIT_LOG_JSON) == KRAIT_OK, "JSON");
    loops_clients c = {.port = loops_site_listen(&site), .reqs = reqs,
                       .want = {want[0], want[1], want[2]}, .head_last = 1,
                       .conns = CONNS_EACH};

    pthread_t run;
    pthread_create(&run, NULL, runner, srv);
    int bad_answers = run_clients(&c, CLIENTS);
    krait_server_stop(srv);
    pthread_join(run, NULL);
    ok(bad_answers == 0, "every connection got 200, 503, 404 (%d did not)", bad_answers);
    ok(krait_server_set_access_log_format(srv, KRAIT_LOG_COMBINED) == KRAIT_EINVAL,
       "the format is fixed once the loops have started");

    close(site.logfd);
    FILE *f = fopen(site.logpath, "r");
    static char line[8192];
    int lines = 0, valid = 0, per_status[3] = {0}, per_loop[NLOOPS] = {0};
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        jc_pair p[32];
        if (jc_line(line, strlen(line), p, 32) != 18)
            continue;
        valid++;
        /* 14: loop, 11: status, 4: path, 15: worker (no worker ever answers here). */
        long loop = strtol(p[14].val, NULL, 10);
        if (loop >= 0 && loop < NLOOPS)
            per_loop[loop]++;
        for (int k = 0; k < 3; k++) {
            char st[8];
            snprintf(st, sizeof st, "%d", want[k]);
            per_status[k] += val_is(&p[11], st);
        }
        ok(p[15].type == JC_NULL, "no worker: %s", line);
        if (val_is(&p[11], "200"))
            ok(val_is(&p[4], "/index.html?q=\\\"\\\\x5c\\\\xff\xc3\xa9") &&
                   val_is(&p[8], "t\\\"\\\\x5c\\\\xfe"), "escaped: %s", line);
    }
    if (f)
        fclose(f);
    int total = 3 * CLIENTS * CONNS_EACH;
    ok(lines == total && valid == lines, "%d lines, %d valid JSON, of %d", lines, valid, total);
    for (int k = 0; k < 3; k++)
        ok(per_status[k] == CLIENTS * CONNS_EACH, "%d lines of %d", per_status[k], want[k]);
    int loops_seen = 0;
    for (int l = 0; l < NLOOPS; l++)
        loops_seen += per_loop[l] > 0;
    ok(loops_seen > 1, "lines from %d loops", loops_seen);
    loops_site_free(&site);
    return done();
}
