/* response.c: response heads, error pages and the access-log line, appended to a connection's
 * output (conn.c). Used by every request handler; calls only conn.c. */
#ifndef KRAIT_RESPONSE_H
#define KRAIT_RESPONSE_H

#include "core.h"
#include "ipc.h"

int64_t krait__mono_ns(void);
const char *krait__reason(int status);
/* Status line, Server, Date and (over TLS) Strict-Transport-Security. */
void krait__resp_start(struct krait_server *srv, krait__conn *c, int status);
/* Content-Length (when >= 0), Connection, and the blank line. */
void krait__resp_end_headers(struct krait_server *srv, krait__conn *c, int64_t content_length);
/* A small HTML error page; rq NULL: the request was parsed earlier (c->head_only, c->log). */
void krait__error(struct krait_server *srv, krait__conn *c, krait__request *rq, int status,
                  int close_after);
/* The same, replacing whatever answer was being built, and marked ready to send. */
void krait__error_now(struct krait_server *srv, krait__conn *c, int status, int close_after);
/* A header of the request being handled (srv->hdr), by lower-case name. */
const krait__header *krait__find_header(struct krait_server *srv, const char *name);

/* A header from a worker may be sent: the name is a token, the value has no control
 * character but HTAB (RFC 9110 §5.1, §5.5). */
int krait__header_ok(const krait__slice *name, const krait__slice *value);

/* Access log: the line is prepared with the request, its status and size rewritten once the
 * answer is known, and it is moved to the server's buffer when the response has been sent
 * (KRAIT_LOG_JSON: the request's half is rendered at begin, the answer's at finish). */
void krait__log_begin(struct krait_server *srv, krait__conn *c, krait__request *rq, int status,
                      uint64_t bytes);
void krait__log_status(struct krait_server *srv, krait__conn *c, int status, uint64_t bytes);
/* The worker (slot, pid) whose RESPONSE frame f answers c, and the X-Request-ID among its
 * headers (when valid): fields of the JSON line only. */
void krait__log_worker(struct krait_server *srv, krait__conn *c, int slot, int pid,
                       const krait__ipc_frame *f);
void krait__log_finish(struct krait_server *srv, krait__conn *c);
void krait__log_flush(struct krait_server *srv);

#endif
