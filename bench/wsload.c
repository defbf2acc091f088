/* wsload: a WebSocket (RFC 6455) load generator for bench/websocket.py.
 *
 * One thread, epoll, non-blocking sockets, so that it costs the same for every server and stays
 * far below the servers' CPU. Two modes:
 *
 *   wsload echo --port P --path /echo --connections N --duration D [--warmup W] [--size B]
 *       N connections, each in a loop: send one masked text frame of B bytes, wait until the
 *       whole echo is back, compare it byte for byte, send the next one. Counts the round trips
 *       completed in the D seconds after W seconds of warm-up, with their latency.
 *
 *   wsload broadcast --port P --path /sub --pub-path /pub --subscribers S --window K ...
 *       S subscriber connections and 1 publisher connection. The publisher sends numbered text
 *       messages of B bytes (at least 32), each stamped with the CLOCK_MONOTONIC time it was
 *       sent; the server sends each to every subscriber. The publisher keeps at most K messages
 *       in flight: message i is sent only once every subscriber has received message i-K, so
 *       no queue grows anywhere and the rate is what the server delivers. Each subscriber
 *       checks that every message is the expected one, in order, none missing, and takes the
 *       delivery latency (its receive time minus the stamp) of each; the completion latency of
 *       a message is from its stamp to its arrival at the last subscriber. Before that, the
 *       publisher sends probes until one reaches every subscriber (a server may register a
 *       subscriber a little after its handshake answer); a new probe leaves only once no
 *       message has reached any subscriber for 100 ms, then 200, 400, ... up to 3.2 s, so that
 *       a server slower than the probes (or pausing, as for a garbage collection) does not
 *       fall ever further behind.
 *
 * Every frame from the server is checked: no mask, RSV bits clear (no extension was offered),
 * known opcodes, minimal 16/64-bit lengths, control frames unfragmented and at most 125 bytes,
 * fragments reassembled in order. Pings are answered. The handshake uses a random key, checks
 * the status, Upgrade, Connection and Sec-WebSocket-Accept, and that no extension came back.
 * Any error (a wrong byte, a closed connection, a bad frame) ends the run with status 2.
 * At most MAX_CONNECTING connections are being opened at once (a listen backlog of 128, as
 * Tornado's, would otherwise drop SYNs of a burst of 10,000 and stall the set-up), and the
 * descriptor limit is raised to the hard limit.
 *
 * Output on stdout: "WSLOAD_T0" when the measured window opens, "WSLOAD_T1" when it closes
 * (the driver samples the servers' CPU times then), and one "WSLOAD_JSON {...}" line.
 * Build: gcc -O2 -Wall -Wextra -Werror -o wsload wsload.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_MESSAGE (16u << 20)
#define MAX_HEAD 16384
#define HIST_US 20000000 /* latency histogram: 1 µs buckets up to 20 s, then one overflow */
#define RING 4096       /* broadcast: messages in flight are tracked modulo this */
#define PROBE_NS 100000000LL
#define SETUP_NS 15000000000LL /* plus SETUP_NS_PER_CONN for each connection */
#define SETUP_NS_PER_CONN 2000000LL
#define MAX_CONNECTING 128
#define CLOSE_NS 2000000000LL

enum { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSING, ST_DONE };
enum { ROLE_ECHO, ROLE_SUB, ROLE_PUB };

typedef struct {
    uint8_t *p;
    size_t off, len, cap;
} buf_t;

typedef struct {
    int fd, idx, state, role, want_out;
    char accept[32];
    buf_t in, out, msg;
    int frag_op;
    /* echo */
    int waiting;
    uint64_t seq, sent_ns, count;
    uint8_t *expect;
    /* subscriber: index of the last message received, -1 before the first */
    int64_t last;
} conn_t;

static struct {
    const char *mode, *host, *path, *pub_path;
    int port, conns, subs, window;
    double duration, warmup;
    size_t size;
} opt = {"", "127.0.0.1", "/echo", "/pub", 0, 50, 100, 16, 10.0, 2.0, 32};

