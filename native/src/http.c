/* HTTP/1.1 wire syntax (RFC 9112) for requests: the request-head parser, the framing and
 * connection analysis of a parsed head, and the resumable chunked body decoder. Sans-IO: bytes
 * in, slices and status codes out; no syscalls, no allocation. Buffering, timeouts, body-size
 * limits (413) and writing error responses are left to conn.c and response.c. */
#include "http.h"

#include <limits.h>
#include <string.h>

/* Byte classes, one bit each. */
enum {
    C_TCHAR = 0x01,  /* token, RFC 9110 §5.6.2 */
    C_TARGET = 0x02, /* request-target: any visible byte, obs-text included; no SP, no CTL */
    C_VALUE = 0x04,  /* field-value byte, RFC 9110 §5.5: VCHAR, obs-text, SP, HTAB */
    C_HEX = 0x08,    /* HEXDIG */
    C_HOST = 0x10,   /* RFC 3986 host [":" port]: unreserved, pct, sub-delims, ':', '[', ']' */
    C_QDTEXT = 0x20, /* qdtext, RFC 9110 §5.6.4 */
};

#define R8(v) v, v, v, v, v, v, v, v

static const unsigned char cls[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 00 */
    0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 08: HTAB */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 10 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 18 */
    0x24, 0x37, 0x06, 0x27, 0x37, 0x37, 0x37, 0x37, /* 20:  SP ! " # $ % & ' */
    0x36, 0x36, 0x37, 0x37, 0x36, 0x37, 0x37, 0x26, /* 28:  ( ) * + , - . / */
    0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, /* 30:  0 - 7 */
    0x3f, 0x3f, 0x36, 0x36, 0x26, 0x36, 0x26, 0x26, /* 38:  8 9 : ; < = > ? */
    0x26, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x37, /* 40:  @ A - G */
    0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, /* 48 */
    0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, /* 50 */
    0x37, 0x37, 0x37, 0x36, 0x06, 0x36, 0x27, 0x37, /* 58:  X Y Z [ \ ] ^ _ */
    0x27, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x37, /* 60:  ` a - g */
    0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, /* 68 */
    0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, /* 70 */
    0x37, 0x37, 0x37, 0x26, 0x27, 0x26, 0x37, 0x00, /* 78:  x y z { | } ~ DEL */
    R8(0x26), R8(0x26), R8(0x26), R8(0x26),         /* 80-9f: obs-text */
    R8(0x26), R8(0x26), R8(0x26), R8(0x26),         /* a0-bf */
    R8(0x26), R8(0x26), R8(0x26), R8(0x26),         /* c0-df */
    R8(0x26), R8(0x26), R8(0x26), R8(0x26),         /* e0-ff */
};

#define IS(c, k) (cls[(unsigned char)(c)] & (k))

/* Eight bytes at a time: nonzero if any byte of w is below `lo` (lo <= 0x80) or is DEL.
 * False positives are possible (a borrow can flag the byte above a real hit), false negatives
 * are not, so a zero answer means all eight bytes pass and a nonzero one sends the caller back
 * to the byte table. */
static inline uint64_t swar_stop(uint64_t w, uint64_t lo)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t del = w ^ (0x7full * ones);
    return (((w - lo * ones) & ~w) | ((del - ones) & ~del)) & high;
}

/* Advance j over bytes of class k inside b[j..end); `lo` is the smallest byte of the class
 * apart from HTAB. Returns the index of the first byte not in the class, or end. */
static inline size_t scan(const unsigned char *b, size_t j, size_t end, unsigned k, uint64_t lo)
{
    while (j < end) {
        if (end - j >= 8) {
            uint64_t w;
            memcpy(&w, b + j, 8);
            if (!swar_stop(w, lo)) {
                j += 8;
                continue;
            }
        }
        if (!(cls[b[j]] & k))
            break;
        j++;
    }
    return j;
}

static int head_fail(krait__req_head *out, int status)
{
    out->error_status = status;
    return KRAIT__MALFORMED;
}

