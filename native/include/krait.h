/* krait.h — THE contract between the C core and Python.
 *
 * Everything Python may call or see is declared between the cdef markers; ffi_build.py slices
 * that block out for cffi. The block holds only declarations, opaque handles, enums and integer
 * #defines. Every call that may block is marked; cffi releases the GIL around all of them. */
#ifndef KRAIT_H
#define KRAIT_H

#include <stddef.h>
#include <stdint.h>

/* cdef:begin */
#define KRAIT_NATIVE_VERSION 2

/* Error codes: 0 or a count on success, a negative KRAIT_E* on failure. */
#define KRAIT_OK 0
#define KRAIT_ESYS -1     /* a system call failed; errno text is in the err buffer */
#define KRAIT_ENOMEM -2   /* allocation failed */
#define KRAIT_EINVAL -3   /* a bad argument from the caller */
#define KRAIT_ELIMIT -4   /* a table is full */

/* Route verbs, as a bit mask. HEAD routes as GET; an Upgrade: websocket request as WEBSOCKET. */
#define KRAIT_VERB_GET 1
#define KRAIT_VERB_POST 2
#define KRAIT_VERB_PUT 4
#define KRAIT_VERB_DELETE 8
#define KRAIT_VERB_CONNECT 16
#define KRAIT_VERB_OPTIONS 32
#define KRAIT_VERB_TRACE 64
#define KRAIT_VERB_WEBSOCKET 128
#define KRAIT_VERB_PATCH 256
#define KRAIT_VERB_ANY 511

/* Cache decision flags of a static file (behaviour §10.2): from the cache rules the core
 * evaluates (krait_server_add_cache_rule) or a worker's answer (krait_server_set_cache_questions). */
#define KRAIT_CACHE_NO_STORE 1   /* no-cache, no-store */
#define KRAIT_CACHE_PRIVATE 2
#define KRAIT_CACHE_PUBLIC 4
#define KRAIT_CACHE_LONG 8

/* Limits (krait_server_set_limit). Sizes in bytes, times in milliseconds. */
#define KRAIT_LIMIT_REQUEST_LINE 0     /* default 8 KiB → 414 */
#define KRAIT_LIMIT_HEAD 1             /* default 64 KiB → 431 */
#define KRAIT_LIMIT_HEADERS 2          /* default 100 fields → 431 */
#define KRAIT_LIMIT_BODY 3             /* default 16 MiB → 413 */
#define KRAIT_LIMIT_HEADER_TIMEOUT 4   /* default 10 s → 408 and close */
#define KRAIT_LIMIT_KEEPALIVE 5        /* default 60 s idle → close */
#define KRAIT_LIMIT_WORKER_TIMEOUT 6   /* default 30 s → 504, worker replaced */
#define KRAIT_LIMIT_QUEUE 7            /* default 1024 waiting requests → 503 */
#define KRAIT_LIMIT_WS_MESSAGE 8       /* default 16 MiB → close 1009 */
#define KRAIT_LIMIT_BODY_TIMEOUT 9     /* default 30 s without body progress → 408 and close */
#define KRAIT_LIMIT_SEND_TIMEOUT 10    /* default 60 s without send progress → close */
#define KRAIT_LIMIT_MAX_CONNS 11       /* default 65536 open connections; more wait in backlog */
#define KRAIT_LIMIT_SPOOL 12           /* default 1 MiB: larger bodies go to a temp file */
#define KRAIT_LIMIT_DRAIN 13           /* default 10 s: graceful stop bound */
#define KRAIT_LIMIT_WS_PING 14         /* default 30 s: ping an idle WebSocket; no answer in
                                          as long again → close */
#define KRAIT_LIMIT_WORKER_DEPTH 15    /* default 4, at most 8: requests handed to one worker
                                          at once (it runs one; the rest wait in its socket) */
#define KRAIT_LIMIT_BODY_MEMORY 16     /* default 64 MiB: request-body bytes held in memory,
                                          all connections together; beyond it every body
                                          goes to its temporary file as it arrives */
#define KRAIT_LIMIT_COUNT 17

typedef struct krait_server krait_server;

