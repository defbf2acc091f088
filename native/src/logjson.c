/* The access log's JSON line, sans-IO: escaping hostile bytes into JSON strings and rendering a
 * line's head (the request) and tail (the answer). Where the record comes from, when the line is
 * written and under which lock are response.c's; this file only turns values into bytes. */
#include "cache.h"
#include "logjson.h"

#include <string.h>

static const char hex[] = "0123456789abcdef";

/* Printable ASCII but '"' and '\\': copied as they are, a run at a time. */
#define R16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
static const unsigned char safe[256] = {
    R16(0), R16(0),
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,   /* 0x20-0x2f: '"' is 0x22 */
    R16(1),
    R16(1),
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,   /* 0x50-0x5f: '\\' is 0x5c */
    R16(1),
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,   /* 0x70-0x7f: DEL */
    R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0), R16(0)};
#define SAFE(c) safe[(unsigned char)(c)]

/* The length of the valid UTF-8 sequence at s[0..n) (RFC 3629 §4: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 when s[0] does not start one. s[0] >= 0x80. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;  /* the range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;  /* below: overlong */
        else if (c == 0xed)
            hi = 0x9f;  /* above: UTF-16 surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;  /* above: past U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

size_t krait__json_escape(char *dst, size_t cap, const char *src, size_t n, size_t *used)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0, i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (SAFE(c)) {
            /* The common case (a path, a user agent): one copy for the whole run. */
            size_t j = i + 1;
            while (j < n && SAFE(s[j]))
                j++;
            size_t run = j - i < cap - o ? j - i : cap - o;
            memcpy(dst + o, s + i, run);
            o += run;
            i += run;
            if (i < j)
                break;  /* out of room */
            continue;
        }
        char unit[6];
        size_t un, take = 1;
        const unsigned char *pass = NULL;
        if (c == '"') {
            unit[0] = '\\';
            unit[1] = '"';
            un = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(unit, "\\u00", 4);
            unit[4] = hex[c >> 4];
            unit[5] = hex[c & 15];
            un = 6;
        } else if (c != '\\' && (take = utf8_seq(s + i, n - i)) != 0) {
            if (take == 2 && c == 0xc2 && s[i + 1] < 0xa0) {
                /* U+0080..U+009F, the C1 controls (U+009B is a terminal's CSI): \u00XX. */
                memcpy(unit, "\\u00", 4);
                unit[4] = hex[s[i + 1] >> 4];
                unit[5] = hex[s[i + 1] & 15];
                un = 6;
            } else {
                pass = s + i;
                un = take;
            }
        } else {
            /* A backslash, or a byte of no valid UTF-8 sequence: the text \xHH. */
            take = 1;
            memcpy(unit, "\\\\x", 3);
            unit[3] = hex[c >> 4];
            unit[4] = hex[c & 15];
            un = 5;
        }
        if (un > cap - o)
            break;
        memcpy(dst + o, pass ? (const void *)pass : (const void *)unit, un);
        o += un;
        i += take;
    }
    if (used)
        *used = i;
    return o;
}

typedef struct {
    char *d;
    size_t len;
    int cut;
} out;

/* Decimal digits of v (snprintf costs more than the rest of a line: measured in design.md). */
static void num_u(out *b, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        b->d[b->len++] = tmp[--n];
}

static void num_i(out *b, int64_t v)
{
    if (v < 0) {
        b->d[b->len++] = '-';
        num_u(b, (uint64_t)0 - (uint64_t)v);
    } else {
        num_u(b, (uint64_t)v);
    }
}

/* v in exactly width digits (v < 10^width). */
static void num_w(out *b, unsigned v, int width)
{
    for (int k = width - 1; k >= 0; k--) {
        b->d[b->len + (size_t)k] = (char)('0' + v % 10);
        v /= 10;
    }
    b->len += (size_t)width;
}

static void lit(out *b, const char *s)
{
    size_t n = strlen(s);
    memcpy(b->d + b->len, s, n);
    b->len += n;
}

/* "key":"escaped" or "key":null; the string's quotes and text take at most cap bytes. */
static void field(out *b, const char *key, krait__logjson_str v, size_t cap)
{
    lit(b, key);
    if (!v.p) {
        lit(b, "null,");
        return;
    }
    size_t used;
    b->d[b->len++] = '"';
    b->len += krait__json_escape(b->d + b->len, cap - 2, v.p, v.n, &used);
    b->d[b->len++] = '"';
    b->d[b->len++] = ',';
    if (used < v.n)
        b->cut = 1;
}

/* The fixed text of a head: the keys, quotes, time and version. The caps and this add up to
 * less than KRAIT__LOGJSON_HEAD_MAX (checked below), so no field can push past the buffer. */
#define HEAD_FIXED                                                                                 \
    (sizeof "{\"time\":\"9999-12-31T23:59:59.999Z\",\"remote\":,\"peer\":,\"method\":,\"path\":,"          \
            "\"version\":\"HTTP/1.-2147483648\",\"host\":,\"referer\":,\"ua\":,\"tls\":,")
