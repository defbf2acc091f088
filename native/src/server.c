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
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "channels.h"
#include "conn.h"
#include "loop.h"
#include "server.h"
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

/* A static folder (krait_server_add_static_dir); NULL is accepted. */
static void tree_free(krait__tree *t)
{
    if (!t)
        return;
    if (t->fd >= 0)
        close(t->fd);
    free(t->path);
    free(t->url);
    free(t);
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

/* What every loop owns: empty lists and no worker. */
static void init_loop_lists(krait_server *srv)
{
    for (int i = 0; i < TL_COUNT; i++)
        krait__list_init(&srv->timers[i]);
    krait__link *lists[] = {&srv->conns, &srv->closing, &srv->dead, &srv->ready,
                            &srv->deferred, &srv->waitq, &srv->tls_later, &srv->moved};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        krait__list_init(lists[i]);
    for (int i = 0; i < KRAIT__MAX_WORKERS; i++)
        srv->workers[i].fd = srv->workers[i].pidfd = -1;
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
    init_loop_lists(srv);
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
    srv->hub = srv;
    srv->nloops = 1;
    srv->loops[0] = srv;
    if (pthread_mutex_init(&srv->move_lock, NULL) != 0 ||
        pthread_mutex_init(&srv->ctx_lock, NULL) != 0 ||
        pthread_mutex_init(&srv->log_lock, NULL) != 0 ||
        pthread_mutex_init(&srv->answers_lock, NULL) != 0) {
        set_err(err, errlen, "allocating the server", ENOMEM);
        free(srv);
        return NULL;
    }
    srv->locks_ready = 1;
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

/* The connections a loop still holds (after a run that ended early, or a failed start). */
static void free_conns(krait_server *srv)
{
    krait__link *lists[4] = {&srv->conns, &srv->closing, &srv->dead, &srv->moved};
    for (int k = 0; k < 4; k++) {
        while (lists[k]->next && !krait__list_empty(lists[k])) {
            krait__conn *c = KRAIT__CONTAINER(lists[k]->next, krait__conn, all);
            krait__link_remove(&c->all);
            krait__ws_free(c);
            krait__conn_free(c);
        }
    }
}

/* A loop other than the hub: what it owns, not the configuration it shares. */
static void clone_free(krait_server *lp)
{
    free_conns(lp);
    krait__map_free(&lp->cache_rules);
    krait__map_free(&lp->route_cache);
    krait__map_free(&lp->dyn_cache);
    krait__map_free(&lp->resolved);
    krait__map_free(&lp->ws_ids);
    krait__map_free(&lp->channels);
    if (lp->wake_fd >= 0)
        close(lp->wake_fd);
    if (lp->epfd >= 0)
        close(lp->epfd);
    if (lp->spare_fd >= 0)
        close(lp->spare_fd);
    free(lp->logbuf);
    free(lp->events);
    if (lp->locks_ready)
        pthread_mutex_destroy(&lp->move_lock);
    free(lp);
}

void krait_server_free(krait_server *srv)
{
    if (!srv)
        return;
    for (int i = 1; i < KRAIT__MAX_LOOPS; i++)
        if (srv->loops[i])
            clone_free(srv->loops[i]);
    free_conns(srv);
    for (int i = 0; i < srv->nlisteners; i++) {
        close(srv->listeners[i].fd);
        /* Our socket file goes with us, unless something else took the path since. */
        struct stat st;
        const char *path = srv->listeners[i].unix_path;
        if (path && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
            (uint64_t)st.st_dev == srv->listeners[i].unix_dev &&
            (uint64_t)st.st_ino == srv->listeners[i].unix_ino)
            unlink(path);
        free(srv->listeners[i].unix_path);
    }
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
        tree_free(srv->routes[i].dir);
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
    free(srv->trusted);
    for (size_t i = 0; i < srv->n_cache_rules; i++) {
        free(srv->cache_rule_list[i].before);
        free(srv->cache_rule_list[i].after);
    }
    free(srv->cache_rule_list);
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
    if (srv->locks_ready) {
        pthread_mutex_destroy(&srv->move_lock);
        pthread_mutex_destroy(&srv->ctx_lock);
        pthread_mutex_destroy(&srv->log_lock);
        pthread_mutex_destroy(&srv->answers_lock);
    }
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

int krait_server_add_static_dir(krait_server *srv, int verbs, const char *prefix,
                                const char *dir, char *err, size_t errlen)
{
    size_t n = strlen(prefix);
    if (!n || prefix[0] != '/' || n >= KRAIT__PATH_MAX || memchr(prefix, '%', n)) {
        if (err && errlen)
            snprintf(err, errlen, "%s: a static folder's prefix is a decoded path starting "
                     "with '/'", prefix);
        return KRAIT_EINVAL;
    }
    while (n > 1 && prefix[n - 1] == '/')
        n--;  /* "/static/" is "/static" */
    krait__tree *t = calloc(1, sizeof *t);
    if (!t)
        goto nomem;
    t->fd = -1;
    char real[KRAIT__PATH_MAX];
    if (!realpath(dir, real)) {
        set_err(err, errlen, dir, errno);
        tree_free(t);
        return KRAIT_ESYS;
    }
    /* O_PATH: a descriptor to open beneath, no read access to the folder itself needed. */
    t->fd = open(real, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (t->fd < 0) {
        set_err(err, errlen, dir, errno);
        tree_free(t);
        return KRAIT_ESYS;
    }
    t->path_len = strlen(real);
    t->url_len = n - 1;  /* without the leading '/' */
    t->files_only = 1;
    t->path = strdup(real);
    t->url = strndup(prefix + 1, t->url_len);
    char *url = strndup(prefix, n);
    if (!t->path || !t->url || !url) {
        free(url);
        tree_free(t);
        goto nomem;
    }
    int rc = krait_server_add_route(srv, verbs, url, 0, NULL, 0);
    free(url);
    if (rc != KRAIT_OK) {
        tree_free(t);
        goto nomem;
    }
    /* The routes are the hub's, shared read-only by every loop (krait__server_clone takes
     * the array): the folder's descriptor is opened once, here, and never changes. */
    srv->routes[srv->nroutes - 1].is_prefix = 1;
    srv->routes[srv->nroutes - 1].dir = t;
    return KRAIT_OK;
nomem:
    set_err(err, errlen, "allocating a static folder", ENOMEM);
    return KRAIT_ENOMEM;
}

int krait_server_set_callbacks(krait_server *srv, krait_event_fn event, void *ud)
{
    srv->event_cb = event;
    srv->cb_ud = ud;
    return KRAIT_OK;
}

int krait_server_add_cache_rule(krait_server *srv, int list, const char *before,
                                const char *after)
{
    if ((list != KRAIT_CACHE_NO_STORE && list != KRAIT_CACHE_PRIVATE &&
         list != KRAIT_CACHE_PUBLIC && list != KRAIT_CACHE_LONG) || !before ||
        strlen(before) > 1024 || (after && strlen(after) > 1024))
        return KRAIT_EINVAL;
    krait__cache_rule *nr = realloc(srv->cache_rule_list,
                                    (srv->n_cache_rules + 1) * sizeof *nr);
    if (!nr)
        return KRAIT_ENOMEM;
    srv->cache_rule_list = nr;
    krait__cache_rule *r = &nr[srv->n_cache_rules];
    memset(r, 0, sizeof *r);
    r->list = list;
    r->star = after != NULL;
    r->before = strdup(before);
    r->after = strdup(after ? after : "");
    if (!r->before || !r->after) {
        free(r->before);
        free(r->after);
        return KRAIT_ENOMEM;
    }
    r->before_len = strlen(before);
    r->after_len = strlen(r->after);
    srv->n_cache_rules++;
    return KRAIT_OK;
}

int krait_server_set_cache_questions(krait_server *srv, int on)
{
    srv->cache_questions = on != 0;
    return KRAIT_OK;
}

int krait_server_set_access_log(krait_server *srv, int fd)
{
    if (srv->hub != srv || srv->loops[1])
        return KRAIT_EINVAL;  /* the loops' log_on copies are made when they start */
    srv->log_fd = fd;
    srv->log_on = fd >= 0;
    return KRAIT_OK;
}

int krait_server_set_access_log_format(krait_server *srv, int format)
{
    if (srv->hub != srv || srv->loops[1])
        return KRAIT_EINVAL;  /* copied by the loops when they start, like log_on */
    if (format != KRAIT_LOG_COMBINED && format != KRAIT_LOG_JSON)
        return KRAIT_EINVAL;
    srv->log_format = format;
    return KRAIT_OK;
}

int krait_server_swap_access_log(krait_server *srv, int fd)
{
    if (fd < 0 || srv->hub != srv || !srv->log_on)
        return KRAIT_EINVAL;
    pthread_mutex_lock(&srv->log_lock);
    int old = srv->log_fd;
    srv->log_fd = fd;
    pthread_mutex_unlock(&srv->log_lock);
    return old;
}

int krait_server_set_version(krait_server *srv, const char *version)
{
    snprintf(srv->server_header, sizeof srv->server_header, "krait/%s", version);
    return KRAIT_OK;
}

int64_t krait_server_stat(krait_server *srv, int which)
{
    if (which == KRAIT_STAT_CONNS)
        return __atomic_load_n(&srv->total_conns, __ATOMIC_RELAXED);
    if (which < 0 || which >= KRAIT_STAT_COUNT)
        return -1;
    int64_t sum = 0;
    for (int i = 0; i < KRAIT__MAX_LOOPS; i++) {
        krait_server *lp = __atomic_load_n(&srv->loops[i], __ATOMIC_ACQUIRE);
        if (lp)
            sum += __atomic_load_n(&lp->stats[which], __ATOMIC_RELAXED);
    }
    return sum;
}

int64_t krait_server_loop_stat(krait_server *srv, int loop, int which)
{
    if (loop < 0 || loop >= KRAIT__MAX_LOOPS || which < 0 || which >= KRAIT_STAT_COUNT)
        return -1;
    krait_server *lp = __atomic_load_n(&srv->loops[loop], __ATOMIC_ACQUIRE);
    if (!lp)
        return -1;
    return __atomic_load_n(&lp->stats[which], __ATOMIC_RELAXED);
}

int krait_server_set_loops(krait_server *srv, int n)
{
    if (n < 1 || n > KRAIT__MAX_LOOPS || srv->hub != srv || srv->loops[1])
        return KRAIT_EINVAL;
    srv->nloops = n;
    return KRAIT_OK;
}

/* ---- loops ----------------------------------------------------------------------------- */

/* Loop i: its own epoll, wake-up eventfd, lists and caches; the hub's configuration (routes,
 * patterns, MIME types, error pages, limits, listeners) shared read-only. */
krait_server *krait__server_clone(krait_server *hub, int index)
{
    krait_server *lp = calloc(1, sizeof *lp);
    if (!lp)
        return NULL;
    lp->epfd = lp->sig_fd = lp->wake_fd = lp->spare_fd = -1;
    lp->hub = hub;
    lp->loop_index = index;
    lp->nloops = hub->nloops;
    memcpy(lp->root, hub->root, sizeof lp->root);
    lp->root_len = hub->root_len;
    lp->root_fd = hub->root_fd;
    memcpy(lp->limits, hub->limits, sizeof lp->limits);
    lp->max_age = hub->max_age;
    lp->max_age_long = hub->max_age_long;
    memcpy(lp->server_header, hub->server_header, sizeof lp->server_header);
    memcpy(lp->listeners, hub->listeners, sizeof lp->listeners);
    lp->nlisteners = hub->nlisteners;
    for (int i = 0; i < lp->nlisteners; i++)
        lp->listeners[i].obj.kind = OBJ_LISTENER;
    lp->https_redirect_port = hub->https_redirect_port;
    memcpy(lp->hsts, hub->hsts, sizeof lp->hsts);
    lp->never_serve = hub->never_serve;
    lp->n_never_serve = hub->n_never_serve;
    lp->static_only = hub->static_only;
    lp->n_static_only = hub->n_static_only;
    lp->allowed_hosts = hub->allowed_hosts;
    lp->n_allowed_hosts = hub->n_allowed_hosts;
    lp->html_templates = hub->html_templates;
    lp->trusted = hub->trusted;  /* read-only while the loops run */
    lp->ntrusted = hub->ntrusted;
    lp->trust_unix = hub->trust_unix;
    lp->proxy_protocol = hub->proxy_protocol;
    lp->error_pages = hub->error_pages;  /* read-only while the loops run */
    lp->mime = hub->mime;
    lp->cache_rules.max = hub->cache_rules.max;
    lp->route_cache.max = hub->route_cache.max;
    lp->dyn_cache.max = hub->dyn_cache.max;
    lp->resolved.max = hub->resolved.max;
    lp->routes = hub->routes;  /* static folders (route.dir) with them: opened once, shared */
    lp->nroutes = hub->nroutes;
    lp->cache_rule_list = hub->cache_rule_list;  /* read-only while the loops run */
    lp->n_cache_rules = hub->n_cache_rules;
    lp->cache_questions = hub->cache_questions;  /* asked on the hub: "Routing" in design.md */
    lp->log_on = hub->log_on;
    lp->log_format = hub->log_format;
    lp->log_fd = -1;  /* the hub's, read under its log_lock */
    lp->clock_offset_ms = hub->clock_offset_ms;
    init_loop_lists(lp);
    lp->epfd = epoll_create1(EPOLL_CLOEXEC);
    lp->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    lp->wake.kind = OBJ_WAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &lp->wake};
    if (lp->epfd < 0 || lp->wake_fd < 0 ||
        epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->wake_fd, &ev) < 0) {
        clone_free(lp);
        return NULL;
    }
    lp->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (pthread_mutex_init(&lp->move_lock, NULL) != 0) {
        clone_free(lp);
        return NULL;
    }
    lp->locks_ready = 1;
    return lp;
}

static void *loop_thread(void *arg)
{
    krait_server *lp = arg;
    int rc;
    while ((rc = krait__loop_turn(lp, -1)) == 0)
        ;
    if (rc < 0) {
        /* Its connections are closed, not left hanging; the other loops go on accepting. */
        fprintf(stderr, "krait: loop %d stopped: %s\n", lp->loop_index, strerror(errno));
    }
    krait__loop_end(lp);
    krait_server *hub = lp->hub;
    __atomic_sub_fetch(&hub->loops_live, 1, __ATOMIC_ACQ_REL);
    uint64_t one = 1;
    ssize_t r = write(hub->wake_fd, &one, sizeof one);
    (void)r;
    return NULL;
}

/* Start loops 1..n-1 (after the hub's signal mask is set: the threads inherit it). */
static int start_loops(krait_server *srv)
{
    for (int i = 1; i < srv->nloops; i++) {
        krait_server *lp = srv->loops[i] ? srv->loops[i] : krait__server_clone(srv, i);
        if (!lp)
            return KRAIT_ENOMEM;
        __atomic_store_n(&srv->loops[i], lp, __ATOMIC_RELEASE);
        if (krait__loop_start(lp, 0) < 0)
            return KRAIT_ESYS;
        __atomic_add_fetch(&srv->loops_live, 1, __ATOMIC_ACQ_REL);
        if (pthread_create(&srv->threads[i], NULL, loop_thread, lp) != 0) {
            __atomic_sub_fetch(&srv->loops_live, 1, __ATOMIC_ACQ_REL);
            __atomic_store_n(&srv->loops[i], NULL, __ATOMIC_RELEASE);
            clone_free(lp);
            return KRAIT_ESYS;
        }
    }
    return KRAIT_OK;
}

/* Every loop has stopped: the hub closes what was handed to it meanwhile. */
static void join_loops(krait_server *srv)
{
    for (int i = 1; i < srv->nloops; i++) {
        krait_server *lp = srv->loops[i];
        if (!lp || !srv->threads[i])
            continue;
        __atomic_store_n(&lp->force_end, 1, __ATOMIC_RELEASE);
        uint64_t one = 1;
        ssize_t r = write(lp->wake_fd, &one, sizeof one);
        (void)r;
        pthread_join(srv->threads[i], NULL);
        srv->threads[i] = 0;
    }
}

int krait_server_run(krait_server *srv)
{
    if (srv->hub != srv)
        return KRAIT_EINVAL;
    int rc = krait__loop_start(srv, 1);
    if (rc < 0)
        return rc;
    rc = start_loops(srv);
    if (rc < 0) {
        krait_server_stop(srv);  /* the loops that did start drain with the hub */
    }
    for (;;) {
        int r = krait__loop_turn(srv, -1);
        if (r < 0) {
            rc = KRAIT_ESYS;
            break;
        }
        if (r > 0)
            break;
    }
    join_loops(srv);
    krait__loop_end(srv);
    return rc < 0 ? rc : 0;
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

/* Where a listener is free for one more (the table has 8 places). */
static int listener_room(krait_server *srv, char *err, size_t errlen)
{
    if (srv->nlisteners < (int)(sizeof srv->listeners / sizeof srv->listeners[0]))
        return KRAIT_OK;
    if (err && errlen)
        snprintf(err, errlen, "too many listening sockets (at most 8)");
    return KRAIT_ELIMIT;
}

static int add_listener(krait_server *srv, int fd, int tls)
{
    int i = srv->nlisteners++;
    srv->listeners[i].obj.kind = OBJ_LISTENER;
    srv->listeners[i].fd = fd;
    srv->listeners[i].tls = tls;
    srv->listeners[i].unix_path = NULL;
    return i;
}

int krait_server_listen(krait_server *srv, const char *host, int port, int tls, char *err,
                        size_t errlen)
{
    if (tls && !srv->ssl_ctx) {
        if (err)
            snprintf(err, errlen, "HTTPS needs a certificate and key (krait.config)");
        return KRAIT_EINVAL;
    }
    int room = listener_room(srv, err, errlen);
    if (room < 0)
        return room;
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
    add_listener(srv, fd, tls);
    return bound;
}

/* A socket at path: a live one (something accepts on it) is refused, a stale one (nothing
 * does: a server that ended without removing it) removed. Anything else at path is never
 * touched. Returns 0 when path is free now. */
static int clear_unix_path(const char *path, const struct sockaddr_un *sa, char *err,
                           size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        set_err(err, errlen, path, errno);
        return KRAIT_ESYS;
    }
    if (!S_ISSOCK(st.st_mode)) {
        if (err && errlen)
            snprintf(err, errlen, "%s exists and is not a socket: not removed, not listened on",
                     path);
        return KRAIT_EINVAL;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        set_err(err, errlen, "socket", errno);
        return KRAIT_ESYS;
    }
    int r;
    do
        r = connect(probe, (const struct sockaddr *)sa, sizeof *sa);
    while (r < 0 && errno == EINTR);
    int e = errno;
    close(probe);
    if (r == 0 || e != ECONNREFUSED) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path,
                     r == 0 ? "another server is listening on this socket" : strerror(e));
        return r == 0 ? KRAIT_EINVAL : KRAIT_ESYS;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        set_err(err, errlen, path, errno);
        return KRAIT_ESYS;
    }
    return 0;
}

