/* WebSocket (RFC 6455) pieces that need no I/O: the Sec-WebSocket-Accept computation, frame
 * header parsing and writing, payload unmasking, incremental UTF-8 validation and close-payload
 * checks. Message reassembly, ping/pong, the close handshake and all socket work belong to
 * conn.c; permessage-deflate is not implemented here (only the RSV1 bit is passed through).
 * No syscalls and no allocation: every buffer belongs to the caller. */
#include "ws.h"

#include <string.h>

#include <openssl/evp.h>

#ifndef KRAIT__NEED_MORE
#define KRAIT__NEED_MORE (-2) /* same value as in http.h; ws.h refers to it by name */
#endif

/* RFC 6455 §1.3 / §4.2.2: the GUID appended to the client's key. */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#define WS_KEY_LEN 24 /* base64 of 16 bytes: 22 significant characters + "==" */

static int is_b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

int krait__ws_accept(const char *key, size_t key_len, char out[KRAIT__WS_ACCEPT_LEN + 1])
{
    /* RFC 6455 §4.2.1 item 5: the key must be base64 (RFC 4648 §4, padded) that decodes to
     * exactly 16 bytes, which is always 24 characters ending in "==". EVP_DecodeBlock alone
     * cannot tell us that: it skips leading and trailing whitespace, accepts '=' in the middle,
     * and reports 18 bytes both for "...==" (16 bytes) and "...=" (17 bytes) because it counts
     * padding as zero bytes. So the shape is checked here first, and the decoder's answer of 18
     * (16 + 2 padding) is only a second opinion. Non-zero bits in the last character's unused
     * low nibble are tolerated, as RFC 4648 §3.5 allows and common decoders do: the key is only
     * ever hashed as sent, never used decoded. */
    if (key == NULL || key_len != WS_KEY_LEN)
        return -1;
    const unsigned char *k = (const unsigned char *)key;
    for (size_t i = 0; i < WS_KEY_LEN - 2; i++)
        if (!is_b64_char(k[i]))
            return -1;
    if (k[WS_KEY_LEN - 2] != '=' || k[WS_KEY_LEN - 1] != '=')
        return -1;
    unsigned char decoded[WS_KEY_LEN / 4 * 3];
    if (EVP_DecodeBlock(decoded, k, WS_KEY_LEN) != (int)sizeof decoded)
        return -1;

    /* RFC 6455 §4.2.2 item 5.4: base64(SHA-1(key as sent + GUID)). */
    unsigned char joined[WS_KEY_LEN + sizeof ws_guid - 1];
    memcpy(joined, key, WS_KEY_LEN);
    memcpy(joined + WS_KEY_LEN, ws_guid, sizeof ws_guid - 1);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    /* A libcrypto failure (out of memory, SHA-1 unavailable) also yields -1: we cannot answer
     * the handshake, and refusing it is the only safe reply. */
    if (EVP_Digest(joined, sizeof joined, digest, &digest_len, EVP_sha1(), NULL) != 1 ||
        digest_len != 20)
        return -1;
    if (EVP_EncodeBlock((unsigned char *)out, digest, 20) != KRAIT__WS_ACCEPT_LEN)
        return -1;
    out[KRAIT__WS_ACCEPT_LEN] = '\0';
    return 0;
}

static int ws_fail(int *close_code, int code)
{
    *close_code = code;
    return -1;
}

