/* The access log's JSON line, sans-IO: escaping hostile bytes into JSON strings and rendering a
 * line's head (the request) and tail (the answer). Where the record comes from, when the line is
 * written and under which lock are response.c's; this file only turns values into bytes. */
#include "logjson.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char hex[] = "0123456789abcdef";

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
        char unit[6];
        size_t un, take = 1;
        const unsigned char *pass = NULL;
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            unit[0] = (char)c;
            un = 1;
        } else if (c == '"') {
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
    (sizeof "{\"time\":\"+99999-12-31T23:59:59.999Z\",\"remote\":,\"method\":,\"path\":,"          \
            "\"version\":\"HTTP/1.2147483647\",\"host\":,\"referer\":,\"ua\":,\"tls\":,")
_Static_assert(HEAD_FIXED + KRAIT__LOGJSON_REMOTE_MAX + KRAIT__LOGJSON_METHOD_MAX +
                       KRAIT__LOGJSON_PATH_MAX + KRAIT__LOGJSON_HOST_MAX +
                       KRAIT__LOGJSON_REFERER_MAX + KRAIT__LOGJSON_UA_MAX +
                       KRAIT__LOGJSON_TLS_MAX <= KRAIT__LOGJSON_HEAD_MAX,
               "the head's caps must fit KRAIT__LOGJSON_HEAD_MAX");

size_t krait__logjson_head_render(char *dst, size_t cap, const krait__logjson_head *h, int *cut)
{
    if (cap < KRAIT__LOGJSON_HEAD_MAX)
        return 0;
    out b = {dst, 0, 0};
    /* ISO 8601 in UTC with milliseconds: 2026-12-07T12:00:00.123Z. */
    int64_t sec = h->time_ms / 1000, ms = h->time_ms % 1000;
    if (ms < 0) {
        ms += 1000;
        sec--;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    char tmp[64];
    int n = -1;
    if (gmtime_r(&t, &tm) && tm.tm_year > -1900 && tm.tm_year < 99999 - 1900)
        n = snprintf(tmp, sizeof tmp, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)ms);
    if (n > 0 && (size_t)n < sizeof tmp) {
        memcpy(b.d, tmp, (size_t)n);
        b.len = (size_t)n;
    } else {
        lit(&b, "{\"time\":null,");
    }
    field(&b, "\"remote\":", h->remote, KRAIT__LOGJSON_REMOTE_MAX);
    field(&b, "\"method\":", h->method, KRAIT__LOGJSON_METHOD_MAX);
    field(&b, "\"path\":", h->path, KRAIT__LOGJSON_PATH_MAX);
    if (h->version_minor >= 0) {
        n = snprintf(tmp, sizeof tmp, "\"version\":\"HTTP/1.%d\",", h->version_minor);
        memcpy(b.d + b.len, tmp, (size_t)n);
        b.len += (size_t)n;
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
    char tmp[192];
    int n = snprintf(tmp, sizeof tmp,
                     "\"status\":%d,\"bytes\":%llu,\"duration\":%lld.%06lld,\"loop\":%d,",
                     t->status, (unsigned long long)t->bytes, (long long)(ns / 1000000000),
                     (long long)(ns % 1000000000 / 1000), t->loop);
    if (n > 0 && (size_t)n < sizeof tmp) {
        memcpy(b.d + b.len, tmp, (size_t)n);
        b.len += (size_t)n;
    }
    if (t->worker >= 0 && t->worker_pid > 0)
        n = snprintf(tmp, sizeof tmp, "\"worker\":%d,\"worker_pid\":%d,", t->worker,
                     t->worker_pid);
    else
        n = snprintf(tmp, sizeof tmp, "\"worker\":null,\"worker_pid\":null,");
    if (n > 0 && (size_t)n < sizeof tmp) {
        memcpy(b.d + b.len, tmp, (size_t)n);
        b.len += (size_t)n;
    }
    lit(&b, t->truncated ? "\"truncated\":true}\n" : "\"truncated\":false}\n");
    return b.len;
}