/* The parse ran out of bytes. The scan never looks at index max_head or beyond, so when the
 * buffer already holds max_head bytes the head cannot end in time: an incomplete head at the
 * cap is 431, not a wait. Deciding on the index alone keeps the answer the same whether the
 * bytes arrived whole or piecewise. */
static int head_short(size_t len, size_t max_head, krait__req_head *out)
{
    return len >= max_head ? head_fail(out, 431) : KRAIT__NEED_MORE;
}

/* Where a suspended parse resumes (krait__http_resume.stage). */
enum {
    HS_LEAD,  /* skipping empty lines; pos is at a line start */
    HS_RLINE, /* in the request line, which starts at line_start and is parsed again */
    HS_FIELD, /* pos is at the start of a field line or of the final empty line */
    HS_NAME,  /* in a field name that starts at line_start; buf[line_start..pos) are tchars */
    HS_VALUE, /* in a field value; everything before pos is valid value bytes */
};

/* One parser for both entry points. It walks the head once, in byte order, and each decision
 * depends only on the bytes up to the index where it is taken (and on that index against
 * max_head), never on how many bytes follow; so a prefix answers either NEED_MORE or the final
 * answer. A resumed call re-enters at the saved stage: the bytes before rs->pos were examined
 * already without a decision, and they are the same bytes, so carrying on from there takes the
 * same decisions. Field slices from an earlier call may point into a buffer that has moved
 * since, so a parse resumed inside the field lines makes one more pass from the start when it
 * completes, to fill them in. rs is written only on NEED_MORE, so calling again after a
 * decision repeats it. */