/* Events the core reports to the supervisor: a signal or a worker's end. */
#define KRAIT_EVENT_RELOAD 1        /* SIGHUP */
#define KRAIT_EVENT_WORKER_EXIT 2   /* a = worker slot, b = pid */
#define KRAIT_EVENT_CHILD 3         /* SIGCHLD: reap children */
#define KRAIT_EVENT_REOPEN_LOGS 4   /* SIGUSR1: reopen the log files (logrotate) */
typedef void (*krait_event_fn)(void *ud, int kind, int a, int b);

/* Create a server for the site root (an existing directory). Returns NULL and fills err. */
krait_server *krait_server_new(const char *site_root, char *err, size_t errlen);
/* Close every descriptor and free everything; NULL is accepted. */
void krait_server_free(krait_server *srv);

int krait_server_set_limit(krait_server *srv, int which, int64_t value);
/* Map a file extension (without the dot, e.g. "css") to a MIME type. */
int krait_server_add_mime(krait_server *srv, const char *ext, const char *type);
int krait_server_set_cache_ages(krait_server *srv, int64_t max_age, int64_t max_age_long);
/* Append a route (behaviour §4). url: exact URL or NULL; has_regex: the route also has a regex
 * (a worker decides: the core asks one, with a REQUEST frame flagged KRAIT__REQ_ROUTE, the
 * first time a (verb, path) reaches it, and caches the answer); target: file relative to the
 * root, or NULL for the request path; is_ctrl: an MVC route answered by a worker. */
int krait_server_add_route(krait_server *srv, int verbs, const char *url, int has_regex,
                           const char *target, int is_ctrl);
/* Python's callback for events (KRAIT_EVENT_*), run by the hub's driver only. */
int krait_server_set_callbacks(krait_server *srv, krait_event_fn event, void *ud);
/* A cache rule the core evaluates itself (behaviour §10.2), the C form of a regex of
 * krait.config's cache lists: list is the list's flag (KRAIT_CACHE_NO_STORE for cache_no_store,
 * _PRIVATE, _PUBLIC, _LONG for cache_long_term); with after NULL the rule matches the file path
 * relative to the root (no leading '/') that equals before, otherwise every path that starts
 * with before, ends with after (not overlapping) and has no '\n' between them (the regex
 * before.*after, '.' not matching a newline as in Python's re). Lists apply as the workers'
 * Rules.cache_flags applies them: no-store, then private, public, long-term, each later match
 * overriding. KRAIT_EINVAL for another list or a text over 1 KiB. */
int krait_server_add_cache_rule(krait_server *srv, int list, const char *before,
                                const char *after);
/* on: some cache rule is a regex the core does not evaluate, so a worker decides every file's
 * flags: the core asks one (a REQUEST frame flagged KRAIT__REQ_CACHE) the first time a file
 * is served, caches the answer per loop (bounded, cleared when full) and serves the file from
 * C with it; the rules added with krait_server_add_cache_rule are then not used. */
int krait_server_set_cache_questions(krait_server *srv, int on);
/* Append a route that takes every path at or below prefix ("/app": "/app", "/app/",
 * "/app/x", never "/apple"), answered by a worker (a mounted WSGI application). */
int krait_server_add_prefix_route(krait_server *srv, int verbs, const char *prefix);
/* Append a route that serves a static folder outside the site root: every path at or below
 * prefix (as krait_server_add_prefix_route) is the rest of the path taken as a file beneath
 * dir, which is opened once, now (an O_PATH descriptor). Its files are served by the same code
 * as the site's (hidden segments and never_serve refused, symlinks followed only inside dir,
 * ETag/Last-Modified/304, Range, .gz siblings, sendfile, MIME types, cache rules asked with
 * the URL path "prefix/rest" without the leading '/'), every one static (a .py or template is
 * data, sent as text with nosniff), a miss a 404: never a worker, on every loop. Fails
 * (EINVAL for a prefix not starting with '/', ESYS when dir cannot be opened as a folder) with
 * err filled. */
int krait_server_add_static_dir(krait_server *srv, int verbs, const char *prefix,
                                const char *dir, char *err, size_t errlen);
