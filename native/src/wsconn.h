/* wsconn.c: open WebSocket connections in the core (RFC 6455, RFC 7692). Below worker.c: it
 * reaches a worker only through wio.c. */
#ifndef KRAIT_WSCONN_H
#define KRAIT_WSCONN_H

#include "core.h"

/* RFC 6455 §4.2.1 checks before a worker is asked; answers 400/426 itself (returns -1). */
int krait__ws_handshake_check(struct krait_server *srv, krait__conn *c, krait__request *rq);
/* The worker accepted with 101 (frame: its RESPONSE): append the handshake answer. */
void krait__ws_accept_response(struct krait_server *srv, krait__conn *c, const void *frame);
/* The 101 has been sent: the connection is a WebSocket from now on. */
void krait__ws_begin(struct krait_server *srv, krait__conn *c);
/* Frames in c->in. */
void krait__ws_input(struct krait_server *srv, krait__conn *c);
/* A WS_MESSAGE/WS_CLOSE frame from the worker in slot (generation gen). */
void krait__ws_from_worker(struct krait_server *srv, const void *frame, int slot, uint32_t gen);
/* All output sent (flush DONE): finish a close that waited for it. */
void krait__ws_flushed(struct krait_server *srv, krait__conn *c);
/* The socket is full while a clean close waits: don't wait for the peer's answer. */
void krait__ws_blocked(struct krait_server *srv, krait__conn *c);
void krait__ws_close(struct krait_server *srv, krait__conn *c, int code, int notify_code);
void krait__ws_timer(struct krait_server *srv, krait__conn *c);
/* c closed (any cause): tell its worker once, forget its id. */
void krait__ws_gone(struct krait_server *srv, krait__conn *c);
void krait__ws_worker_died(struct krait_server *srv, int slot, int code);
void krait__ws_drain(struct krait_server *srv);
void krait__ws_free(krait__conn *c);
/* The open WebSocket with this id, if the worker in slot (generation gen) accepted it. */
krait__conn *krait__ws_conn_of(struct krait_server *srv, uint32_t id, int slot, uint32_t gen);
/* Queue an encoded frame (a channel's message) on c, bounded like its worker's messages. */
void krait__ws_append_frame(struct krait_server *srv, krait__conn *c, const uint8_t *frame,
                            size_t n);

#endif
