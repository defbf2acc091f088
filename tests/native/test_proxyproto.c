/* PROXY protocol headers (native/src/proxyproto.c): v1 and v2 vectors parsed whole, as every
 * prefix (each one a valid beginning: "need more", never a wrong answer) and with the
 * connection's own bytes after them, each copy ending at a PROT_NONE page; malformed and
 * oversized headers refused; trusted networks. */
#include <arpa/inet.h>
#include <stdint.h>

#include "harness.h"
#include "proxyproto.h"

static int parse_guarded(const void *buf, size_t len, krait__proxy_info *info)
{
    guarded g = guarded_copy(buf, len);
    int r = krait__proxy_parse((const uint8_t *)g.data, len, info);
    guarded_free(g);
    return r;
}

/* A valid header of length n: every shorter prefix needs more, the header alone and the
 * header followed by other bytes give n and the same result. */
static krait__proxy_info valid(const char *what, const void *hdr, size_t n)
{
    krait__proxy_info info, again;
    memset(&info, 0, sizeof info);
    for (size_t k = 0; k < n; k++) {
        int r = parse_guarded(hdr, k, &again);
        ok(r == KRAIT__PROXY_MORE, "%s: prefix of %zu bytes: %d, not MORE", what, k, r);
    }
    int r = parse_guarded(hdr, n, &info);
    ok(r == (int)n, "%s: whole: %d, not %zu", what, r, n);
    uint8_t more[2048];
    memcpy(more, hdr, n);
    memcpy(more + n, "\x16\x03\x01GET / HTTP/1.1\r\n\r\n", 20);
    memset(&again, 0, sizeof again);
    r = parse_guarded(more, n + 20, &again);
    ok(r == (int)n, "%s: with bytes after it: %d", what, r);
    ok(memcmp(&info, &again, sizeof info) == 0, "%s: same result with bytes after it", what);
    return info;
}

static void bad(const char *what, const void *hdr, size_t n)
{
    krait__proxy_info info;
    int r = parse_guarded(hdr, n, &info);
    ok(r == KRAIT__PROXY_BAD, "%s: %d, not BAD", what, r);
}

static void ip_is(const char *what, int family, const uint8_t *addr, const char *want)
{
    char buf[64];
    inet_ntop(family == 4 ? AF_INET : AF_INET6, addr, buf, sizeof buf);
    ok(strcmp(buf, want) == 0, "%s: address %s, not %s", what, buf, want);
}

#define V2SIG "\r\n\r\n\0\r\nQUIT\n"