static int ep;
static conn_t *conns;
static int nconns, nopen;
static uint64_t rng_state;
static uint32_t *hist;  /* echo: round trips; broadcast: completion (the last subscriber) */
static uint64_t hist_n;
static uint32_t *dhist; /* broadcast: every delivery, from the publisher's stamp */
static uint64_t dhist_n;
static struct sockaddr_in peer;
static int nstarted;
static int64_t t0_ns, t1_ns; /* the measured window [t0, t1); 0 until known */
static int measuring, finished;
static uint64_t bytes_in, bytes_out, frames_in, pings;

/* broadcast state */
static int synced;
static int64_t probe, sync_index, next_send, completed;
static int64_t probe_ns, probe_progress_ns;
static int probe_got;
static uint16_t ring_count[RING];
static int64_t ring_ns[RING];
static uint64_t win_deliveries, win_completed;

static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("wsload: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t rnd(void)
{
    /* xorshift64*: masks need not be secret here, only varied */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

/* ------------------------------------------------------------------ SHA-1 and base64 */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const uint8_t *data, size_t len, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    uint8_t *m = calloc(1, total);
    if (!m)
        die("out of memory");
    memcpy(m, data, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        m[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t blk = 0; blk < total; blk += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)m[blk + 4 * i] << 24 | (uint32_t)m[blk + 4 * i + 1] << 16 |
                   (uint32_t)m[blk + 4 * i + 2] << 8 | m[blk + 4 * i + 3];
        for (int i = 16; i < 80; i++)
            w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) {
                f = (b & c) | (~b & d);
                k = 0x5A827999;
            } else if (i < 40) {
                f = b ^ c ^ d;
                k = 0x6ED9EBA1;
            } else if (i < 60) {
                f = (b & c) | (b & d) | (c & d);
                k = 0x8F1BBCDC;
            } else {
                f = b ^ c ^ d;
                k = 0xCA62C1D6;
            }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d;
            d = c;
            c = rol(b, 30);
            b = a;
            a = t;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
    }
    free(m);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

static void base64(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* ------------------------------------------------------------------ buffers and sending */

static void buf_reserve(buf_t *b, size_t more)
{
    if (b->off > 0 && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + more <= b->cap)
        return;
    if (b->off > 0) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + more <= b->cap)
            return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        die("out of memory");
    b->p = p;
    b->cap = cap;
}

static void buf_add(buf_t *b, const void *data, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void set_events(conn_t *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void flush(conn_t *c)
{
    while (c->out.off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (!c->want_out) {
                    c->want_out = 1;
                    set_events(c, EPOLLIN | EPOLLOUT);
                }
                return;
            }
            if (c->state == ST_CLOSING)
                return;
            die("connection %d: send: %s", c->idx, strerror(errno));
        }
        bytes_out += (uint64_t)n;
        c->out.off += (size_t)n;
    }
    c->out.off = c->out.len = 0;
    if (c->want_out) {
        c->want_out = 0;
        set_events(c, EPOLLIN);
    }
}

/* Queue one masked frame (client to server, RFC 6455 §5.3) and try to send it. */
static void queue_frame(conn_t *c, int opcode, const uint8_t *data, size_t n)
{
    uint8_t head[14];
    size_t h = 0;
    head[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        head[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        head[h++] = 0x80 | 126;
        head[h++] = (uint8_t)(n >> 8);
        head[h++] = (uint8_t)n;
    } else {
        head[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            head[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t mask32 = (uint32_t)rnd();
    uint8_t mask[4];
    memcpy(mask, &mask32, 4);
    memcpy(head + h, mask, 4);
    h += 4;
    buf_reserve(&c->out, h + n);
    memcpy(c->out.p + c->out.len, head, h);
    uint8_t *dst = c->out.p + c->out.len + h;
    for (size_t i = 0; i < n; i++)
        dst[i] = data[i] ^ mask[i & 3];
    c->out.len += h + n;
}

/* ------------------------------------------------------------------ payloads */

/* Echo: "e<conn>:<seq>:" then a pattern that depends on both, up to the size. */
static void echo_payload(const conn_t *c, uint8_t *p)
{
    char head[48];
    int n = snprintf(head, sizeof head, "e%d:%" PRIu64 ":", c->idx, c->seq);
    for (size_t i = 0; i < opt.size; i++)
        p[i] = i < (size_t)n ? (uint8_t)head[i]
                             : (uint8_t)('a' + (i * 7 + c->seq + (uint64_t)c->idx) % 26);
}

/* Broadcast message i sent at `stamp` (ns, CLOCK_MONOTONIC): 16 hex digits of i, 16 of the
 * stamp, then a pattern that depends on i. */
static void bcast_payload(int64_t i, int64_t stamp, uint8_t *p)
{
    char head[33];
    snprintf(head, sizeof head, "%016" PRIx64 "%016" PRIx64, (uint64_t)i, (uint64_t)stamp);
    for (size_t k = 0; k < opt.size; k++)
        p[k] = k < 32 ? (uint8_t)head[k] : (uint8_t)('A' + (k * 3 + (uint64_t)i) % 26);
}

static void hist_put(uint32_t *h, uint64_t *n, int64_t ns)
{
    int64_t us = ns / 1000;
    if (us < 0)
        us = 0;
    h[us < HIST_US ? us : HIST_US]++;
    (*n)++;
}

static void hist_add(int64_t ns) { hist_put(hist, &hist_n, ns); }

static double pct_of(const uint32_t *h, uint64_t n, double q)
{
    if (!n)
        return 0.0;
    uint64_t want = (uint64_t)(q * (double)n), seen = 0;
    if (want >= n)
        want = n - 1;
    for (int i = 0; i <= HIST_US; i++) {
        seen += h[i];
        if (seen > want)
            return i / 1000.0; /* ms */
    }
    return HIST_US / 1000.0;
}

static double hist_pct(double q) { return pct_of(hist, hist_n, q); }

/* ------------------------------------------------------------------ protocol logic */

static void echo_send(conn_t *c)
{
    echo_payload(c, c->expect);
    queue_frame(c, 1, c->expect, opt.size);
    c->waiting = 1;
    c->sent_ns = now_ns();
    flush(c);
}

static void pub_send(int64_t i)
{
    conn_t *pub = &conns[nconns - 1];
    uint8_t p[opt.size];
    int64_t stamp = now_ns();
    bcast_payload(i, stamp, p);
    queue_frame(pub, 1, p, opt.size);
    ring_ns[i % RING] = stamp;
    flush(pub);
}

static void pub_pump(void)
{
    int64_t now = now_ns();
    while (synced && !finished && now < t1_ns && next_send - completed < opt.window) {
        ring_count[next_send % RING] = 0;
        pub_send(next_send++);
    }
}

/* The closing handshake is over (or the server closed during it): forget the connection. */
static void conn_done(conn_t *c)
{
    c->state = ST_DONE;
    nopen--;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static void on_message(conn_t *c, int op, const uint8_t *p, size_t n)
{
    int64_t now = now_ns();
    if (c->state == ST_CLOSING)
        return;
    if (op != 1)
        die("connection %d: a binary message, expected text", c->idx);
    if (c->role == ROLE_ECHO) {
        if (!c->waiting)
            die("connection %d: a message it did not ask for", c->idx);
        if (n != opt.size || memcmp(p, c->expect, n) != 0)
            die("connection %d: echo %" PRIu64 " differs from what was sent (%zu bytes, "
                "expected %zu)", c->idx, c->seq, n, opt.size);
        c->waiting = 0;
        c->seq++;
        if (measuring && now >= t0_ns && now < t1_ns) {
            c->count++;
            hist_add(now - (int64_t)c->sent_ns);
        }
        if (!finished && (!t1_ns || now < t1_ns))
            echo_send(c);
        return;
    }
    if (c->role == ROLE_PUB)
        die("the publisher received a message");
    /* subscriber */
    if (n != opt.size)
        die("subscriber %d: a message of %zu bytes, expected %zu", c->idx, n, opt.size);
    char hex[17], shex[17];
    memcpy(hex, p, 16);
    hex[16] = '\0';
    memcpy(shex, p + 16, 16);
    shex[16] = '\0';
    char *end, *send;
    int64_t i = (int64_t)strtoull(hex, &end, 16);
    int64_t stamp = (int64_t)strtoull(shex, &send, 16);
    uint8_t want[opt.size];
    bcast_payload(i, stamp, want);
    if (*end || *send || memcmp(want, p, n) != 0 || i < 0 ||
        (i < next_send && next_send - i < RING && stamp != ring_ns[i % RING]))
        die("subscriber %d: a message that was never sent", c->idx);
    if (i <= c->last)
        die("subscriber %d: message %" PRId64 " after %" PRId64 " (out of order)", c->idx, i,
            c->last);
    if (synced && c->last >= sync_index && i != c->last + 1)
        die("subscriber %d: message %" PRId64 " after %" PRId64 " (lost %" PRId64 ")", c->idx,
            i, c->last, i - c->last - 1);
    if (i >= next_send)
        die("subscriber %d: message %" PRId64 " not sent yet", c->idx, i);
    c->last = i;
    if (!synced) {
        probe_progress_ns = now; /* the server is still delivering (this probe or older ones) */
        if (i == probe && ++probe_got == opt.subs) {
            synced = 1;
            sync_index = i;
            completed = next_send = i + 1;
            int64_t t = now_ns();
            t0_ns = t + (int64_t)(opt.warmup * 1e9);
            t1_ns = t0_ns + (int64_t)(opt.duration * 1e9);
            pub_pump();
        }
        return;
    }
    if (i <= sync_index)
        return;
    if (measuring && now >= t0_ns && now < t1_ns) {
        win_deliveries++;
        hist_put(dhist, &dhist_n, now - stamp);
    }
    if (++ring_count[i % RING] > opt.subs)
        die("message %" PRId64 " delivered more often than there are subscribers", i);
    int advanced = 0;
    while (completed < next_send && ring_count[completed % RING] == opt.subs) {
        if (measuring && now >= t0_ns && now < t1_ns) {
            win_completed++;
            hist_add(now - ring_ns[completed % RING]);
        }
        completed++;
        advanced = 1;
    }
    if (advanced)
        pub_pump();
}

/* Parse every whole frame in c->in. */
static void on_frames(conn_t *c)
{
    for (;;) {
        size_t avail = c->in.len - c->in.off;
        if (avail < 2)
            break;
        const uint8_t *p = c->in.p + c->in.off;
        int fin = p[0] & 0x80, op = p[0] & 0x0f;
        if (p[0] & 0x70)
            die("connection %d: RSV bits set (no extension was negotiated)", c->idx);
        if (p[1] & 0x80)
            die("connection %d: a masked frame from the server", c->idx);
        uint64_t len = p[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)p[2] << 8 | p[3];
            hl = 4;
            if (len < 126)
                die("connection %d: a 16-bit length below 126", c->idx);
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[2 + i];
            hl = 10;
            if (len >> 63)
                die("connection %d: a 64-bit length with its top bit set", c->idx);
            if (len < 65536)
                die("connection %d: a 64-bit length below 65536", c->idx);
        }
        if (op >= 8) {
            if (op > 10)
                die("connection %d: reserved control opcode %d", c->idx, op);
            if (!fin || len > 125)
                die("connection %d: a fragmented or long control frame", c->idx);
        } else if (op > 2) {
            die("connection %d: reserved data opcode %d", c->idx, op);
        }
        if (len > MAX_MESSAGE)
            die("connection %d: a frame of %" PRIu64 " bytes", c->idx, len);
        if (avail < hl + len) {
            buf_reserve(&c->in, hl + (size_t)len - avail);
            break;
        }
        const uint8_t *data = p + hl;
        size_t n = (size_t)len;
        frames_in++;
        if (op == 9) {
            pings++;
            uint8_t copy[125];
            memcpy(copy, data, n);
            c->in.off += hl + n;
            queue_frame(c, 10, copy, n);
            flush(c);
            continue;
        } else if (op == 8) {
            if (c->state != ST_CLOSING) {
                uint16_t code = n >= 2 ? (uint16_t)(data[0] << 8 | data[1]) : 0;
                die("connection %d: the server closed the connection (close code %u)", c->idx,
                    code);
            }
            conn_done(c);
            return;
        } else if (op == 1 || op == 2) {
            if (c->frag_op)
                die("connection %d: a new message inside a fragmented one", c->idx);
            if (fin) {
                c->in.off += hl + n;
                on_message(c, op, data, n);
            } else {
                c->frag_op = op;
                c->msg.off = c->msg.len = 0;
                buf_add(&c->msg, data, n);
                c->in.off += hl + n;
            }
        } else if (op == 0) {
            if (!c->frag_op)
                die("connection %d: a continuation frame outside a message", c->idx);
            if (c->msg.len + n > MAX_MESSAGE)
                die("connection %d: a message over %u bytes", c->idx, MAX_MESSAGE);
            buf_add(&c->msg, data, n);
            c->in.off += hl + n;
            if (fin) {
                int mop = c->frag_op;
                c->frag_op = 0;
                on_message(c, mop, c->msg.p, c->msg.len);
            }
        } else {
            c->in.off += hl + n; /* pong */
        }
        if (c->state == ST_DONE)
            return;
    }
}

static int header_is(const char *line, size_t n, const char *name, const char **value,
                     size_t *vlen)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
        return 0;
    const char *v = line + k + 1, *e = line + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *value = v;
    *vlen = (size_t)(e - v);
    return 1;
}

static int has_token(const char *v, size_t n, const char *token)
{
    size_t k = strlen(token);
    const char *e = v + n;
    while (v < e) {
        while (v < e && (*v == ' ' || *v == ',' || *v == '\t'))
            v++;
        const char *s = v;
        while (v < e && *v != ',')
            v++;
        const char *t = v;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - s) == k && strncasecmp(s, token, k) == 0)
            return 1;
    }
    return 0;
}

static void start_connect(conn_t *c, const struct sockaddr_in *addr, const char *path);

/* Open connections until MAX_CONNECTING are on their way (or all are started). */
static void start_more(void)
{
    while (nstarted < nconns && nstarted - nopen < MAX_CONNECTING) {
        conn_t *c = &conns[nstarted++];
        start_connect(c, &peer, c->role == ROLE_PUB ? opt.pub_path : opt.path);
    }
}

static void on_open(conn_t *c)
{
    c->state = ST_OPEN;
    nopen++;
    start_more();
}

static void on_handshake(conn_t *c)
{
    const char *head = (const char *)c->in.p;
    size_t len = c->in.len;
    const char *end = memmem(head, len, "\r\n\r\n", 4);
    if (!end) {
        if (len > MAX_HEAD)
            die("connection %d: a response head over %d bytes", c->idx, MAX_HEAD);
        return;
    }
    size_t hlen = (size_t)(end - head) + 4;
    const char *eol = memmem(head, hlen, "\r\n", 2);
    if ((size_t)(eol - head) < 12 || memcmp(head, "HTTP/1.1 101", 12) != 0)
        die("connection %d: no 101 answer to the handshake: %.*s", c->idx, (int)(eol - head),
            head);
    int upgrade = 0, connection = 0, accept = 0;
    for (const char *line = eol + 2; line < end;) {
        const char *le = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        size_t n = (size_t)(le - line);
        const char *v;
        size_t vl;
        if (header_is(line, n, "upgrade", &v, &vl))
            upgrade = vl == 9 && strncasecmp(v, "websocket", 9) == 0;
        else if (header_is(line, n, "connection", &v, &vl))
            connection = has_token(v, vl, "upgrade");
        else if (header_is(line, n, "sec-websocket-accept", &v, &vl))
            accept = vl == strlen(c->accept) && memcmp(v, c->accept, vl) == 0;
        else if (header_is(line, n, "sec-websocket-extensions", &v, &vl))
            die("connection %d: the server answered with an extension it was not offered: "
                "%.*s", c->idx, (int)vl, v);
        else if (header_is(line, n, "sec-websocket-protocol", &v, &vl))
            die("connection %d: the server chose a subprotocol it was not offered", c->idx);
        line = le + 2;
    }
    if (!upgrade || !connection || !accept)
        die("connection %d: bad handshake answer (Upgrade %s, Connection %s, "
            "Sec-WebSocket-Accept %s)", c->idx, upgrade ? "ok" : "wrong", connection ? "ok" :
            "wrong", accept ? "ok" : "wrong");
    c->in.off = hlen;
    on_open(c);
    on_frames(c);
}

static void on_readable(conn_t *c)
{
    for (int rounds = 0; rounds < 4; rounds++) {
        buf_reserve(&c->in, 65536);
        ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
        }
        if (n <= 0) {
            if (c->state == ST_CLOSING) {
                conn_done(c);  /* the server closed first: the end we were waiting for */
                return;
            }
            if (n < 0)
                die("connection %d: recv: %s", c->idx, strerror(errno));
            die("connection %d: the server closed the TCP connection", c->idx);
        }
        bytes_in += (uint64_t)n;
        c->in.len += (size_t)n;
        if (c->state == ST_HANDSHAKE)
            on_handshake(c);
        else
            on_frames(c);
        if (c->state == ST_DONE || (size_t)n < 65536)
            return;
    }
}

static void start_connect(conn_t *c, const struct sockaddr_in *addr, const char *path)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (const struct sockaddr *)addr, sizeof *addr) < 0 && errno != EINPROGRESS)
        die("connect: %s", strerror(errno));
    c->state = ST_CONNECTING;
    c->last = -1;
    uint8_t key[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rnd();
        memcpy(key + i, &r, 8);
    }
    char key64[32], cat[96];
    base64(key, 16, key64);
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key64);
    uint8_t digest[20];
    sha1((const uint8_t *)cat, strlen(cat), digest);
    base64(digest, 20, c->accept);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", path, opt.host, opt.port, key64);
    if (n <= 0 || (size_t)n >= sizeof req)
        die("path too long");
    buf_add(&c->out, req, (size_t)n);
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->want_out = 1;
}

