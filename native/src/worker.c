/* The core's side of the worker pool: reading request bodies (Content-Length or chunked, with
 * 100-continue and spooling to a temporary file), the bounded wait queue, handing request frames
 * to idle workers, turning their response frames into HTTP responses (inline, sendfile or
 * chunked stream), and worker failure: 502 on death, 504 and SIGKILL on overrun.
 * Frame encoding/decoding is ipc.c's; the workers themselves are Python (krait/worker.py). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "ipc.h"

#define WORKER_READ 65536
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

int krait_server_add_worker(krait_server *srv, int fd, int pid)
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
    free(w->in);
    free(w->out);
    memset(w, 0, sizeof *w);
    w->kind = OBJ_WORKER;
    w->fd = fd;
    w->pid = pid;
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        w->fd = -1;
        return KRAIT_ESYS;
    }
    if (slot >= srv->nworkers)
        srv->nworkers = slot + 1;
    krait__worker_feed(srv);  /* a new worker can take a waiting request at once */
    return slot;
}

static void worker_gone(krait_server *srv, krait__worker *w, int status_for_client);

int krait_server_retire_worker(krait_server *srv, int slot)
{
    if (slot < 0 || slot >= KRAIT__MAX_WORKERS || srv->workers[slot].fd < 0)
        return KRAIT_EINVAL;
    krait__worker *w = &srv->workers[slot];
    w->retiring = 1;
    if (!w->njobs)
        worker_gone(srv, w, 0);
    return KRAIT_OK;
}

/* ---- request bodies --------------------------------------------------------------------- */

static int body_append(krait_server *srv, krait__conn *c, const char *p, size_t n)
{
    if ((int64_t)(c->body_len + n) > srv->limits[KRAIT_LIMIT_BODY])
        return 413;
    if (c->body_len + n > c->body_cap) {
        size_t ncap = c->body_cap ? c->body_cap : 16384;
        while (ncap < c->body_len + n)
            ncap *= 2;
        char *b = realloc(c->body, ncap);
        if (!b)
            return 500;
        c->body = b;
        c->body_cap = ncap;
    }
    memcpy(c->body + c->body_len, p, n);
    c->body_len += n;
    return 0;
}

static void submit(krait_server *srv, krait__conn *c);

/* Finish the frame: the body (or the spooled file's path) replaces the empty body string
 * krait__ipc_encode_request wrote last, and the frame length is patched. */
static int finish_frame(krait_server *srv, krait__conn *c)
{
    const char *body = c->body ? c->body : "";
    size_t blen = c->body_len;
    char path[256];
    if ((int64_t)blen > srv->limits[KRAIT_LIMIT_SPOOL]) {
        /* Large bodies travel by path: the worker streams them from disk (multipart). */
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !*tmp || strlen(tmp) > sizeof path - 24)
            tmp = "/tmp";
        snprintf(path, sizeof path, "%s/krait-body-XXXXXX", tmp);
        int fd = mkstemp(path);
        if (fd < 0)
            return -1;
        size_t off = 0;
        while (off < blen) {
            ssize_t w = write(fd, body + off, blen - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                close(fd);
                unlink(path);
                return -1;
            }
            off += (size_t)w;
        }
        close(fd);
        snprintf(c->spool, sizeof c->spool, "%s", path);
        c->frame[9] |= KRAIT__REQ_BODY_FILE;
        body = path;
        blen = strlen(path);
        free(c->body);
        c->body = NULL;
        c->body_len = c->body_cap = 0;
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
    free(c->body);
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    return 0;
}

/* Consume body bytes from c->in[c->consume..). Returns 0 while more is needed or once the
 * request was submitted, non-zero when the connection got an error response. */
