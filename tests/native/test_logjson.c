/* logjson.c: JSON escaping of hostile bytes and the access log's JSON line. Every output is
 * checked by json_check.h (a separate strict parser) and decoded back to the input bytes. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "json_check.h"
#include "logjson.h"

static char out[1 << 16];
static unsigned char dec[1 << 16], raw[1 << 16];

/* Escape in[0..n) (placed against a guard page) into at most cap bytes; check the result is a
 * valid JSON string inside, that it stands for exactly the input's first *used bytes, and
 * return its length. */
static size_t escape_checked(const void *in, size_t n, size_t cap, size_t *used, const char *what)
{
    guarded g = guarded_copy(in, n);
    size_t u = 0;
    size_t w = krait__json_escape(out, cap, g.data, n, &u);
    ok(w <= cap, "%s: %zu bytes written for a cap of %zu", what, w, cap);
    ok(u <= n, "%s: used %zu of %zu", what, u, n);
    long d = jc_string(out, w, dec);
    ok(d >= 0, "%s: not a valid JSON string: %.*s", what, (int)w, out);
    if (d >= 0) {
        long b = jc_bytes(dec, (size_t)d, raw);
        ok(b == (long)u && memcmp(raw, in, u) == 0, "%s: does not decode to the input", what);
    }
    guarded_free(g);
    if (used)
        *used = u;
    return w;
}

static void expect(const char *in, size_t n, const char *want, const char *what)
{
    size_t used;
    size_t w = escape_checked(in, n, sizeof out, &used, what);
    ok(used == n, "%s: all used", what);
    ok(w == strlen(want) && memcmp(out, want, w) == 0, "%s: got '%.*s', want '%s'", what,
       (int)w, out, want);
}

static void test_vectors(void)
{
    expect("/a/b?c=d", 8, "/a/b?c=d", "plain");
    /* Every printable ASCII character but '"' and '\\' passes as it is, space included. */
    char ascii[128];
    size_t na = 0;
    for (int c = 0x20; c < 0x7f; c++)
        if (c != '"' && c != '\\')
            ascii[na++] = (char)c;
    ascii[na] = '\0';
    expect(ascii, na, ascii, "printable ASCII");
    expect("Mozilla/5.0 (X11; Linux x86_64)", 31, "Mozilla/5.0 (X11; Linux x86_64)", "spaces");
    expect("\"", 1, "\\\"", "quote");
    expect("\\", 1, "\\\\x5c", "backslash: the text \\x5c");
    expect("\n\r\t", 3, "\\u000a\\u000d\\u0009", "controls: \\u00XX");
    expect("\0", 1, "\\u0000", "NUL");
    expect("\x7f", 1, "\\u007f", "DEL");
    expect("caf\xc3\xa9", 5, "caf\xc3\xa9", "valid UTF-8 passes");
    expect("\xe2\x82\xac\xf0\x9f\x90\x8d", 7, "\xe2\x82\xac\xf0\x9f\x90\x8d", "3 and 4 bytes");
    expect("\xf4\x8f\xbf\xbf", 4, "\xf4\x8f\xbf\xbf", "U+10FFFF");
    expect("\xc2\x9b", 2, "\\u009b", "C1 control (CSI)");
    expect("\xc2\xa0", 2, "\xc2\xa0", "U+00A0 passes");
    expect("\xc3", 1, "\\\\xc3", "a lone lead byte");
    expect("\xc3(", 2, "\\\\xc3(", "a lead byte without its continuation");
    expect("\xc0\xaf", 2, "\\\\xc0\\\\xaf", "overlong '/'");
    expect("\xe0\x80\xaf", 3, "\\\\xe0\\\\x80\\\\xaf", "overlong, 3 bytes");
    expect("\xed\xa0\x80", 3, "\\\\xed\\\\xa0\\\\x80", "a UTF-16 surrogate");
    expect("\xf4\x90\x80\x80", 4, "\\\\xf4\\\\x90\\\\x80\\\\x80", "past U+10FFFF");
    expect("\xf5\x80\x80\x80", 4, "\\\\xf5\\\\x80\\\\x80\\\\x80", "lead byte F5");
    expect("\xe2\x82", 2, "\\\\xe2\\\\x82", "a cut 3-byte sequence");
    expect("\xff\xfe", 2, "\\\\xff\\\\xfe", "FF FE");
    expect("\\x41", 4, "\\\\x5cx41", "a client's own \\x41 stays distinguishable");
}

