/* libFuzzer driver for native/src/ws.c. Input: a config byte (bit 0 require_mask, bits 1-3
 * allowed RSV, bits 4-6 the payload limit), a byte seeding the piece sizes, then a stream of
 * frames. Each frame header is parsed (and re-parsed from every prefix), its payload unmasked
 * whole and in pieces, text messages validated whole, by frame, in pieces and byte by byte, and
 * close payloads checked. The raw stream is also fed to the UTF-8 validator and the accept key
 * function. Every input handed to ws.c is an exact-size heap copy so ASan sees any overread. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#ifndef KRAIT__NEED_MORE
#define KRAIT__NEED_MORE (-2)
#endif

#define CHECK(c)                                                                     \
    do {                                                                             \
        if (!(c)) {                                                                  \
            fprintf(stderr, "fuzz_ws: invariant failed at line %d: %s\n", __LINE__, #c); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    CHECK(d != NULL);
    if (n)
        memcpy(d, p, n);
    return d;
}

static uint32_t next_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* 1 valid and complete, 0 valid so far, -1 invalid. */
static int utf8_class(krait__utf8 *v, int rc)
{
    if (rc != 0) {
        CHECK(!krait__utf8_complete(v));
        return -1;
    }
    return krait__utf8_complete(v);
}

static int utf8_whole(const uint8_t *p, size_t n)
{
    krait__utf8 v = {0};
    uint8_t *d = dup_exact(p, n);
    int rc = krait__utf8_feed(&v, d, n);
    free(d);
    return utf8_class(&v, rc);
}

/* The UTF-8 validator on arbitrary bytes: whole, byte by byte (failing exactly where the
 * shortest invalid prefix ends) and split at a data-derived offset. */
static void fuzz_utf8(const uint8_t *p, size_t n, uint32_t seed)
{
    int whole = utf8_whole(p, n);
    krait__utf8 v = {0};
    long fail_at = -1;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t *d = dup_exact(p + i, 1);
        int r = krait__utf8_feed(&v, d, 1);
        free(d);
        if (r != 0 && fail_at < 0)
            fail_at = (long)i;
        CHECK(!(r == 0 && fail_at >= 0)); /* failure is sticky */
        rc |= r;
    }
    CHECK(utf8_class(&v, rc) == whole);
    if (fail_at >= 0) {
        CHECK(utf8_whole(p, (size_t)fail_at) >= 0);
        CHECK(utf8_whole(p, (size_t)fail_at + 1) == -1);
    }
    size_t cut = n ? seed % (n + 1) : 0;
    krait__utf8 w = {0};
    uint8_t *a = dup_exact(p, cut), *b = dup_exact(p + cut, n - cut);
    int r = krait__utf8_feed(&w, a, cut);
    r |= krait__utf8_feed(&w, b, n - cut);
    free(a);
    free(b);
    CHECK(utf8_class(&w, r) == whole);
}

static void fuzz_accept(const uint8_t *p, size_t n)
{
    char out[KRAIT__WS_ACCEPT_LEN + 2];
    out[KRAIT__WS_ACCEPT_LEN + 1] = 'z';
    uint8_t *d = dup_exact(p, n);
    int rc = krait__ws_accept((const char *)d, n, out);
    free(d);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        CHECK(n == 24 && p[22] == '=' && p[23] == '=');
        CHECK(strlen(out) == KRAIT__WS_ACCEPT_LEN && out[KRAIT__WS_ACCEPT_LEN + 1] == 'z');
        CHECK(out[KRAIT__WS_ACCEPT_LEN - 1] == '=');
    }
}