int krait_server_listen_unix(krait_server *srv, const char *path, int mode, char *err,
                             size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = path ? strlen(path) : 0;
    if (!n || n >= sizeof sa.sun_path || mode < 0 || mode > 0777) {
        if (err && errlen)
            snprintf(err, errlen, n >= sizeof sa.sun_path
                                      ? "%s: a Unix socket path has at most 107 bytes"
                                      : "%s: a Unix socket needs a path and a mode (0-0777)",
                     path ? path : "");
        return KRAIT_EINVAL;
    }
    int rc = listener_room(srv, err, errlen);
    if (rc < 0)
        return rc;
    memcpy(sa.sun_path, path, n + 1);
    rc = clear_unix_path(path, &sa, err, errlen);
    if (rc < 0)
        return rc;
    char *copy = strdup(path);
    int fd = copy ? socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
    if (fd < 0) {
        set_err(err, errlen, copy ? "socket" : "allocating", copy ? errno : ENOMEM);
        free(copy);
        return copy ? KRAIT_ESYS : KRAIT_ENOMEM;
    }
    /* The mode is set between bind and listen: nobody can connect before listen, so no
     * client ever reaches the socket under the umask's wider mode. */
    struct stat st;
    const char *what = "bind";
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        (what = "chmod", chmod(path, (mode_t)mode) < 0) ||
        (what = "stat", stat(path, &st) < 0) || (what = "listen", listen(fd, 4096) < 0)) {
        char text[300];
        snprintf(text, sizeof text, "listening on %s (%s)", path, what);
        set_err(err, errlen, text, errno);
        if (strcmp(what, "bind") != 0)
            unlink(path);
        close(fd);
        free(copy);
        return KRAIT_ESYS;
    }
    int i = add_listener(srv, fd, 0);
    srv->listeners[i].unix_path = copy;
    srv->listeners[i].unix_dev = (uint64_t)st.st_dev;
    srv->listeners[i].unix_ino = (uint64_t)st.st_ino;
    return 0;
}

