/* Worker protocol codec (wire format in ipc.h): encodes the REQUEST frames the core sends and
 * parses, bounds-checks and walks the RESPONSE, CHUNK and END frames a worker sends back.
 * Sans-IO: no syscalls, no allocation, integers written byte by byte. Socket I/O, the queue of
 * idle workers and what a response header may contain (CR/LF, the core-owned headers) are left
 * to the dispatch code in worker.c. */
#include "ipc.h"

#include <string.h>

#define U16_MAX_COUNT 0xffffu

/* ---- little-endian primitives ---- */

static void put_u16(uint8_t *o, uint16_t v)
{
    o[0] = (uint8_t)v;
    o[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)v;
    o[1] = (uint8_t)(v >> 8);
    o[2] = (uint8_t)(v >> 16);
    o[3] = (uint8_t)(v >> 24);
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- encoding ---- */

/* Saturating add: a size that cannot be represented stays SIZE_MAX, which is over the frame
 * limit, so a caller with absurd slice lengths gets -1 from the encoder instead of a wrap. */
static size_t add_sat(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static size_t str_size(krait__slice s)
{
    return add_sat(4, s.n);
}

static size_t pairs_size(const krait__slice *kv, size_t npairs)
{
    size_t n = 2;
    for (size_t i = 0; i < 2 * npairs; i++)
        n = add_sat(n, str_size(kv[i]));
    return n;
}

size_t krait__ipc_request_size(const krait__ipc_request *r)
{
    /* header, u8 flags, i32 route, six strings, u16 port, a string and u16 port, two pair
     * lists, the body string */
    size_t n = KRAIT__IPC_HEADER + 1 + 4 + 2 + 2;
    n = add_sat(n, str_size(r->method));
    n = add_sat(n, str_size(r->path));
    n = add_sat(n, str_size(r->query));
    n = add_sat(n, str_size(r->version));
    n = add_sat(n, str_size(r->file));
    n = add_sat(n, str_size(r->remote_addr));
    n = add_sat(n, str_size(r->server_addr));
    n = add_sat(n, pairs_size(r->params, r->nparams));
    n = add_sat(n, pairs_size(r->headers, r->nheaders));
    return add_sat(n, str_size(r->body));
}

/* The caller has checked the total size, so every string length fits in a u32. A slice may be
 * {NULL, 0}; memcpy with a NULL source is undefined even for zero bytes, hence the guard. */
static uint8_t *put_str(uint8_t *o, krait__slice s)
{
    put_u32(o, (uint32_t)s.n);
    if (s.n)
        memcpy(o + 4, s.p, s.n);
    return o + 4 + s.n;
}

/* ASCII-only lower-casing, independent of the C locale; bytes >= 0x80 pass through unchanged
 * (protocol.py mirrors this with bytes.lower()). */
static uint8_t *put_str_lower(uint8_t *o, krait__slice s)
{
    put_u32(o, (uint32_t)s.n);
    o += 4;
    for (size_t i = 0; i < s.n; i++) {
        uint8_t c = (uint8_t)s.p[i];
        *o++ = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
    }
    return o;
}

static uint8_t *put_pairs(uint8_t *o, const krait__slice *kv, size_t npairs, int lower_names)
{
    put_u16(o, (uint16_t)npairs);
    o += 2;
    for (size_t i = 0; i < npairs; i++) {
        o = lower_names ? put_str_lower(o, kv[2 * i]) : put_str(o, kv[2 * i]);
        o = put_str(o, kv[2 * i + 1]);
    }
    return o;
}

long krait__ipc_encode_request(const krait__ipc_request *r, uint8_t *out, size_t cap)
{
    /* Counts first: request_size walks the arrays, and a count over 65535 is refused anyway. */
    if (r->nparams > U16_MAX_COUNT || r->nheaders > U16_MAX_COUNT)
        return -1;
    size_t size = krait__ipc_request_size(r);
    if (size > KRAIT__IPC_MAX_FRAME || size > cap || out == NULL)
        return -1;

    uint8_t *o = out;
    put_u32(o, (uint32_t)(size - 4));
    o[4] = KRAIT__IPC_REQUEST;
    put_u32(o + 5, r->id);
    o[9] = r->flags;
    put_u32(o + 10, (uint32_t)r->route);  /* two's complement: -1 is ff ff ff ff */
    o += KRAIT__IPC_HEADER + 1 + 4;
    o = put_str(o, r->method);
    o = put_str(o, r->path);
    o = put_str(o, r->query);
    o = put_str(o, r->version);
    o = put_str(o, r->file);
    o = put_str(o, r->remote_addr);
    put_u16(o, r->remote_port);
    o += 2;
    o = put_str(o, r->server_addr);
    put_u16(o, r->server_port);
    o += 2;
    o = put_pairs(o, r->params, r->nparams, 0);
    o = put_pairs(o, r->headers, r->nheaders, 1);
    o = put_str(o, r->body);
    return (long)(o - out);
}

/* ---- parsing ---- */

/* A read cursor over one frame's payload. Every take checks the bytes left first, so no
 * length from the peer is ever added to a pointer before it has been compared with what is
 * really there (a u32 length of 0xffffffff cannot wrap anything). */
typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} reader;

static const uint8_t *take(reader *rd, size_t n)
{
    if ((size_t)(rd->end - rd->p) < n)
        return NULL;
    const uint8_t *at = rd->p;
    rd->p += n;
    return at;
}

static int take_str(reader *rd, krait__slice *s)
{
    const uint8_t *len = take(rd, 4);
    if (!len)
        return -1;
    size_t n = get_u32(len);
    const uint8_t *at = take(rd, n);
    if (!at)
        return -1;
    s->p = (const char *)at;
    s->n = n;
    return 0;
}

static int worker_type(uint8_t type)
{
    return type == KRAIT__IPC_RESPONSE || type == KRAIT__IPC_CHUNK || type == KRAIT__IPC_END ||
           type == KRAIT__IPC_WS_MESSAGE || type == KRAIT__IPC_WS_CLOSE ||
           type == KRAIT__IPC_ROUTE_ANSWER || type == KRAIT__IPC_WS_SUBSCRIBE ||
           type == KRAIT__IPC_WS_UNSUBSCRIBE || type == KRAIT__IPC_PUBLISH ||
           type == KRAIT__IPC_CACHE_ANSWER;
}

/* The flags krait.config's cache lists can give a file (krait/_site.py Rules.cache_flags):
 * NO_STORE alone, or PRIVATE or PUBLIC (not both), with or without LONG. The values are
 * KRAIT_CACHE_* of krait.h (1, 2, 4, 8), which this sans-IO file does not include. */
static int cache_flags_ok(uint32_t flags)
{
    if (flags & ~15u)
        return 0;
    if (flags & 1u)
        return flags == 1u;
    return (flags & 6u) != 6u;
}

static int body_kind_ok(uint8_t kind, krait__slice body)
{
    switch (kind) {
    case KRAIT__BODY_INLINE:
        return 1;
    case KRAIT__BODY_FILE:
        /* The core opens this path, so it must be a usable C string: an empty path or one
         * with a NUL would name a different file than the worker meant. */
        return body.n > 0 && memchr(body.p, '\0', body.n) == NULL;
    case KRAIT__BODY_STREAM:
        return body.n == 0;  /* the body arrives as CHUNK frames, never here */
    default:
        return 0;
    }
}

/* Frame layout is validated in two stages so that garbage is refused as early as possible and
 * the answer never depends on how the bytes were split:
 *   - with 4 bytes the length is known: under 5 (type + id) or over the frame limit is -1;
 *   - with 5 bytes the type is known: anything but a worker → core type is -1 (a REQUEST is
 *     core -> worker only, so a worker sending one is broken);
 *   - with the whole frame the payload is checked field by field and must end exactly at the
 *     frame's end.
 * A prefix of a valid frame therefore always gives NEED_MORE, and a prefix of an invalid one
 * gives NEED_MORE or -1, then -1 for every longer prefix. *f is written only on success. */
long krait__ipc_parse(const uint8_t *buf, size_t len, krait__ipc_frame *f)
{
    if (len < 4)
        return KRAIT__IPC_NEED_MORE;
    uint32_t flen = get_u32(buf);
    if (flen < KRAIT__IPC_HEADER - 4 || flen > KRAIT__IPC_MAX_FRAME - 4)
        return -1;
    if (len < 5)
        return KRAIT__IPC_NEED_MORE;
    uint8_t type = buf[4];
    if (!worker_type(type))
        return -1;
    size_t total = 4 + (size_t)flen;
    if (len < total)
        return KRAIT__IPC_NEED_MORE;

    krait__ipc_frame out;
    memset(&out, 0, sizeof out);
    out.type = type;
    out.id = get_u32(buf + 5);
    reader rd = { buf + KRAIT__IPC_HEADER, buf + total };

    if (type == KRAIT__IPC_RESPONSE) {
        const uint8_t *fixed = take(&rd, 2 + 1 + 2);
        if (!fixed)
            return -1;
        out.status = get_u16(fixed);
        out.body_kind = fixed[2];
        out.nheaders = get_u16(fixed + 3);
        if (out.status < 100 || out.status > 999)
            return -1;
        out.headers_at = rd.p;
        /* Each pair takes at least 8 bytes, so a lying count runs out of frame within
         * flen / 8 iterations and never reads past buf + total. */
        for (size_t i = 0; i < out.nheaders; i++) {
            krait__slice name, value;
            if (take_str(&rd, &name) < 0 || take_str(&rd, &value) < 0)
                return -1;
        }
        if (take_str(&rd, &out.body) < 0 || !body_kind_ok(out.body_kind, out.body))
            return -1;
    } else if (type == KRAIT__IPC_CHUNK) {
        if (take_str(&rd, &out.body) < 0)
            return -1;
    } else if (type == KRAIT__IPC_WS_MESSAGE) {
        const uint8_t *kind = take(&rd, 1);
        if (!kind || (kind[0] != 1 && kind[0] != 2) || take_str(&rd, &out.body) < 0)
            return -1;
        out.body_kind = kind[0];
    } else if (type == KRAIT__IPC_WS_CLOSE) {
        const uint8_t *code = take(&rd, 2);
        if (!code || take_str(&rd, &out.body) < 0)
            return -1;
        out.status = get_u16(code);
    } else if (type == KRAIT__IPC_ROUTE_ANSWER) {
        const uint8_t *fixed = take(&rd, 8);
        if (!fixed || take_str(&rd, &out.body) < 0 || take_str(&rd, &out.params) < 0)
            return -1;
        out.route = (int32_t)get_u32(fixed);
        out.allow = get_u32(fixed + 4);
        if (out.route < -1)
            return -1;
    } else if (type == KRAIT__IPC_CACHE_ANSWER) {
        const uint8_t *fixed = take(&rd, 4);
        if (!fixed)
            return -1;
        out.allow = get_u32(fixed);
        if (!cache_flags_ok(out.allow))
            return -1;
    } else if (type == KRAIT__IPC_WS_SUBSCRIBE || type == KRAIT__IPC_WS_UNSUBSCRIBE) {
        if (take_str(&rd, &out.body) < 0)
            return -1;
    } else if (type == KRAIT__IPC_PUBLISH) {
        const uint8_t *kind = take(&rd, 1);
        if (!kind || (kind[0] != 1 && kind[0] != 2) || take_str(&rd, &out.params) < 0 ||
            take_str(&rd, &out.body) < 0)
            return -1;
        out.body_kind = kind[0];
    }
    /* END has an empty payload; for every type the fields must fill the frame exactly. */
    if (rd.p != rd.end)
        return -1;
    *f = out;
    return (long)total;
}

void krait__ipc_next_pair(const uint8_t **at, krait__slice *name, krait__slice *value)
{
    const uint8_t *p = *at;
    name->n = get_u32(p);
    name->p = (const char *)(p + 4);
    p += 4 + name->n;
    value->n = get_u32(p);
    value->p = (const char *)(p + 4);
    p += 4 + value->n;
    *at = p;
}

long krait__ipc_encode_ws(uint8_t type, uint32_t id, unsigned arg, const char *data, size_t len,
                          uint8_t *out, size_t cap)
{
    size_t fixed = type == KRAIT__IPC_WS_CLOSE ? 2 : 1;
    size_t total = KRAIT__IPC_HEADER + fixed + 4 + len;
    if ((type != KRAIT__IPC_WS_MESSAGE && type != KRAIT__IPC_WS_CLOSE) || total > cap ||
        total > KRAIT__IPC_MAX_FRAME)
        return -1;
    put_u32(out, (uint32_t)(total - 4));
    out[4] = type;
    put_u32(out + 5, id);
    uint8_t *o = out + KRAIT__IPC_HEADER;
    if (type == KRAIT__IPC_WS_CLOSE) {
        put_u16(o, (uint16_t)arg);
        o += 2;
    } else {
        *o++ = (uint8_t)arg;
    }
    put_u32(o, (uint32_t)len);
    if (len)
        memcpy(o + 4, data, len);
    return (long)total;
}
