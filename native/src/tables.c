/* The core's lookup tables: a small bounded hash map, the MIME map handed over by Python,
 * exact-URL and default routes decided in C, the cache rules evaluated in C, and the bounded
 * caches of the answers workers give for regex routes and regex cache rules (asked once per
 * key, then served from C). */
#define _GNU_SOURCE
#include <fnmatch.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tables.h"

static uint64_t hash_bytes(const char *p, size_t n)
{
    /* FNV-1a: short keys, good enough spread, no allocation. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int map_grow(krait__map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    krait__map_entry *ne = calloc(ncap, sizeof *ne);
    if (!ne)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        krait__map_entry *e = &m->e[i];
        if (!e->key)
            continue;
        size_t j = hash_bytes(e->key, e->key_len) & (ncap - 1);
        while (ne[j].key)
            j = (j + 1) & (ncap - 1);
        ne[j] = *e;
    }
    free(m->e);
    m->e = ne;
    m->cap = ncap;
    return 0;
}

krait__map_entry *krait__map_get(krait__map *m, const char *key, size_t len)
{
    if (!m->cap)
        return NULL;
    size_t j = hash_bytes(key, len) & (m->cap - 1);
    while (m->e[j].key) {
        if (m->e[j].key_len == len && memcmp(m->e[j].key, key, len) == 0)
            return &m->e[j];
        j = (j + 1) & (m->cap - 1);
    }
    return NULL;
}

/* Remove key, keeping every other key reachable from its home slot (backward-shift deletion:
 * linear probing needs no tombstones). */
void krait__map_del(krait__map *m, const char *key, size_t len)
{
    krait__map_entry *e = krait__map_get(m, key, len);
    if (!e)
        return;
    free(e->key);
    free(e->val);
    size_t mask = m->cap - 1;
    size_t hole = (size_t)(e - m->e);
    memset(e, 0, sizeof *e);
    m->count--;
    for (size_t j = (hole + 1) & mask; m->e[j].key; j = (j + 1) & mask) {
        size_t home = hash_bytes(m->e[j].key, m->e[j].key_len) & mask;
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        int stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (stays)
            continue;
        m->e[hole] = m->e[j];
        memset(&m->e[j], 0, sizeof m->e[j]);
        hole = j;
    }
}

void krait__map_clear(krait__map *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        free(m->e[i].key);
        free(m->e[i].val);
        memset(&m->e[i], 0, sizeof m->e[i]);
    }
    m->count = 0;
}

void krait__map_free(krait__map *m)
{
    krait__map_clear(m);
    free(m->e);
    m->e = NULL;
    m->cap = 0;
}

/* Insert (or find) key; the entry's value fields are the caller's to fill. A bounded map is
 * cleared when full: the caches it backs are then refilled on demand. */
krait__map_entry *krait__map_put(krait__map *m, const char *key, size_t len)
{
    krait__map_entry *e = krait__map_get(m, key, len);
    if (e)
        return e;
    if (m->max && m->count >= m->max)
        krait__map_clear(m);
    if ((m->count + 1) * 2 > m->cap && map_grow(m) < 0)
        return NULL;
    char *k = malloc(len + 1);
    if (!k)
        return NULL;
    memcpy(k, key, len);
    k[len] = '\0';
    size_t j = hash_bytes(key, len) & (m->cap - 1);
    while (m->e[j].key)
        j = (j + 1) & (m->cap - 1);
    e = &m->e[j];
    e->key = k;
    e->key_len = len;
    m->count++;
    return e;
}

