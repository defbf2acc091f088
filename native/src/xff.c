/* X-Forwarded-For behind trusted proxies, for the access log (xff.h). Every rule here mirrors
 * krait/_proxy.py and the Python it relies on (str.split, str.strip, ipaddress.ip_address,
 * str(IPv4Address), str(IPv6Address)), so that the log's remote is the page's remote_addr;
 * tests/test_xff_property.py compares the two on random inputs. */
#include "xff.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "krait.h"

/* ---- Python's str.strip() on the worker's text -------------------------------------------
 * The worker decodes header values as UTF-8 with surrogateescape, and str.strip() removes
 * Unicode whitespace (str.isspace): ASCII \t \n \v \f \r, \x1c-\x1f and space, and the UTF-8
 * forms of U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
 * Those sequences are whole characters wherever they appear (a lead byte is never a
 * continuation byte), so matching them at either end of the bytes is what decoding does. */

static int ascii_space(unsigned char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r') || (ch >= 0x1c && ch <= 0x1f);
}

/* The length (2 or 3) of a Unicode space encoded at p[0..n), or 0. */
static size_t uni_space(const unsigned char *p, size_t n)
{
    if (n >= 2 && p[0] == 0xc2 && (p[1] == 0x85 || p[1] == 0xa0))
        return 2;
    if (n < 3)
        return 0;
    if (p[0] == 0xe1 && p[1] == 0x9a && p[2] == 0x80)
        return 3;
    if (p[0] == 0xe2 && p[1] == 0x80 &&
        ((p[2] >= 0x80 && p[2] <= 0x8a) || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf))
        return 3;
    if (p[0] == 0xe2 && p[1] == 0x81 && p[2] == 0x9f)
        return 3;
    if (p[0] == 0xe3 && p[1] == 0x80 && p[2] == 0x80)
        return 3;
    return 0;
}

static void strip(const unsigned char **pp, size_t *pn)
{
    const unsigned char *p = *pp;
    size_t n = *pn, k;
    for (;;) {
        if (n && ascii_space(p[0])) {
            p++;
            n--;
        } else if ((k = uni_space(p, n)) != 0) {
            p += k;
            n -= k;
        } else {
            break;
        }
    }
    for (;;) {
        if (n && ascii_space(p[n - 1]))
            n--;
        else if (n >= 2 && uni_space(p + n - 2, 2) == 2)
            n -= 2;
        else if (n >= 3 && uni_space(p + n - 3, 3) == 3)
            n -= 3;
        else
            break;
    }
    *pp = p;
    *pn = n;
}

/* ---- ipaddress.ip_address ----------------------------------------------------------------- */

/* IPv4Address: four decimal octets of 1-3 ASCII digits, no leading zero, at most 255. */
static int parse_v4(const unsigned char *p, size_t n, unsigned char out[4])
{
    int k = 0;
    size_t i = 0;
    for (;;) {
        size_t s = i;
        while (i < n && p[i] != '.')
            i++;
        size_t len = i - s;
        if (k == 4 || len == 0 || len > 3 || (len > 1 && p[s] == '0'))
            return -1;
        unsigned v = 0;
        for (size_t j = s; j < i; j++) {
            if (p[j] < '0' || p[j] > '9')
                return -1;
            v = v * 10 + (unsigned)(p[j] - '0');
        }
        if (v > 255)
            return -1;
        out[k++] = (unsigned char)v;
        if (i == n)
            break;
        i++; /* the dot */
    }
    return k == 4 ? 0 : -1;
}

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* A hextet: 1-4 hex digits (an empty one is refused, as int('', 16) is). */
static int parse_hextet(const unsigned char *p, size_t n, unsigned *out)
{
    if (n == 0 || n > 4)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + (unsigned)h;
    }
    *out = v;
    return 0;
}

