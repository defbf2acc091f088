/* The core's side of the worker pool: the bounded wait queue, handing request frames to
 * workers (keeping each fed with up to worker_pipeline requests), turning their response
 * frames into HTTP responses (inline, sendfile or chunked stream, with backpressure), and a
 * worker's end: 502 to the request it was running, 504 and SIGKILL on overrun, the requests it
 * had not started to another worker. Every byte a worker sends is checked as hostile: frames
 * by ipc.c, header names and values and statuses here.
 *
 * Post, don't call: an answer is appended to its connection, which is posted; socket
 * failures are marks; the driver (krait__worker_drive, from loop.c) parses, writes, lets
 * failed workers go and feeds the queue, and Python hears of a worker's end from the driver
 * only (krait__event_push), never from inside this file. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "body.h"
#include "channels.h"
#include "conn.h"
#include "ipc.h"
#include "response.h"
#include "stats.h"
#include "tables.h"
#include "wio.h"
#include "worker.h"
#include "wsconn.h"

/* A streamed response whose client has more than STREAM_PAUSE bytes not yet taken pauses its
 * worker; it goes on once the client is down to STREAM_RESUME. */
#define STREAM_PAUSE (1u << 20)
#define STREAM_RESUME (256u << 10)

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int krait_server_add_worker(krait_server *srv, int fd, int pid, int pidfd)
{
    int slot = -1;
    for (int i = 0; i < KRAIT__MAX_WORKERS; i++)
        if (srv->workers[i].fd < 0) {
            slot = i;
            break;
        }
    if (slot < 0)
        return KRAIT_ELIMIT;
    krait__worker *w = &srv->workers[slot];
    uint32_t gen = w->gen + 1;
    free(w->in);
    free(w->out);
    memset(w, 0, sizeof *w);
    w->kind = OBJ_WORKER;
    w->fd = fd;
    w->pid = pid;
    w->pidfd = pidfd;
    w->gen = gen;
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        w->fd = -1;
        w->pidfd = -1;
        return KRAIT_ESYS;
    }
    if (slot >= srv->nworkers)
        srv->nworkers = slot + 1;
    srv->feed_needed = 1;  /* it can take a waiting request: the driver hands it over */
    /* The metrics' worker gauges count it at once: the first workers are added before the
     * loop's first turn, and a scrape may come in between (the banner is already out). */
    krait__stat_publish_hub(srv);
    return slot;
}

int krait_server_retire_worker(krait_server *srv, int slot)
{
    if (slot < 0 || slot >= KRAIT__MAX_WORKERS || srv->workers[slot].fd < 0)
        return KRAIT_EINVAL;
    krait__worker *w = &srv->workers[slot];
    w->retiring = 1;
    krait__wio_post(srv, w);  /* the driver lets it go once it is idle */
    return KRAIT_OK;
}

static int hop_by_hop(const krait__slice *name)
{
    static const char *const skip[] = {"content-length", "transfer-encoding", "connection",
                                       "date", "server", "keep-alive", "upgrade", "te",
                                       "trailer", "proxy-connection"};
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (name->n == strlen(skip[i]) && strncasecmp(name->p, skip[i], name->n) == 0)
            return 1;
    return 0;
}

/* ---- dispatch --------------------------------------------------------------------------- */

/* Finish the frame: the body (or the spooled file's path) replaces the empty body string
 * krait__ipc_encode_request wrote last, and the frame length is patched. */
static int finish_frame(struct krait_server *srv, krait__conn *c)
{
    const char *body = c->body ? c->body : "";
    size_t blen = c->body_len;
    if (c->spool) {
        /* Large bodies travel by path: the worker streams them from disk (multipart). */
        c->frame[9] |= KRAIT__REQ_BODY_FILE;
        body = c->spool;
        blen = strlen(c->spool);
    }
    size_t need = c->frame_len + blen;
    if (need > KRAIT__IPC_MAX_FRAME)
        return -1;
    uint8_t *f = realloc(c->frame, need);
    if (!f)
        return -1;
    c->frame = f;
    put_u32(f + c->frame_len - 4, (uint32_t)blen);
    memcpy(f + c->frame_len, body, blen);
    c->frame_len = need;
    put_u32(f, (uint32_t)(need - 4));
    krait__body_release(srv, c);
    return 0;
}

