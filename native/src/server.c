/* The server object and its configuration: everything krait.h lets Python set before the loop
 * runs (limits, MIME types, routes, callbacks, listeners, the access log). The loop itself is
 * loop.c's. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "channels.h"
#include "conn.h"
#include "tls.h"
#include "wsconn.h"

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
    [KRAIT_LIMIT_BODY_MEMORY] = 64 * 1024 * 1024,
};

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Append a copy of s[0..n) to a string list. */
static int push_string(char ***v, size_t *n, const char *s, size_t len)
{
    char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv)
        return KRAIT_ENOMEM;
    *v = nv;
    char *copy = strndup(s, len);
    if (!copy)
        return KRAIT_ENOMEM;
    nv[(*n)++] = copy;
    return KRAIT_OK;
}

static void set_err(char *err, size_t errlen, const char *what, int e)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", what, strerror(e));
}

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
    srv->ws_ids.max = 0;  /* entries leave with their connection (krait__ws_gone) */
    srv->html_templates = 1;
    srv->pub_lock = malloc(sizeof(pthread_mutex_t));
    if (!srv->pub_lock || pthread_mutex_init(srv->pub_lock, NULL) != 0) {
        free(srv->pub_lock);
        srv->pub_lock = NULL;
        set_err(err, errlen, "allocating the server", ENOMEM);
        goto fail;
    }
    if (krait_server_set_never_serve(srv, "*~\n#*#\n*.swp\n*.swo\n*.swx\n*.bak\n*.orig\n*.rej") < 0) {
        set_err(err, errlen, "allocating the server", ENOMEM);
        goto fail;
    }
    for (int i = 0; i < TL_COUNT; i++)
        krait__list_init(&srv->timers[i]);
    krait__list_init(&srv->conns);
    krait__list_init(&srv->closing);
    krait__list_init(&srv->dead);
    krait__list_init(&srv->ready);
    krait__list_init(&srv->deferred);
    krait__list_init(&srv->waitq);
    krait__list_init(&srv->tls_later);
    for (int i = 0; i < KRAIT__MAX_WORKERS; i++)
        srv->workers[i].fd = srv->workers[i].pidfd = -1;

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
    krait__link *lists[3] = {&srv->conns, &srv->closing, &srv->dead};
    for (int k = 0; k < 3; k++) {
        while (lists[k]->next && !krait__list_empty(lists[k])) {
            krait__conn *c = KRAIT__CONTAINER(lists[k]->next, krait__conn, all);
            krait__link_remove(&c->all);
            krait__ws_free(c);
            krait__conn_free(c);
        }
    }
    for (int i = 0; i < srv->nlisteners; i++)
        close(srv->listeners[i].fd);
    for (int i = 0; i < KRAIT__MAX_WORKERS; i++) {
        krait__worker *w = &srv->workers[i];
        if (w->fd >= 0)
            close(w->fd);
        if (w->fd >= 0 && w->pidfd >= 0)
            close(w->pidfd);
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
    krait__map_free(&srv->error_pages);
    krait__chan_free_all(srv);
    free_strings(srv->never_serve, srv->n_never_serve);
    free_strings(srv->static_only, srv->n_static_only);
    free_strings(srv->allowed_hosts, srv->n_allowed_hosts);
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
    free(srv->events);
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

int krait_server_add_prefix_route(krait_server *srv, int verbs, const char *prefix)
{
    size_t n = strlen(prefix);
    if (!n || prefix[0] != '/')
        return KRAIT_EINVAL;
    int rc = krait_server_add_route(srv, verbs, prefix, 0, NULL, 1);
    if (rc == KRAIT_OK)
        srv->routes[srv->nroutes - 1].is_prefix = 1;
    return rc;
}

int krait_server_set_callbacks(krait_server *srv, krait_cache_fn cache, krait_event_fn event,
                               void *ud)
{
    srv->cache_cb = cache;
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

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
            return 1;
    return 0;
}

int krait_server_set_server_header(krait_server *srv, const char *value)
{
    if (has_ctl(value) || strlen(value) >= sizeof srv->server_header)
        return KRAIT_EINVAL;
    snprintf(srv->server_header, sizeof srv->server_header, "%s", value);
    return KRAIT_OK;
}

int krait_server_set_never_serve(krait_server *srv, const char *patterns)
{
    free_strings(srv->never_serve, srv->n_never_serve);
    srv->never_serve = NULL;
    srv->n_never_serve = 0;
    for (const char *p = patterns; *p;) {
        const char *end = strchr(p, '\n');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n && push_string(&srv->never_serve, &srv->n_never_serve, p, n) < 0)
            return KRAIT_ENOMEM;
        p += n + (end != NULL);
    }
    return KRAIT_OK;
}

int krait_server_add_static_only(krait_server *srv, const char *prefix)
{
    while (*prefix == '/')
        prefix++;
    size_t n = strlen(prefix);
    while (n && prefix[n - 1] == '/')
        n--;
    if (!n || n + 2 > KRAIT__PATH_MAX)
        return KRAIT_EINVAL;
    char tmp[KRAIT__PATH_MAX];
    memcpy(tmp, prefix, n);
    tmp[n] = '/';
    return push_string(&srv->static_only, &srv->n_static_only, tmp, n + 1);
}

int krait_server_add_allowed_host(krait_server *srv, const char *host)
{
    size_t n = strlen(host);
    if (!n || has_ctl(host))
        return KRAIT_EINVAL;
    if (push_string(&srv->allowed_hosts, &srv->n_allowed_hosts, host, n) < 0)
        return KRAIT_ENOMEM;
    for (char *p = srv->allowed_hosts[srv->n_allowed_hosts - 1]; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return KRAIT_OK;
}

int krait_server_set_html_templates(krait_server *srv, int on)
{
    srv->html_templates = on != 0;
    return KRAIT_OK;
}

int krait_server_set_error_page(krait_server *srv, int status, const char *html,
                                size_t html_len, const char *html_type, const char *json,
                                size_t json_len)
{
    if (status < 400 || status > 599 || has_ctl(html_type))
        return KRAIT_EINVAL;
    char key[8];
    int kn = snprintf(key, sizeof key, "%d", status);
    size_t tl = strlen(html_type);
    char *v = malloc(html_len + json_len + tl + 1);
    if (!v)
        return KRAIT_ENOMEM;
    memcpy(v, html, html_len);
    memcpy(v + html_len, json, json_len);
    memcpy(v + html_len + json_len, html_type, tl + 1);
    krait__map_entry *e = krait__map_put(&srv->error_pages, key, (size_t)kn);
    if (!e) {
        free(v);
        return KRAIT_ENOMEM;
    }
    free(e->val);
    e->val = v;
    e->val_len = html_len;
    e->num[0] = (int64_t)html_len;
    e->num[1] = (int64_t)json_len;
    e->num[2] = (int64_t)(html_len + json_len);
    return KRAIT_OK;
}
