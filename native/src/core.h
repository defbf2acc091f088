/* The core's data: the server, its connections and worker slots, and the small containers they
 * use (intrusive lists, bounded maps). Data only, plus the list and map helpers every layer
 * uses: each layer declares its functions in its own header and calls only the layers below it
 * (docs/design.md, "Layers"):
 *
 *   loop.c                      epoll, accept, signals, timers, the driver (end of each turn)
 *   request.c                   one HTTP/1.1 request: limits → 4xx, target, routing, hand-off
 *   static.c worker.c wsconn.c  the request handlers (worker.c above wsconn.c)
 *   body.c wio.c                request bodies; worker-socket buffers
 *   response.c                  response heads, error pages, the access-log line
 *   conn.c                      connection buffers, output segments, flush, close, timers
 *   tls.c                       plain or TLS socket I/O
 *   tables.c http.c ws.c ipc.c cache.c logjson.c   sans-IO: maps, parsers, codecs,
 *                                                  validators, the JSON log line
 *
 * cffi never reads this header; Python sees only native/include/krait.h. */
#ifndef KRAIT_CORE_H
#define KRAIT_CORE_H

#include <pthread.h>
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
#include "proxyproto.h"
#include "ws.h"

#define KRAIT__MAX_HEADERS_CAP 1000
#define KRAIT__MAX_RANGES 16
#define KRAIT__MAX_SEGS (2 * KRAIT__MAX_RANGES + 2)
#define KRAIT__PATH_MAX 4096
#define KRAIT__LOG_LINE 1024

enum obj_kind { OBJ_LISTENER = 1, OBJ_CONN, OBJ_SIGNAL, OBJ_WORKER, OBJ_WAKE };

/* Every object registered with epoll starts with its kind, so one pointer tag is enough. */
typedef struct { int kind; } krait__obj;

/* An intrusive doubly linked list node; timer lists and queues use it. A node that is in no
 * list has next == NULL. */
typedef struct krait__link {
    struct krait__link *prev, *next;
} krait__link;

void krait__list_init(krait__link *head);
int krait__list_empty(const krait__link *head);
void krait__link_remove(krait__link *l);
void krait__link_append(krait__link *head, krait__link *l);
void krait__link_prepend(krait__link *head, krait__link *l);

#define KRAIT__CONTAINER(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

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
void krait__map_del(krait__map *m, const char *key, size_t len);
void krait__map_clear(krait__map *m);
void krait__map_free(krait__map *m);

/* A folder static.c serves files from: the site root, or a static folder outside it
 * (krait_server_add_static_dir). */
typedef struct {
    int fd;            /* opened once; every file is opened beneath it (RESOLVE_BENEATH) */
    char *path;        /* its real path: where a followed symlink must still lead */
    size_t path_len;
    char *url;         /* a static folder's URL prefix without its leading '/' ("static"): the
                          name cache rules see its files under; "" for the site root */
    size_t url_len;
    int files_only;    /* a static folder: every file is data, never a worker's */
} krait__tree;

typedef struct {
    int verbs;
    char *url;
    int has_regex;
    char *target;
    int is_ctrl;
    int is_prefix;   /* url is a prefix: it and every path below it (a mounted application) */
    krait__tree *dir;  /* a static folder's route: the rest of the path is a file of it (owned;
                          the route is a prefix route, answered by static.c, never a worker) */
} krait__route;

/* A cache rule in C (krait_server_add_cache_rule): the path equals before (star 0), or
 * matches before.*after (star 1). */
typedef struct {
    int list;                 /* KRAIT_CACHE_NO_STORE, _PRIVATE, _PUBLIC or _LONG */
    int star;
    char *before, *after;
    size_t before_len, after_len;
} krait__cache_rule;

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
    CS_MOVE,         /* its request needs a worker: the driver hands it to the hub (loop 0) */
    CS_BODY,         /* reading a request body (for a worker, or to discard it) */
    CS_WORKER,       /* waiting for a worker's answer */
    CS_WRITE,        /* sending a response */
    CS_WS,           /* an open WebSocket (wsconn.c) */
};

