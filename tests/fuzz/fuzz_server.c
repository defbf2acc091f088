/* libFuzzer driver for the whole server: the real loop (loop.c and everything below it) runs
 * in-process, one turn after each event of a script the input spells out. Clients and workers
 * are socketpairs whose other ends this driver plays; nothing touches the network, and time is
 * the driver's (it advances the core's clock past its timers).
 *
 * Script: a sequence of operations, each an opcode byte and its arguments:
 *   0 k            client k connects (up to MAX_CLIENTS at once)
 *   1 k n bytes    client k sends n raw bytes
 *   2 k r x        client k sends request template r, repeated 4*x+1 times in one write
 *   3 k how        client k closes (how even) or half-closes its sending side (odd)
 *   4 k            client k reads what has arrived
 *   5 w s b        worker w answers its oldest request: status from s, body kind from b
 *   6 w n bytes    worker w sends n raw bytes (garbage, forged ids, anything)
 *   7 w            worker w dies (its socket closes)
 *   8 t            time moves on by t * 250 ms
 *   9 w m          worker w sends WebSocket message m to the last connection it accepted
 *  10              SIGTERM-like graceful stop begins
 *  12 w s ch      worker w subscribes (s even) or unsubscribes the last connection it
 *                  accepted (or a forged id, s & 2) to channel ch % 3
 *  13 w ch m       worker w publishes message m (text/binary, short/long) on channel ch % 3
 *  14 ch           another thread's publish (krait_server_publish) on channel ch % 3
 *  11 w r a t      worker w answers its oldest request with a ROUTE_ANSWER (route r - 2,
 *                  allow a, target t % 3: none, "a.txt", "page.py") — right for a route
 *                  question (DELETE/PUT /r... match a regex route), wrong for anything else
 *  15 w f          worker w answers its oldest request with a CACHE_ANSWER of flags f % 20
 *                  (0..15: valid or not; 16..19: 16, bit 31, 2 and 4 both, NO_STORE|LONG) —
 *                  right for a cache-rule question, wrong for anything else
 * An input of odd length runs with cache-rule questions (a regex cache rule: every static
 * file's flags are asked of a worker once, then cached); an even one with cache rules the
 * core evaluates itself. An input whose length has bit 1 set writes the access log as JSON
 * lines, and at the end every line must parse (tests/native/json_check.h) with its 17 keys.
 * The first route is a static folder outside the site root (krait_server_add_static_dir at
 * /static: a second temporary folder, with a .py file, a .gz sibling, an index, a hidden file
 * and links out of it), which some templates ask for and forged route answers may name.
 * Clients with an odd k connect to loop 1, the others to loop 0 (the hub, which has the
 * workers): a request for a worker on loop 1 moves its connection to the hub. The PROXY
 * protocol is on with 10.0.0.0/8 trusted: clients 6 and 7 (one per loop) come from 10.0.0.4,
 * a trusted proxy, and must start with a PROXY header (some templates are v1 headers; raw bytes can be
 * anything, v2 included); the others' PROXY headers are bad requests.
 * After each operation each loop runs one turn. A worker that exits is replaced from the event
 * callback, as the supervisor does, so a slot is reused while the core still knows the old
 * worker's connections. At the end the driver reads everything, stops the loop and frees the
 * server: AddressSanitizer then reports any use after free, leak or overflow. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../native/json_check.h"
#include "core.h"
#include "krait.h"
#include "loop.h"
#include "server.h"

#define MAX_CLIENTS 8
#define MAX_WORKERS 3

static char site[64];
static char static_dir[64];  /* the /static route's folder, outside the site root */