static void test_v1(void)
{
    const char *h = "PROXY TCP4 203.0.113.9 192.0.2.1 56324 443\r\n";
    krait__proxy_info i = valid("v1 tcp4", h, strlen(h));
    ok(i.version == 1 && !i.local && i.family == 4 && i.relayed, "v1 tcp4 fields");
    ip_is("v1 tcp4 src", 4, i.src, "203.0.113.9");
    ip_is("v1 tcp4 dst", 4, i.dst, "192.0.2.1");
    ok(i.src_port == 56324 && i.dst_port == 443, "v1 tcp4 ports");

    h = "PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n";
    i = valid("v1 tcp6", h, strlen(h));
    ok(i.family == 6 && !i.local, "v1 tcp6 family");
    ip_is("v1 tcp6 src", 6, i.src, "2001:db8::1");
    ok(i.src_port == 0 && i.dst_port == 65535, "v1 tcp6 ports");

    h = "PROXY UNKNOWN\r\n";
    i = valid("v1 unknown", h, strlen(h));
    ok(i.local && i.version == 1, "v1 unknown keeps the socket's address");
    ok(i.relayed, "v1 unknown still relays a client");
    h = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    ok(strlen(h) == 107, "the specification's worst case is 107 bytes (%zu)", strlen(h));
    i = valid("v1 unknown, longest", h, strlen(h));
    ok(i.local, "v1 unknown longest: local");

    /* The longest TCP6 line fits too. */
    h = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    valid("v1 tcp6 longest", h, strlen(h));

    const char *bads[] = {
        "PROXY TCP4 203.0.113.9 192.0.2.1 56324\r\n",          /* a field missing */
        "PROXY TCP4 203.0.113.9 192.0.2.1 56324 443 7\r\n",    /* one too many */
        "PROXY TCP4 203.0.113.9  192.0.2.1 56324 443\r\n",     /* two spaces */
        "PROXY TCP4 203.0.113.9 192.0.2.1 56324 443 \r\n",     /* a trailing space */
        "PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",            /* IPv6 under TCP4 */
        "PROXY TCP6 203.0.113.9 2001:db8::2 1 2\r\n",          /* IPv4 under TCP6 */
        "PROXY TCP4 203.0.113.256 192.0.2.1 1 2\r\n",
        "PROXY TCP4 203.0.113.9 192.0.2.1 65536 2\r\n",        /* port out of range */
        "PROXY TCP4 203.0.113.9 192.0.2.1 01 2\r\n",           /* leading zero */
        "PROXY TCP4 203.0.113.9 192.0.2.1 -1 2\r\n",
        "PROXY TCP4 203.0.113.9 192.0.2.1 1 2\n",              /* bare LF */
        "PROXY TCP4 203.0.113.9 192.0.2.1 1 2\rX",             /* CR without LF */
        "PROXY TCP5 203.0.113.9 192.0.2.1 1 2\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY \r\n",
        "PROXY tcp4 203.0.113.9 192.0.2.1 1 2\r\n",            /* case matters */
        "PROXY TCP4 203.0.113.9 192.0.2.1 1 2\t\r\n",          /* control byte */
        "PROXI TCP4 203.0.113.9 192.0.2.1 1 2\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        " PROXY TCP4 203.0.113.9 192.0.2.1 1 2\r\n",
    };
    for (size_t k = 0; k < sizeof bads / sizeof bads[0]; k++)
        bad(bads[k], bads[k], strlen(bads[k]));
    bad("v1 with a NUL", "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", 33);
    bad("v1 with a high byte", "PROXY UNKNOWN \xff\r\n", 17);

    /* 108 bytes: refused at the bound, before any CRLF (or with one just past it). */
    char longer[200];
    memset(longer, 'f', sizeof longer);
    memcpy(longer, "PROXY UNKNOWN ", 14);
    bad("v1 without CRLF in 107 bytes", longer, 107);
    bad("v1 without CRLF, 200 bytes", longer, 200);
    memcpy(longer + 106, "\r\n", 2);
    bad("v1 of 108 bytes", longer, 108);
    memcpy(longer + 105, "\r\n", 2);
    ok(parse_guarded(longer, 108, &i) == 107, "v1 of 107 bytes taken");
    /* 106 bytes without a CRLF yet: a valid beginning. */
    memset(longer, 'f', sizeof longer);
    memcpy(longer, "PROXY UNKNOWN ", 14);
    ok(parse_guarded(longer, 106, &i) == KRAIT__PROXY_MORE, "106 bytes: more");
    /* A mismatch is refused as soon as it arrives, not at the bound. */
    ok(parse_guarded("PRX", 3, &i) == KRAIT__PROXY_BAD, "PRX: bad at once");
    ok(parse_guarded("X", 1, &i) == KRAIT__PROXY_BAD, "X: bad at once");
}

/* A v2 header: command, family byte, the address block and TLVs. */
static size_t v2(uint8_t *out, int cmd, uint8_t fam, const void *rest, size_t rest_len)
{
    memcpy(out, V2SIG, 12);
    out[12] = (uint8_t)(0x20 | cmd);
    out[13] = fam;
    out[14] = (uint8_t)(rest_len >> 8);
    out[15] = (uint8_t)rest_len;
    memcpy(out + 16, rest, rest_len);
    return 16 + rest_len;
}

