/* The server: listeners, the epoll loop (signalfd, timers, deferred close), connections
 * (reading, pipelining in order, keep-alive, output segments written with send/sendfile),
 * request dispatch (limits → 4xx, routing, static files in C, dynamic to a worker), response
 * head assembly and the access log. Parsing lives in http.c, validators in cache.c,
 * file resolution in static.c, the worker side in worker.c. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "internal.h"

#define READ_CHUNK 16384
#define MAX_EVENTS 256
#define ACCEPT_BATCH 64

static const int64_t default_limits[KRAIT_LIMIT_COUNT] = {
    [KRAIT_LIMIT_REQUEST_LINE] = 8 * 1024,
    [KRAIT_LIMIT_HEAD] = 64 * 1024,
    [KRAIT_LIMIT_HEADERS] = 100,
    [KRAIT_LIMIT_BODY] = 16 * 1024 * 1024,
    [KRAIT_LIMIT_HEADER_TIMEOUT] = 10000,
    [KRAIT_LIMIT_KEEPALIVE] = 60000,
    [KRAIT_LIMIT_WORKER_TIMEOUT] = 30000,
    [KRAIT_LIMIT_QUEUE] = 1024,
    [KRAIT_LIMIT_WS_MESSAGE] = 16 * 1024 * 1024,
    [KRAIT_LIMIT_BODY_TIMEOUT] = 30000,
    [KRAIT_LIMIT_SEND_TIMEOUT] = 60000,
    [KRAIT_LIMIT_MAX_CONNS] = 65536,
    [KRAIT_LIMIT_SPOOL] = 1024 * 1024,
    [KRAIT_LIMIT_DRAIN] = 10000,
    [KRAIT_LIMIT_WS_PING] = 30000,
    [KRAIT_LIMIT_WORKER_DEPTH] = 4,
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_err(char *err, size_t errlen, const char *what, int e)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", what, strerror(e));
}

/* ---- lists ------------------------------------------------------------------------------ */

void krait__link_remove(krait__link *l)
{
    if (!l->next)
        return;
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = NULL;
}

void krait__link_append(krait__link *head, krait__link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

void krait__link_prepend(krait__link *head, krait__link *l)
{
    krait__link_append(head->next, l);  /* before the first element */
}

static void list_init(krait__link *head)
{
    head->prev = head->next = head;
}

#define CONTAINER(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* Each timer list has one fixed timeout, so appending keeps it sorted by deadline. */
void krait__timer_set(krait_server *srv, krait__conn *c, int list)
{
    static const int limit_of[TL_COUNT] = {
        [TL_HEAD] = KRAIT_LIMIT_HEADER_TIMEOUT, [TL_BODY] = KRAIT_LIMIT_BODY_TIMEOUT,
        [TL_IDLE] = KRAIT_LIMIT_KEEPALIVE, [TL_SEND] = KRAIT_LIMIT_SEND_TIMEOUT,
        [TL_WS] = KRAIT_LIMIT_WS_PING};
    krait__link_remove(&c->timer);
    c->timer_list = list;
    if (list < 0)
        return;
    c->deadline = srv->now_ms + srv->limits[limit_of[list]];
    krait__link_append(&srv->timers[list], &c->timer);
}

/* ---- server object ---------------------------------------------------------------------- */

krait_server *krait_server_new(const char *site_root, char *err, size_t errlen)
{
    krait_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        set_err(err, errlen, "allocating the server", ENOMEM);
        return NULL;
    }
    srv->epfd = srv->sig_fd = srv->wake_fd = srv->root_fd = srv->spare_fd = -1;
    srv->log_fd = -1;
    memcpy(srv->limits, default_limits, sizeof default_limits);
    srv->max_age = 300;
    srv->max_age_long = 864000;
    snprintf(srv->server_header, sizeof srv->server_header, "krait");
    srv->mime.max = 0;
    srv->cache_rules.max = 16384;
    srv->route_cache.max = 16384;
    srv->dyn_cache.max = 16384;
    srv->resolved.max = 16384;
    for (int i = 0; i < TL_COUNT; i++)
        list_init(&srv->timers[i]);
    list_init(&srv->conns);
    list_init(&srv->waitq);
    list_init(&srv->tls_later);
    list_init(&srv->flush_later);
    for (int i = 0; i < KRAIT__MAX_WORKERS; i++)
        srv->workers[i].fd = -1;

    if (!realpath(site_root, srv->root)) {
        set_err(err, errlen, site_root, errno);
        goto fail;
    }
    srv->root_len = strlen(srv->root);
    srv->root_fd = open(srv->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (srv->root_fd < 0) {
        set_err(err, errlen, site_root, errno);
        goto fail;
    }
    srv->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (srv->epfd < 0) {
        set_err(err, errlen, "epoll_create1", errno);
        goto fail;
    }
    srv->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (srv->wake_fd < 0) {
        set_err(err, errlen, "eventfd", errno);
        goto fail;
    }
    srv->wake.kind = OBJ_WAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &srv->wake};
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->wake_fd, &ev) < 0) {
        set_err(err, errlen, "epoll_ctl", errno);
        goto fail;
    }
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return srv;
fail:
    krait_server_free(srv);
    return NULL;
}

void krait_server_free(krait_server *srv)
{
    if (!srv)
        return;
    while (srv->conns.next != &srv->conns) {
        krait__conn *c = CONTAINER(srv->conns.next, krait__conn, all);
        krait__link_remove(&c->all);
        krait__tls_free(c);
        krait__ws_free(c);
        if (c->fd >= 0)
            close(c->fd);
        if (c->file_fd >= 0)
            close(c->file_fd);
        free(c->in);
        free(c->out);
        free(c->body);
        free(c->frame);
        free(c);
    }
    for (int i = 0; i < srv->nlisteners; i++)
        close(srv->listeners[i].fd);
    for (int i = 0; i < KRAIT__MAX_WORKERS; i++) {
        krait__worker *w = &srv->workers[i];
        if (w->fd >= 0)
            close(w->fd);
        free(w->in);
        free(w->out);
    }
    for (size_t i = 0; i < srv->nroutes; i++) {
        free(srv->routes[i].url);
        free(srv->routes[i].target);
    }
    free(srv->routes);
    krait__map_free(&srv->mime);
    krait__map_free(&srv->cache_rules);
    krait__map_free(&srv->route_cache);
    krait__map_free(&srv->dyn_cache);
    krait__map_free(&srv->resolved);
    krait__map_free(&srv->ws_ids);
    if (srv->sig_fd >= 0)
        close(srv->sig_fd);
    if (srv->wake_fd >= 0)
        close(srv->wake_fd);
    if (srv->epfd >= 0)
        close(srv->epfd);
    if (srv->root_fd >= 0)
        close(srv->root_fd);
    if (srv->spare_fd >= 0)
        close(srv->spare_fd);
    krait__tls_ctx_free(srv);
    free(srv->logbuf);
    free(srv->spool_dir);
    free(srv);
}