static const char *const templates[] = {
    "GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /page HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /page HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "POST /page HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "POST /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
    "GET /ctrl HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "HEAD /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-10,20-30\r\n\r\n",
    "GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /page HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 9000\r\n\r\n",
    "CONNECT /page HTTP/1.1\r\nHost: x\r\n\r\n",
    "\x81\x85\x00\x00\x00\x00hello",  /* a masked WebSocket text frame */
    "\x88\x82\x00\x00\x00\x00\x03\xe8",  /* a WebSocket close */
    "GET /a.txt HTTP/1.2\r\nHost: x\r\n\r\n",
    "DELETE /r/1 HTTP/1.1\r\nHost: x\r\n\r\n",
    "PUT /r/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "GET /index.html HTTP/1.1\r\nHost: x\r\nIf-None-Match: *\r\n\r\n",
    "GET /static/s.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n",
    "GET /static/s.css HTTP/1.1\r\nHost: x\r\nRange: bytes=0-2,4-6\r\n\r\n",
    "GET /static/tool.py HTTP/1.1\r\nHost: x\r\nIf-None-Match: *\r\n\r\n",
    "GET /static/..%2f..%2fa.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /static/out.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /static/sub HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /static/s.css HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "GET /static HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /static/up/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "PROXY TCP4 203.0.113.9 10.0.0.1 56324 80\r\n",
    "PROXY TCP6 2001:db8::9 2001:db8::1 1 443\r\nGET /page HTTP/1.1\r\nHost: x\r\n\r\n",
    "PROXY UNKNOWN\r\nGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    /* Bytes the access log must escape (quotes, backslashes, invalid UTF-8), in the target
     * and in the headers it logs. */
    ("GET /a\"b\\c%00\xff\xc3(\xed\xa0\x80\xc3\xa9 HTTP/1.1\r\nHost: x\"\\\xc2\x9b\r\n"
     "Referer: \xf4\x90\x80\x80\r\nUser-Agent: \"\\\t\xfe\r\n\r\n"),
    "GET /page?q=\"\\\xff HTTP/1.1\r\nHost: x\r\nUser-Agent: \xe2\x82\r\n\r\n",
};
#define NTEMPLATES (sizeof templates / sizeof templates[0])

typedef struct {
    int fd;                  /* the driver's end, or -1 */
    uint8_t in[1 << 16];     /* request frames from the core, not yet parsed */
    size_t in_len;
    uint32_t ids[64];        /* requests received, oldest first */
    uint8_t kinds[64];       /* ... and their flags (KRAIT__REQ_ROUTE, KRAIT__REQ_CACHE) */
    int nids;
    uint32_t ws_id;          /* the last request it accepted as a WebSocket */
} fake_worker;

static struct krait_server *srv, *lp;  /* loop 0 (the hub, with the workers) and loop 1 */

/* One turn of each loop, loop 1 first (what it hands to the hub is taken in the same round).
 * Returns 1 once both have stopped. */
static int turn_both(int *lp_done, int *hub_done)
{
    if (!*lp_done && krait__loop_turn(lp, 0) > 0)
        *lp_done = 1;
    if (!*hub_done && krait__loop_turn(srv, 0) > 0)
        *hub_done = 1;
    return *lp_done && *hub_done;
}
static int clients[MAX_CLIENTS];
static fake_worker workers[MAX_WORKERS];

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static void write_file_in(const char *dir, const char *name, const char *data, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite(data, 1, n, f);
    fclose(f);
}

static void write_file(const char *name, const char *data, size_t n)
{
    write_file_in(site, name, data, n);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    snprintf(site, sizeof site, "/tmp/krait-fuzz-site-XXXXXX");
    if (!mkdtemp(site))
        abort();
    write_file("a.txt", "hello, world\n", 13);
    write_file("page.py", "print('hi')\n", 12);
    write_file("index.html", "<p>home</p>\n", 12);
    static char big[70000];
    memset(big, 'b', sizeof big);
    write_file("big.bin", big, sizeof big);
    snprintf(static_dir, sizeof static_dir, "/tmp/krait-fuzz-static-XXXXXX");
    if (!mkdtemp(static_dir))
        abort();
    char path[128];
    snprintf(path, sizeof path, "%s/sub", static_dir);
    if (mkdir(path, 0700) < 0)
        abort();
    write_file_in(static_dir, "s.css", "body{}\n", 7);
    write_file_in(static_dir, "s.css.gz", "\x1f\x8b not really", 14);
    write_file_in(static_dir, "tool.py", "print('data')\n", 14);
    write_file_in(static_dir, "sub/index.html", "<p>sub</p>\n", 11);
    write_file_in(static_dir, ".hidden", "no\n", 3);
    write_file_in(static_dir, "big.bin", big, sizeof big);
    snprintf(path, sizeof path, "%s/out.txt", static_dir);
    char target[128];
    snprintf(target, sizeof target, "%s/a.txt", site);
    if (symlink(target, path) < 0)
        abort();
    snprintf(path, sizeof path, "%s/up", static_dir);
    if (symlink("..", path) < 0)
        abort();
    return 0;
}

