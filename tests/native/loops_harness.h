/* What the tests that run a server's loops through real sockets share (test_loops.c,
 * test_logjson_loops.c, test_listen.c): the thread that runs the server, site files, a server
 * for a site that serves every GET by its file, a temporary site with an access log (index.html
 * and a page.py that no worker runs), and client threads that each open connections that
 * pipeline three requests and check the three answers' statuses, in order. Set
 * KRAIT_TEST_VERBOSE to see why a connection failed. */
#ifndef KRAIT_TEST_LOOPS_HARNESS_H
#define KRAIT_TEST_LOOPS_HARNESS_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "harness.h"
#include "krait.h"

/* krait_server_run(arg), as a thread's body. */
__attribute__((unused)) static void *runner(void *arg)
{
    krait_server_run(arg);
    return NULL;
}

__attribute__((unused)) static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* A server for the site in dir (a failed check and NULL if there is none): .html files as
 * text/html, every GET (and so HEAD) served by its file. */
__attribute__((unused)) static krait_server *site_server(const char *dir, char *err,
                                                         size_t err_len)
{
    krait_server *srv = krait_server_new(dir, err, err_len);
    ok(srv != NULL, "server: %s", err);
    if (!srv)
        return NULL;
    krait_server_add_mime(srv, "html", "text/html");
    krait_server_add_route(srv, KRAIT_VERB_GET, NULL, 0, NULL, 0);
    return srv;
}

/* A site in a new temporary directory: index.html, and page.py, which has no workers to run
 * it (the hub answers 503); its server (site_server), and its access log at access.log, set
 * by loops_site_listen. */
typedef struct {
    char dir[64];
    char logpath[600];
    int logfd;
    krait_server *srv;
} loops_site;

/* The site and its server from a mkdtemp template; srv is NULL when it could not be made. */
__attribute__((unused)) static void loops_site_new(loops_site *s, const char *tmpl,
                                                   const char *index_html)
{
    snprintf(s->dir, sizeof s->dir, "%s", tmpl);
    ok(mkdtemp(s->dir) != NULL, "mkdtemp");
    char path[600];
    snprintf(path, sizeof path, "%s/index.html", s->dir);
    write_file(path, index_html);
    snprintf(path, sizeof path, "%s/page.py", s->dir);
    write_file(path, "print('never run: no workers')\n");
    snprintf(s->logpath, sizeof s->logpath, "%s/access.log", s->dir);
    s->logfd = -1;
    char err[256] = "";
    s->srv = site_server(s->dir, err, sizeof err);
}

/* Open the access log and give it to the server, then listen on 127.0.0.1 (a free port):
 * the port, checked. */
__attribute__((unused)) static int loops_site_listen(loops_site *s)
{
    s->logfd = open(s->logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    krait_server_set_access_log(s->srv, s->logfd);
    char err[256] = "";
    int port = krait_server_listen(s->srv, "127.0.0.1", 0, 0, err, sizeof err);
    ok(port > 0, "listen: %s", err);
    return port;
}

/* Free the server and remove the site (the caller has closed logfd). */
__attribute__((unused)) static void loops_site_free(loops_site *s)
{
    krait_server_free(s->srv);
    unlink(s->logpath);
    char p[600];
    snprintf(p, sizeof p, "%s/index.html", s->dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/page.py", s->dir);
    unlink(p);
    rmdir(s->dir);
}

/* Client threads: each makes `conns` connections to 127.0.0.1:port, one after the other, each
 * sending the three pipelined requests `reqs` at once and reading the three answers. */
typedef struct {
    int port;
    const char *reqs;
    int want[3];   /* the answers' statuses, in order */
    int head_last; /* the third request is a HEAD: its answer's Content-Length has no body */
    int conns;
    int bad;       /* the connections that did not get them (under lock) */
    pthread_mutex_t lock;
} loops_clients;

/* Read until three answers' heads and bodies are in (Content-Length framed), each with its
 * status in want. */
__attribute__((unused)) static int read_answers(int fd, const int want[3], int head_last)
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
            int has_body = !(head_last && got == 2);
            long body = cl && cl < end && has_body ? strtol(cl + 17, NULL, 10) : 0;
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

__attribute__((unused)) static void *loops_client(void *arg)
{
    loops_clients *c = arg;
    size_t n = strlen(c->reqs);
    for (int i = 0; i < c->conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        int bad = connect(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
                  send(fd, c->reqs, n, 0) != (ssize_t)n ||
                  read_answers(fd, c->want, c->head_last) < 0;
        close(fd);
        if (bad) {
            pthread_mutex_lock(&c->lock);
            c->bad++;
            pthread_mutex_unlock(&c->lock);
        }
    }
    return NULL;
}

/* Run `threads` client threads (at most 64) to the end; the connections that failed. */
__attribute__((unused)) static int run_clients(loops_clients *c, int threads)
{
    pthread_t t[64];
    pthread_mutex_init(&c->lock, NULL);
    c->bad = 0;
    for (int i = 0; i < threads && i < 64; i++)
        pthread_create(&t[i], NULL, loops_client, c);
    for (int i = 0; i < threads && i < 64; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&c->lock);
    return c->bad;
}

#endif
