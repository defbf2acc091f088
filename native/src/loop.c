/* The event loop: epoll (level-triggered), accepting, reading, signals (signalfd), timers, and
 * the driver that runs at the end of every turn.
 *
 * Post, don't call. Event handlers only read input and hand it to the layer that owns it;
 * request handlers append their answers and post the connection. The driver then, until a
 * pass finds nothing to do: sends what posted connections hold, finishes their responses and
 * takes their next pipelined request (a bounded number a turn each), tells the handlers which
 * connections closed, lets the worker layer parse, write, replace and feed, and finally tells
 * Python (worker exits, SIGHUP, SIGCHLD). Python is called only from here, when no handler's
 * frame is on the stack, so a callback that adds or retires workers cannot pull a slot from
 * under a handler; closed connections are freed only at the end of the turn. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "body.h"
#include "channels.h"
#include "conn.h"
#include "loop.h"
#include "request.h"
#include "response.h"
#include "stats.h"
#include "tls.h"
#include "wio.h"
#include "worker.h"
#include "wsconn.h"

#define READ_CHUNK 16384
#define MAX_EVENTS 256
#define ACCEPT_BATCH 64
#define ACCEPT_BATCH_SHARED 4
/* Requests of one connection answered in one turn before the others get theirs: a client
 * pipelining thousands of requests is served in slices, never in one long (or deep) run. */
#define PIPELINE_BUDGET 64
/* Out of descriptors: accepting pauses this long. */
#define ACCEPT_RETRY_MS 100
/* The longest sleep of an idle loop (no timer due sooner), and of a draining one. */
#define IDLE_SLEEP_MS 60000
#define DRAIN_POLL_MS 100

static void update_clock(struct krait_server *srv)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    srv->now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + srv->clock_offset_ms;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != srv->date_sec) {
        /* The Date header is formatted once a second. */
        srv->date_sec = ts.tv_sec;
        krait__http_date(ts.tv_sec, srv->date);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(srv->log_date, sizeof srv->log_date, "%d/%b/%Y:%H:%M:%S +0000", &tm);
    }
}

/* ---- accepting ---------------------------------------------------------------------------- */

/* Every loop watches every listener with EPOLLEXCLUSIVE: a new connection wakes one waiting
 * loop, not all of them (docs/design.md, "Loops"). An exclusive registration can't be
 * modified, only added and deleted. */
static void listeners_watch(struct krait_server *srv, int on)
{
    for (int i = 0; i < srv->nlisteners; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE,
                                 .data.ptr = &srv->listeners[i].obj};
        epoll_ctl(srv->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, srv->listeners[i].fd,
                  on ? &ev : NULL);
    }
}

/* Open connections of the whole server (every loop). */
static int64_t total_conns(struct krait_server *srv)
{
    return __atomic_load_n(&srv->hub->total_conns, __ATOMIC_RELAXED);
}

/* At the connection cap (until one closes) or out of descriptors (for a while): the
 * listeners leave epoll's interest, or their pending connections would wake every turn. */
static void pause_accepting(struct krait_server *srv, int64_t retry_at)
{
    if (!srv->accept_paused)
        listeners_watch(srv, 0);
    srv->accept_paused = 1;
    srv->accept_resume_ms = retry_at;
}

static void maybe_resume_accepting(struct krait_server *srv)
{
    if (!srv->accept_paused || srv->draining)
        return;
    if (srv->accept_resume_ms ? srv->now_ms < srv->accept_resume_ms
                              : total_conns(srv) >= srv->limits[KRAIT_LIMIT_MAX_CONNS])
        return;
    srv->accept_paused = 0;
    srv->accept_resume_ms = 0;
    listeners_watch(srv, 1);
}

/* An address as the connection keeps it (peer, local; 48 bytes): the IP address in text, or
 * "unix" for a Unix socket (its path is not an address a client used), or "-" for any other
 * family. Returns the port, 0 when there is none. */
static int addr_text(const struct sockaddr_storage *ss, char out[48])
{
    snprintf(out, 48, "-");
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, out, 48);
        return ntohs(a->sin_port);
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, out, 48);
        return ntohs(a->sin6_port);
    }
    if (ss->ss_family == AF_UNIX)
        snprintf(out, 48, "unix");
    return 0;
}

/* The connection's own end: the address and port the client reached (getsockname, once per
 * connection: a listener bound to 0.0.0.0 or [::] accepts on whichever address the client
 * named). A PROXY header never changes it; requests carry it as server_addr/server_port. */
