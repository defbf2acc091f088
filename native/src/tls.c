/* TLS with OpenSSL: the server context (certificate chain, key, passphrase, TLS 1.2–1.3, modern
 * ciphers, ALPN http/1.1, session resumption), and the per-connection I/O that conn.c calls
 * for every connection: plain sockets go straight to recv/send/sendfile, TLS ones through
 * SSL_read/SSL_write (or kTLS SSL_sendfile). WANT_READ/WANT_WRITE become EAGAIN plus a flag.
 *
 * Without kTLS, a response's pending segments (head, file bytes, multipart separators) are
 * gathered into records of up to 16 KiB (krait__tls_send_segs, for conn.c's flush), so a small response is one
 * record, one write and one TCP segment. Reads use read-ahead: one recv takes a record's
 * header and body (and whatever follows), and krait__conn_pending reports bytes OpenSSL holds
 * that epoll can no longer see. */
#define _GNU_SOURCE
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tls.h"

static void err_text(char *err, size_t errlen, const char *what)
{
    char buf[256] = "";
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    if (err && errlen)
        snprintf(err, errlen, "%s%s%s", what, *buf ? ": " : "", buf);
    ERR_clear_error();
}

static int pass_cb(char *buf, int size, int rwflag, void *ud)
{
    (void)rwflag;
    const char *pass = ud;
    if (!pass)
        return 0;
    size_t n = strlen(pass);
    if (n > (size_t)size)
        n = (size_t)size;
    memcpy(buf, pass, n);
    return (int)n;
}