int krait__body_continue(krait_server *srv, krait__conn *c)
{
    int status = 0;
    int complete = 0;
    size_t avail = c->in_len - c->consume;
    if (c->body_need >= 0) {
        size_t take = avail < (uint64_t)c->body_need ? avail : (size_t)c->body_need;
        status = body_append(srv, c, c->in + c->consume, take);
        c->consume += take;
        c->body_need -= (int64_t)take;
        complete = c->body_need == 0;
    } else {
        while (!status && c->consume < c->in_len) {
            char tmp[16384];
            size_t used = 0, produced = 0;
            int r = krait__chunked_decode(&c->chunk, c->in + c->consume, c->in_len - c->consume,
                                          &used, tmp, sizeof tmp, &produced);
            c->consume += used;
            if (r == KRAIT__MALFORMED) {
                status = 400;
                break;
            }
            if (produced)
                status = body_append(srv, c, tmp, produced);
            if (r == 1) {
                complete = 1;
                break;
            }
            if (!used && !produced)
                break;
        }
    }
    if (status) {
        krait__timer_set(srv, c, -1);
        c->out_len = 0;
        c->nseg = c->seg_i = 0;
        krait__error(srv, c, NULL, status, 1);
        c->state = CS_WRITE;
        krait__conn_flush(srv, c);
        return 1;
    }
    /* The head and the body bytes are no longer needed: keep only what follows. */
    if (c->consume) {
        memmove(c->in, c->in + c->consume, c->in_len - c->consume);
        c->in_len -= c->consume;
        c->consume = 0;
    }
    if (complete) {
        if (finish_frame(srv, c) < 0) {
            krait__error(srv, c, NULL, 500, 1);
            c->state = CS_WRITE;
            krait__conn_flush(srv, c);
            return 1;
        }
        submit(srv, c);
        return 0;
    }
    krait__timer_set(srv, c, TL_BODY);
    return 0;
}

/* ---- dispatch --------------------------------------------------------------------------- */

/* A request is queued behind a busy worker's running one only while that one is young: a
 * slow script must not hold back the requests an idle worker could soon take from the wait
 * queue. Short requests (the case pipelining is for) finish well within this. */
#define PIPELINE_WINDOW_MS 50

/* The worker with the fewest requests in hand, if one can take another: an idle worker
 * first, else one whose running request would otherwise leave it waiting for the next. */
static krait__worker *pick_worker(krait_server *srv)
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

static void worker_interest(krait_server *srv, krait__worker *w)
{
    struct epoll_event ev = {.events = (w->paused ? 0u : (uint32_t)EPOLLIN) |
                                       (w->epoll_out ? (uint32_t)EPOLLOUT : 0u),
                             .data.ptr = w};
    epoll_ctl(srv->epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

static void worker_write(krait_server *srv, krait__worker *w)
{
    while (w->out_off < w->out_len) {
        ssize_t n = send(w->fd, w->out + w->out_off, w->out_len - w->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!w->epoll_out) {
                w->epoll_out = 1;
                worker_interest(srv, w);
            }
            return;
        }
        if (n <= 0) {
            worker_gone(srv, w, 502);
            return;
        }
        w->out_off += (size_t)n;
    }
    w->out_off = w->out_len = 0;
    if (w->epoll_out) {
        w->epoll_out = 0;
        worker_interest(srv, w);
    }
}

/* The frame stays with the connection until its answer comes: if the worker dies before
 * starting the request, it is sent to another one (requeue_jobs). */
static void assign(krait_server *srv, krait__worker *w, krait__conn *c)
{
    if (!w->njobs) {
        w->deadline = srv->now_ms + srv->limits[KRAIT_LIMIT_WORKER_TIMEOUT];
        w->started = srv->now_ms;
    }
    c->worker = (int)(w - srv->workers);
    c->req_id = ++srv->next_req_id;
    w->jobs[w->njobs].conn = c;
    w->jobs[w->njobs].id = c->req_id;
    w->njobs++;
    put_u32(c->frame + 5, c->req_id);
    if (w->out_len + c->frame_len > w->out_cap) {
        size_t ncap = w->out_len + c->frame_len;
        uint8_t *p = realloc(w->out, ncap);
        if (!p) {
            worker_gone(srv, w, 502);
            return;
        }
        w->out = p;
        w->out_cap = ncap;
    }
    memcpy(w->out + w->out_len, c->frame, c->frame_len);
    w->out_len += c->frame_len;
    worker_write(srv, w);
}

/* jobs[0] is answered: the next one (already in the worker's socket) starts now. */
static krait__conn *job_done(krait_server *srv, krait__worker *w)
{
    krait__conn *c = w->jobs[0].conn;
    w->njobs--;
    memmove(&w->jobs[0], &w->jobs[1], (size_t)w->njobs * sizeof w->jobs[0]);
    w->deadline = w->njobs ? srv->now_ms + srv->limits[KRAIT_LIMIT_WORKER_TIMEOUT] : 0;
    w->started = srv->now_ms;
    if (c) {
        free(c->frame);
        c->frame = NULL;
        c->frame_len = 0;
    }
    return c;
}

/* The worker is gone: the requests it had not started go back to the head of the wait
 * queue, in order, for another worker. */
static void requeue_jobs(krait_server *srv, krait__worker *w)
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

void krait__worker_feed(krait_server *srv)
{
    while (srv->waitq.next != &srv->waitq) {
        krait__worker *w = pick_worker(srv);
        if (!w)
            return;
        krait__link *l = srv->waitq.next;
        krait__conn *c = (krait__conn *)((char *)l - offsetof(krait__conn, wq));
        krait__link_remove(l);
        srv->nwait--;
        assign(srv, w, c);
    }
}

static void submit(krait_server *srv, krait__conn *c)
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
        krait__error(srv, c, NULL, 503, 0);
        c->state = CS_WRITE;
        krait__conn_flush(srv, c);
        return;
    }
    krait__link_append(&srv->waitq, &c->wq);
    srv->nwait++;
}

