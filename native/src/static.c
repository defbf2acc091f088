/* Static files, decided and served in C: Krait's URL → file mapping (index and extension search)
 * confined to a tree (the site root, or a static folder outside it) with
 * openat2(RESOLVE_BENEATH), the "static or Python" decision and its cache, validators and
 * preconditions (via cache.c), Range and multipart/byteranges, the gzip sibling, and the
 * response head. Bodies leave as file segments of the connection (conn.c). A file of the site
 * that needs Python is handed back to request.c for a worker; a static folder's never is. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "conn.h"
#include "response.h"
#include "static.h"
#include "tables.h"

static int openat2_fd(int dirfd, const char *path, uint64_t resolve)
{
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    how.resolve = resolve;
    long fd;
    do
        fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    while (fd < 0 && errno == EINTR);
    return (int)fd;
}

/* After following a symlink, the file reached must still obey the hidden-segment rule
 * (behaviour §2): "link -> .private/db" must not expose .private. */
static int symlink_target_ok(krait_server *srv, const krait__tree *t, int fd)
{
    char proc[64], real[KRAIT__PATH_MAX];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, real, sizeof real - 1);
    if (n < 0)
        return 0;
    real[n] = '\0';
    if ((size_t)n < t->path_len || memcmp(real, t->path, t->path_len) != 0)
        return 0;
    const char *p = real + t->path_len;
    if (*p && *p != '/')
        return 0;
    for (const char *q = p; *q; q++)
        if (*q == '/' && q[1] == '.')
            return 0;
    return !krait__never_served(srv, p, strlen(p));
}

/* Open rel beneath the tree. Symlinks are followed only while they stay inside the tree
 * (RESOLVE_BENEATH) and lead to no hidden path; the common case (no symlink) costs one call. */
