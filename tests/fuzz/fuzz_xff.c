/* libFuzzer driver for the access log's X-Forwarded-For walk (native/src/xff.c).
 * Input: a first byte choosing the peer and the trusted networks, then X-Forwarded-For values
 * separated by '\n' (at most six lines), each read from an exact-size heap copy so that ASan
 * catches a read past its end. Checks: the answer is a NUL-terminated string that fits, the
 * return value says whether it differs from the peer, an untrusted peer always gets itself,
 * an answer that is not the peer is an address written canonically (parsing it and resolving
 * it alone gives it back), and the same input gives the same answer. Also: the address parser
 * alone on the whole input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "xff.h"

static const char *const PEERS[] = {"127.0.0.1", "10.1.2.3", "::1", "unix", "::ffff:10.0.0.1",
                                    "192.0.2.1", "2001:db8::5", "not an address"};
static const char *const SPECS[] = {"10.0.0.0/8", "127.0.0.1", "::1", "2001:db8::/32",
                                    "0.0.0.0/0", "::/0"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    {
        char *copy = malloc(size);
        memcpy(copy, data, size);
        int family;
        unsigned char a[16];
        int r = krait__xff_parse_addr(copy, size, &family, a);
        CHECK(r == -1 || (r == 0 && (family == 4 || family == 6)));
        free(copy);
    }
    uint8_t sel = data[0];
    const char *peer = PEERS[sel & 7];
    krait__cidr nets[6];
    size_t nnets = 0;
    for (int i = 0; i < 6; i++)
        if (sel & (8 << i) && i < 5)
            CHECK(krait__cidr_parse(SPECS[i], &nets[nnets++]) == 0);
    if ((sel & 0xC0) == 0xC0)
        CHECK(krait__cidr_parse(SPECS[5], &nets[nnets++]) == 0);
    int trust_unix = (sel & 0x80) != 0;

    krait__header hdr[7];
    char *copies[7];
    size_t n = 0, pos = 1;
    while (pos <= size && n < 6) {
        size_t end = pos;
        while (end < size && data[end] != '\n')
            end++;
        size_t len = end - pos;
        copies[n] = malloc(len ? len : 1);
        memcpy(copies[n], data + pos, len);
        hdr[n] = (krait__header){n == 2 ? "Host" : "X-Forwarded-For", n == 2 ? 4 : 15,
                                 copies[n], len};
        n++;
        pos = end + 1;
    }
    char out[KRAIT__XFF_ADDR], again[KRAIT__XFF_ADDR];
    memset(out, 0x5A, sizeof out);
    int r = krait__xff_client(nets, nnets, trust_unix, peer, hdr, n, out);
    CHECK(memchr(out, '\0', sizeof out) != NULL);
    CHECK(r == (strcmp(out, peer) != 0));
    int trusted = strcmp(peer, "unix") == 0 ? trust_unix : krait__cidr_match(nets, nnets, peer);
    if (!trusted)
        CHECK(r == 0);
    if (r) {
        int family;
        unsigned char a[16];
        CHECK(krait__xff_parse_addr(out, strlen(out), &family, a) == 0);
        /* Canonical: the answer, alone in a header behind a peer that trusts everything, is
         * resolved to itself (when it is untrusted) or to the trusting peer's reading of it. */
        krait__cidr all[2];
        CHECK(krait__cidr_parse("0.0.0.0/0", &all[0]) == 0);
        krait__header one = {"X-Forwarded-For", 15, out, strlen(out)};
        CHECK(krait__xff_client(all, 1, 0, "10.0.0.1", &one, 1, again) >= 0);
        if (family == 6 && memcmp(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) != 0)
            CHECK(strcmp(again, out) == 0);
    }
    CHECK(krait__xff_client(nets, nnets, trust_unix, peer, hdr, n, again) == r);
    CHECK(strcmp(again, out) == 0);
    for (size_t i = 0; i < n; i++)
        free(copies[i]);
    return 0;
}