static void test_v2(void)
{
    uint8_t h[2048];
    krait__proxy_info i;
    /* TCP over IPv4: 203.0.113.9:56324 → 192.0.2.1:443. */
    const uint8_t a4[12] = {203, 0, 113, 9, 192, 0, 2, 1, 0xDC, 0x04, 0x01, 0xBB};
    size_t n = v2(h, 1, 0x11, a4, sizeof a4);
    i = valid("v2 tcp4", h, n);
    ok(i.version == 2 && !i.local && i.family == 4 && i.relayed, "v2 tcp4 fields");
    ip_is("v2 tcp4 src", 4, i.src, "203.0.113.9");
    ok(i.src_port == 56324 && i.dst_port == 443, "v2 tcp4 ports (%u %u)", i.src_port,
       i.dst_port);

    /* TCP over IPv6, with TLVs: ALPN "h2", a NOOP of 0 bytes, an SSL TLV with a sub-TLV. */
    uint8_t a6[36 + 64];
    memset(a6, 0, sizeof a6);
    inet_pton(AF_INET6, "2001:db8::9", a6);
    inet_pton(AF_INET6, "2001:db8::1", a6 + 16);
    a6[32] = 0x12; a6[33] = 0x34; a6[34] = 0x00; a6[35] = 0x50;
    const uint8_t tlvs[] = {0x01, 0x00, 0x02, 'h', '2', 0x04, 0x00, 0x00,
                            0x20, 0x00, 0x09, 0x01, 0, 0, 0, 0, 0x21, 0x00, 0x01, '3'};
    memcpy(a6 + 36, tlvs, sizeof tlvs);
    n = v2(h, 1, 0x21, a6, 36 + sizeof tlvs);
    i = valid("v2 tcp6 with TLVs", h, n);
    ok(i.family == 6 && !i.local, "v2 tcp6 family");
    ip_is("v2 tcp6 src", 6, i.src, "2001:db8::9");
    ok(i.src_port == 0x1234 && i.dst_port == 80, "v2 tcp6 ports");

    /* LOCAL: the proxy's own connection (a health check); whatever the family and block. */
    n = v2(h, 0, 0x00, "", 0);
    i = valid("v2 local", h, n);
    ok(i.local && !i.relayed, "v2 local keeps the socket's address, relays nobody");
    n = v2(h, 0, 0x11, a4, sizeof a4);
    ok(valid("v2 local with an address", h, n).local, "v2 local with an address: local");
    n = v2(h, 0, 0x77, "xyz", 3);
    ok(valid("v2 local, odd family", h, n).local, "v2 local ignores the family");
    /* PROXY with UNSPEC, and a Unix-socket client: the socket's address. */
    n = v2(h, 1, 0x00, "", 0);
    i = valid("v2 proxy unspec", h, n);
    ok(i.local && i.relayed, "v2 unspec: the socket's address, a relayed client");
    uint8_t au[216];
    memset(au, 0, sizeof au);
    memcpy(au, "/run/client.sock", 16);
    n = v2(h, 1, 0x31, au, sizeof au);
    i = valid("v2 unix", h, n);
    ok(i.local && i.relayed, "v2 unix stream: the socket's address, a relayed client");

    /* The bound: a block of KRAIT__PROXY_V2_MAX_LEN bytes is taken, one more refused as soon
     * as the length is known. */
    uint8_t big[KRAIT__PROXY_V2_MAX_LEN + 1];
    memcpy(big, a4, 12);
    size_t tl = KRAIT__PROXY_V2_MAX_LEN - 12 - 3;
    big[12] = 0x04;
    big[13] = (uint8_t)(tl >> 8);
    big[14] = (uint8_t)tl;
    memset(big + 15, 0, tl);
    n = v2(h, 1, 0x11, big, KRAIT__PROXY_V2_MAX_LEN);
    ok(n == KRAIT__PROXY_MAX, "the longest header is KRAIT__PROXY_MAX");
    valid("v2 of the longest length", h, n);
    v2(h, 1, 0x11, big, 12);
    h[14] = (uint8_t)((KRAIT__PROXY_V2_MAX_LEN + 1) >> 8);
    h[15] = (uint8_t)(KRAIT__PROXY_V2_MAX_LEN + 1);
    bad("v2 longer than the bound (16 bytes known)", h, 16);
    h[14] = h[15] = 0xFF;
    bad("v2 length 65535", h, 16);

    /* Malformed. */
    n = v2(h, 2, 0x11, a4, sizeof a4);
    bad("v2 command 2", h, 13);
    n = v2(h, 1, 0x11, a4, sizeof a4);
    h[12] = 0x11;
    bad("v2 version 1", h, 13);
    h[12] = 0x31;
    bad("v2 version 3", h, n);
    n = v2(h, 1, 0x12, a4, sizeof a4);
    bad("v2 UDP over IPv4", h, 14);
    n = v2(h, 1, 0x22, a6, 36);
    bad("v2 UDP over IPv6", h, n);
    n = v2(h, 1, 0x41, a4, sizeof a4);
    bad("v2 family 4", h, n);
    n = v2(h, 1, 0x10, a4, sizeof a4);
    bad("v2 INET with UNSPEC transport", h, n);
    n = v2(h, 1, 0x01, a4, sizeof a4);
    bad("v2 UNSPEC with STREAM", h, n);
    n = v2(h, 1, 0x11, a4, 11);
    bad("v2 IPv4 block too short", h, n);
    n = v2(h, 1, 0x21, a6, 35);
    bad("v2 IPv6 block too short", h, n);
    n = v2(h, 1, 0x31, au, 215);
    bad("v2 unix block too short", h, n);
    uint8_t t[12 + 8];
    memcpy(t, a4, 12);
    memcpy(t + 12, "\x01\x00\x05" "ab", 5);  /* a TLV longer than what is left */
    n = v2(h, 1, 0x11, t, 17);
    bad("v2 TLV past the end", h, n);
    memcpy(t + 12, "\x01\x00", 2);  /* two bytes: not even a TLV head */
    n = v2(h, 1, 0x11, t, 14);
    bad("v2 truncated TLV head", h, n);
    uint8_t s[16];
    memcpy(s, V2SIG, 12);
    s[3] = 'X';
    bad("v2 signature mismatch", s, 12);
    bad("v2 signature mismatch, 4 bytes", s, 4);
    bad("CRLF then HTTP", "\r\nGET / HTTP/1.1\r\n\r\n", 20);
}

