/* The PROXY protocol header (versions 1 and 2) and the trusted networks it is taken from.
 * Sans-IO: bytes in, a result out; no allocation, no syscall. loop.c reads the header off the
 * socket (before any TLS byte) and decides whom to ask for one (docs/design.md, "PROXY
 * protocol"). Section numbers below are those of HAProxy's proxy-protocol.txt. */
#include <arpa/inet.h>
#include <string.h>

#include "proxyproto.h"

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A port of a v1 header (§2.1): decimal, no leading zero, 0..65535. */
static int v1_port(const char *s, uint16_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* Version 1 (§2.1): "PROXY" SP ("TCP4" | "TCP6" | "UNKNOWN") [SP src SP dst SP sport SP dport]
 * CRLF, at most 107 bytes, printable US-ASCII before the CRLF. */
static int parse_v1(const uint8_t *buf, size_t len, krait__proxy_info *out)
{
    static const char sig[] = "PROXY ";
    size_t n = len < 6 ? len : 6;
    if (memcmp(buf, sig, n) != 0)
        return KRAIT__PROXY_BAD;
    size_t end = 0;  /* the CR */
    size_t scan = len < KRAIT__PROXY_V1_MAX ? len : KRAIT__PROXY_V1_MAX;
    int found = 0;
    for (size_t i = 0; i < scan; i++) {
        if (buf[i] == '\r') {
            if (i + 1 >= KRAIT__PROXY_V1_MAX)
                return KRAIT__PROXY_BAD;  /* its LF would be byte 108 */
            if (i + 1 >= len)
                return KRAIT__PROXY_MORE;
            if (buf[i + 1] != '\n')
                return KRAIT__PROXY_BAD;
            end = i;
            found = 1;
            break;
        }
        if (buf[i] < 0x20 || buf[i] > 0x7e)
            return KRAIT__PROXY_BAD;  /* a bare LF, a control byte, not ASCII */
    }
    if (!found)
        return len >= KRAIT__PROXY_V1_MAX ? KRAIT__PROXY_BAD : KRAIT__PROXY_MORE;
    if (end < 6)
        return KRAIT__PROXY_BAD;
    /* The line without its CRLF, NUL-terminated, split at single spaces. */
    char line[KRAIT__PROXY_V1_MAX + 1];
    memcpy(line, buf, end);
    line[end] = '\0';
    char *f[7];
    int nf = 0;
    char *p = line;
    for (;;) {
        if (nf == 7)
            break;
        f[nf++] = p;
        char *sp = strchr(p, ' ');
        if (!sp)
            break;
        *sp = '\0';
        p = sp + 1;
    }
    krait__proxy_info r;
    memset(&r, 0, sizeof r);
    r.version = 1;
    r.relayed = 1;
    if (nf >= 2 && strcmp(f[1], "UNKNOWN") == 0) {
        /* §2.1: whatever follows UNKNOWN up to the CRLF is ignored; the connection's own
         * addresses stay. */
        r.local = 1;
        *out = r;
        return (int)end + 2;
    }
    if (nf != 6 || p[0] == '\0' || strchr(p, ' '))
        return KRAIT__PROXY_BAD;  /* not exactly six fields */
    int af;
    if (strcmp(f[1], "TCP4") == 0) {
        af = AF_INET;
        r.family = 4;
    } else if (strcmp(f[1], "TCP6") == 0) {
        af = AF_INET6;
        r.family = 6;
    } else {
        return KRAIT__PROXY_BAD;
    }
    if (inet_pton(af, f[2], r.src) != 1 || inet_pton(af, f[3], r.dst) != 1 ||
        v1_port(f[4], &r.src_port) < 0 || v1_port(f[5], &r.dst_port) < 0)
        return KRAIT__PROXY_BAD;
    *out = r;
    return (int)end + 2;
}

/* Version 2 (§2.2): the signature, ver_cmd, fam, a big-endian length, then the addresses and
 * TLVs. */
static int parse_v2(const uint8_t *buf, size_t len, krait__proxy_info *out)
{
    size_t n = len < 12 ? len : 12;
    if (memcmp(buf, v2_sig, n) != 0)
        return KRAIT__PROXY_BAD;
    /* The version must be 2 and the command LOCAL (0) or PROXY (1); "receivers must drop
     * connections presenting unexpected values here". */
    if (len > 12 && ((buf[12] >> 4) != 2 || (buf[12] & 0x0F) > 1))
        return KRAIT__PROXY_BAD;
    int proxy_cmd = len > 12 && (buf[12] & 0x0F) == 1;
    /* PROXY: UNSPEC (0x00), or a stream over IPv4, IPv6 or a Unix socket. Datagram families
     * make no sense on a stream; other values "must be rejected". LOCAL: the family is
     * ignored. */
    if (len > 13 && proxy_cmd && buf[13] != 0x00 && buf[13] != 0x11 && buf[13] != 0x21 &&
        buf[13] != 0x31)
        return KRAIT__PROXY_BAD;
    if (len < 16)
        return KRAIT__PROXY_MORE;
    size_t body = (size_t)buf[14] << 8 | buf[15];
    if (body > KRAIT__PROXY_V2_MAX_LEN)
        return KRAIT__PROXY_BAD;
    size_t total = 16 + body;
    if (len < total)
        return KRAIT__PROXY_MORE;
    krait__proxy_info r;
    memset(&r, 0, sizeof r);
    r.version = 2;
    r.relayed = proxy_cmd;
    if (!proxy_cmd || buf[13] == 0x00) {
        /* LOCAL (a health check of the proxy itself) or UNSPEC: the connection's own
         * addresses; the block is skipped unread. */
        r.local = 1;
        *out = r;
        return (int)total;
    }
    size_t alen = buf[13] == 0x11 ? 12 : buf[13] == 0x21 ? 36 : 216;
    if (body < alen)
        return KRAIT__PROXY_BAD;
    const uint8_t *a = buf + 16;
    if (buf[13] == 0x11) {
        r.family = 4;
        memcpy(r.src, a, 4);
        memcpy(r.dst, a + 4, 4);
        r.src_port = (uint16_t)(a[8] << 8 | a[9]);
        r.dst_port = (uint16_t)(a[10] << 8 | a[11]);
    } else if (buf[13] == 0x21) {
        r.family = 6;
        memcpy(r.src, a, 16);
        memcpy(r.dst, a + 16, 16);
        r.src_port = (uint16_t)(a[32] << 8 | a[33]);
        r.dst_port = (uint16_t)(a[34] << 8 | a[35]);
    } else {
        r.local = 1;  /* a Unix-socket client: no address to give */
    }
    /* §2.2.7: TLVs (type, 16-bit length, value) fill the rest exactly. Checked, then ignored
     * (a nested SSL TLV's sub-TLVs are its value). */
    for (size_t p = 16 + alen; p < total;) {
        if (total - p < 3)
            return KRAIT__PROXY_BAD;
        size_t tl = (size_t)buf[p + 1] << 8 | buf[p + 2];
        if (tl > total - p - 3)
            return KRAIT__PROXY_BAD;
        p += 3 + tl;
    }
    *out = r;
    return (int)total;
}

int krait__proxy_parse(const uint8_t *buf, size_t len, krait__proxy_info *out)
{
    if (len == 0)
        return KRAIT__PROXY_MORE;
    if (buf[0] == 'P')
        return parse_v1(buf, len, out);
    if (buf[0] == 0x0D)
        return parse_v2(buf, len, out);
    return KRAIT__PROXY_BAD;
}

/* ---- trusted networks --------------------------------------------------------------------- */

static void clear_host_bits(uint8_t *addr, int nbytes, int bits)
{
    for (int i = 0; i < nbytes; i++) {
        int keep = bits - 8 * i;
        if (keep >= 8)
            continue;
        addr[i] = keep <= 0 ? 0 : (uint8_t)(addr[i] & (0xFF << (8 - keep)));
    }
}

int krait__cidr_parse(const char *text, krait__cidr *out)
{
    char tmp[64];
    size_t n = strlen(text);
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, text, n + 1);
    char *slash = strchr(tmp, '/');
    int bits = -1;
    if (slash) {
        *slash = '\0';
        const char *b = slash + 1;
        size_t bl = strlen(b);
        if (bl == 0 || bl > 3)
            return -1;
        bits = 0;
        for (size_t i = 0; i < bl; i++) {
            if (b[i] < '0' || b[i] > '9')
                return -1;
            bits = bits * 10 + (b[i] - '0');
        }
    }
    krait__cidr r;
    memset(&r, 0, sizeof r);
    if (inet_pton(AF_INET, tmp, r.addr) == 1) {
        r.family = 4;
        if (bits > 32)
            return -1;
        r.bits = bits < 0 ? 32 : bits;
    } else if (inet_pton(AF_INET6, tmp, r.addr) == 1) {
        r.family = 6;
        if (bits > 128)
            return -1;
        r.bits = bits < 0 ? 128 : bits;
    } else {
        return -1;
    }
    clear_host_bits(r.addr, r.family == 4 ? 4 : 16, r.bits);
    *out = r;
    return 0;
}

int krait__cidr_match_bin(const krait__cidr *nets, size_t n, int family, const uint8_t *a)
{
    for (size_t k = 0; k < n; k++) {
        const krait__cidr *c = &nets[k];
        if (c->family != family)
            continue;
        uint8_t m[16];
        memcpy(m, a, family == 4 ? 4 : 16);
        clear_host_bits(m, family == 4 ? 4 : 16, c->bits);
        if (memcmp(m, c->addr, family == 4 ? 4 : 16) == 0)
            return 1;
    }
    return 0;
}

int krait__cidr_match(const krait__cidr *nets, size_t n, const char *text)
{
    uint8_t a[16];
    int family;
    if (inet_pton(AF_INET, text, a) == 1) {
        family = 4;
    } else if (inet_pton(AF_INET6, text, a) == 1) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
        family = 6;
        if (memcmp(a, mapped, 12) == 0) {
            /* As krait/_proxy.py: ::ffff:a.b.c.d is the IPv4 address. */
            memmove(a, a + 12, 4);
            family = 4;
        }
    } else {
        return 0;
    }
    return krait__cidr_match_bin(nets, n, family, a);
}
