/* Response heads, error pages and the access log: Combined Log Format plus the seconds taken
 * (rendered here), or JSON lines (a record kept here, rendered by logjson.c). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conn.h"
#include "ipc.h"
#include "logjson.h"
#include "response.h"
#include "tls.h"
#include "xff.h"

int64_t krait__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

const char *krait__reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 200 ? "Informational" : status < 300 ? "Success"
                  : status < 400 ? "Redirection" : status < 500 ? "Client Error" : "Server Error";
    }
}

void krait__resp_start(struct krait_server *srv, krait__conn *c, int status)
{
    char line[64];
    int n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status, krait__reason(status));
    c->stat_status = status;  /* the metrics count it once it is out (krait__request_finish) */
    krait__out_add(c, line, (size_t)n);
    if (srv->server_header[0]) {
        krait__out_str(c, "Server: ");
        krait__out_str(c, srv->server_header);
        krait__out_add(c, "\r\n", 2);
    }
    krait__out_str(c, "Date: ");
    krait__out_add(c, srv->date, KRAIT__DATE_LEN);
    krait__out_add(c, "\r\n", 2);
    if (c->ssl && srv->hsts[0]) {
        krait__out_str(c, "Strict-Transport-Security: ");
        krait__out_str(c, srv->hsts);
        krait__out_add(c, "\r\n", 2);
    }
}

void krait__resp_end_headers(struct krait_server *srv, krait__conn *c, int64_t content_length)
{
    if (content_length >= 0) {
        krait__out_str(c, "Content-Length: ");
        krait__out_u64(c, (uint64_t)content_length);
        krait__out_add(c, "\r\n", 2);
    }
    if (srv->draining)
        c->keep_alive = 0;
    /* HTTP/1.0 closes unless told otherwise (RFC 9112 §9.3): say it when we keep it open. */
    krait__out_str(c, !c->keep_alive ? "Connection: close\r\n"
                      : c->http10    ? "Connection: keep-alive\r\n" : "");
    krait__out_add(c, "\r\n", 2);
}

const krait__header *krait__find_header(struct krait_server *srv, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < srv->nhdr; i++)
        if (srv->hdr[i].name_len == n && strncasecmp(srv->hdr[i].name, name, n) == 0)
            return &srv->hdr[i];
    return NULL;
}

void krait__error(struct krait_server *srv, krait__conn *c, krait__request *rq, int status,
                  int close_after)
{
    char fallback[160];
    const char *body = fallback, *type = "text/html; charset=utf-8";
    size_t n = (size_t)snprintf(fallback, sizeof fallback,
                                "<html><body><h1>%d %s</h1></body></html>", status,
                                krait__reason(status));
    /* The site's page for this status, or the workers' default one (krait.config.error_pages,
     * handed over by the supervisor), in JSON to a client that prefers it. */
    char key[8];
    int kn = snprintf(key, sizeof key, "%d", status);
    const krait__map_entry *page = krait__map_get(&srv->error_pages, key, (size_t)kn);
    if (page && c->wants_json && page->num[1]) {
        body = page->val + page->num[0];
        n = (size_t)page->num[1];
        type = "application/json";
    } else if (page) {
        body = page->val;
        n = (size_t)page->num[0];
        type = page->val + page->num[2];
    }
    if (close_after)
        c->keep_alive = 0;
    size_t from = c->out_len;
    krait__resp_start(srv, c, status);
    krait__out_str(c, "Content-Type: ");
    krait__out_str(c, type);
    krait__out_str(c, "\r\nCache-Control: no-store\r\n");
    if (status == 503)
        krait__out_str(c, "Retry-After: 1\r\n");
    krait__resp_end_headers(srv, c, (int64_t)n);
    int head = rq ? rq->is_head : c->head_only;
    if (!head)
        krait__out_add(c, body, n);
    krait__seg_mem(c, from);
    if (!rq && c->log_len)
        krait__log_status(srv, c, status, (uint64_t)(head ? 0 : n));  /* keep the request's line */
    else
        krait__log_begin(srv, c, rq, status, (uint64_t)(head ? 0 : n));
}

void krait__error_now(struct krait_server *srv, krait__conn *c, int status, int close_after)
{
    krait__out_reset(c);
    c->streaming = 0;
    krait__error(srv, c, NULL, status, close_after);
    c->state = CS_WRITE;
    krait__timer_set(srv, c, -1);
    krait__conn_post(srv, c);
}

/* RFC 9110 §5.1, §5.5: a field name is a token; a value holds no control character but HTAB
 * (and so no CR, LF or NUL). Anything else from a worker is dropped, never sent. */