const char *krait__mime_lookup(krait_server *srv, const char *name, size_t len)
{
    /* The extension is what follows the last '.' of the last path segment. */
    size_t i = len;
    while (i > 0 && name[i - 1] != '.' && name[i - 1] != '/')
        i--;
    if (i == 0 || name[i - 1] != '.' || i == len)
        return NULL;
    char ext[32];
    size_t n = len - i;
    if (n >= sizeof ext)
        return NULL;
    for (size_t k = 0; k < n; k++) {
        char c = name[i + k];
        ext[k] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    krait__map_entry *e = krait__map_get(&srv->mime, ext, n);
    return e ? e->val : NULL;
}

static int put_route(krait_server *srv, const char *key, size_t klen, int route, int allow,
                     const char *target, size_t target_len, const char *params,
                     size_t params_len);

int krait__route_store(krait_server *srv, int verb, const char *path, size_t len, int route,
                       int allow, const char *target, size_t target_len, const char *params,
                       size_t params_len)
{
    char keybuf[KRAIT__PATH_MAX + 8];
    if (len > KRAIT__PATH_MAX || target_len >= KRAIT__PATH_MAX || params_len > 65536 ||
        route < -1 || (route >= 0 && (size_t)route >= srv->nroutes))
        return -1;
    if (memchr(target, '\0', target_len))
        return -1;
    memcpy(keybuf, &verb, sizeof verb);
    memcpy(keybuf + sizeof verb, path, len);
    /* Other loops copy from the hub's cache: it changes under the lock. */
    int shared = srv->hub == srv && srv->nloops > 1;
    if (shared)
        pthread_mutex_lock(&srv->answers_lock);
    int rc = put_route(srv, keybuf, sizeof verb + len, route, allow, target, target_len,
                       params, params_len);
    if (shared)
        pthread_mutex_unlock(&srv->answers_lock);
    return rc;
}

static int put_route(krait_server *srv, const char *key, size_t klen, int route, int allow,
                     const char *target, size_t target_len, const char *params,
                     size_t params_len)
{
    krait__map_entry *e = krait__map_put(&srv->route_cache, key, klen);
    if (!e)
        return -1;
    free(e->val);
    e->val = malloc(target_len + 1 + params_len + 1);
    if (!e->val)
        return -1;
    memcpy(e->val, target, target_len);
    e->val[target_len] = '\0';
    if (params_len)
        memcpy(e->val + target_len + 1, params, params_len);
    e->val_len = target_len;
    e->num[0] = route;
    e->num[1] = allow & KRAIT_VERB_ANY;
    e->num[2] = (int64_t)params_len;
    return 0;
}

static int cache_rule_matches(const krait__cache_rule *r, const char *rel, size_t len)
{
    if (!r->star)
        return len == r->before_len && memcmp(rel, r->before, len) == 0;
    if (len < r->before_len + r->after_len || memcmp(rel, r->before, r->before_len) != 0 ||
        memcmp(rel + len - r->after_len, r->after, r->after_len) != 0)
        return 0;
    /* '.' of Python's re takes any character but a newline. */
    return !memchr(rel + r->before_len, '\n', len - r->before_len - r->after_len);
}

int krait__cache_rules_eval(krait_server *srv, const char *rel, size_t len)
{
    int hit = 0;
    for (size_t i = 0; i < srv->n_cache_rules; i++) {
        const krait__cache_rule *r = &srv->cache_rule_list[i];
        if (!(hit & r->list) && cache_rule_matches(r, rel, len))
            hit |= r->list;
    }
    /* Rules.cache_flags (krait/_site.py) for a static file: storable at first; then each list
     * that matches applies, later ones overriding earlier ones. */
    int storable = !(hit & KRAIT_CACHE_NO_STORE), priv = 0, pub = 0, lng = 0;
    if (hit & KRAIT_CACHE_PRIVATE)
        storable = 1, priv = 1;
    if (hit & KRAIT_CACHE_PUBLIC)
        storable = 1, priv = 0, pub = 1;
    if (hit & KRAIT_CACHE_LONG)
        storable = 1, lng = 1;
    return (storable ? 0 : KRAIT_CACHE_NO_STORE) | (priv ? KRAIT_CACHE_PRIVATE : 0) |
           (pub ? KRAIT_CACHE_PUBLIC : 0) | (lng ? KRAIT_CACHE_LONG : 0);
}

int krait__cache_flags(krait_server *srv, const char *rel, size_t len, int *flags)
{
    if (!srv->cache_questions) {
        *flags = krait__cache_rules_eval(srv, rel, len);
        return 0;
    }
    krait__map_entry *e = krait__map_get(&srv->cache_rules, rel, len);
    if (e) {
        *flags = (int)e->num[0];
        return 0;
    }
    krait_server *hub = srv->hub;
    if (hub != srv) {
        /* Another loop's miss: the hub may have the answer (it asks the workers); only the
         * hub writes its map, under this lock, so reading it under the lock is safe. */
        int f = -1;
        pthread_mutex_lock(&hub->answers_lock);
        e = krait__map_get(&hub->cache_rules, rel, len);
        if (e)
            f = (int)e->num[0];
        pthread_mutex_unlock(&hub->answers_lock);
        if (f >= 0) {
            e = krait__map_put(&srv->cache_rules, rel, len);
            if (e)
                e->num[0] = f;
            *flags = f;
            return 0;
        }
    }
    return KRAIT__CACHE_ASK;
}

int krait__cache_store(krait_server *srv, const char *rel, size_t len, int flags)
{
    pthread_mutex_lock(&srv->answers_lock);
    krait__map_entry *e = krait__map_put(&srv->cache_rules, rel, len);
    if (e)
        e->num[0] = flags;
    pthread_mutex_unlock(&srv->answers_lock);
    return e ? 0 : -1;
}

/* Route resolution (behaviour §4, §16.2): routes in order, first match wins. Exact-URL routes
 * and catch-all routes are decided here; as soon as a regex route must be consulted, the whole
 * decision for (verb, path) is a worker's (KRAIT__ROUTE_ASK), and its answer is cached
 * (krait__route_store; bounded: the cache is cleared when full). */
int krait__route_resolve(krait_server *srv, int verb, const char *path, size_t len,
                         krait__route_answer *ans)
{
    memset(ans, 0, sizeof *ans);
    ans->route = -1;
    int allow = 0, skipped_regex = 0;
    for (size_t i = 0; i < srv->nroutes; i++) {
        krait__route *r = &srv->routes[i];
        int path_match;
        if (r->is_prefix) {
            size_t ul = strlen(r->url);
            path_match = len >= ul && memcmp(r->url, path, ul) == 0 &&
                         (len == ul || path[ul] == '/' || r->url[ul - 1] == '/');
        } else if (r->url && strlen(r->url) == len && memcmp(r->url, path, len) == 0) {
            path_match = 1;
        } else if (r->has_regex) {
            /* A regex route for other verbs cannot take this request: it only adds to the
             * verbs a 405 lists, which matters only if no route takes it at all. */
            if (!(r->verbs & verb)) {
                skipped_regex = 1;
                continue;
            }
            goto ask_worker;
        } else {
            path_match = !r->url;
        }
        if (!path_match)
            continue;
        if (r->verbs & verb) {
            ans->route = (int)i;
            ans->allow = allow | r->verbs;
            ans->is_ctrl = r->is_ctrl;
            if (r->target) {
                ans->target = r->target;
                ans->target_len = strlen(r->target);
            }
            return 0;
        }
        allow |= r->verbs;
    }
    if (skipped_regex)
        goto ask_worker;  /* no route takes it: the worker says which verbs would (405) */
    ans->allow = allow;
    return 0;

ask_worker:;
    /* Key: verb (4 bytes) + path. */
    char keybuf[KRAIT__PATH_MAX + 8];
    if (len > KRAIT__PATH_MAX)
        return -1;
    memcpy(keybuf, &verb, sizeof verb);
    memcpy(keybuf + sizeof verb, path, len);
    size_t klen = sizeof verb + len;
    krait__map_entry *e = krait__map_get(&srv->route_cache, keybuf, klen);
    if (!e && srv->hub != srv) {
        /* Another loop: only the hub asks workers; it may know the answer already. Copied,
         * so this loop asks nobody for it again. */
        struct krait_server *hub = srv->hub;
        pthread_mutex_lock(&hub->answers_lock);
        krait__map_entry *h = krait__map_get(&hub->route_cache, keybuf, klen);
        if (h)
            put_route(srv, keybuf, klen, (int)h->num[0], (int)h->num[1], h->val, h->val_len,
                      h->val + h->val_len + 1, (size_t)h->num[2]);
        pthread_mutex_unlock(&hub->answers_lock);
        e = krait__map_get(&srv->route_cache, keybuf, klen);
    }
    if (!e)
        return KRAIT__ROUTE_ASK;  /* a worker matches the site's regexes, never this loop */
    ans->route = (int)e->num[0];
    ans->allow = (int)e->num[1];
    if (ans->route >= 0 && (size_t)ans->route < srv->nroutes)
        ans->is_ctrl = srv->routes[ans->route].is_ctrl;
    else
        ans->route = -1;
    if (e->val_len) {
        ans->target = e->val;
        ans->target_len = e->val_len;
    }
    if (e->num[2]) {
        ans->params = e->val + e->val_len + 1;
        ans->params_len = (size_t)e->num[2];
    }
    return 0;
}

/* A pattern with one '*' and no other wildcard ("*~", "*.bak", "#*#"): its text before and
 * after the star are compared directly (any case), with no fnmatch call per request. Returns
 * -1 for a pattern of another shape. */
static int star_match(const char *pat, const char *seg, size_t n)
{
    const char *star = strchr(pat, '*');
    if (!star || strchr(star + 1, '*') || strpbrk(pat, "?[\\"))
        return -1;
    size_t pre = (size_t)(star - pat), post = strlen(star + 1);
    if (n < pre + post)
        return 0;
    return strncasecmp(seg, pat, pre) == 0 && strncasecmp(seg + n - post, star + 1, post) == 0;
}

int krait__never_served(krait_server *srv, const char *path, size_t len)
{
    char seg[256];
    size_t i = 0;
    while (i < len) {
        while (i < len && path[i] == '/')
            i++;
        size_t s = i;
        while (i < len && path[i] != '/')
            i++;
        size_t n = i - s;
        if (!n)
            break;
        if (n >= sizeof seg)
            n = sizeof seg - 1;  /* a longer name still meets the patterns by its start */
        memcpy(seg, path + s, n);
        seg[n] = '\0';
        for (size_t k = 0; k < srv->n_never_serve; k++) {
            int m = star_match(srv->never_serve[k], seg, n);
            if (m < 0)
                m = fnmatch(srv->never_serve[k], seg, FNM_CASEFOLD) == 0;
            if (m)
                return 1;
        }
    }
    return 0;
}

int krait__static_only(krait_server *srv, const char *rel, size_t len)
{
    for (size_t k = 0; k < srv->n_static_only; k++) {
        size_t n = strlen(srv->static_only[k]);
        if (len >= n && memcmp(rel, srv->static_only[k], n) == 0)
            return 1;
    }
    return 0;
}

int krait__host_allowed(krait_server *srv, const char *host, size_t len)
{
    if (!srv->n_allowed_hosts)
        return 1;
    if (!host)
        return 0;
    /* Without the port: "[::1]:80" → "[::1]", "a.org:80" → "a.org". */
    if (len && host[0] == '[') {
        const char *end = memchr(host, ']', len);
        len = end ? (size_t)(end - host) + 1 : len;
    } else {
        const char *colon = memchr(host, ':', len);
        if (colon)
            len = (size_t)(colon - host);
    }
    if (len && host[len - 1] == '.')
        len--;  /* "a.org." names a.org */
    for (size_t k = 0; k < srv->n_allowed_hosts; k++) {
        const char *a = srv->allowed_hosts[k];
        size_t n = strlen(a);
        if (a[0] == '.') {
            /* ".a.org": a.org itself and any name ending in ".a.org" */
            if ((len == n - 1 && strncasecmp(host, a + 1, len) == 0) ||
                (len > n && strncasecmp(host + len - n, a, n) == 0))
                return 1;
        } else if (len == n && strncasecmp(host, a, n) == 0) {
            return 1;
        }
    }
    return 0;
}
