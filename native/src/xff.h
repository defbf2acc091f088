/* The client behind trusted HTTP reverse proxies (X-Forwarded-For), for the access log: the
 * walk krait/_proxy.py's TrustedProxies.resolve does for krait.request.remote_addr, byte for
 * byte the same answer (docs/design.md, "The access log's client address"). Sans-IO: no
 * syscalls, no allocation. Implemented in xff.c; tested by tests/native/test_xff.c and
 * tests/test_xff_property.py; fuzzed by tests/fuzz/fuzz_xff.c. */
#ifndef KRAIT_XFF_H
#define KRAIT_XFF_H

#include <stddef.h>

#include "http.h"
#include "proxyproto.h"

/* Room for an address as text: the peer (c->peer) and the answer. */
#define KRAIT__XFF_ADDR 48
/* At most this many hops of X-Forwarded-For are read, from the right. A chain of trusted
 * proxies longer than that (never a real deployment) resolves to the peer itself. */
#define KRAIT__XFF_MAX_HOPS 64

/* The client's address for a request from peer (an address as inet_ntop writes it, or
 * "unix") carrying the header fields hdr[0..nhdr): when the peer is trusted (trust_unix for
 * "unix", else one of nets[0..nnets)), the X-Forwarded-For lines (any case of the name) are
 * taken as one list joined by commas, read from the right; trusted hops are skipped and the
 * first untrusted one is the client, an invalid one (a port, a zone id, text) gives the peer.
 * Anything else: the peer. Written to out as a NUL-terminated string (the peer cut to fit if
 * it is longer). Returns 1 when out differs from peer, else 0. The caller skips this for a
 * connection that began with a PROXY header (its client is final). */
int krait__xff_client(const krait__cidr *nets, size_t nnets, int trust_unix, const char *peer,
                      const krait__header *hdr, size_t nhdr, char out[KRAIT__XFF_ADDR]);

/* Parse an address as Python's ipaddress.ip_address does (after krait/_proxy.py's
 * parse_address: surrounding whitespace and one pair of brackets removed, a zone id refused).
 * *family gets 4 or 6, addr the bytes (network order). Returns 0, or -1 when invalid. */
int krait__xff_parse_addr(const char *p, size_t n, int *family, unsigned char addr[16]);

#endif