static void start_worker(int slot_hint)
{
    (void)slot_hint;
    for (int i = 0; i < MAX_WORKERS; i++) {
        if (workers[i].fd >= 0)
            continue;
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
            abort();
        if (krait_server_add_worker(srv, sv[0], 0, -1) < 0) {
            close(sv[0]);
            close(sv[1]);
            return;
        }
        memset(&workers[i], 0, sizeof workers[i]);
        workers[i].fd = sv[1];
        return;
    }
}

static void on_event(void *ud, int kind, int a, int b)
{
    (void)ud, (void)a, (void)b;
    if (kind == KRAIT_EVENT_WORKER_EXIT)
        start_worker(a);  /* as the supervisor does: a replacement at once */
}

/* Read the core's frames to this worker; remember request ids in order. */
static void worker_take(fake_worker *w)
{
    for (;;) {
        if (w->in_len == sizeof w->in)
            w->in_len = 0;  /* too much unparsed: forget it, the ids are what matters */
        ssize_t n = recv(w->fd, w->in + w->in_len, sizeof w->in - w->in_len, 0);
        if (n <= 0)
            break;
        w->in_len += (size_t)n;
    }
    size_t off = 0;
    while (w->in_len - off >= 9) {
        uint32_t len = (uint32_t)w->in[off] | (uint32_t)w->in[off + 1] << 8 |
                       (uint32_t)w->in[off + 2] << 16 | (uint32_t)w->in[off + 3] << 24;
        if (len + 4 > w->in_len - off)
            break;
        uint8_t type = w->in[off + 4];
        uint32_t id = (uint32_t)w->in[off + 5] | (uint32_t)w->in[off + 6] << 8 |
                      (uint32_t)w->in[off + 7] << 16 | (uint32_t)w->in[off + 8] << 24;
        if (type == 1 && w->nids < 64) {
            w->kinds[w->nids] = len >= 6 ? w->in[off + 9] : 0;
            w->ids[w->nids++] = id;
        }
        off += len + 4;
    }
    memmove(w->in, w->in + off, w->in_len - off);
    w->in_len -= off;
}

static void worker_send(fake_worker *w, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = send(w->fd, p, n, MSG_NOSIGNAL);
        if (r <= 0)
            return;  /* full: the rest is lost, as if the worker hung */
        p += r;
        n -= (size_t)r;
    }
}

static void pop_id(fake_worker *w)
{
    memmove(w->ids, w->ids + 1, (size_t)(w->nids - 1) * sizeof w->ids[0]);
    memmove(w->kinds, w->kinds + 1, (size_t)(w->nids - 1) * sizeof w->kinds[0]);
    w->nids--;
}