static void local_end(krait__conn *c)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (getsockname(c->fd, (struct sockaddr *)&ss, &sl) < 0)
        ss.ss_family = AF_UNSPEC;
    c->local_port = addr_text(&ss, c->local);
}

/* Is this socket peer (as accept_some writes it: an address, or "unix") a trusted proxy? */
static int proxy_trusted(struct krait_server *srv, const char *peer)
{
    if (strcmp(peer, "unix") == 0)
        return srv->trust_unix;
    return krait__cidr_match(srv->trusted, srv->ntrusted, peer);
}

/* A new connection; reserved: its place under the cap is already counted in total_conns. */
static krait__conn *adopt(struct krait_server *srv, int fd, int tls, const char *peer,
                          int peer_port, int reserved)
{
    if (!reserved)
        __atomic_add_fetch(&srv->hub->total_conns, 1, __ATOMIC_RELAXED);
    krait__conn *c = calloc(1, sizeof *c);
    if (!c) {
        __atomic_sub_fetch(&srv->hub->total_conns, 1, __ATOMIC_RELAXED);
        close(fd);
        return NULL;
    }
    c->kind = OBJ_CONN;
    c->fd = fd;
    c->file_fd = c->body_fd = -1;
    c->timer_list = -1;
    c->worker = -1;
    c->state = CS_HEAD;
    c->id = ++srv->next_conn_id;
    c->home = srv->loop_index;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    c->peer_port = peer_port;
    local_end(c);
    /* --proxy-protocol: a trusted proxy's connection starts with a PROXY header; anyone
     * else's bytes are never read as one (they cannot name a client). */
    c->peer_trusted = (srv->ntrusted || srv->trust_unix) && proxy_trusted(srv, peer);
    c->proxy_wait = srv->proxy_protocol && c->peer_trusted;
    c->events = EPOLLIN | EPOLLRDHUP;
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        __atomic_sub_fetch(&srv->hub->total_conns, 1, __ATOMIC_RELAXED);
        close(fd);
        free(c);
        return NULL;
    }
    if (tls && krait__tls_start(srv, c) < 0) {
        __atomic_sub_fetch(&srv->hub->total_conns, 1, __ATOMIC_RELAXED);
        epoll_ctl(srv->epfd, EPOLL_CTL_DEL, fd, NULL);
        close(fd);
        free(c);
        return NULL;
    }
    krait__link_append(&srv->conns, &c->all);
    srv->nconns++;
    KRAIT__STAT_ADD(srv, KRAIT_STAT_CONNS, 1);
    /* A connection that sends nothing is closed silently after the header timeout. */
    krait__timer_set(srv, c, TL_HEAD);
    return c;
}

krait__conn *krait__loop_adopt(struct krait_server *srv, int fd, int tls, const char *peer,
                               int peer_port)
{
    return adopt(srv, fd, tls, peer, peer_port, 0);
}

static int accept_some(struct krait_server *srv, int lfd, int tls, int batch);

/* With several loops, a loop takes a few connections a wake-up and leaves the rest to the
 * others, then moves its registration to the back of the listener's queue: EPOLLEXCLUSIVE
 * wakes the first idle loop in that queue, so without this every connection of a quiet
 * server would land on loop 0; with it, idle loops take turns. */
static void accept_ready(struct krait_server *srv, int k)
{
    int lfd = srv->listeners[k].fd, tls = srv->listeners[k].tls;
    int accepted = accept_some(srv, lfd, tls, srv->nloops > 1 ? ACCEPT_BATCH_SHARED
                                                              : ACCEPT_BATCH);
    if (srv->nloops > 1 && accepted && !srv->accept_paused) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE,
                                 .data.ptr = &srv->listeners[k].obj};
        epoll_ctl(srv->epfd, EPOLL_CTL_DEL, lfd, NULL);
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, lfd, &ev) < 0) {
            /* Out of epoll watches, say: this loop tries again later rather than never. */
            listeners_watch(srv, 0);
            srv->accept_paused = 1;
            srv->accept_resume_ms = srv->now_ms + ACCEPT_RETRY_MS;
        }
    }
}

