/* Unit tests for native/src/http.c: request-head parsing, header analysis, chunked decoding.
 * Every parser input is fed whole and as each growing prefix (which, for a stateless parser,
 * covers every two-piece split); every chunked input whole, one byte at a time, split at every
 * offset, with tiny output windows, and in place. Inputs sit against a PROT_NONE guard page. */
#include <stdint.h>

#include "harness.h"
#include "http.h"

#define S(lit) lit, sizeof(lit) - 1
#define HCAP 128

static const krait__http_limits DEF = {8192, 65536, 100};
static const krait__http_limits SMALL = {64, 512, 8};

/* ---------------------------------------------------------------------------------------- */
/* Request head                                                                              */

typedef struct {
    int rc;
    krait__req_head h;
    krait__header hdr[HCAP];
    size_t decided_at; /* shortest prefix that did not answer NEED_MORE, or n + 1 */
} head_res;

/* Rebase every slice of r from `from` to `to`, so results from different copies compare and
 * the caller can keep using them after the guarded copy is gone. */
static void rebase(head_res *r, const char *from, const char *to)
{
    if (r->rc < 0)
        return;
    r->h.method = to + (r->h.method - from);
    r->h.target = to + (r->h.target - from);
    for (size_t k = 0; k < r->h.nheaders; k++) {
        r->hdr[k].name = to + (r->hdr[k].name - from);
        r->hdr[k].value = to + (r->hdr[k].value - from);
    }
}

static int same_head(const head_res *a, const head_res *b)
{
    if (a->rc != b->rc || a->h.error_status != b->h.error_status)
        return 0;
    if (a->rc < 0)
        return 1;
    if (a->h.method != b->h.method || a->h.method_len != b->h.method_len ||
        a->h.target != b->h.target || a->h.target_len != b->h.target_len ||
        a->h.version_major != b->h.version_major || a->h.version_minor != b->h.version_minor ||
        a->h.nheaders != b->h.nheaders)
        return 0;
    for (size_t k = 0; k < a->h.nheaders; k++)
        if (a->hdr[k].name != b->hdr[k].name || a->hdr[k].name_len != b->hdr[k].name_len ||
            a->hdr[k].value != b->hdr[k].value || a->hdr[k].value_len != b->hdr[k].value_len)
            return 0;
    return 1;
}

/* Parse in[0..n) whole, then every prefix in[0..k) for k = 0..n, each ending at a guard page.
 * Checks the whole answer against want_rc/want_status, and that the prefixes answer NEED_MORE
 * up to some point and the whole answer from there on. The resumable parser gets the same
 * prefixes in turn (at a new address each time, as if the buffer moved) and must answer what
 * the stateless one does; it also gets every two-piece split. Result slices point into `in`. */
static void head3_at(const char *file, int line, const char *in, size_t n,
                     const krait__http_limits *lim, size_t hcap, int want_rc, int want_status,
                     head_res *res)
{
    static head_res tmp, rtmp;
    guarded g = guarded_copy(in, n);
    char *end = g.data + n;
    int monotone = 1, reached = 0, resumed_same = 1, split_same = 1;
    krait__http_resume rs;
    memset(&rs, 0, sizeof rs);

    res->rc = krait__http_parse_head(g.data, n, lim, &res->h, res->hdr, hcap);
    rebase(res, g.data, in);
    ok_at(res->rc == want_rc, file, line, "whole: rc %d, want %d", res->rc, want_rc);
    if (want_rc == KRAIT__MALFORMED)
        ok_at(res->h.error_status == want_status, file, line, "whole: status %d, want %d",
              res->h.error_status, want_status);
    if (res->rc >= 0)
        ok_at(res->h.error_status == 0 && res->h.nheaders <= hcap, file, line, "whole: fields");

    res->decided_at = n + 1;
    for (size_t k = 0; k <= n; k++) {
        char *p = end - k;
        memmove(p, in, k); /* prefix k ends at the guard page */
        tmp.rc = krait__http_parse_head(p, k, lim, &tmp.h, tmp.hdr, hcap);
        rebase(&tmp, p, in);
        if (resumed_same) {
            rtmp.rc = krait__http_parse_head_resume(p, k, lim, &rtmp.h, rtmp.hdr, hcap, &rs);
            rebase(&rtmp, p, in);
            if (!same_head(&rtmp, &tmp)) {
                resumed_same = 0;
                ok_at(0, file, line, "resumed at %zu: rc %d status %d, stateless %d %d", k,
                      rtmp.rc, rtmp.h.error_status, tmp.rc, tmp.h.error_status);
            }
        }
        if (tmp.rc == KRAIT__NEED_MORE && !reached)
            continue;
        if (!reached) {
            reached = 1;
            res->decided_at = k;
        }
        if (!same_head(&tmp, res)) {
            monotone = 0;
            ok_at(0, file, line, "prefix %zu: rc %d status %d, whole rc %d status %d", k, tmp.rc,
                  tmp.h.error_status, res->rc, res->h.error_status);
            break;
        }
    }
    ok_at(monotone, file, line, "byte-at-a-time answers differ from whole");

    /* Resumable parser, two pieces: the prefix, then the whole input (copied elsewhere). */
    for (size_t k = 0; k <= n && split_same; k++) {
        char *p = end - k;
        memmove(p, in, k);
        memset(&rs, 0, sizeof rs);
        rtmp.rc = krait__http_parse_head_resume(p, k, lim, &rtmp.h, rtmp.hdr, hcap, &rs);
        if (rtmp.rc != KRAIT__NEED_MORE)
            continue;
        memmove(g.data, in, n);
        rtmp.rc = krait__http_parse_head_resume(g.data, n, lim, &rtmp.h, rtmp.hdr, hcap, &rs);
        rebase(&rtmp, g.data, in);
        if (!same_head(&rtmp, res)) {
            split_same = 0;
            ok_at(0, file, line, "resumed split at %zu: rc %d status %d", k, rtmp.rc,
                  rtmp.h.error_status);
        }
    }
    ok_at(resumed_same && split_same, file, line, "resumable parser differs");
    if (res->rc >= 0)
        ok_at(res->decided_at == (size_t)res->rc, file, line, "complete at %zu, head is %d",
              res->decided_at, res->rc);
    guarded_free(g);
}

/* head3(in, n, lim, hcap, want_rc, want_status, res) */
#define head3(...) head3_at(__FILE__, __LINE__, __VA_ARGS__)

static int eq(const char *p, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(p, lit, n) == 0;
}

static int hdr_is(const head_res *r, size_t k, const char *name, const char *value)
{
    return k < r->h.nheaders && eq(r->hdr[k].name, r->hdr[k].name_len, name) &&
           eq(r->hdr[k].value, r->hdr[k].value_len, value);
}