int krait_server_set_limit(krait_server *srv, int which, int64_t value)
{
    if (which < 0 || which >= KRAIT_LIMIT_COUNT || value <= 0)
        return KRAIT_EINVAL;
    if (which == KRAIT_LIMIT_HEADERS && value > KRAIT__MAX_HEADERS_CAP)
        return KRAIT_EINVAL;
    if (which == KRAIT_LIMIT_WORKER_DEPTH && value > KRAIT__WORKER_DEPTH_MAX)
        return KRAIT_EINVAL;
    srv->limits[which] = value;
    return KRAIT_OK;
}

int krait_server_add_mime(krait_server *srv, const char *ext, const char *type)
{
    krait__map_entry *e = krait__map_put(&srv->mime, ext, strlen(ext));
    if (!e)
        return KRAIT_ENOMEM;
    /* RFC 9110 §8.3.1: text types get an explicit charset; our files are UTF-8. */
    int texty = strncmp(type, "text/", 5) == 0 || strcmp(type, "application/javascript") == 0 ||
                strcmp(type, "application/json") == 0 || strcmp(type, "application/xml") == 0 ||
                strcmp(type, "image/svg+xml") == 0;
    size_t n = strlen(type) + (texty ? 16 : 1);
    char *v = malloc(n);
    if (!v)
        return KRAIT_ENOMEM;
    snprintf(v, n, "%s%s", type, texty ? "; charset=utf-8" : "");
    free(e->val);
    e->val = v;
    e->val_len = strlen(v);
    return KRAIT_OK;
}

int krait_server_set_cache_ages(krait_server *srv, int64_t max_age, int64_t max_age_long)
{
    if (max_age < 0 || max_age_long < 0)
        return KRAIT_EINVAL;
    srv->max_age = max_age;
    srv->max_age_long = max_age_long;
    return KRAIT_OK;
}

int krait_server_add_route(krait_server *srv, int verbs, const char *url, int has_regex,
                           const char *target, int is_ctrl)
{
    krait__route *nr = realloc(srv->routes, (srv->nroutes + 1) * sizeof *nr);
    if (!nr)
        return KRAIT_ENOMEM;
    srv->routes = nr;
    krait__route *r = &nr[srv->nroutes];
    memset(r, 0, sizeof *r);
    r->verbs = verbs;
    r->has_regex = has_regex;
    r->is_ctrl = is_ctrl;
    if ((url && !(r->url = strdup(url))) || (target && !(r->target = strdup(target)))) {
        free(r->url);
        return KRAIT_ENOMEM;
    }
    srv->nroutes++;
    return KRAIT_OK;
}

int krait_server_set_callbacks(krait_server *srv, krait_cache_fn cache, krait_route_fn route,
                               krait_event_fn event, void *ud)
{
    srv->cache_cb = cache;
    srv->route_cb = route;
    srv->event_cb = event;
    srv->cb_ud = ud;
    return KRAIT_OK;
}

int krait_server_set_access_log(krait_server *srv, int fd)
{
    srv->log_fd = fd;
    return KRAIT_OK;
}

int krait_server_set_version(krait_server *srv, const char *version)
{
    snprintf(srv->server_header, sizeof srv->server_header, "krait/%s", version);
    return KRAIT_OK;
}

int64_t krait_server_stat(krait_server *srv, int which)
{
    if (which == KRAIT_STAT_CONNS)
        return (int64_t)srv->nconns;
    if (which < 0 || which >= 8)
        return -1;
    return srv->stats[which];
}

const char *krait_strerror(int rc)
{
    switch (rc) {
    case KRAIT_OK: return "ok";
    case KRAIT_ESYS: return "system call failed";
    case KRAIT_ENOMEM: return "out of memory";
    case KRAIT_EINVAL: return "invalid argument";
    case KRAIT_ELIMIT: return "table full";
    default: return "unknown error";
    }
}

int krait_native_version(void)
{
    return KRAIT_NATIVE_VERSION;
}

int krait_server_set_https(krait_server *srv, int https_port, const char *hsts)
{
    srv->https_redirect_port = https_port;
    snprintf(srv->hsts, sizeof srv->hsts, "%s", hsts ? hsts : "");
    return KRAIT_OK;
}

int krait_server_listen(krait_server *srv, const char *host, int port, int tls, char *err,
                        size_t errlen)
{
    if (tls && !srv->ssl_ctx) {
        if (err)
            snprintf(err, errlen, "HTTPS needs a certificate and key (krait.config)");
        return KRAIT_EINVAL;
    }
    if (srv->nlisteners >= (int)(sizeof srv->listeners / sizeof srv->listeners[0]))
        return KRAIT_ELIMIT;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo(host && *host ? host : NULL, portstr, &hints, &res);
    if (rc != 0) {
        if (err)
            snprintf(err, errlen, "%s: %s", host, gai_strerror(rc));
        return KRAIT_EINVAL;
    }
    /* With no host, prefer IPv4 any (0.0.0.0) like the original. */
    struct addrinfo *ai = res;
    for (struct addrinfo *p = res; p; p = p->ai_next)
        if (!(host && *host) && p->ai_family == AF_INET) {
            ai = p;
            break;
        }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_err(err, errlen, "socket", errno);
        freeaddrinfo(res);
        return KRAIT_ESYS;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        char what[300];
        snprintf(what, sizeof what, "listening on %s:%d", host && *host ? host : "*", port);
        set_err(err, errlen, what, errno);
        close(fd);
        freeaddrinfo(res);
        return KRAIT_ESYS;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    int bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    int i = srv->nlisteners++;
    srv->listeners[i].obj.kind = OBJ_LISTENER;
    srv->listeners[i].fd = fd;
    srv->listeners[i].tls = tls;
    return bound;
}

/* ---- output ----------------------------------------------------------------------------- */

int krait__out_reserve(krait__conn *c, size_t n)
{
    if (c->out_len + n <= c->out_cap)
        return 0;
    size_t ncap = c->out_cap ? c->out_cap : 1024;
    while (ncap < c->out_len + n)
        ncap *= 2;
    char *p = realloc(c->out, ncap);
    if (!p)
        return -1;
    c->out = p;
    c->out_cap = ncap;
    return 0;
}