/* RFC 7301: we speak http/1.1 only; a client offering only h2 gets no ALPN agreement and
 * the handshake still completes (it may then speak HTTP/1.1 or leave). */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char h11[] = "http/1.1";
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 8 && memcmp(in + i + 1, h11, 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* The handshake is over (also called again after TLS 1.3 post-handshake messages): from now
 * on a failure is not a handshake failure. */
static void info_cb(const SSL *ssl, int where, int ret)
{
    (void)ret;
    if (where & SSL_CB_HANDSHAKE_DONE) {
        krait__conn *c = SSL_get_app_data(ssl);
        if (c)
            c->tls_ready = 1;
    }
}

int krait_server_set_tls(krait_server *srv, const char *cert, const char *key,
                         const char *passphrase, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        err_text(err, errlen, "creating the TLS context");
        return KRAIT_ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    /* TLS 1.2: forward-secret AEAD suites only (TLS 1.3 suites are all modern). */
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS");
    /* A client that closes without close_notify (common: Python's ssl, browsers) is an EOF,
     * as a TCP close on a plain connection, not a fatal error with an alert sent to a closed
     * socket. HTTP messages are self-delimiting, so a truncation is still detected. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_ENABLE_KTLS |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Partial writes: SSL_write returns after each record. Moving buffer: a write retried
     * after WANT_WRITE may come from another address (krait__tls_send_segs gathers the same
     * bytes again, possibly followed by more). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* One recv per record instead of two (5-byte header, then the body); bytes read ahead
     * stay in OpenSSL, see krait__conn_pending. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_info_callback(ctx, info_cb);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"krait", 5);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    char *pass_copy = passphrase ? strdup(passphrase) : NULL;
    SSL_CTX_set_default_passwd_cb(ctx, pass_cb);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, pass_copy);
    char what[KRAIT__PATH_MAX + 64];
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(what, sizeof what, "certificate %s", cert);
        err_text(err, errlen, what);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(what, sizeof what, "private key %s does not match certificate %s", key,
                     cert);
        else
            snprintf(what, sizeof what, "private key %s (missing, unreadable or wrong "
                                        "passphrase?)", key);
        err_text(err, errlen, what);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(what, sizeof what, "private key %s does not match certificate %s", key, cert);
        err_text(err, errlen, what);
        goto fail;
    }
    /* The key is loaded; the passphrase is not needed any more. */
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
    if (pass_copy) {
        memset(pass_copy, 0, strlen(pass_copy));
        free(pass_copy);
    }
    /* Other loops start sessions from it: swapped under the lock. Live connections hold
     * their own references. */
    pthread_mutex_lock(&srv->hub->ctx_lock);
    SSL_CTX *old = srv->hub->ssl_ctx;
    srv->hub->ssl_ctx = ctx;
    pthread_mutex_unlock(&srv->hub->ctx_lock);
    if (old)
        SSL_CTX_free(old);
    return KRAIT_OK;
fail:
    if (pass_copy) {
        memset(pass_copy, 0, strlen(pass_copy));
        free(pass_copy);
    }
    SSL_CTX_free(ctx);
    return KRAIT_EINVAL;
}

int krait__tls_start(krait_server *srv, krait__conn *c)
{
    struct krait_server *hub = srv->hub;
    pthread_mutex_lock(&hub->ctx_lock);
    c->ssl = hub->ssl_ctx ? SSL_new(hub->ssl_ctx) : NULL;
    pthread_mutex_unlock(&hub->ctx_lock);
    if (!c->ssl)
        return -1;
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_accept_state(c->ssl);
    SSL_set_app_data(c->ssl, c);
    return 0;
}

void krait__tls_free(krait__conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
}

/* At most TLS_LOG_PER_SEC lines a second: a client (or a scanner) failing handshakes in a
 * loop must not flood the error log; the lines left out are counted in the next one. */
#define TLS_LOG_PER_SEC 10

static void log_handshake_failure(krait_server *srv, krait__conn *c, unsigned long code)
{
    if (srv->tls_log_sec != (int64_t)srv->date_sec) {
        srv->tls_log_sec = (int64_t)srv->date_sec;
        srv->tls_log_count = 0;
    }
    if (srv->tls_log_count++ >= TLS_LOG_PER_SEC) {
        srv->tls_log_dropped++;
        return;
    }
    char buf[200];
    ERR_error_string_n(code, buf, sizeof buf);
    if (srv->tls_log_dropped)
        fprintf(stderr, "krait: TLS handshake with %s failed: %s (%lld similar lines left out)\n",
                c->peer, buf, (long long)srv->tls_log_dropped);
    else
        fprintf(stderr, "krait: TLS handshake with %s failed: %s\n", c->peer, buf);
    srv->tls_log_dropped = 0;
}

/* Map an SSL_* result onto the socket-style contract: >0 bytes, 0 EOF, -1 with errno. */
static ssize_t tls_result(krait_server *srv, krait__conn *c, int r)
{
    int e = SSL_get_error(c->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        c->tls_want_write = 0;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        c->tls_want_write = 1;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 || r == 0) {
            ERR_clear_error();
            return 0;  /* EOF without close_notify: treat like a TCP close */
        }
        ERR_clear_error();
        return -1;
    default: {
        unsigned long code = ERR_peek_error();
        /* SSL_is_init_finished() is false after any fatal error, so it can't tell; a client
         * that drops the connection mid-handshake is not worth a line either. */
        if (!c->tls_ready && ERR_GET_REASON(code) != SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            KRAIT__STAT_ADD(srv, KRAIT_STAT_TLS_FAILURES, 1);  /* the failures logged */
            log_handshake_failure(srv, c, code);
            if (ERR_GET_REASON(code) == SSL_R_HTTP_REQUEST) {
                /* Plain HTTP on the TLS port: a readable answer costs nothing. */
                static const char msg[] =
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    "Content-Length: 48\r\nConnection: close\r\n\r\n"
                    "This port speaks HTTPS: use https:// to connect\n";
                (void)!send(c->fd, msg, sizeof msg - 1, MSG_NOSIGNAL);
            }
        }
        ERR_clear_error();
        errno = ECONNRESET;
        return -1;
    }
    }
}

/* info_cb marks the end of the handshake during an SSL_read or SSL_write: count it once. */
static void count_handshake(krait_server *srv, krait__conn *c, int was_ready)
{
    if (!was_ready && c->tls_ready)
        KRAIT__STAT_ADD(srv, KRAIT_STAT_TLS_HANDSHAKES, 1);
}