int krait__header_ok(const krait__slice *name, const krait__slice *value)
{
    static const char tchar_extra[] = "!#$%&'*+-.^_`|~";
    if (!name->n)
        return 0;
    for (size_t i = 0; i < name->n; i++) {
        unsigned char ch = (unsigned char)name->p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch && strchr(tchar_extra, ch))))
            return 0;
    }
    for (size_t i = 0; i < value->n; i++) {
        unsigned char ch = (unsigned char)value->p[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return 1;
}

/* ---- access log ---------------------------------------------------------------------------- */

typedef struct {
    char *d;
    size_t cap, len;
} logbuf;

static void put(logbuf *b, const char *s, size_t n)
{
    if (n > b->cap - b->len)
        n = b->cap - b->len;
    memcpy(b->d + b->len, s, n);
    b->len += n;
}

static void putf(logbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(logbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Escape quotes, backslashes and non-printables so a log line stays one parseable line. */
static void put_field(logbuf *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n && b->len + 4 <= b->cap; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
            putf(b, "\\x%02x", ch);
        else
            b->d[b->len++] = (char)ch;
    }
}

/* KRAIT_LOG_JSON: c->log holds this record, then the line's head (logjson.c) rendered when
 * the request is parsed; c->log_len is the head's length. The answer's fields are set as they
 * become known and the tail is rendered at finish. The buffer is malloc'd, so the record at
 * its start is aligned. */
typedef struct {
    int status;
    uint64_t bytes;
    int worker, worker_pid;   /* -1, 0: no worker answered */
    int cut;                  /* a field of the head was cut */
    size_t id_len;            /* 0: no request id */
    char id[KRAIT__LOGJSON_ID_MAX];
} json_rec;

#define JSON_LOG_SIZE (sizeof(json_rec) + KRAIT__LOGJSON_HEAD_MAX)

static krait__logjson_str header_str(const krait__header *h)
{
    krait__logjson_str s = {NULL, 0};
    if (h) {
        s.p = h->value;
        s.n = h->value_len;
    }
    return s;
}

static void json_begin(struct krait_server *srv, krait__conn *c, krait__request *rq, int status,
                       uint64_t bytes)
{
    json_rec *r = (json_rec *)(void *)c->log;
    r->status = status;
    r->bytes = bytes;
    r->worker = -1;
    r->worker_pid = 0;
    r->id_len = 0;
    /* The wall-clock time the request began: now, less what the monotonic clock says has
     * passed since (c->t_start is monotonic). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t since = krait__mono_ns() - c->t_start;
    krait__logjson_head h = {
        .time_ms = ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - (since > 0 ? since : 0)) /
                   1000000,
        .remote = {c->peer, strnlen(c->peer, sizeof c->peer)},
        .version_minor = -1,
    };
    const char *tls = krait__tls_version(c);
    if (tls) {
        h.tls.p = tls;
        h.tls.n = strlen(tls);
    }
    if (rq && rq->method) {
        h.method.p = rq->method;
        h.method.n = rq->method_len;
        h.path.p = rq->target;
        h.path.n = rq->target_len;
        h.version_minor = rq->version_minor;
        h.host = header_str(krait__find_header(srv, "host"));
        h.referer = header_str(krait__find_header(srv, "referer"));
        h.ua = header_str(krait__find_header(srv, "user-agent"));
    }
    /* Behind a trusted HTTP proxy the client is in X-Forwarded-For: the walk the worker does
     * for remote_addr (xff.c). Only for a trusted peer; a client a PROXY header named is final. */
    char client[KRAIT__XFF_ADDR];
    if (rq && rq->method && c->peer_trusted && !c->proxy_done &&
        krait__xff_client(srv->trusted, srv->ntrusted, srv->trust_unix, c->peer, srv->hdr,
                          srv->nhdr, client)) {
        h.peer = h.remote;
        h.remote.p = client;
        h.remote.n = strlen(client);
    }
    c->log_len = krait__logjson_head_render(c->log + sizeof(json_rec), KRAIT__LOGJSON_HEAD_MAX,
                                            &h, &r->cut);
}

void krait__log_begin(struct krait_server *srv, krait__conn *c, krait__request *rq, int status,
                      uint64_t bytes)
{
    c->log_len = 0;
    if (!srv->log_on)
        return;
    int json = srv->log_format == KRAIT_LOG_JSON;
    if (!c->log && !(c->log = malloc(json ? JSON_LOG_SIZE : KRAIT__LOG_LINE)))
        return;
    if (json) {
        json_begin(srv, c, rq, status, bytes);
        return;
    }
    /* Room is kept for the status rewrite and the time taken. */
    logbuf b = {c->log, KRAIT__LOG_LINE - 64, 0};
    putf(&b, "%s - - [%s] \"", c->peer, srv->log_date);
    if (rq && rq->method) {
        put_field(&b, rq->method, rq->method_len);
        put(&b, " ", 1);
        put_field(&b, rq->target, rq->target_len);
        putf(&b, " HTTP/1.%d", rq->version_minor);
    } else {
        put(&b, "-", 1);
    }
    putf(&b, "\" %d %llu \"", status, (unsigned long long)bytes);
    const krait__header *h = rq && rq->method ? krait__find_header(srv, "referer") : NULL;
    if (h)
        put_field(&b, h->value, h->value_len);
    else
        put(&b, "-", 1);
    put(&b, "\" \"", 3);
    h = rq && rq->method ? krait__find_header(srv, "user-agent") : NULL;
    if (h)
        put_field(&b, h->value, h->value_len);
    else
        put(&b, "-", 1);
    put(&b, "\"", 1);
    c->log_len = b.len;
}

void krait__log_status(struct krait_server *srv, krait__conn *c, int status, uint64_t bytes)
{
    if (!c->log_len || !c->log)
        return;
    if (srv->log_format == KRAIT_LOG_JSON) {
        json_rec *r = (json_rec *)(void *)c->log;
        r->status = status;
        r->bytes = bytes;
        return;
    }
    /* The line holds '"<request>" <status> <bytes> "' once; the request part has no bare
     * quote (escaped), so the first '" ' ends it. */
    char *q = memmem(c->log, c->log_len, "\" ", 2);
    if (!q)
        return;
    char *end = memchr(q + 2, '"', c->log_len - (size_t)(q + 2 - c->log));
    if (!end)
        return;
    char mid[48];
    int n = snprintf(mid, sizeof mid, "\" %d %llu ", status, (unsigned long long)bytes);
    size_t old = (size_t)(end - q);
    size_t tail = c->log_len - (size_t)(end - c->log);
    if (c->log_len - old + (size_t)n >= KRAIT__LOG_LINE - 32)
        return;
    memmove(q + n, end, tail);
    memcpy(q, mid, (size_t)n);
    c->log_len = c->log_len - old + (size_t)n;
}

void krait__log_worker(struct krait_server *srv, krait__conn *c, int slot, int pid,
                       const krait__ipc_frame *f)
{
    if (!c->log_len || !c->log || srv->log_format != KRAIT_LOG_JSON)
        return;
    json_rec *r = (json_rec *)(void *)c->log;
    r->worker = slot;
    r->worker_pid = pid;
    r->id_len = 0;
    const uint8_t *at = f->headers_at;
    for (size_t i = 0; i < f->nheaders; i++) {
        krait__slice name, value;
        krait__ipc_next_pair(&at, &name, &value);
        if (name.n == 12 && strncasecmp(name.p, "x-request-id", 12) == 0 &&
            krait__request_id_ok(value.p, value.n)) {
            memcpy(r->id, value.p, value.n);
            r->id_len = value.n;
        }
    }
}

/* Room in the server's buffer for more bytes; 0 when it cannot grow (the line is dropped). */
static int logbuf_room(struct krait_server *srv, size_t more)
{
    if (srv->log_len + more <= srv->log_cap)
        return 1;
    size_t ncap = srv->log_cap ? srv->log_cap * 2 : 65536;
    while (ncap < srv->log_len + more)
        ncap *= 2;
    char *p = realloc(srv->logbuf, ncap);
    if (!p)
        return 0;
    srv->logbuf = p;
    srv->log_cap = ncap;
    return 1;
}

static void json_finish(struct krait_server *srv, krait__conn *c)
{
    json_rec *r = (json_rec *)(void *)c->log;
    krait__logjson_tail t = {
        .id = r->id, .id_len = r->id_len,
        .status = r->status, .bytes = r->bytes,
        .duration_ns = krait__mono_ns() - c->t_start,
        .loop = srv->loop_index,
        .worker = r->worker, .worker_pid = r->worker_pid,
        .truncated = r->cut,
    };
    if (!logbuf_room(srv, c->log_len + KRAIT__LOGJSON_TAIL_MAX))
        return;
    memcpy(srv->logbuf + srv->log_len, c->log + sizeof(json_rec), c->log_len);
    srv->log_len += c->log_len;
    srv->log_len += krait__logjson_tail_render(srv->logbuf + srv->log_len,
                                               KRAIT__LOGJSON_TAIL_MAX, &t);
}

void krait__log_finish(struct krait_server *srv, krait__conn *c)
{
    if (!c->log_len || !srv->log_on || !c->log) {
        c->log_len = 0;
        return;
    }
    if (srv->log_format == KRAIT_LOG_JSON) {
        json_finish(srv, c);
        c->log_len = 0;
        return;
    }
    double secs = (double)(krait__mono_ns() - c->t_start) / 1e9;
    if (!logbuf_room(srv, c->log_len + 32)) {
        c->log_len = 0;
        return;
    }
    memcpy(srv->logbuf + srv->log_len, c->log, c->log_len);
    srv->log_len += c->log_len;
    int n = snprintf(srv->logbuf + srv->log_len, 32, " %.6f\n", secs);
    srv->log_len += n > 0 && n < 32 ? (size_t)n : 0;
    c->log_len = 0;
}

void krait__log_flush(struct krait_server *srv)
{
    /* Loops write whole lines, one loop at a time: lines never interleave. The descriptor is
     * read under the lock, so a reopen (krait_server_swap_access_log) takes effect for every
     * loop at once and the old one is never written after the swap. Uncontended with one
     * loop, and taken once a turn, not once a request. */
    struct krait_server *hub = srv->hub;
    pthread_mutex_lock(&hub->log_lock);
    int fd = hub->log_fd;
    size_t off = 0;
    while (fd >= 0 && off < srv->log_len) {
        ssize_t n = write(fd, srv->logbuf + off, srv->log_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;  /* a full or broken log must not stall the server */
        off += (size_t)n;
    }
    pthread_mutex_unlock(&hub->log_lock);
    srv->log_len = 0;
}
