/* libFuzzer driver for native/src/logjson.c: hostile bytes escaped into JSON and rendered into
 * whole access-log lines, checked by tests/native/json_check.h (a separate strict parser):
 * every line is one valid JSON object of valid UTF-8 with the keys in order, within its bound,
 * and every string decodes back to the bytes it was given (or a prefix of them, when cut, and
 * then the line says "truncated":true). Seeds live in tests/fuzz/corpus/logjson/.
 *
 * Input layout: byte 0 chooses the escape's cap (times 4), bytes 1..8 a little-endian u64 that
 * feeds the time, status, size, duration, loop and worker; the rest is split at 0x00 0x00 into
 * up to eight fields: path, user agent, referer, host, method, remote, TLS version, request id.
 * Each field is copied into its own exact-size allocation so that ASan catches a read one byte
 * past it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../native/json_check.h"
#include "fuzz_common.h"
#include "logjson.h"

#define NFIELDS 8

static char esc[1 << 17];
static unsigned char dec[1 << 17], raw[1 << 17];
static char line[KRAIT__LOGJSON_HEAD_MAX + KRAIT__LOGJSON_TAIL_MAX];

/* s[0..n) is the escape of src[0..used): a valid JSON string inside that decodes back. */
static void check_escaped(const char *s, size_t n, const char *src, size_t used)
{
    long d = jc_string(s, n, dec);
    CHECK(d >= 0);
    long b = jc_bytes(dec, (size_t)d, raw);
    CHECK(b == (long)used);
    CHECK(memcmp(raw, src, used) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9 || size > 16384)
        return 0;
    size_t cap = (size_t)data[0] * 4;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)data[1 + i] << (8 * i);
    const uint8_t *rest = data + 9;
    size_t left = size - 9;

    char *field[NFIELDS] = {0};
    size_t flen[NFIELDS] = {0};
    int nf = 0;
    while (nf < NFIELDS) {
        size_t n = 0;
        while (n + 1 < left && !(rest[n] == 0 && rest[n + 1] == 0))
            n++;
        if (n + 1 >= left)
            n = left;
        field[nf] = malloc(n ? n : 1);
        memcpy(field[nf], rest, n);
        flen[nf++] = n;
        if (n == left)
            break;
        rest += n + 2;
        left -= n + 2;
    }

    /* The escape alone, whole and at the chosen cap. */
    size_t used;
    size_t w = krait__json_escape(esc, sizeof esc, field[0], flen[0], &used);
    CHECK(used == flen[0]);  /* the buffer holds six times any input */
    check_escaped(esc, w, field[0], used);
    /* Printable ASCII but '"' and '\\' passes as it is; anything else is longer escaped. */
    int plain = 1;
    for (size_t i = 0; i < flen[0]; i++) {
        unsigned char c = (unsigned char)field[0][i];
        plain &= c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
    }
    if (plain)
        CHECK(w == flen[0] && memcmp(esc, field[0], w) == 0);
    w = krait__json_escape(esc, cap, field[0], flen[0], &used);
    CHECK(w <= cap);
    CHECK(used == flen[0] || w + 6 > cap);  /* stopped only for want of room */
    check_escaped(esc, w, field[0], used);

    /* A whole line; a field of the input that is absent is null. */
    krait__logjson_str s[NFIELDS];
    for (int i = 0; i < NFIELDS; i++) {
        s[i].p = i < nf ? field[i] : NULL;
        s[i].n = i < nf ? flen[i] : 0;
    }
    krait__logjson_head h = {
        .time_ms = (int64_t)(v >> 16) - ((int64_t)1 << 46),
        .path = s[0], .ua = s[1], .referer = s[2], .host = s[3], .method = s[4],
        .remote = s[5], .peer = s[5], .tls = s[6],
        .version_minor = (int)(v & 3) - 1,
    };
    int cut = -1;
    size_t hn = krait__logjson_head_render(line, KRAIT__LOGJSON_HEAD_MAX, &h, &cut);
    CHECK(hn > 0 && hn <= KRAIT__LOGJSON_HEAD_MAX);
    CHECK(cut == 0 || cut == 1);
    krait__logjson_tail t = {
        .id = s[7].p, .id_len = s[7].n,
        .status = (int)(v & 0x3ff), .bytes = v, .duration_ns = (int64_t)v,
        .loop = (int)(v >> 60), .worker = (int)((v >> 8) & 0x3f) - 1,
        .worker_pid = (int)(v >> 32), .truncated = cut,
    };
    size_t tn = krait__logjson_tail_render(line + hn, KRAIT__LOGJSON_TAIL_MAX, &t);
    CHECK(tn > 0 && tn <= KRAIT__LOGJSON_TAIL_MAX);
    jc_pair p[32];
    int np = jc_line(line, hn + tn, p, 32);
    CHECK(np == 18);
    /* The head's strings, in order: remote, peer, method, path, host, referer, ua, tls. */
    const struct { int k; int f; } strs[] = {{1, 5}, {2, 5}, {3, 4}, {4, 0}, {6, 3}, {7, 2},
                                              {8, 1}, {9, 6}};
    int any_cut = 0;
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        const jc_pair *q = &p[strs[i].k];
        int f = strs[i].f;
        if (f >= nf) {
            CHECK(q->type == JC_NULL);
            continue;
        }
        CHECK(q->type == JC_STRING);
        long d = jc_string(q->val, q->val_len, dec);
        CHECK(d >= 0);
        long b = jc_bytes(dec, (size_t)d, raw);
        CHECK(b >= 0 && (size_t)b <= flen[f] && memcmp(raw, field[f], (size_t)b) == 0);
        any_cut |= (size_t)b < flen[f];
    }
    CHECK(any_cut == cut);
    CHECK((p[17].type == JC_TRUE) == (cut == 1));
    /* The id: as given when valid, else null. */
    if (nf > 7 && krait__request_id_ok(field[7], flen[7]))
        CHECK(p[10].type == JC_STRING && p[10].val_len == flen[7] &&
              memcmp(p[10].val, field[7], flen[7]) == 0);
    else
        CHECK(p[10].type == JC_NULL);

    for (int i = 0; i < nf; i++)
        free(field[i]);
    return 0;
}
