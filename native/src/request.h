/* request.c: HTTP/1.1 requests on a connection, one at a time: parse the next head, apply the
 * limits (4xx), check the target, route, and hand the request to static.c, worker.c or
 * wsconn.c; and, once its response has been sent, make the connection ready for the next. */
#ifndef KRAIT_REQUEST_H
#define KRAIT_REQUEST_H

#include "core.h"

/* Take the next request from c->in, if a whole head is there (state CS_HEAD). Afterwards the
 * state says what happened: CS_HEAD (need more bytes), CS_WRITE (an answer is queued and the
 * connection posted), CS_BODY or CS_WORKER (a body is being read, or a worker has it). */
void krait__request_next(struct krait_server *srv, krait__conn *c);
/* The response has been sent: log it, drop the answered bytes, then close (no keep-alive),
 * become a WebSocket, or wait for the next request. */
void krait__request_finish(struct krait_server *srv, krait__conn *c);

#endif