/* A request is queued behind a busy worker's running one only while that one is young: a
 * slow script must not hold back the requests an idle worker could soon take from the wait
 * queue. Short requests (the case pipelining is for) finish well within this. */
#define PIPELINE_WINDOW_MS 50

/* The worker with the fewest requests in hand, if one can take another: an idle worker
 * first, else one whose running request would otherwise leave it waiting for the next. */
static krait__worker *pick_worker(struct krait_server *srv)
{
    krait__worker *best = NULL;
    int depth = (int)srv->limits[KRAIT_LIMIT_WORKER_DEPTH];
    for (int i = 0; i < srv->nworkers; i++) {
        krait__worker *w = &srv->workers[i];
        if (w->fd < 0 || w->retiring || w->njobs >= depth)
            continue;
        if (w->njobs && srv->now_ms - w->started >= PIPELINE_WINDOW_MS)
            continue;
        if (!w->njobs)
            return w;
        if (!best || w->njobs < best->njobs)
            best = w;
    }
    return best;
}

/* The frame stays with the connection until its answer comes: if the worker dies before
 * starting the request, it is sent to another one (requeue_jobs). */
static void assign(struct krait_server *srv, krait__worker *w, krait__conn *c)
{
    if (!w->njobs) {
        w->deadline = srv->now_ms + srv->limits[KRAIT_LIMIT_WORKER_TIMEOUT];
        w->started = srv->now_ms;
    }
    c->worker = (int)(w - srv->workers);
    c->worker_gen = w->gen;
    c->req_id = ++srv->next_req_id;
    w->jobs[w->njobs].conn = c;
    w->jobs[w->njobs].id = c->req_id;
    w->jobs[w->njobs].question = c->routing ? KRAIT__Q_ROUTE : c->cache_q ? KRAIT__Q_CACHE : 0;
    w->njobs++;
    put_u32(c->frame + 5, c->req_id);
    krait__wio_append(srv, w, c->frame, c->frame_len);  /* sent by the driver */
}

/* jobs[0] is answered: the next one (already in the worker's socket) starts now. */
static void job_done(struct krait_server *srv, krait__worker *w)
{
    krait__conn *c = w->jobs[0].conn;
    w->streaming = 0;
    w->njobs--;
    memmove(&w->jobs[0], &w->jobs[1], (size_t)w->njobs * sizeof w->jobs[0]);
    w->deadline = w->njobs ? srv->now_ms + srv->limits[KRAIT_LIMIT_WORKER_TIMEOUT] : 0;
    w->started = srv->now_ms;
    if (c) {
        free(c->frame);
        c->frame = NULL;
        c->frame_len = 0;
    }
}

/* The worker is gone: the requests it had not started go back to the head of the wait
 * queue, in order, for another worker. */
static void requeue_jobs(struct krait_server *srv, krait__worker *w)
{
    for (int i = w->njobs - 1; i >= 1; i--) {
        krait__conn *c = w->jobs[i].conn;
        if (!c || c->closed || !c->frame)
            continue;
        c->worker = -1;
        krait__link_prepend(&srv->waitq, &c->wq);
        srv->nwait++;
    }
    w->njobs = 0;
}

static void feed(struct krait_server *srv)
{
    while (!krait__list_empty(&srv->waitq)) {
        krait__worker *w = pick_worker(srv);
        if (!w)
            return;
        krait__conn *c = KRAIT__CONTAINER(srv->waitq.next, krait__conn, wq);
        krait__link_remove(&c->wq);
        srv->nwait--;
        assign(srv, w, c);
    }
}

static void hand_over(struct krait_server *srv, krait__conn *c);

void krait__worker_submit(struct krait_server *srv, krait__conn *c)
{
    if (finish_frame(srv, c) < 0) {
        krait__error_now(srv, c, 500, 1);
        return;
    }
    hand_over(srv, c);
}

/* A question frame (KRAIT__REQ_ROUTE or KRAIT__REQ_CACHE) about path, for a worker; the
 * request of c waits unconsumed. Returns -1 when it could not be built (c is answered). */