static int close_code_allowed(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

static void fuzz_close(const uint8_t *p, size_t n)
{
    uint8_t *d = dup_exact(p, n);
    int cc = -7;
    int rc = krait__ws_check_close(d, n, &cc);
    free(d);
    int want;
    if (n == 0)
        want = 0;
    else if (n == 1 || !close_code_allowed((unsigned)p[0] << 8 | p[1]))
        want = 1002;
    else
        want = utf8_whole(p + 2, n - 2) == 1 ? 0 : 1007;
    if (want == 0)
        CHECK(rc == 0);
    else
        CHECK(rc == -1 && cc == want);
}

static const uint64_t max_table[8] = {UINT64_MAX, 0, 5, 125, 126, 65535, 65536, 1u << 20};

/* Parse the header at p[0..n) and every prefix of it; check the invariants. */
static int parse_checked(const uint8_t *p, size_t n, int rm, int allowed, uint64_t max,
                         krait__ws_frame *f, int *cc)
{
    uint8_t *d = dup_exact(p, n);
    *cc = -7;
    int rc = krait__ws_parse_header(d, n, rm, allowed, max, f, cc);
    free(d);
    CHECK(rc == KRAIT__NEED_MORE || rc == -1 || rc > 0);
    if (rc == KRAIT__NEED_MORE)
        CHECK(n < 14);
    if (rc == -1)
        CHECK(*cc == 1002 || *cc == 1009);
    if (rc > 0) {
        CHECK(rc >= 2 && rc <= 14 && (size_t)rc <= n && (size_t)rc == f->header_len);
        CHECK(f->fin == (p[0] >> 7) && f->rsv == ((p[0] >> 4) & 7) && f->opcode == (p[0] & 15));
        CHECK(f->masked == (p[1] >> 7));
        CHECK(f->opcode <= 2 || (f->opcode >= 8 && f->opcode <= 10));
        CHECK(f->opcode < 8 || (f->fin && f->payload_len <= 125));
        CHECK(!(f->rsv & ~allowed) && (!rm || f->masked) && f->payload_len <= max);
        size_t ext = f->header_len - 2 - (f->masked ? 4 : 0);
        CHECK(ext == 0 || ext == 2 || ext == 8);
        CHECK(ext != 0 || f->payload_len < 126);
        CHECK(ext != 2 || (f->payload_len >= 126 && f->payload_len <= 65535));
        CHECK(ext != 8 || (f->payload_len >= 65536 && !(f->payload_len >> 63)));
        if (f->masked)
            CHECK(memcmp(f->mask, p + 2 + ext, 4) == 0);

        /* Writing the header back gives the same bytes, less the mask. */
        uint8_t w[10];
        size_t wl = krait__ws_write_header(w, f->fin, f->rsv & 4, f->opcode, f->payload_len);
        CHECK(wl == 2 + ext);
        if ((f->rsv & 3) == 0)
            CHECK(w[0] == p[0]);
        CHECK(w[1] == (p[1] & 0x7F) && memcmp(w + 2, p + 2, ext) == 0);
    }
    /* Every shorter prefix gives NEED_MORE or the same answer, and nothing after an answer
     * goes back to NEED_MORE. */
    size_t limit = n < 15 ? n : 15;
    int seen = 0;
    for (size_t k = 0; k < limit; k++) {
        krait__ws_frame fk;
        int cck = -7;
        uint8_t *dk = dup_exact(p, k);
        int rk = krait__ws_parse_header(dk, k, rm, allowed, max, &fk, &cck);
        free(dk);
        if (rk == KRAIT__NEED_MORE) {
            CHECK(!seen);
            continue;
        }
        CHECK(rc <= 0 || k >= (size_t)rc); /* a valid header needs all of its bytes */
        seen = 1;
        CHECK(rk == rc);
        if (rk == -1)
            CHECK(cck == *cc);
        if (rk > 0)
            CHECK(fk.header_len == f->header_len && fk.payload_len == f->payload_len &&
                  memcmp(fk.mask, f->mask, 4) == 0);
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int rm = data[0] & 1;
    int allowed = (data[0] >> 1) & 7;
    uint64_t max = max_table[(data[0] >> 4) & 7];
    uint32_t seed = 0x9E3779B9u ^ data[1] ^ (uint32_t)size << 8;
    const uint8_t *in = data + 2;
    size_t len = size - 2;

    fuzz_accept(in, len < 30 ? len : 30);
    fuzz_utf8(in, len < 512 ? len : 512, next_rand(&seed));
    fuzz_close(in, len < 125 ? len : 125);

    /* The message being reassembled: validated four ways, which must agree. */
    uint8_t *msg = malloc(len ? len : 1);
    size_t msg_len = 0;
    int in_msg = 0, is_text = 0;
    krait__utf8 v_frames = {0}, v_pieces = {0}, v_bytes = {0};
    int r_frames = 0, r_pieces = 0, r_bytes = 0;

    size_t pos = 0;
    while (pos < len) {
        krait__ws_frame f;
        int cc;
        int rc = parse_checked(in + pos, len - pos, rm, allowed, max, &f, &cc);
        if (rc < 0)
            break;
        pos += (size_t)rc;
        CHECK(pos <= len);
        size_t avail = len - pos;
        int complete = f.payload_len <= avail;
        size_t n = complete ? (size_t)f.payload_len : avail;

        /* Unmask whole, and in data-derived pieces; both equal RFC 6455 §5.3 byte by byte. */
        uint8_t *whole = dup_exact(in + pos, n), *pieces = dup_exact(in + pos, n);
        krait__ws_unmask(whole, n, f.mask, 0);
        for (size_t i = 0; i < n; i++)
            CHECK(whole[i] == (in[pos + i] ^ f.mask[i & 3]));
        for (size_t at = 0; at < n;) {
            size_t piece = next_rand(&seed) % 23;
            if (piece > n - at)
                piece = n - at;
            uint8_t *p = dup_exact(pieces + at, piece);
            krait__ws_unmask(p, piece, f.mask, at);
            memcpy(pieces + at, p, piece);
            free(p);
            at += piece;
        }
        CHECK(n == 0 || memcmp(whole, pieces, n) == 0);
        free(pieces);
        pos += n;

        if (f.opcode == KRAIT__WS_CLOSE && complete) {
            fuzz_close(whole, n);
        } else if (f.opcode == KRAIT__WS_TEXT || f.opcode == KRAIT__WS_BINARY ||
                   (f.opcode == KRAIT__WS_CONT && in_msg)) {
            if (f.opcode != KRAIT__WS_CONT) {
                /* A new message (a real connection would refuse one inside another). */
                in_msg = 1;
                is_text = f.opcode == KRAIT__WS_TEXT;
                msg_len = 0;
                memset(&v_frames, 0, sizeof v_frames);
                memset(&v_pieces, 0, sizeof v_pieces);
                memset(&v_bytes, 0, sizeof v_bytes);
                r_frames = r_pieces = r_bytes = 0;
            }
            memcpy(msg + msg_len, whole, n);
            msg_len += n;
            if (is_text) {
                uint8_t *d = dup_exact(whole, n);
                r_frames |= krait__utf8_feed(&v_frames, d, n);
                free(d);
                for (size_t at = 0; at < n;) {
                    size_t piece = 1 + next_rand(&seed) % 9;
                    if (piece > n - at)
                        piece = n - at;
                    uint8_t *p = dup_exact(whole + at, piece);
                    r_pieces |= krait__utf8_feed(&v_pieces, p, piece);
                    free(p);
                    at += piece;
                }
                for (size_t i = 0; i < n; i++) {
                    uint8_t *p = dup_exact(whole + i, 1);
                    r_bytes |= krait__utf8_feed(&v_bytes, p, 1);
                    free(p);
                }
                int c_all = utf8_whole(msg, msg_len);
                int c_frames = utf8_class(&v_frames, r_frames);
                CHECK(c_frames == c_all);
                CHECK(utf8_class(&v_pieces, r_pieces) == c_all);
                CHECK(utf8_class(&v_bytes, r_bytes) == c_all);
            }
            if (f.fin)
                in_msg = 0;
        }
        free(whole);
        if (!complete)
            break;
    }
    free(msg);
    return 0;
}