int krait__ws_parse_header(const uint8_t *buf, size_t len, int require_mask, int allowed_rsv,
                           uint64_t max_payload, krait__ws_frame *f, int *close_code)
{
    /* Every check runs as soon as the bytes it needs are present, and in the order the bytes
     * arrive, so a bad frame is refused early and the answer never depends on how the stream
     * was split: a growing buffer gives NEED_MORE and then always the same final result. */
    if (len < 1)
        return KRAIT__NEED_MORE;
    int fin = buf[0] >> 7;
    int rsv = (buf[0] >> 4) & 0x7;
    int opcode = buf[0] & 0xF;

    /* RFC 6455 §5.2: a non-zero RSV bit that no negotiated extension defines fails the
     * connection. The caller says which ones an extension defines (RSV1 for deflate). */
    if (rsv & ~allowed_rsv)
        return ws_fail(close_code, 1002);
    /* RFC 6455 §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved; receiving one fails the
     * connection. */
    if ((opcode >= 0x3 && opcode <= 0x7) || opcode >= 0xB)
        return ws_fail(close_code, 1002);
    int control = (opcode & 0x8) != 0;
    /* RFC 6455 §5.5: control frames must not be fragmented. */
    if (control && !fin)
        return ws_fail(close_code, 1002);

    if (len < 2)
        return KRAIT__NEED_MORE;
    int masked = buf[1] >> 7;
    unsigned len7 = buf[1] & 0x7F;
    /* RFC 6455 §5.1: a server must close the connection on an unmasked client frame. */
    if (require_mask && !masked)
        return ws_fail(close_code, 1002);
    /* RFC 6455 §5.5: control frames carry at most 125 bytes, so their length is always in the
     * 7-bit field; 126 or 127 there is already an error. */
    if (control && len7 > 125)
        return ws_fail(close_code, 1002);

    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (len < 2 + ext)
        return KRAIT__NEED_MORE;
    uint64_t payload_len = len7;
    if (ext) {
        payload_len = 0;
        for (size_t i = 0; i < ext; i++)
            payload_len = payload_len << 8 | buf[2 + i];
        /* RFC 6455 §5.2: "the most significant bit MUST be 0" in the 64-bit form, and "the
         * minimal number of bytes MUST be used to encode the length": 126 is only for
         * 126..65535 and 127 only for 65536 and up. */
        if (ext == 8 && (payload_len >> 63))
            return ws_fail(close_code, 1002);
        if (payload_len < (ext == 2 ? 126u : 65536u))
            return ws_fail(close_code, 1002);
    }
    /* RFC 6455 §7.4.1: 1009 is for a message too big to process. Refused from the header so
     * that no byte of an oversized payload has to be read. */
    if (payload_len > max_payload)
        return ws_fail(close_code, 1009);

    size_t header_len = 2 + ext + (masked ? 4 : 0);
    if (len < header_len)
        return KRAIT__NEED_MORE;

    f->fin = fin;
    f->rsv = rsv;
    f->opcode = opcode;
    f->masked = masked;
    if (masked)
        memcpy(f->mask, buf + 2 + ext, 4);
    else
        memset(f->mask, 0, 4);
    f->payload_len = payload_len;
    f->header_len = header_len;
    return (int)header_len;
}

void krait__ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset)
{
    /* RFC 6455 §5.3: payload byte i is XORed with mask[i % 4], i counted from the start of the
     * frame payload. Rotate the key so that key[0] applies to data[0]: with offset 5 the first
     * byte uses mask[1], so key = mask[1] mask[2] mask[3] mask[0]. Then work eight bytes at a
     * time (memcpy keeps unaligned access well-defined) and finish byte by byte. */
    uint8_t key[8];
    for (size_t i = 0; i < 8; i++)
        key[i] = mask[(offset + i) & 3];
    uint64_t key64;
    memcpy(&key64, key, 8);

    size_t i = 0;
    for (; len - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, data + i, 8);
        w ^= key64;
        memcpy(data + i, &w, 8);
    }
    for (; i < len; i++)
        data[i] ^= key[i & 7];
}