void krait__worker_dispatch(krait_server *srv, krait__conn *c, krait__request *rq, int route,
                            const char *file, const char *params, size_t params_len)
{
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
                           (c->ssl ? KRAIT__REQ_TLS : 0)),
        .route = route,
        .method = {rq->method, rq->method_len},
        .path = {rq->path, rq->path_len},
        .query = {rq->query ? rq->query : "", rq->query_len},
        .version = {ver, 8},
        .file = {file, strlen(file)},
        .remote_addr = {c->peer, strlen(c->peer)},
        .remote_port = (uint16_t)c->peer_port,
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
    c->body_len = 0;
    if (rq->has_body) {
        c->state = CS_BODY;
        c->body_need = rq->info.chunked ? -1 : rq->info.content_length;
        memset(&c->chunk, 0, sizeof c->chunk);
        if (rq->info.expect_continue && rq->version_minor == 1) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (c->in_len == c->consume)
                (void)!krait__conn_send(srv, c, cont, sizeof cont - 1, 0);
        }
        krait__body_continue(srv, c);
        return;
    }
    if (finish_frame(srv, c) < 0) {
        krait__error(srv, c, rq, 500, 1);
        return;
    }
    submit(srv, c);
}

/* ---- responses from workers ------------------------------------------------------------- */

static int hop_by_hop(const krait__slice *name)
{
    static const char *const skip[] = {"content-length", "transfer-encoding", "connection",
                                       "date", "server", "keep-alive"};
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (name->n == strlen(skip[i]) && strncasecmp(name->p, skip[i], name->n) == 0)
            return 1;
    return 0;
}

static void deliver(krait_server *srv, krait__worker *w, const krait__ipc_frame *f)
{
    krait__conn *c = w->jobs[0].conn;
    if (f->type == KRAIT__IPC_RESPONSE) {
        int stream = f->body_kind == KRAIT__BODY_STREAM;
        if (!stream)
            job_done(srv, w);
        if (!c)
            return;  /* the client left; the answer is dropped */
        if (c->ws_key[0]) {
            if (f->status == 101) {
                /* The worker accepted the WebSocket: the connection stays bound to it. */
                c->out_len = 0;
                c->nseg = c->seg_i = 0;
                krait__ws_accept_response(srv, c, f);
                krait__log_status(c, 101, 0);
                c->state = CS_WRITE;
                krait__conn_flush(srv, c);
                return;
            }
            c->ws_key[0] = '\0';
            c->keep_alive = 0;  /* refused: answer as the script said, then close (§12.1) */
        }
        if (!stream)
            c->worker = -1;
        c->out_len = 0;
        c->nseg = c->seg_i = 0;
        int status = f->status;
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
                krait__error(srv, c, NULL, 500, 0);
                c->state = CS_WRITE;
                krait__conn_flush(srv, c);
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
            if (hop_by_hop(&name) || memchr(value.p, '\n', value.n) ||
                memchr(value.p, '\r', value.n) || memchr(name.p, ':', name.n))
                continue;  /* never let a script split the response */
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
        krait__log_status(c, status, c->head_only || no_body ? 0 : blen);
        c->state = CS_WRITE;
        krait__conn_flush(srv, c);
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
        }
        krait__seg_mem(c, from);
        krait__conn_flush(srv, c);
    }
}

