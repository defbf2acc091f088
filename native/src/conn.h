/* conn.c: a connection's buffers and output, below every request handler. Handlers append a
 * response here and post the connection (krait__conn_post); only the driver (loop.c) flushes.
 * Nothing here calls a handler: a close is a mark the driver acts on (docs/design.md). */
#ifndef KRAIT_CONN_H
#define KRAIT_CONN_H

#include "core.h"

/* Output assembly into c->out. A failed allocation marks the connection broken (the driver
 * closes it) and drops the bytes. */
int krait__out_reserve(krait__conn *c, size_t n);
void krait__out_add(krait__conn *c, const char *p, size_t n);
void krait__out_str(krait__conn *c, const char *s);
void krait__out_u64(krait__conn *c, uint64_t v);
/* Mark out[from..out_len) as the next segment to send; a byte range of c->file_fd. */
void krait__seg_mem(krait__conn *c, size_t from);
void krait__seg_file(krait__conn *c, uint64_t off, uint64_t len);
void krait__seg_advance(krait__conn *c, uint64_t n);
/* Bytes of the pending segments not yet sent. */
uint64_t krait__conn_unsent(const krait__conn *c);
/* Drop the pending output (an answer replaced by an error page). */
void krait__out_reset(krait__conn *c);
/* Drop what was already sent from the front of the out buffer (memory segments only; amortised:
 * only when that part is at least half of it). A connection that keeps receiving (a
 * WebSocket) never needs to drain completely for its buffer to shrink. */
void krait__out_compact(krait__conn *c);

/* The driver has work for c (output to send, a request to parse, a state to leave). */
void krait__conn_post(struct krait_server *srv, krait__conn *c);

enum { KRAIT__FLUSH_DONE = 0, KRAIT__FLUSH_BLOCKED = 1, KRAIT__FLUSH_FAILED = -1 };
/* Send the pending segments. DONE: all sent (the buffer is reset; the file stays open);
 * BLOCKED: the socket is full (EPOLLOUT armed); FAILED: the connection was closed. Called by
 * the driver only. */
int krait__conn_flush(struct krait_server *srv, krait__conn *c);

/* Epoll interest (level-triggered), changed only when it differs. */
void krait__conn_events(struct krait_server *srv, krait__conn *c, uint32_t events);
/* Close now: the socket and files go, the object moves to srv->closing; the driver tells the
 * handlers (they may still hold c until then) and it is freed at the end of the turn. */
void krait__conn_close(struct krait_server *srv, krait__conn *c);
/* Half-close after the last response, then close (RFC 9112 §9.6). */
void krait__conn_finish(struct krait_server *srv, krait__conn *c);
/* Free the memory of a closed connection (the handlers' own parts first: wsconn's zlib). */
void krait__conn_free(krait__conn *c);
/* Give back the buffers of a connection that waits for its next request. */
void krait__conn_trim(krait__conn *c);

void krait__timer_set(struct krait_server *srv, krait__conn *c, int list);

#endif
