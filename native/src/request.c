/* One HTTP/1.1 request at a time on a connection: parse the next head (http.c), apply limits
 * and target rules (RFC 9112 §3.2), route (tables.c), and hand it to its handler: a file
 * (static.c), a worker (worker.c), a WebSocket handshake (wsconn.c via worker.c). Each handler
 * appends its answer and the connection is posted; the driver (loop.c) sends it and calls
 * krait__request_finish, then krait__request_next for a pipelined request: the two never call
 * each other, so a pipeline of any length never deepens the stack. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "body.h"
#include "conn.h"
#include "request.h"
#include "response.h"
#include "static.h"
#include "stats.h"
#include "tables.h"
#include "worker.h"
#include "wsconn.h"

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
static void respond_allow(struct krait_server *srv, krait__conn *c, krait__request *rq, int verbs)
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
static void redirect_https(struct krait_server *srv, krait__conn *c, krait__request *rq)
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

/* The authority of an absolute-form target ("http://a.org:8080/x" → "a.org:8080"), if it is
 * one; its validity is checked with the rest of the target. */
static int absolute_authority(const char *t, size_t tn, const char **a, size_t *an)
{
    size_t skip;
    if (tn > 7 && strncasecmp(t, "http://", 7) == 0)
        skip = 7;
    else if (tn > 8 && strncasecmp(t, "https://", 8) == 0)
        skip = 8;
    else
        return 0;
    size_t end = skip;
    while (end < tn && t[end] != '/' && t[end] != '?')
        end++;
    *a = t + skip;
    *an = end - skip;
    return 1;
}

static void set_host_header(struct krait_server *srv, const char *v, size_t n)
{
    for (size_t i = 0; i < srv->nhdr; i++)
        if (srv->hdr[i].name_len == 4 && strncasecmp(srv->hdr[i].name, "host", 4) == 0) {
            srv->hdr[i].value = v;
            srv->hdr[i].value_len = n;
            return;
        }
    if (srv->nhdr < KRAIT__MAX_HEADERS_CAP)
        srv->hdr[srv->nhdr++] = (krait__header){"host", 4, v, n};
}

/* RFC 9110 §12.5.1: does Accept prefer JSON (application/json, application/\*+json) with a
 * quality above zero and at least that of every HTML type? "*\/\*" alone means HTML. The
 * same rule as the workers' error pages (krait/_errorpages.py). */
static int prefers_json(const krait__header *h)
{
    if (!h)
        return 0;
    int best_json = 0, best_html = 0;  /* qualities in thousandths */
    const char *p = h->value, *end = h->value + h->value_len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *m = p;
        while (p < end && *p != ';' && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        size_t ml = (size_t)(p - m);
        int q = 1000;
        while (p < end && *p != ',') {
            if ((*p == 'q' || *p == 'Q') && p + 1 < end && p[1] == '=') {
                const char *d = p + 2;
                q = 0;
                if (d < end && *d == '1')
                    q = 1000;
                else if (d < end && *d == '0' && d + 1 < end && d[1] == '.') {
                    int scale = 100;
                    for (d += 2; d < end && *d >= '0' && *d <= '9' && scale; d++, scale /= 10)
                        q += (*d - '0') * scale;
                }
                p = d;
                continue;
            }
            p++;
        }
#define IS(s) (ml == sizeof(s) - 1 && strncasecmp(m, s, ml) == 0)
        int json = IS("application/json") ||
                   (ml > 17 && strncasecmp(m, "application/", 12) == 0 &&
                    strncasecmp(m + ml - 5, "+json", 5) == 0);
        int html = IS("text/html") || IS("application/xhtml+xml") || IS("text/*");
#undef IS
        if (json && q > best_json)
            best_json = q;
        if (html && q > best_html)
            best_html = q;
    }
    return best_json > 0 && best_json >= best_html;
}

/* Route and answer one complete request head. */
/* Only the hub (loop 0) has workers: on another loop, a request for one moves its connection
 * there, whole and with the request unconsumed; the driver hands it over at the end of the
 * turn and the hub takes the request again from the start (and counts it). */
static int for_hub(struct krait_server *srv, krait__conn *c)
{
    if (srv->hub == srv) {
        c->go_home = 0;  /* a worker answers: it stays on the hub */
        return 0;
    }
    KRAIT__STAT_ADD(srv, KRAIT_STAT_REQUESTS, -1);
    c->consume = 0;
    c->route_asked = 0;
    c->cache_asked = 0;
    c->state = CS_MOVE;
    krait__conn_post(srv, c);
    return 1;
}