static void worker_gone(krait_server *srv, krait__worker *w, int status_for_client)
{
    if (w->fd < 0)
        return;
    krait__conn *c = w->njobs ? w->jobs[0].conn : NULL;
    epoll_ctl(srv->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    close(w->fd);
    w->fd = -1;
    requeue_jobs(srv, w);
    w->deadline = 0;
    w->out_len = w->out_off = 0;
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
            c->out_len = 0;
            c->nseg = c->seg_i = 0;
            krait__error(srv, c, NULL, status_for_client ? status_for_client : 502, 0);
            c->state = CS_WRITE;
            krait__conn_flush(srv, c);
        }
    }
    /* RFC 6455 §7.4.1: a worker retired by a reload is "going away" (1001: reconnect to
     * the new code); one that died hit "an unexpected condition" (1011). */
    krait__ws_worker_died(srv, slot, w->retiring ? 1001 : 1011);
    if (srv->event_cb)
        srv->event_cb(srv->cb_ud, KRAIT_EVENT_WORKER_EXIT, slot, pid);
    krait__worker_feed(srv);  /* requests it had not started, to the others */
}

void krait__worker_send_ws(krait_server *srv, int slot, uint8_t type, uint32_t id, unsigned arg,
                           const char *data, size_t len)
{
    if (slot < 0 || slot >= KRAIT__MAX_WORKERS)
        return;
    krait__worker *w = &srv->workers[slot];
    if (w->fd < 0)
        return;
    size_t need = KRAIT__IPC_HEADER + 2 + 4 + len;
    if (w->out_len + need > w->out_cap) {
        size_t ncap = w->out_cap ? w->out_cap : 65536;
        while (ncap < w->out_len + need)
            ncap *= 2;
        uint8_t *p = realloc(w->out, ncap);
        if (!p)
            return;
        w->out = p;
        w->out_cap = ncap;
    }
    long n = krait__ipc_encode_ws(type, id, arg, data, len, w->out + w->out_len,
                                  w->out_cap - w->out_len);
    if (n < 0)
        return;
    w->out_len += (size_t)n;
    /* Sent at the end of the event batch: the messages of many clients read in one turn go
     * to the worker in one send. */
    w->out_later = 1;
    srv->workers_later = 1;
}

void krait__worker_flush_later(krait_server *srv)
{
    if (!srv->workers_later)
        return;
    srv->workers_later = 0;
    for (int i = 0; i < srv->nworkers; i++) {
        krait__worker *w = &srv->workers[i];
        if (w->fd >= 0 && w->out_later) {
            w->out_later = 0;
            worker_write(srv, w);
        }
    }
}

static void worker_parse(krait_server *srv, krait__worker *w);

