/* Worker protocol: the length-prefixed binary frames exchanged between the core and a Python
 * worker over one socketpair per worker, sans-IO. Mirrored by krait/protocol.py (the two are
 * round-trip tested against each other). Implemented in ipc.c; tested by
 * tests/native/test_ipc.c; fuzzed by tests/fuzz/fuzz_ipc.c.
 *
 * Wire format (all integers little-endian):
 *   frame  := u32 len | u8 type | u32 id | payload      (len counts type + id + payload)
 *   str    := u32 n | n bytes
 *   pairs  := u16 count | (str name, str value) * count
 *
 *   REQUEST  (1, core → worker), id = request id chosen by the core:
 *     u8 flags (KRAIT__REQ_*) | i32 route (index in krait.config.routes, -1 = none/default)
 *     | str method | str path (percent-decoded) | str query (raw, without '?')
 *     | str version ("HTTP/1.1") | str file (absolute path of the resolved target file, or "")
 *     | str remote_addr | u16 remote_port
 *     | str server_addr | u16 server_port (the connection's own end, the address and port the
 *       client reached: "unix" and 0 on a Unix socket; a PROXY header changes remote_addr only)
 *     | pairs params (URL parameters)
 *     | pairs headers (names lower-cased, in arrival order, repeats kept)
 *     | str body (the bytes, or with KRAIT__REQ_BODY_FILE the path of the spooled body file)
 *   RESPONSE (2, worker → core), id = the request's id:
 *     u16 status | u8 body_kind (KRAIT__BODY_*) | pairs headers | str body
 *     (inline bytes; a file path for KRAIT__BODY_FILE; empty for KRAIT__BODY_STREAM)
 *   CHUNK    (3, worker → core): str data — one piece of a streamed body
 *   END      (4, worker → core): empty — the streamed body is complete
 *   WS_MESSAGE (5, both ways), id = the WebSocket connection's id (the id of the handshake
 *     request the worker accepted with a 101): u8 kind (1 text, 2 binary) | str data
 *   ROUTE_ANSWER (7, worker → core), id = the request's id: i32 route | u32 allow
 *     | str target | str params (pairs, as in REQUEST) — the worker's answer to a REQUEST
 *     with KRAIT__REQ_ROUTE, which asks only which route takes (verb, path): the frame's route
 *     field then holds the verb (KRAIT_VERB_*) and method is empty. The core matches regex
 *     routes in no other way (a site's regex never runs in its loop).
 *   CACHE_ANSWER (11, worker → core), id = the request's id: u32 flags (KRAIT_CACHE_*) — the
 *     worker's answer to a REQUEST with KRAIT__REQ_CACHE, which asks only which cache rules
 *     (krait.config.cache_*) apply to a file: the frame's path is the file's name relative to
 *     the site root (no leading '/'), method is empty, route is 0. The flags must be a
 *     combination the rules can give: NO_STORE alone, or at most one of PRIVATE and PUBLIC
 *     with or without LONG; anything else is malformed. Used only when a cache rule is a
 *     regex the core does not evaluate itself (krait_server_set_cache_questions).
 *   WS_SUBSCRIBE (8) / WS_UNSUBSCRIBE (9) (worker → core), id = a WebSocket connection that
 *     worker accepted: str channel — the connection receives (no longer receives) what is
 *     published on the channel.
 *   PUBLISH (10, worker → core), id = 0: u8 kind (1 text, 2 binary) | str channel | str data —
 *     one message for every connection subscribed to the channel, whichever worker owns it.
 *   WS_CLOSE   (6, both ways): u16 code | str reason. Core → worker: the connection ended
 *     (the client's close code, 1005 when it sent none, 1006 when it vanished, 1001 on server
 *     stop); worker → core: the controller closes it (the core sends a close frame).
 * The worker never sends Date, Server, Content-Length, Transfer-Encoding or Connection: the
 * core owns framing. Every frame is at most KRAIT__IPC_MAX_FRAME bytes including the 4-byte
 * length; bigger bodies are streamed as chunks. */
#ifndef KRAIT_IPC_H
#define KRAIT_IPC_H

#include <stddef.h>
#include <stdint.h>

#define KRAIT__IPC_MAX_FRAME (64u * 1024u * 1024u)
#define KRAIT__IPC_HEADER 9u  /* u32 len + u8 type + u32 id */