/* IPv6Address._ip_int_from_string, step by step. */
static int parse_v6(const unsigned char *p, size_t n, unsigned char out[16])
{
    enum { MAXP = 10 };
    size_t ps[MAXP], pl[MAXP];
    size_t np = 0, s = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || p[i] == ':') {
            if (np == 9) /* a tenth part: more than 8 colons even with an IPv4 suffix */
                return -1;
            ps[np] = s;
            pl[np++] = i - s;
            s = i + 1;
        }
    }
    if (np < 3)
        return -1;
    unsigned hx[MAXP];        /* the value of each part; empty parts are marked */
    int empty[MAXP];
    size_t last = np - 1;
    if (memchr(p + ps[last], '.', pl[last])) {
        unsigned char v4[4];
        if (parse_v4(p + ps[last], pl[last], v4) < 0)
            return -1;
        /* The suffix becomes two parts, already parsed. */
        if (np + 1 > 9)
            return -1;
        for (size_t i = 0; i < last; i++)
            empty[i] = pl[i] == 0;
        hx[last] = (unsigned)v4[0] << 8 | v4[1];
        hx[last + 1] = (unsigned)v4[2] << 8 | v4[3];
        empty[last] = empty[last + 1] = 0;
        pl[last] = pl[last + 1] = 1;  /* "present"; values are in hx */
        ps[last] = ps[last + 1] = (size_t)-1;
        np++;
    } else {
        for (size_t i = 0; i < np; i++)
            empty[i] = pl[i] == 0;
    }
    /* Disregarding the ends, one empty part at most: "::". */
    int skip = -1;
    for (size_t i = 1; i + 1 < np; i++) {
        if (empty[i]) {
            if (skip >= 0)
                return -1;
            skip = (int)i;
        }
    }
    size_t hi, lo, skipped;
    if (skip >= 0) {
        hi = (size_t)skip;
        lo = np - (size_t)skip - 1;
        if (empty[0]) {
            if (--hi)
                return -1;
        }
        if (empty[np - 1]) {
            if (--lo)
                return -1;
        }
        if (hi + lo >= 8)
            return -1;
        skipped = 8 - (hi + lo);
    } else {
        if (np != 8 || empty[0] || empty[np - 1])
            return -1;
        hi = np;
        lo = 0;
        skipped = 0;
    }
    unsigned words[8];
    size_t w = 0;
    for (size_t i = 0; i < hi + lo; i++) {
        size_t part = i < hi ? i : np - lo + (i - hi);
        unsigned v;
        if (ps[part] == (size_t)-1)
            v = hx[part];
        else if (parse_hextet(p + ps[part], pl[part], &v) < 0)
            return -1;
        if (i == hi)
            while (w < hi + skipped)
                words[w++] = 0;
        words[w++] = v;
    }
    while (w < 8) /* a run of zeros at the end */
        words[w++] = 0;
    for (int i = 0; i < 8; i++) {
        out[2 * i] = (unsigned char)(words[i] >> 8);
        out[2 * i + 1] = (unsigned char)words[i];
    }
    return 0;
}

int krait__xff_parse_addr(const char *text, size_t n, int *family, unsigned char addr[16])
{
    const unsigned char *p = (const unsigned char *)text;
    strip(&p, &n);
    if (n >= 2 && p[0] == '[' && p[n - 1] == ']') {
        p++;
        n -= 2;
    }
    /* No address is longer than 45 characters; a zone id or a prefix is never one. */
    if (n == 0 || n > 45 || memchr(p, '%', n) || memchr(p, '/', n))
        return -1;
    if (parse_v4(p, n, addr) == 0) {
        *family = 4;
        return 0;
    }
    if (parse_v6(p, n, addr) == 0) {
        *family = 6;
        return 0;
    }
    return -1;
}

/* ---- str() of an address ------------------------------------------------------------------
 * IPv4 dotted; IPv6 as RFC 5952 (lower case, no leading zeros, the longest run of two or more
 * zero hextets, the first of equals, as "::"), an IPv4-mapped address as ::ffff:a.b.c.d (what
 * Python 3.13 writes and krait/_proxy.py writes on every version). */