/* Access log destination (an fd the caller keeps open), or -1 for none; before
 * krait_server_run. */
int krait_server_set_access_log(krait_server *srv, int fd);
/* The access log's format: KRAIT_LOG_COMBINED (the default: Combined Log Format plus the
 * seconds taken) or KRAIT_LOG_JSON (one JSON object per line, docs/deployment.md); before
 * krait_server_run. KRAIT_EINVAL for another value. */
#define KRAIT_LOG_COMBINED 0
#define KRAIT_LOG_JSON 1
int krait_server_set_access_log_format(krait_server *srv, int format);
/* Reopen (SIGUSR1, logrotate): from now on every loop writes its lines to fd (>= 0; the log
 * must be on). The swap is made under the lock the loops write under, so no line is split
 * between the two and none goes to the old descriptor after this returns. Returns the old
 * descriptor, which the caller still owns and may close now. Thread-safe. */
int krait_server_swap_access_log(krait_server *srv, int fd);
/* Include the server version in the Server header. */
int krait_server_set_version(krait_server *srv, const char *version);

/* Listen on host:port (host "" = all interfaces); tls: speak HTTPS there (needs
 * krait_server_set_tls first). Returns the bound port (useful with port 0) or a negative
 * KRAIT_E* with err filled. */
int krait_server_listen(krait_server *srv, const char *host, int port, int tls, char *err,
                        size_t errlen);

/* Listen on a Unix socket at path (plain HTTP), its mode set to mode (e.g. 0660) before
 * anyone can connect. A stale socket at path (nothing accepts on it) is removed; a live one,
 * or anything that is not a socket, is refused (EINVAL, err says why). The socket file is
 * removed by krait_server_free if the path still names it. Peers are "unix" in the access
 * log and to workers. Returns 0 or a negative KRAIT_E*. */
int krait_server_listen_unix(krait_server *srv, const char *path, int mode, char *err,
                             size_t errlen);
/* Serve on a socket the caller already listens on (systemd socket activation: LISTEN_FDS);
 * the core owns fd from now on (made non-blocking and close-on-exec). tls as for
 * krait_server_listen. Returns its port (0 for a Unix socket) or a negative KRAIT_E*:
 * EINVAL when fd is not a listening stream socket. */
int krait_server_listen_fd(krait_server *srv, int fd, int tls, char *err, size_t errlen);

/* Load (or, on reload, replace) the TLS certificate chain and key (PEM files); passphrase may
 * be NULL. New connections use the new context; established ones keep theirs. Fails with a
 * message in err naming the file and OpenSSL's reason. */
int krait_server_set_tls(krait_server *srv, const char *cert, const char *key,
                         const char *passphrase, char *err, size_t errlen);
/* https_port > 0: answer plain-HTTP requests with 301 to https://host:https_port/...;
 * hsts: a Strict-Transport-Security value added to every TLS response ("" for none). */
int krait_server_set_https(krait_server *srv, int https_port, const char *hsts);

/* Hand the core a worker: fd is the core's end of the worker's socketpair, pid its process id,
 * pidfd a pidfd_open() descriptor of it (or -1): the core owns both descriptors from now on and
 * signals the worker only through the pidfd. Returns the worker's slot (>= 0). The worker takes
 * requests once the loop runs its next turn. */
int krait_server_add_worker(krait_server *srv, int fd, int pid, int pidfd);
/* Retire a worker (e.g. on reload): it gets no new request and its fd is closed once its
 * current requests are answered; then KRAIT_EVENT_WORKER_EXIT is reported. */
int krait_server_retire_worker(krait_server *srv, int slot);

/* Run the loop until SIGTERM or SIGINT (received through signalfd; the calling thread's mask
 * must leave them deliverable to it only). Blocks; call without holding locks the callbacks
 * need. Returns 0 after a graceful stop. */
int krait_server_run(krait_server *srv);
/* Ask a running loop to stop gracefully (thread-safe, async-signal-safe). */
void krait_server_stop(krait_server *srv);