/* A RESPONSE (status, body kind) for the worker's oldest request, maybe then CHUNK and END. */
static void worker_answer(fake_worker *w, uint8_t s, uint8_t b)
{
    worker_take(w);
    if (!w->nids)
        return;
    uint32_t id = w->ids[0];
    static const int statuses[] = {200, 101, 204, 304, 404, 500, 100, 199, 999, 302};
    int status = statuses[s % 10];
    uint8_t f[256];
    size_t o = 9;
    f[o++] = (uint8_t)status, f[o++] = (uint8_t)(status >> 8);
    int kind = b % 3;  /* inline, file, stream */
    f[o++] = (uint8_t)kind;
    static const char *const hdrs[][2] = {
        {"Content-Type", "text/plain"}, {"X-Bad\r\nName", "v"}, {"X-Ok", "a\r\nSet-Cookie: x"},
        {"Sec-WebSocket-Protocol", "chat"}, {"Transfer-Encoding", "chunked"}, {"", "empty"},
        {"X-Request-ID", "4f1c2a9e0b7d-17"}, {"x-request-id", "not \"an\" id"}};
    int nh = (b >> 2) % 4;
    f[o++] = (uint8_t)nh, f[o++] = 0;
    for (int i = 0; i < nh; i++) {
        const char *const *h = hdrs[(b + i) % 8];
        for (int k = 0; k < 2; k++) {
            size_t l = strlen(h[k]);
            put_u32(f + o, (uint32_t)l);
            memcpy(f + o + 4, h[k], l);
            o += 4 + l;
        }
    }
    char path[96];
    const char *body = kind == 1 ? path : kind == 2 ? "" : "body!";
    if (kind == 1)
        snprintf(path, sizeof path, "%s/%s", site, (b & 64) ? "a.txt" : "nope");
    size_t bl = strlen(body);
    put_u32(f + o, (uint32_t)bl);
    memcpy(f + o + 4, body, bl);
    o += 4 + bl;
    f[4] = 2;
    put_u32(f + 5, id);
    put_u32(f, (uint32_t)(o - 4));
    worker_send(w, f, o);
    if (status == 101)
        w->ws_id = id;
    if (kind == 2) {
        uint8_t c[32] = {0};
        put_u32(c, 9 + 4 + 3), c[4] = 3, put_u32(c + 5, id), put_u32(c + 9, 3);
        memcpy(c + 13, "abc", 3);
        worker_send(w, c, 16);
        if (!(b & 128)) {
            uint8_t e[9];
            put_u32(e, 5), e[4] = 4, put_u32(e + 5, id);
            worker_send(w, e, 9);
        }
    }
    if (kind != 2 || !(b & 128))
        pop_id(w);
}

static void worker_route(fake_worker *w, uint8_t r, uint8_t a, uint8_t t)
{
    worker_take(w);
    if (!w->nids)
        return;
    static const char *const targets[] = {"", "a.txt", "page.py"};
    const char *target = targets[t % 3];
    size_t tl = strlen(target);
    uint8_t f[64];
    size_t o = 9;
    put_u32(f + o, (uint32_t)((int32_t)r - 2)), o += 4;
    put_u32(f + o, a), o += 4;
    put_u32(f + o, (uint32_t)tl), memcpy(f + o + 4, target, tl), o += 4 + tl;
    put_u32(f + o, 0), o += 4;  /* no URL parameters */
    f[4] = 7;
    put_u32(f + 5, w->ids[0]);
    put_u32(f, (uint32_t)(o - 4));
    worker_send(w, f, o);
    pop_id(w);
}

/* A CACHE_ANSWER (u32 flags) for the worker's oldest request. */
static void worker_cache(fake_worker *w, uint8_t fl)
{
    worker_take(w);
    if (!w->nids)
        return;
    static const uint32_t odd[] = {16, 0x80000000u, 6, 9};
    uint32_t flags = fl % 20 < 16 ? fl % 20 : odd[fl % 20 - 16];
    uint8_t f[13];
    put_u32(f, 9);
    f[4] = 11;
    put_u32(f + 5, w->ids[0]);
    put_u32(f + 9, flags);
    worker_send(w, f, sizeof f);
    pop_id(w);
}

/* The right answer for the worker's oldest request, whatever it is. */
static void worker_answer_right(fake_worker *w)
{
    worker_take(w);
    if (!w->nids)
        return;
    if (w->kinds[0] & 16)
        worker_cache(w, 4);
    else if (w->kinds[0] & 8)
        worker_route(w, 1, 0, 0);  /* no route: 404 */
    else
        worker_answer(w, 0, 0);
}

static const char *const channel_names[] = {"a", "room:b", "c"};