/* Accept up to batch connections; returns how many. */
static int accept_some(struct krait_server *srv, int lfd, int tls, int batch)
{
    int accepted = 0;
    for (int i = 0; i < batch; i++) {
        /* A place under the cap is reserved before accepting, so that loops accepting at
         * once never pass it together. */
        if (__atomic_add_fetch(&srv->hub->total_conns, 1, __ATOMIC_RELAXED) >
            srv->limits[KRAIT_LIMIT_MAX_CONNS]) {
            __atomic_sub_fetch(&srv->hub->total_conns, 1, __ATOMIC_RELAXED);
            pause_accepting(srv, 0);  /* the rest wait in the backlog */
            return accepted;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            __atomic_sub_fetch(&srv->hub->total_conns, 1, __ATOMIC_RELAXED);
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of descriptors: free the spare, accept and close one connection so a
                 * client learns at once, then stop accepting for a while. */
                if (srv->spare_fd >= 0) {
                    close(srv->spare_fd);
                    int tmp = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                    if (tmp >= 0)
                        close(tmp);
                    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                }
                pause_accepting(srv, srv->now_ms + ACCEPT_RETRY_MS);
            }
            return accepted;
        }
        char peer[48];
        int port = addr_text(&ss, peer);
        int one = 1;
        if (ss.ss_family != AF_UNIX)
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (adopt(srv, fd, tls, peer, port, 1))
            accepted++;
    }
    return accepted;
}

/* ---- input -------------------------------------------------------------------------------- */

/* TLS read-ahead leaves input in OpenSSL, where level-triggered epoll can't see it: such a
 * connection is read again at the start of the next driver run. */
static void tls_read_later(struct krait_server *srv, krait__conn *c)
{
    if (c->ssl && !c->closed && !c->tls_later.next &&
        (c->state == CS_HEAD || c->state == CS_BODY || c->state == CS_WS) &&
        krait__conn_pending(c))
        krait__link_append(&srv->tls_later, &c->tls_later);
}

/* Body bytes arrived (or were already buffered): go on reading it, or act on its end. */
static void body_progress(struct krait_server *srv, krait__conn *c)
{
    int r = krait__body_feed(srv, c);
    if (r == KRAIT__BODY_MORE)
        return;
    if (r != KRAIT__BODY_DONE) {
        krait__body_release(srv, c);
        krait__error_now(srv, c, r, 1);
        return;
    }
    if (c->body_discard) {
        /* The answer was built before the body: it goes now (RFC 9112 §9.3: the connection
         * closes after it, as its head said). */
        c->body_discard = 0;
        c->state = CS_WRITE;
        krait__timer_set(srv, c, -1);
        krait__conn_post(srv, c);
        return;
    }
    krait__worker_submit(srv, c);
}

/* The PROXY header a trusted proxy sends first (docs/design.md, "PROXY protocol"). It is read
 * exactly, never a byte past its end: a TLS connection's next bytes are OpenSSL's. So the
 * socket is peeked, the bytes parsed with those kept in in[] from earlier reads, and only the
 * header's bytes (all of them, while it is incomplete) are taken off the socket, which leaves
 * nothing readable behind a partial header for level-triggered epoll to wake us for again.
 * Returns 1 when the header is read (the connection's own bytes follow), 0 to wait for more,
 * -1 when the connection is refused. A header that never completes is closed, silently, at the
 * header timeout (got_bytes stays 0 until the request's own bytes come). */
static int proxy_read(struct krait_server *srv, krait__conn *c)
{
    if (!c->in) {
        c->in = malloc(READ_CHUNK);
        if (!c->in) {
            krait__conn_close(srv, c);
            return -1;
        }
        c->in_cap = READ_CHUNK;
    }
    ssize_t n;
    do
        n = recv(c->fd, c->in + c->in_len, KRAIT__PROXY_MAX - c->in_len, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return 0;
        krait__conn_close(srv, c);
        return -1;
    }
    krait__proxy_info info;
    int r = krait__proxy_parse((const uint8_t *)c->in, c->in_len + (size_t)n, &info);
    if (r == KRAIT__PROXY_BAD) {
        c->in_len = 0;
        c->proxy_wait = 0;
        if (c->ssl) {
            krait__conn_close(srv, c);  /* no HTTP answer can precede a TLS handshake */
            return -1;
        }
        /* Plain HTTP: a 400 says what went wrong, then the connection closes. The peeked
         * bytes are taken first: a socket closed with unread input is reset, and the reset
         * could overtake the answer. */
        ssize_t drop;
        do
            drop = recv(c->fd, c->in, (size_t)n, 0);
        while (drop < 0 && errno == EINTR);
        c->t_start = krait__mono_ns();
        srv->nhdr = 0;
        krait__error_now(srv, c, 400, 1);
        return -1;
    }
    /* The header's bytes: all that was peeked while it is incomplete, else up to its end. */
    size_t take = r == KRAIT__PROXY_MORE ? (size_t)n : (size_t)r - c->in_len;
    ssize_t got;
    do
        got = recv(c->fd, c->in + c->in_len, take, 0);
    while (got < 0 && errno == EINTR);
    if (got != (ssize_t)take) {
        krait__conn_close(srv, c);  /* never: peeked bytes are there to take */
        return -1;
    }
    if (r == KRAIT__PROXY_MORE) {
        c->in_len += take;
        return 0;
    }
    c->in_len = 0;
    c->proxy_wait = 0;
    if (!info.local) {
        /* The client the proxy accepted is this connection's address from now on, wherever
         * it goes (a move to the hub takes it along). */
        inet_ntop(info.family == 4 ? AF_INET : AF_INET6, info.src, c->peer, sizeof c->peer);
        c->peer_port = info.src_port;
    }
    /* Whatever the header says, the bytes after it may be a client's: HAProxy sends LOCAL for
     * a relayed client whose address is not IP (a unix@ or abns@ frontend) as well as for its
     * own health checks, so no connection that began with a header has X-Forwarded-* a proxy
     * vouches for. */
    c->proxy_done = 1;
    return 1;
}