static void test_every_split(void)
{
    /* A stateless parser: "split anywhere" is every prefix, done by valid(); here a header
     * followed by another one byte by byte: the first one's length, whatever follows. */
    const char *h = "PROXY TCP4 10.1.2.3 10.0.0.1 1000 80\r\nPROXY TCP4 6.6.6.6 7.7.7.7 1 1\r\n";
    krait__proxy_info i;
    size_t first = strlen("PROXY TCP4 10.1.2.3 10.0.0.1 1000 80\r\n");
    for (size_t k = first; k <= strlen(h); k++) {
        ok(parse_guarded(h, k, &i) == (int)first, "a second header is the connection's bytes");
        ip_is("first header wins", 4, i.src, "10.1.2.3");
    }
}

static void test_cidr(void)
{
    krait__cidr nets[6];
    ok(krait__cidr_parse("10.0.0.0/8", &nets[0]) == 0, "10.0.0.0/8");
    ok(krait__cidr_parse("192.168.1.77/24", &nets[1]) == 0, "host bits are cleared");
    ok(krait__cidr_parse("2001:db8::/32", &nets[2]) == 0, "2001:db8::/32");
    ok(krait__cidr_parse("127.0.0.1", &nets[3]) == 0 && nets[3].bits == 32, "an address: /32");
    ok(krait__cidr_parse("::1", &nets[4]) == 0 && nets[4].bits == 128, "::1: /128");
    ok(krait__cidr_parse("0.0.0.0/0", &nets[5]) == 0 && nets[5].bits == 0, "/0");
    const char *no[] = {"", "unix", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/8x",
                        "10.0.0/8", "/8", "10.0.0.0/-1", "fe80::1%eth0", "10.0.0.0/0008",
                        "a very long text that is no address at all, surely not, no no no"};
    krait__cidr x;
    for (size_t k = 0; k < sizeof no / sizeof no[0]; k++)
        ok(krait__cidr_parse(no[k], &x) < 0, "refused: '%s'", no[k]);

    ok(krait__cidr_match(nets, 5, "10.200.3.4"), "10.200.3.4 in 10/8");
    ok(!krait__cidr_match(nets, 5, "11.0.0.1"), "11.0.0.1 in none");
    ok(krait__cidr_match(nets, 5, "192.168.1.200"), "in 192.168.1.0/24");
    ok(!krait__cidr_match(nets, 5, "192.168.2.1"), "not in 192.168.1.0/24");
    ok(krait__cidr_match(nets, 5, "2001:db8:ffff::5"), "in 2001:db8::/32");
    ok(!krait__cidr_match(nets, 5, "2001:db9::5"), "not in 2001:db8::/32");
    ok(krait__cidr_match(nets, 5, "127.0.0.1") && !krait__cidr_match(nets, 5, "127.0.0.2"),
       "an address matches itself only");
    ok(krait__cidr_match(nets, 5, "::1") && !krait__cidr_match(nets, 5, "::2"), "::1 only");
    ok(krait__cidr_match(nets, 5, "::ffff:10.9.9.9"), "IPv4-mapped compared as IPv4");
    ok(!krait__cidr_match(nets + 2, 3, "::ffff:10.9.9.9"), "... with IPv4 networks only");
    ok(!krait__cidr_match(nets, 5, "unix") && !krait__cidr_match(nets, 5, "-"),
       "not an address: in none");
    ok(krait__cidr_match(nets + 5, 1, "8.8.8.8") && !krait__cidr_match(nets + 5, 1, "::8"),
       "0.0.0.0/0 is every IPv4 address");
    ok(!krait__cidr_match(nets, 0, "10.0.0.1"), "no networks: nothing trusted");
}

int main(void)
{
    test_v1();
    test_v2();
    test_every_split();
    test_cidr();
    return done();
}