ssize_t krait__conn_recv(krait_server *srv, krait__conn *c, char *buf, size_t n)
{
    if (!c->ssl) {
        ssize_t r;
        do
            r = recv(c->fd, buf, n, 0);
        while (r < 0 && errno == EINTR);
        return r;
    }
    ERR_clear_error();
    int was_ready = c->tls_ready;
    int r = SSL_read(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    count_handshake(srv, c, was_ready);
    if (r > 0)
        return r;
    return tls_result(srv, c, r);
}

/* OpenSSL holds bytes epoll can't see: decrypted ones not yet read, or (read-ahead) received
 * ones not yet decrypted, possibly only part of a record (a read then just finds EAGAIN). */
const char *krait__tls_version(krait__conn *c)
{
    return c->ssl ? SSL_get_version(c->ssl) : NULL;
}

int krait__conn_pending(krait__conn *c)
{
    return c->ssl ? SSL_has_pending(c->ssl) : 0;
}

ssize_t krait__conn_send(krait_server *srv, krait__conn *c, const char *buf, size_t n, int more)
{
    if (!c->ssl) {
        ssize_t r;
        do
            r = send(c->fd, buf, n, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
        while (r < 0 && errno == EINTR);
        return r;
    }
    ERR_clear_error();
    int was_ready = c->tls_ready;
    int r = SSL_write(c->ssl, buf, n > (1u << 30) ? (1 << 30) : (int)n);
    count_handshake(srv, c, was_ready);
    if (r > 0)
        return r;
    ssize_t x = tls_result(srv, c, r);
    if (x == 0) {
        errno = EPIPE;
        return -1;
    }
    return x;
}

/* sendfile for plain sockets and kTLS; otherwise read and SSL_write. Returns bytes sent,
 * 0 when the file has no more bytes (it shrank), -1 with errno. */
ssize_t krait__conn_sendfile(krait_server *srv, krait__conn *c, int fd, off_t off, size_t n)
{
    if (!c->ssl) {
        ssize_t r;
        do
            r = sendfile(c->fd, fd, &off, n);
        while (r < 0 && errno == EINTR);
        return r;
    }
    if (BIO_get_ktls_send(SSL_get_wbio(c->ssl))) {
        ERR_clear_error();
        ossl_ssize_t r = SSL_sendfile(c->ssl, fd, off, n, 0);
        if (r >= 0)
            return r;
        if (errno == EAGAIN || errno == EINTR) {
            errno = EAGAIN;
            return -1;
        }
    }
    char buf[16384];
    size_t want = n < sizeof buf ? n : sizeof buf;
    ssize_t got;
    do
        got = pread(fd, buf, want, off);
    while (got < 0 && errno == EINTR);
    if (got <= 0)
        return got;
    return krait__conn_send(srv, c, buf, (size_t)got, 0);
}

/* Whether krait__tls_send_segs sends this connection's output: TLS without kTLS (with kTLS,
 * files leave through SSL_sendfile, segment by segment). */
int krait__tls_coalesce(krait__conn *c)
{
    return c->ssl && !BIO_get_ktls_send(SSL_get_wbio(c->ssl));
}

#define TLS_RECORD 16384

/* Send the next record of the pending segments, c->segs[c->seg_i] from c->seg_done on: memory
 * and file bytes are gathered into one SSL_write of up to a full record, so a response head and
 * a small file (or a multipart body) leave together. Returns the length sent (the caller steps
 * past it: conn.c's flush); 0 when a file segment has no more bytes (the file shrank); -1 with
 * errno (EAGAIN: try again later; c->tls_want_write says on which event).
 *
 * A write that found the socket full must be retried with the same bytes (OpenSSL has already
 * encrypted them and sends that record first, counting its length only). Nothing is consumed
 * until a write succeeds, and output is only ever appended to the pending segments while they
 * wait, so the retry gathers the same bytes, perhaps followed by more: that is allowed with
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, and the retried length is never shorter. */
ssize_t krait__tls_send_segs(krait_server *srv, krait__conn *c)
{
    char buf[TLS_RECORD];
    const char *p = buf;
    size_t len = 0;
    int i = c->seg_i;
    uint64_t done = c->seg_done;
    while (i < c->nseg && len < sizeof buf) {
        const krait__seg *s = &c->segs[i];
        uint64_t left = s->len - done;
        size_t take = left < sizeof buf - len ? (size_t)left : sizeof buf - len;
        if (!s->is_file) {
            const char *from = c->out + s->off + done;
            if (len == 0 && (take == sizeof buf || i + 1 == c->nseg)) {
                p = from;  /* a whole record, or the last piece: no copy needed */
                len = take;
                break;
            }
            memcpy(buf + len, from, take);
        } else {
            ssize_t got;
            do
                got = pread(c->file_fd, buf + len, take, (off_t)(s->off + done));
            while (got < 0 && errno == EINTR);
            if (got <= 0) {
                if (len == 0)
                    return got;  /* 0: the file shrank; -1: a read error */
                break;           /* send what came before; the next call reports it */
            }
            if ((size_t)got < take) {
                len += (size_t)got;
                break;
            }
        }
        len += take;
        if (take < left)
            break;
        i++;
        done = 0;
    }
    ssize_t n = krait__conn_send(srv, c, p, len, 0);
    if (n <= 0)
        return n < 0 ? -1 : 0;
    return n;
}

void krait__tls_shutdown(krait__conn *c)
{
    if (c->ssl && c->tls_ready)
        SSL_shutdown(c->ssl);  /* close_notify; best effort, never waits */
}

void krait__tls_ctx_free(krait_server *srv)
{
    if (srv->ssl_ctx) {
        SSL_CTX_free(srv->ssl_ctx);
        srv->ssl_ctx = NULL;
    }
}