static int open_beneath(krait_server *srv, const krait__tree *t, const char *rel,
                        struct stat *st)
{
    int fd = openat2_fd(t->fd, *rel ? rel : ".",
                        RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS);
    if (fd < 0 && errno == ELOOP) {
        fd = openat2_fd(t->fd, rel, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
        if (fd >= 0 && !symlink_target_ok(srv, t, fd)) {
            close(fd);
            errno = ENOENT;
            return -1;
        }
    }
    if (fd < 0)
        return -1;
    if (fstat(fd, st) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* Behaviour §3.2: a directory serves its index; a missing F tries F.html, F.htm, F.pyml, F.py,
 * then the .html/.htm twin. The result must be a regular file. */
static int resolve_file(krait_server *srv, const krait__tree *t, const char *rel,
                        size_t rel_len, char *name, size_t name_cap, struct stat *st)
{
    if (rel_len + 16 > name_cap)
        return -1;
    memcpy(name, rel, rel_len);
    name[rel_len] = '\0';
    size_t n = rel_len;
    int fd = open_beneath(srv, t, name, st);
    if (fd >= 0 && S_ISDIR(st->st_mode)) {
        close(fd);
        if (n && name[n - 1] != '/')
            name[n++] = '/';
        memcpy(name + n, "index", 6);
        n += 5;
        fd = open_beneath(srv, t, name, st);
    }
    if (fd < 0) {
        static const char *const exts[] = {".html", ".htm", ".pyml", ".py"};
        for (size_t i = 0; i < 4 && fd < 0; i++) {
            memcpy(name + n, exts[i], strlen(exts[i]) + 1);
            fd = open_beneath(srv, t, name, st);
        }
        if (fd < 0 && ends_with(name, n, ".html")) {
            name[n - 1] = '\0';
            fd = open_beneath(srv, t, name, st);
            if (fd >= 0)
                n--;
        } else if (fd < 0 && ends_with(name, n, ".htm")) {
            memcpy(name + n, "l", 2);
            fd = open_beneath(srv, t, name, st);
            if (fd >= 0)
                n++;
        }
        if (fd >= 0 && !ends_with(name, n, ".html") && !ends_with(name, n, ".htm"))
            n = strlen(name);
        else if (fd >= 0)
            n = strlen(name);
    }
    name[n] = '\0';
    if (fd >= 0 && !S_ISREG(st->st_mode)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* ---- the resolution cache ----------------------------------------------------------------
 * The search for "hello" tries hello, hello.html, hello.htm, hello.pyml before hello.py: four
 * failed opens per request for a Python page, and the script's own open only to learn that it
 * is a file. Its outcome depends only on the entries of one directory, so it is remembered
 * with that directory's identity and change time (ctime: any entry added, removed or renamed
 * changes it, and unlike mtime it cannot be set back). A hit costs one fstatat of the
 * directory. A directory changed in the last two seconds is not trusted (timestamps are
 * coarser than the events they order). */

#define RESOLVE_SETTLE_S 2

/* The directory part of rel: its length (0 for the root). A rel ending in '/' (or empty) names
 * a directory whose index is searched: then the directory is rel itself. */
static size_t search_dir_len(const char *rel, size_t len, int index_search)
{
    if (index_search)
        return len && rel[len - 1] == '/' ? len - 1 : len;
    while (len && rel[len - 1] != '/')
        len--;
    return len ? len - 1 : 0;
}

static int dir_stat(const krait__tree *t, const char *name, size_t dir_len, struct stat *st)
{
    char dir[KRAIT__PATH_MAX];
    if (dir_len >= sizeof dir)
        return -1;
    memcpy(dir, name, dir_len);
    dir[dir_len] = '\0';
    return fstatat(t->fd, dir_len ? dir : ".", st, AT_SYMLINK_NOFOLLOW);
}

static int64_t ctime_ns(const struct stat *st)
{
    return (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

/* The remembered file for rel, into name, if its directory has not changed since. */
static int resolved_lookup(krait_server *srv, const krait__tree *t, const char *rel,
                           size_t rel_len, char *name, size_t name_cap)
{
    krait__map_entry *e = krait__map_get(&srv->resolved, rel, rel_len);
    struct stat ds;
    if (!e || !e->val || e->val_len >= name_cap ||
        dir_stat(t, e->val, (size_t)e->num[0], &ds) < 0 || !S_ISDIR(ds.st_mode) ||
        (int64_t)ds.st_ino != e->num[1] || (int64_t)ds.st_dev != e->num[2] ||
        ctime_ns(&ds) != e->num[3])
        return 0;
    memcpy(name, e->val, e->val_len + 1);
    return 1;
}

static void resolved_store(krait_server *srv, const krait__tree *t, const char *rel,
                           size_t rel_len, const char *name, size_t name_len)
{
    int index_search = !rel_len || rel[rel_len - 1] == '/';
    size_t dl = search_dir_len(rel, rel_len, index_search);
    /* Only outcomes decided inside that one directory ("docs" → "docs/index.py" also depends
     * on the parent's entries: not cached). */
    if (search_dir_len(name, name_len, 0) != dl || (dl && memcmp(name, rel, dl) != 0))
        return;
    struct stat ds;
    if (dir_stat(t, name, dl, &ds) < 0 || !S_ISDIR(ds.st_mode) ||
        ds.st_ctim.tv_sec + RESOLVE_SETTLE_S > srv->date_sec)
        return;
    krait__map_entry *e = krait__map_put(&srv->resolved, rel, rel_len);
    if (!e)
        return;
    char *v = realloc(e->val, name_len + 1);
    if (!v) {
        free(e->val);
        e->val = NULL;
        return;
    }
    memcpy(v, name, name_len + 1);
    e->val = v;
    e->val_len = name_len;
    e->num[0] = (int64_t)dl;
    e->num[1] = (int64_t)ds.st_ino;
    e->num[2] = (int64_t)ds.st_dev;
    e->num[3] = ctime_ns(&ds);
}

#define LOCATE_SCRIPT (-2)

/* The file rel names (behaviour §3.2) into name: its open descriptor and st; LOCATE_SCRIPT for
 * a remembered .py script, which the core need not open (the worker does); -1 for none. The
 * resolution cache is the site root's alone (its keys are root-relative paths): a static
 * folder has no scripts, and its files are usually asked for by their exact names. */
static int locate(krait_server *srv, const krait__tree *t, const char *rel, size_t rel_len,
                  char *name, size_t name_cap, struct stat *st)
{
    if (!t->files_only && resolved_lookup(srv, t, rel, rel_len, name, name_cap)) {
        if (ends_with(name, strlen(name), ".py"))
            return LOCATE_SCRIPT;
        int fd = open_beneath(srv, t, name, st);
        if (fd >= 0 && S_ISREG(st->st_mode))
            return fd;
        if (fd >= 0)
            close(fd);
    }
    int fd = resolve_file(srv, t, rel, rel_len, name, name_cap, st);
    size_t name_len = fd >= 0 ? strlen(name) : 0;
    if (fd >= 0 && !t->files_only && (name_len != rel_len || ends_with(name, name_len, ".py")))
        resolved_store(srv, t, rel, rel_len, name, name_len);
    return fd;
}

/* Behaviour §3.3: .py is always Python; .html/.htm/.pyml need Python only when they contain
 * an '@' (a construct); everything else is static. The scan is cached per file version. */
static int needs_python(krait_server *srv, int fd, const char *name, size_t len,
                        const struct stat *st)
{
    if (ends_with(name, len, ".py"))
        return 1;
    int html = ends_with(name, len, ".html") || ends_with(name, len, ".htm");
    if (!(html && srv->html_templates) && !ends_with(name, len, ".pyml"))
        return 0;
    char key[96];
    int kn = snprintf(key, sizeof key, "%llx:%llx:%llx:%llx.%lx", (unsigned long long)st->st_dev,
                      (unsigned long long)st->st_ino, (unsigned long long)st->st_size,
                      (unsigned long long)st->st_mtim.tv_sec, (unsigned long)st->st_mtim.tv_nsec);
    krait__map_entry *e = krait__map_get(&srv->dyn_cache, key, (size_t)kn);
    if (e)
        return (int)e->num[0];
    int dynamic = 0;
    char buf[65536];
    off_t off = 0;
    for (;;) {
        ssize_t r = pread(fd, buf, sizeof buf, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (memchr(buf, '@', (size_t)r)) {
            dynamic = 1;
            break;
        }
        off += r;
    }
    e = krait__map_put(&srv->dyn_cache, key, (size_t)kn);
    if (e)
        e->num[0] = dynamic;
    return dynamic;
}

/* Does Accept-Encoding accept gzip? Tokens are case-insensitive; "q=0" refuses (RFC 9110
 * §12.5.3); "*" accepts. */
static int accepts_gzip(const krait__header *h)
{
    if (!h)
        return 0;
    const char *p = h->value, *end = h->value + h->value_len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *tok = p;
        while (p < end && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t tl = (size_t)(p - tok);
        int is_gzip = (tl == 4 && strncasecmp(tok, "gzip", 4) == 0) || (tl == 1 && *tok == '*');
        int q_zero = 0;
        while (p < end && *p != ',') {
            if (*p == 'q' || *p == 'Q') {
                const char *q = p + 1;
                while (q < end && (*q == ' ' || *q == '\t'))
                    q++;
                if (q < end && *q == '=') {
                    q++;
                    while (q < end && (*q == ' ' || *q == '\t'))
                        q++;
                    if (q < end && *q == '0') {
                        q_zero = 1;
                        for (const char *d = q + 1; d < end && *d != ',' && *d != ';'; d++)
                            if (*d >= '1' && *d <= '9')
                                q_zero = 0;
                    }
                }
            }
            p++;
        }
        if (is_gzip)
            return !q_zero;
    }
    return 0;
}

static void content_type_of(krait_server *srv, const char *name, size_t len, char *out,
                            size_t cap)
{
    const char *type = NULL;
    if (ends_with(name, len, ".pyml")) {
        /* "data.json.pyml" takes the inner extension (behaviour §6); a bare page.pyml is HTML. */
        size_t inner = len - 5;
        type = krait__mime_lookup(srv, name, inner);
        if (!type) {
            const char *slash = memrchr(name, '/', inner);
            const char *base = slash ? slash + 1 : name;
            if (!memchr(base, '.', (size_t)(name + inner - base)))
                type = "text/html; charset=utf-8";
        }
    } else {
        type = krait__mime_lookup(srv, name, len);
    }
    snprintf(out, cap, "%s", type ? type : "application/octet-stream");
}

static void add_cache_control(krait_server *srv, krait__conn *c, int flags)
{
    if (flags & KRAIT_CACHE_NO_STORE) {
        krait__out_str(c, "Cache-Control: no-cache, no-store, must-revalidate\r\n");
        return;
    }
    krait__out_str(c, "Cache-Control: ");
    if (flags & KRAIT_CACHE_PRIVATE)
        krait__out_str(c, "private, ");
    else if (flags & KRAIT_CACHE_PUBLIC)
        krait__out_str(c, "public, ");
    krait__out_str(c, "max-age=");
    krait__out_u64(c, (uint64_t)((flags & KRAIT_CACHE_LONG) ? srv->max_age_long : srv->max_age));
    krait__out_str(c, ", must-revalidate\r\n");
}

typedef struct {
    char etag[KRAIT__ETAG_MAX];
    size_t etag_len;
    char last_modified[KRAIT__DATE_LEN + 1];
    char ctype[160];
    int flags;       /* KRAIT_CACHE_* */
    int gzip;        /* serving the sibling (so the answer varies on Accept-Encoding) */
    int nosniff;     /* a static-only folder's file: the browser must not guess its type */
} file_meta;

/* The validator and metadata headers every answer about this file carries (200, 206, 304,
 * 416): RFC 9110 §15.4.5 wants the 304 to repeat them. */
static void add_meta(krait_server *srv, krait__conn *c, const file_meta *m, int with_type)
{
    if (with_type) {
        krait__out_str(c, "Content-Type: ");
        krait__out_str(c, m->ctype);
        krait__out_add(c, "\r\n", 2);
    }
    if (m->gzip)
        krait__out_str(c, "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n");
    if (m->nosniff)
        krait__out_str(c, "X-Content-Type-Options: nosniff\r\n");
    if (!(m->flags & KRAIT_CACHE_NO_STORE)) {
        krait__out_str(c, "ETag: ");
        krait__out_add(c, m->etag, m->etag_len);
        krait__out_add(c, "\r\n", 2);
    }
    krait__out_str(c, "Last-Modified: ");
    krait__out_add(c, m->last_modified, KRAIT__DATE_LEN);
    krait__out_add(c, "\r\n", 2);
    add_cache_control(srv, c, m->flags);
}

static void respond_simple(krait_server *srv, krait__conn *c, krait__request *rq, int status,
                           const file_meta *m)
{
    size_t from = c->out_len;
    krait__resp_start(srv, c, status);
    if (status == 304) {
        add_meta(srv, c, m, 1);
        krait__resp_end_headers(srv, c, -1);
    } else {
        char body[128];
        int n = snprintf(body, sizeof body, "<html><body><h1>%d %s</h1></body></html>", status,
                         krait__reason(status));
        krait__out_str(c, "Content-Type: text/html; charset=utf-8\r\n");
        krait__resp_end_headers(srv, c, n);
        if (!rq->is_head)
            krait__out_add(c, body, (size_t)n);
    }
    krait__seg_mem(c, from);
    krait__log_begin(srv, c, rq, status, 0);
}

/* Did the path name a directory without its trailing slash, answered by that directory's index
 * ("docs" → "docs/index.html"; a static folder's own prefix, "/static" → "index.html")? Only
 * for the request's own path (rel is the tail of rq->path), never for a route's target: the
 * URL a client asked for is what gets the slash. */
static int directory_without_slash(const krait__request *rq, const char *rel, size_t rel_len,
                                   const char *name)
{
    if (rel + rel_len != rq->path + rq->path_len || !rq->path_len ||
        rq->path[rq->path_len - 1] == '/')
        return 0;
    if (!rel_len)
        return 1;  /* the folder itself: what was found is its index */
    return strlen(name) > rel_len && name[rel_len] == '/' && memcmp(name, rel, rel_len) == 0;
}

/* 301 to the same path with a trailing '/', the query kept (as nginx and Apache do), so that
 * the index page's relative links resolve inside the directory. The Location is a path-absolute
 * reference: the decoded path percent-encoded again (only RFC 3986 pchar and '/' kept as they
 * are, so no control byte, space, '?' or '#' can reach the header), then "/?" and the raw
 * query, which the request line parser has already checked. */
static void redirect_to_directory(krait_server *srv, krait__conn *c, krait__request *rq)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t from = c->out_len;
    krait__resp_start(srv, c, 301);
    krait__out_str(c, "Location: ");
    char buf[256];
    size_t n = 0;
    for (size_t i = 0; i < rq->path_len; i++) {
        unsigned char ch = (unsigned char)rq->path[i];
        if (n + 3 > sizeof buf) {
            krait__out_add(c, buf, n);
            n = 0;
        }
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            (ch && strchr("-._~!$&'()*+,;=:@/", ch))) {
            buf[n++] = (char)ch;
        } else {
            buf[n++] = '%';
            buf[n++] = hex[ch >> 4];
            buf[n++] = hex[ch & 15];
        }
    }
    krait__out_add(c, buf, n);
    krait__out_add(c, "/", 1);
    if (rq->query) {
        krait__out_add(c, "?", 1);
        krait__out_add(c, rq->query, rq->query_len);
    }
    krait__out_str(c, "\r\n");
    if (rq->has_body)
        c->keep_alive = 0;  /* the body is not read */
    krait__resp_end_headers(srv, c, 0);
    krait__seg_mem(c, from);
    krait__log_begin(srv, c, rq, 301, 0);
}

/* The head of one multipart/byteranges part (RFC 9110 §14.6). */
static int part_head(char *out, size_t cap, const char *boundary, const char *ctype,
                     const krait__range *r, uint64_t size)
{
    return snprintf(out, cap,
                    "\r\n--%s\r\nContent-Type: %s\r\nContent-Range: bytes %llu-%llu/%llu\r\n\r\n",
                    boundary, ctype, (unsigned long long)r->first, (unsigned long long)r->last,
                    (unsigned long long)size);
}

/* The cache rule of a file: asked by its name relative to the site root, or for a static
 * folder's file by its URL path ("static/app.css"), as the site's rules are written. */
/* The name the cache rules see for a file: root-relative in the site (name itself, no copy),
 * the URL path (the folder's prefix, then the name, built in buf) in a static folder. NULL if
 * too long. */
static const char *cache_key(const krait__tree *t, const char *name, size_t name_len, char *buf,
                             size_t cap, size_t *len)
{
    *len = name_len;
    if (!t->url_len)
        return name;
    *len = t->url_len + 1 + name_len;
    if (*len >= cap)
        return NULL;
    memcpy(buf, t->url, t->url_len);
    buf[t->url_len] = '/';
    memcpy(buf + t->url_len + 1, name, name_len + 1);
    return buf;
}

int krait__static_respond(krait_server *srv, krait__conn *c, krait__request *rq,
                          const krait__tree *t, const char *rel, size_t rel_len, char *script,
                          size_t script_cap)
{
    char name[KRAIT__PATH_MAX];
    struct stat st;
    int fd = locate(srv, t, rel, rel_len, name, sizeof name, &st);
    if (fd != -1 && krait__never_served(srv, name, strlen(name))) {
        if (fd >= 0)
            close(fd);
        fd = -1;  /* "page" found as "page.bak"? never */
    }
    int data_only = fd != -1 && (t->files_only || krait__static_only(srv, name, strlen(name)));
    if (data_only && fd == LOCATE_SCRIPT) {
        fd = open_beneath(srv, t, name, &st);  /* a .py under uploads/ is a file, not a script */
        if (fd >= 0 && !S_ISREG(st.st_mode)) {
            close(fd);
            fd = -1;
        }
    }
    if (fd == -1) {
        krait__error(srv, c, rq, 404, rq->has_body);
        return KRAIT__STATIC_ANSWERED;
    }
    if (rq->verb == KRAIT_VERB_GET && !rq->info.upgrade_websocket &&
        directory_without_slash(rq, rel, rel_len, name)) {
        if (fd >= 0)
            close(fd);
        redirect_to_directory(srv, c, rq);
        return KRAIT__STATIC_ANSWERED;
    }
    size_t name_len = strlen(name);
    if (!data_only && (fd == LOCATE_SCRIPT || needs_python(srv, fd, name, name_len, &st))) {
        if (fd >= 0)
            close(fd);
        int n = snprintf(script, script_cap, "%s/%s", t->path, name);
        if (n < 0 || (size_t)n >= script_cap) {
            krait__error(srv, c, rq, 414, 1);
            return KRAIT__STATIC_ANSWERED;
        }
        return KRAIT__STATIC_PYTHON;
    }
    if (rq->info.upgrade_websocket) {
        close(fd);  /* a WebSocket upgrade needs a script to accept it */
        krait__error(srv, c, rq, 400, 1);
        return KRAIT__STATIC_ANSWERED;
    }
    if (rq->verb != KRAIT_VERB_GET) {
        close(fd);
        size_t from = c->out_len;
        int status = rq->verb == KRAIT_VERB_OPTIONS ? 204 : 405;
        krait__resp_start(srv, c, status);
        krait__out_str(c, "Allow: GET, HEAD, OPTIONS\r\n");
        if (rq->has_body)
            c->keep_alive = 0;
        krait__resp_end_headers(srv, c, status == 204 ? -1 : 0);
        krait__seg_mem(c, from);
        krait__log_begin(srv, c, rq, status, 0);
        return KRAIT__STATIC_ANSWERED;
    }
    if (rq->has_body)
        c->keep_alive = 0;  /* we do not read a body a static file has no use for */

    file_meta m;
    memset(&m, 0, sizeof m);
    content_type_of(srv, name, name_len, m.ctype, sizeof m.ctype);
    m.nosniff = data_only;
    if (data_only && (ends_with(name, name_len, ".pyml") || ends_with(name, name_len, ".py")))
        snprintf(m.ctype, sizeof m.ctype, "text/plain; charset=utf-8");  /* data, not code */
    char keybuf[KRAIT__PATH_MAX];
    size_t key_len;
    const char *key = cache_key(t, name, name_len, keybuf, sizeof keybuf, &key_len);
    if (!key) {
        m.flags = 0;  /* a name too long for the rules: no rule */
    } else if (c->cache_asked && c->route_path && strcmp(c->route_path, key) == 0) {
        m.flags = c->cache_answer;  /* a worker's answer, for this very request */
    } else if (krait__cache_flags(srv, key, key_len, &m.flags) == KRAIT__CACHE_ASK) {
        /* A regex cache rule: a worker decides (request.c asks; the request is taken again
         * from the start with the answer). */
        close(fd);
        if (key_len >= script_cap) {
            krait__error(srv, c, rq, 414, 1);
            return KRAIT__STATIC_ANSWERED;
        }
        memcpy(script, key, key_len + 1);
        return KRAIT__STATIC_CACHE_ASK;
    }
    c->cache_asked = 0;

    /* A precompressed sibling (name.gz), looked for only when the client takes gzip (as
     * nginx's gzip_static does): that answer says Vary: Accept-Encoding; one to a client that
     * does not take gzip is the file itself, right for it and any other client. */
    if (name_len + 4 < sizeof name && accepts_gzip(krait__find_header(srv, "accept-encoding"))) {
        memcpy(name + name_len, ".gz", 4);
        struct stat gst;
        int gfd = open_beneath(srv, t, name, &gst);
        name[name_len] = '\0';
        if (gfd >= 0 && S_ISREG(gst.st_mode)) {
            close(fd);
            fd = gfd;
            st = gst;
            m.gzip = 1;
        } else if (gfd >= 0) {
            close(gfd);
        }
    }
    m.etag_len = krait__etag_make((uint64_t)st.st_ino, (uint64_t)st.st_size,
                                  (int64_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, m.etag);
    krait__http_date(st.st_mtim.tv_sec, m.last_modified);
    int storable = !(m.flags & KRAIT_CACHE_NO_STORE);

    /* Preconditions, RFC 9110 §13.2.2 order: If-Match, If-Unmodified-Since, If-None-Match,
     * If-Modified-Since (only when If-None-Match is absent), then Range/If-Range. */
    const krait__header *h = krait__find_header(srv, "if-match");
    if (h) {
        if (krait__if_match(h->value, h->value_len, m.etag, m.etag_len) != 1) {
            close(fd);
            respond_simple(srv, c, rq, 412, &m);
            return KRAIT__STATIC_ANSWERED;
        }
    } else if ((h = krait__find_header(srv, "if-unmodified-since")) &&
               krait__modified_since(h->value, h->value_len, st.st_mtim.tv_sec) == 1) {
        close(fd);
        respond_simple(srv, c, rq, 412, &m);
        return KRAIT__STATIC_ANSWERED;
    }
    if (storable) {
        int not_modified = 0;
        if ((h = krait__find_header(srv, "if-none-match")))
            not_modified = krait__if_none_match(h->value, h->value_len, m.etag, m.etag_len) == 1;
        else if ((h = krait__find_header(srv, "if-modified-since")))
            not_modified = krait__modified_since(h->value, h->value_len, st.st_mtim.tv_sec) == 0;
        if (not_modified) {
            close(fd);
            respond_simple(srv, c, rq, 304, &m);
            return KRAIT__STATIC_ANSWERED;
        }
    }

    uint64_t size = (uint64_t)st.st_size;
    krait__range ranges[KRAIT__MAX_RANGES];
    int nr = KRAIT__RANGE_NONE;
    const krait__header *rh = rq->is_head ? NULL : krait__find_header(srv, "range");
    if (rh) {
        const krait__header *ir = krait__find_header(srv, "if-range");
        if (!ir || krait__if_range(ir->value, ir->value_len, m.etag, m.etag_len,
                                   st.st_mtim.tv_sec) == 1)
            nr = krait__range_parse(rh->value, rh->value_len, size, ranges, KRAIT__MAX_RANGES);
    }

    size_t from = c->out_len;
    if (nr == KRAIT__RANGE_UNSATISFIABLE) {
        close(fd);
        char body[96];
        int n = snprintf(body, sizeof body,
                         "<html><body><h1>416 Range Not Satisfiable</h1></body></html>");
        krait__resp_start(srv, c, 416);
        krait__out_str(c, "Content-Range: bytes */");
        krait__out_u64(c, size);
        krait__out_str(c, "\r\nContent-Type: text/html; charset=utf-8\r\n");
        add_meta(srv, c, &m, 0);
        krait__resp_end_headers(srv, c, n);
        krait__out_add(c, body, (size_t)n);
        krait__seg_mem(c, from);
        krait__log_begin(srv, c, rq, 416, (uint64_t)n);
        return KRAIT__STATIC_ANSWERED;
    }
    c->file_fd = fd;
    if (nr == 1) {
        krait__resp_start(srv, c, 206);
        krait__out_str(c, "Content-Range: bytes ");
        krait__out_u64(c, ranges[0].first);
        krait__out_add(c, "-", 1);
        krait__out_u64(c, ranges[0].last);
        krait__out_add(c, "/", 1);
        krait__out_u64(c, size);
        krait__out_add(c, "\r\nAccept-Ranges: bytes\r\n", 24);
        add_meta(srv, c, &m, 1);
        uint64_t len = ranges[0].last - ranges[0].first + 1;
        krait__resp_end_headers(srv, c, (int64_t)len);
        krait__seg_mem(c, from);
        krait__seg_file(c, ranges[0].first, len);
        krait__log_begin(srv, c, rq, 206, len);
        return KRAIT__STATIC_ANSWERED;
    }
    if (nr > 1) {
        /* RFC 9110 §14.6: multipart/byteranges, each part with its own Content-Range. */
        char boundary[40];
        snprintf(boundary, sizeof boundary, "krait-%.16s", m.etag + 1);
        for (char *b = boundary; *b; b++)
            if (*b == '"' || *b == '-')
                *b = 'x';
        /* Compute the body length first: part heads are short strings we can size exactly. */
        uint64_t total = 0;
        char part[512];
        for (int i = 0; i < nr; i++) {
            int pn = part_head(part, sizeof part, boundary, m.ctype, &ranges[i], size);
            total += (uint64_t)pn + ranges[i].last - ranges[i].first + 1;
        }
        total += strlen(boundary) + 8;  /* "\r\n--" boundary "--\r\n" */
        krait__resp_start(srv, c, 206);
        krait__out_str(c, "Content-Type: multipart/byteranges; boundary=");
        krait__out_str(c, boundary);
        krait__out_str(c, "\r\nAccept-Ranges: bytes\r\n");
        add_meta(srv, c, &m, 0);
        krait__resp_end_headers(srv, c, (int64_t)total);
        for (int i = 0; i < nr; i++) {
            int pn = part_head(part, sizeof part, boundary, m.ctype, &ranges[i], size);
            krait__out_add(c, part, (size_t)pn);
            krait__seg_mem(c, from);
            from = c->out_len;
            krait__seg_file(c, ranges[i].first, ranges[i].last - ranges[i].first + 1);
        }
        krait__out_str(c, "\r\n--");
        krait__out_str(c, boundary);
        krait__out_str(c, "--\r\n");
        krait__seg_mem(c, from);
        krait__log_begin(srv, c, rq, 206, total);
        return KRAIT__STATIC_ANSWERED;
    }
    krait__resp_start(srv, c, 200);
    krait__out_str(c, "Accept-Ranges: bytes\r\n");
    add_meta(srv, c, &m, 1);
    krait__resp_end_headers(srv, c, (int64_t)size);
    krait__seg_mem(c, from);
    if (!rq->is_head)
        krait__seg_file(c, 0, size);
    krait__log_begin(srv, c, rq, 200, rq->is_head ? 0 : size);
    return KRAIT__STATIC_ANSWERED;
}