/* TL_WS_HOLD: a WebSocket whose close frame waits for its worker's answer (wsconn.c), at
 * most KRAIT__WS_HOLD_MS. */
enum timer_list { TL_HEAD, TL_BODY, TL_IDLE, TL_SEND, TL_WS, TL_WS_HOLD, TL_COUNT };
#define KRAIT__WS_HOLD_MS 1000

struct krait__conn {
    int kind;                 /* OBJ_CONN */
    int fd;
    int closed;               /* closed: on srv->closing until freed at the end of the turn */
    int gone_told;            /* the handlers have been told it closed (loop.c) */
    int broken;               /* an allocation for its output failed: close at the flush */
    int state;
    uint32_t id;              /* unique while open; the WebSocket id the worker knows */
    krait__link timer;        /* membership in srv->timers[timer_list] */
    int timer_list;           /* -1: none */
    int64_t deadline;         /* ms, CLOCK_MONOTONIC */
    krait__link all;          /* membership in srv->conns, srv->closing, srv->dead */
    krait__link ready;        /* membership in srv->ready or srv->deferred */
    krait__link tls_later;    /* membership in srv->tls_later: OpenSSL holds input to read */
    int got_bytes;            /* a byte of the current request has arrived */
    krait__http_resume hrs;   /* parser progress through the head being received */

    char *in;                 /* request bytes; in[0..in_len); freed while idle */
    size_t in_len, in_cap;

    char *out;                /* response bytes referenced by mem segments; freed while idle */
    size_t out_len, out_cap;
    krait__seg segs[KRAIT__MAX_SEGS];
    int nseg, seg_i;
    uint64_t seg_done;        /* bytes of segs[seg_i] already sent */
    int file_fd;              /* the body file of file segments, or -1 */
    uint32_t events;          /* current epoll interest */

    size_t consume;           /* bytes of in[] that the response being sent answers */
    int keep_alive;           /* after this response, read the next request */

    /* Access log line for the response being sent (printed when it completes); allocated
     * while a response is in flight. */
    char *log;
    size_t log_len;
    int64_t t_start;          /* ns */
    int stat_status;          /* status of the response being sent (krait__resp_start) */
    int stat_kind;            /* KRAIT_KIND_* of the request being answered */

    char peer[48];            /* the client: the socket's peer, or what a trusted proxy's
                                 PROXY header said (proxy_done) */
    int peer_port;
    char local[48];           /* this end of the socket, as peer is written (getsockname at
                                 accept; "unix" on a Unix socket); a PROXY header leaves it */
    int local_port;           /* 0 on a Unix socket */
    int peer_trusted;         /* the socket's peer is a --trusted-proxy (set at accept) */
    int proxy_wait;           /* a PROXY header must come first: its bytes are in in[] so far */
    int proxy_done;           /* it began with a PROXY header: peer is the client it named, or
                                 the proxy's when it named none (LOCAL, UNKNOWN, UNSPEC) */
    struct ssl_st *ssl;       /* TLS session, or NULL for plain HTTP */
    int tls_want_write;       /* the TLS engine needs the socket writable to go on */
    int tls_ready;            /* the TLS handshake has completed */

    /* Worker dispatch (worker.c). */
    krait__link wq;           /* membership in the wait queue */
    int worker;               /* slot, or -1 */
    uint32_t worker_gen;      /* the slot's generation when it was bound */
    uint32_t req_id;
    int head_only;            /* HEAD: drop the body the worker sends */
    int wants_json;           /* the request's Accept prefers JSON: error pages in JSON */
    int routing;              /* its worker job is a route question (KRAIT__REQ_ROUTE) */
    int route_asked;          /* a worker answered the route question for the current request */
    int route_verb;           /* the question: (verb, path) */
    char *route_path;         /* ... or the file of a cache-rule question */
    int cache_q;              /* its worker job is a cache-rule question (KRAIT__REQ_CACHE) */
    int cache_asked;          /* a worker answered it for the current request: */
    int cache_answer;         /* ... these KRAIT_CACHE_* flags, for the file route_path */
    int http10;               /* the request was HTTP/1.0 */
    int home;                 /* the loop that accepted it (docs/design.md, "Loops") */
    int go_home;              /* on loop 0, its last request needed no worker: once idle, it
                                 goes back to its home loop */
    int streaming;            /* chunked response in progress */