void krait__out_add(krait__conn *c, const char *p, size_t n)
{
    if (krait__out_reserve(c, n) < 0)
        return;
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

void krait__out_str(krait__conn *c, const char *s)
{
    krait__out_add(c, s, strlen(s));
}

void krait__out_u64(krait__conn *c, uint64_t v)
{
    char tmp[24];
    int i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    krait__out_add(c, tmp + i, sizeof tmp - (size_t)i);
}

/* Mark out[from..out_len) as the next segment to send. */
void krait__seg_mem(krait__conn *c, size_t from)
{
    if (c->out_len <= from || c->nseg >= KRAIT__MAX_SEGS)
        return;
    if (c->nseg && !c->segs[c->nseg - 1].is_file &&
        c->segs[c->nseg - 1].off + c->segs[c->nseg - 1].len == from) {
        c->segs[c->nseg - 1].len += c->out_len - from;
        return;
    }
    c->segs[c->nseg++] = (krait__seg){0, from, c->out_len - from};
}

/* n bytes of the pending segments have been sent: step past them. */
void krait__seg_advance(krait__conn *c, uint64_t n)
{
    while (n && c->seg_i < c->nseg) {
        uint64_t left = c->segs[c->seg_i].len - c->seg_done;
        if (n < left) {
            c->seg_done += n;
            return;
        }
        n -= left;
        c->seg_i++;
        c->seg_done = 0;
    }
}

void krait__seg_file(krait__conn *c, uint64_t off, uint64_t len)
{
    if (len && c->nseg < KRAIT__MAX_SEGS)
        c->segs[c->nseg++] = (krait__seg){1, off, len};
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

void krait__resp_start(krait_server *srv, krait__conn *c, int status)
{
    char line[64];
    int n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status, krait__reason(status));
    krait__out_add(c, line, (size_t)n);
    krait__out_str(c, "Server: ");
    krait__out_str(c, srv->server_header);
    krait__out_str(c, "\r\nDate: ");
    krait__out_add(c, srv->date, KRAIT__DATE_LEN);
    krait__out_add(c, "\r\n", 2);
    if (c->ssl && srv->hsts[0]) {
        krait__out_str(c, "Strict-Transport-Security: ");
        krait__out_str(c, srv->hsts);
        krait__out_add(c, "\r\n", 2);
    }
}

/* Content-Length (when >= 0), Connection, and the blank line. */
void krait__resp_end_headers(krait_server *srv, krait__conn *c, int64_t content_length)
{
    if (content_length >= 0) {
        krait__out_str(c, "Content-Length: ");
        krait__out_u64(c, (uint64_t)content_length);
        krait__out_add(c, "\r\n", 2);
    }
    if (srv->draining)
        c->keep_alive = 0;
    krait__out_str(c, c->keep_alive ? "" : "Connection: close\r\n");
    krait__out_add(c, "\r\n", 2);
}

const krait__header *krait__find_header(krait_server *srv, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < srv->nhdr; i++)
        if (srv->hdr[i].name_len == n && strncasecmp(srv->hdr[i].name, name, n) == 0)
            return &srv->hdr[i];
    return NULL;
}

static void log_field(char *dst, size_t cap, size_t *len, const char *p, size_t n)
{
    /* Escape quotes, backslashes and non-printables so a log line stays one parseable line. */
    for (size_t i = 0; i < n && *len + 5 < cap; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
            *len += (size_t)snprintf(dst + *len, cap - *len, "\\x%02x", ch);
        else
            dst[(*len)++] = (char)ch;
    }
}

/* Prepare the access-log line (Combined Log Format + seconds taken), finished when the
 * response has been sent. */
void krait__log_begin(krait_server *srv, krait__conn *c, krait__request *rq, int status,
                      uint64_t bytes)
{
    c->log_len = 0;
    if (srv->log_fd < 0)
        return;
    char *d = c->log;
    size_t cap = sizeof c->log - 32;
    size_t len = 0;
    len += (size_t)snprintf(d, cap, "%s - - [%s] \"", c->peer, srv->log_date);
    if (rq && rq->method) {
        log_field(d, cap, &len, rq->method, rq->method_len);
        d[len++] = ' ';
        log_field(d, cap, &len, rq->target, rq->target_len);
        len += (size_t)snprintf(d + len, cap - len, " HTTP/1.%d", rq->version_minor);
    } else {
        d[len++] = '-';
    }
    len += (size_t)snprintf(d + len, cap - len, "\" %d %llu \"", status,
                            (unsigned long long)bytes);
    const krait__header *h = rq && rq->method ? krait__find_header(srv, "referer") : NULL;
    if (h)
        log_field(d, cap, &len, h->value, h->value_len);
    else
        d[len++] = '-';
    len += (size_t)snprintf(d + len, cap - len, "\" \"");
    h = rq && rq->method ? krait__find_header(srv, "user-agent") : NULL;
    if (h)
        log_field(d, cap, &len, h->value, h->value_len);
    else
        d[len++] = '-';
    d[len++] = '"';
    c->log_len = len;
}

static void log_finish(krait_server *srv, krait__conn *c)
{
    if (!c->log_len || srv->log_fd < 0)
        return;
    double secs = (double)(mono_ns() - c->t_start) / 1e9;
    if (srv->log_len + c->log_len + 32 > srv->log_cap) {
        size_t ncap = srv->log_cap ? srv->log_cap * 2 : 65536;
        while (ncap < srv->log_len + c->log_len + 32)
            ncap *= 2;
        char *p = realloc(srv->logbuf, ncap);
        if (!p)
            return;
        srv->logbuf = p;
        srv->log_cap = ncap;
    }
    memcpy(srv->logbuf + srv->log_len, c->log, c->log_len);
    srv->log_len += c->log_len;
    srv->log_len += (size_t)snprintf(srv->logbuf + srv->log_len, 32, " %.6f\n", secs);
    c->log_len = 0;
}

