/* tlsload: new TLS connections per second, for bench/loops.py.
 *
 *   tlsload --port P --path /small.txt --body FILE --connections N --duration D [--warmup W]
 *           [--threads T] [--ca CA.pem]
 *
 * N connections in flight, spread over T threads (one epoll loop each, non-blocking sockets).
 * Each connection: a TCP connect, a full TLS handshake, one "GET PATH" with "Connection:
 * close", the whole response read up to the server's close, then close. Then the next one.
 * Counts the connections completed in the D seconds after W seconds of warm-up.
 *
 * Never a resumed session: the client keeps no session cache (SSL_SESS_CACHE_OFF), asks for no
 * ticket (SSL_OP_NO_TICKET) and never calls SSL_set_session; every completed connection is
 * checked with SSL_session_reused() and a resumed one is an error. Every response must be
 * "HTTP/1.x 200" with a Content-Length equal to FILE's size and a body equal to FILE, byte for
 * byte. With --ca the server's certificate is verified against that CA for the address HOST
 * (costs the client one more RSA verification; off by default, the driver proves the
 * certificate once with openssl s_client instead).
 *
 * The server closes first (Connection: close), so the TIME_WAIT sockets are the server's and
 * the client never runs out of local ports.
 *
 * Output on stdout: "TLSLOAD_T0" when the measured window opens, "TLSLOAD_T1" when it closes
 * (the driver samples the server's CPU times then), and one "TLSLOAD_JSON {...}" line. After
 * T1 no new connection is started; those in flight are finished (not counted), at most 5 s.
 * Errors are counted over the whole run, warm-up and drain included (the first of each kind is
 * described in the JSON); the exit status is 2 when there was one, 1 for a usage or set-up
 * error.
 * Build: gcc -O2 -Wall -Wextra -Werror -o tlsload tlsload.c -lssl -lcrypto -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HIST_US 1000000 /* latency histogram: 1 µs buckets up to 1 s, then one overflow */
#define MAX_HEAD 8192
#define DRAIN_NS 5000000000LL

enum { PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_STOP };
enum { ST_CONNECTING, ST_HANDSHAKE, ST_WRITE, ST_READ };
enum { E_CONNECT, E_HANDSHAKE, E_IO, E_RESPONSE, E_RESUMED, E_N };
static const char *const err_names[E_N] = {"connect", "handshake", "io", "response", "resumed"};

typedef struct {
    int fd, state, events;
    SSL *ssl;
    int64_t start_ns;
    size_t got, sent;
    char *buf; /* the response: head + body */
} conn_t;

typedef struct {
    pthread_t tid;
    int epfd, nconns, live;
    conn_t *conns;
    uint64_t done, errors[E_N];
    uint32_t *hist;
    uint64_t hist_over;
} worker_t;

static struct {
    const char *host, *path, *body_path, *ca;
    int port, conns, threads, duration, warmup;
} opt = {"127.0.0.1", "/small.txt", NULL, NULL, 0, 32, 1, 10, 2};

static SSL_CTX *ctx;
static struct sockaddr_in addr;
static char *request;
static size_t request_len;
static char *body;
static size_t body_len, buf_cap;
static int phase = PH_WARMUP;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_err[E_N][256];
static char negotiated[160];

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int get_phase(void) { return __atomic_load_n(&phase, __ATOMIC_ACQUIRE); }

static void note_error(worker_t *w, int kind, const char *fmt, const char *detail)
{
    __atomic_add_fetch(&w->errors[kind], 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&err_lock);
    if (!first_err[kind][0]) {
        char ssl_err[160] = "";
        unsigned long e = ERR_peek_last_error();
        if (e)
            ERR_error_string_n(e, ssl_err, sizeof ssl_err);
        snprintf(first_err[kind], sizeof first_err[kind], "%s%s%s%s", fmt, detail ? detail : "",
                 *ssl_err ? "; " : "", ssl_err);
    }
    pthread_mutex_unlock(&err_lock);
    ERR_clear_error();
}

static void conn_free(worker_t *w, conn_t *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    w->live--;
}