static int parse_head(const char *buf, size_t len, const krait__http_limits *lim,
                      krait__req_head *out, krait__header *hdr, size_t hdr_cap,
                      krait__http_resume *rs)
{
    const unsigned char *b = (const unsigned char *)buf;
    /* The return value is an int, so a head can never be longer than INT_MAX. */
    size_t max_head = lim->max_head < (size_t)INT_MAX ? lim->max_head : (size_t)INT_MAX;
    size_t cap = len < max_head ? len : max_head;
    size_t max_fields = lim->max_headers < hdr_cap ? lim->max_headers : hdr_cap;
    size_t j = rs->pos, ls = rs->line_start, nh = rs->nfields, lend, vs = 0, ve, i;
    int fresh;

    memset(out, 0, sizeof *out);
    if (j > cap || ls > j || rs->stage < HS_LEAD || rs->stage > HS_VALUE) {
        /* Not a continuation of these bytes (the caller broke the rules): start over. Every
         * index below is still checked against cap, so a bad rs can never cause a bad read. */
        j = ls = nh = 0;
        rs->stage = HS_LEAD;
    }
    /* Until the request line is done no slice has been handed out, and a resumed call parses
     * the request line again, so only a resume inside the field lines leaves stale slices. */
    fresh = rs->stage <= HS_RLINE;
    if (fresh)
        nh = 0;

#define SUSPEND(stage_, pos_)                                                                  \
    do {                                                                                       \
        rs->stage = (stage_);                                                                  \
        rs->pos = (pos_);                                                                      \
        rs->line_start = ls;                                                                   \
        rs->nfields = nh;                                                                      \
        return head_short(len, max_head, out);                                                 \
    } while (0)

    switch (rs->stage) {
    case HS_RLINE:
        goto request_line;
    case HS_FIELD:
        goto field_line;
    case HS_NAME:
        goto field_name;
    case HS_VALUE:
        goto field_value;
    }

    /* RFC 9112 §2.2: ignore empty lines received before the request line. They count towards
     * max_head, so an endless stream of CRLFs ends in 431 rather than a wait. */
    for (;;) {
        if (j >= cap)
            SUSPEND(HS_LEAD, j);
        if (b[j] == '\n') {
            j++;
            continue;
        }
        if (b[j] != '\r')
            break;
        if (j + 1 >= cap)
            SUSPEND(HS_LEAD, j);
        if (b[j + 1] != '\n')
            return head_fail(out, 400); /* bare CR, RFC 9112 §2.2 */
        j += 2;
    }
    ls = j;

request_line:
    /* Request line, RFC 9112 §3: method SP request-target SP HTTP-version. Exactly one SP as
     * separator; the lenient whitespace splitting that §3 permits is what smuggling feeds on.
     * Content bytes may sit at indices [ls, ls + max_line); lend is that bound clipped to cap.
     * Whenever a loop stops at lend, LINE_LIMIT says why. A resumed call parses the line again
     * from its start: it is at most max_line bytes. */
    j = ls;
    lend = lim->max_line < cap - ls ? ls + lim->max_line : cap;
#define LINE_LIMIT(j)                                                                          \
    do {                                                                                       \
        if ((j) >= cap)                                                                        \
            SUSPEND(HS_RLINE, ls);                                                             \
        /* b[j] is content byte number max_line + 1, unless it ends the line too early. */    \
        return head_fail(out, b[(j)] == '\r' || b[(j)] == '\n' ? 400 : 414);                   \
    } while (0)

    while (j < lend && IS(b[j], C_TCHAR))
        j++;
    if (j >= lend)
        LINE_LIMIT(j);
    if (j == ls || b[j] != ' ')
        return head_fail(out, 400); /* method = token, RFC 9110 §9.1 */
    out->method = buf + ls;
    out->method_len = j - ls;
    i = ++j;

    /* RFC 9112 §3.2: the target is checked only for SP and controls here; its form (origin,
     * absolute, authority, asterisk) is the router's business. */
    j = scan(b, j, lend, C_TARGET, 0x21);
    if (j >= lend)
        LINE_LIMIT(j);
    if (j == i || b[j] != ' ')
        return head_fail(out, 400);
    out->target = buf + i;
    out->target_len = j - i;
    j++;

    /* RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive. */
    for (int k = 0; k < 8; k++, j++) {
        if (j >= lend)
            LINE_LIMIT(j);
        unsigned char c = b[j];
        int good = k < 5   ? c == (unsigned char)"HTTP/"[k]
                   : k == 6 ? c == '.'
                            : c >= '0' && c <= '9';
        if (!good)
            return head_fail(out, 400);
    }
#undef LINE_LIMIT
    out->version_major = b[j - 3] - '0';
    out->version_minor = b[j - 1] - '0';
    if (j >= cap)
        SUSPEND(HS_RLINE, ls);
    if (b[j] == '\r') {
        if (j + 1 >= cap)
            SUSPEND(HS_RLINE, ls);
        if (b[j + 1] != '\n')
            return head_fail(out, 400);
        j += 2;
    } else if (b[j] == '\n') {
        j++;
    } else {
        return head_fail(out, j - ls >= lim->max_line ? 414 : 400);
    }
    /* RFC 9110 §2.5: a higher minor version of HTTP/1 is processed as the highest we speak,
     * 1.1. Any other major version, including the HTTP/2 preface "PRI * HTTP/2.0", is 505
     * (RFC 9110 §15.6.6), decided at the end of the request line so that later bytes cannot
     * change it. */
    if (out->version_major != 1)
        return head_fail(out, 505);
    if (out->version_minor > 1)
        out->version_minor = 1;

    /* Field lines, RFC 9112 §5: field-name ":" OWS field-value OWS, until an empty line. */
    for (;;) {
    field_line:
        if (j >= cap)
            SUSPEND(HS_FIELD, j);
        if (b[j] == '\n') {
            j++;
            break;
        }
        if (b[j] == '\r') {
            if (j + 1 >= cap)
                SUSPEND(HS_FIELD, j);
            if (b[j + 1] != '\n')
                return head_fail(out, 400);
            j += 2;
            break;
        }
        /* RFC 9112 §5.2: obs-fold is rejected with 400; so is whitespace between the request
         * line and the first field (§2.2). */
        if (b[j] == ' ' || b[j] == '\t')
            return head_fail(out, 400);
        /* Decided on the first byte of the surplus field, so it is the same in every split. */
        if (nh >= max_fields)
            return head_fail(out, 431);
        ls = j;

    field_name:
        while (j < cap && IS(b[j], C_TCHAR))
            j++;
        if (j >= cap)
            SUSPEND(HS_NAME, j);
        /* RFC 9112 §5.1: no whitespace between field name and colon; MUST be a 400. */
        if (j == ls || b[j] != ':')
            return head_fail(out, 400);
        if (fresh) {
            hdr[nh].name = buf + ls;
            hdr[nh].name_len = j - ls;
        }
        j++;
        while (j < cap && (b[j] == ' ' || b[j] == '\t'))
            j++;
        vs = j;

    field_value:
        /* A resumed call lands here with vs unknown, but then it is not fresh and the slices
         * are filled by the final pass. OWS bytes are value bytes, so the scan is the same. */
        j = scan(b, j, cap, C_VALUE, 0x20);
        if (j >= cap)
            SUSPEND(HS_VALUE, j);
        /* RFC 9110 §5.5: CR, LF and NUL are never valid in a value; we refuse every CTL but
         * HTAB rather than replace them with SP. */
        ve = j;
        if (b[j] == '\r') {
            if (j + 1 >= cap)
                SUSPEND(HS_VALUE, j);
            if (b[j + 1] != '\n')
                return head_fail(out, 400);
            j += 2;
        } else if (b[j] == '\n') {
            j++;
        } else {
            return head_fail(out, 400);
        }
        if (fresh) {
            while (ve > vs && (b[ve - 1] == ' ' || b[ve - 1] == '\t'))
                ve--;
            hdr[nh].value = buf + vs;
            hdr[nh].value_len = ve - vs;
        }
        nh++;
    }
#undef SUSPEND
    if (!fresh) {
        krait__http_resume again = {0};
        return parse_head(buf, len, lim, out, hdr, hdr_cap, &again);
    }
    out->nheaders = nh;
    return (int)j;
}

