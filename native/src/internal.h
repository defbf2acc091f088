/* Private structures shared by the core's I/O files (server.c, static.c, tables.c, worker.c).
 * cffi never reads this header; Python sees only native/include/krait.h. */
#ifndef KRAIT_INTERNAL_H
#define KRAIT_INTERNAL_H

#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

struct ssl_st;
struct ssl_ctx_st;

#include "cache.h"
#include "http.h"
#include "krait.h"
#include "ws.h"

#define KRAIT__MAX_HEADERS_CAP 1000
#define KRAIT__MAX_RANGES 16
#define KRAIT__MAX_SEGS (2 * KRAIT__MAX_RANGES + 2)
#define KRAIT__PATH_MAX 4096

enum obj_kind { OBJ_LISTENER = 1, OBJ_CONN, OBJ_SIGNAL, OBJ_WORKER, OBJ_WAKE };

/* Every object registered with epoll starts with its kind, so one pointer tag is enough. */
typedef struct { int kind; } krait__obj;

/* An intrusive doubly linked list node; timer lists and queues use it. */
typedef struct krait__link {
    struct krait__link *prev, *next;
} krait__link;

/* An output segment: bytes in the connection's out buffer, or a byte range of its file. */
typedef struct {
    int is_file;
    uint64_t off;   /* into out buffer or file */
    uint64_t len;
} krait__seg;

typedef struct krait__conn krait__conn;

/* Small open-addressing string maps (MIME types, cache rules, route answers, static/dynamic). */
typedef struct {
    char *key;
    size_t key_len;
    char *val;       /* owned; may be NULL */
    size_t val_len;
    int64_t num[4];  /* small payload: flags, route index, allow mask, ... */
} krait__map_entry;

typedef struct {
    krait__map_entry *e;
    size_t cap;      /* power of two */
    size_t count;
    size_t max;      /* when count reaches max, the map is cleared (a bounded cache) */
} krait__map;

krait__map_entry *krait__map_get(krait__map *m, const char *key, size_t len);
krait__map_entry *krait__map_put(krait__map *m, const char *key, size_t len);
void krait__map_clear(krait__map *m);
void krait__map_free(krait__map *m);

typedef struct {
    int verbs;
    char *url;
    int has_regex;
    char *target;
    int is_ctrl;
} krait__route;

struct krait_server;

/* Output of route resolution for one request. */
typedef struct {
    int route;                 /* index, or -1 */
    int allow;                 /* verbs that match the path (for 405 / OPTIONS) */
    const char *target;        /* NULL: the request path */
    size_t target_len;
    const char *params;        /* worker-protocol pairs encoding, may be NULL */
    size_t params_len;
    int is_ctrl;
} krait__route_answer;

enum conn_state {
    CS_HEAD = 1,     /* waiting for (more of) a request head */
    CS_BODY,         /* reading a request body for a worker */
    CS_WORKER,       /* waiting for a worker's answer */
    CS_WRITE,        /* sending a response */
    CS_WS,           /* an open WebSocket (wsconn.c) */
};

enum timer_list { TL_HEAD, TL_BODY, TL_IDLE, TL_SEND, TL_WS, TL_COUNT };

struct krait__conn {
    int kind;                 /* OBJ_CONN */
    int fd;
    int closed;               /* marked; freed after the current event batch */
    int state;
    krait__link timer;        /* membership in srv->timers[timer_list] */
    int timer_list;           /* -1: none */
    int64_t deadline;         /* ms, CLOCK_MONOTONIC */
    krait__link all;          /* membership in srv->conns */
    int got_bytes;            /* a byte of the current request has arrived */
    krait__http_resume hrs;   /* parser progress through the head being received */

    char *in;                 /* request bytes; in[0..in_len) */
    size_t in_len, in_cap;