static void worker_channel(fake_worker *w, uint8_t s, uint8_t ch)
{
    const char *name = channel_names[ch % 3];
    size_t n = strlen(name);
    uint8_t f[64];
    put_u32(f, (uint32_t)(5 + 4 + n));
    f[4] = (s & 1) ? 9 : 8;
    put_u32(f + 5, (s & 2) ? w->ws_id + 1 : w->ws_id);
    put_u32(f + 9, (uint32_t)n);
    memcpy(f + 13, name, n);
    worker_send(w, f, 13 + n);
}

static void worker_publish(fake_worker *w, uint8_t ch, uint8_t m)
{
    static char big[300];
    memset(big, 'p', sizeof big);
    const char *name = channel_names[ch % 3];
    size_t n = strlen(name), dl = (m & 2) ? sizeof big : 5;
    const char *data = (m & 2) ? big : "hello";
    uint8_t f[400];
    size_t o = 9;
    f[o++] = (uint8_t)(1 + (m & 1));
    put_u32(f + o, (uint32_t)n), memcpy(f + o + 4, name, n), o += 4 + n;
    put_u32(f + o, (uint32_t)dl), memcpy(f + o + 4, data, dl), o += 4 + dl;
    f[4] = 10;
    put_u32(f + 5, 0);
    put_u32(f, (uint32_t)(o - 4));
    worker_send(w, f, o);
}

static void worker_ws(fake_worker *w, uint8_t m)
{
    uint8_t f[64];
    size_t o = 9;
    if (m & 1) {  /* WS_CLOSE: u16 code | str reason */
        f[4] = 6;
        f[o++] = 0xe8, f[o++] = 0x03;
        put_u32(f + o, 2), memcpy(f + o + 4, "ok", 2), o += 6;
    } else {      /* WS_MESSAGE: u8 kind | str data */
        f[4] = 5;
        f[o++] = (uint8_t)(1 + ((m >> 1) & 1));
        put_u32(f + o, 5), memcpy(f + o + 4, "howdy", 5), o += 9;
    }
    put_u32(f + 5, (m & 4) ? w->ws_id + 1 : w->ws_id);  /* sometimes someone else's id */
    put_u32(f, (uint32_t)(o - 4));
    worker_send(w, f, o);
}

static void client_drain(int fd)
{
    char buf[65536];
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
}