/* The whole Server header value; "" sends none. Values with control characters: EINVAL. */
int krait_server_set_server_header(krait_server *srv, const char *value);
/* Names never served, whatever their folder: shell patterns separated by '\n', compared
 * without case with every segment of a request path and of the file it reaches ("" for none;
 * the default is "*~\n#*#\n*.swp\n*.swo\n*.swx\n*.bak\n*.orig\n*.rej"). Answer: 404. */
int krait_server_set_never_serve(krait_server *srv, const char *patterns);
/* A folder (relative to the root, e.g. "uploads/") whose files are data: never handed to a
 * worker (.py, templates included), always sent as they are with
 * X-Content-Type-Options: nosniff. */
int krait_server_add_static_only(krait_server *srv, const char *prefix);
/* Host names requests may carry (exact, or ".example.com" for it and its subdomains; any
 * case, port ignored). With none added, every host is allowed; otherwise another is 400. */
int krait_server_add_allowed_host(krait_server *srv, const char *host);
/* 0: .html and .htm files are static files, never templates (only .pyml and .py go to a
 * worker); 1 (default): they are templates when they contain an '@'. */
int krait_server_set_html_templates(krait_server *srv, int on);
/* A trusted proxy (--trusted-proxy): "unix" (every peer of a Unix socket), an address
 * ("10.0.0.5", "::1") or a network ("10.0.0.0/8", "2001:db8::/32"; host bits ignored).
 * KRAIT_EINVAL for anything else. The core uses the list for the PROXY protocol only (the
 * workers resolve X-Forwarded-For themselves). Before krait_server_run. */
int krait_server_add_trusted_proxy(krait_server *srv, const char *spec);
/* on: a connection whose peer is a trusted proxy must start with a PROXY protocol header
 * (version 1 or 2, read before any TLS byte); the client it names is the connection's address
 * (access log, workers' remote address). A trusted peer's connection without a valid header
 * is refused: 400 and close on plain HTTP, closed at once on TLS. Other peers are served as
 * always, their bytes never read as a PROXY header. Before krait_server_run. */
int krait_server_set_proxy_protocol(krait_server *srv, int on);
/* The page the core sends for its own error with this status (400-599): html (its content
 * type html_type) or, to a client whose Accept prefers JSON, json (application/json). */
int krait_server_set_error_page(krait_server *srv, int status, const char *html,
                                size_t html_len, const char *html_type, const char *json,
                                size_t json_len);

/* Deliver a message to the local subscribers of a WebSocket channel (as a worker's publish
 * does). Thread-safe and non-blocking: the message is queued and the loop is woken; this is
 * how a relay thread hands over messages from other machines. binary: 0 text, 1 binary.
 * Returns KRAIT_ELIMIT when more than 64 MiB of messages wait for the loop. */
int krait_server_publish(krait_server *srv, const char *channel, size_t channel_len,
                         const char *data, size_t len, int binary);

/* Counters, for tests and the stats page. */
/* Loops (threads, each with its own epoll and connections; loop 0 is the calling thread and
 * the only one with workers): 1..64, before krait_server_run. */
int krait_server_set_loops(krait_server *srv, int n);
/* A counter of one loop (KRAIT_STAT_CONNS: connections it accepted); -1 for no such loop.
 * krait_server_stat sums the loops' counters, except KRAIT_STAT_CONNS: the connections open
 * now, all loops together. Both are thread-safe (relaxed atomic loads). */
int64_t krait_server_loop_stat(krait_server *srv, int loop, int which);
int64_t krait_server_stat(krait_server *srv, int which);
#define KRAIT_STAT_CONNS 0
#define KRAIT_STAT_REQUESTS 1
#define KRAIT_STAT_ROUTE_CALLS 2   /* route questions asked to workers (regex routes) */
#define KRAIT_STAT_CACHE_CALLS 3    /* cache-rule questions asked to workers */
#define KRAIT_STAT_PUBLISHED 4      /* channel messages published (each delivered to many) */
/* For the metrics listener (krait/_metrics.py). Counters: sums of every loop's own. */
#define KRAIT_STAT_BYTES_IN 5       /* bytes read from clients (after TLS decryption) */
#define KRAIT_STAT_BYTES_OUT 6      /* bytes sent to clients (before TLS encryption) */
#define KRAIT_STAT_TLS_HANDSHAKES 7 /* TLS handshakes completed */
#define KRAIT_STAT_TLS_FAILURES 8   /* TLS handshakes that failed with a TLS error (the ones
                                       logged; not a client that left mid-handshake) */