static void want(worker_t *w, conn_t *c, int events)
{
    if (events == c->events)
        return;
    struct epoll_event ev = {.events = (uint32_t)events, .data.ptr = c};
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

/* A new connection in slot c (none once the window has closed). */
static void conn_start(worker_t *w, conn_t *c)
{
    if (get_phase() >= PH_DRAIN)
        return;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        note_error(w, E_CONNECT, "socket: ", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    w->live++;
    c->start_ns = now_ns();
    c->got = c->sent = 0;
    c->state = ST_CONNECTING;
    c->events = EPOLLOUT;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        note_error(w, E_CONNECT, "connect: ", strerror(errno));
        close(c->fd);
        c->fd = -1;
        w->live--;
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void conn_fail(worker_t *w, conn_t *c, int kind, const char *what, const char *detail)
{
    note_error(w, kind, what, detail);
    conn_free(w, c);
    conn_start(w, c);
}

/* The whole response is in c->buf: 200, the right length and body. */
static int response_ok(conn_t *c, char *why, size_t whylen)
{
    char *end = memmem(c->buf, c->got, "\r\n\r\n", 4);
    if (!end) {
        snprintf(why, whylen, "no end of head in %zu bytes", c->got);
        return 0;
    }
    size_t head = (size_t)(end - c->buf) + 4;
    if (c->got < 12 || memcmp(c->buf, "HTTP/1.", 7) != 0 || memcmp(c->buf + 8, " 200 ", 5) != 0) {
        snprintf(why, whylen, "status line %.40s", c->buf);
        return 0;
    }
    const char *cl = NULL;
    for (char *p = c->buf; p < end; p++)
        if ((p == c->buf || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) {
            cl = p + 15;
            break;
        }
    if (!cl || strtoull(cl, NULL, 10) != body_len) {
        snprintf(why, whylen, "Content-Length %s, expected %zu", cl ? "differs" : "missing",
                 body_len);
        return 0;
    }
    if (c->got - head != body_len || memcmp(c->buf + head, body, body_len) != 0) {
        snprintf(why, whylen, "body of %zu bytes differs from the file's %zu", c->got - head,
                 body_len);
        return 0;
    }
    return 1;
}

static void conn_done(worker_t *w, conn_t *c)
{
    char why[200];
    if (SSL_session_reused(c->ssl)) {
        conn_fail(w, c, E_RESUMED, "a session was resumed", NULL);
        return;
    }
    if (!response_ok(c, why, sizeof why)) {
        conn_fail(w, c, E_RESPONSE, "bad response: ", why);
        return;
    }
    if (!negotiated[0]) {
        pthread_mutex_lock(&err_lock);
        if (!negotiated[0]) {
            EVP_PKEY *pk = NULL;
            X509 *cert = SSL_get1_peer_certificate(c->ssl);
            if (cert)
                pk = X509_get0_pubkey(cert);
            snprintf(negotiated, sizeof negotiated, "%s %s, server key %s %d bits",
                     SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl),
                     pk ? OBJ_nid2sn(EVP_PKEY_get_base_id(pk)) : "?",
                     pk ? EVP_PKEY_get_bits(pk) : 0);
            X509_free(cert);
        }
        pthread_mutex_unlock(&err_lock);
    }
    if (get_phase() == PH_MEASURE) {
        w->done++;
        int64_t us = (now_ns() - c->start_ns) / 1000;
        if (us < HIST_US)
            w->hist[us]++;
        else
            w->hist_over++;
    }
    conn_free(w, c);
    conn_start(w, c);
}

static void ssl_wait(worker_t *w, conn_t *c, int r, int kind, const char *what)
{
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        want(w, c, EPOLLIN);
    else if (e == SSL_ERROR_WANT_WRITE)
        want(w, c, EPOLLOUT);
    else
        conn_fail(w, c, kind, what,
                  e == SSL_ERROR_SYSCALL ? (errno ? strerror(errno) : "EOF") : "SSL error");
}

static void conn_step(worker_t *w, conn_t *c)
{
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_fail(w, c, E_CONNECT, "connect: ", strerror(err));
            return;
        }
        c->ssl = SSL_new(ctx);
        if (!c->ssl) {
            conn_fail(w, c, E_HANDSHAKE, "SSL_new failed", NULL);
            return;
        }
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_connect_state(c->ssl);
        if (opt.ca)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), opt.host);
        c->state = ST_HANDSHAKE;
    }
    if (c->state == ST_HANDSHAKE) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            ssl_wait(w, c, r, E_HANDSHAKE, "handshake: ");
            return;
        }
        c->state = ST_WRITE;
    }
    if (c->state == ST_WRITE) {
        while (c->sent < request_len) {
            int r = SSL_write(c->ssl, request + c->sent, (int)(request_len - c->sent));
            if (r <= 0) {
                ssl_wait(w, c, r, E_IO, "write: ");
                return;
            }
            c->sent += (size_t)r;
        }
        c->state = ST_READ;
    }
    for (;;) {
        if (c->got == buf_cap) {
            conn_fail(w, c, E_RESPONSE, "response longer than expected", NULL);
            return;
        }
        int r = SSL_read(c->ssl, c->buf + c->got, (int)(buf_cap - c->got));
        if (r > 0) {
            c->got += (size_t)r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0) ||
            (e == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_last_error()) ==
                                       SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
            ERR_clear_error();
            conn_done(w, c); /* the server closed: the response is complete */
            return;
        }
        ssl_wait(w, c, r, E_IO, "read: ");
        return;
    }
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    struct epoll_event evs[256];
    for (int i = 0; i < w->nconns; i++) {
        w->conns[i].fd = -1;
        w->conns[i].buf = malloc(buf_cap);
        if (!w->conns[i].buf) {
            perror("malloc");
            exit(1);
        }
        conn_start(w, &w->conns[i]);
    }
    for (;;) {
        int ph = get_phase();
        if (ph == PH_STOP || (ph == PH_DRAIN && w->live == 0))
            break;
        int n = epoll_wait(w->epfd, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->fd >= 0)
                conn_step(w, c);
        }
    }
    for (int i = 0; i < w->nconns; i++)
        if (w->conns[i].fd >= 0)
            conn_free(w, &w->conns[i]);
    return NULL;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void usage(void)
{
    fprintf(stderr, "usage: tlsload --port P --body FILE [--host 127.0.0.1] [--path /small.txt] "
                    "[--connections 32] [--threads 1] [--duration 10] [--warmup 2] [--ca CA]\n");
    exit(1);
}

