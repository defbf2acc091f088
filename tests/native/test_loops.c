/* Several loops in one server, through real sockets: krait_server_run with 3 loops, client
 * threads pipelining a static request, a script request (no workers: it moves to the hub,
 * which answers 503) and a static one again on each connection, in order. Then a graceful
 * stop: every thread joins, every connection is closed and freed (ASan's leak check), and
 * the counters add up. Built under ASan+UBSan with the other tests, and under TSan by
 * scripts/test (the data shared between loops). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "harness.h"
#include "krait.h"

#define CLIENTS 6
#define CONNS_EACH 40

static int port;
static int bad_answers;
static pthread_mutex_t bad_lock = PTHREAD_MUTEX_INITIALIZER;

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Read until three responses' heads and bodies are in (Content-Length framed). */
static int read_answers(int fd, int want[3])
{
    char buf[16384];
    size_t len = 0;
    int got = 0;
    while (got < 3) {
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0) {
            if (getenv("KRAIT_TEST_VERBOSE"))
                fprintf(stderr, "after %d answers: %s\n", got, n ? strerror(errno) : "EOF");
            return -1;
        }
        len += (size_t)n;
        buf[len] = '\0';
        for (;;) {
            char *end = strstr(buf, "\r\n\r\n");
            if (!end)
                break;
            int status = 0;
            if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
                return -1;
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            long body = cl && cl < end ? strtol(cl + 17, NULL, 10) : 0;
            size_t total = (size_t)(end + 4 - buf) + (size_t)body;
            if (len < total)
                break;
            if (status != want[got]) {
                if (getenv("KRAIT_TEST_VERBOSE"))
                    fprintf(stderr, "answer %d: %.300s\n", got, buf);
                return -1;
            }
            got++;
            memmove(buf, buf + total, len - total);
            len -= total;
            buf[len] = '\0';
        }
    }
    return 0;
}

static void *client(void *arg)
{
    (void)arg;
    static const char reqs[] = "GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n"
                               "GET /page.py HTTP/1.1\r\nHost: a\r\n\r\n"
                               "GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n";
    for (int i = 0; i < CONNS_EACH; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        int want[3] = {200, 503, 200};
        int bad = connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
                  send(fd, reqs, sizeof reqs - 1, 0) != (ssize_t)(sizeof reqs - 1) ||
                  read_answers(fd, want) < 0;
        close(fd);
        if (bad) {
            pthread_mutex_lock(&bad_lock);
            bad_answers++;
            pthread_mutex_unlock(&bad_lock);
        }
    }
    return NULL;
}

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

static void *runner(void *arg)
{
    krait_server_run(arg);
    return NULL;
}

int main(void)
{
    char dir[] = "/tmp/krait-loops-XXXXXX";
    ok(mkdtemp(dir) != NULL, "mkdtemp");
    write_file(dir, "index.html", "<p>hello from a loop</p>\n");
    write_file(dir, "page.py", "print('never run: no workers')\n");
    char err[256] = "";
    krait_server *srv = krait_server_new(dir, err, sizeof err);
    ok(srv != NULL, "server: %s", err);
    if (!srv)
        return done();
    krait_server_add_mime(srv, "html", "text/html");
    krait_server_add_route(srv, KRAIT_VERB_GET, NULL, 0, NULL, 0);  /* every URL by its file */
    ok(krait_server_set_loops(srv, 0) == KRAIT_EINVAL, "0 loops refused");
    ok(krait_server_set_loops(srv, 65) == KRAIT_EINVAL, "65 loops refused");
    ok(krait_server_set_loops(srv, 3) == KRAIT_OK, "3 loops");
    char logpath[600];
    snprintf(logpath, sizeof logpath, "%s/access.log", dir);
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    krait_server_set_access_log(srv, logfd);
    port = krait_server_listen(srv, "127.0.0.1", 0, 0, err, sizeof err);
    ok(port > 0, "listen: %s", err);

    pthread_t run, scrape, clients[CLIENTS];
    pthread_create(&run, NULL, runner, srv);
    pthread_create(&scrape, NULL, scraper, srv);
    for (int i = 0; i < CLIENTS; i++)
        pthread_create(&clients[i], NULL, client, NULL);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(clients[i], NULL);
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
    ok(v[KRAIT_STAT_BYTES_IN] == n * (int64_t)(sizeof "GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n"
                                               "GET /page.py HTTP/1.1\r\nHost: a\r\n\r\n"
                                               "GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n" - 1),
       "bytes in: %lld", (long long)v[KRAIT_STAT_BYTES_IN]);
    ok(v[KRAIT_STAT_BYTES_OUT] > 0 && v[KRAIT_STAT_LATENCY_SUM_US] > 0, "bytes out, time taken");
    ok(v[KRAIT_STAT_DRAINING] == 1, "stopped: draining");

    /* One access-log line per request, never two run together. */
    close(logfd);
    FILE *f = fopen(logpath, "r");
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
    krait_server_free(srv);
    unlink(logpath);
    char p[600];
    snprintf(p, sizeof p, "%s/index.html", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/page.py", dir);
    unlink(p);
    rmdir(dir);
    return done();
}