#define KRAIT_STAT_WS_OPEN 9        /* gauge: WebSocket connections open (101 sent) */
#define KRAIT_STAT_WS_IN 10         /* WebSocket messages from clients, handed to workers */
#define KRAIT_STAT_WS_OUT 11        /* WebSocket messages to clients (each channel delivery) */
/* Gauges the hub publishes at the end of each of its turns. */
#define KRAIT_STAT_WORKERS_BUSY 12  /* workers with a request or question in hand */
#define KRAIT_STAT_WORKERS_IDLE 13  /* workers taking requests, with none in hand */
#define KRAIT_STAT_QUEUE 14         /* requests waiting for a worker */
#define KRAIT_STAT_DRAINING 15      /* 1 from SIGTERM/SIGINT on: the server is stopping */
/* Responses completed (the last byte sent), by route kind and status class:
 * KRAIT_STAT_RESPONSES + kind * 5 + (status / 100 - 1), kind one of KRAIT_KIND_*. */
#define KRAIT_STAT_RESPONSES 16
#define KRAIT_KIND_STATIC 0         /* answered by the core: files, redirects, its own errors */
#define KRAIT_KIND_PYTHON 1         /* answered by a worker */
#define KRAIT_KIND_WEBSOCKET 2      /* WebSocket handshakes (a worker accepts or refuses) */
/* Their latency, from the complete request head to the last byte sent: the count in each
 * bucket i (not cumulative) with an upper bound of krait_latency_bound_us(i) microseconds,
 * the last bucket unbounded (+Inf), then the sum of all latencies in nanoseconds. */
#define KRAIT_STAT_LATENCY 31
#define KRAIT_LATENCY_BUCKETS 15    /* 14 bounded buckets and +Inf */
#define KRAIT_STAT_LATENCY_SUM_US 46
#define KRAIT_STAT_COUNT 47
/* The upper bound of latency bucket i in microseconds (0.5 ms to 10 s); -1 for +Inf or i out
 * of range. */
int64_t krait_latency_bound_us(int i);
/* Every counter at once: out[i] = krait_server_stat(srv, i) for i < n (n at most
 * KRAIT_STAT_COUNT). Thread-safe: relaxed atomic loads, no lock; a loop may be counting
 * meanwhile, so two values are not of one instant. Returns the number filled. */
int krait_server_stats(krait_server *srv, int64_t *out, int n);
/* How a worker the core let go ended (KRAIT_EVENT_WORKER_EXIT: ask before handing the slot a
 * new worker): one of KRAIT_WORKER_END_*. Hub thread only. */
int krait_server_worker_end(krait_server *srv, int slot);
#define KRAIT_WORKER_END_RETIRED 0  /* retired, and let go once it had answered everything */
#define KRAIT_WORKER_END_DIED 1     /* its socket closed or failed: it died, or was killed */
#define KRAIT_WORKER_END_TIMEOUT 2  /* killed by the core: a request overran worker_timeout */
#define KRAIT_WORKER_END_BROKEN 3   /* killed by the core: it broke the worker protocol */

/* The client address the JSON access log writes as remote (docs/design.md, "The access log's
 * client address"): for a request from peer (an address, or "unix") carrying the
 * X-Forwarded-For field lines lines[i] (lens[i] bytes each), behind the --trusted-proxy specs
 * given, the walk krait/_proxy.py does. No server needed: for tests and tools. out gets at
 * most 48 bytes, NUL included. Returns 1 when it differs from peer, 0 when not, KRAIT_EINVAL
 * for a bad spec or more than 64 specs or lines. */
int krait_xff_client(const char *const *specs, int nspecs, const char *peer,
                     const char *const *lines, const size_t *lens, int nlines, char *out);

const char *krait_strerror(int rc);
int krait_native_version(void);
/* cdef:end */

#endif