static void conn_read(struct krait_server *srv, krait__conn *c)
{
    if (c->proxy_wait && proxy_read(srv, c) <= 0)
        return;
    for (int rounds = 0; rounds < 4 && !c->closed; rounds++) {
        if (c->state == CS_WRITE || c->state == CS_WORKER) {
            /* Don't read ahead while answering: pipelined bytes wait in the kernel buffer,
             * which applies backpressure to a client that floods us. */
            return;
        }
        size_t max = (size_t)srv->limits[KRAIT_LIMIT_HEAD] + 1;
        if (c->state == CS_BODY)
            max = c->in_len + READ_CHUNK;
        else if (c->state == CS_WS)
            max = (size_t)srv->limits[KRAIT_LIMIT_WS_MESSAGE] + 14 + READ_CHUNK;
        if (c->in_cap - c->in_len < 1024 || !c->in) {
            size_t ncap = c->in_cap ? c->in_cap * 2 : READ_CHUNK;
            if (ncap > max + READ_CHUNK)
                ncap = max + READ_CHUNK;
            if (ncap <= c->in_cap) {
                krait__conn_post(srv, c);  /* full: the parser decides (431/414, or a slice) */
                return;
            }
            char *p = realloc(c->in, ncap);
            if (!p) {
                krait__conn_close(srv, c);
                return;
            }
            c->in = p;
            c->in_cap = ncap;
        }
        ssize_t n = krait__conn_recv(srv, c, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0) {
            if (errno == EAGAIN) {
                if (c->tls_want_write)
                    krait__conn_events(srv, c, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
                return;
            }
            krait__conn_close(srv, c);
            return;
        }
        if (n == 0) {
            krait__conn_close(srv, c);
            return;
        }
        KRAIT__STAT_ADD(srv, KRAIT_STAT_BYTES_IN, n);
        if (!c->got_bytes) {
            c->got_bytes = 1;
            if (c->state == CS_HEAD)
                krait__timer_set(srv, c, TL_HEAD);
        }
        c->in_len += (size_t)n;
        if (c->state == CS_BODY) {
            if (!c->body_discard || c->nseg)
                body_progress(srv, c);
        } else if (c->state == CS_WS) {
            krait__ws_input(srv, c);
        } else {
            krait__conn_post(srv, c);  /* the driver takes the request */
            return;
        }
        if ((size_t)n < READ_CHUNK && !krait__conn_pending(c))
            return;
    }
    tls_read_later(srv, c);
}

static void conn_event(struct krait_server *srv, krait__conn *c, uint32_t ev)
{
    if (c->closed)
        return;
    if (ev & EPOLLOUT) {
        if (c->tls_want_write && (c->state == CS_HEAD || c->state == CS_BODY ||
                                  c->state == CS_WS)) {
            /* A TLS read that needed the socket writable: go on reading. */
            c->tls_want_write = 0;
            krait__conn_events(srv, c, c->nseg ? EPOLLIN | EPOLLOUT | EPOLLRDHUP
                                               : EPOLLIN | EPOLLRDHUP);
            conn_read(srv, c);
        }
        krait__conn_post(srv, c);  /* the socket takes more: the driver sends */
        if (c->closed)
            return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if ((c->state == CS_WRITE || c->state == CS_WORKER) && !(ev & (EPOLLHUP | EPOLLERR))) {
            /* No read-ahead while answering: stop watching until the response is out, so the
             * client's further bytes wait in the kernel (the flush restores the interest).
             * Done only when bytes come, so a plain keep-alive request costs no epoll_ctl. */
            if (!(c->events & EPOLLOUT))
                krait__conn_events(srv, c, 0);
            return;
        }
        if (ev & (EPOLLHUP | EPOLLERR)) {
            krait__conn_close(srv, c);
            return;
        }
        conn_read(srv, c);
    }
}

/* ---- handing connections to the hub ------------------------------------------------------ */

static void wake(struct krait_server *srv)
{
    uint64_t one = 1;
    ssize_t r = write(srv->wake_fd, &one, sizeof one);
    (void)r;
}

/* Hand c to loop dst: it leaves this loop whole (no list, no timer, no epoll registration
 * of this loop points to it afterwards), its unconsumed input with it, and dst takes it at
 * its next turn. Returns 0 if dst has ended (c stays here). */
static int move_conn(struct krait_server *srv, krait__conn *c, struct krait_server *dst)
{
    pthread_mutex_lock(&dst->move_lock);
    if (dst->ended) {
        pthread_mutex_unlock(&dst->move_lock);
        return 0;
    }
    krait__timer_set(srv, c, -1);
    krait__link_remove(&c->ready);
    krait__link_remove(&c->tls_later);
    krait__link_remove(&c->all);
    epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    srv->nconns--;
    c->state = CS_HEAD;
    memset(&c->hrs, 0, sizeof c->hrs);
    krait__link_append(&dst->moved, &c->all);
    __atomic_add_fetch(&dst->moved_count, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&dst->move_lock);
    wake(dst);
    return 1;
}

/* A request that needs a worker (a script, a template, a controller, a regex route's
 * question, a WebSocket) arrived on another loop: the connection moves to the hub, which
 * takes the request again from the start (it was never consumed). The hub never ends
 * before the other loops. */
static void move_to_hub(struct krait_server *srv, krait__conn *c)
{
    if (!move_conn(srv, c, srv->hub))
        krait__conn_close(srv, c);  /* never: the hub outlives every loop */
}

/* On the hub: a connection from another loop whose last request needed no worker goes back
 * to its own loop once idle, so that its static requests are served where it was accepted
 * (one that keeps asking for Python pages stays: no hand-over per request). */
static int maybe_go_home(struct krait_server *srv, krait__conn *c)
{
    if (srv->hub != srv || !c->home || !c->go_home || c->closed || c->state != CS_HEAD ||
        c->in_len || srv->draining || krait__conn_pending(c))
        return 0;
    struct krait_server *home = __atomic_load_n(&srv->loops[c->home], __ATOMIC_ACQUIRE);
    return home && move_conn(srv, c, home);
}

/* Take the connections other loops handed over. */
static int adopt_moved(struct krait_server *srv)
{
    if (!__atomic_load_n(&srv->moved_count, __ATOMIC_ACQUIRE))
        return 0;
    krait__link todo;
    krait__list_init(&todo);
    pthread_mutex_lock(&srv->move_lock);
    while (!krait__list_empty(&srv->moved)) {
        krait__link *l = srv->moved.next;
        krait__link_remove(l);
        krait__link_append(&todo, l);
    }
    srv->moved_count = 0;
    pthread_mutex_unlock(&srv->move_lock);
    while (!krait__list_empty(&todo)) {
        krait__conn *c = KRAIT__CONTAINER(todo.next, krait__conn, all);
        krait__link_remove(&c->all);
        krait__link_append(&srv->conns, &c->all);
        srv->nconns++;
        c->id = ++srv->next_conn_id;  /* the ids workers know are the hub's */
        c->go_home = 0;
        c->events = EPOLLIN | EPOLLRDHUP;
        struct epoll_event ev = {.events = c->events, .data.ptr = c};
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            krait__conn_close(srv, c);
            continue;
        }
        /* A request to take (from the start), or an idle keep-alive connection back home. */
        krait__timer_set(srv, c, c->in_len ? TL_HEAD : TL_IDLE);
        krait__conn_post(srv, c);
    }
    return 1;
}

