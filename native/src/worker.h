/* worker.c: the core's side of the worker pool: handing requests to workers (with the bounded
 * wait queue), turning their answers into responses, and a worker's end (502/504, requests it
 * had not started go to another). Above wsconn.c, which it gives WebSocket frames to. */
#ifndef KRAIT_WORKER_H
#define KRAIT_WORKER_H

#include "core.h"

/* Encode rq for a worker (file: the script or template, "" for a controller route) and read
 * its body first if it has one (body.c), else hand it over. */
void krait__worker_dispatch(struct krait_server *srv, krait__conn *c, krait__request *rq,
                            int route, const char *file, const char *params, size_t params_len);
/* Ask a worker which route takes (verb, path) (a regex route not yet in the core's cache).
 * Its answer is cached, and c is posted to take its request again from the start. */
void krait__worker_route(struct krait_server *srv, krait__conn *c, int verb, const char *path,
                         size_t len);
/* Ask a worker which cache rules apply to the file rel (root-relative; a regex cache rule,
 * no answer cached yet). Its answer is cached, and c is posted to take its request again
 * from the start (c->cache_asked, c->cache_answer). */
void krait__worker_cache_question(struct krait_server *srv, krait__conn *c, const char *rel,
                                  size_t len);
/* The body is complete: finish the frame and give it to a worker (or queue it, or 503). */
void krait__worker_submit(struct krait_server *srv, krait__conn *c);
/* Epoll events on a worker's socket: read or write, nothing more (the driver parses). */
void krait__worker_event(struct krait_server *srv, krait__worker *w, uint32_t events);
/* The driver's part for workers: parse what they sent, let failed ones go, send what is
 * queued for them, and feed waiting requests to idle ones. Returns non-zero if it did any. */
int krait__worker_drive(struct krait_server *srv);
/* Time limits of running requests (504, the worker killed and replaced). */
void krait__worker_sweep(struct krait_server *srv);
/* c's client took some of a streamed response: maybe read its worker again. */
void krait__worker_drained(struct krait_server *srv, krait__conn *c);
/* c closed: forget it in the wait queue and in its worker's jobs. */
void krait__worker_conn_gone(struct krait_server *srv, krait__conn *c);

#endif
