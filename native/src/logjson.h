/* The access log's JSON line (docs/design.md, "Access log as JSON lines"), sans-IO: escaping
 * bytes from the network into a JSON string, and rendering the two halves of a line (the
 * request's fields when it is parsed, the answer's when it has been sent). Implemented in
 * logjson.c; tested by tests/native/test_logjson.c; fuzzed by tests/fuzz/fuzz_logjson.c. No
 * syscalls, no allocation. */
#ifndef KRAIT_LOGJSON_H
#define KRAIT_LOGJSON_H

#include <stddef.h>
#include <stdint.h>

/* Each string field is cut so that its escaped text (quotes included) fits these bytes. */
#define KRAIT__LOGJSON_METHOD_MAX 34
#define KRAIT__LOGJSON_PATH_MAX 1026
#define KRAIT__LOGJSON_HOST_MAX 194
#define KRAIT__LOGJSON_REFERER_MAX 258
#define KRAIT__LOGJSON_UA_MAX 258
#define KRAIT__LOGJSON_REMOTE_MAX 66
#define KRAIT__LOGJSON_TLS_MAX 34
/* The longest head krait__logjson_head_render makes (the fields at their caps plus the keys,
 * time and version); the caller's buffer has at least this room. */
#define KRAIT__LOGJSON_HEAD_MAX 2176
/* The longest tail, newline included (an id of 128 characters and every number at its
 * widest). A whole line is at most HEAD_MAX + TAIL_MAX bytes: under PIPE_BUF (4096). */
#define KRAIT__LOGJSON_TAIL_MAX 320
#define KRAIT__LOGJSON_ID_MAX 128

/* A string field: p NULL is JSON null (an absent header, no request line, plain TCP). */
typedef struct {
    const char *p;
    size_t n;
} krait__logjson_str;

typedef struct {
    int64_t time_ms;          /* when the request began, Unix time in milliseconds */
    /* remote: the client (behind trusted proxies, X-Forwarded-For resolved); peer: the
     * connection's own address when it differs, else p NULL (null). */
    krait__logjson_str remote, peer, method, path, host, referer, ua, tls;
    int version_minor;        /* "HTTP/1.<minor>", or -1 for null (no request line) */
} krait__logjson_head;

typedef struct {
    const char *id;           /* the request id, id_len bytes; written only when
                                 krait__request_id_ok, else null */
    size_t id_len;
    int status;
    uint64_t bytes;
    int64_t duration_ns;      /* written as seconds with six decimals; below 0 counts as 0 */
    int loop;
    int worker;               /* slot, or -1 for null */
    int worker_pid;           /* 0 for null */
    int truncated;            /* a field of the head was cut */
} krait__logjson_tail;

/* Escape src[0..n) as the inside of a JSON string into dst, writing at most cap bytes and never
 * cutting an escape or a UTF-8 sequence in two. Valid UTF-8 passes through, except the C0 and
 * C1 controls and DEL, which become \u00XX; '"' becomes \"; each byte of an invalid UTF-8
 * sequence becomes the text \xHH (two hex digits, lower case, written \\xHH in JSON), and a
 * backslash the text \x5c, so that in the decoded value "\x" always starts a byte. The result
 * is valid JSON and valid UTF-8 whatever the input, and the input can be recovered from it
 * (decode, encode as UTF-8, replace each \xHH by byte HH). Returns the bytes written; *used
 * (may be NULL) gets the input bytes they stand for (< n: cut). */
size_t krait__json_escape(char *dst, size_t cap, const char *src, size_t n, size_t *used);

/* The head of a line: '{' and the fields time, remote, peer, method, path, version, host,
 * referer, ua, tls, each followed by ','. cap must be at least KRAIT__LOGJSON_HEAD_MAX. Sets *cut when
 * a string was cut to its cap. Returns the bytes written. */
size_t krait__logjson_head_render(char *dst, size_t cap, const krait__logjson_head *h, int *cut);

/* The tail: the fields id, status, bytes, duration, loop, worker, worker_pid, truncated, then
 * "}\n". cap must be at least KRAIT__LOGJSON_TAIL_MAX. Returns the bytes written. */
size_t krait__logjson_tail_render(char *dst, size_t cap, const krait__logjson_tail *t);

/* A request id the log takes: 1 to 128 characters of [A-Za-z0-9-_.:+/=] (those the workers
 * accept from a proxy and make themselves). */
int krait__request_id_ok(const char *p, size_t n);

#endif
