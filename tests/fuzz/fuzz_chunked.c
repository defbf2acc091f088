/* libFuzzer driver for the chunked body decoder (native/src/http.c).
 * Input: a split byte, an output-window byte, then the body. Decodes it whole, in two pieces
 * split at a data-derived offset with a small output window, and in place, and requires the
 * same answer, the same bytes consumed and the same decoded output every time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "http.h"

typedef struct {
    int rc;
    size_t consumed, produced;
    char *out;
} run;

/* Feed in[0..n) as pieces [0, cut) and [cut, n), each an exact-size heap copy, with at most
 * `step` bytes of output space per call (also an exact-size heap block). */
static void run_split(const uint8_t *in, size_t n, size_t cut, size_t step, run *r)
{
    krait__chunked st;
    size_t bounds[2] = {cut, n}, pos = 0;
    memset(&st, 0, sizeof st);
    r->rc = 0;
    r->consumed = r->produced = 0;
    r->out = malloc(n ? n : 1);
    for (int p = 0; p < 2 && r->rc == 0; p++) {
        size_t len = bounds[p] - pos, off = 0;
        char *piece = malloc(len ? len : 1);
        if (len)
            memcpy(piece, in + pos, len);
        while (off < len) {
            size_t c, o, room = n - r->produced < step ? n - r->produced : step;
            char *win = malloc(room ? room : 1);
            r->rc = krait__chunked_decode(&st, piece + off, len - off, &c, win, room, &o);
            CHECK(c <= len - off && o <= room);
            memcpy(r->out + r->produced, win, o);
            free(win);
            off += c;
            r->consumed += c;
            r->produced += o;
            if (r->rc != 0)
                break;
            CHECK(c || o); /* room > 0 here, so something must move */
        }
        free(piece);
        pos = bounds[p];
    }
    CHECK(st.total == r->produced);
}

static void run_inplace(const uint8_t *in, size_t n, size_t step, run *r)
{
    krait__chunked st;
    char *buf = malloc(n ? n : 1);
    memset(&st, 0, sizeof st);
    if (n)
        memcpy(buf, in, n);
    r->consumed = r->produced = 0;
    r->rc = 0;
    while (r->consumed < n) {
        size_t c, o, room = n - r->produced < step ? n - r->produced : step;
        r->rc = krait__chunked_decode(&st, buf + r->consumed, n - r->consumed, &c,
                                      buf + r->produced, room, &o);
        r->consumed += c;
        r->produced += o;
        CHECK(r->produced <= r->consumed);
        if (r->rc != 0)
            break;
        CHECK(c || o);
    }
    r->out = buf;
}

static void same(const run *a, const run *b)
{
    CHECK(a->rc == b->rc);
    CHECK(a->consumed == b->consumed);
    CHECK(a->produced == b->produced);
    CHECK(memcmp(a->out, b->out, a->produced) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run whole, split, inplace, inplace_small;
    if (size < 2)
        return 0;
    size_t sel = data[0], step = (size_t)data[1] % 16 + 1;
    const uint8_t *in = data + 2;
    size_t n = size - 2;

    run_split(in, n, n, SIZE_MAX, &whole);
    CHECK(whole.rc == 1 || whole.rc == 0 || whole.rc == KRAIT__MALFORMED);
    CHECK(whole.consumed <= n && whole.produced <= whole.consumed);
    if (whole.rc == 0)
        CHECK(whole.consumed == n);

    size_t cut = n ? (sel * 131 + n) % (n + 1) : 0;
    run_split(in, n, cut, step, &split);
    same(&split, &whole);
    run_inplace(in, n, SIZE_MAX, &inplace);
    same(&inplace, &whole);
    run_inplace(in, n, step, &inplace_small);
    same(&inplace_small, &whole);

    free(whole.out);
    free(split.out);
    free(inplace.out);
    free(inplace_small.out);
    return 0;
}