/* This loop takes no more connections; what was handed to it meanwhile is adopted (and then
 * closed with the rest by krait__loop_end). */
static void end_moves(struct krait_server *srv)
{
    pthread_mutex_lock(&srv->move_lock);
    srv->ended = 1;
    pthread_mutex_unlock(&srv->move_lock);
    adopt_moved(srv);
}

/* ---- the driver --------------------------------------------------------------------------- */

/* Everything the driver does for one posted connection: send, and when a response is out,
 * finish it and take the next pipelined request, up to PIPELINE_BUDGET of them. */
static void step_conn(struct krait_server *srv, krait__conn *c)
{
    int budget = PIPELINE_BUDGET;
    while (!c->closed) {
        int state = c->state;
        if (state == CS_MOVE) {
            move_to_hub(srv, c);
            return;
        }
        if (state == CS_BODY && c->body_discard) {
            body_progress(srv, c);  /* the answer waits for the end of the body */
            if (c->state == CS_BODY)
                break;
            continue;
        }
        int r = krait__conn_flush(srv, c);
        if (r == KRAIT__FLUSH_FAILED)
            return;
        if (c->streaming)
            krait__worker_drained(srv, c);  /* the client took some: maybe read the worker */
        if (r == KRAIT__FLUSH_BLOCKED) {
            if (state == CS_WS)
                krait__ws_blocked(srv, c);
            return;
        }
        if (state == CS_WS) {
            krait__ws_flushed(srv, c);
            break;
        }
        if (state == CS_BODY) {
            body_progress(srv, c);  /* the bytes that came with the head */
            if (c->state == CS_BODY)
                break;
            continue;
        }
        if (state == CS_WRITE) {
            if (c->streaming)
                return;  /* the worker sends more */
            krait__request_finish(srv, c);
            if (maybe_go_home(srv, c))
                return;
            continue;
        }
        if (state != CS_HEAD || !c->in_len)
            break;
        if (--budget < 0) {
            /* Its share of the turn is used: the others go first, it goes on next turn. A
             * handler may have posted it meanwhile (a 503 from a full queue): it is on
             * srv->ready then, and a node is in one list at a time. */
            krait__link_remove(&c->ready);
            krait__link_append(&srv->deferred, &c->ready);
            return;
        }
        krait__request_next(srv, c);
        if (c->state == CS_HEAD)
            break;  /* the head is not complete */
        krait__link_remove(&c->ready);  /* it was posted: this loop goes on with it */
    }
    if (!c->closed)
        tls_read_later(srv, c);
}