size_t krait__ws_write_header(uint8_t *out, int fin, int rsv1, int opcode, uint64_t len)
{
    /* RFC 6455 §5.1: a server never masks, so the MASK bit stays 0 and there is no key. §5.2:
     * always the minimal length encoding. len is a buffer length, so it is below 2^63 as the
     * 64-bit form requires. */
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0xF));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (size_t i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

/* Validator state: 0 at a character boundary; UTF8_REJECT (sticky) once invalid; otherwise
 * the number of continuation bytes still expected in bits 0-7 and the range allowed for the
 * next one in bits 8-15 (lowest) and 16-23 (highest). Only the first continuation byte after
 * the lead ever has a range narrower than 80..BF, which is what rules out overlongs,
 * surrogates and values past U+10FFFF at the earliest possible byte (RFC 3629 §4 syntax):
 *   E0 A0..BF   ED 80..9F   F0 90..BF   F4 80..8F
 * Example: ED A0 fails on A0, because ED A0 80 would be U+D800, a surrogate. */
#define UTF8_REJECT UINT32_MAX

static uint32_t utf8_expect(uint32_t need, uint32_t lo, uint32_t hi)
{
    return need | lo << 8 | hi << 16;
}

static uint32_t utf8_lead(uint8_t c)
{
    if (c < 0x80)
        return 0;
    if (c >= 0xC2 && c <= 0xDF)
        return utf8_expect(1, 0x80, 0xBF);
    if (c == 0xE0)
        return utf8_expect(2, 0xA0, 0xBF);
    if (c == 0xED)
        return utf8_expect(2, 0x80, 0x9F);
    if (c >= 0xE1 && c <= 0xEF)
        return utf8_expect(2, 0x80, 0xBF);
    if (c == 0xF0)
        return utf8_expect(3, 0x90, 0xBF);
    if (c >= 0xF1 && c <= 0xF3)
        return utf8_expect(3, 0x80, 0xBF);
    if (c == 0xF4)
        return utf8_expect(3, 0x80, 0x8F);
    /* 80..BF (continuation without a lead), C0 and C1 (always overlong), F5..FF (past
     * U+10FFFF or never defined). */
    return UTF8_REJECT;
}

int krait__utf8_feed(krait__utf8 *v, const uint8_t *data, size_t len)
{
    uint32_t s = v->state;
    if (s == UTF8_REJECT)
        return -1;
    size_t i = 0;
    while (i < len) {
        if (s == 0) {
            /* Text is mostly ASCII: skip eight ASCII bytes at a time while between
             * characters. */
            while (len - i >= 8) {
                uint64_t w;
                memcpy(&w, data + i, 8);
                if (w & UINT64_C(0x8080808080808080))
                    break;
                i += 8;
            }
            if (i == len)
                break;
            s = utf8_lead(data[i++]);
            if (s == UTF8_REJECT)
                break;
            continue;
        }
        uint8_t c = data[i++];
        uint32_t lo = (s >> 8) & 0xFF, hi = (s >> 16) & 0xFF;
        if (c < lo || c > hi) {
            s = UTF8_REJECT;
            break;
        }
        uint32_t need = (s & 0xFF) - 1;
        s = need ? utf8_expect(need, 0x80, 0xBF) : 0;
    }
    v->state = s;
    return s == UTF8_REJECT ? -1 : 0;
}

int krait__utf8_complete(const krait__utf8 *v)
{
    return v->state == 0;
}

int krait__ws_check_close(const uint8_t *payload, size_t len, int *close_code)
{
    /* RFC 6455 §5.5.1: the body is empty, or a 2-byte code followed by a UTF-8 reason. */
    if (len == 0)
        return 0;
    if (len == 1)
        return ws_fail(close_code, 1002);
    unsigned code = (unsigned)payload[0] << 8 | payload[1];
    /* RFC 6455 §7.4.1/§7.4.2: 1004 is reserved; 1005, 1006 and 1015 must never be sent; below
     * 1000 and 1016-2999 are unassigned or reserved for future RFCs (1012-1014 included, which
     * this contract keeps out); 3000-4999 belong to libraries and applications; 5000 and up
     * are not defined. */
    int allowed = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
                  (code >= 3000 && code <= 4999);
    if (!allowed)
        return ws_fail(close_code, 1002);
    /* RFC 6455 §5.5.1 and §8.1: the reason is UTF-8; invalid text fails with 1007. */
    krait__utf8 v = {0};
    if (krait__utf8_feed(&v, payload + 2, len - 2) != 0 || !krait__utf8_complete(&v))
        return ws_fail(close_code, 1007);
    return 0;
}
