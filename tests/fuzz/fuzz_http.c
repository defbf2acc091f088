/* libFuzzer driver for the request-head parser and analyzer (native/src/http.c).
 * Input: one selector byte (bit 0: small limits, bit 1: small header array), then the bytes.
 * Checks the answer's invariants, that a data-derived prefix answers NEED_MORE or the same,
 * that the head alone parses to the same length, that the resumable parser fed the input in
 * three growing pieces (each at a new address) answers like the stateless one at every step,
 * and decodes any chunked body that follows. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "http.h"

#define HCAP 100

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

typedef struct {
    int rc;
    krait__req_head h;
    krait__header hdr[HCAP];
} result;

/* Parse a private, exact-size heap copy so that any read past len is caught by ASan. */
static void parse_copy(const uint8_t *data, size_t len, const krait__http_limits *lim,
                       size_t hcap, result *r, char **keep)
{
    char *buf = malloc(len ? len : 1);
    if (len)
        memcpy(buf, data, len);
    r->rc = krait__http_parse_head(buf, len, lim, &r->h, r->hdr, hcap);
    *keep = buf;
}

static void same(const result *a, const char *abase, const result *b, const char *bbase)
{
    CHECK(a->rc == b->rc);
    CHECK(a->h.error_status == b->h.error_status);
    if (a->rc < 0)
        return;
    CHECK(a->h.method - abase == b->h.method - bbase && a->h.method_len == b->h.method_len);
    CHECK(a->h.target - abase == b->h.target - bbase && a->h.target_len == b->h.target_len);
    CHECK(a->h.version_minor == b->h.version_minor && a->h.nheaders == b->h.nheaders);
    for (size_t k = 0; k < a->h.nheaders; k++) {
        CHECK(a->hdr[k].name - abase == b->hdr[k].name - bbase);
        CHECK(a->hdr[k].name_len == b->hdr[k].name_len);
        CHECK(a->hdr[k].value - abase == b->hdr[k].value - bbase);
        CHECK(a->hdr[k].value_len == b->hdr[k].value_len);
    }
}

static void check_body(const char *p, size_t n)
{
    krait__chunked st;
    size_t c, o;
    char *out = malloc(n ? n : 1);
    memset(&st, 0, sizeof st);
    int rc = krait__chunked_decode(&st, p, n, &c, out, n, &o);
    CHECK(rc == 1 || rc == 0 || rc == KRAIT__MALFORMED);
    CHECK(c <= n && o <= c && st.total == o);
    if (rc == 0)
        CHECK(c == n);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static result whole, part;
    static const krait__http_limits def = {8192, 65536, 100}, small = {32, 256, 4};
    char *wbuf, *pbuf;

    if (size < 1)
        return 0;
    const krait__http_limits *lim = data[0] & 1 ? &small : &def;
    size_t hcap = data[0] & 2 ? 3 : HCAP;
    size_t fields = lim->max_headers < hcap ? lim->max_headers : hcap;
    data++;
    size--;

    parse_copy(data, size, lim, hcap, &whole, &wbuf);
    int rc = whole.rc;
    CHECK(rc == KRAIT__NEED_MORE || rc == KRAIT__MALFORMED || rc > 0);
    if (rc == KRAIT__NEED_MORE)
        CHECK(size < lim->max_head && whole.h.error_status == 0);
    if (rc == KRAIT__MALFORMED) {
        int st = whole.h.error_status;
        CHECK(st == 400 || st == 414 || st == 431 || st == 505);
    }
    if (rc > 0) {
        const krait__req_head *h = &whole.h;
        CHECK((size_t)rc <= size && (size_t)rc <= lim->max_head && h->error_status == 0);
        CHECK(h->version_major == 1 && (h->version_minor == 0 || h->version_minor == 1));
        CHECK(h->nheaders <= fields);
        CHECK(h->method >= wbuf && h->method_len > 0 && h->target_len > 0);
        CHECK(h->target == h->method + h->method_len + 1);
        CHECK(h->method_len + h->target_len + 10 <= lim->max_line);
        for (size_t k = 0; k < h->method_len; k++)
            CHECK(is_tchar((unsigned char)h->method[k]));
        for (size_t k = 0; k < h->target_len; k++)
            CHECK((unsigned char)h->target[k] > 0x20 && h->target[k] != 0x7f);
        for (size_t k = 0; k < h->nheaders; k++) {
            const krait__header *f = &whole.hdr[k];
            CHECK(f->name > h->target && f->name_len > 0);
            CHECK(f->value >= f->name + f->name_len + 1 && f->value + f->value_len <= wbuf + rc);
            CHECK(f->name[f->name_len] == ':');
            for (size_t m = 0; m < f->name_len; m++)
                CHECK(is_tchar((unsigned char)f->name[m]));
            for (size_t m = 0; m < f->value_len; m++) {
                unsigned char c = (unsigned char)f->value[m];
                CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
            }
            if (f->value_len)
                CHECK(!is_ows(f->value[0]) && !is_ows(f->value[f->value_len - 1]));
        }

        /* The head alone gives the same answer. */
        parse_copy(data, (size_t)rc, lim, hcap, &part, &pbuf);
        same(&part, pbuf, &whole, wbuf);
        free(pbuf);

        krait__req_info info;
        int arc = krait__http_analyze(h, whole.hdr, &info);
        CHECK(arc == 0 || arc == -1);
        CHECK(arc == 0 ? info.error_status == 0
                       : info.error_status == 400 || info.error_status == 417 ||
                             info.error_status == 501);
        if (arc == 0) {
            CHECK(!(info.chunked && info.content_length >= 0));
            CHECK(h->version_minor == 0 || info.host != NULL);
            if (info.chunked)
                check_body(wbuf + rc, size - (size_t)rc);
        }
    }

    /* A prefix at a data-derived offset answers NEED_MORE or exactly what the whole does. */
    uint32_t hsh = 2166136261u;
    for (size_t k = 0; k < size; k++)
        hsh = (hsh ^ data[k]) * 16777619u;
    size_t cut = size ? hsh % (size + 1) : 0;
    parse_copy(data, cut, lim, hcap, &part, &pbuf);
    if (part.rc != KRAIT__NEED_MORE)
        same(&part, pbuf, &whole, wbuf);
    else
        CHECK(rc == KRAIT__NEED_MORE || rc == KRAIT__MALFORMED || (size_t)rc > cut);
    free(pbuf);

    /* Resumable parser: prefixes cut, cut2, size, each a fresh copy (the buffer "moves"). */
    size_t cut2 = cut + (size - cut) / 2, cuts[3] = {cut < cut2 ? cut : cut2, cut2, size};
    krait__http_resume rs;
    memset(&rs, 0, sizeof rs);
    for (int p = 0; p < 3; p++) {
        static result res;
        char *rbuf = malloc(cuts[p] ? cuts[p] : 1);
        if (cuts[p])
            memcpy(rbuf, data, cuts[p]);
        res.rc = krait__http_parse_head_resume(rbuf, cuts[p], lim, &res.h, res.hdr, hcap, &rs);
        parse_copy(data, cuts[p], lim, hcap, &part, &pbuf);
        same(&res, rbuf, &part, pbuf);
        free(pbuf);
        free(rbuf);
        if (res.rc != KRAIT__NEED_MORE)
            break;
    }
    free(wbuf);
    return 0;
}
