/* HTTP/1.1 request-head parser and chunked body decoder (RFC 9112), sans-IO.
 * No syscalls, no allocation: every slice points into the caller's buffer.
 * Implemented in http.c; used by request.c and body.c; unit-tested by tests/native/test_http.c and
 * fuzzed by tests/fuzz/fuzz_http.c and tests/fuzz/fuzz_chunked.c. */
#ifndef KRAIT_HTTP_H
#define KRAIT_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define KRAIT__NEED_MORE (-2)
#define KRAIT__MALFORMED (-1)

typedef struct {
    const char *name;   /* as sent (not lower-cased), never NUL-terminated */
    size_t name_len;
    const char *value;  /* leading/trailing SP/HTAB trimmed (RFC 9110 §5.5) */
    size_t value_len;
} krait__header;

typedef struct {
    size_t max_line;    /* request line bytes, CRLF excluded; over it: 414 */
    size_t max_head;    /* whole head bytes incl. request line and final CRLF; over it: 431 */
    size_t max_headers; /* header field count; over it: 431 (also bounded by hdr_cap) */
} krait__http_limits;

typedef struct {
    const char *method; size_t method_len;
    const char *target; size_t target_len;   /* request-target exactly as sent */
    int version_major;                       /* 1 for HTTP/1.x; other values only with 505 */
    int version_minor;
    size_t nheaders;                         /* number of entries filled in hdr[] */
    int error_status;                        /* on KRAIT__MALFORMED: 400, 414, 431, 505 */
} krait__req_head;

/* Parse one request head from buf[0..len).
 * Leading empty lines (CRLF or LF) before the request line are skipped (RFC 9112 §2.2).
 * Accepts CRLF line endings and bare LF (RFC 9112 §2.2 allows a recipient to); a bare CR
 * anywhere, a NUL, any control character other than HTAB in a field value, obs-fold
 * (a line starting with SP/HTAB), whitespace between a field name and ':', an empty or
 * non-token field name, a non-token method, a target with SP/controls, or a malformed
 * version is 400.
 * Version: "HTTP/" DIGIT "." DIGIT; 1.0 and 1.1 accepted, a higher 1.x is processed as 1.1
 * (version_minor reads 1, RFC 9110 §2.5); any other major version (HTTP/2.0, HTTP/0.9,
 * HTTP/3.0) gives 505. The HTTP/2 preface "PRI * HTTP/2.0" gives 505.
 * Returns the number of bytes the head occupies (through the empty line), KRAIT__NEED_MORE when
 * the head is incomplete and still within limits, or KRAIT__MALFORMED with out->error_status set:
 * 414 when the request line is longer than lim->max_line (decided as soon as that many bytes of
 * the line have arrived without its end), 431 when the head exceeds lim->max_head or the number
 * of fields exceeds min(lim->max_headers, hdr_cap).
 * Never reads outside buf[0..len). Deterministic: the same bytes give the same answer whether
 * they arrive whole or in pieces.
 * Details (http.c): leading empty lines count towards max_head and are included in the returned
 * length. The request line is split on single SPs only. The target may hold obs-text (bytes
 * 0x80-0xFF); only SP, CTLs and DEL make it 400. 414 is decided when byte max_line + 1 of the
 * line arrives and is not CR/LF; 431 for the field count on the first byte of the surplus field
 * line; 505 when the request line's LF arrives (later bytes are not examined). Each decision
 * depends only on the bytes up to the index where it is taken, so a prefix answers either
 * NEED_MORE or the whole input's answer. On NEED_MORE, *out and hdr[] hold nothing usable.
 * lim->max_head is taken as at most INT_MAX, so the return value always fits. */
int krait__http_parse_head(const char *buf, size_t len, const krait__http_limits *lim,
                           krait__req_head *out, krait__header *hdr, size_t hdr_cap);

/* Progress of krait__http_parse_head_resume() through one head. Private fields. */
typedef struct {
    int stage;
    size_t pos;
    size_t line_start;
    size_t nfields;
} krait__http_resume;

/* Same answers as krait__http_parse_head(buf, len, lim, out, hdr, hdr_cap), but for a head that
 * arrives in many reads it costs time linear in the head instead of quadratic: each call scans
 * only the bytes added since the last one (plus the request line again while it is incomplete,
 * plus one full pass when a head that was suspended inside its field lines completes).
 * Zero *rs before the first call for each head; keep it between calls. Between calls buf[0..len)
 * may only grow by appending (the buffer may move in memory), with the same lim and hdr_cap.
 * *rs is updated only on KRAIT__NEED_MORE; after any other answer zero it for the next head. */
int krait__http_parse_head_resume(const char *buf, size_t len, const krait__http_limits *lim,
                                  krait__req_head *out, krait__header *hdr, size_t hdr_cap,
                                  krait__http_resume *rs);

