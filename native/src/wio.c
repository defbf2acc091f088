/* Worker-slot I/O: the byte buffers of each worker's socketpair, its epoll interest, signals
 * through its pidfd, and the events queued for Python. Failures are marks (w->failed, w->eof)
 * that the driver turns into worker.c's "worker gone" once no handler is running. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ipc.h"
#include "wio.h"

#define WORKER_READ 65536

krait__worker *krait__conn_worker(struct krait_server *srv, const krait__conn *c)
{
    if (c->worker < 0 || c->worker >= KRAIT__MAX_WORKERS)
        return NULL;
    krait__worker *w = &srv->workers[c->worker];
    return w->fd >= 0 && w->gen == c->worker_gen ? w : NULL;
}

void krait__wio_post(struct krait_server *srv, krait__worker *w)
{
    (void)w;
    srv->workers_dirty = 1;
}

/* Room for n more bytes at the end of w's output (what was sent is dropped first). A failed
 * allocation fails the worker: the driver lets it go. */
static int out_room(struct krait_server *srv, krait__worker *w, size_t n)
{
    if (w->fd < 0 || w->failed)
        return -1;
    if (w->out_off && w->out_off == w->out_len)
        w->out_off = w->out_len = 0;
    if (w->out_len + n <= w->out_cap)
        return 0;
    size_t ncap = w->out_cap ? w->out_cap : 65536;
    while (ncap < w->out_len + n)
        ncap *= 2;
    uint8_t *q = realloc(w->out, ncap);
    if (!q) {
        w->failed = 1;
        krait__wio_post(srv, w);
        return -1;
    }
    w->out = q;
    w->out_cap = ncap;
    return 0;
}

int krait__wio_append(struct krait_server *srv, krait__worker *w, const void *p, size_t n)
{
    if (out_room(srv, w, n) < 0)
        return -1;
    memcpy(w->out + w->out_len, p, n);
    w->out_len += n;
    w->out_later = 1;
    krait__wio_post(srv, w);
    return 0;
}

int krait__wio_send_ws(struct krait_server *srv, const krait__conn *c, uint8_t type,
                       unsigned arg, const char *data, size_t len)
{
    krait__worker *w = krait__conn_worker(srv, c);
    if (!w || out_room(srv, w, KRAIT__IPC_HEADER + 2 + 4 + len) < 0)
        return -1;
    /* Encoded in place at the end of the output: the messages of many clients read in one
     * turn go to the worker in one send. */
    long n = krait__ipc_encode_ws(type, c->req_id, arg, data, len, w->out + w->out_len,
                                  w->out_cap - w->out_len);
    if (n < 0)
        return -1;
    w->out_len += (size_t)n;
    w->out_later = 1;
    krait__wio_post(srv, w);
    return 0;
}

void krait__wio_interest(struct krait_server *srv, krait__worker *w)
{
    if (w->fd < 0)
        return;
    struct epoll_event ev = {.events = (w->paused ? 0u : (uint32_t)EPOLLIN) |
                                       (w->epoll_out ? (uint32_t)EPOLLOUT : 0u),
                             .data.ptr = w};
    epoll_ctl(srv->epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

void krait__wio_write(struct krait_server *srv, krait__worker *w)
{
    while (w->fd >= 0 && !w->failed && w->out_off < w->out_len) {
        ssize_t n = send(w->fd, w->out + w->out_off, w->out_len - w->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!w->epoll_out) {
                w->epoll_out = 1;
                krait__wio_interest(srv, w);
            }
            return;
        }
        if (n <= 0) {
            w->failed = 1;  /* the driver lets it go; what it had answered is parsed first */
            krait__wio_post(srv, w);
            return;
        }
        w->out_off += (size_t)n;
    }
    w->out_off = w->out_len = 0;
    if (w->epoll_out) {
        w->epoll_out = 0;
        krait__wio_interest(srv, w);
    }
}

void krait__wio_read(struct krait_server *srv, krait__worker *w)
{
    for (;;) {
        if (w->in_cap - w->in_len < WORKER_READ) {
            size_t ncap = w->in_cap ? w->in_cap * 2 : WORKER_READ * 2;
            uint8_t *p = realloc(w->in, ncap);
            if (!p) {
                w->failed = 1;
                break;
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
            if (n == 0)
                w->eof = 1;
            else
                w->failed = 1;
            break;
        }
        w->in_len += (size_t)n;
        if ((size_t)n < w->in_cap - w->in_len || w->in_len >= (1u << 20))
            break;  /* drained, or enough for this turn: parse it first (level-triggered) */
    }
    w->parse_later = 1;
    krait__wio_post(srv, w);
}

void krait__wio_kill(krait__worker *w)
{
    if (w->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, w->pidfd, SIGKILL, NULL, 0);
}

void krait__event_push(struct krait_server *srv, int kind, int a, int b)
{
    if (srv->nevents == srv->events_cap) {
        size_t ncap = srv->events_cap ? srv->events_cap * 2 : 16;
        krait__event *e = realloc(srv->events, ncap * sizeof *e);
        if (!e)
            return;
        srv->events = e;
        srv->events_cap = ncap;
    }
    srv->events[srv->nevents++] = (krait__event){kind, a, b};
}