int krait__http_parse_head(const char *buf, size_t len, const krait__http_limits *lim,
                           krait__req_head *out, krait__header *hdr, size_t hdr_cap)
{
    krait__http_resume rs = {0};
    return parse_head(buf, len, lim, out, hdr, hdr_cap, &rs);
}

int krait__http_parse_head_resume(const char *buf, size_t len, const krait__http_limits *lim,
                                  krait__req_head *out, krait__header *hdr, size_t hdr_cap,
                                  krait__http_resume *rs)
{
    return parse_head(buf, len, lim, out, hdr, hdr_cap, rs);
}

/* ---- analysis of the parsed fields ---- */

static int lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Case-insensitive comparison of p[0..n) with a lower-case literal. */
static int ieq(const char *p, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    if (n != m)
        return 0;
    for (size_t k = 0; k < n; k++)
        if (lower((unsigned char)p[k]) != (unsigned char)lit[k])
            return 0;
    return 1;
}

/* Iterate a comma-separated list (RFC 9110 §5.6.1): *pos moves through v[0..n); each call yields
 * the next element with OWS trimmed, empty elements included. Returns 0 after the last one. */
static int list_next(const char *v, size_t n, size_t *pos, const char **elem, size_t *elen)
{
    size_t k = *pos, s, e;
    if (k > n)
        return 0;
    while (k < n && (v[k] == ' ' || v[k] == '\t'))
        k++;
    s = k;
    while (k < n && v[k] != ',')
        k++;
    e = k;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
        e--;
    *elem = v + s;
    *elen = e - s;
    *pos = k + 1; /* past the comma, or n + 1 after the last element */
    return 1;
}

/* Does the list v[0..n) hold the token `lit` (lower case), in any case? */
static int list_has(const char *v, size_t n, const char *lit)
{
    const char *e;
    size_t el, pos = 0;
    while (list_next(v, n, &pos, &e, &el))
        if (ieq(e, el, lit))
            return 1;
    return 0;
}

/* Content-Length value, RFC 9110 §8.6: 1*DIGIT, or a list of identical values (RFC 9112 §6.3
 * item 5). Merges into *cl (-1 when unset). Returns 0, or -1 for anything else. Empty list
 * elements are refused too: this field decides framing, so we take no liberties with it. */