static void log_flush(krait_server *srv)
{
    size_t off = 0;
    while (off < srv->log_len) {
        ssize_t n = write(srv->log_fd, srv->logbuf + off, srv->log_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;  /* a full or broken log must not stall the server */
        off += (size_t)n;
    }
    srv->log_len = 0;
}

/* An error page: a small HTML body with its Content-Type (behaviour §16.5). */
void krait__error(krait_server *srv, krait__conn *c, krait__request *rq, int status,
                  int close_after)
{
    char body[160];
    int n = snprintf(body, sizeof body, "<html><body><h1>%d %s</h1></body></html>", status,
                     krait__reason(status));
    if (close_after)
        c->keep_alive = 0;
    size_t from = c->out_len;
    krait__resp_start(srv, c, status);
    krait__out_str(c, "Content-Type: text/html; charset=utf-8\r\n");
    if (status == 503)
        krait__out_str(c, "Retry-After: 1\r\n");
    krait__resp_end_headers(srv, c, n);
    /* Without rq the request was parsed earlier (a worker's failure): c->head_only says. */
    int head = rq ? rq->is_head : c->head_only;
    if (!head)
        krait__out_add(c, body, (size_t)n);
    krait__seg_mem(c, from);
    if (!rq && c->log_len)
        krait__log_status(c, status, (uint64_t)(head ? 0 : n));  /* keep the request's line */
    else
        krait__log_begin(srv, c, rq, status, (uint64_t)(head ? 0 : n));
}

/* Rewrite the pending log line's status and size now that they are known. */
void krait__log_status(krait__conn *c, int status, uint64_t bytes)
{
    if (!c->log_len)
        return;
    /* The line holds '"<request>" <status> <bytes> "' once; find it from the right of the
     * request part: the first '" ' after the opening quote of the request. */
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
    if (c->log_len - old + (size_t)n >= sizeof c->log)
        return;
    memmove(q + n, end, tail);
    memcpy(q, mid, (size_t)n);
    c->log_len = c->log_len - old + (size_t)n;
}

/* ---- connections ------------------------------------------------------------------------ */

/* Level-triggered interest, changed only when a response has to wait (socket full, worker
 * busy): the common request → immediate response path never touches epoll_ctl. */
static void conn_events(krait_server *srv, krait__conn *c, uint32_t events)
{
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(srv->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

void krait__conn_close(krait_server *srv, krait__conn *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    krait__ws_gone(srv, c);
    krait__worker_conn_gone(srv, c);
    krait__timer_set(srv, c, -1);
    krait__link_remove(&c->wq);
    krait__link_remove(&c->tls_later);
    krait__link_remove(&c->flush_later);
    epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    krait__tls_free(c);
    close(c->fd);
    c->fd = -1;
    if (c->file_fd >= 0) {
        close(c->file_fd);
        c->file_fd = -1;
    }
    srv->nconns--;
    if (srv->nreap < sizeof srv->reap / sizeof srv->reap[0]) {
        srv->reap[srv->nreap++] = c;
    } else {
        /* The reap list is full only in a pathological batch; leak-free fallback: free now is
         * unsafe, so keep the object on the all-list and let krait_server_free reclaim it. */
        return;
    }
    krait__link_remove(&c->all);
}

static void reap(krait_server *srv)
{
    for (size_t i = 0; i < srv->nreap; i++) {
        krait__conn *c = srv->reap[i];
        if (c->spool[0])
            unlink(c->spool);
        krait__ws_free(c);
        free(c->in);
        free(c->out);
        free(c->body);
        free(c->frame);
        free(c);
    }
    srv->nreap = 0;
}

static void process_input(krait_server *srv, krait__conn *c);

/* TLS read-ahead leaves input in OpenSSL, where level-triggered epoll can't see it: a
 * connection that goes back to reading with such bytes is read again after the event batch
 * (not from here, which may be deep in a pipelined response). */
static void tls_read_later(krait_server *srv, krait__conn *c)
{
    if (c->ssl && !c->closed && !c->tls_later.next &&
        (c->state == CS_HEAD || c->state == CS_BODY || c->state == CS_WS) &&
        krait__conn_pending(c))
        krait__link_append(&srv->tls_later, &c->tls_later);
}

/* The response is fully sent: log it, drop the answered bytes and go on with the next
 * pipelined request (responses leave in request order because only one is built at a time). */
static void response_done(krait_server *srv, krait__conn *c)
{
    log_finish(srv, c);
    if (c->file_fd >= 0) {
        close(c->file_fd);
        c->file_fd = -1;
    }
    c->nseg = c->seg_i = 0;
    c->seg_done = 0;
    c->out_len = 0;
    c->streaming = 0;
    c->head_only = 0;
    if (c->spool[0]) {
        unlink(c->spool);  /* the worker is done with the spooled body */
        c->spool[0] = '\0';
    }
    if (!c->keep_alive || srv->draining) {
        /* RFC 9112 §9.6: after a response with "close", stop reading; half-close first so a
         * client still sending does not get a reset that could discard our response. */
        if (c->ssl)
            SSL_shutdown(c->ssl);  /* close_notify; best effort, never waits */
        shutdown(c->fd, SHUT_WR);
        krait__conn_close(srv, c);
        return;
    }
    if (c->consume) {
        memmove(c->in, c->in + c->consume, c->in_len - c->consume);
        c->in_len -= c->consume;
        c->consume = 0;
    }
    if (c->ws_pending) {
        krait__ws_begin(srv, c);
        tls_read_later(srv, c);
        return;
    }
    c->state = CS_HEAD;
    c->got_bytes = c->in_len > 0;
    if (c->in_len) {
        krait__timer_set(srv, c, TL_HEAD);
        process_input(srv, c);
    } else {
        if (c->in_cap > READ_CHUNK) {
            free(c->in);
            c->in = NULL;
            c->in_cap = 0;
        }
        krait__timer_set(srv, c, TL_IDLE);
    }
    tls_read_later(srv, c);
}

/* Send pending segments. Returns when everything is sent, the socket is full (EPOLLOUT armed)
 * or the connection failed (closed). */
void krait__conn_flush(krait_server *srv, krait__conn *c)
{
    while (c->seg_i < c->nseg) {
        krait__seg *s = &c->segs[c->seg_i];
        uint64_t left = s->len - c->seg_done;
        ssize_t n;
        if (krait__tls_coalesce(c)) {
            /* TLS without kTLS: head and body pieces leave together, a record at a time. */
            n = krait__tls_send_segs(srv, c);
            if (n == 0) {
                krait__conn_close(srv, c);  /* the file shrank */
                return;
            }
            if (n > 0)
                continue;  /* the segments were advanced */
        } else if (s->is_file) {
            off_t off = (off_t)(s->off + c->seg_done);
            size_t want = left > (1u << 30) ? (1u << 30) : (size_t)left;
            n = krait__conn_sendfile(srv, c, c->file_fd, off, want);
            if (n == 0) {
                /* The file shrank under us: the promised length can't be kept. */
                krait__conn_close(srv, c);
                return;
            }
        } else {
            n = krait__conn_send(srv, c, c->out + s->off + c->seg_done, left,
                                 c->seg_i + 1 < c->nseg);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (c->state == CS_WS) {
                    conn_events(srv, c, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
                } else {
                    conn_events(srv, c, EPOLLOUT);
                    krait__timer_set(srv, c, TL_SEND);
                    if (c->streaming)
                        krait__worker_drained(srv, c);  /* the client may have taken some */
                }
                return;
            }
            krait__conn_close(srv, c);
            return;
        }
        krait__seg_advance(c, (uint64_t)n);
    }
    if (c->streaming || c->state != CS_WRITE) {
        /* A streamed body or an open WebSocket: more output will come later. */
        c->nseg = c->seg_i = 0;
        c->out_len = 0;
        if (c->streaming)
            krait__worker_drained(srv, c);
        if (c->state == CS_WS) {
            if (c->ws_close_after_flush) {
                shutdown(c->fd, SHUT_WR);
                krait__conn_close(srv, c);
                return;
            }
            if (c->events != (EPOLLIN | EPOLLRDHUP))
                conn_events(srv, c, EPOLLIN | EPOLLRDHUP);
        }
        return;
    }
    if (c->events != (EPOLLIN | EPOLLRDHUP))
        conn_events(srv, c, EPOLLIN | EPOLLRDHUP);
    response_done(srv, c);
}

/* While a worker runs the request, the client's further bytes wait in the kernel. */
void krait__conn_pause(krait_server *srv, krait__conn *c)
{
    conn_events(srv, c, 0);
}

static int method_verb(const char *m, size_t n, int *is_head)
{
    *is_head = 0;
#define IS(s) (n == sizeof(s) - 1 && memcmp(m, s, n) == 0)
    if (IS("GET")) return KRAIT_VERB_GET;
    if (IS("HEAD")) { *is_head = 1; return KRAIT_VERB_GET; }
    if (IS("POST")) return KRAIT_VERB_POST;
    if (IS("PUT")) return KRAIT_VERB_PUT;
    if (IS("DELETE")) return KRAIT_VERB_DELETE;
    if (IS("CONNECT")) return KRAIT_VERB_CONNECT;
    if (IS("OPTIONS")) return KRAIT_VERB_OPTIONS;
    if (IS("TRACE")) return KRAIT_VERB_TRACE;
    if (IS("PATCH")) return KRAIT_VERB_PATCH;
#undef IS
    return 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Decode the path once and normalise it (behaviour §16.3). Returns 0, 400 for a malformed path
 * (bad escape, %00, not origin-form), or 404 for a dot segment ("..", hidden names).
 * "." segments and empty segments are dropped; a trailing '/' is kept, so "/robots.txt/" names
 * no file. */
static int decode_path(const char *p, size_t n, char *out, size_t cap, size_t *out_len)
{
    if (n == 0 || p[0] != '/')
        return 400;
    char tmp[KRAIT__PATH_MAX];
    size_t t = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '%') {
            int hi = i + 2 < n ? hexval(p[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return 400;
            ch = (char)(hi * 16 + lo);
            if (ch == '\0')
                return 400;
            i += 2;
        } else if (ch == '#') {
            return 400;
        }
        if (t + 1 >= sizeof tmp)
            return 414;
        tmp[t++] = ch;
    }
    /* Normalise segment by segment. */
    size_t o = 0;
    int hidden = 0;
    size_t i = 0;
    while (i < t) {
        while (i < t && tmp[i] == '/')
            i++;
        size_t s = i;
        while (i < t && tmp[i] != '/')
            i++;
        size_t sl = i - s;
        if (sl == 0)
            break;
        if (sl == 1 && tmp[s] == '.')
            continue;
        if (tmp[s] == '.')
            hidden = 1;  /* "..", ".git", ".py": never served, never walked out of the root */
        if (o + sl + 2 >= cap)
            return 414;
        out[o++] = '/';
        memcpy(out + o, tmp + s, sl);
        o += sl;
    }
    if (o == 0 || (t > 0 && tmp[t - 1] == '/'))
        out[o++] = '/';
    out[o] = '\0';
    *out_len = o;
    return hidden ? 404 : 0;
}

/* The authority of an absolute-form target: a non-empty host (reg-name, IPv4 or [IPv6]), no
 * userinfo, and an optional all-digit port. */
static int valid_authority(const char *a, size_t n)
{
    if (n == 0 || memchr(a, '@', n))
        return 0;
    size_t host_end = n;
    if (a[0] == '[') {
        const char *close = memchr(a, ']', n);
        if (!close)
            return 0;
        host_end = (size_t)(close - a) + 1;
        if (host_end < n && a[host_end] != ':')
            return 0;
    } else {
        const char *colon = memchr(a, ':', n);
        if (colon)
            host_end = (size_t)(colon - a);
    }
    if (host_end == 0)
        return 0;
    for (size_t i = 0; i < host_end && a[0] != '['; i++) {
        char ch = a[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == '%'))
            return 0;
    }
    for (size_t i = host_end + 1; i < n; i++)
        if (a[i] < '0' || a[i] > '9')
            return 0;
    return 1;
}

static void send_allow(krait__conn *c, int verbs)
{
    static const struct { int bit; const char *name; } names[] = {
        {KRAIT_VERB_GET, "GET, HEAD"}, {KRAIT_VERB_POST, "POST"}, {KRAIT_VERB_PUT, "PUT"},
        {KRAIT_VERB_DELETE, "DELETE"}, {KRAIT_VERB_PATCH, "PATCH"},
        {KRAIT_VERB_CONNECT, "CONNECT"}, {KRAIT_VERB_TRACE, "TRACE"}};
    krait__out_str(c, "Allow: ");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (verbs & names[i].bit) {
            krait__out_str(c, names[i].name);
            krait__out_str(c, ", ");
        }
    krait__out_str(c, "OPTIONS\r\n");
}

/* 405 (or, for OPTIONS, 204) listing what the path does take. */
static void respond_allow(krait_server *srv, krait__conn *c, krait__request *rq, int verbs)
{
    size_t from = c->out_len;
    int status = rq->verb == KRAIT_VERB_OPTIONS ? 204 : 405;
    char body[96];
    int n = status == 405 ? snprintf(body, sizeof body,
                                     "<html><body><h1>405 Method Not Allowed</h1></body></html>")
                          : 0;
    krait__resp_start(srv, c, status);
    send_allow(c, verbs);
    if (n)
        krait__out_str(c, "Content-Type: text/html; charset=utf-8\r\n");
    krait__resp_end_headers(srv, c, status == 204 ? -1 : n);
    if (n && !rq->is_head)
        krait__out_add(c, body, (size_t)n);
    krait__seg_mem(c, from);
    krait__log_begin(srv, c, rq, status, rq->is_head ? 0 : (uint64_t)n);
}

/* krait.config.https_redirect: 301 to the same target on the HTTPS port (RFC 9110 §15.4.2). */
static void redirect_https(krait_server *srv, krait__conn *c, krait__request *rq)
{
    const char *h = rq->info.host;
    size_t hn = rq->info.host_len;
    if (hn && h[0] == '[') {
        const char *end = memchr(h, ']', hn);
        hn = end ? (size_t)(end - h) + 1 : hn;
    } else {
        const char *colon = memchr(h, ':', hn);
        if (colon)
            hn = (size_t)(colon - h);
    }
    size_t from = c->out_len;
    krait__resp_start(srv, c, 301);
    krait__out_str(c, "Location: https://");
    krait__out_add(c, h, hn);
    if (srv->https_redirect_port != 443) {
        krait__out_add(c, ":", 1);
        krait__out_u64(c, (uint64_t)srv->https_redirect_port);
    }
    krait__out_add(c, rq->target, rq->target_len);
    krait__out_str(c, "\r\n");
    if (rq->has_body)
        c->keep_alive = 0;
    krait__resp_end_headers(srv, c, 0);
    krait__seg_mem(c, from);
    krait__log_begin(srv, c, rq, 301, 0);
}

static void start_response(krait_server *srv, krait__conn *c)
{
    c->state = CS_WRITE;
    krait__timer_set(srv, c, -1);
    krait__conn_flush(srv, c);
}

/* Route and answer one complete request head. */
static void handle_request(krait_server *srv, krait__conn *c, krait__request *rq)
{
    srv->stats[KRAIT_STAT_REQUESTS]++;
    /* Only a request handed to a worker has its body read (worker.c re-enables keep-alive
     * there); any other answer to a request with a body closes the connection, so the unread
     * body can never be taken for the next request. */
    c->keep_alive = rq->info.keep_alive && !srv->draining && !rq->has_body;
    c->consume = rq->head_len;
    c->http10 = rq->version_minor == 0;
    c->head_only = rq->is_head;

    if (!rq->verb) {
        krait__error(srv, c, rq, 501, rq->has_body);
        return;
    }
    if (rq->has_body && rq->info.content_length > srv->limits[KRAIT_LIMIT_BODY]) {
        krait__error(srv, c, rq, 413, 1);
        return;
    }
    if (!c->ssl && srv->https_redirect_port > 0 && rq->info.host && rq->target[0] == '/') {
        redirect_https(srv, c, rq);
        return;
    }
    /* Request target forms (RFC 9112 §3.2): origin, absolute, asterisk (OPTIONS only). */
    const char *t = rq->target;
    size_t tn = rq->target_len;
    if (tn == 1 && t[0] == '*') {
        if (rq->verb == KRAIT_VERB_OPTIONS) {
            respond_allow(srv, c, rq, KRAIT_VERB_ANY & ~KRAIT_VERB_WEBSOCKET & ~KRAIT_VERB_OPTIONS);
            return;
        }
        krait__error(srv, c, rq, 400, 1);
        return;
    }
    if (memchr(t, '#', tn)) {
        krait__error(srv, c, rq, 400, 1);  /* RFC 9112 §3.2: no fragment in a target */
        return;
    }
    char abs_target[KRAIT__PATH_MAX + 2];
    if (tn > 7 && (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0)) {
        size_t skip = t[4] == ':' ? 7 : 8;
        size_t end = skip;
        while (end < tn && t[end] != '/' && t[end] != '?')
            end++;
        if (!valid_authority(t + skip, end - skip)) {
            krait__error(srv, c, rq, 400, 1);  /* RFC 9110 §4.2.1, §4.2.4 */
            return;
        }
        if (end == tn || t[end] == '?') {
            /* "http://host" or "http://host?x": the path is "/" (RFC 9112 §3.2.2). */
            if (tn - end + 1 >= sizeof abs_target) {
                krait__error(srv, c, rq, 414, 1);
                return;
            }
            abs_target[0] = '/';
            memcpy(abs_target + 1, t + end, tn - end);
            tn = tn - end + 1;
            t = abs_target;
        } else {
            tn -= end;
            t += end;
        }
    } else if (t[0] != '/') {
        krait__error(srv, c, rq, 400, 1);  /* authority-form or garbage: not served here */
        return;
    }
    const char *qmark = memchr(t, '?', tn);
    size_t pn = qmark ? (size_t)(qmark - t) : tn;
    if (qmark) {
        rq->query = qmark + 1;
        rq->query_len = tn - pn - 1;
    }
    int st = decode_path(t, pn, rq->path, sizeof rq->path, &rq->path_len);
    if (st) {
        krait__error(srv, c, rq, st, st == 400 || rq->has_body);
        return;
    }
    int verb = rq->info.upgrade_websocket ? KRAIT_VERB_WEBSOCKET : rq->verb;
    krait__route_answer ans;
    if (krait__route_resolve(srv, verb, rq->path, rq->path_len, &ans) < 0) {
        krait__error(srv, c, rq, 500, rq->has_body);
        return;
    }
    if (ans.route < 0) {
        if (ans.allow)
            respond_allow(srv, c, rq, ans.allow);
        else
            krait__error(srv, c, rq, 404, rq->has_body);
        return;
    }
    if (ans.is_ctrl) {
        krait__worker_dispatch(srv, c, rq, ans.route, "", ans.params, ans.params_len);
        return;
    }
    const char *target = ans.target ? ans.target : rq->path;
    size_t target_len = ans.target ? ans.target_len : rq->path_len;
    char norm[KRAIT__PATH_MAX];
    size_t norm_len;
    if (ans.target) {
        /* Targets from the configuration go through the same rules (behaviour §4.1). */
        char tmp[KRAIT__PATH_MAX];
        if (target_len + 2 > sizeof tmp) {
            krait__error(srv, c, rq, 500, 1);
            return;
        }
        tmp[0] = '/';
        memcpy(tmp + 1, target + (target[0] == '/'), target_len - (target[0] == '/'));
        size_t tl = target_len - (target[0] == '/') + 1;
        int s2 = decode_path(tmp, tl, norm, sizeof norm, &norm_len);
        if (s2) {
            krait__error(srv, c, rq, 404, rq->has_body);
            return;
        }
        /* Targets are not percent-encoded: a '%' in a file name must survive. */
        if (memchr(tmp, '%', tl)) {
            memcpy(norm, tmp, tl);
            norm[tl] = '\0';
            norm_len = tl;
        }
        target = norm;
        target_len = norm_len;
    }
    krait__static_respond(srv, c, rq, target + 1, target_len - 1, ans.route, ans.params,
                          ans.params_len);
    if (c->state == CS_HEAD && c->nseg == 0 && c->worker < 0 && c->frame == NULL)
        krait__error(srv, c, rq, 500, 1);
}

/* Parse and answer as many complete requests as the buffer holds, one at a time. */
static void process_input(krait_server *srv, krait__conn *c)
{
    while (!c->closed && c->state == CS_HEAD && c->in_len) {
        krait__http_limits lim = {(size_t)srv->limits[KRAIT_LIMIT_REQUEST_LINE],
                                  (size_t)srv->limits[KRAIT_LIMIT_HEAD],
                                  (size_t)srv->limits[KRAIT_LIMIT_HEADERS]};
        krait__req_head head;
        krait__request rq;
        /* Resumable: a head trickling in costs time linear in its size, not quadratic. */
        int n = krait__http_parse_head_resume(c->in, c->in_len, &lim, &head, srv->hdr,
                                              KRAIT__MAX_HEADERS_CAP, &c->hrs);
        if (n == KRAIT__NEED_MORE)
            return;
        memset(&c->hrs, 0, sizeof c->hrs);
        memset(&rq, 0, sizeof rq);
        c->t_start = mono_ns();
        if (n < 0) {
            srv->nhdr = 0;
            krait__error(srv, c, NULL, head.error_status ? head.error_status : 400, 1);
            start_response(srv, c);
            return;
        }
        srv->nhdr = head.nheaders;
        rq.method = head.method;
        rq.method_len = head.method_len;
        rq.target = head.target;
        rq.target_len = head.target_len;
        rq.version_minor = head.version_minor;
        rq.head_len = (size_t)n;
        rq.verb = method_verb(head.method, head.method_len, &rq.is_head);
        if (krait__http_analyze(&head, srv->hdr, &rq.info) < 0) {
            krait__error(srv, c, &rq, rq.info.error_status ? rq.info.error_status : 400, 1);
            start_response(srv, c);
            return;
        }
        rq.has_body = rq.info.chunked || rq.info.content_length > 0;
        handle_request(srv, c, &rq);
        if (c->closed)
            return;
        if (c->nseg) {
            start_response(srv, c);
            continue;  /* response_done() re-enters for pipelined requests, state permitting */
        }
        return;  /* waiting for a body or a worker */
    }
}

static void conn_read(krait_server *srv, krait__conn *c)
{
    for (int rounds = 0; rounds < 4 && !c->closed; rounds++) {
        if (c->state == CS_WRITE || c->state == CS_WORKER) {
            /* Don't read ahead while answering: pipelined bytes wait in the kernel buffer,
             * which applies backpressure to a client that floods us. Only watch for EOF. */
            return;
        }
        size_t max = (size_t)srv->limits[KRAIT_LIMIT_HEAD] + 1;
        if (c->state == CS_BODY)
            max = c->in_len + READ_CHUNK;
        else if (c->state == CS_WS)
            max = (size_t)srv->limits[KRAIT_LIMIT_WS_MESSAGE] + 14 + READ_CHUNK;
        if (c->in_cap - c->in_len < 1024 || !c->in) {
            size_t ncap = c->in_cap ? c->in_cap * 2 : READ_CHUNK;
            if (ncap > max + READ_CHUNK)
                ncap = max + READ_CHUNK;
            if (ncap <= c->in_cap) {
                /* Head limit reached without a complete head: the parser already answered
                 * 431/414 when it saw it; this is a safeguard. */
                krait__error(srv, c, NULL, 431, 1);
                start_response(srv, c);
                return;
            }
            char *p = realloc(c->in, ncap);
            if (!p) {
                krait__conn_close(srv, c);
                return;
            }
            c->in = p;
            c->in_cap = ncap;
        }
        ssize_t n = krait__conn_recv(srv, c, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0) {
            if (errno == EAGAIN) {
                if (c->tls_want_write)
                    conn_events(srv, c, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
                return;
            }
            krait__conn_close(srv, c);
            return;
        }
        if (n == 0) {
            krait__conn_close(srv, c);
            return;
        }
        if (!c->got_bytes) {
            c->got_bytes = 1;
            if (c->state == CS_HEAD)
                krait__timer_set(srv, c, TL_HEAD);
        }
        c->in_len += (size_t)n;
        if (c->state == CS_BODY) {
            if (krait__body_continue(srv, c) != 0)
                return;
        } else if (c->state == CS_WS) {
            krait__ws_input(srv, c);
        } else {
            process_input(srv, c);
        }
        if ((size_t)n < READ_CHUNK && !krait__conn_pending(c))
            return;
    }
    tls_read_later(srv, c);  /* the rounds are used up: a plain socket stays readable */
}

void krait__conn_flush_later(krait_server *srv, krait__conn *c)
{
    if (!c->closed && !c->flush_later.next)
        krait__link_append(&srv->flush_later, &c->flush_later);
}

static void flush_later_run(krait_server *srv)
{
    while (srv->flush_later.next != &srv->flush_later) {
        krait__conn *c = CONTAINER(srv->flush_later.next, krait__conn, flush_later);
        krait__link_remove(&c->flush_later);
        if (!c->closed)
            krait__conn_flush(srv, c);
    }
}

/* Read the connections that tls_read_later() listed. One that is listed again (its rounds
 * used up again) waits for the next batch, which then polls without sleeping. */
static void tls_read_run(krait_server *srv)
{
    krait__link todo;
    if (srv->tls_later.next == &srv->tls_later)
        return;
    todo.next = srv->tls_later.next;
    todo.prev = srv->tls_later.prev;
    todo.next->prev = todo.prev->next = &todo;
    list_init(&srv->tls_later);
    while (todo.next != &todo) {
        krait__conn *c = CONTAINER(todo.next, krait__conn, tls_later);
        krait__link_remove(&c->tls_later);
        if (!c->closed && krait__conn_pending(c))
            conn_read(srv, c);
    }
}

/* After the event batch: read what OpenSSL holds, parse what unpaused workers had buffered,
 * then send what all of that queued (to workers first, so they start, then to clients).
 * Nothing may be left for the next epoll_wait, which may sleep for a second: a flush can
 * unpause a worker or queue a close for one, so go round until a pass leaves nothing. (A
 * connection that tls_read_run lists again waits for the next turn, which does not sleep.) */
static void turn_end(krait_server *srv)
{
    tls_read_run(srv);
    do {
        krait__worker_resume_run(srv);
        krait__worker_flush_later(srv);
        flush_later_run(srv);
    } while (srv->workers_resume || srv->workers_later);
}

static void conn_event(krait_server *srv, krait__conn *c, uint32_t ev)
{
    if (c->closed)
        return;
    if (ev & EPOLLOUT) {
        if (c->state == CS_WS) {
            krait__conn_flush(srv, c);
            if (!c->closed && c->tls_want_write)
                conn_read(srv, c);
            return;
        }
        if (c->state == CS_HEAD || c->state == CS_BODY) {
            /* A TLS read that needed the socket writable (handshake): go on reading. */
            conn_events(srv, c, EPOLLIN | EPOLLRDHUP);
            conn_read(srv, c);
            return;
        }
        krait__conn_flush(srv, c);
        if (c->closed)
            return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if ((c->state == CS_WRITE || c->state == CS_WORKER) && !(ev & (EPOLLHUP | EPOLLERR))) {
            /* No read-ahead while answering: stop watching until the response is out, so the
             * client's further bytes wait in the kernel (the flush restores the interest).
             * Done only when bytes come, so a plain keep-alive request costs no epoll_ctl. */
            krait__conn_pause(srv, c);
            return;
        }
        if (ev & (EPOLLHUP | EPOLLERR)) {
            krait__conn_close(srv, c);
            return;
        }
        conn_read(srv, c);
    }
}

static void accept_ready(krait_server *srv, int lfd, int tls)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if ((int64_t)srv->nconns >= srv->limits[KRAIT_LIMIT_MAX_CONNS])
            return;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && srv->spare_fd >= 0) {
                /* Out of descriptors: free the spare, accept and close one connection so the
                 * backlog does not fill with clients we can never answer, then re-arm. */
                close(srv->spare_fd);
                int tmp = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (tmp >= 0)
                    close(tmp);
                srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            }
            return;
        }
        krait__conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->kind = OBJ_CONN;
        c->fd = fd;
        c->file_fd = -1;
        c->timer_list = -1;
        c->worker = -1;
        c->state = CS_HEAD;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, c->peer, sizeof c->peer);
            c->peer_port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, c->peer, sizeof c->peer);
            c->peer_port = ntohs(a->sin6_port);
        } else {
            strcpy(c->peer, "-");
        }
        c->events = EPOLLIN | EPOLLRDHUP;
        struct epoll_event ev = {.events = c->events, .data.ptr = c};
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
            continue;
        }
        if (tls && krait__tls_start(srv, c) < 0) {
            epoll_ctl(srv->epfd, EPOLL_CTL_DEL, fd, NULL);
            close(fd);
            free(c);
            continue;
        }
        krait__link_append(&srv->conns, &c->all);
        srv->nconns++;
        /* A connection that sends nothing is closed silently after the header timeout. */
        krait__timer_set(srv, c, TL_HEAD);
    }
}

