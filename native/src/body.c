/* Request bodies. A body is decoded (chunked framing removed) as it arrives; it stays in
 * memory while it is under the spool threshold and the server's in-memory budget for bodies
 * (KRAIT_LIMIT_BODY_MEMORY) allows, and otherwise goes to a temporary file, written as it
 * arrives, whose path the worker gets. A body to a request that needs none (a static file) is
 * read only to check its framing, and dropped. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "body.h"
#include "conn.h"

void krait__body_release(struct krait_server *srv, krait__conn *c)
{
    free(c->body);
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    srv->body_memory -= (int64_t)c->body_mem;
    c->body_mem = 0;
    if (c->body_fd >= 0) {
        close(c->body_fd);
        c->body_fd = -1;
    }
}

void krait__body_unspool(krait__conn *c)
{
    if (c->spool) {
        unlink(c->spool);
        free(c->spool);
        c->spool = NULL;
    }
}

void krait__body_start(struct krait_server *srv, krait__conn *c, krait__request *rq,
                       int discard)
{
    krait__body_release(srv, c);
    krait__body_unspool(c);
    c->state = CS_BODY;
    c->body_discard = discard;
    c->body_need = rq->info.chunked ? -1 : rq->info.content_length;
    c->body_total = 0;
    c->body_len = 0;
    memset(&c->chunk, 0, sizeof c->chunk);
    if (!discard && rq->info.expect_continue && rq->version_minor >= 1 &&
        c->in_len == c->consume && !c->nseg) {
        /* RFC 9110 §10.1.1: the client waits for this before it sends the body. */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        krait__out_add(c, cont, sizeof cont - 1);
        krait__seg_mem(c, 0);
    }
    krait__timer_set(srv, c, TL_BODY);
    krait__conn_post(srv, c);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Move to a temporary file: what is in memory first, then everything that follows. */
static int spool_open(struct krait_server *srv, krait__conn *c)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 200)
        tmp = "/tmp";
    char path[256];
    snprintf(path, sizeof path, "%s/krait-body-XXXXXX", tmp);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -1;
    c->spool = strdup(path);
    if (!c->spool || write_all(fd, c->body ? c->body : "", c->body_len) < 0) {
        close(fd);
        unlink(path);
        free(c->spool);
        c->spool = NULL;
        return -1;
    }
    c->body_fd = fd;
    free(c->body);
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    srv->body_memory -= (int64_t)c->body_mem;
    c->body_mem = 0;
    return 0;
}

static int body_append(struct krait_server *srv, krait__conn *c, const char *p, size_t n)
{
    if ((int64_t)(c->body_total + n) > srv->limits[KRAIT_LIMIT_BODY])
        return 413;
    c->body_total += n;
    if (c->body_discard || !n)
        return 0;
    if (c->body_fd < 0 && c->body_len + n > c->body_cap) {
        size_t ncap = c->body_cap ? c->body_cap : 16384;
        while (ncap < c->body_len + n)
            ncap *= 2;
        int64_t grow = (int64_t)(ncap - c->body_cap);
        if ((int64_t)c->body_total > srv->limits[KRAIT_LIMIT_SPOOL] ||
            srv->body_memory + grow > srv->limits[KRAIT_LIMIT_BODY_MEMORY]) {
            if (spool_open(srv, c) < 0)
                return 500;
        } else {
            char *b = realloc(c->body, ncap);
            if (!b)
                return 500;
            c->body = b;
            c->body_cap = ncap;
            c->body_mem += (size_t)grow;
            srv->body_memory += grow;
        }
    }
    if (c->body_fd >= 0)
        return write_all(c->body_fd, p, n) < 0 ? 500 : 0;
    memcpy(c->body + c->body_len, p, n);
    c->body_len += n;
    return 0;
}

int krait__body_feed(struct krait_server *srv, krait__conn *c)
{
    int status = 0;
    int complete = 0;
    size_t avail = c->in_len - c->consume;
    if (c->body_need >= 0) {
        size_t take = avail < (uint64_t)c->body_need ? avail : (size_t)c->body_need;
        status = body_append(srv, c, c->in + c->consume, take);
        c->consume += take;
        c->body_need -= (int64_t)take;
        complete = c->body_need == 0;
    } else {
        while (!status && c->consume < c->in_len) {
            char tmp[16384];
            size_t used = 0, produced = 0;
            int r = krait__chunked_decode(&c->chunk, c->in + c->consume, c->in_len - c->consume,
                                          &used, tmp, sizeof tmp, &produced);
            c->consume += used;
            if (r == KRAIT__MALFORMED) {
                status = 400;
                break;
            }
            if (produced)
                status = body_append(srv, c, tmp, produced);
            if (r == 1) {
                complete = 1;
                break;
            }
            if (!used && !produced)
                break;
        }
    }
    /* The head and the body bytes are no longer needed: keep only what follows. */
    if (c->consume) {
        memmove(c->in, c->in + c->consume, c->in_len - c->consume);
        c->in_len -= c->consume;
        c->consume = 0;
    }
    if (status)
        return status;
    if (complete) {
        if (c->body_fd >= 0) {
            close(c->body_fd);
            c->body_fd = -1;
        }
        return KRAIT__BODY_DONE;
    }
    krait__timer_set(srv, c, TL_BODY);
    return KRAIT__BODY_MORE;
}