static int content_length(const char *v, size_t n, int64_t *cl)
{
    const char *e;
    size_t el, pos = 0;
    while (list_next(v, n, &pos, &e, &el)) {
        int64_t x = 0;
        if (el == 0)
            return -1;
        for (size_t k = 0; k < el; k++) {
            if (e[k] < '0' || e[k] > '9')
                return -1;
            if (x > (INT64_MAX - (e[k] - '0')) / 10)
                return -1;
            x = x * 10 + (e[k] - '0');
        }
        if (*cl >= 0 && *cl != x)
            return -1;
        *cl = x;
    }
    return 0;
}

int krait__http_analyze(const krait__req_head *head, const krait__header *hdr,
                        krait__req_info *info)
{
    int http10 = head->version_major == 1 && head->version_minor == 0;
    int bad_cl = 0, te_fields = 0, te_codings = 0, te_other = 0, hosts = 0, bad_host = 0;
    int expect_other = 0, expect_100 = 0, conn_close = 0, conn_keep = 0, conn_upgrade = 0;
    int upgrade_ws = 0;

    memset(info, 0, sizeof *info);
    info->content_length = -1;

    for (size_t k = 0; k < head->nheaders; k++) {
        const char *name = hdr[k].name, *v = hdr[k].value;
        size_t nl = hdr[k].name_len, vl = hdr[k].value_len;
        const char *e;
        size_t el, pos = 0;

        switch (nl) {
        case 4:
            if (!ieq(name, nl, "host"))
                break;
            hosts++;
            info->host = v;
            info->host_len = vl;
            /* RFC 9112 §3.2: a Host with an invalid field value is a 400 too. We check the
             * alphabet of uri-host [":" port] (RFC 3986 §3.2.2), not its structure. */
            for (size_t m = 0; m < vl; m++)
                if (!IS(v[m], C_HOST))
                    bad_host = 1;
            break;
        case 6:
            if (!ieq(name, nl, "expect"))
                break;
            /* RFC 9110 §10.1.1: 100-continue is the only expectation; others MAY get 417. */
            if (ieq(v, vl, "100-continue"))
                expect_100 = 1;
            else
                expect_other = 1;
            break;
        case 7:
            if (ieq(name, nl, "upgrade") && list_has(v, vl, "websocket"))
                upgrade_ws = 1;
            break;
        case 10:
            if (!ieq(name, nl, "connection"))
                break;
            /* RFC 9110 §7.6.1: a list of case-insensitive connection options. */
            while (list_next(v, vl, &pos, &e, &el)) {
                if (ieq(e, el, "close"))
                    conn_close = 1;
                else if (ieq(e, el, "keep-alive"))
                    conn_keep = 1;
                else if (ieq(e, el, "upgrade"))
                    conn_upgrade = 1;
            }
            break;
        case 14:
            if (ieq(name, nl, "content-length") && content_length(v, vl, &info->content_length))
                bad_cl = 1;
            break;
        case 17:
            if (!ieq(name, nl, "transfer-encoding"))
                break;
            te_fields++;
            /* All Transfer-Encoding fields form one list (RFC 9110 §5.3). Empty elements are
             * skipped as §5.6.1 asks; a field with nothing else still counts as present. */
            while (list_next(v, vl, &pos, &e, &el)) {
                if (el == 0)
                    continue;
                te_codings++;
                if (!ieq(e, el, "chunked"))
                    te_other = 1;
            }
            break;
        }
    }

    if (http10)
        info->keep_alive = conn_keep && !conn_close; /* RFC 9112 §9.3 */
    else
        info->keep_alive = !conn_close;
    info->upgrade_websocket = upgrade_ws && conn_upgrade;
    /* RFC 9110 §10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request. */
    info->expect_continue = expect_100 && !http10;

    if (bad_cl)
        info->error_status = 400;
    else if (te_fields && http10)
        info->error_status = 400; /* RFC 9112 §6.1: treat the framing as faulty */
    else if (te_fields && info->content_length >= 0)
        info->error_status = 400; /* RFC 9112 §6.1: MAY reject; we do, smuggling */
    else if (hosts > 1 || bad_host || (hosts == 0 && !http10))
        info->error_status = 400; /* RFC 9112 §3.2 */
    else if (te_fields && (te_codings != 1 || te_other))
        info->error_status = 501; /* RFC 9112 §6.1: a coding we do not understand */
    else if (expect_other)
        info->error_status = 417;
    if (info->error_status)
        return -1;
    info->chunked = te_fields > 0;
    return 0;
}