static void read_body(void)
{
    FILE *f = fopen(opt.body_path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) < 0) {
        perror(opt.body_path);
        exit(1);
    }
    body_len = (size_t)st.st_size;
    body = malloc(body_len + 1);
    if (!body || fread(body, 1, body_len, f) != body_len) {
        fprintf(stderr, "reading %s failed\n", opt.body_path);
        exit(1);
    }
    fclose(f);
    buf_cap = body_len + MAX_HEAD;
}

static double percentile(uint32_t *hist, uint64_t over, uint64_t total, double q)
{
    if (!total)
        return 0;
    uint64_t want_n = (uint64_t)(q * (double)total + 0.5), seen = 0;
    if (want_n == 0)
        want_n = 1;
    for (int i = 0; i < HIST_US; i++) {
        seen += hist[i];
        if (seen >= want_n)
            return i / 1000.0;
    }
    (void)over;
    return HIST_US / 1000.0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},     {"path", 1, 0, 'P'},
        {"body", 1, 0, 'b'},     {"connections", 1, 0, 'c'}, {"threads", 1, 0, 't'},
        {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'w'},   {"ca", 1, 0, 'C'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'P': opt.path = optarg; break;
        case 'b': opt.body_path = optarg; break;
        case 'c': opt.conns = atoi(optarg); break;
        case 't': opt.threads = atoi(optarg); break;
        case 'd': opt.duration = atoi(optarg); break;
        case 'w': opt.warmup = atoi(optarg); break;
        case 'C': opt.ca = optarg; break;
        default: usage();
        }
    }
    if (opt.port <= 0 || !opt.body_path || opt.conns < 1 || opt.threads < 1 ||
        opt.threads > opt.conns || opt.duration < 1 || opt.warmup < 0)
        usage();
    read_body();
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) {
        fprintf(stderr, "bad IPv4 address %s\n", opt.host);
        return 1;
    }
    request_len = (size_t)asprintf(&request, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: "
                                             "close\r\n\r\n", opt.path, opt.host, opt.port);

    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        fprintf(stderr, "SSL_CTX_new failed\n");
        return 1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (opt.ca) {
        if (SSL_CTX_load_verify_locations(ctx, opt.ca, NULL) != 1) {
            fprintf(stderr, "cannot load CA %s\n", opt.ca);
            return 1;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }

    worker_t *ws = calloc((size_t)opt.threads, sizeof *ws);
    for (int t = 0; t < opt.threads; t++) {
        worker_t *w = &ws[t];
        w->nconns = opt.conns / opt.threads + (t < opt.conns % opt.threads);
        w->conns = calloc((size_t)w->nconns, sizeof *w->conns);
        w->hist = calloc(HIST_US, sizeof *w->hist);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (!w->conns || !w->hist || w->epfd < 0) {
            perror("setting up");
            return 1;
        }
    }
    for (int t = 0; t < opt.threads; t++)
        pthread_create(&ws[t].tid, NULL, worker_main, &ws[t]);

    sleep_ns((int64_t)opt.warmup * 1000000000LL);
    uint64_t err0[E_N] = {0};
    for (int t = 0; t < opt.threads; t++)
        for (int k = 0; k < E_N; k++)
            err0[k] += __atomic_load_n(&ws[t].errors[k], __ATOMIC_RELAXED);
    double cpu0 = cpu_s();
    int64_t t0 = now_ns();
    __atomic_store_n(&phase, PH_MEASURE, __ATOMIC_RELEASE);
    printf("TLSLOAD_T0\n");
    fflush(stdout);
    sleep_ns((int64_t)opt.duration * 1000000000LL);
    __atomic_store_n(&phase, PH_DRAIN, __ATOMIC_RELEASE);
    int64_t t1 = now_ns();
    double cpu1 = cpu_s();
    printf("TLSLOAD_T1\n");
    fflush(stdout);

    /* Let the threads finish what is in flight (not counted), then sum up. */
    int64_t drain_end = now_ns() + DRAIN_NS;
    for (;;) {
        int live = 0;
        for (int t = 0; t < opt.threads; t++)
            live += __atomic_load_n(&ws[t].live, __ATOMIC_RELAXED);
        if (!live || now_ns() > drain_end)
            break;
        sleep_ns(10000000LL);
    }
    __atomic_store_n(&phase, PH_STOP, __ATOMIC_RELEASE);
    for (int t = 0; t < opt.threads; t++)
        pthread_join(ws[t].tid, NULL);

    uint64_t done = 0, errs[E_N] = {0}, over = 0;
    uint32_t *hist = calloc(HIST_US, sizeof *hist);
    for (int t = 0; t < opt.threads; t++) {
        done += ws[t].done;
        over += ws[t].hist_over;
        for (int k = 0; k < E_N; k++)
            errs[k] += ws[t].errors[k];
        for (int i = 0; i < HIST_US; i++)
            hist[i] += ws[t].hist[i];
    }
    double dur = (double)(t1 - t0) / 1e9;
    uint64_t nerr = 0;
    printf("TLSLOAD_JSON {\"connections_done\": %llu, \"duration_s\": %.6f, "
           "\"rate\": %.1f, \"client_cpu_s\": %.4f, \"lat_p50_ms\": %.3f, \"lat_p99_ms\": %.3f, "
           "\"negotiated\": \"%s\", \"errors\": {",
           (unsigned long long)done, dur, (double)done / dur, cpu1 - cpu0,
           percentile(hist, over, done, 0.5), percentile(hist, over, done, 0.99), negotiated);
    for (int k = 0; k < E_N; k++) {
        nerr += errs[k];
        printf("%s\"%s\": %llu", k ? ", " : "", err_names[k], (unsigned long long)errs[k]);
    }
    printf("}, \"errors_in_warmup\": %llu, \"first_errors\": {",
           (unsigned long long)(err0[0] + err0[1] + err0[2] + err0[3] + err0[4]));
    int first = 1;
    for (int k = 0; k < E_N; k++) {
        if (!first_err[k][0])
            continue;
        for (char *p = first_err[k]; *p; p++)
            if (*p == '"' || *p == '\\' || (unsigned char)*p < 32)
                *p = ' ';
        printf("%s\"%s\": \"%s\"", first ? "" : ", ", err_names[k], first_err[k]);
        first = 0;
    }
    printf("}}\n");
    fflush(stdout);
    return nerr ? 2 : 0;
}