static int ask(struct krait_server *srv, krait__conn *c, uint8_t flags, int route,
               const char *path, size_t len)
{
    krait__ipc_request r = {
        .flags = flags, .route = route, .method = {"", 0}, .path = {path, len},
        .query = {"", 0}, .version = {"", 0}, .file = {"", 0}, .remote_addr = {"", 0},
        .body = {"", 0},
    };
    size_t size = krait__ipc_request_size(&r);
    free(c->frame);
    free(c->route_path);
    c->frame = malloc(size);
    c->route_path = malloc(len + 1);
    long n = c->frame && c->route_path ? krait__ipc_encode_request(&r, c->frame, size) : -1;
    if (n < 0) {
        krait__error_now(srv, c, 500, 1);
        return -1;
    }
    memcpy(c->route_path, path, len);
    c->route_path[len] = '\0';
    c->frame_len = (size_t)n;
    return 0;
}

void krait__worker_route(struct krait_server *srv, krait__conn *c, int verb, const char *path,
                         size_t len)
{
    if (ask(srv, c, KRAIT__REQ_ROUTE, verb, path, len) < 0)
        return;
    c->route_verb = verb;
    c->routing = 1;
    KRAIT__STAT_ADD(srv, KRAIT_STAT_ROUTE_CALLS, 1);
    hand_over(srv, c);
}

void krait__worker_cache_question(struct krait_server *srv, krait__conn *c, const char *rel,
                                  size_t len)
{
    c->cache_asked = 0;
    if (ask(srv, c, KRAIT__REQ_CACHE, 0, rel, len) < 0)
        return;
    c->cache_q = 1;
    KRAIT__STAT_ADD(srv, KRAIT_STAT_CACHE_CALLS, 1);
    hand_over(srv, c);
}

static void hand_over(struct krait_server *srv, krait__conn *c)
{
    c->state = CS_WORKER;
    krait__timer_set(srv, c, -1);
    krait__worker *w = pick_worker(srv);
    if (w) {
        assign(srv, w, c);
        return;
    }
    if ((int64_t)srv->nwait >= srv->limits[KRAIT_LIMIT_QUEUE] || srv->nworkers == 0) {
        /* RFC 9110 §15.6.4: overloaded; tell the client when to retry. */
        free(c->frame);
        c->frame = NULL;
        /* A question's request was never consumed: it must not be read again (close). */
        krait__error_now(srv, c, 503, c->routing || c->cache_q);
        c->routing = 0;
        c->cache_q = 0;
        return;
    }
    krait__link_append(&srv->waitq, &c->wq);
    srv->nwait++;
}

void krait__worker_dispatch(struct krait_server *srv, krait__conn *c, krait__request *rq, int route,
                            const char *file, const char *params, size_t params_len)
{
    c->stat_kind = rq->info.upgrade_websocket ? KRAIT_KIND_WEBSOCKET : KRAIT_KIND_PYTHON;
    /* Header and parameter slices for the frame. */
    krait__slice hs[2 * KRAIT__MAX_HEADERS_CAP];
    for (size_t i = 0; i < srv->nhdr; i++) {
        hs[2 * i] = (krait__slice){srv->hdr[i].name, srv->hdr[i].name_len};
        hs[2 * i + 1] = (krait__slice){srv->hdr[i].value, srv->hdr[i].value_len};
    }
    krait__slice ps[256];
    size_t np = 0;
    /* params: u16 count | (str name, str value)*; decoded here into slices. */
    if (params && params_len >= 2) {
        const uint8_t *p = (const uint8_t *)params, *end = p + params_len;
        size_t count = (size_t)p[0] | ((size_t)p[1] << 8);
        p += 2;
        for (size_t i = 0; i < count && np < 128; i++) {
            for (int k = 0; k < 2; k++) {
                if (end - p < 4)
                    goto params_done;
                uint32_t n = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                             ((uint32_t)p[3] << 24);
                p += 4;
                if ((size_t)(end - p) < n)
                    goto params_done;
                ps[2 * np + (size_t)k] = (krait__slice){(const char *)p, n};
                p += n;
            }
            np++;
        }
    }
params_done:;
    if (rq->info.upgrade_websocket && krait__ws_handshake_check(srv, c, rq) != 0)
        return;
    char ver[9];
    snprintf(ver, sizeof ver, "HTTP/1.%d", rq->version_minor);
    krait__ipc_request r = {
        .id = 0,
        .flags = (uint8_t)((rq->info.upgrade_websocket ? KRAIT__REQ_WEBSOCKET : 0) |
                           (c->ssl ? KRAIT__REQ_TLS : 0) |
                           (c->proxy_done ? KRAIT__REQ_PROXIED : 0)),
        .route = route,
        .method = {rq->method, rq->method_len},
        .path = {rq->path, rq->path_len},
        .query = {rq->query ? rq->query : "", rq->query_len},
        .version = {ver, 8},
        .file = {file, strlen(file)},
        .remote_addr = {c->peer, strlen(c->peer)},
        .remote_port = (uint16_t)c->peer_port,
        .server_addr = {c->local, strlen(c->local)},
        .server_port = (uint16_t)c->local_port,
        .params = ps, .nparams = np,
        .headers = hs, .nheaders = srv->nhdr,
        .body = {"", 0},
    };
    size_t size = krait__ipc_request_size(&r);
    free(c->frame);
    c->frame = malloc(size);
    long n = c->frame ? krait__ipc_encode_request(&r, c->frame, size) : -1;
    if (n < 0) {
        krait__error(srv, c, rq, 500, 1);
        return;
    }
    c->frame_len = (size_t)n;
    c->head_only = rq->is_head;
    c->keep_alive = rq->info.keep_alive && !srv->draining;  /* the body will be read */
    krait__log_begin(srv, c, rq, 0, 0);  /* status and size are filled in by the response */
    if (rq->has_body) {
        krait__body_start(srv, c, rq, 0);
        return;
    }
    c->body_len = 0;
    krait__worker_submit(srv, c);
}

