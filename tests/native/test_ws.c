/* Unit tests for native/src/ws.c: accept key, frame headers (RFC 6455 §5.7 examples and every
 * failure code), unmasking, header writing, UTF-8 validation and close payloads. Every parsed
 * input sits against a PROT_NONE guard page; parsers are fed whole, one byte at a time and
 * split at every offset. */
#include "harness.h"

#include <stdint.h>

#include "ws.h"

#ifndef KRAIT__NEED_MORE
#define KRAIT__NEED_MORE (-2)
#endif

#define NOMAX UINT64_MAX

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint32_t rnd(void)
{
    /* xorshift64*: deterministic, so failures reproduce. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Du) >> 32);
}

/* ---- accept key ---------------------------------------------------------------------------- */

static int accept_g(const char *key, size_t len, char out[KRAIT__WS_ACCEPT_LEN + 1])
{
    guarded g = guarded_copy(key, len);
    int rc = krait__ws_accept(g.data, len, out);
    guarded_free(g);
    return rc;
}

static void test_accept(void)
{
    char out[KRAIT__WS_ACCEPT_LEN + 1];
    memset(out, 'x', sizeof out);
    /* RFC 6455 §1.3. */
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    ok(accept_g(key, strlen(key), out) == 0, "accept: RFC 6455 §1.3 key accepted");
    ok(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0, "accept: RFC 6455 §1.3 value, got %s",
       out);
    ok(out[KRAIT__WS_ACCEPT_LEN] == '\0', "accept: NUL-terminated");

    /* A second, widely published pair (MDN's "Writing WebSocket servers"). */
    ok(accept_g("x3JJHMbDL1EzLkh9GBhXDw==", 24, out) == 0 &&
           strcmp(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=") == 0,
       "accept: second known vector, got %s", out);

    /* Non-canonical trailing bits still decode to 16 bytes (RFC 4648 §3.5 lets decoders accept
     * them); the accept value is computed over the key as sent. */
    ok(accept_g("dGhlIHNhbXBsZSBub25jZR==", 24, out) == 0, "accept: non-canonical last char");

    static const char *bad[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ",     /* unpadded */
        "dGhlIHNhbXBsZSBub25jZQ=",    /* one '=' short */
        "dGhlIHNhbXBsZSBub25jZQ===",  /* one '=' too many */
        " dGhlIHNhbXBsZSBub25jZQ==",  /* whitespace: EVP_DecodeBlock would skip it */
        "dGhlIHNhbXBsZSBub25jZQ== ",
        "dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "AAAAAAAAAAAAAAAAAAAAAAA=",   /* 17 bytes: EVP_DecodeBlock says 18 here too */
        "AAAAAAAAAAAAAAAAAAAAAA=A",   /* padding in the wrong place */
        "AAAA=AAAAAAAAAAAAAAAAA==",   /* '=' in the middle, which EVP_DecodeBlock accepts */
        "dGhlIHNhbXBsZSBub25j*Q==",   /* not in the alphabet */
        "dGhlIHNhbXBsZSBub25j-Q==",   /* base64url is not base64 */
        "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* 24 bytes */
        "AAAAAAAAAAAAAAAAAAAA",              /* 15 bytes */
        "====================",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ok(accept_g(bad[i], strlen(bad[i]), out) == -1, "accept: bad key '%s' refused", bad[i]);

    /* An embedded NUL: the length, not the terminator, counts. */
    char nul[24];
    memcpy(nul, key, 24);
    nul[5] = '\0';
    ok(accept_g(nul, 24, out) == -1, "accept: NUL inside the key refused");
    /* A correct key followed by more bytes, passed with the longer length. */
    char longer[25];
    memcpy(longer, key, 24);
    longer[24] = 'A';
    ok(accept_g(longer, 25, out) == -1, "accept: trailing byte refused");
    /* Every position holding a character outside the alphabet (or padding where data
     * belongs, or data where padding belongs) is refused. */
    static const char swaps[] = {'=', ' ', '*', '\0', '\x80', '-', '_', '\n', '.', 'A'};
    for (size_t pos = 0; pos < 24; pos++) {
        for (size_t j = 0; j < sizeof swaps; j++) {
            char k2[24];
            memcpy(k2, key, 24);
            k2[pos] = swaps[j];
            int want = pos < 22 ? (swaps[j] == 'A' ? 0 : -1) : (swaps[j] == '=' ? 0 : -1);
            ok(accept_g(k2, 24, out) == want, "accept: byte %zu = 0x%02x gives %d", pos,
               (unsigned char)swaps[j], want);
        }
    }
    /* Every prefix of a good key is refused. */
    for (size_t n = 0; n < 24; n++)
        ok(accept_g(key, n, out) == -1, "accept: %zu-byte prefix refused", n);
}

/* ---- frame headers ------------------------------------------------------------------------- */

static int parse_g(const uint8_t *b, size_t n, int rm, int rsv, uint64_t max, krait__ws_frame *f,
                   int *cc)
{
    guarded g = guarded_copy(b, n);
    int rc = krait__ws_parse_header((const uint8_t *)g.data, n, rm, rsv, max, f, cc);
    guarded_free(g);
    return rc;
}

static int same_frame(const krait__ws_frame *a, const krait__ws_frame *b)
{
    return a->fin == b->fin && a->rsv == b->rsv && a->opcode == b->opcode &&
           a->masked == b->masked && memcmp(a->mask, b->mask, 4) == 0 &&
           a->payload_len == b->payload_len && a->header_len == b->header_len;
}

/* Parse b[0..n) whole and check the result; then feed every prefix (what a caller does when
 * bytes arrive one at a time, the parser being stateless: a split at offset k is the prefix
 * b[0..k) followed later by the whole). Each prefix must give NEED_MORE or the final answer,
 * and once it gives the final answer every longer prefix must too. A valid header must give
 * NEED_MORE for every prefix shorter than header_len. */
static int check_header(const char *name, const uint8_t *b, size_t n, int rm, int rsv,
                        uint64_t max, int want_rc, int want_cc, krait__ws_frame *out)
{
    krait__ws_frame f, fk;
    int cc = 0, cck = 0;
    memset(&f, 0x5A, sizeof f);
    int rc = parse_g(b, n, rm, rsv, max, &f, &cc);
    ok(rc == want_rc, "%s: whole rc %d, want %d", name, rc, want_rc);
    if (rc == -1)
        ok(cc == want_cc, "%s: close code %d, want %d", name, cc, want_cc);
    if (rc > 0) {
        ok(rc >= 2 && rc <= 14 && (size_t)rc == f.header_len, "%s: header_len %zu, rc %d",
           name, f.header_len, rc);
        ok((size_t)rc <= n, "%s: consumed within input", name);
    }
    size_t limit = n < 40 ? n : 40;
    int settled = 0;
    for (size_t k = 0; k <= limit; k++) {
        memset(&fk, 0x5A, sizeof fk);
        cck = 0;
        int rk = parse_g(b, k, rm, rsv, max, &fk, &cck);
        if (rk == KRAIT__NEED_MORE) {
            ok(!settled, "%s: prefix %zu went back to NEED_MORE", name, k);
            continue;
        }
        if (!settled && rc > 0)
            ok(k == (size_t)rc, "%s: first answer at %zu bytes, want %d", name, k, rc);
        settled = 1;
        ok(rk == rc, "%s: prefix %zu rc %d, whole %d", name, k, rk, rc);
        if (rk == -1)
            ok(cck == cc, "%s: prefix %zu code %d, whole %d", name, k, cck, cc);
        if (rk > 0)
            ok(same_frame(&fk, &f), "%s: prefix %zu frame differs", name, k);
    }
    if (rc == KRAIT__NEED_MORE)
        ok(!settled, "%s: a prefix answered but the whole needs more", name);
    if (out)
        *out = f;
    return rc;
}

static void test_rfc_examples(void)
{
    krait__ws_frame f;
    uint8_t buf[16];

    /* RFC 6455 §5.7: a single-frame unmasked text message "Hello". */
    static const uint8_t hello[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
    check_header("5.7 unmasked Hello", hello, sizeof hello, 0, 0, NOMAX, 2, 0, &f);
    ok(f.fin == 1 && f.rsv == 0 && f.opcode == KRAIT__WS_TEXT && !f.masked &&
           f.payload_len == 5 && f.header_len == 2,
       "5.7 unmasked Hello: fields");
    ok(memcmp(hello + 2, "Hello", 5) == 0, "5.7 unmasked Hello: payload");
    /* The same frame from a client breaks RFC 6455 §5.1. */
    check_header("5.7 unmasked Hello, mask required", hello, sizeof hello, 1, 0, NOMAX, -1,
                 1002, NULL);

    /* RFC 6455 §5.7: a single-frame masked text message "Hello". */
    static const uint8_t mhello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                     0x7f, 0x9f, 0x4d, 0x51, 0x58};
    check_header("5.7 masked Hello", mhello, sizeof mhello, 1, 0, NOMAX, 6, 0, &f);
    ok(f.fin == 1 && f.opcode == KRAIT__WS_TEXT && f.masked && f.payload_len == 5 &&
           f.header_len == 6 && memcmp(f.mask, "\x37\xfa\x21\x3d", 4) == 0,
       "5.7 masked Hello: fields");
    guarded g = guarded_copy(mhello + 6, 5);
    krait__ws_unmask((uint8_t *)g.data, 5, f.mask, 0);
    ok(memcmp(g.data, "Hello", 5) == 0, "5.7 masked Hello: unmasked payload");
    guarded_free(g);
    /* A masked frame is fine when masks are not required (RFC 6455 §5.1 binds clients). */
    check_header("5.7 masked Hello, mask optional", mhello, sizeof mhello, 0, 0, NOMAX, 6, 0,
                 NULL);

    /* RFC 6455 §5.7: a fragmented unmasked text message "Hel" + "lo". */
    static const uint8_t hel[] = {0x01, 0x03, 'H', 'e', 'l'};
    static const uint8_t lo[] = {0x80, 0x02, 'l', 'o'};
    check_header("5.7 fragment 1", hel, sizeof hel, 0, 0, NOMAX, 2, 0, &f);
    ok(f.fin == 0 && f.opcode == KRAIT__WS_TEXT && f.payload_len == 3, "5.7 fragment 1: fields");
    check_header("5.7 fragment 2", lo, sizeof lo, 0, 0, NOMAX, 2, 0, &f);
    ok(f.fin == 1 && f.opcode == KRAIT__WS_CONT && f.payload_len == 2, "5.7 fragment 2: fields");
    /* Both fragments back to back in one buffer: the first parse sees only its own header. */
    uint8_t both[sizeof hel + sizeof lo];
    memcpy(both, hel, sizeof hel);
    memcpy(both + sizeof hel, lo, sizeof lo);
    check_header("5.7 fragments together", both, sizeof both, 0, 0, NOMAX, 2, 0, &f);
    size_t next = f.header_len + (size_t)f.payload_len;
    check_header("5.7 second fragment after the first", both + next, sizeof both - next, 0, 0,
                 NOMAX, 2, 0, &f);
    ok(f.opcode == KRAIT__WS_CONT && f.fin == 1, "5.7 second fragment: fields");

    /* RFC 6455 §5.7: unmasked Ping "Hello" and masked Pong "Hello". */
    static const uint8_t ping[] = {0x89, 0x05, 'H', 'e', 'l', 'l', 'o'};
    check_header("5.7 ping", ping, sizeof ping, 0, 0, NOMAX, 2, 0, &f);
    ok(f.fin && f.opcode == KRAIT__WS_PING && f.payload_len == 5, "5.7 ping: fields");
    static const uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                   0x7f, 0x9f, 0x4d, 0x51, 0x58};
    check_header("5.7 masked pong", pong, sizeof pong, 1, 0, NOMAX, 6, 0, &f);
    ok(f.fin && f.opcode == KRAIT__WS_PONG && f.masked && f.payload_len == 5,
       "5.7 masked pong: fields");

    /* RFC 6455 §5.7: 256 bytes of binary data in a single unmasked message. */
    static uint8_t b256[4 + 256];
    b256[0] = 0x82, b256[1] = 0x7E, b256[2] = 0x01, b256[3] = 0x00;
    for (size_t i = 0; i < 256; i++)
        b256[4 + i] = (uint8_t)i;
    check_header("5.7 256-byte binary", b256, sizeof b256, 0, 0, NOMAX, 4, 0, &f);
    ok(f.opcode == KRAIT__WS_BINARY && f.payload_len == 256 && f.header_len == 4,
       "5.7 256-byte binary: fields");
    /* Just the header, with no payload yet, is already a complete header. */
    check_header("5.7 256-byte binary, header only", b256, 4, 0, 0, NOMAX, 4, 0, NULL);

    /* RFC 6455 §5.7: 64 KiB of binary data in a single unmasked message. */
    static uint8_t b64k[10 + 65536];
    static const uint8_t h64k[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00};
    memcpy(b64k, h64k, sizeof h64k);
    for (size_t i = 0; i < 65536; i++)
        b64k[10 + i] = (uint8_t)(i * 7);
    check_header("5.7 64KiB binary", b64k, sizeof b64k, 0, 0, NOMAX, 10, 0, &f);
    ok(f.opcode == KRAIT__WS_BINARY && f.payload_len == 65536 && f.header_len == 10,
       "5.7 64KiB binary: fields");
    /* The same frame masked, as a client sends it: 14-byte header. */
    static const uint8_t h64km[] = {0x82, 0xFF, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 1, 2, 3, 4};
    check_header("64KiB masked", h64km, sizeof h64km, 1, 0, NOMAX, 14, 0, &f);
    ok(f.header_len == 14 && f.payload_len == 65536 && memcmp(f.mask, "\1\2\3\4", 4) == 0,
       "64KiB masked: fields");

    /* Boundary lengths accepted with their minimal encodings. */
    static const uint8_t l125[] = {0x82, 0x7D};
    check_header("len 125 in 7 bits", l125, sizeof l125, 0, 0, NOMAX, 2, 0, &f);
    ok(f.payload_len == 125, "len 125: value");
    static const uint8_t l126[] = {0x82, 0x7E, 0x00, 0x7E};
    check_header("len 126 in 16 bits", l126, sizeof l126, 0, 0, NOMAX, 4, 0, &f);
    ok(f.payload_len == 126, "len 126: value");
    static const uint8_t l65535[] = {0x82, 0x7E, 0xFF, 0xFF};
    check_header("len 65535 in 16 bits", l65535, sizeof l65535, 0, 0, NOMAX, 4, 0, &f);
    ok(f.payload_len == 65535, "len 65535: value");
    static const uint8_t lmax[] = {0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    check_header("len 2^63-1", lmax, sizeof lmax, 0, 0, NOMAX, 10, 0, &f);
    ok(f.payload_len == INT64_MAX, "len 2^63-1: value");
    static const uint8_t empty[] = {0x88, 0x80, 9, 9, 9, 9};
    check_header("empty masked close", empty, sizeof empty, 1, 0, NOMAX, 6, 0, &f);
    ok(f.opcode == KRAIT__WS_CLOSE && f.payload_len == 0 && f.header_len == 6,
       "empty masked close: fields");
    static const uint8_t c125[] = {0x89, 0xFD, 1, 2, 3, 4};
    check_header("ping of 125 bytes", c125, sizeof c125, 1, 0, NOMAX, 6, 0, NULL);

    /* Nothing at all. */
    ok(parse_g(buf, 0, 1, 0, NOMAX, &f, &(int){0}) == KRAIT__NEED_MORE, "empty input: NEED_MORE");
}

static void test_header_errors(void)
{
    krait__ws_frame f;
    char name[64];
    uint8_t b[16];

    /* RFC 6455 §5.2: reserved opcodes 3-7 and B-F, refused from the first byte, with and
     * without FIN, whatever follows. */
    for (int op = 0; op < 16; op++) {
        int reserved = (op >= 3 && op <= 7) || op >= 0xB;
        for (int fin = 0; fin < 2; fin++) {
            b[0] = (uint8_t)(fin << 7 | op);
            b[1] = 0x85;
            memcpy(b + 2, "\1\2\3\4", 4);
            snprintf(name, sizeof name, "opcode %X fin %d", op, fin);
            int control = op >= 8;
            int want = reserved || (control && !fin) ? -1 : 6;
            check_header(name, b, 6, 1, 0, NOMAX, want, 1002, NULL);
            if (reserved || (control && !fin))
                ok(parse_g(b, 1, 1, 0, NOMAX, &f, &(int){0}) == -1,
                   "%s: refused from one byte", name);
        }
    }

    /* RFC 6455 §5.5: control frames over 125 bytes, in the 7-bit field and in the extended
     * forms (which are always > 125 once minimal). */
    for (int op = 8; op <= 0xA; op++) {
        static const uint8_t tails[][9] = {
            {0xFE, 0x00, 0x7E},       /* 126 */
            {0xFE, 0x00, 0x7D},       /* 125 non-minimal: still refused */
            {0xFF, 0, 0, 0, 0, 0, 0, 0, 126},
        };
        for (size_t t = 0; t < 3; t++) {
            b[0] = (uint8_t)(0x80 | op);
            memcpy(b + 1, tails[t], 9);
            memcpy(b + 10, "\1\2\3\4", 4);
            snprintf(name, sizeof name, "control %X too long form %zu", op, t);
            check_header(name, b, 14, 1, 0, NOMAX, -1, 1002, NULL);
            ok(parse_g(b, 2, 1, 0, NOMAX, &f, &(int){0}) == -1, "%s: refused from two bytes",
               name);
        }
    }
    /* A close frame of 126 bytes is refused even when the payload limit is lower (1002 first:
     * the frame is malformed, not merely big). */
    static const uint8_t cl126[] = {0x88, 0xFE, 0x00, 0x7E, 1, 2, 3, 4};
    check_header("close 126 with small max", cl126, sizeof cl126, 1, 0, 10, -1, 1002, NULL);

    /* RFC 6455 §5.2: non-minimal lengths. */
    static const uint8_t nm16a[] = {0x82, 0xFE, 0x00, 0x00, 1, 2, 3, 4};
    check_header("16-bit length 0", nm16a, sizeof nm16a, 1, 0, NOMAX, -1, 1002, NULL);
    static const uint8_t nm16b[] = {0x82, 0xFE, 0x00, 0x7D, 1, 2, 3, 4};
    check_header("16-bit length 125", nm16b, sizeof nm16b, 1, 0, NOMAX, -1, 1002, NULL);
    static const uint8_t nm64a[] = {0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 1, 2, 3, 4};
    check_header("64-bit length 0", nm64a, sizeof nm64a, 1, 0, NOMAX, -1, 1002, NULL);
    static const uint8_t nm64b[] = {0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0x00, 0x7D, 1, 2, 3, 4};
    check_header("64-bit length 125", nm64b, sizeof nm64b, 1, 0, NOMAX, -1, 1002, NULL);
    static const uint8_t nm64c[] = {0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1, 2, 3, 4};
    check_header("64-bit length 65535", nm64c, sizeof nm64c, 1, 0, NOMAX, -1, 1002, NULL);
    static const uint8_t ok64[] = {0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0x00, 0x00, 1, 2, 3, 4};
    check_header("64-bit length 65536", ok64, sizeof ok64, 1, 0, NOMAX, 14, 0, NULL);
    /* The 64-bit error is known once the length is, before the mask arrives. */
    ok(parse_g(nm64c, 10, 1, 0, NOMAX, &f, &(int){0}) == -1, "64-bit 65535: refused at 10 bytes");

    /* RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0, even with no
     * limit on the payload. */
    static const uint8_t top[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    check_header("64-bit top bit", top, sizeof top, 1, 0, NOMAX, -1, 1002, NULL);
    static const uint8_t top2[] = {0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                   1, 2, 3, 4};
    check_header("64-bit all ones", top2, sizeof top2, 1, 0, NOMAX, -1, 1002, NULL);
    check_header("64-bit top bit, small max", top, sizeof top, 1, 0, 100, -1, 1002, NULL);

    /* RFC 6455 §5.1: unmasked frames when a mask is required, known from the second byte. */
    static const uint8_t um[] = {0x82, 0x7E, 0x01, 0x00};
    check_header("unmasked binary", um, sizeof um, 1, 0, NOMAX, -1, 1002, NULL);
    static const uint8_t umc[] = {0x88, 0x00};
    check_header("unmasked close", umc, sizeof umc, 1, 0, NOMAX, -1, 1002, NULL);
    check_header("unmasked close, mask optional", umc, sizeof umc, 0, 0, NOMAX, 2, 0, NULL);

    /* RFC 6455 §5.2: RSV bits without an extension that defines them. */
    for (int rsv = 1; rsv < 8; rsv++) {
        for (int allowed = 0; allowed < 8; allowed++) {
            b[0] = (uint8_t)(0x80 | rsv << 4 | KRAIT__WS_BINARY);
            b[1] = 0x80;
            memcpy(b + 2, "\1\2\3\4", 4);
            snprintf(name, sizeof name, "rsv %d allowed %d", rsv, allowed);
            int bad = (rsv & ~allowed) != 0;
            check_header(name, b, 6, 1, allowed, NOMAX, bad ? -1 : 6, 1002, &f);
            if (!bad)
                ok(f.rsv == rsv, "%s: rsv reported", name);
        }
    }
    /* RSV1 reported as 0x4 when permessage-deflate allows it. */
    static const uint8_t r1[] = {0xC1, 0x80, 1, 2, 3, 4};
    check_header("rsv1 with deflate", r1, sizeof r1, 1, 0x4, NOMAX, 6, 0, &f);
    ok(f.rsv == 0x4 && f.opcode == KRAIT__WS_TEXT, "rsv1 with deflate: fields");

    /* 1009: payload over the maximum, decided as soon as the length is known. */
    static const uint8_t big[] = {0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4};
    check_header("256 over max 255", big, sizeof big, 1, 0, 255, -1, 1009, NULL);
    check_header("256 at max 256", big, sizeof big, 1, 0, 256, 8, 0, NULL);
    ok(parse_g(big, 4, 1, 0, 255, &f, &(int){0}) == -1, "256 over max: refused before the mask");
    static const uint8_t s6[] = {0x81, 0x86, 1, 2, 3, 4};
    check_header("6 over max 5", s6, sizeof s6, 1, 0, 5, -1, 1009, NULL);
    check_header("6 over max 0", s6, sizeof s6, 1, 0, 0, -1, 1009, NULL);
    static const uint8_t e0[] = {0x81, 0x80, 1, 2, 3, 4};
    check_header("0 at max 0", e0, sizeof e0, 1, 0, 0, 6, 0, NULL);
    check_header("64KiB over max 65535", ok64, sizeof ok64, 1, 0, 65535, -1, 1009, NULL);
    check_header("2^63-1 over max 2^62", (const uint8_t[]){0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF,
                                                           0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4},
                 14, 1, 0, UINT64_C(1) << 62, -1, 1009, NULL);
    /* A control frame over a small max: 1009 too (it is a well-formed frame). */
    static const uint8_t p100[] = {0x89, 0xE4, 1, 2, 3, 4};
    check_header("ping 100 over max 50", p100, sizeof p100, 1, 0, 50, -1, 1009, NULL);
    /* Protocol errors win over size: a reserved opcode with a huge length. */
    static const uint8_t rbig[] = {0x83, 0xFF, 0x7F, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    check_header("reserved opcode + huge", rbig, sizeof rbig, 1, 0, 10, -1, 1002, NULL);
    /* Non-minimal and too big: the encoding error comes first. */
    check_header("non-minimal + over max", nm16b, sizeof nm16b, 1, 0, 10, -1, 1002, NULL);
}

/* Byte-at-a-time versus whole over every possible first two bytes, with random (and often
 * minimal) extended lengths and masks, random require_mask / allowed_rsv / max: the parser must
 * be a pure function of the bytes, whatever the split, and must never accept a bad frame. The
 * guarded buffers are made once and refilled, to keep this to a second. */
static void test_header_exhaustive(void)
{
    uint8_t b[14] = {0};
    guarded gs[15];
    for (size_t k = 0; k <= 14; k++)
        gs[k] = guarded_copy(b, k);
    static const uint64_t max_list[] = {NOMAX, 125, 65536};
    long bad = 0, accepted = 0;
    for (unsigned b0 = 0; b0 < 256; b0++) {
        for (unsigned b1 = 0; b1 < 256; b1++) {
            b[0] = (uint8_t)b0, b[1] = (uint8_t)b1;
            for (int i = 2; i < 14; i++)
                b[i] = (uint8_t)rnd();
            /* Make the extended length minimal half of the time so success paths run. */
            if (rnd() & 1) {
                memset(b + 2, 0, 6);
                if ((b1 & 0x7F) == 126)
                    b[2] = (uint8_t)(1 + rnd() % 255);
                else
                    b[7] = (uint8_t)(1 + rnd() % 255);
            }
            int rm = (int)(rnd() & 1);
            int allowed = (int)(rnd() & 7);
            uint64_t max = max_list[rnd() % 3];
            krait__ws_frame f;
            int cc = 0;
            memcpy(gs[14].data, b, 14);
            int rc = krait__ws_parse_header((const uint8_t *)gs[14].data, 14, rm, allowed, max,
                                            &f, &cc);
            int wrong;
            if (rc > 0) {
                accepted++;
                wrong = f.header_len < 2 || f.header_len > 14 || (size_t)rc != f.header_len ||
                        f.payload_len > max || (f.opcode >= 8 && (!f.fin || f.payload_len > 125)) ||
                        (f.opcode > 2 && f.opcode < 8) || f.opcode > 0xA || (f.rsv & ~allowed) ||
                        (rm && !f.masked) || (f.payload_len >> 63) ||
                        (f.header_len == 4 && f.payload_len < 126) ||
                        (f.header_len - (f.masked ? 4 : 0) == 10 && f.payload_len < 65536);
            } else {
                wrong = rc != -1 || (cc != 1002 && cc != 1009);
            }
            /* Every prefix: NEED_MORE or the same answer, and never NEED_MORE again after. */
            int seen = 0;
            for (size_t k = 0; k < 14 && !wrong; k++) {
                krait__ws_frame fk;
                int cck = 0;
                memcpy(gs[k].data, b, k);
                int rk = krait__ws_parse_header((const uint8_t *)gs[k].data, k, rm, allowed, max,
                                                &fk, &cck);
                if (rk == KRAIT__NEED_MORE) {
                    wrong |= seen;
                    continue;
                }
                seen = 1;
                wrong |= rk != rc || (rk == -1 && cck != cc) || (rk > 0 && !same_frame(&fk, &f));
            }
            if (wrong && bad++ == 0)
                ok(0, "exhaustive: first bad case %02x %02x rm %d rsv %d rc %d cc %d", b0, b1,
                   rm, allowed, rc, cc);
        }
    }
    ok(bad == 0, "header exhaustive: %ld bad cases", bad);
    ok(accepted > 1000, "header exhaustive: %ld accepted (the success path ran)", accepted);
    for (size_t k = 0; k <= 14; k++)
        guarded_free(gs[k]);
}

/* ---- unmask -------------------------------------------------------------------------------- */

static void test_unmask(void)
{
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t plain[300], whole[300];
    for (size_t i = 0; i < sizeof plain; i++)
        plain[i] = (uint8_t)rnd();

    /* Reference: RFC 6455 §5.3, byte by byte. */
    for (size_t i = 0; i < sizeof plain; i++)
        whole[i] = plain[i] ^ mask[i % 4];
    guarded g = guarded_copy(plain, sizeof plain);
    krait__ws_unmask((uint8_t *)g.data, sizeof plain, mask, 0);
    ok(memcmp(g.data, whole, sizeof whole) == 0, "unmask: whole equals RFC 6455 §5.3");
    krait__ws_unmask((uint8_t *)g.data, sizeof plain, mask, 0);
    ok(memcmp(g.data, plain, sizeof plain) == 0, "unmask: twice is the identity");
    guarded_free(g);

    /* Two pieces, split at every offset, each piece against its own guard page. */
    for (size_t s = 0; s <= sizeof plain; s++) {
        guarded a = guarded_copy(plain, s);
        guarded b = guarded_copy(plain + s, sizeof plain - s);
        krait__ws_unmask((uint8_t *)a.data, s, mask, 0);
        krait__ws_unmask((uint8_t *)b.data, sizeof plain - s, mask, s);
        ok(memcmp(a.data, whole, s) == 0 && memcmp(b.data, whole + s, sizeof plain - s) == 0,
           "unmask: split at %zu equals whole", s);
        guarded_free(a);
        guarded_free(b);
    }
    /* Three pieces, every pair of split points in the first 48 bytes. */
    enum { N = 48 };
    for (size_t s = 0; s <= N; s++) {
        for (size_t t = s; t <= N; t++) {
            uint8_t buf[N];
            memcpy(buf, plain, N);
            guarded p[3] = {guarded_copy(buf, s), guarded_copy(buf + s, t - s),
                            guarded_copy(buf + t, N - t)};
            krait__ws_unmask((uint8_t *)p[0].data, s, mask, 0);
            krait__ws_unmask((uint8_t *)p[1].data, t - s, mask, s);
            krait__ws_unmask((uint8_t *)p[2].data, N - t, mask, t);
            int same = memcmp(p[0].data, whole, s) == 0 &&
                       memcmp(p[1].data, whole + s, t - s) == 0 &&
                       memcmp(p[2].data, whole + t, N - t) == 0;
            ok(same, "unmask: pieces %zu/%zu equal whole", s, t);
            for (int i = 0; i < 3; i++)
                guarded_free(p[i]);
        }
    }
    /* Offsets far into a payload (only offset mod 4 matters, even near 2^64). */
    uint64_t offs[] = {UINT64_C(1) << 32, UINT64_MAX - 2, UINT64_MAX};
    for (size_t o = 0; o < 3; o++) {
        guarded x = guarded_copy(plain, 37);
        krait__ws_unmask((uint8_t *)x.data, 37, mask, offs[o]);
        int same = 1;
        for (size_t i = 0; i < 37; i++)
            same &= (uint8_t)x.data[i] == (plain[i] ^ mask[(offs[o] + i) % 4]);
        ok(same, "unmask: offset %llu", (unsigned long long)offs[o]);
        guarded_free(x);
    }
    /* Zero length touches nothing (a guarded empty buffer sits right at the guard). */
    guarded z = guarded_copy(plain, 0);
    krait__ws_unmask((uint8_t *)z.data, 0, mask, 3);
    ok(1, "unmask: empty");
    guarded_free(z);
}

/* ---- write_header -------------------------------------------------------------------------- */

static void test_write_header(void)
{
    struct {
        uint64_t len;
        size_t hl;
        uint8_t bytes[10];
    } cases[] = {
        {0, 2, {0x81, 0x00}},
        {125, 2, {0x81, 0x7D}},
        {126, 4, {0x81, 0x7E, 0x00, 0x7E}},
        {65535, 4, {0x81, 0x7E, 0xFF, 0xFF}},
        {65536, 10, {0x81, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}},
        {UINT64_C(1) << 32, 10, {0x81, 0x7F, 0, 0, 0, 0x01, 0, 0, 0, 0}},
        {INT64_MAX, 10, {0x81, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t zero[10] = {0};
        guarded g = guarded_copy(zero, 10);
        size_t hl = krait__ws_write_header((uint8_t *)g.data, 1, 0, KRAIT__WS_TEXT, cases[i].len);
        ok(hl == cases[i].hl && memcmp(g.data, cases[i].bytes, hl) == 0,
           "write_header %llu: %zu bytes", (unsigned long long)cases[i].len, hl);
        /* Round trip through the parser (unmasked, as a client would read it). */
        krait__ws_frame f;
        int cc = 0;
        int rc = krait__ws_parse_header((const uint8_t *)g.data, hl, 0, 0, NOMAX, &f, &cc);
        ok(rc == (int)hl && f.fin == 1 && f.opcode == KRAIT__WS_TEXT && !f.masked &&
               f.payload_len == cases[i].len && f.rsv == 0,
           "write_header %llu: parses back", (unsigned long long)cases[i].len);
        /* A server frame is refused where masks are required. */
        ok(krait__ws_parse_header((const uint8_t *)g.data, hl, 1, 0, NOMAX, &f, &cc) == -1 &&
               cc == 1002,
           "write_header %llu: unmasked", (unsigned long long)cases[i].len);
        guarded_free(g);
    }
    /* FIN, RSV1 and opcode bits. */
    uint8_t out[10];
    ok(krait__ws_write_header(out, 0, 0, KRAIT__WS_BINARY, 3) == 2 && out[0] == 0x02 &&
           out[1] == 3,
       "write_header: no FIN");
    ok(krait__ws_write_header(out, 1, 1, KRAIT__WS_TEXT, 3) == 2 && out[0] == 0xC1,
       "write_header: RSV1");
    ok(krait__ws_write_header(out, 0, 1, KRAIT__WS_CONT, 3) == 2 && out[0] == 0x40,
       "write_header: RSV1 on continuation bits as asked");
    ok(krait__ws_write_header(out, 1, 0, KRAIT__WS_CLOSE, 2) == 2 && out[0] == 0x88 &&
           out[1] == 2,
       "write_header: close");
    ok(krait__ws_write_header(out, 1, 0, KRAIT__WS_PONG, 0) == 2 && out[0] == 0x8A &&
           out[1] == 0,
       "write_header: pong");
    krait__ws_frame f;
    int cc = 0;
    size_t hl = krait__ws_write_header(out, 1, 1, KRAIT__WS_BINARY, 70000);
    ok(krait__ws_parse_header(out, hl, 0, 0x4, NOMAX, &f, &cc) == 10 && f.rsv == 0x4 &&
           f.payload_len == 70000,
       "write_header: RSV1 round trip");
    /* Every length from 0 to 70000 round-trips with the minimal encoding. */
    int bad = 0;
    for (uint64_t len = 0; len <= 70000; len++) {
        hl = krait__ws_write_header(out, 1, 0, KRAIT__WS_BINARY, len);
        int rc = krait__ws_parse_header(out, hl, 0, 0, NOMAX, &f, &cc);
        size_t want = len < 126 ? 2 : len < 65536 ? 4 : 10;
        bad += hl != want || rc != (int)hl || f.payload_len != len;
    }
    ok(bad == 0, "write_header: 0..70000 round trip (%d bad)", bad);
}

/* ---- UTF-8 --------------------------------------------------------------------------------- */

/* Independent reference: decode each sequence to a code point and apply RFC 3629 (no
 * overlongs, no surrogates, at most U+10FFFF). A truncated last sequence counts as a valid
 * prefix when some continuation could still make it a valid character. Returns 1 valid and
 * complete, 0 valid prefix, -1 invalid. */
static int ref_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t need;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            need = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return -1;
        }
        size_t got = 0;
        for (; got < need && i + 1 + got < n; got++) {
            uint8_t d = s[i + 1 + got];
            if ((d & 0xC0) != 0x80)
                return -1;
            cp = cp << 6 | (d & 0x3F);
        }
        size_t missing = need - got;
        uint32_t lo = cp << (6 * missing), hi = lo | ((UINT32_C(1) << (6 * missing)) - 1);
        if (hi < min || lo > 0x10FFFF)
            return -1;
        if (lo < min)
            lo = min;
        if (hi > 0x10FFFF)
            hi = 0x10FFFF;
        if (lo >= 0xD800 && hi <= 0xDFFF)
            return -1;
        if (missing)
            return 0;
        i += 1 + need;
    }
    return 1;
}

/* Index of the first byte at which the text becomes invalid, or -1. */
static long ref_bad_at(const uint8_t *s, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (ref_utf8(s, k + 1) == -1)
            return (long)k;
    return -1;
}

/* 1 valid and complete, 0 valid so far, -1 invalid: feeding the pieces s[0..cut[0]),
 * s[cut[0]..cut[1]), ..., s[cut[ncut-1]..n), each against a guard page. */
static int feed_pieces(const uint8_t *s, size_t n, const size_t *cut, size_t ncut)
{
    krait__utf8 v = {0};
    size_t from = 0;
    int rc = 0;
    for (size_t i = 0; i <= ncut; i++) {
        size_t to = i < ncut ? cut[i] : n;
        guarded g = guarded_copy(s + from, to - from);
        int r = krait__utf8_feed(&v, (const uint8_t *)g.data, to - from);
        guarded_free(g);
        if (r != 0)
            rc = -1;
        else if (rc == -1)
            return -2; /* valid again after a failure: the validator must stay failed */
        from = to;
    }
    if (rc == -1)
        return krait__utf8_complete(&v) ? -2 : -1;
    return krait__utf8_complete(&v) ? 1 : 0;
}

/* Check text s[0..n): whole, one byte at a time (failure at exactly bad_at), every two-way
 * split and, for short texts, every three-way split. */
static void check_utf8(const char *name, const uint8_t *s, size_t n, int want, long bad_at)
{
    ok(ref_utf8(s, n) == want, "utf8 %s: reference says %d, want %d", name, ref_utf8(s, n),
       want);
    ok(ref_bad_at(s, n) == bad_at, "utf8 %s: reference bad at %ld, want %ld", name,
       ref_bad_at(s, n), bad_at);
    ok(feed_pieces(s, n, NULL, 0) == want, "utf8 %s: whole gives %d, want %d", name,
       feed_pieces(s, n, NULL, 0), want);

    krait__utf8 v = {0};
    long failed = -1;
    for (size_t i = 0; i < n; i++) {
        guarded g = guarded_copy(s + i, 1);
        int r = krait__utf8_feed(&v, (const uint8_t *)g.data, 1);
        guarded_free(g);
        if (r != 0 && failed < 0)
            failed = (long)i;
        if (r == 0 && failed >= 0)
            ok(0, "utf8 %s: valid again at %zu after failing at %ld", name, i, failed);
    }
    ok(failed == bad_at, "utf8 %s: byte at a time fails at %ld, want %ld", name, failed, bad_at);
    /* Zero-length feeds change nothing. */
    guarded e = guarded_copy(s, 0);
    int before = krait__utf8_complete(&v);
    int r0 = krait__utf8_feed(&v, (const uint8_t *)e.data, 0);
    ok(r0 == (failed >= 0 ? -1 : 0) && krait__utf8_complete(&v) == before,
       "utf8 %s: empty feed", name);
    guarded_free(e);

    for (size_t c = 0; c <= n; c++) {
        int r = feed_pieces(s, n, &c, 1);
        ok(r == want, "utf8 %s: split at %zu gives %d, want %d", name, c, r, want);
    }
    if (n <= 24) {
        for (size_t c = 0; c <= n; c++) {
            for (size_t d = c; d <= n; d++) {
                size_t cuts[2] = {c, d};
                int r = feed_pieces(s, n, cuts, 2);
                ok(r == want, "utf8 %s: split at %zu,%zu gives %d", name, c, d, r);
            }
        }
    }
}

#define U8(name, lit, want, bad) \
    check_utf8(name, (const uint8_t *)(lit), sizeof(lit) - 1, want, bad)

static void test_utf8_vectors(void)
{
    /* Valid text, including every boundary of every length (RFC 3629 §4). */
    U8("empty", "", 1, -1);
    U8("ascii", "Hello, world! 0123456789 abcdefghijklmnopqrstuvwxyz", 1, -1);
    U8("kosme", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 1, -1);
    U8("U+0000", "\x00", 1, -1);
    U8("U+007F", "\x7f", 1, -1);
    U8("U+0080", "\xc2\x80", 1, -1);
    U8("U+07FF", "\xdf\xbf", 1, -1);
    U8("U+0800", "\xe0\xa0\x80", 1, -1);
    U8("U+D7FF", "\xed\x9f\xbf", 1, -1);
    U8("U+E000", "\xee\x80\x80", 1, -1);
    U8("U+FFFD", "\xef\xbf\xbd", 1, -1);
    U8("U+FFFE noncharacter", "\xef\xbf\xbe", 1, -1);
    U8("U+FFFF", "\xef\xbf\xbf", 1, -1);
    U8("U+10000", "\xf0\x90\x80\x80", 1, -1);
    U8("U+10FFFF", "\xf4\x8f\xbf\xbf", 1, -1);
    U8("mixed", "a\xc3\xa9z\xe2\x82\xac!\xf0\x9f\x98\x80.", 1, -1);
    U8("long ascii then euro", "0123456789abcdefghijklmnopqrstuv\xe2\x82\xac", 1, -1);

    /* Overlongs: refused at the first byte that proves it. */
    U8("overlong C0 80", "\xc0\x80", -1, 0);
    U8("overlong C1 BF", "\xc1\xbf", -1, 0);
    U8("overlong E0 80 80", "\xe0\x80\x80", -1, 1);
    U8("overlong E0 9F BF", "\xe0\x9f\xbf", -1, 1);
    U8("overlong F0 80 80 80", "\xf0\x80\x80\x80", -1, 1);
    U8("overlong F0 8F BF BF", "\xf0\x8f\xbf\xbf", -1, 1);
    U8("overlong slash in text", "ab\xe0\x80\xaf", -1, 3);
    /* Surrogates. */
    U8("surrogate ED A0 80", "\xed\xa0\x80", -1, 1);
    U8("surrogate ED BF BF", "\xed\xbf\xbf", -1, 1);
    U8("surrogate pair", "\xed\xa0\x80\xed\xb0\x80", -1, 1);
    /* Past U+10FFFF and bytes that never appear. */
    U8("F4 90 80 80", "\xf4\x90\x80\x80", -1, 1);
    U8("F5", "\xf5\x80\x80\x80", -1, 0);
    U8("F7 BF BF BF", "\xf7\xbf\xbf\xbf", -1, 0);
    U8("F8 five bytes", "\xf8\x88\x80\x80\x80", -1, 0);
    U8("FC six bytes", "\xfc\x84\x80\x80\x80\x80", -1, 0);
    U8("FE", "\xfe", -1, 0);
    U8("FF", "a\xff", -1, 1);
    /* Continuation bytes without a lead, and leads without continuations. */
    U8("lone 80", "\x80", -1, 0);
    U8("lone BF", "ab\xbf", -1, 2);
    U8("C2 then ASCII", "\xc2\x41", -1, 1);
    U8("E1 80 then ASCII", "\xe1\x80\x41", -1, 2);
    U8("F1 80 80 then ASCII", "\xf1\x80\x80\x41", -1, 3);
    U8("E1 then C2 80", "\xe1\xc2\x80", -1, 1);
    U8("too many continuations", "\xc2\x80\x80", -1, 2);
    U8("invalid after 32 ascii", "0123456789abcdefghijklmnopqrstuv\x80", -1, 32);
    U8("invalid in 8-byte block", "0123\x80" "567", -1, 4);
    U8("valid then invalid", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", -1,
       12);
    /* Truncated sequences: valid so far, not complete. */
    U8("truncated C2", "\xc2", 0, -1);
    U8("truncated E0 A0", "\xe0\xa0", 0, -1);
    U8("truncated E2 82", "ab\xe2\x82", 0, -1);
    U8("truncated F0 90 80", "\xf0\x90\x80", 0, -1);
    U8("truncated F4 8F", "\xf4\x8f", 0, -1);
    U8("truncated E0 alone", "\xe0", 0, -1);
    U8("truncated ED alone", "\xed", 0, -1);
    U8("truncated F4 alone", "\xf4", 0, -1);
}

/* Autobahn 6.x: a message's fragments are validated as one text, so a character may be split
 * across frames, and an invalid one must fail in the fragment where it becomes invalid. */
static void test_utf8_fragments(void)
{
    /* "κόσμε" with ό (E1 BD B9) split 1+2 across two frames. */
    static const uint8_t f1[] = {0xce, 0xba, 0xe1};
    static const uint8_t f2[] = {0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5};
    krait__utf8 v = {0};
    guarded a = guarded_copy(f1, sizeof f1), b = guarded_copy(f2, sizeof f2);
    ok(krait__utf8_feed(&v, (const uint8_t *)a.data, sizeof f1) == 0, "fragments: first valid");
    ok(!krait__utf8_complete(&v), "fragments: first ends mid-character");
    ok(krait__utf8_feed(&v, (const uint8_t *)b.data, sizeof f2) == 0, "fragments: second valid");
    ok(krait__utf8_complete(&v), "fragments: message complete");
    guarded_free(a);
    guarded_free(b);

    /* Autobahn 6.4.1-style: "κόσμε" | F4 90 80 80 | "edited": the second fragment fails (at
     * its byte 90), and the message never becomes valid again. */
    static const uint8_t g1[] = {0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5};
    static const uint8_t g2[] = {0xf4, 0x90, 0x80, 0x80};
    static const uint8_t g3[] = {'e', 'd', 'i', 't', 'e', 'd'};
    krait__utf8 w = {0};
    a = guarded_copy(g1, sizeof g1);
    b = guarded_copy(g2, 1);
    guarded c = guarded_copy(g2 + 1, 3), d = guarded_copy(g3, sizeof g3);
    ok(krait__utf8_feed(&w, (const uint8_t *)a.data, sizeof g1) == 0, "6.4.1: fragment 1 ok");
    ok(krait__utf8_feed(&w, (const uint8_t *)b.data, 1) == 0, "6.4.1: F4 alone ok so far");
    ok(krait__utf8_feed(&w, (const uint8_t *)c.data, 3) == -1, "6.4.1: 90 fails");
    ok(krait__utf8_feed(&w, (const uint8_t *)d.data, sizeof g3) == -1, "6.4.1: stays failed");
    ok(!krait__utf8_complete(&w), "6.4.1: not complete after failure");
    guarded_free(a);
    guarded_free(b);
    guarded_free(c);
    guarded_free(d);

    /* Every character boundary case split across every fragment boundary. */
    static const uint8_t text[] = "\xf0\x9f\x98\x80x\xe2\x82\xac\xc3\xa9\xf4\x8f\xbf\xbf";
    check_utf8("fragments of mixed text", text, sizeof text - 1, 1, -1);
}

/* Exhaustive over every 1-, 2- and 3-byte text, and 4-byte texts built from boundary bytes,
 * compared with the reference; byte-at-a-time failure position too for the 4-byte set. */
static void test_utf8_exhaustive(void)
{
    uint8_t zeros[4] = {0};
    guarded g1 = guarded_copy(zeros, 1), g2 = guarded_copy(zeros, 2), g3 = guarded_copy(zeros, 3);
    uint8_t *p1 = (uint8_t *)g1.data, *p2 = (uint8_t *)g2.data, *p3 = (uint8_t *)g3.data;
    long bad = 0;
    for (unsigned x = 0; x < (1u << 24); x++) {
        krait__utf8 v = {0};
        int got;
        if (x < 256) {
            p1[0] = (uint8_t)x;
            got = krait__utf8_feed(&v, p1, 1) ? -1 : krait__utf8_complete(&v);
            bad += got != ref_utf8(p1, 1);
        }
        if (x < 65536) {
            v.state = 0;
            p2[0] = (uint8_t)(x >> 8), p2[1] = (uint8_t)x;
            got = krait__utf8_feed(&v, p2, 2) ? -1 : krait__utf8_complete(&v);
            bad += got != ref_utf8(p2, 2);
        }
        v.state = 0;
        p3[0] = (uint8_t)(x >> 16), p3[1] = (uint8_t)(x >> 8), p3[2] = (uint8_t)x;
        got = krait__utf8_feed(&v, p3, 3) ? -1 : krait__utf8_complete(&v);
        bad += got != ref_utf8(p3, 3);
    }
    ok(bad == 0, "utf8 exhaustive 1-3 bytes: %ld mismatches", bad);
    guarded_free(g1);
    guarded_free(g2);
    guarded_free(g3);

    static const uint8_t edge[] = {0x00, 0x41, 0x7F, 0x80, 0x81, 0x8F, 0x90,
                                   0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xF4, 0xFF};
    enum { E = sizeof edge };
    guarded g4 = guarded_copy(zeros, 4);
    uint8_t *p4 = (uint8_t *)g4.data;
    bad = 0;
    for (unsigned lead = 0x80; lead < 0x100; lead++) {
        for (unsigned i = 0; i < E * E * E; i++) {
            p4[0] = (uint8_t)lead, p4[1] = edge[i % E], p4[2] = edge[i / E % E];
            p4[3] = edge[i / E / E];
            int want = ref_utf8(p4, 4);
            long want_at = ref_bad_at(p4, 4);
            krait__utf8 v = {0};
            int got = krait__utf8_feed(&v, p4, 4) ? -1 : krait__utf8_complete(&v);
            bad += got != want;
            v.state = 0;
            long at = -1;
            for (size_t k = 0; k < 4; k++)
                if (krait__utf8_feed(&v, p4 + k, 1) && at < 0)
                    at = (long)k;
            bad += at != want_at;
            for (size_t c = 1; c < 4; c++) {
                v.state = 0;
                int r = krait__utf8_feed(&v, p4, c);
                r |= krait__utf8_feed(&v, p4 + c, 4 - c);
                got = r ? -1 : krait__utf8_complete(&v);
                bad += got != want;
            }
        }
    }
    ok(bad == 0, "utf8 4-byte edge set: %ld mismatches", bad);
    guarded_free(g4);
}

/* Random texts mixing valid characters of every length with stray bytes. */
static void test_utf8_random(void)
{
    static const char *atoms[] = {"a", "\x7f", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80",
                                  "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbf",
                                  "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "0123456789"};
    long bad = 0;
    for (int iter = 0; iter < 3000; iter++) {
        uint8_t s[96];
        size_t n = 0;
        while (n < 80) {
            if (rnd() % 16 == 0) {
                s[n++] = (uint8_t)rnd();
            } else {
                const char *a = atoms[rnd() % (sizeof atoms / sizeof atoms[0])];
                size_t l = strlen(a);
                memcpy(s + n, a, l);
                n += l;
            }
        }
        n -= rnd() % 4; /* sometimes cut a character short */
        int want = ref_utf8(s, n);
        long want_at = ref_bad_at(s, n);
        guarded g = guarded_copy(s, n);
        const uint8_t *p = (const uint8_t *)g.data;
        krait__utf8 v = {0};
        int got = krait__utf8_feed(&v, p, n) ? -1 : krait__utf8_complete(&v);
        bad += got != want;
        v.state = 0;
        long at = -1;
        for (size_t k = 0; k < n; k++)
            if (krait__utf8_feed(&v, p + k, 1) && at < 0)
                at = (long)k;
        bad += at != want_at;
        for (size_t c = 0; c <= n; c++) {
            v.state = 0;
            int r = krait__utf8_feed(&v, p, c);
            r |= krait__utf8_feed(&v, p + c, n - c);
            got = r ? -1 : krait__utf8_complete(&v);
            bad += got != want;
        }
        guarded_free(g);
    }
    ok(bad == 0, "utf8 random texts: %ld mismatches", bad);
}

/* ---- close payloads ------------------------------------------------------------------------ */

static int close_g(const uint8_t *p, size_t n, int *cc)
{
    guarded g = guarded_copy(p, n);
    *cc = 0;
    int rc = krait__ws_check_close((const uint8_t *)g.data, n, cc);
    guarded_free(g);
    return rc;
}

static void test_close(void)
{
    int cc;
    ok(close_g((const uint8_t *)"", 0, &cc) == 0, "close: empty is valid");
    ok(close_g((const uint8_t *)"\x03", 1, &cc) == -1 && cc == 1002, "close: 1 byte invalid");
    ok(close_g((const uint8_t *)"\x03\xe8", 1, &cc) == -1 && cc == 1002,
       "close: 1 byte of a valid code invalid");

    static const unsigned bad[] = {0,    999,  1004, 1005, 1006, 1012, 1013, 1014, 1015,
                                   1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t p[2] = {(uint8_t)(bad[i] >> 8), (uint8_t)bad[i]};
        ok(close_g(p, 2, &cc) == -1 && cc == 1002, "close: code %u invalid", bad[i]);
    }
    static const unsigned good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                    1010, 1011, 3000, 3999, 4000, 4999};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint8_t p[2] = {(uint8_t)(good[i] >> 8), (uint8_t)good[i]};
        ok(close_g(p, 2, &cc) == 0, "close: code %u valid", good[i]);
    }
    /* Every code, against the rule restated. */
    int mism = 0;
    for (unsigned code = 0; code < 65536; code++) {
        uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        int valid = 0;
        switch (code) {
        case 1000: case 1001: case 1002: case 1003:
        case 1007: case 1008: case 1009: case 1010: case 1011:
            valid = 1;
            break;
        default:
            valid = code >= 3000 && code < 5000;
        }
        int rc = krait__ws_check_close(p, 2, &cc);
        mism += valid ? rc != 0 : (rc != -1 || cc != 1002);
    }
    ok(mism == 0, "close: every code (%d mismatches)", mism);

    /* Reasons. */
    ok(close_g((const uint8_t *)"\x03\xe8" "bye", 5, &cc) == 0, "close: 1000 + ASCII reason");
    ok(close_g((const uint8_t *)"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 13,
               &cc) == 0,
       "close: 1000 + UTF-8 reason");
    ok(close_g((const uint8_t *)"\x0f\xa0\xf4\x8f\xbf\xbf", 6, &cc) == 0,
       "close: 4000 + U+10FFFF reason");
    ok(close_g((const uint8_t *)"\x03\xe8\xc0\x80", 4, &cc) == -1 && cc == 1007,
       "close: overlong reason → 1007");
    ok(close_g((const uint8_t *)"\x03\xe8\xed\xa0\x80", 5, &cc) == -1 && cc == 1007,
       "close: surrogate reason → 1007");
    ok(close_g((const uint8_t *)"\x03\xe8" "ab\xe2\x82", 6, &cc) == -1 && cc == 1007,
       "close: truncated reason → 1007");
    ok(close_g((const uint8_t *)"\x03\xe8\xff", 3, &cc) == -1 && cc == 1007,
       "close: FF reason → 1007");
    ok(close_g((const uint8_t *)"\x03\xe7\xc0\x80", 4, &cc) == -1 && cc == 1002,
       "close: bad code and bad reason → 1002");
    /* A 123-byte reason (the most a close frame can hold). */
    uint8_t full[125];
    full[0] = 0x0B, full[1] = 0xB8; /* 3000 */
    for (size_t i = 2; i < sizeof full; i++)
        full[i] = (uint8_t)('a' + i % 26);
    ok(close_g(full, sizeof full, &cc) == 0, "close: 123-byte reason");
    full[124] = 0xC3;
    ok(close_g(full, sizeof full, &cc) == -1 && cc == 1007, "close: reason cut mid-character");
}

int main(void)
{
    test_accept();
    test_rfc_examples();
    test_header_errors();
    test_header_exhaustive();
    test_unmask();
    test_write_header();
    test_utf8_vectors();
    test_utf8_fragments();
    test_utf8_exhaustive();
    test_utf8_random();
    test_close();
    return done();
}