static void on_event(conn_t *c, uint32_t events)
{
    if (c->state == ST_DONE)
        return;
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err)
            die("connection %d: connect: %s", c->idx, strerror(err));
        c->state = ST_HANDSHAKE;
        flush(c); /* once the request is out, flush() switches the events back to EPOLLIN */
        return;
    }
    if (events & EPOLLOUT)
        flush(c);
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        on_readable(c);
}

static void loop_once(int timeout_ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(ep, evs, 256, timeout_ms);
    if (n < 0) {
        if (errno == EINTR)
            return;
        die("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++)
        on_event(evs[i].data.ptr, evs[i].events);
}

static int ms_until(int64_t t)
{
    int64_t d = t - now_ns();
    if (d <= 0)
        return 0;
    return (int)((d + 999999) / 1000000);
}

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: wsload echo|broadcast --port P [--host 127.0.0.1] [--path /echo]\n"
            "              [--connections 50] [--duration 10] [--warmup 2] [--size 32]\n"
            "              [--pub-path /pub] [--subscribers 100] [--window 16]\n");
    exit(64);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    opt.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--host"))
            opt.host = v;
        else if (!strcmp(a, "--port"))
            opt.port = atoi(v);
        else if (!strcmp(a, "--path"))
            opt.path = v;
        else if (!strcmp(a, "--pub-path"))
            opt.pub_path = v;
        else if (!strcmp(a, "--connections"))
            opt.conns = atoi(v);
        else if (!strcmp(a, "--subscribers"))
            opt.subs = atoi(v);
        else if (!strcmp(a, "--window"))
            opt.window = atoi(v);
        else if (!strcmp(a, "--duration"))
            opt.duration = atof(v);
        else if (!strcmp(a, "--warmup"))
            opt.warmup = atof(v);
        else if (!strcmp(a, "--size"))
            opt.size = (size_t)atol(v);
        else
            usage();
    }
    int echo = !strcmp(opt.mode, "echo");
    if (!echo && strcmp(opt.mode, "broadcast"))
        usage();
    if (opt.port <= 0 || opt.conns <= 0 || opt.subs <= 0 || opt.subs > 60000 ||
        opt.window <= 0 || opt.window >= RING / 2 || opt.duration <= 0 || opt.warmup < 0 ||
        opt.size < (echo ? 1 : 32) || opt.size > 65536)
        usage();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)(echo ? opt.conns : opt.subs + 1) + 16)
        die("%d connections need more descriptors than the limit, %llu", echo ? opt.conns :
            opt.subs + 1, (unsigned long long)rl.rlim_cur);

    int ufd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (ufd < 0 || read(ufd, &rng_state, sizeof rng_state) != sizeof rng_state)
        die("/dev/urandom: %s", strerror(errno));
    close(ufd);
    rng_state |= 1;
    hist = calloc(HIST_US + 1, sizeof *hist);
    dhist = calloc(HIST_US + 1, sizeof *dhist);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!hist || !dhist || ep < 0)
        die("start-up failed");
    peer.sin_family = AF_INET;
    peer.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &peer.sin_addr) != 1)
        die("bad host %s (an IPv4 address)", opt.host);

    nconns = echo ? opt.conns : opt.subs + 1;
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns)
        die("out of memory");
    int64_t setup_start = now_ns();
    int64_t setup_ns = SETUP_NS + SETUP_NS_PER_CONN * nconns;
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        c->idx = i;
        c->role = echo ? ROLE_ECHO : i < opt.subs ? ROLE_SUB : ROLE_PUB;
        c->expect = malloc(opt.size);
        if (!c->expect)
            die("out of memory");
    }
    start_more();
    while (nopen < nconns) {
        if (now_ns() - setup_start > setup_ns)
            die("only %d of %d connections opened in %lld s", nopen, nconns,
                setup_ns / 1000000000LL);
        loop_once(100);
    }
    double handshake_s = (double)(now_ns() - setup_start) / 1e9;

    if (echo) {
        int64_t t = now_ns();
        t0_ns = t + (int64_t)(opt.warmup * 1e9);
        t1_ns = t0_ns + (int64_t)(opt.duration * 1e9);
        for (int i = 0; i < nconns; i++)
            echo_send(&conns[i]);
    } else {
        probe = 0;
        next_send = 1;
        probe_ns = probe_progress_ns = now_ns();
        pub_send(0);
        int64_t sync_start = now_ns(), probe_quiet = PROBE_NS;
        while (!synced) {
            int64_t now = now_ns();
            if (now - sync_start > setup_ns)
                die("no message reached all %d subscribers within %lld s (probe %" PRId64
                    " reached %d, the last message of any probe arrived %.1f s ago; are they "
                    "in different processes?)", opt.subs, setup_ns / 1000000000LL, probe,
                    probe_got, (double)(now - probe_progress_ns) / 1e9);
            int64_t quiet_since = probe_ns > probe_progress_ns ? probe_ns : probe_progress_ns;
            if (now - quiet_since >= probe_quiet) {
                probe = next_send++;
                probe_got = 0;
                probe_ns = probe_progress_ns = now;
                pub_send(probe);
                quiet_since = now;
                if (probe_quiet < 32 * PROBE_NS)
                    probe_quiet *= 2;
            }
            loop_once(ms_until(quiet_since + probe_quiet));
        }
    }
    measuring = 1;
    while (now_ns() < t0_ns)
        loop_once(ms_until(t0_ns));
    printf("WSLOAD_T0\n");
    fflush(stdout);
    double cpu0 = cpu_now();
    uint64_t in0 = bytes_in, out0 = bytes_out;
    while (now_ns() < t1_ns)
        loop_once(ms_until(t1_ns));
    double cpu1 = cpu_now();
    uint64_t in1 = bytes_in, out1 = bytes_out;
    printf("WSLOAD_T1\n");
    fflush(stdout);
    finished = 1;
    double window_s = (double)(t1_ns - t0_ns) / 1e9;

    /* Closing handshake: a 1000 close frame on every connection, then wait for the servers'. */
    uint8_t bye[2] = {0x03, 0xe8};
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        c->state = ST_CLOSING;
        queue_frame(c, 8, bye, 2);
        flush(c);
    }
    int64_t close_end = now_ns() + CLOSE_NS;
    while (nopen > 0 && now_ns() < close_end)
        loop_once(ms_until(close_end));
    int unclosed = nopen;
    for (int i = 0; i < nconns; i++)
        if (conns[i].state != ST_DONE)
            close(conns[i].fd);

    uint64_t cmin = UINT64_MAX, cmax = 0;
    if (echo)
        for (int i = 0; i < nconns; i++) {
            if (conns[i].count < cmin)
                cmin = conns[i].count;
            if (conns[i].count > cmax)
                cmax = conns[i].count;
        }
    printf("WSLOAD_JSON {\"mode\": \"%s\", \"connections\": %d, \"subscribers\": %d, "
           "\"window\": %d, \"size\": %zu, \"duration_s\": %.6f, \"warmup_s\": %.3f, "
           "\"handshake_s\": %.4f, ",
           opt.mode, echo ? opt.conns : opt.subs + 1, echo ? 0 : opt.subs,
           echo ? 0 : opt.window, opt.size, window_s, opt.warmup, handshake_s);
    if (echo)
        printf("\"round_trips\": %" PRIu64 ", \"per_conn_min\": %" PRIu64
               ", \"per_conn_max\": %" PRIu64 ", ", hist_n, cmin, cmax);
    else
        printf("\"messages\": %" PRIu64 ", \"deliveries\": %" PRIu64 ", "
               "\"dlat_p50_ms\": %.3f, \"dlat_p90_ms\": %.3f, \"dlat_p99_ms\": %.3f, "
               "\"dlat_max_ms\": %.3f, ", win_completed, win_deliveries,
               pct_of(dhist, dhist_n, 0.50), pct_of(dhist, dhist_n, 0.90),
               pct_of(dhist, dhist_n, 0.99), pct_of(dhist, dhist_n, 1.0));
    printf("\"lat_p50_ms\": %.3f, \"lat_p90_ms\": %.3f, \"lat_p99_ms\": %.3f, "
           "\"lat_max_ms\": %.3f, \"bytes_in\": %" PRIu64 ", \"bytes_out\": %" PRIu64 ", "
           "\"pings\": %" PRIu64 ", \"unclosed\": %d, \"client_cpu_s\": %.4f}\n",
           hist_pct(0.50), hist_pct(0.90), hist_pct(0.99), hist_pct(1.0), in1 - in0,
           out1 - out0, pings, unclosed, cpu1 - cpu0);
    return 0;
}
