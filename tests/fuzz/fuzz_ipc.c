/* libFuzzer driver for the worker protocol (native/src/ipc.c). Every input is used twice: as a
 * stream of worker -> core frames for krait__ipc_parse (each slice and header pair must stay
 * inside the frame, a frame minus one byte must need more), and as the fields of a REQUEST that
 * is encoded, checked against krait__ipc_request_size and decoded back field by field. */
#include "ipc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

/* Is s inside [lo, hi)? An empty slice may sit at hi or be NULL. */
static int inside(krait__slice s, const uint8_t *lo, const uint8_t *hi)
{
    const uint8_t *p = (const uint8_t *)s.p;
    if (p == NULL)
        return s.n == 0;
    return p >= lo && p <= hi && s.n <= (size_t)(hi - p);
}

static void parse_stream(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        const uint8_t *at = data + off;
        size_t left = size - off;
        krait__ipc_frame f, g;
        long n = krait__ipc_parse(at, left, &f);
        CHECK(n == -1 || n == KRAIT__IPC_NEED_MORE || (n >= (long)KRAIT__IPC_HEADER &&
                                                       (size_t)n <= left &&
                                                       n <= (long)KRAIT__IPC_MAX_FRAME));
        if (n < 0)
            return;
        CHECK(krait__ipc_parse(at, (size_t)n - 1, &g) == KRAIT__IPC_NEED_MORE);
        const uint8_t *end = at + n;
        CHECK(inside(f.body, at + KRAIT__IPC_HEADER, end));
        switch (f.type) {
        case KRAIT__IPC_RESPONSE: {
            CHECK(f.status >= 100 && f.status <= 999);
            CHECK(f.body_kind <= KRAIT__BODY_STREAM);
            CHECK(f.body_kind != KRAIT__BODY_STREAM || f.body.n == 0);
            CHECK(f.body_kind != KRAIT__BODY_FILE ||
                  (f.body.n > 0 && memchr(f.body.p, '\0', f.body.n) == NULL));
            const uint8_t *walk = f.headers_at;
            CHECK(walk >= at + KRAIT__IPC_HEADER && walk <= end);
            for (size_t i = 0; i < f.nheaders; i++) {
                krait__slice name, value;
                krait__ipc_next_pair(&walk, &name, &value);
                CHECK(inside(name, f.headers_at, end) && inside(value, f.headers_at, end));
                CHECK(walk <= end);
            }
            /* The pairs end where the body's length field starts. */
            CHECK(walk + 4 == (const uint8_t *)f.body.p);
            CHECK((const uint8_t *)f.body.p + f.body.n == end);
            break;
        }
        case KRAIT__IPC_CHUNK:
            CHECK(f.nheaders == 0 && (const uint8_t *)f.body.p + f.body.n == end);
            break;
        case KRAIT__IPC_WS_MESSAGE:
            CHECK((f.body_kind == 1 || f.body_kind == 2) &&
                  (const uint8_t *)f.body.p + f.body.n == end);
            break;
        case KRAIT__IPC_WS_CLOSE:
            CHECK((const uint8_t *)f.body.p + f.body.n == end);
            break;
        case KRAIT__IPC_END:
            CHECK(n == (long)KRAIT__IPC_HEADER && f.body.n == 0);
            break;
        case KRAIT__IPC_ROUTE_ANSWER:
            /* route | allow | str target (body) | str params, filling the frame. */
            CHECK(f.route >= -1 && inside(f.params, at + KRAIT__IPC_HEADER, end));
            CHECK((const uint8_t *)f.params.p + f.params.n == end);
            CHECK((const uint8_t *)f.body.p + f.body.n + 4 == (const uint8_t *)f.params.p);
            break;
        case KRAIT__IPC_WS_SUBSCRIBE:
        case KRAIT__IPC_WS_UNSUBSCRIBE:
            CHECK((const uint8_t *)f.body.p + f.body.n == end);
            break;
        case KRAIT__IPC_PUBLISH:
            /* kind | str channel (params) | str data (body), filling the frame. */
            CHECK((f.body_kind == 1 || f.body_kind == 2) &&
                  inside(f.params, at + KRAIT__IPC_HEADER, end) &&
                  (const uint8_t *)f.params.p + f.params.n + 4 == (const uint8_t *)f.body.p &&
                  (const uint8_t *)f.body.p + f.body.n == end);
            break;
        case KRAIT__IPC_CACHE_ANSWER:
            /* u32 flags, exactly: a combination the cache lists can give, nothing more. */
            CHECK(n == (long)KRAIT__IPC_HEADER + 4 && f.body.n == 0 && f.params.n == 0);
            CHECK(f.allow == 0 || f.allow == 1 || f.allow == 2 || f.allow == 4 ||
                  f.allow == 8 || f.allow == 10 || f.allow == 12);
            CHECK(f.allow == (uint32_t)at[9] && at[10] == 0 && at[11] == 0 && at[12] == 0);
            break;
        default:
            CHECK(0 && "unexpected frame type");
        }
        off += (size_t)n;
    }
}