/* Read the connections tls_read_later() listed (once a turn: one listed again waits for the
 * next turn, which then polls without sleeping). */
static void tls_read_run(struct krait_server *srv)
{
    krait__link todo;
    if (krait__list_empty(&srv->tls_later))
        return;
    todo.next = srv->tls_later.next;
    todo.prev = srv->tls_later.prev;
    todo.next->prev = todo.prev->next = &todo;
    krait__list_init(&srv->tls_later);
    while (!krait__list_empty(&todo)) {
        krait__conn *c = KRAIT__CONTAINER(todo.next, krait__conn, tls_later);
        krait__link_remove(&c->tls_later);
        if (!c->closed && krait__conn_pending(c))
            conn_read(srv, c);
    }
}

/* Closed connections: the WebSocket layer tells the worker, the worker layer forgets them. */
static void tell_gone(struct krait_server *srv)
{
    while (!krait__list_empty(&srv->closing)) {
        krait__conn *c = KRAIT__CONTAINER(srv->closing.next, krait__conn, all);
        krait__link_remove(&c->all);
        krait__link_append(&srv->dead, &c->all);
        c->gone_told = 1;
        krait__ws_gone(srv, c);
        krait__chan_conn_gone(srv, c);
        krait__worker_conn_gone(srv, c);
    }
}

static void tell_python(struct krait_server *srv)
{
    while (srv->nevents) {
        krait__event e = srv->events[0];
        memmove(srv->events, srv->events + 1, (srv->nevents - 1) * sizeof e);
        srv->nevents--;
        if (srv->event_cb)
            srv->event_cb(srv->cb_ud, e.kind, e.a, e.b);
    }
}

static void drive(struct krait_server *srv)
{
    tls_read_run(srv);
    for (;;) {
        int did = adopt_moved(srv);
        while (!krait__list_empty(&srv->ready)) {
            krait__conn *c = KRAIT__CONTAINER(srv->ready.next, krait__conn, ready);
            krait__link_remove(&c->ready);
            step_conn(srv, c);
            did = 1;
        }
        if (!krait__list_empty(&srv->closing)) {
            tell_gone(srv);
            did = 1;
        }
        if (krait__worker_drive(srv))
            did = 1;
        if (krait__chan_inbox_run(srv))
            did = 1;  /* messages a relay thread handed over */
        if (!did && srv->nevents) {
            tell_python(srv);  /* nothing of ours on the stack */
            did = 1;
        }
        if (!did)
            break;
    }
}

static void reap(struct krait_server *srv)
{
    while (!krait__list_empty(&srv->dead)) {
        krait__conn *c = KRAIT__CONTAINER(srv->dead.next, krait__conn, all);
        krait__link_remove(&c->all);
        srv->body_memory -= (int64_t)c->body_mem;
        krait__ws_free(c);
        krait__conn_free(c);
    }
}