int krait_server_listen_fd(krait_server *srv, int fd, int tls, char *err, size_t errlen)
{
    if (tls && !srv->ssl_ctx) {
        if (err && errlen)
            snprintf(err, errlen, "HTTPS needs a certificate and key (krait.config)");
        return KRAIT_EINVAL;
    }
    int rc = listener_room(srv, err, errlen);
    if (rc < 0)
        return rc;
    int type = 0, accepting = 0;
    socklen_t sl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) < 0 || type != SOCK_STREAM ||
        (sl = sizeof accepting, getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &sl)) < 0 ||
        !accepting) {
        if (err && errlen)
            snprintf(err, errlen, "descriptor %d is not a listening stream socket", fd);
        return KRAIT_EINVAL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        set_err(err, errlen, "fcntl", errno);
        return KRAIT_ESYS;
    }
    struct sockaddr_storage ss;
    sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        set_err(err, errlen, "getsockname", errno);
        return KRAIT_ESYS;
    }
    add_listener(srv, fd, tls);
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
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

int krait_server_add_trusted_proxy(krait_server *srv, const char *spec)
{
    if (strcasecmp(spec, "unix") == 0) {
        srv->trust_unix = 1;
        return KRAIT_OK;
    }
    krait__cidr net;
    if (krait__cidr_parse(spec, &net) < 0)
        return KRAIT_EINVAL;
    krait__cidr *p = realloc(srv->trusted, (srv->ntrusted + 1) * sizeof *p);
    if (!p)
        return KRAIT_ENOMEM;
    p[srv->ntrusted++] = net;
    srv->trusted = p;
    return KRAIT_OK;
}

int krait_server_set_proxy_protocol(krait_server *srv, int on)
{
    srv->proxy_protocol = on != 0;
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