/* ---- chunked body decoder, RFC 9112 §7.1 ---- */

enum {
    CK_SIZE0,       /* first HEXDIG of chunk-size (0 so that a zeroed struct starts here) */
    CK_SIZE,        /* further HEXDIGs */
    CK_EXT_WS,      /* BWS before ';' or the line end */
    CK_EXT_NAME0,   /* after ';': BWS, then the first tchar of chunk-ext-name */
    CK_EXT_NAME,    /* in chunk-ext-name */
    CK_EXT_NAME_WS, /* BWS after the name: '=', ';' or the line end */
    CK_EXT_VAL0,    /* after '=': BWS, then a token or a quoted-string */
    CK_EXT_TOKEN,   /* in a token value */
    CK_EXT_QUOTED,  /* in a quoted-string value */
    CK_EXT_QESC,    /* after a backslash in a quoted-string */
    CK_SIZE_LF,     /* CR seen at the end of the size line */
    CK_DATA,        /* chunk-data: st->remaining bytes to go */
    CK_DATA_CR,     /* the line end after chunk-data */
    CK_DATA_LF,
    CK_TR_LINE0,    /* start of a trailer line, or the final empty line */
    CK_TR_NAME,
    CK_TR_VALUE,
    CK_TR_LF,       /* CR seen at the end of a trailer field line */
    CK_TR_END_LF,   /* CR seen on the final empty line */
    CK_DONE,
    CK_ERROR,
};

#define CHUNK_SIZE_MAX (UINT64_C(1) << 62)

static int hexval(unsigned char c)
{
    return c <= '9' ? c - '0' : lower(c) - 'a' + 10;
}

