/* libFuzzer driver for the PROXY protocol header parser (native/src/proxyproto.c).
 * Input: the bytes a connection starts with. Checks the answer's invariants: a length is within
 * the input and the bounds (107 bytes for v1, KRAIT__PROXY_MAX for v2) and every prefix of the
 * header answers "need more"; "need more" is never given for an input the bounds already
 * rule out; the same bytes followed by others answer the same (the parser never looks past a
 * header); the result's fields are sane. Each parse reads an exact-size heap copy, so ASan
 * catches any read past the end. Also: trusted-network parsing and matching on the input
 * taken as text. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "proxyproto.h"

static int parse_copy(const uint8_t *data, size_t len, krait__proxy_info *info)
{
    uint8_t *buf = malloc(len ? len : 1);
    if (len)
        memcpy(buf, data, len);
    memset(info, 0xA5, sizeof *info);
    int r = krait__proxy_parse(buf, len, info);
    free(buf);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    krait__proxy_info info, again;
    int r = parse_copy(data, size, &info);
    CHECK(r == KRAIT__PROXY_MORE || r == KRAIT__PROXY_BAD || (r > 0 && (size_t)r <= size));
    if (r == KRAIT__PROXY_MORE) {
        /* Still a valid beginning: within the bounds. */
        CHECK(size < KRAIT__PROXY_MAX);
        if (size && data[0] == 'P')
            CHECK(size < KRAIT__PROXY_V1_MAX);
    }
    if (r > 0) {
        CHECK(info.version == 1 || info.version == 2);
        CHECK((size_t)r <= (info.version == 1 ? KRAIT__PROXY_V1_MAX : KRAIT__PROXY_MAX));
        if (info.version == 1)
            CHECK(data[r - 2] == '\r' && data[r - 1] == '\n');
        CHECK(info.local == 0 || info.local == 1);
        CHECK(info.relayed == 1 || (info.relayed == 0 && info.version == 2 && info.local));
        if (!info.local) {
            CHECK(info.family == 4 || info.family == 6);
            char text[64];
            CHECK(inet_ntop(info.family == 4 ? AF_INET : AF_INET6, info.src, text,
                            sizeof text) != NULL);
        }
        /* The header alone answers the same; every shorter prefix needs more. */
        CHECK(parse_copy(data, (size_t)r, &again) == r);
        CHECK(again.version == info.version && again.local == info.local);
        if (!info.local)
            CHECK(memcmp(again.src, info.src, 16) == 0 && again.src_port == info.src_port);
        for (size_t k = 0; k < (size_t)r; k++) {
            int p = parse_copy(data, k, &again);
            CHECK(p == KRAIT__PROXY_MORE);
        }
    } else if (size > 0) {
        /* What follows never changes the answer for a prefix that is already bad. */
        int p = parse_copy(data, size - 1, &again);
        if (p == KRAIT__PROXY_BAD)
            CHECK(r == KRAIT__PROXY_BAD);
    }

    /* The input as a --trusted-proxy value, and as a peer address. */
    char text[80];
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    krait__cidr net;
    if (krait__cidr_parse(text, &net) == 0) {
        CHECK(net.family == 4 || net.family == 6);
        CHECK(net.bits >= 0 && net.bits <= (net.family == 4 ? 32 : 128));
        /* The network's own address is in it. */
        char addr[64];
        CHECK(inet_ntop(net.family == 4 ? AF_INET : AF_INET6, net.addr, addr, sizeof addr));
        CHECK(krait__cidr_match(&net, 1, addr));
    }
    static const krait__cidr none[1];
    CHECK(!krait__cidr_match(none, 0, text));
    return 0;
}