static void format_addr(int family, const unsigned char *a, char out[KRAIT__XFF_ADDR])
{
    if (family == 4) {
        snprintf(out, KRAIT__XFF_ADDR, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
        return;
    }
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (memcmp(a, mapped, 12) == 0) {
        snprintf(out, KRAIT__XFF_ADDR, "::ffff:%u.%u.%u.%u", a[12], a[13], a[14], a[15]);
        return;
    }
    unsigned w[8];
    for (int i = 0; i < 8; i++)
        w[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
    int best = -1, best_len = 0, run = -1, run_len = 0;
    for (int i = 0; i < 8; i++) {
        if (w[i] == 0) {
            if (run < 0)
                run = i;
            if (++run_len > best_len) {
                best_len = run_len;
                best = run;
            }
        } else {
            run = -1;
            run_len = 0;
        }
    }
    if (best_len < 2)
        best = -1;
    size_t len = 0;
    for (int i = 0; i < 8; i++) {
        if (best >= 0 && i >= best && i < best + best_len) {
            if (i == best)
                len += (size_t)snprintf(out + len, KRAIT__XFF_ADDR - len, "::");
            continue;
        }
        int sep = i > 0 && i != best + best_len;
        len += (size_t)snprintf(out + len, KRAIT__XFF_ADDR - len, "%s%x", sep ? ":" : "", w[i]);
    }
}

/* ---- the walk ----------------------------------------------------------------------------- */

static int hop_trusted(const krait__cidr *nets, size_t nnets, const char *p, size_t n)
{
    int family;
    unsigned char a[16];
    if (krait__xff_parse_addr(p, n, &family, a) < 0)
        return 0;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (family == 6 && memcmp(a, mapped, 12) == 0) {
        memmove(a, a + 12, 4);
        family = 4;
    }
    return krait__cidr_match_bin(nets, nnets, family, a);
}

static int name_is_xff(const krait__header *h)
{
    static const char want[] = "x-forwarded-for";
    if (h->name_len != sizeof want - 1)
        return 0;
    for (size_t i = 0; i < sizeof want - 1; i++) {
        char ch = h->name[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != want[i])
            return 0;
    }
    return 1;
}

static int answer(const char *peer, const char *p, size_t n, char out[KRAIT__XFF_ADDR])
{
    int family;
    unsigned char a[16];
    if (p && krait__xff_parse_addr(p, n, &family, a) == 0)
        format_addr(family, a, out);
    else
        snprintf(out, KRAIT__XFF_ADDR, "%s", peer);
    return strcmp(out, peer) != 0;
}

int krait__xff_client(const krait__cidr *nets, size_t nnets, int trust_unix, const char *peer,
                      const krait__header *hdr, size_t nhdr, char out[KRAIT__XFF_ADDR])
{
    int trusted = strcmp(peer, "unix") == 0 ? trust_unix
                                             : hop_trusted(nets, nnets, peer, strlen(peer));
    size_t lines = 0, bytes = 0;
    for (size_t i = 0; trusted && i < nhdr; i++) {
        if (name_is_xff(&hdr[i])) {
            lines++;
            bytes += hdr[i].value_len;
        }
    }
    /* _proxy.py: "if forwarded_for:" — the lines joined by commas are empty only when there
     * is one empty line. */
    if (!trusted || lines == 0 || (lines == 1 && bytes == 0)) {
        snprintf(out, KRAIT__XFF_ADDR, "%s", peer);
        return 0;
    }
    const char *addr = NULL;  /* NULL: the peer (no hop) */
    size_t addr_len = 0;
    int hops = 0;
    for (size_t i = nhdr; i-- > 0;) {
        if (!name_is_xff(&hdr[i]))
            continue;
        const char *v = hdr[i].value;
        size_t end = hdr[i].value_len;
        for (;;) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            const unsigned char *h = (const unsigned char *)v + start;
            size_t hn = end - start;
            strip(&h, &hn);
            if (hn) {
                if (++hops > KRAIT__XFF_MAX_HOPS) {
                    snprintf(out, KRAIT__XFF_ADDR, "%s", peer);
                    return 0;
                }
                addr = (const char *)h;
                addr_len = hn;
                if (!hop_trusted(nets, nnets, addr, addr_len))
                    return answer(peer, addr, addr_len, out);
            }
            if (start == 0)
                break;
            end = start - 1;
        }
    }
    if (!addr)
        return answer(peer, peer, strlen(peer), out);
    return answer(peer, addr, addr_len, out);
}

int krait_xff_client(const char *const *specs, int nspecs, const char *peer,
                     const char *const *lines, const size_t *lens, int nlines, char *out)
{
    enum { MAX = 64 };
    krait__cidr nets[MAX];
    krait__header hdr[MAX];
    size_t nnets = 0;
    int unix_ok = 0;
    if (nspecs < 0 || nspecs > MAX || nlines < 0 || nlines > MAX)
        return KRAIT_EINVAL;
    for (int i = 0; i < nspecs; i++) {
        if (strcasecmp(specs[i], "unix") == 0)
            unix_ok = 1;
        else if (krait__cidr_parse(specs[i], &nets[nnets++]) < 0)
            return KRAIT_EINVAL;
    }
    for (int i = 0; i < nlines; i++) {
        hdr[i].name = "X-Forwarded-For";
        hdr[i].name_len = sizeof "X-Forwarded-For" - 1;
        hdr[i].value = lines[i];
        hdr[i].value_len = lens[i];
    }
    return krait__xff_client(nets, nnets, unix_ok, peer, hdr, (size_t)nlines, out);
}