int krait__chunked_decode(krait__chunked *st, const char *in, size_t in_len, size_t *consumed,
                          char *out, size_t out_cap, size_t *produced)
{
    const unsigned char *b = (const unsigned char *)in;
    size_t i = 0, o = 0;
    int s = st->state;
    int rc = 0;

    if (s == CK_DONE || s == CK_ERROR) {
        *consumed = *produced = 0;
        return s == CK_DONE ? 1 : KRAIT__MALFORMED;
    }

    while (i < in_len) {
        unsigned char c;
        if (s == CK_DATA) {
            size_t n = in_len - i;
            if (n > st->remaining)
                n = (size_t)st->remaining;
            if (n > out_cap - o)
                n = out_cap - o;
            if (n == 0)
                break; /* out is full */
            /* In place, out + o never passes in + i: each byte written was first read. */
            memmove(out + o, in + i, n);
            i += n;
            o += n;
            st->remaining -= n;
            st->total += n;
            if (st->remaining == 0)
                s = CK_DATA_CR;
            continue;
        }

        c = b[i];
        if (s < CK_SIZE_LF && c != '\r' && c != '\n' && ++st->line_len > KRAIT__CHUNK_LINE_MAX)
            goto bad;
        if (s >= CK_TR_LINE0 && ++st->trailer_bytes > KRAIT__CHUNK_TRAILER_MAX)
            goto bad;

        switch (s) {
        case CK_SIZE0:
            if (!IS(c, C_HEX))
                goto bad; /* chunk-size = 1*HEXDIG */
            st->remaining = (uint64_t)hexval(c);
            s = CK_SIZE;
            break;
        case CK_SIZE:
            if (IS(c, C_HEX)) {
                unsigned d = (unsigned)hexval(c);
                /* Leading zeros are harmless; only the value is bounded. */
                if (st->remaining > (CHUNK_SIZE_MAX - d) / 16)
                    goto bad;
                st->remaining = st->remaining * 16 + d;
                break;
            }
            goto ext;
        case CK_EXT_WS:
        case CK_EXT_NAME_WS:
        case CK_EXT_TOKEN:
        case CK_EXT_NAME:
        ext:
            /* RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ). */
            if ((s == CK_EXT_NAME || s == CK_EXT_TOKEN) && IS(c, C_TCHAR))
                break;
            if (c == ' ' || c == '\t')
                s = s == CK_EXT_NAME ? CK_EXT_NAME_WS : s == CK_EXT_NAME_WS ? s : CK_EXT_WS;
            else if (c == ';')
                s = CK_EXT_NAME0;
            else if (c == '=' && (s == CK_EXT_NAME || s == CK_EXT_NAME_WS))
                s = CK_EXT_VAL0;
            else if (c == '\r')
                s = CK_SIZE_LF;
            else
                goto bad; /* bare LF included: RFC 9112 §7.1 wants CRLF here */
            break;
        case CK_EXT_NAME0:
            if (IS(c, C_TCHAR))
                s = CK_EXT_NAME;
            else if (c != ' ' && c != '\t')
                goto bad;
            break;
        case CK_EXT_VAL0:
            if (IS(c, C_TCHAR))
                s = CK_EXT_TOKEN;
            else if (c == '"')
                s = CK_EXT_QUOTED;
            else if (c != ' ' && c != '\t')
                goto bad;
            break;
        case CK_EXT_QUOTED:
            if (c == '"')
                s = CK_EXT_WS;
            else if (c == '\\')
                s = CK_EXT_QESC;
            else if (!IS(c, C_QDTEXT))
                goto bad; /* includes CR and LF: a quoted-string never spans lines */
            break;
        case CK_EXT_QESC:
            /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (!IS(c, C_VALUE))
                goto bad;
            s = CK_EXT_QUOTED;
            break;
        case CK_SIZE_LF:
            if (c != '\n')
                goto bad; /* bare CR */
            st->line_len = 0;
            if (st->remaining == 0) {
                s = CK_TR_LINE0; /* last-chunk; the trailer section follows */
                st->trailer_bytes = 0;
            } else {
                s = CK_DATA;
            }
            break;
        case CK_DATA_CR:
            /* RFC 9112 §7.1: chunk-data is followed by CRLF. §2.2's allowance for a bare LF
             * covers the start line and header fields only: a proxy forwarding these bytes
             * unchanged could read a bare LF differently, so it is refused. */
            if (c == '\r')
                s = CK_DATA_LF;
            else
                goto bad;
            break;
        case CK_DATA_LF:
            if (c != '\n')
                goto bad;
            s = CK_SIZE0;
            break;
        case CK_TR_LINE0:
            /* RFC 9112 §7.1.2: trailer fields are field lines; no obs-fold, no empty name. */
            if (c == '\r')
                s = CK_TR_END_LF;
            else if (IS(c, C_TCHAR))
                s = CK_TR_NAME;
            else
                goto bad;
            break;
        case CK_TR_NAME:
            if (c == ':')
                s = CK_TR_VALUE;
            else if (!IS(c, C_TCHAR))
                goto bad;
            break;
        case CK_TR_VALUE:
            if (c == '\r')
                s = CK_TR_LF;
            else if (!IS(c, C_VALUE))
                goto bad;
            break;
        case CK_TR_LF:
            if (c != '\n')
                goto bad;
            s = CK_TR_LINE0;
            break;
        case CK_TR_END_LF:
            if (c != '\n')
                goto bad;
            i++;
            s = CK_DONE;
            rc = 1;
            goto out;
        default:
            goto bad;
        }
        i++;
    }
    goto out;

bad:
    s = CK_ERROR;
    rc = KRAIT__MALFORMED;
out:
    st->state = s;
    *consumed = i;
    *produced = o;
    return rc;
}
