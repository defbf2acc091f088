/* Connections below the request handlers: the intrusive lists everything uses, the output
 * buffer and its segments (memory or file ranges, sent with send/sendfile or gathered into TLS
 * records), epoll interest, timers, and closing. A handler appends its answer and posts the
 * connection; the driver in loop.c flushes it. Nothing in this file calls upwards: closing
 * only marks and moves the object, and the driver tells the handlers. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "tls.h"

/* ---- lists ------------------------------------------------------------------------------ */

void krait__list_init(krait__link *head)
{
    head->prev = head->next = head;
}

int krait__list_empty(const krait__link *head)
{
    return head->next == head;
}

void krait__link_remove(krait__link *l)
{
    if (!l->next)
        return;
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = NULL;
}

void krait__link_append(krait__link *head, krait__link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

void krait__link_prepend(krait__link *head, krait__link *l)
{
    krait__link_append(head->next, l);  /* before the first element */
}

/* ---- output ----------------------------------------------------------------------------- */

int krait__out_reserve(krait__conn *c, size_t n)
{
    if (c->out_len + n <= c->out_cap)
        return 0;
    size_t ncap = c->out_cap ? c->out_cap : 1024;
    while (ncap < c->out_len + n)
        ncap *= 2;
    char *p = realloc(c->out, ncap);
    if (!p) {
        c->broken = 1;
        return -1;
    }
    c->out = p;
    c->out_cap = ncap;
    return 0;
}

void krait__out_add(krait__conn *c, const char *p, size_t n)
{
    if (krait__out_reserve(c, n) < 0)
        return;
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

void krait__out_str(krait__conn *c, const char *s)
{
    krait__out_add(c, s, strlen(s));
}

void krait__out_u64(krait__conn *c, uint64_t v)
{
    char tmp[24];
    int i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    krait__out_add(c, tmp + i, sizeof tmp - (size_t)i);
}

void krait__seg_mem(krait__conn *c, size_t from)
{
    if (c->out_len <= from)
        return;
    if (c->nseg && !c->segs[c->nseg - 1].is_file &&
        c->segs[c->nseg - 1].off + c->segs[c->nseg - 1].len == from) {
        c->segs[c->nseg - 1].len += c->out_len - from;
        return;
    }
    if (c->nseg >= KRAIT__MAX_SEGS) {
        c->broken = 1;  /* never a silently shortened answer */
        return;
    }
    c->segs[c->nseg++] = (krait__seg){0, from, c->out_len - from};
}

void krait__seg_file(krait__conn *c, uint64_t off, uint64_t len)
{
    if (!len)
        return;
    if (c->nseg >= KRAIT__MAX_SEGS) {
        c->broken = 1;
        return;
    }
    c->segs[c->nseg++] = (krait__seg){1, off, len};
}

void krait__seg_advance(krait__conn *c, uint64_t n)
{
    while (n && c->seg_i < c->nseg) {
        uint64_t left = c->segs[c->seg_i].len - c->seg_done;
        if (n < left) {
            c->seg_done += n;
            return;
        }
        n -= left;
        c->seg_i++;
        c->seg_done = 0;
    }
}

uint64_t krait__conn_unsent(const krait__conn *c)
{
    uint64_t n = 0;
    for (int i = c->seg_i; i < c->nseg; i++)
        n += c->segs[i].len;
    return c->seg_i < c->nseg ? n - c->seg_done : 0;
}

void krait__out_compact(krait__conn *c)
{
    if (c->seg_i >= c->nseg) {
        krait__out_reset(c);
        return;
    }
    for (int i = c->seg_i; i < c->nseg; i++)
        if (c->segs[i].is_file)
            return;
    uint64_t start = c->segs[c->seg_i].off + c->seg_done;
    /* Only once the sent part is at least as large as the rest: each byte is moved at most
     * once on average, whatever the pace of the reader. */
    if (!start || start < c->out_len - start)
        return;
    memmove(c->out, c->out + start, c->out_len - start);
    c->out_len -= start;
    int k = 0;
    for (int i = c->seg_i; i < c->nseg; i++, k++) {
        c->segs[k] = c->segs[i];
        c->segs[k].off -= start;
    }
    c->segs[0].off = 0;
    c->segs[0].len -= c->seg_done;
    c->nseg = k;
    c->seg_i = 0;
    c->seg_done = 0;
}

void krait__out_reset(krait__conn *c)
{
    c->out_len = 0;
    c->nseg = c->seg_i = 0;
    c->seg_done = 0;
    if (c->file_fd >= 0) {
        close(c->file_fd);
        c->file_fd = -1;
    }
}

void krait__conn_post(struct krait_server *srv, krait__conn *c)
{
    if (!c->closed && !c->ready.next)
        krait__link_append(&srv->ready, &c->ready);
}

/* ---- interest, timers --------------------------------------------------------------------- */

void krait__conn_events(struct krait_server *srv, krait__conn *c, uint32_t events)
{
    if (c->events == events || c->closed)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(srv->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

/* Each timer list has one fixed timeout, so appending keeps it sorted by deadline. */
void krait__timer_set(struct krait_server *srv, krait__conn *c, int list)
{
    static const int limit_of[TL_COUNT] = {
        [TL_HEAD] = KRAIT_LIMIT_HEADER_TIMEOUT, [TL_BODY] = KRAIT_LIMIT_BODY_TIMEOUT,
        [TL_IDLE] = KRAIT_LIMIT_KEEPALIVE, [TL_SEND] = KRAIT_LIMIT_SEND_TIMEOUT,
        [TL_WS] = KRAIT_LIMIT_WS_PING};
    krait__link_remove(&c->timer);
    c->timer_list = list;
    if (list < 0 || c->closed)
        return;
    c->deadline = srv->now_ms + (list == TL_WS_HOLD ? KRAIT__WS_HOLD_MS
                                                    : srv->limits[limit_of[list]]);
    krait__link_append(&srv->timers[list], &c->timer);
}

/* ---- flushing ----------------------------------------------------------------------------- */

/* While output waits for the socket: the writable event, and reading goes on where input is
 * still expected meanwhile (a WebSocket, a body after 100-continue). */
static uint32_t blocked_events(const krait__conn *c)
{
    uint32_t ev = EPOLLOUT;
    if (c->state == CS_WS || c->state == CS_BODY)
        ev |= EPOLLIN | EPOLLRDHUP;
    return ev;
}

int krait__conn_flush(struct krait_server *srv, krait__conn *c)
{
    if (c->closed)
        return KRAIT__FLUSH_FAILED;
    if (c->broken) {
        krait__conn_close(srv, c);
        return KRAIT__FLUSH_FAILED;
    }
    while (c->seg_i < c->nseg) {
        krait__seg *s = &c->segs[c->seg_i];
        uint64_t left = s->len - c->seg_done;
        ssize_t n;
        if (krait__tls_coalesce(c)) {
            /* TLS without kTLS: head and body pieces leave together, a record at a time. */
            n = krait__tls_send_segs(srv, c);
        } else if (s->is_file) {
            off_t off = (off_t)(s->off + c->seg_done);
            size_t want = left > (1u << 30) ? (1u << 30) : (size_t)left;
            n = krait__conn_sendfile(srv, c, c->file_fd, off, want);
        } else {
            n = krait__conn_send(srv, c, c->out + s->off + c->seg_done, left,
                                 c->seg_i + 1 < c->nseg);
        }
        if (n == 0) {
            /* The file shrank under us: the promised length can't be kept. */
            krait__conn_close(srv, c);
            return KRAIT__FLUSH_FAILED;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                krait__conn_events(srv, c, blocked_events(c));
                if (c->state == CS_WRITE)
                    krait__timer_set(srv, c, TL_SEND);
                return KRAIT__FLUSH_BLOCKED;
            }
            krait__conn_close(srv, c);
            return KRAIT__FLUSH_FAILED;
        }
        KRAIT__STAT_ADD(srv, KRAIT_STAT_BYTES_OUT, n);
        krait__seg_advance(c, (uint64_t)n);
    }
    c->nseg = c->seg_i = 0;
    c->seg_done = 0;
    c->out_len = 0;
    if (c->state == CS_WRITE && c->streaming) {
        if (c->events & EPOLLOUT)
            krait__conn_events(srv, c, 0);  /* the next piece comes from the worker */
    } else if (c->state != CS_WORKER && c->events != (EPOLLIN | EPOLLRDHUP)) {
        krait__conn_events(srv, c, EPOLLIN | EPOLLRDHUP);
    }
    return KRAIT__FLUSH_DONE;
}

/* ---- closing ------------------------------------------------------------------------------ */

void krait__conn_close(struct krait_server *srv, krait__conn *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    krait__timer_set(srv, c, -1);
    krait__link_remove(&c->ready);
    krait__link_remove(&c->tls_later);
    if (c->fd >= 0) {
        epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        krait__tls_free(c);
        close(c->fd);
        c->fd = -1;
    }
    if (c->file_fd >= 0) {
        close(c->file_fd);
        c->file_fd = -1;
    }
    if (c->body_fd >= 0) {
        close(c->body_fd);
        c->body_fd = -1;
    }
    srv->nconns--;
    __atomic_sub_fetch(&srv->hub->total_conns, 1, __ATOMIC_RELAXED);
    krait__link_remove(&c->all);
    krait__link_append(&srv->closing, &c->all);
}

void krait__conn_finish(struct krait_server *srv, krait__conn *c)
{
    /* RFC 9112 §9.6: after a response with "close", stop reading; half-close first so a
     * client still sending does not get a reset that could discard our response. */
    if (c->closed)
        return;
    krait__tls_shutdown(c);
    shutdown(c->fd, SHUT_WR);
    krait__conn_close(srv, c);
}

void krait__conn_free(krait__conn *c)
{
    krait__tls_free(c);
    if (c->fd >= 0)
        close(c->fd);
    if (c->file_fd >= 0)
        close(c->file_fd);
    if (c->body_fd >= 0)
        close(c->body_fd);
    if (c->spool) {
        unlink(c->spool);
        free(c->spool);
    }
    free(c->in);
    free(c->out);
    free(c->body);
    free(c->frame);
    free(c->log);
    free(c->route_path);
    for (size_t i = 0; i < c->nchans; i++)
        free(c->chans[i]);
    free(c->chans);
    free(c);
}

void krait__conn_trim(krait__conn *c)
{
    if (!c->in_len && c->in) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    if (!c->out_len && c->out) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    if (!c->log_len && c->log) {
        free(c->log);
        c->log = NULL;
    }
}