static void test_every_byte(void)
{
    char what[64];
    for (int c = 0; c < 256; c++) {
        char in[3] = {'a', (char)c, 'b'};
        snprintf(what, sizeof what, "byte %d", c);
        escape_checked(in, sizeof in, sizeof out, NULL, what);
    }
    unsigned char all[256];
    for (int c = 0; c < 256; c++)
        all[c] = (unsigned char)c;
    escape_checked(all, sizeof all, sizeof out, NULL, "bytes 0..255");
    /* Every pair: each lead byte with each follower, and the same at the very end of the
     * input (against the guard page: a sequence cut by the end is never read past it). */
    int bad = 0;
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++) {
            unsigned char in[2] = {(unsigned char)a, (unsigned char)b};
            size_t w = krait__json_escape(out, sizeof out, (const char *)in, 2, NULL);
            long d = jc_string(out, w, dec);
            if (d < 0 || jc_bytes(dec, (size_t)d, raw) != 2 || memcmp(raw, in, 2) != 0)
                bad++;
        }
    ok(bad == 0, "%d byte pairs do not round-trip", bad);
    escape_checked("\xf0\x9f\x90", 3, sizeof out, NULL, "a 4-byte sequence cut by the end");
}

static void test_caps(void)
{
    /* A hostile string cut at every cap: never more than the cap, never half an escape or a
     * UTF-8 sequence (the checker would refuse it), and what is written stands for a prefix. */
    const char in[] = "a\"\\\n\xc3\xa9\xff\xf0\x9f\x90\x8d\x01z\xe2\x82\xac\xc2\x9b";
    size_t n = sizeof in - 1, prev_used = 0;
    char what[64];
    for (size_t cap = 0; cap <= 64; cap++) {
        size_t used;
        snprintf(what, sizeof what, "cap %zu", cap);
        escape_checked(in, n, cap, &used, what);
        ok(used >= prev_used, "%s: used shrank", what);
        prev_used = used;
    }
    ok(prev_used == n, "a cap of 64 holds it all");
}

static krait__logjson_head head_of(const char *path, size_t path_n, const char *ua, size_t ua_n)
{
    krait__logjson_head h = {
        .time_ms = 1796644800123LL,
        .remote = {"203.0.113.9", 11},
        .method = {"GET", 3},
        .path = {path, path_n},
        .host = {"example.org", 11},
        .referer = {NULL, 0},
        .ua = {ua, ua_n},
        .tls = {"TLSv1.3", 7},
        .version_minor = 1,
    };
    return h;
}

static const char *const keys[] = {"time", "remote", "peer", "method", "path", "version", "host",
                                   "referer", "ua", "tls", "id", "status", "bytes", "duration",
                                   "loop", "worker", "worker_pid", "truncated"};
#define NKEYS (sizeof keys / sizeof keys[0])

static char line[KRAIT__LOGJSON_HEAD_MAX + KRAIT__LOGJSON_TAIL_MAX];

/* Render a whole line and parse it: the keys, in order. Returns its length. */
static size_t line_checked(const krait__logjson_head *h, const krait__logjson_tail *t_in,
                           jc_pair *pairs, int *cut, const char *what)
{
    memset(line, 'X', sizeof line);
    size_t hn = krait__logjson_head_render(line, KRAIT__LOGJSON_HEAD_MAX, h, cut);
    ok(hn > 0 && hn <= KRAIT__LOGJSON_HEAD_MAX, "%s: head of %zu bytes", what, hn);
    krait__logjson_tail t = *t_in;
    t.truncated = *cut;
    size_t tn = krait__logjson_tail_render(line + hn, KRAIT__LOGJSON_TAIL_MAX, &t);
    ok(tn > 0 && tn <= KRAIT__LOGJSON_TAIL_MAX, "%s: tail of %zu bytes", what, tn);
    int np = jc_line(line, hn + tn, pairs, 32);
    ok(np == (int)NKEYS, "%s: %d pairs in %.*s", what, np, (int)(hn + tn), line);
    for (int i = 0; i < np && i < (int)NKEYS; i++)
        ok(pairs[i].key_len == strlen(keys[i]) && !memcmp(pairs[i].key, keys[i], strlen(keys[i])),
           "%s: key %d is %.*s, want %s", what, i, (int)pairs[i].key_len, pairs[i].key, keys[i]);
    return hn + tn;
}

static int val_is(const jc_pair *p, int type, const char *text)
{
    return p->type == type && p->val_len == strlen(text) && !memcmp(p->val, text, p->val_len);
}