/* ---- responses from workers ------------------------------------------------------------- */

static void kill_broken(struct krait_server *srv, krait__worker *w);

static void deliver(struct krait_server *srv, krait__worker *w, const krait__ipc_frame *f)
{
    krait__conn *c = w->jobs[0].conn;
    if (c && c->closed)
        c = NULL;
    int question = w->jobs[0].question;
    if (question || f->type == KRAIT__IPC_ROUTE_ANSWER || f->type == KRAIT__IPC_CACHE_ANSWER) {
        /* A question takes its own kind of answer only, and a request neither kind. */
        if (f->type != (question == KRAIT__Q_ROUTE   ? KRAIT__IPC_ROUTE_ANSWER
                        : question == KRAIT__Q_CACHE ? KRAIT__IPC_CACHE_ANSWER
                                                     : -1)) {
            kill_broken(srv, w);
            return;
        }
        job_done(srv, w);
        if (!c)
            return;
        c->worker = -1;
        if (question == KRAIT__Q_ROUTE) {
            c->routing = 0;
            if (krait__route_store(srv, c->route_verb, c->route_path, strlen(c->route_path),
                                   f->route, (int)f->allow, f->body.p, f->body.n, f->params.p,
                                   f->params.n) < 0) {
                krait__error_now(srv, c, 502, 1);  /* an answer the core cannot use */
                return;
            }
            c->route_asked = 1;
        } else {
            /* Flags ipc.c has checked: a combination the rules can give. Cached on the hub
             * for every loop; this request uses its own copy, whatever the cache evicts. */
            c->cache_q = 0;
            krait__cache_store(srv, c->route_path, strlen(c->route_path), (int)f->allow);
            c->cache_asked = 1;
            c->cache_answer = (int)f->allow;
        }
        /* Take the request again from the start: the answer is cached now. */
        c->state = CS_HEAD;
        memset(&c->hrs, 0, sizeof c->hrs);
        krait__conn_post(srv, c);
        return;
    }
    if (f->type == KRAIT__IPC_RESPONSE) {
        int stream = f->body_kind == KRAIT__BODY_STREAM;
        if (!stream)
            job_done(srv, w);
        else
            w->streaming = 1;
        if (!c)
            return;  /* the client left; the answer is dropped */
        int status = f->status;
        if (c->ws_key[0]) {
            if (status == 101 && !stream) {
                /* The worker accepted the WebSocket: the connection stays bound to it. */
                krait__out_reset(c);
                krait__ws_accept_response(srv, c, f);
                krait__log_worker(srv, c, (int)(w - srv->workers), w->pid, f);
                krait__log_status(srv, c, 101, 0);
                c->state = CS_WRITE;
                krait__conn_post(srv, c);
                return;
            }
            c->ws_key[0] = '\0';
            c->keep_alive = 0;  /* refused: answer as the script said, then close (§12.1) */
        }
        if (status < 200) {
            /* An interim answer is never a script's final one (RFC 9110 §15.2): sent as such
             * it would desynchronise the connection (a 101 without Upgrade, a 100 that leaves
             * a proxy waiting). */
            if (stream) {
                kill_broken(srv, w);  /* its chunks would follow: a broken worker (502) */
                return;
            }
            c->worker = -1;
            krait__error_now(srv, c, 500, 0);
            return;
        }
        if (!stream)
            c->worker = -1;
        krait__out_reset(c);
        int file_fd = -1;
        uint64_t file_size = 0;
        if (f->body_kind == KRAIT__BODY_FILE) {
            char path[KRAIT__PATH_MAX];
            size_t n = f->body.n < sizeof path - 1 ? f->body.n : sizeof path - 1;
            memcpy(path, f->body.p, n);
            path[n] = '\0';
            file_fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
            struct stat st;
            if (file_fd < 0 || fstat(file_fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                if (file_fd >= 0)
                    close(file_fd);
                krait__error_now(srv, c, 500, 0);
                return;
            }
            file_size = (uint64_t)st.st_size;
        }
        size_t from = c->out_len;
        krait__resp_start(srv, c, status);
        const uint8_t *at = f->headers_at;
        for (size_t i = 0; i < f->nheaders; i++) {
            krait__slice name, value;
            krait__ipc_next_pair(&at, &name, &value);
            if (!krait__header_ok(&name, &value) || hop_by_hop(&name))
                continue;  /* never let a script split or frame the response */
            krait__out_add(c, name.p, name.n);
            krait__out_add(c, ": ", 2);
            krait__out_add(c, value.p, value.n);
            krait__out_add(c, "\r\n", 2);
        }
        int no_body = status == 204 || status == 304 || status < 200;
        uint64_t blen = f->body_kind == KRAIT__BODY_FILE ? file_size : f->body.n;
        if (stream && !no_body) {
            if (c->http10)
                c->keep_alive = 0;  /* HTTP/1.0 has no chunked coding: close-delimited */
            else
                krait__out_str(c, "Transfer-Encoding: chunked\r\n");
            krait__resp_end_headers(srv, c, -1);
            c->streaming = 1;
        } else {
            krait__resp_end_headers(srv, c, no_body ? -1 : (int64_t)blen);
            if (stream) {
                /* A streamed 204/304 has no body: the answer is whole now. The job keeps its
                 * place for the CHUNK/END frames that follow, without the connection (they
                 * are dropped), which may meanwhile go on to another worker. */
                w->jobs[0].conn = NULL;
                c->worker = -1;
            }
        }
        if (!no_body && !c->head_only && !stream) {
            if (f->body_kind == KRAIT__BODY_FILE) {
                krait__seg_mem(c, from);
                c->file_fd = file_fd;
                file_fd = -1;
                krait__seg_file(c, 0, file_size);
                from = c->out_len;
            } else {
                krait__out_add(c, f->body.p, f->body.n);
            }
        }
        if (file_fd >= 0)
            close(file_fd);
        krait__seg_mem(c, from);
        krait__log_worker(srv, c, (int)(w - srv->workers), w->pid, f);
        krait__log_status(srv, c, status, c->head_only || no_body ? 0 : blen);
        c->state = CS_WRITE;
        krait__timer_set(srv, c, -1);
        krait__conn_post(srv, c);
        return;
    }
    if (f->type == KRAIT__IPC_CHUNK || f->type == KRAIT__IPC_END) {
        if (f->type == KRAIT__IPC_END) {
            job_done(srv, w);
        } else {
            w->deadline = srv->now_ms + srv->limits[KRAIT_LIMIT_WORKER_TIMEOUT];
        }
        if (!c || !c->streaming)
            return;
        size_t from = c->out_len;
        if (!c->head_only) {
            if (c->http10) {
                if (f->type == KRAIT__IPC_CHUNK)
                    krait__out_add(c, f->body.p, f->body.n);
            } else if (f->type == KRAIT__IPC_CHUNK && f->body.n) {
                char hex[20];
                int n = snprintf(hex, sizeof hex, "%zx\r\n", f->body.n);
                krait__out_add(c, hex, (size_t)n);
                krait__out_add(c, f->body.p, f->body.n);
                krait__out_add(c, "\r\n", 2);
            } else if (f->type == KRAIT__IPC_END) {
                krait__out_str(c, "0\r\n\r\n");
            }
        }
        if (f->type == KRAIT__IPC_END) {
            c->streaming = 0;
            c->worker = -1;
        }
        if (c->seg_i >= c->nseg && c->out_len > from) {
            /* Everything before was sent: restart the buffer at this piece. */
            memmove(c->out, c->out + from, c->out_len - from);
            c->out_len -= from;
            from = 0;
            c->nseg = c->seg_i = 0;
            c->seg_done = 0;
        }
        krait__seg_mem(c, from);
        krait__conn_post(srv, c);
    }
}

/* ---- a worker's end --------------------------------------------------------------------- */

static void worker_gone(struct krait_server *srv, krait__worker *w, int status_for_client)
{
    if (w->fd < 0)
        return;
    krait__conn *c = w->njobs ? w->jobs[0].conn : NULL;
    epoll_ctl(srv->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    close(w->fd);
    w->fd = -1;
    if (w->pidfd >= 0)
        close(w->pidfd);
    w->pidfd = -1;
    requeue_jobs(srv, w);
    w->deadline = 0;
    w->out_len = w->out_off = 0;
    w->in_len = 0;
    w->paused = w->out_later = w->parse_later = w->failed = w->eof = w->streaming = 0;
    int slot = (int)(w - srv->workers), pid = w->pid;
    if (c && !c->closed) {
        c->worker = -1;
        free(c->frame);
        c->frame = NULL;
        c->frame_len = 0;
        if (c->streaming) {
            /* Part of the body is gone already: the only honest signal is to cut the stream. */
            krait__conn_close(srv, c);
        } else {
            /* A question's request was never consumed: answer and close. */
            krait__error_now(srv, c, status_for_client ? status_for_client : 502,
                             c->routing || c->cache_q);
            c->routing = 0;
            c->cache_q = 0;
        }
    }
    /* RFC 6455 §7.4.1: a worker retired by a reload is "going away" (1001: reconnect to
     * the new code); one that died hit "an unexpected condition" (1011). */
    krait__ws_worker_died(srv, slot, w->retiring ? 1001 : 1011);
    krait__event_push(srv, KRAIT_EVENT_WORKER_EXIT, slot, pid);
    srv->feed_needed = 1;  /* the requests it had not started, to the others */
}

/* A worker that breaks the protocol is broken: killed and replaced, its client gets 502. */
static void kill_broken(struct krait_server *srv, krait__worker *w)
{
    w->end = KRAIT_WORKER_END_BROKEN;
    krait__wio_kill(w);
    worker_gone(srv, w, 502);
}

void krait__worker_event(struct krait_server *srv, krait__worker *w, uint32_t events)
{
    if (w->fd < 0)
        return;
    if (events & EPOLLOUT)
        krait__wio_write(srv, w);
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (!w->paused)
            krait__wio_read(srv, w);
        else if (events & (EPOLLHUP | EPOLLERR))
            w->eof = 1, krait__wio_post(srv, w);
    }
}

/* Handle the whole frames in w->in; stop early when jobs[0]'s client falls behind. */
static void worker_parse(struct krait_server *srv, krait__worker *w)
{
    size_t off = 0;
    while (off < w->in_len && !w->paused) {
        krait__ipc_frame f;
        long n = krait__ipc_parse(w->in + off, w->in_len - off, &f);
        if (n == KRAIT__IPC_NEED_MORE)
            break;
        if (n < 0) {
            kill_broken(srv, w);  /* garbage */
            return;
        }
        if (f.type == KRAIT__IPC_WS_MESSAGE || f.type == KRAIT__IPC_WS_CLOSE) {
            krait__ws_from_worker(srv, &f, (int)(w - srv->workers), w->gen);
        } else if (f.type == KRAIT__IPC_WS_SUBSCRIBE || f.type == KRAIT__IPC_WS_UNSUBSCRIBE ||
                   f.type == KRAIT__IPC_PUBLISH) {
            krait__chan_frame(srv, &f, (int)(w - srv->workers), w->gen);
        } else if (!w->njobs || f.id != w->jobs[0].id ||
                   (f.type == KRAIT__IPC_RESPONSE && w->streaming) ||
                   ((f.type == KRAIT__IPC_CHUNK || f.type == KRAIT__IPC_END) && !w->streaming) ||
                   ((f.type == KRAIT__IPC_ROUTE_ANSWER || f.type == KRAIT__IPC_CACHE_ANSWER) &&
                    w->streaming)) {
            /* Workers answer in order, only what they were asked, and a request once: one
             * RESPONSE (or ROUTE_ANSWER, CACHE_ANSWER), then CHUNK and END only after a
             * streamed one. */
            kill_broken(srv, w);
            return;
        } else {
            deliver(srv, w, &f);
            if (w->fd < 0)
                return;
        }
        off += (size_t)n;
        if (f.type == KRAIT__IPC_CHUNK) {
            krait__conn *c = w->njobs ? w->jobs[0].conn : NULL;
            if (c && !c->closed && c->streaming && krait__conn_unsent(c) > STREAM_PAUSE) {
                w->paused = 1;  /* the client is behind: stop reading this worker */
                krait__wio_interest(srv, w);
            }
        }
    }
    if (off) {
        memmove(w->in, w->in + off, w->in_len - off);
        w->in_len -= off;
    }
    srv->feed_needed = 1;
}

int krait__worker_drive(struct krait_server *srv)
{
    int did = 0;
    while (srv->workers_dirty || srv->feed_needed) {
        srv->workers_dirty = 0;
        for (int i = 0; i < srv->nworkers; i++) {
            krait__worker *w = &srv->workers[i];
            if (w->fd < 0)
                continue;
            if (w->parse_later && !w->paused) {
                w->parse_later = 0;
                worker_parse(srv, w);
                did = 1;
                if (w->fd < 0)
                    continue;
            }
            if (w->eof || w->failed || (w->retiring && !w->njobs)) {
                /* What it had sent was parsed first: an answer read together with the
                 * end-of-file is delivered. */
                w->end = w->retiring && !w->njobs ? KRAIT_WORKER_END_RETIRED
                                                  : KRAIT_WORKER_END_DIED;
                worker_gone(srv, w, w->retiring && !w->njobs ? 0 : 502);
                did = 1;
                continue;
            }
            if (w->out_later) {
                w->out_later = 0;
                krait__wio_write(srv, w);
                did = 1;
            }
        }
        if (srv->feed_needed) {
            srv->feed_needed = 0;
            feed(srv);
        }
    }
    return did;
}

void krait__worker_sweep(struct krait_server *srv)
{
    for (int i = 0; i < srv->nworkers; i++) {
        krait__worker *w = &srv->workers[i];
        if (w->fd >= 0 && w->deadline && w->deadline <= srv->now_ms) {
            /* Overran its time: the client gets 504, the worker is killed and replaced. */
            w->end = KRAIT_WORKER_END_TIMEOUT;
            krait__wio_kill(w);
            worker_gone(srv, w, 504);
        }
    }
}

static void unpause(struct krait_server *srv, krait__worker *w)
{
    w->paused = 0;
    krait__wio_interest(srv, w);
    w->parse_later = 1;  /* what is already buffered is parsed by the driver */
    krait__wio_post(srv, w);
}

void krait__worker_drained(struct krait_server *srv, krait__conn *c)
{
    krait__worker *w = krait__conn_worker(srv, c);
    if (w && w->paused && w->njobs && w->jobs[0].conn == c &&
        krait__conn_unsent(c) <= STREAM_RESUME)
        unpause(srv, w);
}

void krait__worker_conn_gone(struct krait_server *srv, krait__conn *c)
{
    if (c->wq.next) {
        krait__link_remove(&c->wq);
        srv->nwait--;
    }
    krait__worker *w = krait__conn_worker(srv, c);
    if (w) {
        for (int i = 0; i < w->njobs; i++)
            if (w->jobs[i].conn == c)
                w->jobs[i].conn = NULL;  /* the worker still runs it; the answer is dropped */
        if (w->paused)
            unpause(srv, w);  /* the rest of the stream is read and dropped */
    }
    c->worker = -1;
}