static head_res R; /* big: keep it off the stack */

/* Expect the literal `head` to parse as a head; bytes in `rest` belong to what follows. */
#define GOOD_THEN(head, rest) head3(S(head rest), &DEF, HCAP, (int)sizeof(head) - 1, 0, &R)
#define GOOD(head) GOOD_THEN(head, "")
#define BAD(lit, lim, status) head3(S(lit), lim, HCAP, KRAIT__MALFORMED, status, &R)

static void test_good_heads(void)
{
    GOOD("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
    ok(eq(R.h.method, R.h.method_len, "GET") && eq(R.h.target, R.h.target_len, "/") &&
           R.h.version_major == 1 && R.h.version_minor == 1 && R.h.nheaders == 1 &&
           hdr_is(&R, 0, "Host", "example.com"),
       "simple GET");

    /* POST: the body is not part of the head. */
    GOOD_THEN("POST /form?a=1&b=2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", "hello");
    ok(eq(R.h.method, R.h.method_len, "POST") &&
           eq(R.h.target, R.h.target_len, "/form?a=1&b=2") && R.h.nheaders == 2 &&
           hdr_is(&R, 1, "Content-Length", "5"),
       "POST");

    GOOD("GET http://example.com:8080/x/y?z#f HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
    ok(eq(R.h.target, R.h.target_len, "http://example.com:8080/x/y?z#f"), "absolute-form");

    GOOD("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    ok(eq(R.h.method, R.h.method_len, "OPTIONS") && eq(R.h.target, R.h.target_len, "*"),
       "asterisk-form");

    GOOD("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    ok(eq(R.h.target, R.h.target_len, "example.com:443"), "authority-form");

    GOOD("GET /old HTTP/1.0\r\n\r\n");
    ok(R.h.version_major == 1 && R.h.version_minor == 0 && R.h.nheaders == 0, "HTTP/1.0");

    /* RFC 9112 §2.2: empty lines before the request line are skipped, and counted. */
    GOOD("\r\n\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    ok(eq(R.h.method, R.h.method_len, "GET") && R.h.nheaders == 1, "leading CRLFs");

    /* Bare LF line ends, and a mix. */
    GOOD("GET /lf HTTP/1.1\nHost: h\nX-A: 1\n\n");
    ok(R.h.nheaders == 2 && hdr_is(&R, 1, "X-A", "1"), "bare LF");
    GOOD("GET /mix HTTP/1.1\r\nHost: h\nX-A: 1\r\n\n");
    ok(R.h.nheaders == 2 && hdr_is(&R, 0, "Host", "h"), "mixed line ends");

    /* Value trimming: OWS on both sides goes, inner whitespace and HTAB stay. */
    GOOD("GET / HTTP/1.1\r\nA:   x y  \t\r\nB:\r\nC: \t \r\nD:\tp\tq\t\r\nE:z\r\n\r\n");
    ok(hdr_is(&R, 0, "A", "x y") && hdr_is(&R, 1, "B", "") && hdr_is(&R, 2, "C", "") &&
           hdr_is(&R, 3, "D", "p\tq") && hdr_is(&R, 4, "E", "z"),
       "value trimming");
    ok(R.hdr[1].value_len == 0 && R.hdr[2].value_len == 0, "empty values");

    /* Names keep their case; obs-text is allowed in values and in the target. */
    GOOD("GET /caf\xc3\xa9 HTTP/1.1\r\nX-MiXeD-case: \xff\x80 ok\r\n\r\n");
    ok(hdr_is(&R, 0, "X-MiXeD-case", "\xff\x80 ok"), "case kept, obs-text");
    ok(eq(R.h.target, R.h.target_len, "/caf\xc3\xa9"), "obs-text target");

    /* Every tchar in a method and in a field name. */
    GOOD("!#$%&'*+-.^_`|~09azAZ / HTTP/1.1\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n");
    ok(R.h.method_len == 21 && hdr_is(&R, 0, "!#$%&'*+-.^_`|~09azAZ", "v"), "tchar set");

    /* A colon in the value, and a value that is only a colon. */
    GOOD("GET / HTTP/1.1\r\nX::\r\nY: a:b\r\n\r\n");
    ok(hdr_is(&R, 0, "X", ":") && hdr_is(&R, 1, "Y", "a:b"), "colons in values");

    /* Pipelining: the head ends after the first empty line. */
    GOOD_THEN("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n", "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    ok(eq(R.h.target, R.h.target_len, "/1"), "pipelined first");

    /* An empty line made of CRLF right after an LF-terminated line. */
    GOOD("GET / HTTP/1.1\nHost: h\n\r\n");

    /* Long values pass the eight-byte fast path with stops at every position. */
    for (int at = 0; at < 24; at++) {
        char buf[128];
        int n = snprintf(buf, sizeof buf, "GET /%.*s\x01 HTTP/1.1\r\n\r\n", at,
                         "abcdefghijklmnopqrstuvwxyz");
        head3(buf, (size_t)n, &DEF, HCAP, KRAIT__MALFORMED, 400, &R);
        n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX: %.*s\tz\x7f\r\n\r\n", at,
                     "abcdefghijklmnopqrstuvwxyz");
        head3(buf, (size_t)n, &DEF, HCAP, KRAIT__MALFORMED, 400, &R);
        n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX: %.*s\tz\r\n\r\n", at,
                     "abcdefghijklmnopqrstuvwxyz");
        head3(buf, (size_t)n, &DEF, HCAP, n, 0, &R);
        ok(R.hdr[0].value_len == (at ? (size_t)at + 2 : 1), "fast path value at %d", at);
    }
}

static void test_many_headers(void)
{
    static char buf[8192];
    size_t n = (size_t)snprintf(buf, sizeof buf, "GET /many HTTP/1.1\r\n");
    for (int k = 0; k < 100; k++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "X-Header-%03d: value %d\r\n", k, k);
    memcpy(buf + n, "\r\n", 2);
    head3(buf, n + 2, &DEF, HCAP, (int)(n + 2), 0, &R);
    ok(R.h.nheaders == 100 && hdr_is(&R, 0, "X-Header-000", "value 0") &&
           hdr_is(&R, 99, "X-Header-099", "value 99"),
       "100 headers");

    /* One more than max_headers: 431, decided at the first byte of field 101. */
    size_t at = n;
    n += (size_t)snprintf(buf + n, sizeof buf - n, "X-One-Too-Many: 1\r\n\r\n");
    head3(buf, n, &DEF, HCAP, KRAIT__MALFORMED, 431, &R);
    ok(R.decided_at == at + 1, "431 decided at %zu, want %zu", R.decided_at, at + 1);

    /* hdr_cap below max_headers bounds the count too. */
    head3(S("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"), &DEF, 2, 30, 0, &R);
    head3(S("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), &DEF, 2, KRAIT__MALFORMED, 431,
          &R);
    head3(S("GET / HTTP/1.0\r\nA: 1\r\n\r\n"), &DEF, 0, KRAIT__MALFORMED, 431, &R);
    head3(S("GET / HTTP/1.0\r\n\r\n"), &DEF, 0, 18, 0, &R);
    /* SMALL allows 8 fields. */
    head3(S("GET / HTTP/1.1\r\n1:\r\n2:\r\n3:\r\n4:\r\n5:\r\n6:\r\n7:\r\n8:\r\n\r\n"), &SMALL, HCAP,
          50, 0, &R);
    head3(S("GET / HTTP/1.1\r\n1:\r\n2:\r\n3:\r\n4:\r\n5:\r\n6:\r\n7:\r\n8:\r\n9:\r\n\r\n"),
          &SMALL, HCAP, KRAIT__MALFORMED, 431, &R);
    /* obs-fold is 400 even where a new field would be 431. */
    head3(S("GET / HTTP/1.1\r\n1:\r\n2:\r\n3:\r\n4:\r\n5:\r\n6:\r\n7:\r\n8:\r\n 9\r\n\r\n"),
          &SMALL, HCAP, KRAIT__MALFORMED, 400, &R);
}

static void test_limits(void)
{
    static char buf[2048];
    /* max_line = 64 content bytes: "GET " + target + " HTTP/1.1". */
    size_t n = (size_t)snprintf(buf, sizeof buf, "GET /%0*d HTTP/1.1\r\nHost: h\r\n\r\n", 50, 7);
    head3(buf, n, &SMALL, HCAP, (int)n, 0, &R);
    ok(R.h.target_len == 51, "line of exactly max_line");
    n = (size_t)snprintf(buf, sizeof buf, "GET /%0*d HTTP/1.1\r\nHost: h\r\n\r\n", 51, 7);
    head3(buf, n, &SMALL, HCAP, KRAIT__MALFORMED, 414, &R);
    ok(R.decided_at == 65, "414 decided at byte %zu", R.decided_at);
    /* Exactly max_line bytes of line, then the CR whose LF is late: still fine. */
    n = (size_t)snprintf(buf, sizeof buf, "GET /%0*d HTTP/1.1\r", 50, 7);
    head3(buf, n, &SMALL, HCAP, KRAIT__NEED_MORE, 0, &R);
    /* A line that never ends: 414 as soon as byte max_line + 1 is there, not a wait. */
    n = (size_t)snprintf(buf, sizeof buf, "GET /%0*d", 80, 7);
    head3(buf, n, &SMALL, HCAP, KRAIT__MALFORMED, 414, &R);
    ok(R.decided_at == 65, "414 without line end at %zu", R.decided_at);
    /* Leading empty lines are not part of the request line. */
    n = (size_t)snprintf(buf, sizeof buf, "\r\n\r\nGET /%0*d HTTP/1.1\r\nHost: h\r\n\r\n", 50, 7);
    head3(buf, n, &SMALL, HCAP, (int)n, 0, &R);
    /* Long method: 414 as well. */
    memset(buf, 'M', 100);
    head3(buf, 100, &SMALL, HCAP, KRAIT__MALFORMED, 414, &R);
    /* Too long and broken at byte max_line + 1: the line end comes too early, so 400. */
    n = (size_t)snprintf(buf, sizeof buf, "GET /%0*d\r\n\r\n", 59, 7);
    head3(buf, n, &SMALL, HCAP, KRAIT__MALFORMED, 400, &R);
    /* Version that overruns the limit: its last digit is byte 65. */
    n = (size_t)snprintf(buf, sizeof buf, "GET /%0*d HTTP/1.1\r\n\r\n", 50, 7);
    head3(buf, n, &SMALL, HCAP, (int)n, 0, &R);
    n = (size_t)snprintf(buf, sizeof buf, "GET /%0*d HTTP/1.11\r\n\r\n", 50, 7);
    head3(buf, n, &SMALL, HCAP, KRAIT__MALFORMED, 414, &R);

    /* max_head = 512: a head of exactly 512 bytes passes, 513 is 431. */
    n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX: %0*d\r\n\r\n", 512 - 23, 1);
    ok(n == 512, "built %zu", n);
    head3(buf, n, &SMALL, HCAP, 512, 0, &R);
    n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX: %0*d\r\n\r\n", 512 - 22, 1);
    head3(buf, n, &SMALL, HCAP, KRAIT__MALFORMED, 431, &R);
    ok(R.decided_at == 512, "431 decided at %zu", R.decided_at);
    /* The final LF would be byte 513: 431 even though the head is otherwise fine. */
    n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX: %0*d\r\n\r\n", 512 - 22, 1);
    head3(buf, 513, &SMALL, HCAP, KRAIT__MALFORMED, 431, &R);
    /* A bare CR at index 511 cannot be told from CRLF in time: 431, in every split. */
    n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX: %0*d\r\rX", 512 - 20, 1);
    head3(buf, n, &SMALL, HCAP, KRAIT__MALFORMED, 431, &R);
    /* A bad byte before the cap wins over the cap. */
    n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX: %0*d\x01%0*d\r\n\r\n", 100, 1,
                         600, 2);
    head3(buf, n, &SMALL, HCAP, KRAIT__MALFORMED, 400, &R);
    /* Endless empty lines end in 431. */
    for (size_t k = 0; k < 600; k++)
        buf[k] = (k & 1) ? '\n' : '\r';
    head3(buf, 600, &SMALL, HCAP, KRAIT__MALFORMED, 431, &R);
    memset(buf, '\n', 600);
    head3(buf, 600, &SMALL, HCAP, KRAIT__MALFORMED, 431, &R);
    head3(buf, 100, &SMALL, HCAP, KRAIT__NEED_MORE, 0, &R);
    head3("", 0, &SMALL, HCAP, KRAIT__NEED_MORE, 0, &R);
}

static void test_bad_heads(void)
{
    /* Bare CR, RFC 9112 §2.2, wherever it is. */
    BAD("GET / HTTP/1.1\rX\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", &DEF, 400);
    BAD("\rGET / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("\r\n\rGET / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nHost: a\r\n\rX", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n", &DEF, 400);
    BAD("GET /a\rb HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET\r / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\r\n\r\n", &DEF, 400);
    /* NUL anywhere. */
    BAD("GET /a\0b HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nHo\0st: a\r\n\r\n", &DEF, 400);
    BAD("G\0ET / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("\0GET / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\0\r\n\r\n", &DEF, 400);
    /* obs-fold and whitespace before the first field, RFC 9112 §5.2 and §2.2. */
    BAD("GET / HTTP/1.1\r\nHost: a\r\n  folded\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\n Host: a\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\n \r\n\r\n", &DEF, 400);
    /* Field names. */
    BAD("GET / HTTP/1.1\r\nHost : a\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\n: a\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nHost a\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nHost\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nHo@st: a\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nX{}: a\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nX\x7f: a\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nX\"y\": a\r\n\r\n", &DEF, 400);
    /* Control characters in values; HTAB is the only one allowed. */
    BAD("GET / HTTP/1.1\r\nX: a\x01" "b\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nX: a\x7f" "b\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nX: a\x1b[0m\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nX: a\x0b" "b\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nX: a\x0c\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1\r\nX: \x1f\r\n\r\n", &DEF, 400);
    /* Method. */
    BAD("G(ET / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GE@T / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("G,ET / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("G\xc3\xa9T / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD(" / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD(" GET / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET\t/ HTTP/1.1\r\n\r\n", &DEF, 400);
    /* Request line shape, RFC 9112 §3. */
    BAD("GET  / HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET /  HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET /\r\n\r\n", &DEF, 400);
    BAD("GET\r\n\r\n", &DEF, 400);
    BAD("GET /a\x01 HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET /a\x7f HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET /a\tb HTTP/1.1\r\n\r\n", &DEF, 400);
    BAD("GET /a\nb HTTP/1.1\r\n\r\n", &DEF, 400);
    /* Version, RFC 9112 §2.3. */
    BAD("GET / HTTP/1.x\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.10\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/11\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1\r\n\r\n", &DEF, 400);
    BAD("GET / http/1.1\r\n\r\n", &DEF, 400);
    BAD("GET / HTTPS/1.1\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1 \r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/ 1.1\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1,1\r\n\r\n", &DEF, 400);
    BAD("GET / HTTP/1.1x\r\n\r\n", &DEF, 400);
    BAD("GET / \r\n\r\n", &DEF, 400);
    /* Well-formed but unsupported versions: 505, decided at the end of the request line. */
    BAD("GET / HTTP/2.0\r\nHost: h\r\n\r\n", &DEF, 505);
    BAD("GET / HTTP/0.9\r\n\r\n", &DEF, 505);
    BAD("GET / HTTP/3.0\r\n\r\n", &DEF, 505);
    BAD("GET / HTTP/9.9\n", &DEF, 505);
    /* RFC 9110 §2.5: a higher HTTP/1 minor version is processed as 1.1. */
    {
        krait__req_head h;
        krait__header hv[8];
        const char r12[] = "GET / HTTP/1.2\r\nHost: h\r\n\r\n";
        int n = krait__http_parse_head(r12, sizeof r12 - 1, &DEF, &h, hv, 8);
        ok(n == (int)sizeof r12 - 1 && h.version_major == 1 && h.version_minor == 1,
           "HTTP/1.2 is served as HTTP/1.1");
    }
    BAD("GET / HTTP/2.0\r\n\x01garbage", &DEF, 505);
    BAD("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &DEF, 505);
    ok(R.decided_at == 16, "preface answered at %zu", R.decided_at);
    BAD("GET / HTTP/2.0\rX", &DEF, 400);
    /* Limits (SMALL: line 64, head 512, 8 fields). */
    BAD("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
        &SMALL, 414);
    BAD("GET / HTTP/1.1\r\nA:\r\nB:\r\nC:\r\nD:\r\nE:\r\nF:\r\nG:\r\nH:\r\nI:\r\n\r\n", &SMALL,
        431);
    BAD("GET / HTTP/1.1\r\nA: "
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
        "\r\n\r\n",
        &SMALL, 431);
}

static void test_resume(void)
{
    static const char req[] = "GET /r HTTP/1.1\r\nHost: h\r\nX-Long: 0123456789abcdef\r\n\r\n";
    static head_res a, b;
    krait__http_resume rs;
    size_t n = sizeof req - 1;

    /* Suspended in a value, then complete: slices point into the final buffer. */
    memset(&rs, 0, sizeof rs);
    guarded g1 = guarded_copy(req, 40), g2 = guarded_copy(req, n);
    a.rc = krait__http_parse_head_resume(g1.data, 40, &DEF, &a.h, a.hdr, HCAP, &rs);
    ok(a.rc == KRAIT__NEED_MORE, "suspended");
    guarded_free(g1); /* the old buffer is gone, as after a realloc */
    a.rc = krait__http_parse_head_resume(g2.data, n, &DEF, &a.h, a.hdr, HCAP, &rs);
    ok(a.rc == (int)n && a.h.nheaders == 2 && a.hdr[1].value == g2.data + 34 &&
           a.h.target == g2.data + 4 && eq(a.hdr[1].value, a.hdr[1].value_len, "0123456789abcdef"),
       "resumed slices are in the new buffer");
    /* Asking again after the answer repeats it. */
    b.rc = krait__http_parse_head_resume(g2.data, n, &DEF, &b.h, b.hdr, HCAP, &rs);
    ok(b.rc == a.rc && b.h.nheaders == 2, "answer repeats");
    /* A caller that shrinks the buffer gets a fresh parse, not a read out of bounds. */
    guarded g3 = guarded_copy(req, 10);
    b.rc = krait__http_parse_head_resume(g3.data, 10, &DEF, &b.h, b.hdr, HCAP, &rs);
    ok(b.rc == KRAIT__NEED_MORE, "shrunk buffer");
    memset(&rs, 0, sizeof rs);
    rs.stage = 99;
    b.rc = krait__http_parse_head_resume(g2.data, n, &DEF, &b.h, b.hdr, HCAP, &rs);
    ok(b.rc == (int)n, "bad stage restarts");
    guarded_free(g2);
    guarded_free(g3);
}

/* The byte classes, checked exhaustively against the RFC grammar written out here again. */
static int is_tchar(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void test_byte_classes(void)
{
    char buf[64];
    int bad_method = 0, bad_target = 0, bad_name = 0, bad_value = 0;
    for (int c = 0; c < 256; c++) {
        /* method "G<c>T" */
        memcpy(buf, "G?T / HTTP/1.0\r\n\r\n", 18);
        buf[1] = (char)c;
        head3(buf, 18, &DEF, HCAP, is_tchar(c) ? 18 : KRAIT__MALFORMED, 400, &R);
        bad_method += !(is_tchar(c) ? R.rc == 18 : R.rc == -1 && R.h.error_status == 400);

        /* target "/<c>": visible ASCII and obs-text */
        memcpy(buf, "GET /? HTTP/1.0\r\n\r\n", 19);
        buf[5] = (char)c;
        int vis = (c > 0x20 && c < 0x7f) || c >= 0x80;
        head3(buf, 19, &DEF, HCAP, vis ? 19 : KRAIT__MALFORMED, 400, &R);
        bad_target += !(vis ? R.rc == 19 : R.h.error_status == 400);

        /* field name "X<c>Y: v"; "X:Y: v" is the field X with value "Y: v" */
        memcpy(buf, "GET / HTTP/1.0\r\nX?Y: v\r\n\r\n", 26);
        buf[17] = (char)c;
        int good = is_tchar(c) || c == ':';
        head3(buf, 26, &DEF, HCAP, good ? 26 : KRAIT__MALFORMED, 400, &R);
        bad_name += !(good ? R.rc == 26 : R.h.error_status == 400);

        /* field value "a<c>b": VCHAR, obs-text, SP, HTAB */
        memcpy(buf, "GET / HTTP/1.0\r\nX: a?b\r\n\r\n", 26);
        buf[20] = (char)c;
        good = c == '\t' || (c >= 0x20 && c != 0x7f);
        head3(buf, 26, &DEF, HCAP, good ? 26 : KRAIT__MALFORMED, 400, &R);
        bad_value += !(good ? R.rc == 26 && R.hdr[0].value_len == 3 : R.h.error_status == 400);
    }
    ok(!bad_method && !bad_target && !bad_name && !bad_value, "byte classes %d %d %d %d",
       bad_method, bad_target, bad_name, bad_value);
}

/* ---------------------------------------------------------------------------------------- */
/* Analysis                                                                                  */

static krait__req_info INFO;

static int analyze_at(const char *file, int line, const char *in, size_t n)
{
    head3_at(file, line, in, n, &DEF, HCAP, (int)n, 0, &R);
    if (R.rc < 0)
        return -99;
    int rc = krait__http_analyze(&R.h, R.hdr, &INFO);
    ok_at(rc == (INFO.error_status ? -1 : 0), file, line, "rc %d vs status %d", rc,
          INFO.error_status);
    return rc;
}

#define AN(lit) analyze_at(__FILE__, __LINE__, S(lit))
#define AN_BAD(lit, status)                                                                   \
    do {                                                                                       \
        int rc_ = AN(lit);                                                                     \
        ok(rc_ == -1 && INFO.error_status == (status), "%s: rc %d status %d, want %d", #lit,   \
           rc_, INFO.error_status, status);                                                    \
    } while (0)

static void test_analyze(void)
{
    ok(AN("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n") == 0 && INFO.content_length == -1 &&
           !INFO.chunked && INFO.keep_alive && !INFO.expect_continue &&
           !INFO.upgrade_websocket && eq(INFO.host, INFO.host_len, "example.com") &&
           INFO.error_status == 0,
       "plain GET");

    /* Content-Length, RFC 9110 §8.6 and RFC 9112 §6.3. */
    ok(AN("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n") == 0 &&
           INFO.content_length == 5, "CL 5");
    ok(AN("POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 0\r\n\r\n") == 0 &&
           INFO.content_length == 0, "CL 0");
    ok(AN("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n") == 0 &&
           INFO.content_length == 5, "CL 5, 5");
    ok(AN("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,5,5\r\n\r\n") == 0 &&
           INFO.content_length == 5, "CL 5,5,5");
    ok(AN("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nCONTENT-LENGTH: 5\r\n\r\n") == 0 &&
           INFO.content_length == 5, "CL twice equal");
    ok(AN("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n") == 0 &&
           INFO.content_length == 7, "CL leading zeros");
    ok(AN("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n") == 0 &&
           INFO.content_length == INT64_MAX, "CL max");
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5e2\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ,5\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\t;\r\n\r\n", 400);

    /* Transfer-Encoding, RFC 9112 §6.1. */
    ok(AN("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n") == 0 &&
           INFO.chunked && INFO.content_length == -1, "TE chunked");
    ok(AN("POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: CHUNKED\r\n\r\n") == 0 &&
           INFO.chunked, "TE case");
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 501);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
           "Transfer-Encoding: chunked\r\n\r\n", 501);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
           "Transfer-Encoding: chunked\r\n\r\n", 501);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 501);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", 501);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", 501);
    AN_BAD("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
           "Transfer-Encoding: chunked\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
           "Content-Length: 5\r\n\r\n", 400);
    AN_BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
           "Content-Length: 5\r\n\r\n", 400);
    /* Empty list elements are ignored in Transfer-Encoding (RFC 9110 §5.6.1). */
    ok(AN("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked ,\r\n\r\n") == 0 &&
           INFO.chunked, "TE empty elements");

    /* Host, RFC 9112 §3.2. */
    AN_BAD("GET / HTTP/1.1\r\n\r\n", 400);
    AN_BAD("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    AN_BAD("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400);
    AN_BAD("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    AN_BAD("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
    AN_BAD("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400);
    AN_BAD("GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n", 400);
    ok(AN("GET / HTTP/1.0\r\n\r\n") == 0 && INFO.host == NULL, "no Host in 1.0");
    ok(AN("GET / HTTP/1.1\r\nHost:\r\n\r\n") == 0 && INFO.host && INFO.host_len == 0,
       "empty Host");
    ok(AN("GET / HTTP/1.1\r\nHOST: [::1]:8080\r\n\r\n") == 0 &&
           eq(INFO.host, INFO.host_len, "[::1]:8080"), "IPv6 Host");

    /* Expect, RFC 9110 §10.1.1. */
    ok(AN("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n") ==
           0 && INFO.expect_continue, "Expect 100-continue");
    ok(AN("PUT / HTTP/1.1\r\nHost: h\r\nexpect: 100-Continue\r\n\r\n") == 0 &&
           INFO.expect_continue, "Expect case");
    ok(AN("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n") == 0 && !INFO.expect_continue,
       "Expect ignored in 1.0");
    AN_BAD("PUT / HTTP/1.1\r\nHost: h\r\nExpect: foo\r\n\r\n", 417);
    AN_BAD("PUT / HTTP/1.1\r\nHost: h\r\nExpect:\r\n\r\n", 417);
    AN_BAD("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue, foo\r\n\r\n", 417);
    AN_BAD("PUT / HTTP/1.1\r\nExpect: foo\r\n\r\n", 400); /* missing Host wins */
    AN_BAD("PUT / HTTP/1.1\r\nHost: h\r\nExpect: foo\r\nTransfer-Encoding: gzip\r\n\r\n", 501);

    /* Keep-alive, RFC 9112 §9.3. */
    ok(AN("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n") == 0 && !INFO.keep_alive,
       "1.1 close");
    ok(AN("GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\n\r\n") == 0 && !INFO.keep_alive,
       "1.1 CLOSE");
    ok(AN("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n") == 0 &&
           !INFO.keep_alive, "1.1 keep-alive, close");
    ok(AN("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n") == 0 && INFO.keep_alive,
       "1.1 closed is not close");
    ok(AN("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n") == 0 &&
           INFO.keep_alive, "1.1 keep-alive");
    ok(AN("GET / HTTP/1.0\r\n\r\n") == 0 && !INFO.keep_alive, "1.0 default");
    ok(AN("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == 0 && INFO.keep_alive,
       "1.0 keep-alive");
    ok(AN("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") == 0 && INFO.keep_alive,
       "1.0 Keep-Alive");
    ok(AN("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n") == 0 &&
           !INFO.keep_alive, "1.0 keep-alive then close");
    ok(AN("GET / HTTP/1.0\r\nConnection: foo,,  keep-alive  ,\r\n\r\n") == 0 &&
           INFO.keep_alive, "1.0 token list");

    /* Upgrade: websocket (RFC 6455 §4.2.1, RFC 9110 §7.8). */
    ok(AN("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
          "Connection: keep-alive, Upgrade\r\n\r\n") == 0 &&
           INFO.upgrade_websocket && INFO.keep_alive, "websocket, token list");
    ok(AN("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n\r\n") ==
           0 && INFO.upgrade_websocket, "websocket case");
    ok(AN("GET /ws HTTP/1.1\r\nHost: h\r\nconnection: Upgrade\r\nupgrade: h2c, WEBSOCKET\r\n"
          "\r\n") == 0 && INFO.upgrade_websocket, "websocket in a list");
    ok(AN("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n") == 0 &&
           !INFO.upgrade_websocket, "no Connection: upgrade");
    ok(AN("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n") == 0 &&
           !INFO.upgrade_websocket, "h2c is not websocket");
    ok(AN("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocketx\r\nConnection: Upgrade\r\n\r\n") ==
           0 && !INFO.upgrade_websocket, "websocketx");
    ok(AN("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n"
          "Connection: Upgrade\r\n\r\n") == 0 && INFO.upgrade_websocket, "two Connection fields");
}

/* ---------------------------------------------------------------------------------------- */
/* Chunked decoder                                                                           */

#define OUT_MAX 65536

typedef struct {
    int rc;
    size_t consumed, produced;
    char out[OUT_MAX];
} crun;

/* `room` bytes of output space that end at a guard page, so a write past out_cap faults. */
static char *out_space(size_t room)
{
    static guarded g;
    if (!g.map) {
        static char zero[OUT_MAX];
        g = guarded_copy(zero, OUT_MAX);
    }
    return g.data + OUT_MAX - room;
}

/* Feed in[0..n) cut at cuts[0..ncuts) (ascending), each piece a guarded copy, giving the decoder
 * at most `step` bytes of output space per call, also against a guard page. */
static void run_pieces(const char *in, size_t n, const size_t *cuts, size_t ncuts, size_t step,
                       crun *r)
{
    krait__chunked st;
    size_t pos = 0;
    memset(&st, 0, sizeof st);
    r->rc = 0;
    r->consumed = r->produced = 0;
    for (size_t p = 0; p <= ncuts; p++) {
        size_t end = p < ncuts ? cuts[p] : n, off = 0;
        guarded g = guarded_copy(in + pos, end - pos);
        for (;;) {
            size_t room = OUT_MAX - r->produced, c = 0, o = 0;
            if (room > step)
                room = step;
            char *space = out_space(room);
            int rc = krait__chunked_decode(&st, g.data + off, end - pos - off, &c, space, room,
                                           &o);
            memcpy(r->out + r->produced, space, o);
            off += c;
            r->consumed += c;
            r->produced += o;
            if (rc != 0 || off == end - pos) {
                r->rc = rc;
                break;
            }
            if (c == 0 && o == 0) {
                r->rc = -99; /* no progress with room to write: a bug */
                break;
            }
        }
        guarded_free(g);
        if (r->rc != 0)
            return;
        pos = end;
    }
}

/* Decode in place: out points into the input buffer, at or before the unread input. */
static void run_inplace(const char *in, size_t n, size_t step, crun *r)
{
    krait__chunked st;
    guarded g = guarded_copy(in, n);
    memset(&st, 0, sizeof st);
    r->consumed = r->produced = 0;
    for (;;) {
        size_t c = 0, o = 0, room = n - r->produced;
        if (room > step)
            room = step;
        r->rc = krait__chunked_decode(&st, g.data + r->consumed, n - r->consumed, &c,
                                      g.data + r->produced, room, &o);
        r->consumed += c;
        r->produced += o;
        if (r->rc != 0 || r->consumed == n)
            break;
        if (c == 0 && o == 0) {
            r->rc = -99;
            break;
        }
    }
    memcpy(r->out, g.data, r->produced);
    guarded_free(g);
}

static int same_run(const crun *a, const crun *b)
{
    return a->rc == b->rc && a->consumed == b->consumed && a->produced == b->produced &&
           memcmp(a->out, b->out, a->produced) == 0;
}

static crun CW, CT; /* whole, trial */

/* Decode in[0..n) every way; expect rc, the decoded bytes want[0..want_len), and `consumed`
 * input bytes (for rc 0: all of them; for a malformed input: up to the offending byte). */
static void chunk3_at(const char *file, int line, const char *in, size_t n, int want_rc,
                      const char *want, size_t want_len, size_t want_consumed)
{
    static size_t cuts[OUT_MAX];
    int bad_split = 0, bad_step = 0;

    run_pieces(in, n, NULL, 0, SIZE_MAX, &CW);
    ok_at(CW.rc == want_rc, file, line, "whole: rc %d, want %d", CW.rc, want_rc);
    ok_at(CW.consumed == want_consumed, file, line, "whole: consumed %zu, want %zu", CW.consumed,
          want_consumed);
    if (want)
        ok_at(CW.produced == want_len && memcmp(CW.out, want, want_len) == 0, file, line,
              "whole: output (%zu bytes, want %zu)", CW.produced, want_len);

    /* One byte at a time. */
    for (size_t k = 1; k < n; k++)
        cuts[k - 1] = k;
    run_pieces(in, n, cuts, n ? n - 1 : 0, SIZE_MAX, &CT);
    ok_at(same_run(&CT, &CW), file, line, "byte-at-a-time: rc %d consumed %zu produced %zu",
          CT.rc, CT.consumed, CT.produced);

    /* Two pieces, split at every offset. */
    for (size_t k = 0; k <= n; k++) {
        cuts[0] = k;
        run_pieces(in, n, cuts, 1, SIZE_MAX, &CT);
        if (!same_run(&CT, &CW) && !bad_split++)
            ok_at(0, file, line, "split at %zu: rc %d consumed %zu produced %zu", k, CT.rc,
                  CT.consumed, CT.produced);
    }
    ok_at(!bad_split, file, line, "%d splits differ", bad_split);

    /* Output space smaller than the data: the decoder must stop and resume. */
    static const size_t steps[] = {1, 2, 3, 7, 64};
    for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
        run_pieces(in, n, NULL, 0, steps[s], &CT);
        bad_step += !same_run(&CT, &CW);
        cuts[0] = n / 2;
        run_pieces(in, n, cuts, 1, steps[s], &CT);
        bad_step += !same_run(&CT, &CW);
        run_inplace(in, n, steps[s], &CT);
        bad_step += !same_run(&CT, &CW);
    }
    ok_at(!bad_step, file, line, "%d small-output runs differ", bad_step);

    /* In place in one call: out == in. */
    run_inplace(in, n, SIZE_MAX, &CT);
    ok_at(same_run(&CT, &CW), file, line, "in place: rc %d consumed %zu produced %zu", CT.rc,
          CT.consumed, CT.produced);
}

#define CHUNK_OK(lit, out) chunk3_at(__FILE__, __LINE__, S(lit), 1, S(out), sizeof(lit) - 1)
#define CHUNK_BAD(lit, at) chunk3_at(__FILE__, __LINE__, S(lit), KRAIT__MALFORMED, NULL, 0, at)

static void test_chunked_good(void)
{
    CHUNK_OK("5\r\nhello\r\n0\r\n\r\n", "hello");
    CHUNK_OK("0\r\n\r\n", "");
    CHUNK_OK("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij");
    CHUNK_OK("1F\r\n0123456789abcdefghijABCDEFGHIJ!\r\n1f\r\n0123456789abcdefghijABCDEFGHIJ?\r\n"
             "0\r\n\r\n",
             "0123456789abcdefghijABCDEFGHIJ!0123456789abcdefghijABCDEFGHIJ?");
    CHUNK_OK("0005\r\nhello\r\n00000\r\n\r\n", "hello");
    CHUNK_OK("1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n", "abc");
    CHUNK_OK("3\r\n\r\n\0\r\n0\r\n\r\n", "\r\n\0"); /* data is opaque */
    /* RFC 9112 §7.1.1 extensions, with BWS, tokens and quoted strings. */
    CHUNK_OK("5;foo=bar\r\nhello\r\n0;last\r\n\r\n", "hello");
    CHUNK_OK("5;a;b=c;d=\"q \\\" ;\\\\ s\"\r\nhello\r\n0\r\n\r\n", "hello");
    CHUNK_OK("5 ; a = b ;c\t\r\nhello\r\n0 \r\n\r\n", "hello");
    CHUNK_OK("5;a=\"\"\r\nhello\r\n0;x=\"\xc3\xa9\"\r\n\r\n", "hello");
    /* Trailers, RFC 9112 §7.1.2. */
    CHUNK_OK("5\r\nhello\r\n0\r\nX-A: 1\r\nX-Checksum: abc def\r\n\r\n", "hello");
    CHUNK_OK("0\r\nX:\r\n\r\n", "");
    /* Bare LF line ends are refused everywhere in the body (RFC 9112 §7.1: CRLF; §2.2's
     * allowance is for the head only): size line, after the data, trailer lines, the end. */
    CHUNK_BAD("5\nhello\r\n0\r\n\r\n", 1);
    CHUNK_BAD("5;e=1\nhello\r\n0\r\n\r\n", 5);
    CHUNK_BAD("5\r\nhello\n0\r\n\r\n", 8);
    CHUNK_BAD("5\r\nhello\r\n0\r\nT: 1\n\r\n", 17);
    CHUNK_BAD("5\r\nhello\r\n0\r\n\n", 13);
    CHUNK_BAD("0\n\n", 1);
    /* A size line of exactly KRAIT__CHUNK_LINE_MAX bytes. */
    {
        static char buf[2048];
        size_t n = 0;
        buf[n++] = '3';
        buf[n++] = ';';
        while (n < KRAIT__CHUNK_LINE_MAX)
            buf[n++] = 'e';
        n += (size_t)sprintf(buf + n, "\r\nabc\r\n0\r\n\r\n");
        chunk3_at(__FILE__, __LINE__, buf, n, 1, S("abc"), n);
        buf[2] = '!'; /* one byte more: */
        memmove(buf + 3, buf + 2, n - 2);
        n++;
        chunk3_at(__FILE__, __LINE__, buf, n, KRAIT__MALFORMED, NULL, 0, KRAIT__CHUNK_LINE_MAX);
    }
    /* A large chunk, decoded through small windows as well. */
    {
        static char buf[8192], want[4096];
        size_t n = (size_t)sprintf(buf, "FA0\r\n");
        for (size_t k = 0; k < 4000; k++)
            want[k] = buf[n + k] = (char)('a' + k % 26);
        n += 4000;
        n += (size_t)sprintf(buf + n, "\r\n0\r\n\r\n");
        chunk3_at(__FILE__, __LINE__, buf, n, 1, want, 4000, n);
    }
}

static void test_chunked_stream(void)
{
    /* Bytes after the end belong to the next request and are left alone. */
    const char two[] = "5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    chunk3_at(__FILE__, __LINE__, two, sizeof two - 1, 1, S("hello"), 15);

    /* Incomplete inputs: everything consumed, output so far, rc 0. */
    chunk3_at(__FILE__, __LINE__, S("5\r\nhel"), 0, S("hel"), 6);
    chunk3_at(__FILE__, __LINE__, S("5\r\nhello\r\n0\r\nX: 1\r\n"), 0, S("hello"), 19);
    chunk3_at(__FILE__, __LINE__, S("5\r\nhello\r\n0\r\n\r"), 0, S("hello"), 14);
    chunk3_at(__FILE__, __LINE__, S("ff;x=\"abc"), 0, S(""), 9);
    chunk3_at(__FILE__, __LINE__, "", 0, 0, S(""), 0);
    /* The largest size allowed, 2^62: waits for data. */
    chunk3_at(__FILE__, __LINE__, S("4000000000000000\r\nab"), 0, S("ab"), 20);
    chunk3_at(__FILE__, __LINE__, S("0000000000000000004000000000000000\r\nab"), 0, S("ab"), 38);

    /* After the end, and after an error, the decoder keeps its answer. */
    krait__chunked st;
    size_t c, o;
    char out[16];
    memset(&st, 0, sizeof st);
    ok(krait__chunked_decode(&st, S("1\r\nx\r\n0\r\n\r\n"), &c, out, sizeof out, &o) == 1 &&
           c == 11 && o == 1 && out[0] == 'x' && st.total == 1, "done");
    ok(krait__chunked_decode(&st, S("1\r\nx\r\n"), &c, out, sizeof out, &o) == 1 && c == 0 &&
           o == 0, "done stays done");
    memset(&st, 0, sizeof st);
    ok(krait__chunked_decode(&st, S("g\r\n"), &c, out, sizeof out, &o) == KRAIT__MALFORMED &&
           c == 0, "error");
    ok(krait__chunked_decode(&st, S("1\r\nx\r\n"), &c, out, sizeof out, &o) ==
           KRAIT__MALFORMED && c == 0 && o == 0, "error stays");

    /* out_cap 0 with data pending: no progress, no write, rc 0; then resume. */
    memset(&st, 0, sizeof st);
    ok(krait__chunked_decode(&st, S("3\r\nabc\r\n0\r\n\r\n"), &c, NULL, 0, &o) == 0 && c == 3 &&
           o == 0, "out_cap 0 stops at data");
    ok(krait__chunked_decode(&st, "abc\r\n0\r\n\r\n", 10, &c, out, 2, &o) == 0 && c == 2 &&
           o == 2 && memcmp(out, "ab", 2) == 0, "two bytes of room");
    ok(krait__chunked_decode(&st, "c\r\n0\r\n\r\n", 8, &c, out, 1, &o) == 1 && c == 8 &&
           o == 1 && out[0] == 'c' && st.total == 3, "resume to the end");
    /* Out full exactly at a chunk end still parses the CRLF and the last chunk. */
    memset(&st, 0, sizeof st);
    ok(krait__chunked_decode(&st, S("3\r\nabc\r\n0\r\n\r\nX"), &c, out, 3, &o) == 1 && c == 13 &&
           o == 3, "exact room");
}

static void test_chunked_bad(void)
{
    CHUNK_BAD("x\r\n", 0);
    CHUNK_BAD("\r\n", 0);
    CHUNK_BAD("\n", 0);
    CHUNK_BAD(";a\r\n", 0);
    CHUNK_BAD(" 5\r\nhello\r\n0\r\n\r\n", 0);
    CHUNK_BAD("-5\r\n", 0);
    CHUNK_BAD("+5\r\n", 0);
    CHUNK_BAD("0x5\r\nhello\r\n", 1);
    CHUNK_BAD("5 5\r\n", 2);
    CHUNK_BAD("5g\r\n", 1);
    CHUNK_BAD("5\r\nhelloX\r\n0\r\n\r\n", 8);
    CHUNK_BAD("5\r\nhello\rX", 9);
    CHUNK_BAD("5\r\nhello\r\r\n", 9);
    CHUNK_BAD("5\r\nhello0\r\n\r\n", 8);
    CHUNK_BAD("5\rX", 2);
    CHUNK_BAD("5\r\r\n", 2);
    CHUNK_BAD("5;a\rb\r\n", 4);
    /* Over 2^62, and overflowing 64 bits. */
    CHUNK_BAD("4000000000000001\r\n", 15);
    CHUNK_BAD("10000000000000000\r\n", 16);
    CHUNK_BAD("ffffffffffffffffffff\r\n", 15);
    /* Extensions. */
    CHUNK_BAD("5;\r\nhello\r\n", 2);
    CHUNK_BAD("5;=a\r\nhello\r\n", 2);
    CHUNK_BAD("5;a=\r\nhello\r\n", 4);
    CHUNK_BAD("5;a=b=c\r\nhello\r\n", 5);
    CHUNK_BAD("5;a b\r\nhello\r\n", 4);
    CHUNK_BAD("5;a=\"x\r\nhello\r\n", 6);
    CHUNK_BAD("5;a=\"x\ny\"\r\nhello\r\n", 6);
    CHUNK_BAD("5;a=\"x\"y\r\nhello\r\n", 7);
    CHUNK_BAD("5;a=\"\\\x01\"\r\n", 6);
    CHUNK_BAD("5;a=\"\x01\"\r\n", 5);
    CHUNK_BAD("5;a\0\r\n", 3);
    CHUNK_BAD("5 =a\r\n", 2);
    /* Trailers. */
    CHUNK_BAD("0\r\nX: a\r\n b\r\n\r\n", 9);
    CHUNK_BAD("0\r\n\tX: a\r\n\r\n", 3);
    CHUNK_BAD("0\r\nX\r\n\r\n", 4);
    CHUNK_BAD("0\r\nX : a\r\n\r\n", 4);
    CHUNK_BAD("0\r\n: a\r\n\r\n", 3);
    CHUNK_BAD("0\r\nX: a\rb\r\n\r\n", 8);
    CHUNK_BAD("0\r\nX: a\0\r\n\r\n", 7);
    CHUNK_BAD("0\r\nX: a\x7f\r\n\r\n", 7);
    CHUNK_BAD("0\r\n\r\r", 4);
    CHUNK_BAD("0\r\n\rX", 4);
    /* The trailer section is capped. */
    {
        static char buf[16384];
        size_t n = (size_t)sprintf(buf, "0\r\n");
        while (n < 3 + KRAIT__CHUNK_TRAILER_MAX + 100)
            n += (size_t)sprintf(buf + n, "X-Trailer-Field: 0123456789\r\n");
        n += (size_t)sprintf(buf + n, "\r\n");
        chunk3_at(__FILE__, __LINE__, buf, n, KRAIT__MALFORMED, NULL, 0,
                  3 + KRAIT__CHUNK_TRAILER_MAX);
        /* and a section of exactly the cap (final CRLF included) passes */
        n = (size_t)sprintf(buf, "0\r\nX: ");
        while (n < 3 + KRAIT__CHUNK_TRAILER_MAX - 4)
            buf[n++] = 'v';
        n += (size_t)sprintf(buf + n, "\r\n\r\n");
        chunk3_at(__FILE__, __LINE__, buf, n, 1, S(""), n);
    }
}

int main(void)
{
    test_good_heads();
    test_many_headers();
    test_limits();
    test_bad_heads();
    test_resume();
    test_byte_classes();
    test_analyze();
    test_chunked_good();
    test_chunked_stream();
    test_chunked_bad();
    return done();
}
