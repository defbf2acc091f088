/* Harder traffic for several loops (run under ASan and under TSan): 3 loops and 2 fake
 * workers (a thread answering worker frames on socketpairs), so that a keep-alive connection
 * alternating a Python page and a static file is handed to the hub and back home on every
 * request (move_conn / adopt_moved / maybe_go_home). Clients also pipeline, fetch a large file
 * (send backpressure, TL_SEND timers), and reset connections mid-answer. The event callback
 * takes a lock, as Python's takes the GIL. Phase 2 stops the server
 * while such traffic is still running: moves in flight while the loops drain and end. Checks:
 * every answer in order, no connection left open (total_conns back to 0), no leak (ASan), no
 * data race (TSan). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "harness.h"
#include "krait.h"

#define CLIENTS 6
#define CONNS_EACH 12
#define ROUNDS 12
#define NWORKERS 2

static int port;
static char site[64];
static int bad_answers, phase2_running = 1;
static pthread_mutex_t bad_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t fake_gil = PTHREAD_MUTEX_INITIALIZER;
static int worker_fds[NWORKERS];
static int worker_stop_fd[2];

static void bad(const char *what, int k)
{
    if (getenv("KRAIT_TEST_VERBOSE"))
        fprintf(stderr, "client %d: %s\n", k, what);
    pthread_mutex_lock(&bad_lock);
    bad_answers++;
    pthread_mutex_unlock(&bad_lock);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static void write_file(const char *name, const char *data, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", site, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

/* ---- the fake workers: answer every request frame (type 1) with 200 "py" ----------------- */

static void send_all_fd(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EAGAIN) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            poll(&pf, 1, 100);
            continue;
        }
        if (r <= 0)
            return;
        p += r;
        n -= (size_t)r;
    }
}

static void *worker_thread(void *arg)
{
    (void)arg;
    static uint8_t in[NWORKERS][1 << 16];
    size_t in_len[NWORKERS] = {0};
    for (;;) {
        struct pollfd pf[NWORKERS + 1];
        for (int i = 0; i < NWORKERS; i++)
            pf[i] = (struct pollfd){.fd = worker_fds[i], .events = POLLIN};
        pf[NWORKERS] = (struct pollfd){.fd = worker_stop_fd[0], .events = POLLIN};
        if (poll(pf, NWORKERS + 1, 1000) < 0)
            continue;
        if (pf[NWORKERS].revents)
            return NULL;
        for (int i = 0; i < NWORKERS; i++) {
            if (!pf[i].revents)
                continue;
            ssize_t n = recv(worker_fds[i], in[i] + in_len[i], sizeof in[i] - in_len[i], 0);
            if (n == 0)
                return NULL;
            if (n < 0)
                continue;
            in_len[i] += (size_t)n;
            size_t off = 0;
            while (in_len[i] - off >= 9) {
                uint8_t *f = in[i] + off;
                uint32_t len = (uint32_t)f[0] | (uint32_t)f[1] << 8 | (uint32_t)f[2] << 16 |
                               (uint32_t)f[3] << 24;
                if (len + 4 > in_len[i] - off)
                    break;
                if (f[4] == 1) {
                    uint8_t a[32];
                    size_t o = 9;
                    a[o++] = 200, a[o++] = 0;  /* status */
                    a[o++] = 0;                /* inline body */
                    a[o++] = 0, a[o++] = 0;    /* no headers */
                    put_u32(a + o, 2), memcpy(a + o + 4, "py", 2), o += 6;
                    a[4] = 2;
                    memcpy(a + 5, f + 5, 4);  /* the request's id */
                    put_u32(a, (uint32_t)(o - 4));
                    send_all_fd(worker_fds[i], a, o);
                }
                off += len + 4;
            }
            memmove(in[i], in[i] + off, in_len[i] - off);
            in_len[i] -= off;
        }
    }
}

/* ---- callbacks ----------------------------------------------------------------------------- */