    /* Request body (body.c). */
    char *body;               /* body bytes held in memory (decoded) */
    size_t body_len, body_cap;
    size_t body_mem;          /* of body_cap, what srv->body_memory counts (body.c) */
    int64_t body_need;        /* Content-Length bytes still to read, -1 for chunked */
    uint64_t body_total;      /* decoded body bytes so far (memory and file) */
    krait__chunked chunk;
    int body_discard;         /* read and drop the body; the answer is already built */
    int body_fd;              /* the spool file being written, or -1 */
    char *spool;              /* the spooled body file of the request in progress, or NULL */
    uint8_t *frame;           /* the encoded request frame waiting for a worker */
    size_t frame_len;

    /* WebSocket (wsconn.c). */
    char ws_key[32];          /* Sec-WebSocket-Key of a handshake in progress, or "" */
    int ws_pending;           /* the 101 is being sent; CS_WS follows */
    int ws_msg_op;            /* opcode of the message being reassembled, 0 for none */
    krait__utf8 ws_utf8;      /* validation state of that text message */
    int ws_close_sent;        /* our close frame is queued */
    int ws_close_after_flush; /* close the TCP connection once the output is sent */
    int ws_linger;            /* after our close frame: half-close, then wait for the peer */
    int ws_notified;          /* the worker was told the connection ended */
    int ws_ping_out;          /* a ping is unanswered */
    int ws_deflate;           /* permessage-deflate (RFC 7692): 1 offered+accepted */
    int ws_msg_compressed;    /* the message being reassembled has RSV1 */
    int ws_in_frame;          /* a data frame's head is read; its payload is arriving */
    int ws_frame_fin;         /* ... and it is the message's last frame */
    uint8_t ws_frame_mask[4]; /* ... its masking key */
    uint64_t ws_frame_pos;    /* ... payload bytes of it read so far */
    uint64_t ws_frame_left;   /* ... payload bytes of it still to come */
    int ws_input_over;        /* the client closed or failed: its bytes are read and dropped */
    int ws_hold;              /* our close frame waits for the worker's WS_CLOSE (TL_WS_HOLD) */
    uint8_t ws_hold_payload[2];  /* that close frame's payload: a code, or nothing */
    int ws_hold_len;
    struct z_stream_s *ws_inflate, *ws_deflater;  /* created on first use */
    char **chans;             /* the channels it is subscribed to (channels.c) */
    size_t nchans;
};

#define KRAIT__WORKER_DEPTH_MAX 8
/* A worker job that is a question, not a request: its answer is a ROUTE_ANSWER or a
 * CACHE_ANSWER frame, and nothing else (nor is either an answer to a request). */
enum { KRAIT__Q_NONE = 0, KRAIT__Q_ROUTE = 1, KRAIT__Q_CACHE = 2 };

typedef struct {
    int kind;                 /* OBJ_WORKER */
    int fd;                   /* -1: free slot */
    int pid;
    int pidfd;                /* signals go here, never to a pid that may be reused; or -1 */
    uint32_t gen;             /* bumped each time the slot is given a new worker */
    int retiring;
    int end;                  /* KRAIT_WORKER_END_*, once let go (krait_server_worker_end) */
    /* Requests sent to it, oldest first: jobs[0] runs, the others wait in its socket so that
     * it never idles between requests (architecture: "keep workers fed"). A job whose client
     * left keeps its place with conn NULL; its answer is dropped. */
    struct {
        krait__conn *conn;
        uint32_t id;
        int question;         /* KRAIT__Q_ROUTE or KRAIT__Q_CACHE: the only answer it takes */
    } jobs[KRAIT__WORKER_DEPTH_MAX];
    int njobs;
    int streaming;            /* jobs[0] was answered with a streamed RESPONSE: CHUNK/END follow */
    uint8_t *in; size_t in_len, in_cap;     /* frames from the worker */
    uint8_t *out; size_t out_len, out_off, out_cap;  /* frames to the worker */
    int64_t deadline;         /* ms, for jobs[0]; 0 when idle */
    int64_t started;          /* ms, when jobs[0] started */
    int epoll_out;
    /* Work the driver does for this worker at the end of the turn (wio.c posts it). */
    int out_later;            /* frames appended to out, to send */
    int parse_later;          /* buffered frames to parse (unpaused by backpressure) */
    int failed;               /* its socket failed (send or recv error): let it go */
    int eof;                  /* its socket reached end-of-file */
    /* Backpressure: jobs[0] streams to a client that has not taken what it was sent. The
     * worker's socket is not read (so the worker blocks in its send) until the client has. */
    int paused;
} krait__worker;