    char *out;                /* response bytes referenced by mem segments */
    size_t out_len, out_cap;
    krait__seg segs[KRAIT__MAX_SEGS];
    int nseg, seg_i;
    uint64_t seg_done;        /* bytes of segs[seg_i] already sent */
    int file_fd;              /* the body file of file segments, or -1 */
    uint32_t events;          /* current epoll interest */

    size_t consume;           /* bytes of in[] that the response being sent answers */
    int keep_alive;           /* after this response, read the next request */

    /* Access log line for the response being sent (printed when it completes). */
    char log[1024];
    size_t log_len;
    int64_t t_start;          /* ns */

    char peer[64];
    int peer_port;
    struct ssl_st *ssl;       /* TLS session, or NULL for plain HTTP */
    int tls_want_write;       /* the TLS engine needs the socket writable to go on */
    int tls_ready;            /* the TLS handshake has completed */
    krait__link tls_later;    /* membership in srv->tls_later: OpenSSL holds input to read */
    krait__link flush_later;  /* membership in srv->flush_later: output to send this turn */

    /* Worker dispatch (worker.c). */
    krait__link wq;           /* membership in the wait queue */
    int worker;               /* slot, or -1 */
    uint32_t req_id;
    int head_only;            /* HEAD: drop the body the worker sends */
    int http10;               /* the request was HTTP/1.0 */
    int streaming;            /* chunked response in progress */
    char *body;               /* request body (decoded) */
    size_t body_len, body_cap;
    int64_t body_need;        /* Content-Length bytes still to read, -1 for chunked */
    krait__chunked chunk;
    char spool[256];          /* the spooled body file of the request in progress, or "" */
    uint8_t *frame;           /* the encoded request frame waiting for a worker */
    size_t frame_len;

    /* WebSocket (wsconn.c). */
    char ws_key[32];          /* Sec-WebSocket-Key of a handshake in progress, or "" */
    int ws_pending;           /* the 101 is being sent; CS_WS follows */
    int ws_msg_op;            /* opcode of the message being reassembled, 0 for none */
    krait__utf8 ws_utf8;      /* validation state of that text message */
    int ws_close_sent;        /* our close frame is queued */
    int ws_close_after_flush; /* close the TCP connection once the output is sent */
    int ws_notified;          /* the worker was told the connection ended */
    int ws_ping_out;          /* a ping is unanswered */
    int ws_deflate;           /* permessage-deflate (RFC 7692): 1 offered+accepted */
    int ws_msg_compressed;    /* the message being reassembled has RSV1 */
    struct z_stream_s *ws_inflate, *ws_deflater;  /* created on first use */
};

#define KRAIT__WORKER_DEPTH_MAX 8

typedef struct {
    int kind;                 /* OBJ_WORKER */
    int fd;                   /* -1: free slot */
    int pid;
    int retiring;
    /* Requests sent to it, oldest first: jobs[0] runs, the others wait in its socket so that
     * it never idles between requests (architecture: "keep workers fed"). A job whose client
     * left keeps its place with conn NULL; its answer is dropped. */
    struct { krait__conn *conn; uint32_t id; } jobs[KRAIT__WORKER_DEPTH_MAX];
    int njobs;
    uint8_t *in; size_t in_len, in_cap;     /* frames from the worker */
    uint8_t *out; size_t out_len, out_off, out_cap;  /* frames to the worker */
    int64_t deadline;         /* ms, for jobs[0]; 0 when idle */
    int64_t started;          /* ms, when jobs[0] started */
    int out_later;            /* frames appended to out, sent at the end of the turn */
    int epoll_out;
    /* Backpressure: jobs[0] streams to a client that has not taken what it was sent. The
     * worker's socket is not read (so the worker blocks in its send) until the client has. */
    int paused;
    int resume_later;         /* unpaused this turn: parse what is buffered at its end */
} krait__worker;

#define KRAIT__MAX_WORKERS 256

struct krait_server {
    int epfd;
    char root[KRAIT__PATH_MAX];   /* realpath of the site root */
    size_t root_len;
    int root_fd;
    int64_t limits[KRAIT_LIMIT_COUNT];
    int64_t max_age, max_age_long;
    char server_header[64];

