/* The JSON access log with three loops, through real sockets (krait_server_run): client
 * threads pipeline a static request whose target holds bytes to escape, a script request (no
 * workers: it moves to the hub, which answers 503) and a 404 on each connection. After a
 * graceful stop every line of the log must be one JSON object with the line's 17 keys
 * (json_check.h), one per request, from more than one loop. Built under ASan+UBSan with the
 * other tests, and under TSan by scripts/test (the log is what the loops share). */
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
#include "json_check.h"
#include "krait.h"

#define CLIENTS 4
#define CONNS_EACH 30
#define NLOOPS 3

static int port;
static int bad_answers;
static pthread_mutex_t bad_lock = PTHREAD_MUTEX_INITIALIZER;

static const char reqs[] =
    "GET /index.html?q=\"\\\xff\xc3\xa9 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\"\\\xfe\r\n\r\n"
    "GET /page.py HTTP/1.1\r\nHost: a\r\n\r\n"
    "HEAD /missing HTTP/1.1\r\nHost: a\r\n\r\n";
static const int want[3] = {200, 503, 404};

/* Read until three answers are in (Content-Length framed; the third is a HEAD's). */
static int read_answers(int fd)
{
    char buf[16384];
    size_t len = 0;
    int got = 0;
    while (got < 3) {
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        for (;;) {
            char *end = strstr(buf, "\r\n\r\n");
            if (!end)
                break;
            int status = 0;
            if (sscanf(buf, "HTTP/1.1 %d", &status) != 1 || status != want[got])
                return -1;
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            long body = cl && cl < end && got < 2 ? strtol(cl + 17, NULL, 10) : 0;
            size_t total = (size_t)(end + 4 - buf) + (size_t)body;
            if (len < total)
                break;
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
    for (int i = 0; i < CONNS_EACH; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        int bad = connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
                  send(fd, reqs, sizeof reqs - 1, 0) != (ssize_t)(sizeof reqs - 1) ||
                  read_answers(fd) < 0;
        close(fd);
        if (bad) {
            pthread_mutex_lock(&bad_lock);
            bad_answers++;
            pthread_mutex_unlock(&bad_lock);
        }
    }
    return NULL;
}

static void *runner(void *arg)
{
    krait_server_run(arg);
    return NULL;
}

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

static int val_is(const jc_pair *p, const char *text)
{
    return p->val_len == strlen(text) && memcmp(p->val, text, p->val_len) == 0;
}

int main(void)
{
    char dir[] = "/tmp/krait-logjson-XXXXXX";
    ok(mkdtemp(dir) != NULL, "mkdtemp");
    write_file(dir, "index.html", "<p>hello</p>\n");
    write_file(dir, "page.py", "print('never run: no workers')\n");
    char err[256] = "";
    krait_server *srv = krait_server_new(dir, err, sizeof err);
    ok(srv != NULL, "server: %s", err);
    if (!srv)
        return done();
    krait_server_add_mime(srv, "html", "text/html");
    krait_server_add_route(srv, KRAIT_VERB_GET, NULL, 0, NULL, 0);  /* HEAD too */
    ok(krait_server_set_loops(srv, NLOOPS) == KRAIT_OK, "loops");
    ok(krait_server_set_access_log_format(srv, 2) == KRAIT_EINVAL, "format 2 refused");
    ok(krait_server_set_access_log_format(srv, -1) == KRAIT_EINVAL, "format -1 refused");
    ok(krait_server_set_access_log_format(srv, KRAIT_LOG_JSON) == KRAIT_OK, "JSON");
    char logpath[600];
    snprintf(logpath, sizeof logpath, "%s/access.log", dir);
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    krait_server_set_access_log(srv, logfd);
    port = krait_server_listen(srv, "127.0.0.1", 0, 0, err, sizeof err);
    ok(port > 0, "listen: %s", err);

    pthread_t run, clients[CLIENTS];
    pthread_create(&run, NULL, runner, srv);
    for (int i = 0; i < CLIENTS; i++)
        pthread_create(&clients[i], NULL, client, NULL);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(clients[i], NULL);
    krait_server_stop(srv);
    pthread_join(run, NULL);
    ok(bad_answers == 0, "every connection got 200, 503, 404 (%d did not)", bad_answers);
    ok(krait_server_set_access_log_format(srv, KRAIT_LOG_COMBINED) == KRAIT_EINVAL,
       "the format is fixed once the loops have started");

    close(logfd);
    FILE *f = fopen(logpath, "r");
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