enum { KRAIT__IPC_REQUEST = 1, KRAIT__IPC_RESPONSE = 2, KRAIT__IPC_CHUNK = 3, KRAIT__IPC_END = 4,
       KRAIT__IPC_WS_MESSAGE = 5, KRAIT__IPC_WS_CLOSE = 6, KRAIT__IPC_ROUTE_ANSWER = 7,
       KRAIT__IPC_WS_SUBSCRIBE = 8, KRAIT__IPC_WS_UNSUBSCRIBE = 9, KRAIT__IPC_PUBLISH = 10,
       KRAIT__IPC_CACHE_ANSWER = 11 };
/* KRAIT__REQ_PROXIED: a trusted proxy relayed the connection with a PROXY protocol header
 * (--proxy-protocol): remote_addr is the client it named (or, when it named none, the proxy's),
 * and the request's X-Forwarded-* and X-Request-ID are the client's, not a proxy's word. */
enum { KRAIT__REQ_BODY_FILE = 1, KRAIT__REQ_WEBSOCKET = 2, KRAIT__REQ_TLS = 4,
       KRAIT__REQ_ROUTE = 8, KRAIT__REQ_CACHE = 16, KRAIT__REQ_PROXIED = 32 };
enum { KRAIT__BODY_INLINE = 0, KRAIT__BODY_FILE = 1, KRAIT__BODY_STREAM = 2 };

typedef struct { const char *p; size_t n; } krait__slice;

typedef struct {
    uint32_t id;
    uint8_t flags;
    int32_t route;
    krait__slice method, path, query, version, file, remote_addr;
    uint16_t remote_port;
    krait__slice server_addr;
    uint16_t server_port;
    const krait__slice *params;   size_t nparams;   /* 2*nparams slices: name, value, ... */
    const krait__slice *headers;  size_t nheaders;  /* 2*nheaders slices: name, value, ... */
    krait__slice body;
} krait__ipc_request;

/* Size the encoded request frame will take. */
size_t krait__ipc_request_size(const krait__ipc_request *r);
/* Encode into out[0..cap); returns the bytes written, or -1 if cap is too small or the frame
 * would exceed KRAIT__IPC_MAX_FRAME or a count exceeds 65535. Header names are written
 * lower-cased. */
long krait__ipc_encode_request(const krait__ipc_request *r, uint8_t *out, size_t cap);

typedef struct {
    uint8_t type;
    uint32_t id;
    /* RESPONSE */
    uint16_t status;
    uint8_t body_kind;
    size_t nheaders;
    const uint8_t *headers_at;  /* start of the first header pair; walk with
                                   krait__ipc_next_pair */
    krait__slice body;          /* RESPONSE body, CHUNK data, WS_MESSAGE data, WS_CLOSE reason */
    /* WS_MESSAGE: body_kind is the kind (1 text, 2 binary); WS_CLOSE: status is the code. */
    /* ROUTE_ANSWER: the route index (-1: none), the verbs the path takes, the target
     * (body) and the URL parameters' pairs encoding (params). WS_SUBSCRIBE/UNSUBSCRIBE: the
     * channel (body). PUBLISH: the kind (body_kind), the channel (params), the data (body).
     * CACHE_ANSWER: the KRAIT_CACHE_* flags (allow). */
    int32_t route;
    uint32_t allow;
    krait__slice params;
} krait__ipc_frame;

/* Encode a core → worker WS_MESSAGE (kind 1/2) or WS_CLOSE (arg = code) frame into out.
 * Returns the bytes written or -1 when cap is too small or the frame too large. */
long krait__ipc_encode_ws(uint8_t type, uint32_t id, unsigned arg, const char *data, size_t len,
                          uint8_t *out, size_t cap);

/* Parse one worker → core frame from buf[0..len). Returns the frame's total length,
 * KRAIT__IPC_NEED_MORE (-2), or -1 when malformed (unknown type, length over
 * KRAIT__IPC_MAX_FRAME, a string running past the frame, trailing bytes, status outside
 * 100..999, unknown body kind, cache flags no rule can give). Slices point into buf. */
#define KRAIT__IPC_NEED_MORE (-2)
long krait__ipc_parse(const uint8_t *buf, size_t len, krait__ipc_frame *f);

/* Iterate header pairs of a parsed RESPONSE: *at starts at f->headers_at; each call fills
 * name and value and advances *at. Only valid for the f->nheaders pairs krait__ipc_parse
 * has already bounds-checked. */
void krait__ipc_next_pair(const uint8_t **at, krait__slice *name, krait__slice *value);

#endif