static void test_line(void)
{
    jc_pair p[32];
    int cut = -1;
    krait__logjson_head h = head_of("/x?y=1", 6, "curl/8.5.0", 10);
    krait__logjson_tail t = {.id = "4f1c2a9e0b7d-17", .id_len = 15, .status = 200, .bytes = 1234,
                             .duration_ns = 1234567, .loop = 2, .worker = 3, .worker_pid = 4711};
    line_checked(&h, &t, p, &cut, "a plain line");
    const char *want =
        "{\"time\":\"2026-12-07T12:00:00.123Z\",\"remote\":\"203.0.113.9\",\"peer\":null,\"method\":\"GET\","
        "\"path\":\"/x?y=1\",\"version\":\"HTTP/1.1\",\"host\":\"example.org\",\"referer\":null,"
        "\"ua\":\"curl/8.5.0\",\"tls\":\"TLSv1.3\",\"id\":\"4f1c2a9e0b7d-17\",\"status\":200,"
        "\"bytes\":1234,\"duration\":0.001234,\"loop\":2,\"worker\":3,\"worker_pid\":4711,"
        "\"truncated\":false}\n";
    ok(!memcmp(line, want, strlen(want)), "the plain line: %.*s", (int)strlen(want), line);
    ok(cut == 0, "nothing cut");

    /* No request line (a 400 for an unparseable head, a 408), plain TCP, no worker, no id. */
    krait__logjson_head none = {.time_ms = -1500, .remote = {"unix", 4}, .version_minor = -1};
    krait__logjson_tail t0 = {.status = 400, .worker = -1, .duration_ns = -5};
    line_checked(&none, &t0, p, &cut, "no request");
    ok(val_is(&p[0], JC_STRING, "1969-12-31T23:59:58.500Z"), "a time before 1970");
    for (int i = 2; i <= 9; i++)
        ok(p[i].type == JC_NULL, "field %d null without a request", i);
    ok(val_is(&p[10], JC_NULL, "null") && val_is(&p[15], JC_NULL, "null") &&
           val_is(&p[16], JC_NULL, "null"), "id and worker null");
    ok(val_is(&p[13], JC_NUMBER, "0.000000"), "a negative duration is 0");

    /* Ids: only the allowed characters, 1..128 of them. */
    char id[200];
    memset(id, 'a', sizeof id);
    const struct { const char *id; size_t n; int good; } ids[] = {
        {"abc-XYZ_0.9:+/=", 15, 1}, {id, 128, 1}, {id, 129, 0}, {"", 0, 0},
        {"a\"b", 3, 0}, {"a\\b", 3, 0}, {"a b", 3, 0}, {"a\nb", 3, 0}, {"\xc3\xa9", 2, 0},
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        ok(krait__request_id_ok(ids[i].id, ids[i].n) == ids[i].good, "id %zu", i);
        krait__logjson_tail ti = t;
        ti.id = ids[i].id;
        ti.id_len = ids[i].n;
        line_checked(&h, &ti, p, &cut, "ids");
        ok((p[10].type == JC_STRING) == ids[i].good, "id %zu written only when valid", i);
    }

    /* The widest numbers still fit the tail. */
    krait__logjson_tail big = {.id = id, .id_len = 128, .status = INT_MIN, .bytes = UINT64_MAX,
                               .duration_ns = INT64_MAX, .loop = INT_MIN, .worker = INT_MAX,
                               .worker_pid = INT_MAX, .truncated = 1};
    char tail[KRAIT__LOGJSON_TAIL_MAX + 16];
    memset(tail, 'X', sizeof tail);
    size_t tn = krait__logjson_tail_render(tail, KRAIT__LOGJSON_TAIL_MAX, &big);
    ok(tn <= KRAIT__LOGJSON_TAIL_MAX && tail[KRAIT__LOGJSON_TAIL_MAX] == 'X',
       "the widest tail is %zu bytes", tn);
    ok(tn > 2 && tail[tn - 2] == '}' && tail[tn - 1] == '\n', "it is whole");
    ok(krait__logjson_tail_render(tail, KRAIT__LOGJSON_TAIL_MAX - 1, &big) == 0,
       "a tail buffer under the maximum is refused");
}