static void sweep_timers(krait_server *srv)
{
    for (int l = 0; l < TL_COUNT; l++) {
        while (srv->timers[l].next != &srv->timers[l]) {
            krait__conn *c = CONTAINER(srv->timers[l].next, krait__conn, timer);
            if (c->deadline > srv->now_ms)
                break;
            krait__timer_set(srv, c, -1);
            if (l == TL_WS) {
                krait__ws_timer(srv, c);
            } else if ((l == TL_HEAD && c->got_bytes) || l == TL_BODY) {
                /* Headers or body not complete in time: 408 and close (RFC 9110 §15.5.9). */
                c->out_len = 0;
                c->nseg = c->seg_i = 0;
                c->t_start = mono_ns();
                srv->nhdr = 0;
                krait__error(srv, c, NULL, 408, 1);
                c->state = CS_WRITE;
                krait__conn_flush(srv, c);
            } else {
                krait__conn_close(srv, c);
            }
        }
    }
    krait__worker_sweep(srv);
}

static void update_clock(krait_server *srv)
{
    srv->now_ms = mono_ms();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != srv->date_sec) {
        /* The Date header is formatted once a second. */
        srv->date_sec = ts.tv_sec;
        krait__http_date(ts.tv_sec, srv->date);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(srv->log_date, sizeof srv->log_date, "%d/%b/%Y:%H:%M:%S +0000", &tm);
    }
}

