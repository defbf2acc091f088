/* krait__xff_client (native/src/xff.c): the access log's client behind trusted proxies. The
 * cases mirror tests/integration/test_proxy.py's for krait/_proxy.py; tests/test_xff_property.py
 * compares the two on random inputs. */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "xff.h"

static krait__cidr nets[8];
static size_t nnets;
static int trust_unix;

static void trust(const char *const *specs)
{
    nnets = 0;
    trust_unix = 0;
    for (; *specs; specs++) {
        if (strcmp(*specs, "unix") == 0)
            trust_unix = 1;
        else if (krait__cidr_parse(*specs, &nets[nnets++]) < 0)
            fprintf(stderr, "bad spec %s\n", *specs);
    }
}

/* The answer for peer and up to four X-Forwarded-For lines (NULL-terminated); each value is
 * read from a guarded copy, so a read past its end faults. */
static const char *resolve(const char *peer, const char *const *lines)
{
    static char out[KRAIT__XFF_ADDR];
    krait__header hdr[6];
    guarded g[6];
    size_t n = 0;
    hdr[n++] = (krait__header){"Host", 4, "example.org", 11};
    for (; *lines && n < 5; lines++) {
        g[n] = guarded_copy(*lines, strlen(*lines));
        hdr[n] = (krait__header){n % 2 ? "X-Forwarded-For" : "x-forwarded-for", 15, g[n].data,
                                 strlen(*lines)};
        n++;
    }
    hdr[n++] = (krait__header){"X-Forwarded-Fo", 14, "1.1.1.1", 7};
    int r = krait__xff_client(nets, nnets, trust_unix, peer, hdr, n, out);
    ok(r == (strcmp(out, peer) != 0), "return value for %s", out);
    for (size_t i = 1; i + 1 < n; i++)
        guarded_free(g[i]);
    return out;
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NONE ((const char *const[]){NULL})
#define EXPECT(peer, lines, want)                                                              \
    do {                                                                                       \
        const char *got_ = resolve(peer, lines);                                               \
        ok(strcmp(got_, want) == 0, "%s: got %s, want %s", #lines, got_, want);                \
    } while (0)

static void test_untrusted_peer(void)
{
    trust(L("10.0.0.0/8"));
    EXPECT("127.0.0.1", L("1.2.3.4"), "127.0.0.1");
    EXPECT("192.0.2.1", L("1.1.1.1"), "192.0.2.1");
    trust(NONE);
    EXPECT("10.0.0.1", L("1.1.1.1"), "10.0.0.1");
    EXPECT("unix", L("1.1.1.1"), "unix");
}

static void test_trusted_chain(void)
{
    trust(L("127.0.0.1", "10.0.0.0/8"));
    /* From the right: 10.1.2.3 is trusted, 203.0.113.9 the client, 6.6.6.6 never believed. */
    EXPECT("127.0.0.1", L("6.6.6.6, 203.0.113.9, 10.1.2.3"), "203.0.113.9");
    EXPECT("127.0.0.1", NONE, "127.0.0.1");
    EXPECT("127.0.0.1", L("not-an-ip"), "127.0.0.1");
    trust(L("10.0.0.0/8"));
    EXPECT("10.0.0.1", L("1.1.1.1"), "1.1.1.1");
    EXPECT("10.0.0.1", L("10.0.0.2, 10.0.0.3"), "10.0.0.2");  /* all trusted: the leftmost */
    EXPECT("10.0.0.1", L("2001:db8::1"), "2001:db8::1");
    EXPECT("::ffff:10.0.0.1", L("1.1.1.1"), "1.1.1.1");         /* a mapped peer is IPv4 */
    EXPECT("10.0.0.1", L("1.1.1.1, ::ffff:10.9.9.9"), "1.1.1.1"); /* so is a mapped hop */
    EXPECT("10.0.0.1", L(" , ,"), "10.0.0.1");
    EXPECT("10.0.0.1", L(""), "10.0.0.1");
}

static void test_invalid_hops(void)
{
    trust(L("127.0.0.1"));
    EXPECT("127.0.0.1", L("fe80::1%<img src=x onerror=alert(1)>"), "127.0.0.1");
    EXPECT("127.0.0.1", L("fe80::1%eth0"), "127.0.0.1");
    EXPECT("127.0.0.1", L("203.0.113.9:8080"), "127.0.0.1");
    EXPECT("127.0.0.1", L("[2001:DB8::0001]"), "2001:db8::1");
    EXPECT("127.0.0.1", L("<script>"), "127.0.0.1");
    EXPECT("127.0.0.1", L("[::1]:80"), "127.0.0.1");
    EXPECT("127.0.0.1", L("01.2.3.4"), "127.0.0.1");
    EXPECT("127.0.0.1", L("1.2.3.4/32"), "127.0.0.1");
    EXPECT("127.0.0.1", L("1::2::3"), "127.0.0.1");
    EXPECT("127.0.0.1", L("1::2:3:4:5:6:7:8"), "127.0.0.1");
    EXPECT("127.0.0.1", L("1:2:3:4:5:6:7:8:9"), "127.0.0.1");
    EXPECT("127.0.0.1", L("00001::"), "127.0.0.1");
    /* A broken hop left of the client is never read. */
    EXPECT("127.0.0.1", L("junk, 203.0.113.9"), "203.0.113.9");
}

static void test_canonical_text(void)
{
    trust(L("127.0.0.1"));
    EXPECT("127.0.0.1", L("[10.0.0.1]"), "10.0.0.1");
    EXPECT("127.0.0.1", L("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
    EXPECT("127.0.0.1", L("::FFFF:0102:0304"), "::ffff:1.2.3.4");
    EXPECT("127.0.0.1", L("::1.2.3.4"), "::102:304");
    EXPECT("127.0.0.1", L("0:0:0:0:0:0:0:0"), "::");
    EXPECT("127.0.0.1", L("1:0:0:2:0:0:0:3"), "1:0:0:2::3");
    EXPECT("127.0.0.1", L("1:0:0:2:0:0:3:4"), "1::2:0:0:3:4");
    EXPECT("127.0.0.1", L("1:2:3:4:5:6:7::"), "1:2:3:4:5:6:7:0");
    EXPECT("127.0.0.1", L("1:2:3:4:5::"), "1:2:3:4:5::");
    EXPECT("127.0.0.1", L("::2:3:4:5:6:7:8"), "0:2:3:4:5:6:7:8");
    EXPECT("127.0.0.1", L("a:b:c:d:e:f:1.2.3.4"), "a:b:c:d:e:f:102:304");
    EXPECT("127.0.0.1", L("\t\xc2\xa0" "203.0.113.9\xe3\x80\x80"), "203.0.113.9");
}

static void test_lines_and_unix(void)
{
    trust(L("127.0.0.1", "10.0.0.0/8", "unix"));
    /* Two lines are one list: the second line is nearer. */
    EXPECT("127.0.0.1", L("203.0.113.9", "10.0.0.5"), "203.0.113.9");
    EXPECT("127.0.0.1", L("198.51.100.1, 10.0.0.4", "10.0.0.5"), "198.51.100.1");
    EXPECT("127.0.0.1", L("", ""), "127.0.0.1");
    EXPECT("unix", L("203.0.113.9"), "203.0.113.9");
    EXPECT("unix", L("10.0.0.1, unix"), "unix");  /* "unix" in a header is no address */
}

static void test_hop_bound(void)
{
    trust(L("127.0.0.1", "10.0.0.0/8"));
    char buf[KRAIT__XFF_MAX_HOPS * 12 + 32];
    size_t n = (size_t)sprintf(buf, "203.0.113.9");
    for (int i = 0; i < KRAIT__XFF_MAX_HOPS - 1; i++)
        n += (size_t)sprintf(buf + n, ", 10.0.0.%d", i % 250);
    EXPECT("127.0.0.1", L(buf), "203.0.113.9");  /* 64 hops: read */
    sprintf(buf + n, ", 10.0.0.1");
    /* 65: the 64 nearest are trusted, the walk stops there and the log keeps the peer. */
    EXPECT("127.0.0.1", L(buf), "127.0.0.1");
}

static void test_parse_addr(void)
{
    int family;
    unsigned char a[16];
    ok(krait__xff_parse_addr("1.2.3.4", 7, &family, a) == 0 && family == 4 && a[3] == 4, "v4");
    ok(krait__xff_parse_addr("1.2.3.4", 5, &family, a) < 0, "length is obeyed");
    ok(krait__xff_parse_addr("::1", 3, &family, a) == 0 && family == 6 && a[15] == 1, "v6");
    ok(krait__xff_parse_addr("", 0, &family, a) < 0, "empty");
    ok(krait__xff_parse_addr("1.2.3.256", 9, &family, a) < 0, "256");
    ok(krait__xff_parse_addr("[", 1, &family, a) < 0, "[");
}

int main(void)
{
    test_untrusted_peer();
    test_trusted_chain();
    test_invalid_hops();
    test_canonical_text();
    test_lines_and_unix();
    test_hop_bound();
    test_parse_addr();
    return done();
}
