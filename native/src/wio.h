/* wio.c: a worker slot's socket buffers (frames in, frames out), its epoll interest, its
 * process handle, and the queue of events for Python. Below worker.c and wsconn.c: a failure
 * here only marks the worker; the driver (loop.c → worker.c) lets it go. */
#ifndef KRAIT_WIO_H
#define KRAIT_WIO_H

#include "core.h"

/* The worker bound to c, if it is still the same one (slot and generation), else NULL. */
krait__worker *krait__conn_worker(struct krait_server *srv, const krait__conn *c);
/* Append frame bytes to w's output; sent by the driver at the end of the turn. Returns -1
 * (and marks the worker failed) when memory runs out. */
int krait__wio_append(struct krait_server *srv, krait__worker *w, const void *p, size_t n);
/* Queue a WS_MESSAGE/WS_CLOSE frame for the worker bound to c. Returns 0, or -1 when there
 * is no such worker (gone, failed) or the frame could not be queued. */
int krait__wio_send_ws(struct krait_server *srv, const krait__conn *c, uint8_t type,
                       unsigned arg, const char *data, size_t len);
/* Send what w->out holds (as much as the socket takes; EPOLLOUT when full). */
void krait__wio_write(struct krait_server *srv, krait__worker *w);
/* Read what the socket has into w->in; end-of-file sets w->eof, an error w->failed. */
void krait__wio_read(struct krait_server *srv, krait__worker *w);
void krait__wio_interest(struct krait_server *srv, krait__worker *w);
/* The driver has work for w. */
void krait__wio_post(struct krait_server *srv, krait__worker *w);
/* SIGKILL through the worker's pidfd (never a pid number that may have been reused). */
void krait__wio_kill(krait__worker *w);
/* Something for Python (KRAIT_EVENT_*), told by the driver when no handler is running. */
void krait__event_push(struct krait_server *srv, int kind, int a, int b);

#endif