static int setup_signals(krait_server *srv)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    if (srv->sig_fd < 0) {
        srv->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
        if (srv->sig_fd < 0)
            return -1;
        srv->sig.kind = OBJ_SIGNAL;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &srv->sig};
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->sig_fd, &ev) < 0)
            return -1;
    }
    return 0;
}

static void begin_drain(krait_server *srv)
{
    if (srv->draining)
        return;
    srv->draining = 1;
    srv->drain_deadline = srv->now_ms + srv->limits[KRAIT_LIMIT_DRAIN];
    for (int i = 0; i < srv->nlisteners; i++) {
        epoll_ctl(srv->epfd, EPOLL_CTL_DEL, srv->listeners[i].fd, NULL);
        close(srv->listeners[i].fd);
    }
    srv->nlisteners = 0;
    krait__ws_drain(srv);
    /* Idle connections (nothing received of a next request) close now; the rest finish. */
    krait__link *l = srv->conns.next;
    while (l != &srv->conns) {
        krait__conn *c = CONTAINER(l, krait__conn, all);
        l = l->next;
        if (c->state == CS_HEAD && !c->got_bytes)
            krait__conn_close(srv, c);
    }
}

static void signal_ready(krait_server *srv)
{
    struct signalfd_siginfo si;
    while (read(srv->sig_fd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
            begin_drain(srv);
        else if (si.ssi_signo == SIGHUP && srv->event_cb)
            srv->event_cb(srv->cb_ud, KRAIT_EVENT_RELOAD, 0, 0);
        else if (si.ssi_signo == SIGCHLD && srv->event_cb)
            srv->event_cb(srv->cb_ud, KRAIT_EVENT_CHILD, 0, 0);
    }
}

void krait_server_stop(krait_server *srv)
{
    srv->stop_requested = 1;
    uint64_t one = 1;
    ssize_t r = write(srv->wake_fd, &one, sizeof one);
    (void)r;
}

int krait_server_run(krait_server *srv)
{
    if (setup_signals(srv) < 0)
        return KRAIT_ESYS;
    update_clock(srv);
    for (int i = 0; i < srv->nlisteners; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &srv->listeners[i].obj};
        if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->listeners[i].fd, &ev) < 0)
            return KRAIT_ESYS;
    }
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        if (srv->stop_requested)
            begin_drain(srv);
        if (srv->draining && (srv->nconns == 0 || srv->now_ms >= srv->drain_deadline))
            break;
        int timeout = srv->tls_later.next != &srv->tls_later ? 0 : 1000;
        int n = epoll_wait(srv->epfd, evs, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR)
            return KRAIT_ESYS;
        update_clock(srv);
        for (int i = 0; i < n; i++) {
            krait__obj *o = evs[i].data.ptr;
            switch (o->kind) {
            case OBJ_CONN:
                conn_event(srv, (krait__conn *)o, evs[i].events);
                break;
            case OBJ_LISTENER:
                for (int k = 0; k < srv->nlisteners; k++)
                    if (&srv->listeners[k].obj == o)
                        accept_ready(srv, srv->listeners[k].fd, srv->listeners[k].tls);
                break;
            case OBJ_SIGNAL:
                signal_ready(srv);
                break;
            case OBJ_WORKER:
                krait__worker_event(srv, (krait__worker *)o, evs[i].events);
                break;
            case OBJ_WAKE: {
                uint64_t v;
                ssize_t r = read(srv->wake_fd, &v, sizeof v);
                (void)r;
                break;
            }
            }
        }
        turn_end(srv);
        sweep_timers(srv);
        reap(srv);
        if (srv->log_len)
            log_flush(srv);
    }
    /* Graceful stop bound reached or everything answered: close what is left. */
    krait__link *l = srv->conns.next;
    while (l != &srv->conns) {
        krait__conn *c = CONTAINER(l, krait__conn, all);
        l = l->next;
        krait__conn_close(srv, c);
        if (srv->nreap == sizeof srv->reap / sizeof srv->reap[0])
            reap(srv);
    }
    reap(srv);
    if (srv->log_len)
        log_flush(srv);
    return 0;
}