/* ---- timers, signals, stopping ------------------------------------------------------------ */

static void sweep_timers(struct krait_server *srv)
{
    for (int l = 0; l < TL_COUNT; l++) {
        while (!krait__list_empty(&srv->timers[l])) {
            krait__conn *c = KRAIT__CONTAINER(srv->timers[l].next, krait__conn, timer);
            if (c->deadline > srv->now_ms)
                break;
            krait__timer_set(srv, c, -1);
            if (l == TL_WS || l == TL_WS_HOLD) {
                krait__ws_timer(srv, c);
            } else if ((l == TL_HEAD && c->got_bytes) || l == TL_BODY) {
                /* Headers or body not complete in time: 408 and close (RFC 9110 §15.5.9). */
                c->t_start = krait__mono_ns();
                srv->nhdr = 0;
                krait__body_release(srv, c);
                if (l == TL_BODY)
                    c->keep_alive = 0;
                krait__error_now(srv, c, 408, 1);
            } else {
                krait__conn_close(srv, c);
            }
        }
    }
    krait__worker_sweep(srv);
}

static void begin_drain(struct krait_server *srv)
{
    if (srv->draining)
        return;
    srv->draining = 1;
    srv->drain_deadline = srv->now_ms + srv->limits[KRAIT_LIMIT_DRAIN];
    if (srv->hub == srv)
        KRAIT__STAT_SET(srv, KRAIT_STAT_DRAINING, 1);  /* /healthz answers 503 from now on */
    if (!srv->accept_paused)
        listeners_watch(srv, 0);
    if (srv->hub == srv) {
        /* The listeners stop listening (a new connection is refused, the backlog reset) but
         * stay open until every loop has stopped: no loop can accept on a reused number. */
        for (int i = 0; i < srv->nlisteners; i++)
            shutdown(srv->listeners[i].fd, SHUT_RD);
        for (int i = 1; i < srv->nloops; i++) {
            struct krait_server *lp = __atomic_load_n(&srv->loops[i], __ATOMIC_ACQUIRE);
            if (lp) {
                __atomic_store_n(&lp->stop_requested, 1, __ATOMIC_RELEASE);
                wake(lp);
            }
        }
    }
    srv->accept_paused = 1;  /* never resumed */
    krait__ws_drain(srv);
    /* Idle connections (nothing received of a next request) close now; the rest finish. */
    krait__link *l = srv->conns.next;
    while (l != &srv->conns) {
        krait__conn *c = KRAIT__CONTAINER(l, krait__conn, all);
        l = l->next;
        if (c->state == CS_HEAD && !c->got_bytes)
            krait__conn_close(srv, c);
    }
}

static void signal_ready(struct krait_server *srv)
{
    struct signalfd_siginfo si;
    while (read(srv->sig_fd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
            begin_drain(srv);
        else if (si.ssi_signo == SIGHUP)
            krait__event_push(srv, KRAIT_EVENT_RELOAD, 0, 0);
        else if (si.ssi_signo == SIGCHLD)
            krait__event_push(srv, KRAIT_EVENT_CHILD, 0, 0);
        else if (si.ssi_signo == SIGUSR1)
            krait__event_push(srv, KRAIT_EVENT_REOPEN_LOGS, 0, 0);
    }
}

static int setup_signals(struct krait_server *srv)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGUSR1);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    if (srv->sig_fd < 0) {
        srv->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
        if (srv->sig_fd < 0)
            return -1;
        srv->sig.kind = OBJ_SIGNAL;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &srv->sig};
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->sig_fd, &ev) < 0)
            return -1;
    }
    return 0;
}

void krait_server_stop(krait_server *srv)
{
    __atomic_store_n(&srv->stop_requested, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    ssize_t r = write(srv->wake_fd, &one, sizeof one);
    (void)r;
}

/* ---- running ------------------------------------------------------------------------------ */

int krait__loop_start(struct krait_server *srv, int with_signals)
{
    signal(SIGPIPE, SIG_IGN);
    if (with_signals && setup_signals(srv) < 0)
        return KRAIT_ESYS;
    update_clock(srv);
    if (srv->hub == srv)
        krait__stat_publish_hub(srv);  /* the workers added before the first turn */
    for (int i = 0; i < srv->nlisteners; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE,
                                 .data.ptr = &srv->listeners[i].obj};
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->listeners[i].fd, &ev) < 0)
            return KRAIT_ESYS;
    }
    return KRAIT_OK;
}