/* A file of tree t (static.c); a regex cache rule with no answer yet for it makes it a
 * question for a worker, on the hub: the request waits unconsumed and is taken again from the
 * start with the answer (KRAIT__STATIC_CACHE_ASK: nothing more to do here). */
static int respond_static(struct krait_server *srv, krait__conn *c, krait__request *rq,
                          const krait__tree *t, const char *rel, size_t rel_len, char *script,
                          size_t script_cap)
{
    int sr = krait__static_respond(srv, c, rq, t, rel, rel_len, script, script_cap);
    if (sr != KRAIT__STATIC_CACHE_ASK || for_hub(srv, c))
        return sr;
    KRAIT__STAT_ADD(srv, KRAIT_STAT_REQUESTS, -1);  /* counted when taken again */
    c->consume = 0;
    krait__worker_cache_question(srv, c, script, strlen(script));
    return sr;
}

static void handle_request(struct krait_server *srv, krait__conn *c, krait__request *rq)
{
    KRAIT__STAT_ADD(srv, KRAIT_STAT_REQUESTS, 1);
    c->go_home = 1;  /* unless a worker answers it (for_hub) */
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
    /* RFC 9112 §3.2.2: an absolute-form target's authority is the request's host, whatever
     * Host says; the worker sees it as the host header too. */
    const char *auth;
    size_t auth_len;
    if (absolute_authority(rq->target, rq->target_len, &auth, &auth_len)) {
        rq->info.host = auth;
        rq->info.host_len = auth_len;
        set_host_header(srv, auth, auth_len);
    }
    if (!krait__host_allowed(srv, rq->info.host, rq->info.host_len)) {
        krait__error(srv, c, rq, 400, 1);  /* not one of config.allowed_hosts */
        return;
    }
    if (!c->ssl && srv->https_redirect_port > 0 && rq->info.host && rq->target[0] == '/') {
        redirect_https(srv, c, rq);
        return;
    }
    if (rq->verb == KRAIT_VERB_CONNECT) {
        /* CONNECT takes the authority-form only (RFC 9112 §3.2.3), and a 2xx to it would turn
         * the connection into a tunnel (RFC 9110 §9.3.6): krait is no proxy. */
        krait__error(srv, c, rq, 400, 1);
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
    if (!st && krait__never_served(srv, rq->path, rq->path_len))
        st = 404;  /* an editor's backup or another never-served name */
    if (st) {
        krait__error(srv, c, rq, st, st == 400 || rq->has_body);
        return;
    }
    int verb = rq->info.upgrade_websocket ? KRAIT_VERB_WEBSOCKET : rq->verb;
    krait__route_answer ans;
    int rr = krait__route_resolve(srv, verb, rq->path, rq->path_len, &ans);
    if (rr == KRAIT__ROUTE_ASK && for_hub(srv, c))
        return;
    if (rr == KRAIT__ROUTE_ASK && !c->route_asked) {
        /* A regex route: a worker decides (the request waits, unconsumed, and is taken again
         * from the start once the answer is cached). */
        c->consume = 0;
        krait__worker_route(srv, c, verb, rq->path, rq->path_len);
        return;
    }
    c->route_asked = 0;
    if (rr != 0) {
        krait__error(srv, c, rq, 500, 1);  /* or: the answer was evicted at once (never) */
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
        if (for_hub(srv, c))
            return;
        krait__worker_dispatch(srv, c, rq, ans.route, "", ans.params, ans.params_len);
        return;
    }
    char script[KRAIT__PATH_MAX + KRAIT__PATH_MAX];
    const krait__route *route = &srv->routes[ans.route];
    if (route->dir) {
        /* A static folder (krait_server_add_static_dir): the rest of the path below its
         * prefix is one of its files, answered here on any loop; never a worker. The route
         * may be a worker's answer (a regex route came first): its prefix is checked again. */
        size_t ul = strlen(route->url);
        if (rq->path_len < ul || memcmp(rq->path, route->url, ul) != 0) {
            krait__error(srv, c, rq, 404, rq->has_body);
            return;
        }
        const char *rel = rq->path + ul;
        size_t rel_len = rq->path_len - ul;
        if (rel_len && rel[0] == '/') {
            rel++;
            rel_len--;
        }
        if (respond_static(srv, c, rq, route->dir, rel, rel_len, script, sizeof script) ==
            KRAIT__STATIC_CACHE_ASK)
            return;
        if (rq->has_body && !rq->info.expect_continue)
            krait__body_start(srv, c, rq, 1);  /* read and drop it first, as below */
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
    krait__tree site = {srv->root_fd, srv->root, srv->root_len, NULL, 0, 0};
    int sr = respond_static(srv, c, rq, &site, target + 1, target_len - 1, script,
                            sizeof script);
    if (sr == KRAIT__STATIC_CACHE_ASK)
        return;
    if (sr == KRAIT__STATIC_PYTHON) {
        if (for_hub(srv, c))
            return;
        krait__worker_dispatch(srv, c, rq, ans.route, script, ans.params, ans.params_len);
        return;
    }
    if (rq->has_body && !rq->info.expect_continue)
        krait__body_start(srv, c, rq, 1);  /* read and drop it first: its framing must hold */
}

/* After handle_request: queue what it answered. */
static void answered(struct krait_server *srv, krait__conn *c)
{
    if (c->closed || c->state != CS_HEAD)
        return;  /* a worker or a body reader has the request */
    if (!c->nseg && !c->broken)
        krait__error(srv, c, NULL, 500, 1);  /* never: every path answers; never silent */
    c->state = CS_WRITE;
    krait__timer_set(srv, c, -1);
    krait__conn_post(srv, c);
}

void krait__request_next(struct krait_server *srv, krait__conn *c)
{
    if (c->closed || c->state != CS_HEAD || !c->in_len)
        return;
    krait__http_limits lim = {(size_t)srv->limits[KRAIT_LIMIT_REQUEST_LINE],
                              (size_t)srv->limits[KRAIT_LIMIT_HEAD],
                              (size_t)srv->limits[KRAIT_LIMIT_HEADERS]};
    krait__req_head head;
    krait__request rq;
    /* Resumable: a head trickling in costs time linear in its size, not quadratic. */
    int n = krait__http_parse_head_resume(c->in, c->in_len, &lim, &head, srv->hdr,
                                          KRAIT__MAX_HEADERS_CAP, &c->hrs);
    if (n == KRAIT__NEED_MORE) {
        if (c->in_len > (size_t)srv->limits[KRAIT_LIMIT_HEAD]) {
            /* The parser answers 414/431 as soon as a limit is passed; a safeguard. */
            srv->nhdr = 0;
            krait__error(srv, c, NULL, 431, 1);
            answered(srv, c);
        }
        return;
    }
    memset(&c->hrs, 0, sizeof c->hrs);
    memset(&rq, 0, sizeof rq);
    c->t_start = krait__mono_ns();
    c->wants_json = 0;
    if (n < 0) {
        srv->nhdr = 0;
        krait__error(srv, c, NULL, head.error_status ? head.error_status : 400, 1);
        answered(srv, c);
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
        answered(srv, c);
        return;
    }
    rq.has_body = rq.info.chunked || rq.info.content_length > 0;
    c->wants_json = prefers_json(krait__find_header(srv, "accept"));
    handle_request(srv, c, &rq);
    answered(srv, c);
}

/* The response is out: the metrics count it (stats.c); the next request is static until a
 * worker takes it. */
static void count_response(struct krait_server *srv, krait__conn *c)
{
    krait__stat_response(srv, c->stat_status, c->stat_kind, krait__mono_ns() - c->t_start);
    c->stat_status = 0;
    c->stat_kind = KRAIT_KIND_STATIC;
}

void krait__request_finish(struct krait_server *srv, krait__conn *c)
{
    count_response(srv, c);
    krait__log_finish(srv, c);
    krait__out_reset(c);
    c->cache_asked = 0;
    c->streaming = 0;
    c->head_only = 0;
    krait__body_release(srv, c);
    krait__body_unspool(c);
    if (!c->keep_alive || srv->draining) {
        krait__conn_finish(srv, c);
        return;
    }
    if (c->consume) {
        memmove(c->in, c->in + c->consume, c->in_len - c->consume);
        c->in_len -= c->consume;
        c->consume = 0;
    }
    if (c->ws_pending) {
        krait__ws_begin(srv, c);
        return;
    }
    c->ws_key[0] = '\0';  /* a handshake answered otherwise (a 502, a 503): no longer one */
    c->state = CS_HEAD;
    c->got_bytes = c->in_len > 0;
    if (c->in_len) {
        krait__timer_set(srv, c, TL_HEAD);
    } else {
        krait__conn_trim(c);  /* an idle connection holds no buffer */
        krait__timer_set(srv, c, TL_IDLE);
    }
}