_Static_assert(HEAD_FIXED + 2 * KRAIT__LOGJSON_REMOTE_MAX + KRAIT__LOGJSON_METHOD_MAX +
                       KRAIT__LOGJSON_PATH_MAX + KRAIT__LOGJSON_HOST_MAX +
                       KRAIT__LOGJSON_REFERER_MAX + KRAIT__LOGJSON_UA_MAX +
                       KRAIT__LOGJSON_TLS_MAX <= KRAIT__LOGJSON_HEAD_MAX,
               "the head's caps must fit KRAIT__LOGJSON_HEAD_MAX");

size_t krait__logjson_head_render(char *dst, size_t cap, const krait__logjson_head *h, int *cut)
{
    if (cap < KRAIT__LOGJSON_HEAD_MAX)
        return 0;
    out b = {dst, 0, 0};
    /* ISO 8601 in UTC with milliseconds: 2026-12-07T12:00:00.123Z; years 0000-9999 (an
     * instant outside them, from a clock gone wrong, is null). */
    int64_t ms = h->time_ms % 1000, sec = h->time_ms / 1000;
    if (ms < 0) {
        ms += 1000;
        sec--;
    }
    int64_t days = sec / 86400, sod = sec % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    int64_t year;
    unsigned month, day;
    krait__civil_from_days(days, &year, &month, &day);
    if (year >= 0 && year <= 9999) {
        lit(&b, "{\"time\":\"");
        num_w(&b, (unsigned)year, 4);
        b.d[b.len++] = '-';
        num_w(&b, month, 2);
        b.d[b.len++] = '-';
        num_w(&b, day, 2);
        b.d[b.len++] = 'T';
        num_w(&b, (unsigned)(sod / 3600), 2);
        b.d[b.len++] = ':';
        num_w(&b, (unsigned)(sod / 60 % 60), 2);
        b.d[b.len++] = ':';
        num_w(&b, (unsigned)(sod % 60), 2);
        b.d[b.len++] = '.';
        num_w(&b, (unsigned)ms, 3);
        lit(&b, "Z\",");
    } else {
        lit(&b, "{\"time\":null,");
    }
    field(&b, "\"remote\":", h->remote, KRAIT__LOGJSON_REMOTE_MAX);
    field(&b, "\"peer\":", h->peer, KRAIT__LOGJSON_REMOTE_MAX);
    field(&b, "\"method\":", h->method, KRAIT__LOGJSON_METHOD_MAX);
    field(&b, "\"path\":", h->path, KRAIT__LOGJSON_PATH_MAX);
    if (h->version_minor >= 0) {
        lit(&b, "\"version\":\"HTTP/1.");
        num_i(&b, h->version_minor);
        lit(&b, "\",");
    } else {
        lit(&b, "\"version\":null,");
    }
    field(&b, "\"host\":", h->host, KRAIT__LOGJSON_HOST_MAX);
    field(&b, "\"referer\":", h->referer, KRAIT__LOGJSON_REFERER_MAX);
    field(&b, "\"ua\":", h->ua, KRAIT__LOGJSON_UA_MAX);
    field(&b, "\"tls\":", h->tls, KRAIT__LOGJSON_TLS_MAX);
    if (cut)
        *cut = b.cut;
    return b.len;
}

int krait__request_id_ok(const char *p, size_t n)
{
    if (n < 1 || n > KRAIT__LOGJSON_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c && strchr("-_.:+/=", c))))
            return 0;
    }
    return 1;
}

size_t krait__logjson_tail_render(char *dst, size_t cap, const krait__logjson_tail *t)
{
    if (cap < KRAIT__LOGJSON_TAIL_MAX)
        return 0;
    out b = {dst, 0, 0};
    if (t->id && krait__request_id_ok(t->id, t->id_len)) {
        lit(&b, "\"id\":\"");
        memcpy(b.d + b.len, t->id, t->id_len);
        b.len += t->id_len;
        lit(&b, "\",");
    } else {
        lit(&b, "\"id\":null,");
    }
    int64_t ns = t->duration_ns > 0 ? t->duration_ns : 0;
    lit(&b, "\"status\":");
    num_i(&b, t->status);
    lit(&b, ",\"bytes\":");
    num_u(&b, t->bytes);
    lit(&b, ",\"duration\":");
    num_u(&b, (uint64_t)(ns / 1000000000));
    b.d[b.len++] = '.';
    num_w(&b, (unsigned)(ns % 1000000000 / 1000), 6);
    lit(&b, ",\"loop\":");
    num_i(&b, t->loop);
    if (t->worker >= 0 && t->worker_pid > 0) {
        lit(&b, ",\"worker\":");
        num_i(&b, t->worker);
        lit(&b, ",\"worker_pid\":");
        num_i(&b, t->worker_pid);
        b.d[b.len++] = ',';
    } else {
        lit(&b, ",\"worker\":null,\"worker_pid\":null,");
    }
    lit(&b, t->truncated ? "\"truncated\":true}\n" : "\"truncated\":false}\n");
    return b.len;
}