/* How long a turn may sleep: until the earliest timer or worker deadline, not a fixed tick,
 * so that nothing ever waits for a periodic wake-up (an idle server sleeps up to a minute). */
static int sleep_ms(struct krait_server *srv)
{
    if (!krait__list_empty(&srv->ready) || !krait__list_empty(&srv->tls_later))
        return 0;
    int64_t next = srv->now_ms + IDLE_SLEEP_MS;
    for (int l = 0; l < TL_COUNT; l++) {
        if (krait__list_empty(&srv->timers[l]))
            continue;
        krait__conn *c = KRAIT__CONTAINER(srv->timers[l].next, krait__conn, timer);
        if (c->deadline < next)
            next = c->deadline;  /* each list is sorted: its head is its earliest */
    }
    for (int i = 0; i < srv->nworkers; i++) {
        const krait__worker *w = &srv->workers[i];
        if (w->fd >= 0 && w->deadline && w->deadline < next)
            next = w->deadline;
    }
    if (srv->draining) {
        /* Check on the other loops and the bound. */
        if (srv->now_ms + DRAIN_POLL_MS < next)
            next = srv->now_ms + DRAIN_POLL_MS;
    } else if (srv->accept_paused && (srv->accept_resume_ms || srv->nloops > 1)) {
        /* Out of descriptors; or at the cap, which another loop may go under. */
        if (srv->now_ms + ACCEPT_RETRY_MS < next)
            next = srv->now_ms + ACCEPT_RETRY_MS;
    }
    int64_t ms = next - srv->now_ms + 1;  /* +1: the coarse clock must have passed it */
    return ms < 1 ? 1 : (int)ms;
}

int krait__loop_turn(struct krait_server *srv, int timeout_ms)
{
    struct epoll_event evs[MAX_EVENTS];
    if (__atomic_load_n(&srv->force_end, __ATOMIC_ACQUIRE))
        return 1;
    if (__atomic_load_n(&srv->stop_requested, __ATOMIC_ACQUIRE))
        begin_drain(srv);
    if (srv->draining && srv->now_ms >= srv->drain_deadline)
        return 1;
    /* The hub ends last: other loops may still hand it connections. */
    if (srv->draining && srv->nconns == 0 &&
        (srv->hub != srv || (!__atomic_load_n(&srv->loops_live, __ATOMIC_ACQUIRE) &&
                             !__atomic_load_n(&srv->moved_count, __ATOMIC_ACQUIRE))))
        return 1;
    /* The connections whose share of the last turn ran out go first in this one. */
    while (!krait__list_empty(&srv->deferred)) {
        krait__link *l = srv->deferred.next;
        krait__link_remove(l);
        krait__link_append(&srv->ready, l);
    }
    if (timeout_ms < 0)
        timeout_ms = sleep_ms(srv);
    int n = epoll_wait(srv->epfd, evs, MAX_EVENTS, timeout_ms);
    if (n < 0 && errno != EINTR)
        return -1;
    update_clock(srv);
    for (int i = 0; i < n; i++) {
        krait__obj *o = evs[i].data.ptr;
        switch (o->kind) {
        case OBJ_CONN:
            conn_event(srv, (krait__conn *)o, evs[i].events);
            break;
        case OBJ_LISTENER:
            for (int k = 0; k < srv->nlisteners; k++)
                if (&srv->listeners[k].obj == o && !srv->accept_paused && !srv->draining)
                    accept_ready(srv, k);
            break;
        case OBJ_SIGNAL:
            signal_ready(srv);
            break;
        case OBJ_WORKER:
            krait__worker_event(srv, (krait__worker *)o, evs[i].events);
            break;
        case OBJ_WAKE: {
            uint64_t v;
            ssize_t r = read(srv->wake_fd, &v, sizeof v);
            (void)r;
            break;
        }
        }
    }
    sweep_timers(srv);
    drive(srv);
    reap(srv);
    if (srv->hub == srv)
        krait__stat_publish_hub(srv);
    maybe_resume_accepting(srv);
    if (srv->log_len)
        krait__log_flush(srv);
    return 0;
}

void krait__loop_end(struct krait_server *srv)
{
    /* Graceful stop bound reached or everything answered: close what is left (with what
     * other loops handed over). */
    end_moves(srv);
    while (!krait__list_empty(&srv->conns))
        krait__conn_close(srv, KRAIT__CONTAINER(srv->conns.next, krait__conn, all));
    tell_gone(srv);
    krait__worker_drive(srv);
    reap(srv);
    if (srv->log_len)
        krait__log_flush(srv);
}