    krait__obj sig;           /* signalfd */
    int sig_fd;
    krait__obj wake;          /* eventfd for krait_server_stop */
    int wake_fd;
    struct { krait__obj obj; int fd; int tls; } listeners[8];
    struct ssl_ctx_st *ssl_ctx;
    krait__link tls_later;    /* TLS connections to read again after this event batch */
    krait__link flush_later;  /* connections whose output is sent after this event batch */
    int workers_later;        /* some worker has out_later set */
    int workers_resume;       /* some worker has resume_later set */
    int https_redirect_port;  /* > 0: plain-HTTP requests are redirected there */
    char hsts[128];           /* Strict-Transport-Security value for TLS answers, or "" */
    int nlisteners;
    int accepting;
    int spare_fd;             /* released on EMFILE to accept-and-close */

    krait__map mime, cache_rules, route_cache, dyn_cache, ws_ids;
    krait__map resolved;      /* URL path -> file found by the index/extension search */
    krait__route *routes;
    size_t nroutes;
    krait_cache_fn cache_cb;
    krait_route_fn route_cb;
    krait_event_fn event_cb;
    void *cb_ud;

    krait__link timers[TL_COUNT];
    krait__link conns;
    size_t nconns;
    krait__conn *reap[256];
    size_t nreap;

    int64_t now_ms;
    time_t date_sec;
    char date[KRAIT__DATE_LEN + 1];
    char log_date[32];

    int log_fd;
    char *logbuf; size_t log_len, log_cap;

    krait__header hdr[KRAIT__MAX_HEADERS_CAP];
    size_t nhdr;

    krait__worker workers[KRAIT__MAX_WORKERS];
    int nworkers;
    krait__link waitq;
    size_t nwait;
    uint32_t next_req_id;
    char *spool_dir;

    volatile int stop_requested;
    int draining;
    int64_t drain_deadline;
    int64_t stats[8];
};

/* One parsed request, valid while it is being answered (slices point into conn->in). */
typedef struct {
    const char *method; size_t method_len;
    int verb;                 /* KRAIT_VERB_*, 0 for an unknown method */
    int is_head;
    const char *target; size_t target_len;   /* raw request-target */
    char path[KRAIT__PATH_MAX];               /* decoded, normalised, starts with '/' */
    size_t path_len;
    const char *query; size_t query_len;     /* raw, without '?' */
    int version_minor;
    krait__req_info info;
    size_t head_len;
    int has_body;
} krait__request;

/* server.c: response assembly into conn->out. */
int krait__out_reserve(krait__conn *c, size_t n);
void krait__out_add(krait__conn *c, const char *p, size_t n);
void krait__out_str(krait__conn *c, const char *s);
void krait__out_u64(krait__conn *c, uint64_t v);
void krait__resp_start(struct krait_server *srv, krait__conn *c, int status);
void krait__resp_end_headers(struct krait_server *srv, krait__conn *c, int64_t content_length);
void krait__seg_mem(krait__conn *c, size_t from);
void krait__seg_file(krait__conn *c, uint64_t off, uint64_t len);
void krait__seg_advance(krait__conn *c, uint64_t n);
void krait__error(struct krait_server *srv, krait__conn *c, krait__request *rq, int status,
                  int close_after);
void krait__log_begin(struct krait_server *srv, krait__conn *c, krait__request *rq, int status,
                      uint64_t bytes);
void krait__log_status(krait__conn *c, int status, uint64_t bytes);
const char *krait__reason(int status);
const krait__header *krait__find_header(struct krait_server *srv, const char *name);

/* static.c: answer a request with a file (or hand it to a worker). */
void krait__static_respond(struct krait_server *srv, krait__conn *c, krait__request *rq,
                           const char *rel, size_t rel_len, int route, const char *params,
                           size_t params_len);
/* Resolve rel (no leading '/') with Krait's index and extension search (behaviour §3.2), never
 * leaving the root; returns an open fd (O_RDONLY) and fills st and the resolved relative name. */
