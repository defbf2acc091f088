/* tls.c: a connection's socket I/O, plain or TLS, with socket-style results (>0 bytes, 0 EOF,
 * -1 with errno; EAGAIN plus c->tls_want_write for OpenSSL's WANT_READ/WANT_WRITE), and the
 * server's TLS context. The lowest I/O layer: it calls nothing above it. */
#ifndef KRAIT_TLS_H
#define KRAIT_TLS_H

#include "core.h"

ssize_t krait__conn_recv(struct krait_server *srv, krait__conn *c, char *buf, size_t n);
ssize_t krait__conn_send(struct krait_server *srv, krait__conn *c, const char *buf, size_t n,
                         int more);
ssize_t krait__conn_sendfile(struct krait_server *srv, krait__conn *c, int fd, off_t off,
                             size_t n);
/* The protocol of a TLS connection ("TLSv1.3", OpenSSL's SSL_get_version), NULL over TCP. */
const char *krait__tls_version(krait__conn *c);
/* OpenSSL holds input that epoll cannot see. */
int krait__conn_pending(krait__conn *c);
/* Whether krait__tls_send_segs is the way this connection's output leaves (TLS, no kTLS). */
int krait__tls_coalesce(krait__conn *c);
/* Send the next record gathered from the pending segments (without consuming them): returns
 * the bytes sent (the caller steps past them), 0 when a file segment has no more bytes, or -1
 * with errno. */
ssize_t krait__tls_send_segs(struct krait_server *srv, krait__conn *c);
/* Best-effort close_notify (never waits). */
void krait__tls_shutdown(krait__conn *c);
int krait__tls_start(struct krait_server *srv, krait__conn *c);
void krait__tls_free(krait__conn *c);
void krait__tls_ctx_free(struct krait_server *srv);

#endif