static void test_long_fields(void)
{
    /* Fields longer than their caps, of every kind of byte: the head stays within its bound,
     * the line parses, the cut is flagged, and each cut field is a prefix of the input. */
    static char path[8192], ua[8192];
    const char fills[][2] = {"a", "\"", "\\", "\x01", "\xff", "\xc3"};
    jc_pair p[32];
    for (size_t f = 0; f < sizeof fills / sizeof fills[0]; f++)
        for (size_t shift = 0; shift < 3; shift++) {
            for (size_t i = 0; i < sizeof path; i++) {
                path[i] = (i + shift) % 7 == 0 ? 'x' : fills[f][0];
                ua[i] = (i + shift) % 3 == 0 ? '\xa9' : fills[(f + 1) % 6][0];
            }
            krait__logjson_head h = head_of(path, sizeof path, ua, sizeof ua);
            h.referer.p = ua;
            h.referer.n = sizeof ua;
            h.host.p = path;
            h.host.n = sizeof path;
            h.method.p = path;
            h.method.n = 300;
            h.remote.p = ua;
            h.remote.n = 300;
            h.peer.p = ua;
            h.peer.n = 300;
            h.tls.p = ua;
            h.tls.n = 300;
            krait__logjson_tail t = {.status = 200, .worker = -1};
            int cut = 0;
            size_t n = line_checked(&h, &t, p, &cut, "long fields");
            ok(cut == 1 && val_is(&p[17], JC_TRUE, "true"), "a cut is flagged");
            ok(n <= KRAIT__LOGJSON_HEAD_MAX + KRAIT__LOGJSON_TAIL_MAX, "line of %zu bytes", n);
            /* Each string decodes to a prefix of what was given. */
            const struct { int k; const char *src; size_t cap; } fs[] = {
                {1, ua, KRAIT__LOGJSON_REMOTE_MAX}, {2, ua, KRAIT__LOGJSON_REMOTE_MAX},
                {3, path, KRAIT__LOGJSON_METHOD_MAX}, {4, path, KRAIT__LOGJSON_PATH_MAX},
                {6, path, KRAIT__LOGJSON_HOST_MAX}, {7, ua, KRAIT__LOGJSON_REFERER_MAX},
                {8, ua, KRAIT__LOGJSON_UA_MAX}, {9, ua, KRAIT__LOGJSON_TLS_MAX}};
            for (size_t k = 0; k < sizeof fs / sizeof fs[0]; k++) {
                const jc_pair *q = &p[fs[k].k];
                ok(q->type == JC_STRING && q->val_len + 2 <= fs[k].cap && q->val_len + 2 + 5 >=
                   fs[k].cap, "field %d: %zu bytes for a cap of %zu", fs[k].k, q->val_len,
                   fs[k].cap);
                long d = jc_string(q->val, q->val_len, dec);
                long b = d < 0 ? -1 : jc_bytes(dec, (size_t)d, raw);
                ok(b > 0 && memcmp(raw, fs[k].src, (size_t)b) == 0, "field %d: a prefix",
                   fs[k].k);
            }
        }
}

/* The head's time against gmtime_r, over years 0000-9999 and around their edges. */
static void test_time(void)
{
    const int64_t first = -62167219200000LL, last = 253402300799999LL;  /* 0000, 9999 */
    int bad = 0;
    uint64_t x = 88172645463325252ULL;
    char line[KRAIT__LOGJSON_HEAD_MAX], want[64];
    for (int i = 0; i < 200000; i++) {
        int64_t ms;
        if (i < 4000) {  /* the edges, and each day around 1970 and 2000-2001 */
            const int64_t base[] = {first, last - 1999, 0, 951782400000LL};
            ms = base[i % 4] + (int64_t)(i / 4) * (i % 4 < 2 ? 1 : 86399999);
        } else {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;  /* xorshift64 */
            ms = first + (int64_t)(x % (uint64_t)(last - first + 1));
        }
        krait__logjson_head h = {.time_ms = ms, .version_minor = -1};
        size_t n = krait__logjson_head_render(line, sizeof line, &h, NULL);
        int64_t sec = ms / 1000 - (ms % 1000 < 0);
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        int w = snprintf(want, sizeof want, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                         tm.tm_sec, (int)(ms - sec * 1000));
        if (n < (size_t)w || memcmp(line, want, (size_t)w) != 0) {
            if (bad++ < 5)
                ok(0, "time %lld: got %.40s, want %s", (long long)ms, line, want);
        }
    }
    ok(bad == 0, "%d times differ from gmtime_r", bad);
    const int64_t outside[] = {first - 1, last + 1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
        krait__logjson_head h = {.time_ms = outside[i], .version_minor = -1};
        krait__logjson_head_render(line, sizeof line, &h, NULL);
        ok(strncmp(line, "{\"time\":null,", 13) == 0, "time %lld is null: %.40s",
           (long long)outside[i], line);
    }
}

int main(void)
{
    test_time();
    test_vectors();
    test_every_byte();
    test_caps();
    test_line();
    test_long_fields();
    return done();
}