#define KRAIT__MAX_WORKERS 256
#define KRAIT__MAX_LOOPS 64

/* A counter that one loop writes and another thread may read (krait_server_stat): only the
 * owning loop ever stores, so a relaxed load and store (no read-modify-write, no lock) is
 * enough; a reader sees some recent value. */
#define KRAIT__STAT_ADD(srv, k, n) \
    __atomic_store_n(&(srv)->stats[k], (srv)->stats[k] + (n), __ATOMIC_RELAXED)
/* A gauge the owning loop publishes (the hub's worker and queue figures). */
#define KRAIT__STAT_SET(srv, k, v) __atomic_store_n(&(srv)->stats[k], (int64_t)(v), __ATOMIC_RELAXED)

/* Something Python is told by the driver, never from inside a handler. */
typedef struct { int kind, a, b; } krait__event;

struct krait_server {
    int epfd;
    char root[KRAIT__PATH_MAX];   /* realpath of the site root */
    size_t root_len;
    int root_fd;
    int64_t limits[KRAIT_LIMIT_COUNT];
    int64_t max_age, max_age_long;
    char server_header[128];  /* "" for none */

    krait__obj sig;           /* signalfd */
    int sig_fd;
    krait__obj wake;          /* eventfd for krait_server_stop */
    int wake_fd;
    /* unix_path: a Unix socket this server bound (the hub's copy; unlinked at
     * krait_server_free if the path still names that socket), else NULL. */
    struct {
        krait__obj obj;
        int fd;
        int tls;
        char *unix_path;
        uint64_t unix_dev, unix_ino;
    } listeners[8];
    int nlisteners;
    int accept_paused;        /* listeners out of epoll: at the connection cap, or no fds */
    int64_t accept_resume_ms; /* out of descriptors: try again at this time (0: at the cap) */
    int spare_fd;             /* released on EMFILE to accept-and-close */
    struct ssl_ctx_st *ssl_ctx;
    int https_redirect_port;  /* > 0: plain-HTTP requests are redirected there */
    char hsts[128];           /* Strict-Transport-Security value for TLS answers, or "" */
    int64_t tls_log_sec;      /* rate limit of handshake-failure lines: this second's count */
    int tls_log_count;
    int64_t tls_log_dropped;

    char **never_serve;       /* shell patterns (krait_server_set_never_serve) */
    size_t n_never_serve;
    char **static_only;       /* folder prefixes, each ending in '/' */
    size_t n_static_only;
    char **allowed_hosts;     /* lower-case; ".x.org" also matches x.org's subdomains */
    size_t n_allowed_hosts;
    int html_templates;       /* .html/.htm with '@' are templates */
    /* --trusted-proxy networks (the hub's; read-only) and whether peers of a Unix socket are
     * trusted; with proxy_protocol, a trusted peer's connection starts with a PROXY header. */
    krait__cidr *trusted;
    size_t ntrusted;
    int trust_unix;
    int proxy_protocol;
    krait__map error_pages;   /* "%d" status → html (val), num[0] = offset of the JSON body
                                 in val, num[1] = its length, num[2] = offset of the type */
    krait__map mime, cache_rules, route_cache, dyn_cache, ws_ids;
    krait__map channels;      /* WebSocket channel name → its subscribers (channels.c) */
    krait__map resolved;      /* URL path -> file found by the index/extension search */
    krait__route *routes;
    size_t nroutes;
    krait__cache_rule *cache_rule_list;  /* the rules the core evaluates (hub's; read-only) */
    size_t n_cache_rules;
    int cache_questions;      /* a rule is a regex: a worker decides each file's flags */
    krait_event_fn event_cb;
    void *cb_ud;