/* Every line of the log is whole; as JSON, each is one object with the line's 18 keys. */
static void check_log(int fd, int json)
{
    static char buf[1 << 20];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    if (n <= 0)
        return;
    if (buf[n - 1] != '\n')
        abort();
    char *line = buf;
    while (line < buf + n) {
        char *end = memchr(line, '\n', (size_t)(buf + n - line));
        jc_pair pairs[32];
        if (json && jc_line(line, (size_t)(end + 1 - line), pairs, 32) != 18) {
            fprintf(stderr, "not a JSON log line: %.*s\n", (int)(end - line), line);
            abort();
        }
        line = end + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    srv = krait_server_new(site, err, sizeof err);
    if (!srv)
        abort();
    krait_server_set_limit(srv, KRAIT_LIMIT_HEADER_TIMEOUT, 1000);
    krait_server_set_limit(srv, KRAIT_LIMIT_KEEPALIVE, 2000);
    krait_server_set_limit(srv, KRAIT_LIMIT_WORKER_TIMEOUT, 3000);
    krait_server_set_limit(srv, KRAIT_LIMIT_BODY_TIMEOUT, 1500);
    krait_server_set_limit(srv, KRAIT_LIMIT_SPOOL, 4096);
    krait_server_set_limit(srv, KRAIT_LIMIT_BODY_MEMORY, 8192);
    krait_server_set_limit(srv, KRAIT_LIMIT_QUEUE, 4);
    krait_server_set_limit(srv, KRAIT_LIMIT_MAX_CONNS, 6);
    krait_server_set_limit(srv, KRAIT_LIMIT_WS_PING, 1000);
    krait_server_set_limit(srv, KRAIT_LIMIT_DRAIN, 2000);
    krait_server_add_mime(srv, "txt", "text/plain");
    krait_server_add_mime(srv, "css", "text/css");
    if (krait_server_add_static_dir(srv, KRAIT_VERB_ANY & ~KRAIT_VERB_WEBSOCKET, "/static/",
                                    static_dir, err, sizeof err) < 0)
        abort();
    krait_server_add_route(srv, KRAIT_VERB_WEBSOCKET, "/ws", 0, NULL, 1);
    krait_server_add_route(srv, KRAIT_VERB_GET, "/ctrl", 0, NULL, 1);
    krait_server_add_route(srv, KRAIT_VERB_DELETE | KRAIT_VERB_PUT, NULL, 1, NULL, 0);
    krait_server_add_route(srv, KRAIT_VERB_ANY, NULL, 0, NULL, 0);
    krait_server_set_callbacks(srv, on_event, NULL);
    if (size & 1) {
        krait_server_set_cache_questions(srv, 1);
    } else {
        krait_server_add_cache_rule(srv, KRAIT_CACHE_PUBLIC, "", ".txt");
        krait_server_add_cache_rule(srv, KRAIT_CACHE_NO_STORE, "big.bin", NULL);
        krait_server_add_cache_rule(srv, KRAIT_CACHE_LONG, "index", ".html");
    }
    krait_server_add_trusted_proxy(srv, "10.0.0.0/8");
    krait_server_add_trusted_proxy(srv, "unix");  /* no Unix listener here: never used */
    krait_server_set_proxy_protocol(srv, 1);
    /* The log goes to memory, read back at the end: JSON lines are checked. */
    int logfd = memfd_create("fuzz-access-log", MFD_CLOEXEC);
    if (logfd < 0)
        abort();
    krait_server_set_access_log(srv, logfd);
    int json = (size & 2) != 0;
    if (json && krait_server_set_access_log_format(srv, KRAIT_LOG_JSON) != KRAIT_OK)
        abort();
    for (int i = 0; i < MAX_CLIENTS; i++)
        clients[i] = -1;
    for (int i = 0; i < MAX_WORKERS; i++)
        workers[i].fd = -1;
    /* Two loops, turned one after the other by this one thread: clients connect to either;
     * a request for a worker on loop 1 moves its connection to the hub (CS_MOVE). */
    lp = krait__server_clone(srv, 1);
    if (!lp)
        abort();
    srv->nloops = lp->nloops = 2;
    srv->loops[1] = lp;
    if (krait__loop_start(srv, 0) < 0 || krait__loop_start(lp, 0) < 0)
        abort();
    int lp_done = 0, hub_done = 0;
    start_worker(0);
    start_worker(1);

    size_t i = 0;
    int stopped = 0;
#define ARG() (i < size ? data[i++] : 0)
    while (i < size && !stopped) {
        uint8_t op = ARG() % 16;
        switch (op) {
        case 0: {
            int k = ARG() % MAX_CLIENTS;
            if (clients[k] >= 0)
                break;
            int sv[2];
            if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
            if (!krait__loop_adopt(k & 1 ? lp : srv, sv[0], 0, k >= 6 ? "10.0.0.4" : "fuzz",
                                   1)) {
                close(sv[1]);
                break;
            }
            clients[k] = sv[1];
            break;
        }
        case 1: {
            int k = ARG() % MAX_CLIENTS;
            size_t n = ARG();
            if (n > size - i)
                n = size - i;
            if (clients[k] >= 0)
                (void)!send(clients[k], data + i, n, MSG_NOSIGNAL);
            i += n;
            break;
        }
        case 2: {
            int k = ARG() % MAX_CLIENTS;
            const char *t = templates[ARG() % NTEMPLATES];
            int reps = ARG() * 4 + 1;
            if (clients[k] < 0)
                break;
            size_t tl = strlen(t);
            if (t[0] == '\x81' || t[0] == '\x88')
                tl = t[0] == '\x81' ? 11 : 8;
            char *buf = malloc(tl * (size_t)reps);
            for (int r = 0; r < reps; r++)
                memcpy(buf + tl * (size_t)r, t, tl);
            (void)!send(clients[k], buf, tl * (size_t)reps, MSG_NOSIGNAL);
            free(buf);
            break;
        }
        case 3: {
            int k = ARG() % MAX_CLIENTS;
            int how = ARG();
            if (clients[k] < 0)
                break;
            if (how & 1) {
                shutdown(clients[k], SHUT_WR);
            } else {
                close(clients[k]);
                clients[k] = -1;
            }
            break;
        }
        case 4: {
            int k = ARG() % MAX_CLIENTS;
            if (clients[k] >= 0)
                client_drain(clients[k]);
            break;
        }
        case 5: {
            fake_worker *w = &workers[ARG() % MAX_WORKERS];
            uint8_t s = ARG(), b = ARG();
            if (w->fd >= 0)
                worker_answer(w, s, b);
            break;
        }
        case 6: {
            fake_worker *w = &workers[ARG() % MAX_WORKERS];
            size_t n = ARG();
            if (n > size - i)
                n = size - i;
            if (w->fd >= 0)
                worker_send(w, data + i, n);
            i += n;
            break;
        }
        case 7: {
            fake_worker *w = &workers[ARG() % MAX_WORKERS];
            if (w->fd >= 0) {
                close(w->fd);
                w->fd = -1;
            }
            break;
        }
        case 8: {
            int64_t t = (int64_t)ARG() * 250;
            srv->clock_offset_ms += t;
            lp->clock_offset_ms += t;
            break;
        }
        case 9: {
            fake_worker *w = &workers[ARG() % MAX_WORKERS];
            uint8_t m = ARG();
            if (w->fd >= 0)
                worker_ws(w, m);
            break;
        }
        case 10:
            krait_server_stop(srv);
            break;
        case 12: {
            fake_worker *w = &workers[ARG() % MAX_WORKERS];
            uint8_t s = ARG(), ch = ARG();
            if (w->fd >= 0)
                worker_channel(w, s, ch);
            break;
        }
        case 13: {
            fake_worker *w = &workers[ARG() % MAX_WORKERS];
            uint8_t ch = ARG(), m = ARG();
            if (w->fd >= 0)
                worker_publish(w, ch, m);
            break;
        }
        case 14: {
            const char *name = channel_names[ARG() % 3];
            krait_server_publish(srv, name, strlen(name), "from afar", 9, 0);
            break;
        }
        case 11: {
            fake_worker *w = &workers[ARG() % MAX_WORKERS];
            uint8_t r = ARG(), a = ARG(), t = ARG();
            if (w->fd >= 0)
                worker_route(w, r, a, t);
            break;
        }
        case 15: {
            fake_worker *w = &workers[ARG() % MAX_WORKERS];
            uint8_t fl = ARG();
            if (w->fd >= 0)
                worker_cache(w, fl);
            break;
        }
        }
        if (turn_both(&lp_done, &hub_done))
            stopped = 1;
        for (int w = 0; w < MAX_WORKERS; w++)
            if (workers[w].fd >= 0)
                worker_take(&workers[w]);
    }
    /* Wind down: everyone reads, the workers answer what they hold, then a stop. */
    for (int round = 0; round < 4 && !stopped; round++) {
        for (int k = 0; k < MAX_CLIENTS; k++)
            if (clients[k] >= 0)
                client_drain(clients[k]);
        for (int w = 0; w < MAX_WORKERS; w++)
            if (workers[w].fd >= 0)
                worker_answer_right(&workers[w]);
        if (turn_both(&lp_done, &hub_done))
            stopped = 1;
    }
    krait_server_stop(srv);
    for (int round = 0; round < 8 && !stopped; round++) {
        srv->clock_offset_ms += 1000;
        lp->clock_offset_ms += 1000;
        if (turn_both(&lp_done, &hub_done))
            stopped = 1;
    }
    krait__loop_end(lp);
    krait__loop_end(srv);
    krait_server_free(srv);
    srv = NULL;
    check_log(logfd, json);
    close(logfd);
    for (int k = 0; k < MAX_CLIENTS; k++)
        if (clients[k] >= 0)
            close(clients[k]);
    for (int w = 0; w < MAX_WORKERS; w++)
        if (workers[w].fd >= 0)
            close(workers[w].fd);
    return 0;
}