static void event_cb(void *ud, int kind, int a, int b)
{
    (void)ud, (void)kind, (void)a, (void)b;
    pthread_mutex_lock(&fake_gil);
    pthread_mutex_unlock(&fake_gil);
}

/* ---- clients ------------------------------------------------------------------------------- */

static int connect_to(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read one response; its status, and the body length in *blen. -1: EOF or garbage. */
static int read_answer(int fd, char *buf, size_t cap, size_t *len, size_t *blen)
{
    for (;;) {
        buf[*len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            int status = 0;
            if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
                return -1;
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            size_t body = cl && cl < end ? (size_t)strtol(cl + 17, NULL, 10) : 0;
            size_t head = (size_t)(end + 4 - buf);
            /* Large bodies are drained without keeping them. */
            if (*len > head + body)
                return -1;  /* more than one answer: never asked for */
            while (*len < head + body) {
                char tmp[65536];
                size_t want = head + body - *len;
                ssize_t n = recv(fd, tmp, want < sizeof tmp ? want : sizeof tmp, 0);
                if (n <= 0)
                    return -1;
                *len += (size_t)n;
            }
            *blen = body;
            *len = 0;  /* one answer at a time: callers don't pipeline past what they read */
            return status;
        }
        if (*len + 1 >= cap)
            return -1;
        ssize_t n = recv(fd, buf + *len, cap - 1 - *len, 0);
        if (n <= 0)
            return -1;
        *len += (size_t)n;
    }
}

static int request(int fd, const char *path, int want_status, size_t want_len)
{
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        return -1;
    char buf[8192];
    size_t len = 0, blen = 0;
    int st = read_answer(fd, buf, sizeof buf, &len, &blen);
    return st == want_status && blen == want_len ? 0 : -1;
}

#define BIG_LEN (512 * 1024)

static void one_connection(int k, int i, int stopping)
{
    int fd = connect_to();
    if (fd < 0) {
        if (!stopping)
            bad("connect", k);
        return;
    }
    unsigned seed = (unsigned)(k * 1000 + i);
    for (int r = 0; r < ROUNDS; r++) {
        int what = (int)(rand_r(&seed) % 10);
        int rc = 0;
        if (what < 4) {
            rc = request(fd, "/page.py", 200, 2);     /* moves to the hub */
        } else if (what < 8) {
            rc = request(fd, "/a.txt", 200, 13);      /* home again, then static */
        } else if (what == 8) {
            rc = request(fd, "/big.bin", 200, BIG_LEN);
        } else {
            /* A reset in the middle of an answer (or of a move). */
            const char *req = (rand_r(&seed) & 1) ? "GET /page.py HTTP/1.1\r\nHost: a\r\n\r\n"
                                                   : "GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n";
            send(fd, req, strlen(req), MSG_NOSIGNAL);
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(fd);
            return;
        }
        if (rc < 0) {
            if (!stopping)
                bad("answer", k);
            break;
        }
    }
    close(fd);
}

static void *client(void *arg)
{
    int k = (int)(intptr_t)arg;
    for (int i = 0; i < CONNS_EACH; i++)
        one_connection(k, i, 0);
    return NULL;
}

static void *client_until_stopped(void *arg)
{
    int k = (int)(intptr_t)arg;
    for (int i = 0; __atomic_load_n(&phase2_running, __ATOMIC_ACQUIRE) && i < 1000; i++)
        one_connection(k, i, 1);
    return NULL;
}

static void *runner(void *arg)
{
    krait_server_run(arg);
    return NULL;
}

static krait_server *make_server(void)
{
    char err[256] = "";
    krait_server *srv = krait_server_new(site, err, sizeof err);
    ok(srv != NULL, "server: %s", err);
    if (!srv)
        return NULL;
    krait_server_add_mime(srv, "txt", "text/plain");
    krait_server_add_route(srv, KRAIT_VERB_GET, NULL, 0, NULL, 0);
    krait_server_set_loops(srv, 3);
    krait_server_set_callbacks(srv, event_cb, NULL);
    krait_server_set_limit(srv, KRAIT_LIMIT_DRAIN, 2000);
    port = krait_server_listen(srv, "127.0.0.1", 0, 0, err, sizeof err);
    ok(port > 0, "listen: %s", err);
    for (int i = 0; i < NWORKERS; i++) {
        int sv[2];
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
        ok(krait_server_add_worker(srv, sv[0], 0, -1) >= 0, "worker %d", i);
        worker_fds[i] = sv[1];
    }
    return srv;
}

int main(void)
{
    snprintf(site, sizeof site, "/tmp/krait-loops-stress-XXXXXX");
    ok(mkdtemp(site) != NULL, "mkdtemp");
    write_file("a.txt", "hello, world\n", 13);
    write_file("page.py", "print('hi')\n", 12);
    char *big = malloc(BIG_LEN);
    memset(big, 'b', BIG_LEN);
    write_file("big.bin", big, BIG_LEN);
    free(big);

    /* Phase 1: traffic, then a graceful stop once every client is done. */
    krait_server *srv = make_server();
    if (!srv)
        return done();
    pipe(worker_stop_fd);
    pthread_t run, wt, clients[CLIENTS];
    pthread_create(&wt, NULL, worker_thread, NULL);
    pthread_create(&run, NULL, runner, srv);
    for (int i = 0; i < CLIENTS; i++)
        pthread_create(&clients[i], NULL, client, (void *)(intptr_t)i);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(clients[i], NULL);
    ok(bad_answers == 0, "phase 1: every answer right (%d were not)", bad_answers);
    for (int i = 0; i < 3; i++) {
        int64_t r = krait_server_loop_stat(srv, i, KRAIT_STAT_REQUESTS);
        if (getenv("KRAIT_TEST_VERBOSE"))
            fprintf(stderr, "loop %d: %lld requests on %lld connections\n", i, (long long)r,
                    (long long)krait_server_loop_stat(srv, i, KRAIT_STAT_CONNS));
        ok(r > 0, "loop %d served requests (connections went home)", i);
    }
    /* The server notices the resets and closes: no connection stays counted. */
    int64_t open_now = -1;
    for (int t = 0; t < 200 && (open_now = krait_server_stat(srv, KRAIT_STAT_CONNS)) != 0; t++)
        usleep(10000);
    ok(open_now == 0, "phase 1: total_conns back to 0 (%lld)", (long long)open_now);
    krait_server_stop(srv);
    pthread_join(run, NULL);
    ok(krait_server_stat(srv, KRAIT_STAT_CONNS) == 0, "phase 1: none left after stop");
    write(worker_stop_fd[1], "x", 1);
    pthread_join(wt, NULL);
    krait_server_free(srv);
    for (int i = 0; i < NWORKERS; i++)
        close(worker_fds[i]);
    close(worker_stop_fd[0]);
    close(worker_stop_fd[1]);

    /* Phase 2: stop while the same traffic runs (moves in flight as the loops drain). */
    srv = make_server();
    if (!srv)
        return done();
    pipe(worker_stop_fd);
    pthread_create(&wt, NULL, worker_thread, NULL);
    pthread_create(&run, NULL, runner, srv);
    for (int i = 0; i < CLIENTS; i++)
        pthread_create(&clients[i], NULL, client_until_stopped, (void *)(intptr_t)i);
    usleep(300000);
    krait_server_stop(srv);
    pthread_join(run, NULL);
    __atomic_store_n(&phase2_running, 0, __ATOMIC_RELEASE);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(clients[i], NULL);
    ok(krait_server_stat(srv, KRAIT_STAT_CONNS) == 0, "phase 2: total_conns 0 after the stop (%lld)",
       (long long)krait_server_stat(srv, KRAIT_STAT_CONNS));
    write(worker_stop_fd[1], "x", 1);
    pthread_join(wt, NULL);
    krait_server_free(srv);
    for (int i = 0; i < NWORKERS; i++)
        close(worker_fds[i]);

    char p[128];
    const char *names[] = {"a.txt", "page.py", "big.bin"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", site, names[i]);
        unlink(p);
    }
    rmdir(site);
    return done();
}