/* ---- REQUEST re-encoding ---- */

#define MAX_PAIRS 16

typedef struct {
    const uint8_t *p, *end;
} cursor;

static uint8_t next_byte(cursor *c)
{
    return c->p < c->end ? *c->p++ : 0;
}

/* A slice of the input: a length byte, then up to that many bytes. */
static krait__slice next_slice(cursor *c)
{
    size_t want = next_byte(c) % 64;
    size_t have = (size_t)(c->end - c->p);
    krait__slice s = { (const char *)c->p, want < have ? want : have };
    c->p += s.n;
    return s;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Read one str at *p (the encoder's own output, but still bounds-checked) and compare it with
 * want; names are compared ASCII-lower-cased when lower is set. */
static void expect_str(const uint8_t **p, const uint8_t *end, krait__slice want, int lower)
{
    CHECK(end - *p >= 4);
    size_t n = rd32(*p);
    *p += 4;
    CHECK(n == want.n && (size_t)(end - *p) >= n);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)want.p[i];
        if (lower && c >= 'A' && c <= 'Z')
            c = (uint8_t)(c - 'A' + 'a');
        CHECK((*p)[i] == c);
    }
    *p += n;
}

static void expect_pairs(const uint8_t **p, const uint8_t *end, const krait__slice *kv,
                         size_t npairs, int lower)
{
    CHECK(end - *p >= 2);
    CHECK((size_t)((*p)[0] | (*p)[1] << 8) == npairs);
    *p += 2;
    for (size_t i = 0; i < npairs; i++) {
        expect_str(p, end, kv[2 * i], lower);
        expect_str(p, end, kv[2 * i + 1], 0);
    }
}

static void request_roundtrip(const uint8_t *data, size_t size)
{
    cursor c = { data, data + size };
    krait__slice params[2 * MAX_PAIRS], headers[2 * MAX_PAIRS];
    krait__ipc_request r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < 4; i++)
        r.id = r.id << 8 | next_byte(&c);
    r.flags = next_byte(&c);
    uint32_t route = 0;
    for (int i = 0; i < 4; i++)
        route = route << 8 | next_byte(&c);
    r.route = (int32_t)route;
    r.remote_port = (uint16_t)(next_byte(&c) << 8 | next_byte(&c));
    r.server_port = (uint16_t)(next_byte(&c) << 8 | next_byte(&c));
    r.nparams = next_byte(&c) % (MAX_PAIRS + 1);
    r.nheaders = next_byte(&c) % (MAX_PAIRS + 1);
    r.method = next_slice(&c);
    r.path = next_slice(&c);
    r.query = next_slice(&c);
    r.version = next_slice(&c);
    r.file = next_slice(&c);
    r.remote_addr = next_slice(&c);
    r.server_addr = next_slice(&c);
    for (size_t i = 0; i < 2 * r.nparams; i++)
        params[i] = next_slice(&c);
    for (size_t i = 0; i < 2 * r.nheaders; i++)
        headers[i] = next_slice(&c);
    r.params = r.nparams ? params : NULL;
    r.headers = r.nheaders ? headers : NULL;
    r.body = (krait__slice){ (const char *)c.p, (size_t)(c.end - c.p) };  /* the rest */

    size_t want = krait__ipc_request_size(&r);
    uint8_t *out = malloc(want);
    CHECK(out != NULL);
    CHECK(krait__ipc_encode_request(&r, out, want - 1) == -1);
    long n = krait__ipc_encode_request(&r, out, want);
    CHECK(n == (long)want);

    const uint8_t *p = out, *end = out + n;
    CHECK(rd32(p) == (uint32_t)(n - 4) && p[4] == KRAIT__IPC_REQUEST && rd32(p + 5) == r.id);
    CHECK(p[9] == r.flags && rd32(p + 10) == route);
    p += 14;
    expect_str(&p, end, r.method, 0);
    expect_str(&p, end, r.path, 0);
    expect_str(&p, end, r.query, 0);
    expect_str(&p, end, r.version, 0);
    expect_str(&p, end, r.file, 0);
    expect_str(&p, end, r.remote_addr, 0);
    CHECK(end - p >= 2 && (uint16_t)(p[0] | p[1] << 8) == r.remote_port);
    p += 2;
    expect_str(&p, end, r.server_addr, 0);
    CHECK(end - p >= 2 && (uint16_t)(p[0] | p[1] << 8) == r.server_port);
    p += 2;
    expect_pairs(&p, end, params, r.nparams, 0);
    expect_pairs(&p, end, headers, r.nheaders, 1);
    expect_str(&p, end, r.body, 0);
    CHECK(p == end);

    /* A worker must never be able to send a REQUEST back. */
    krait__ipc_frame f;
    CHECK(krait__ipc_parse(out, (size_t)n, &f) == -1);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parse_stream(data, size);
    request_roundtrip(data, size);
    return 0;
}