/* Framing and connection semantics derived from a parsed head (RFC 9112 §6, §9). */
typedef struct {
    int64_t content_length;  /* -1 when absent */
    int chunked;             /* Transfer-Encoding: chunked (the only coding we accept) */
    int keep_alive;          /* 1.1: unless "close" token; 1.0: only with "keep-alive" token */
    int expect_continue;     /* Expect: 100-continue (case-insensitive) */
    int upgrade_websocket;   /* Upgrade has token "websocket" (any case) and Connection has
                                token "upgrade" (any case) */
    const char *host; size_t host_len;  /* Host value, NULL if absent */
    int error_status;        /* 0, or 400 / 417 / 501 */
} krait__req_info;

/* Analyse the headers. error_status is set (and the function returns -1) when:
 *  - both Content-Length and Transfer-Encoding are present                     → 400
 *  - Content-Length not 1*DIGIT, overflowing, or several differing values
 *    (as separate fields or as a comma list "5, 5" is allowed only if equal)  → 400
 *  - Transfer-Encoding other than exactly the single coding "chunked"
 *    (case-insensitive; "gzip, chunked", "identity", "chunked, chunked")      → 501,
 *    except Transfer-Encoding in an HTTP/1.0 request                          → 400
 *  - more than one Host field, or no Host in HTTP/1.1 (RFC 9112 §3.2)          → 400
 *    (also a Host value with a byte outside RFC 3986's host [":" port] alphabet:
 *    ALPHA DIGIT - . _ ~ % ! $ & ' ( ) * + , ; = : [ ] — RFC 9112 §3.2, invalid value)
 *  - Expect with any value other than 100-continue                             → 417
 * Returns 0 on success. Connection tokens are comma-separated, case-insensitive.
 * When several apply, 400 beats 501 beats 417. On -1 the other fields are still filled in as
 * far as they could be, but the request must be refused. Content-Length list elements must
 * not be empty ("5," is 400); empty Transfer-Encoding and Connection elements are skipped.
 * In HTTP/1.0, Expect: 100-continue is ignored (expect_continue stays 0, RFC 9110 §10.1.1). */
int krait__http_analyze(const krait__req_head *head, const krait__header *hdr,
                        krait__req_info *info);

/* Chunked body decoder (RFC 9112 §7.1). Zero-initialise before the first call. */
typedef struct {
    int state;               /* private */
    uint64_t remaining;      /* private: bytes left in the current chunk */
    size_t line_len;         /* private: bytes of the current size/trailer line seen */
    size_t trailer_bytes;    /* private: trailer section size so far */
    uint64_t total;          /* decoded body bytes so far */
} krait__chunked;

#define KRAIT__CHUNK_LINE_MAX 1024     /* chunk-size line incl. extensions */
#define KRAIT__CHUNK_TRAILER_MAX 8192  /* whole trailer section */

/* Decode from in[0..in_len) into out[0..out_cap). out may equal in (in-place decoding: output
 * never overtakes input); more generally out may point anywhere at or before in within the same
 * buffer, as when resuming in place with in = buf + consumed so far, out = buf + produced so
 * far. *consumed and *produced are set to the bytes read and written.
 * Returns 1 when the body and its trailer section are complete (*consumed then ends just after
 * the final CRLF; bytes after it belong to the next request), 0 when more input is needed
 * (all of in was consumed or out is full), KRAIT__MALFORMED on a bad chunk size (not hex,
 * empty, > 2^62), a size line over KRAIT__CHUNK_LINE_MAX, missing CRLF after chunk data,
 * a bare CR, a malformed trailer field, or trailers over KRAIT__CHUNK_TRAILER_MAX.
 * Chunk extensions (";name=value" or ";name=\"quoted\"") are accepted and ignored.
 * Trailer fields are validated like header fields and discarded. Every line (size line, the
 * end of chunk data, trailer lines) must end in CRLF: RFC 9112 §2.2's bare-LF allowance is for
 * the start line and header fields only, so a bare LF here is KRAIT__MALFORMED. BWS is accepted around ';' and '=' in extensions and before the
 * size line's end. With out full, the decoder still consumes non-data bytes (CRLF after the
 * data, the next size line, the trailer section) and can return 1. Trailer bytes are counted
 * from just after the last-chunk line through the final CRLF. After 1 or KRAIT__MALFORMED,
 * further calls repeat that answer and consume nothing. st->total is capped by nothing here:
 * the body-size limit (413) is the caller's. */
int krait__chunked_decode(krait__chunked *st, const char *in, size_t in_len, size_t *consumed,
                          char *out, size_t out_cap, size_t *produced);

#endif
