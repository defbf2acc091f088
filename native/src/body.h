/* body.c: reading a request body (Content-Length or chunked) from a connection's input, for a
 * worker (in memory up to the spool threshold, then into a temporary file as it arrives) or
 * to check its framing and drop it. */
#ifndef KRAIT_BODY_H
#define KRAIT_BODY_H

#include "core.h"

/* Start reading rq's body (state CS_BODY): discard = 0 keeps it for a worker, 1 drops it (the
 * answer is already built and waits for the body to end). Sends 100 Continue when the client
 * waits for it. The connection is posted: the driver feeds what is already buffered. */
void krait__body_start(struct krait_server *srv, krait__conn *c, krait__request *rq,
                       int discard);
enum { KRAIT__BODY_MORE = 0, KRAIT__BODY_DONE = 1 };
/* Consume body bytes from c->in[c->consume..): KRAIT__BODY_MORE, KRAIT__BODY_DONE (c->body or
 * the file c->spool holds it), or an HTTP status to answer with (400, 413, 500). */
int krait__body_feed(struct krait_server *srv, krait__conn *c);
/* Free the body held in memory (and its accounting); the spool file stays until unlinked. */
void krait__body_release(struct krait_server *srv, krait__conn *c);
/* The request is answered: its spool file (the worker read it) goes too. */
void krait__body_unspool(krait__conn *c);

#endif
