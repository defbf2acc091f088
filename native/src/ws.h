/* WebSocket (RFC 6455) handshake helpers and frame codec, sans-IO.
 * Implemented in ws.c; tested by tests/native/test_ws.c; fuzzed by tests/fuzz/fuzz_ws.c.
 * No syscalls; no allocation (callers own every buffer). */
#ifndef KRAIT_WS_H
#define KRAIT_WS_H

#include <stddef.h>
#include <stdint.h>

#define KRAIT__WS_ACCEPT_LEN 28  /* base64 of a SHA-1 digest */

/* Sec-WebSocket-Accept for a client key (RFC 6455 §4.2.2): base64(SHA-1(key + GUID)).
 * Writes KRAIT__WS_ACCEPT_LEN bytes plus NUL. Returns 0, or -1 when the key is not the base64
 * of exactly 16 bytes (the handshake must then be refused with 400). */
int krait__ws_accept(const char *key, size_t key_len, char out[KRAIT__WS_ACCEPT_LEN + 1]);

enum {
    KRAIT__WS_CONT = 0x0, KRAIT__WS_TEXT = 0x1, KRAIT__WS_BINARY = 0x2,
    KRAIT__WS_CLOSE = 0x8, KRAIT__WS_PING = 0x9, KRAIT__WS_PONG = 0xA
};

typedef struct {
    int fin;
    int rsv;              /* the three RSV bits (bit 0x4 = RSV1) */
    int opcode;
    int masked;
    uint8_t mask[4];
    uint64_t payload_len;
    size_t header_len;    /* 2..14 */
} krait__ws_frame;

/* Parse a frame header from buf[0..len). Returns header length, KRAIT__NEED_MORE (-2) or
 * -1 with *close_code set: 1002 for a reserved opcode, a fragmented or >125-byte control frame,
 * a non-minimal length encoding or a 64-bit length with the top bit set, or an unmasked frame
 * when require_mask; RSV bits not allowed by allowed_rsv → 1002; payload_len > max_payload
 * → 1009. */
int krait__ws_parse_header(const uint8_t *buf, size_t len, int require_mask, int allowed_rsv,
                           uint64_t max_payload, krait__ws_frame *f, int *close_code);

/* XOR data[0..len) in place with the mask, `offset` being the position of data[0] within the
 * frame payload (so payloads can be unmasked in pieces). */
void krait__ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset);

/* Write a server frame header (never masked) for a payload of len bytes. Returns the header
 * length (2, 4 or 10); out must have 10 bytes. rsv1 sets RSV1 (permessage-deflate). */
size_t krait__ws_write_header(uint8_t *out, int fin, int rsv1, int opcode, uint64_t len);

/* Incremental UTF-8 validator (RFC 3629: no overlongs, no surrogates, max U+10FFFF).
 * Zero-initialise; feed pieces; krait__utf8_feed returns 0 if still valid, -1 at the first
 * invalid byte. krait__utf8_complete returns 1 if the input so far ends on a character
 * boundary. */
typedef struct { uint32_t state; } krait__utf8;
int krait__utf8_feed(krait__utf8 *v, const uint8_t *data, size_t len);
int krait__utf8_complete(const krait__utf8 *v);

/* Validate a close frame payload (RFC 6455 §5.5.1, §7.4): empty is fine; 1 byte is invalid;
 * otherwise the code must be one a peer may send (1000-1003, 1007-1011, 3000-4999) and the
 * reason valid UTF-8. Returns 0 valid, -1 invalid (answer with 1002, or 1007 for bad UTF-8
 * via *close_code). */
int krait__ws_check_close(const uint8_t *payload, size_t len, int *close_code);

#endif