void krait__worker_event(krait_server *srv, krait__worker *w, uint32_t events)
{
    if (w->fd < 0)
        return;
    if (events & EPOLLOUT)
        worker_write(srv, w);
    if (w->fd < 0 || !(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    if (w->paused && !(events & (EPOLLHUP | EPOLLERR)))
        return;
    for (;;) {
        if (w->in_cap - w->in_len < WORKER_READ) {
            size_t ncap = w->in_cap ? w->in_cap * 2 : WORKER_READ * 2;
            uint8_t *p = realloc(w->in, ncap);
            if (!p) {
                worker_gone(srv, w, 502);
                return;
            }
            w->in = p;
            w->in_cap = ncap;
        }
        ssize_t n = recv(w->fd, w->in + w->in_len, w->in_cap - w->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            worker_gone(srv, w, 502);
            return;
        }
        w->in_len += (size_t)n;
        if ((size_t)n < w->in_cap - w->in_len)
            break;
    }
    worker_parse(srv, w);
}

/* Bytes of a connection's response not yet taken by the client. */
static uint64_t conn_unsent(const krait__conn *c)
{
    uint64_t n = 0;
    for (int i = c->seg_i; i < c->nseg; i++)
        n += c->segs[i].len;
    return c->seg_i < c->nseg ? n - c->seg_done : 0;
}

/* Handle the whole frames in w->in; stop early when jobs[0]'s client falls behind. */
static void worker_parse(krait_server *srv, krait__worker *w)
{
    size_t off = 0;
    while (off < w->in_len && !w->paused) {
        krait__ipc_frame f;
        long n = krait__ipc_parse(w->in + off, w->in_len - off, &f);
        if (n == KRAIT__IPC_NEED_MORE)
            break;
        if (n < 0) {
            /* A worker that speaks garbage is broken: replace it. */
            kill(w->pid, SIGKILL);
            worker_gone(srv, w, 502);
            return;
        }
        if (f.type == KRAIT__IPC_WS_MESSAGE || f.type == KRAIT__IPC_WS_CLOSE) {
            krait__ws_from_worker(srv, &f);
        } else if (!w->njobs || f.id != w->jobs[0].id) {
            /* Workers answer in order; anything else is a broken worker. */
            kill(w->pid, SIGKILL);
            worker_gone(srv, w, 502);
            return;
        } else {
            deliver(srv, w, &f);
        }
        off += (size_t)n;
        if (w->fd < 0)
            return;
        if (f.type == KRAIT__IPC_CHUNK) {
            krait__conn *c = w->njobs ? w->jobs[0].conn : NULL;
            if (c && c->streaming && conn_unsent(c) > STREAM_PAUSE) {
                w->paused = 1;  /* the client is behind: stop reading this worker */
                worker_interest(srv, w);
            }
        }
    }
    if (off) {
        memmove(w->in, w->in + off, w->in_len - off);
        w->in_len -= off;
    }
    if (!w->njobs && w->retiring)
        worker_gone(srv, w, 0);
    else
        krait__worker_feed(srv);
}

void krait__worker_sweep(krait_server *srv)
{
    for (int i = 0; i < srv->nworkers; i++) {
        krait__worker *w = &srv->workers[i];
        if (w->fd >= 0 && w->deadline && w->deadline <= srv->now_ms) {
            /* Overran its time: the client gets 504, the worker is killed and replaced. */
            kill(w->pid, SIGKILL);
            worker_gone(srv, w, 504);
        }
    }
    krait__worker_feed(srv);
}

static void unpause(krait_server *srv, krait__worker *w)
{
    w->paused = 0;
    worker_interest(srv, w);
    /* What is already buffered is parsed at the end of this turn, not from inside a flush
     * that worker_parse itself may have called. */
    w->resume_later = 1;
    srv->workers_resume = 1;
}

void krait__worker_drained(krait_server *srv, krait__conn *c)
{
    if (c->worker < 0)
        return;
    krait__worker *w = &srv->workers[c->worker];
    if (w->fd >= 0 && w->paused && w->njobs && w->jobs[0].conn == c &&
        conn_unsent(c) <= STREAM_RESUME)
        unpause(srv, w);
}

void krait__worker_resume_run(krait_server *srv)
{
    if (!srv->workers_resume)
        return;
    srv->workers_resume = 0;
    for (int i = 0; i < srv->nworkers; i++) {
        krait__worker *w = &srv->workers[i];
        if (w->resume_later) {
            w->resume_later = 0;
            if (w->fd >= 0 && !w->paused)
                worker_parse(srv, w);
        }
    }
}

void krait__worker_conn_gone(krait_server *srv, krait__conn *c)
{
    if (c->wq.next) {
        krait__link_remove(&c->wq);
        srv->nwait--;
    }
    if (c->worker >= 0) {
        krait__worker *w = &srv->workers[c->worker];
        for (int i = 0; i < w->njobs; i++)
            if (w->jobs[i].conn == c)
                w->jobs[i].conn = NULL;  /* the worker still runs it; the answer is dropped */
        if (w->fd >= 0 && w->paused)
            unpause(srv, w);  /* the rest of the stream is read and dropped */
        c->worker = -1;
    }
}
