/* The PROXY protocol (HAProxy's "PROXY protocol" specification, versions 1 and 2): the header a
 * TCP load balancer sends before a connection's own bytes, naming the client it accepted.
 * Sans-IO: krait__proxy_parse takes bytes and returns a result; loop.c reads the socket. */
#ifndef KRAIT_PROXYPROTO_H
#define KRAIT_PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>

/* Version 1 (text): the specification's worst case, CRLF included. */
#define KRAIT__PROXY_V1_MAX 107
/* Version 2 (binary): the 16 bytes of the fixed part, then at most this many bytes of
 * addresses and TLVs (its length field; 216 bytes of Unix-socket addresses plus room for the
 * TLVs load balancers send: ALPN, authority, unique id, SSL details, cloud endpoint ids). A
 * longer header is refused. */
#define KRAIT__PROXY_V2_MAX_LEN 1024
/* The longest header accepted, either version. */
#define KRAIT__PROXY_MAX (16 + KRAIT__PROXY_V2_MAX_LEN)

#define KRAIT__PROXY_MORE (-2)  /* a valid beginning: more bytes are needed */
#define KRAIT__PROXY_BAD (-1)   /* not a PROXY header, or a malformed or oversized one */

typedef struct {
    int version;            /* 1 or 2 */
    /* 1: keep the connection's own addresses: a v2 LOCAL command (the proxy's health check),
     * v1 "UNKNOWN", or a v2 PROXY command with an unspecified or Unix-socket family. */
    int local;
    /* 1: the connection carries a client's bytes (every header but a v2 LOCAL): its HTTP
     * headers are that client's, never the proxy's word, even when the address stays. */
    int relayed;
    int family;             /* when !local: 4 or 6 */
    uint8_t src[16], dst[16];  /* network byte order; 4 bytes used for IPv4 */
    uint16_t src_port, dst_port;
} krait__proxy_info;

/* Parse the PROXY header at buf[0..len). Returns its length (> 0: the connection's own bytes
 * start there), KRAIT__PROXY_MORE when buf is a valid beginning of a header that is not
 * complete yet (every byte given is then part of the header), or KRAIT__PROXY_BAD. Reads
 * nothing outside buf; *out is written only when a length is returned. v2 TLVs are checked
 * to fill the header exactly and are otherwise ignored. */
int krait__proxy_parse(const uint8_t *buf, size_t len, krait__proxy_info *out);

/* A trusted network: family 4 or 6, the address (host bits cleared) and the prefix length. */
typedef struct {
    int family;
    int bits;
    uint8_t addr[16];
} krait__cidr;

/* Parse "10.0.0.0/8", "10.0.0.5" (a /32), "2001:db8::/32", "::1" (a /128). Host bits are
 * cleared. Returns 0, or -1 for anything else. */
int krait__cidr_parse(const char *text, krait__cidr *out);
/* Is the address in text (an IPv4 or IPv6 address as inet_ntop writes it) in one of the
 * networks? An IPv4-mapped IPv6 address (::ffff:10.0.0.1) is compared as the IPv4 address,
 * with IPv4 networks only. Anything that is not an address (say "unix") is in none. */
int krait__cidr_match(const krait__cidr *nets, size_t n, const char *text);
/* The same for an address already parsed: family 4 or 6, a[0..4) or a[0..16), network order. */
int krait__cidr_match_bin(const krait__cidr *nets, size_t n, int family, const uint8_t *a);

#endif