int krait__resolve_file(struct krait_server *srv, const char *rel, size_t rel_len,
                        char *name, size_t name_cap, struct stat *st);
int krait__needs_python(struct krait_server *srv, int fd, const char *name, size_t len,
                        const struct stat *st);

/* tls.c: connection I/O (plain or TLS) with socket-style results. */
ssize_t krait__conn_recv(struct krait_server *srv, krait__conn *c, char *buf, size_t n);
ssize_t krait__conn_send(struct krait_server *srv, krait__conn *c, const char *buf, size_t n,
                         int more);
ssize_t krait__conn_sendfile(struct krait_server *srv, krait__conn *c, int fd, off_t off,
                             size_t n);
int krait__conn_pending(krait__conn *c);
/* Send c's pending output at the end of this event batch (several WebSocket messages for one
 * connection from one read of a worker leave in one send). */
void krait__conn_flush_later(struct krait_server *srv, krait__conn *c);
void krait__worker_flush_later(struct krait_server *srv);
void krait__worker_drained(struct krait_server *srv, krait__conn *c);
void krait__worker_resume_run(struct krait_server *srv);
int krait__tls_coalesce(krait__conn *c);
ssize_t krait__tls_send_segs(struct krait_server *srv, krait__conn *c);
int krait__tls_start(struct krait_server *srv, krait__conn *c);
void krait__tls_free(krait__conn *c);
void krait__tls_ctx_free(struct krait_server *srv);

/* worker.c */
void krait__worker_dispatch(struct krait_server *srv, krait__conn *c, krait__request *rq,
                            int route, const char *file, const char *params, size_t params_len);
void krait__worker_event(struct krait_server *srv, krait__worker *w, uint32_t events);
void krait__worker_sweep(struct krait_server *srv);
void krait__worker_feed(struct krait_server *srv);
void krait__worker_conn_gone(struct krait_server *srv, krait__conn *c);
int krait__body_continue(struct krait_server *srv, krait__conn *c);

/* wsconn.c */
int krait__ws_handshake_check(struct krait_server *srv, krait__conn *c, krait__request *rq);
void krait__ws_accept_response(struct krait_server *srv, krait__conn *c, const void *frame);
void krait__ws_begin(struct krait_server *srv, krait__conn *c);
void krait__ws_input(struct krait_server *srv, krait__conn *c);
void krait__ws_from_worker(struct krait_server *srv, const void *frame);
void krait__ws_close(struct krait_server *srv, krait__conn *c, int code, int notify_code);
void krait__ws_timer(struct krait_server *srv, krait__conn *c);
void krait__ws_gone(struct krait_server *srv, krait__conn *c);
void krait__ws_worker_died(struct krait_server *srv, int slot, int code);
void krait__ws_drain(struct krait_server *srv);
void krait__ws_free(krait__conn *c);
/* worker.c: queue a WS_MESSAGE/WS_CLOSE frame to a worker. */
void krait__worker_send_ws(struct krait_server *srv, int slot, uint8_t type, uint32_t id,
                           unsigned arg, const char *data, size_t len);

/* server.c: connection helpers for worker.c */
void krait__conn_close(struct krait_server *srv, krait__conn *c);
void krait__conn_flush(struct krait_server *srv, krait__conn *c);
void krait__conn_pause(struct krait_server *srv, krait__conn *c);
void krait__timer_set(struct krait_server *srv, krait__conn *c, int list);
void krait__link_remove(krait__link *l);
void krait__link_append(krait__link *head, krait__link *l);
void krait__link_prepend(krait__link *head, krait__link *l);

int krait__route_resolve(struct krait_server *srv, int verb, const char *path, size_t len,
                         krait__route_answer *ans);
int krait__cache_flags(struct krait_server *srv, const char *rel, size_t len);
const char *krait__mime_lookup(struct krait_server *srv, const char *name, size_t len);

#endif