    krait__link timers[TL_COUNT];
    krait__link conns;        /* open connections */
    krait__link closing;      /* closed, the handlers not yet told (loop.c tells them) */
    krait__link dead;         /* closed and told; freed at the end of the turn */
    krait__link ready;        /* connections the driver must look at */
    krait__link deferred;     /* ready, but their share of this turn is used up */
    krait__link tls_later;    /* TLS connections to read again after this event batch */
    size_t nconns;
    uint32_t next_conn_id;

    int64_t now_ms;
    int64_t clock_offset_ms;  /* added to the monotonic clock (the whole-server fuzzer) */
    time_t date_sec;
    char date[KRAIT__DATE_LEN + 1];
    char log_date[32];

    /* The access log: log_on (every loop's copy) says whether lines are made; the one
     * descriptor they go to is the hub's log_fd, read and swapped (SIGUSR1: logrotate) only
     * under the hub's log_lock. */
    int log_on;
    int log_format;           /* KRAIT_LOG_COMBINED or KRAIT_LOG_JSON, every loop's copy */
    int log_fd;
    char *logbuf; size_t log_len, log_cap;

    krait__header hdr[KRAIT__MAX_HEADERS_CAP];
    size_t nhdr;

    krait__worker workers[KRAIT__MAX_WORKERS];
    int nworkers;
    int workers_dirty;        /* some worker has out_later, parse_later, failed or eof set */
    int feed_needed;          /* a worker may take a waiting request */
    krait__link waitq;
    size_t nwait;
    uint32_t next_req_id;
    int64_t body_memory;      /* request-body bytes held in memory, all connections */

    /* Messages handed over by other threads (krait_server_publish), under pub_lock. */
    void *pub_lock;           /* a pthread_mutex_t */
    struct krait__pub *pub_head, *pub_tail;
    size_t pub_bytes;

    krait__event *events;     /* for Python, delivered by the driver */
    size_t nevents, events_cap;

    /* Loops (docs/design.md, "Loops"). The server Python holds is loop 0, the hub: it alone
     * has the worker pool, the signals, every WebSocket and Python's callbacks for events.
     * Loops 1..n-1 are threads, each with its own epoll, connections, timers, TLS sessions
     * and caches, sharing the configuration read-only; a connection whose request needs a
     * worker is handed to the hub (CS_MOVE) and stays there. */
    struct krait_server *hub;     /* loop 0; itself for the hub */
    int loop_index;
    int nloops;                   /* krait_server_set_loops; every loop holds the count */
    struct krait_server *loops[KRAIT__MAX_LOOPS];  /* hub: the loops; loops[0] is itself */
    pthread_t threads[KRAIT__MAX_LOOPS];
    int loops_live;               /* hub: threads still running (atomic) */
    int64_t total_conns;          /* hub: open connections of every loop (atomic) */
    int force_end;                /* stop now, whatever is open (atomic; set by the hub) */
    pthread_mutex_t move_lock;    /* guards moved and ended */
    krait__link moved;            /* connections another loop handed over */
    int moved_count;              /* their number (atomic, read without the lock) */
    int ended;                    /* this loop takes no more connections (under move_lock) */
    pthread_mutex_t ctx_lock;     /* hub: guards ssl_ctx (a reload swaps it) */
    pthread_mutex_t log_lock;     /* hub: one access-log write at a time */
    pthread_mutex_t answers_lock; /* hub: guards route_cache and cache_rules (workers'
                                     answers), which other loops copy on a miss (tables.c) */
    int locks_ready;

    int stop_requested;           /* krait_server_stop, from any thread (atomic) */
    int draining;
    int64_t drain_deadline;
    int64_t stats[KRAIT_STAT_COUNT];  /* KRAIT_STAT_*: written by this loop only */
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

#endif
