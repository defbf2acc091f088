/* WebSocket channels: subscriptions and fan-out in the core, so that one message published by
 * any worker (an HTTP script too) reaches every subscribed connection, whichever worker
 * accepted it, with no Python run per recipient. Each channel holds its subscribers; each
 * connection holds the names of its channels, so its subscriptions end with it. A message is
 * encoded once as a WebSocket frame, and compressed (permessage-deflate, no context takeover)
 * at most once per window size its subscribers negotiated; each subscriber then gets the same
 * bytes. A slow subscriber is bounded as for its own worker's messages: past twice the
 * message limit queued, it is closed with 1008. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include <zlib.h>

#include "channels.h"
#include "ipc.h"
#include "ws.h"
#include "wsconn.h"

#define CHAN_NAME_MAX 256      /* bytes of a channel name */
#define CHANS_PER_CONN 64      /* channels one connection may be subscribed to */
#define CHANS_MAX 65536        /* channels with at least one subscriber, all together */
#define DEFLATE_MIN 64         /* as wsconn.c: shorter messages go out uncompressed */

typedef struct {
    krait__conn **subs;
    size_t n, cap;
} channel;

static channel *find(struct krait_server *srv, const char *name, size_t len)
{
    krait__map_entry *e = krait__map_get(&srv->channels, name, len);
    return e ? (channel *)(intptr_t)e->num[0] : NULL;
}

static int conn_has(const krait__conn *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->nchans; i++)
        if (strlen(c->chans[i]) == len && memcmp(c->chans[i], name, len) == 0)
            return (int)i;
    return -1;
}

static void subscribe(struct krait_server *srv, krait__conn *c, const char *name, size_t len)
{
    if (!len || len > CHAN_NAME_MAX || memchr(name, '\0', len) || conn_has(c, name, len) >= 0)
        return;
    if (c->nchans >= CHANS_PER_CONN)
        return;  /* the worker asked for more than a connection may hold: ignored */
    channel *ch = find(srv, name, len);
    if (!ch) {
        if (srv->channels.count >= CHANS_MAX)
            return;
        ch = calloc(1, sizeof *ch);
        krait__map_entry *e = ch ? krait__map_put(&srv->channels, name, len) : NULL;
        if (!e) {
            free(ch);
            return;
        }
        e->num[0] = (int64_t)(intptr_t)ch;
    }
    char **nc = realloc(c->chans, (c->nchans + 1) * sizeof *nc);
    if (!nc)
        return;
    c->chans = nc;
    if (ch->n == ch->cap) {
        size_t ncap = ch->cap ? ch->cap * 2 : 8;
        krait__conn **ns = realloc(ch->subs, ncap * sizeof *ns);
        if (!ns)
            return;
        ch->subs = ns;
        ch->cap = ncap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return;
    memcpy(copy, name, len);
    copy[len] = '\0';
    c->chans[c->nchans++] = copy;
    ch->subs[ch->n++] = c;
}

static void unsubscribe(struct krait_server *srv, krait__conn *c, const char *name, size_t len)
{
    int at = conn_has(c, name, len);
    if (at < 0)
        return;
    channel *ch = find(srv, name, len);
    if (ch) {
        for (size_t i = 0; i < ch->n; i++)
            if (ch->subs[i] == c) {
                ch->subs[i] = ch->subs[--ch->n];
                break;
            }
        if (!ch->n) {
            free(ch->subs);
            free(ch);
            krait__map_del(&srv->channels, name, len);  /* name may be c->chans[at] */
        }
    }
    free(c->chans[at]);
    c->chans[at] = c->chans[--c->nchans];
}

void krait__chan_conn_gone(struct krait_server *srv, krait__conn *c)
{
    while (c->nchans) {
        const char *name = c->chans[c->nchans - 1];
        unsubscribe(srv, c, name, strlen(name));
    }
    free(c->chans);
    c->chans = NULL;
}

/* The frame compressed for one window size (RFC 7692 §7.2.1, no context takeover), or -1. */
static long compress_frame(int wbits, int opcode, const char *data, size_t len, uint8_t **out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, -wbits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    size_t cap = deflateBound(&z, len) + 16 + 10;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        deflateEnd(&z);
        return -1;
    }
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)len;
    z.next_out = buf + 10;
    z.avail_out = (uInt)(cap - 10);
    int r = deflate(&z, Z_SYNC_FLUSH);
    size_t n = (size_t)(z.next_out - (buf + 10));
    deflateEnd(&z);
    if (r != Z_OK || z.avail_in != 0 || n < 4) {
        free(buf);
        return -1;
    }
    n -= 4;  /* the 00 00 ff ff tail of the sync flush */
    uint8_t head[10];
    size_t hn = krait__ws_write_header(head, 1, 1, opcode, (uint64_t)n);
    memmove(buf + hn, buf + 10, n);
    memcpy(buf, head, hn);
    *out = buf;
    return (long)(hn + n);
}

void krait__chan_publish(struct krait_server *srv, const char *name, size_t name_len, int binary,
                         const char *data, size_t len)
{
    channel *ch = find(srv, name, name_len);
    if (!ch || (int64_t)len > srv->limits[KRAIT_LIMIT_WS_MESSAGE])
        return;
    int opcode = binary ? KRAIT__WS_BINARY : KRAIT__WS_TEXT;
    uint8_t head[10];
    size_t hn = krait__ws_write_header(head, 1, 0, opcode, (uint64_t)len);
    uint8_t *plain = malloc(hn + len);
    if (!plain)
        return;
    memcpy(plain, head, hn);
    memcpy(plain + hn, data, len);
    uint8_t *deflated[16] = {0};
    long dlen[16];
    for (int i = 0; i < 16; i++)
        dlen[i] = 0;  /* 0: not tried yet; -1: not possible */
    /* A subscriber closed by its queue bound leaves the channel only when the driver tells
     * the layers (tell_gone), so the array is stable while it is walked. */
    for (size_t i = 0; i < ch->n; i++) {
        krait__conn *c = ch->subs[i];
        const uint8_t *frame = plain;
        size_t n = hn + len;
        int wbits = c->ws_deflate;
        if (wbits >= 9 && wbits <= 15 && len >= DEFLATE_MIN) {
            if (!dlen[wbits])
                dlen[wbits] = compress_frame(wbits, opcode, data, len, &deflated[wbits]);
            if (dlen[wbits] > 0) {
                frame = deflated[wbits];
                n = (size_t)dlen[wbits];
            }
        }
        krait__ws_append_frame(srv, c, frame, n);
    }
    free(plain);
    for (int i = 0; i < 16; i++)
        free(deflated[i]);
    KRAIT__STAT_ADD(srv, KRAIT_STAT_PUBLISHED, 1);
}

void krait__chan_frame(struct krait_server *srv, const void *frame, int slot, uint32_t gen)
{
    const krait__ipc_frame *f = frame;
    if (f->type == KRAIT__IPC_PUBLISH) {
        krait__chan_publish(srv, f->params.p, f->params.n, f->body_kind == 2, f->body.p,
                            f->body.n);
        return;
    }
    krait__conn *c = krait__ws_conn_of(srv, f->id, slot, gen);
    if (!c)
        return;  /* not (or no longer) a WebSocket of that worker's */
    if (f->type == KRAIT__IPC_WS_SUBSCRIBE)
        subscribe(srv, c, f->body.p, f->body.n);
    else
        unsubscribe(srv, c, f->body.p, f->body.n);
}

/* ---- messages from other threads (a relay between machines) ------------------------------- */

#define INBOX_MAX (64u << 20)

struct krait__pub {
    struct krait__pub *next;
    size_t name_len, len;
    int binary;
    char bytes[];  /* name, then data */
};

static pthread_mutex_t *lock_of(struct krait_server *srv)
{
    return (pthread_mutex_t *)srv->pub_lock;
}

int krait_server_publish(krait_server *srv, const char *channel, size_t channel_len,
                         const char *data, size_t len, int binary)
{
    if (!srv->pub_lock || !channel_len || channel_len > CHAN_NAME_MAX)
        return KRAIT_EINVAL;
    struct krait__pub *m = malloc(sizeof *m + channel_len + len);
    if (!m)
        return KRAIT_ENOMEM;
    m->next = NULL;
    m->name_len = channel_len;
    m->len = len;
    m->binary = binary != 0;
    memcpy(m->bytes, channel, channel_len);
    memcpy(m->bytes + channel_len, data, len);
    pthread_mutex_lock(lock_of(srv));
    if (srv->pub_bytes + len > INBOX_MAX) {
        pthread_mutex_unlock(lock_of(srv));
        free(m);
        return KRAIT_ELIMIT;
    }
    if (srv->pub_tail)
        srv->pub_tail->next = m;
    else
        srv->pub_head = m;
    srv->pub_tail = m;
    srv->pub_bytes += len;
    pthread_mutex_unlock(lock_of(srv));
    uint64_t one = 1;
    ssize_t r = write(srv->wake_fd, &one, sizeof one);
    (void)r;
    return KRAIT_OK;
}

int krait__chan_inbox_run(struct krait_server *srv)
{
    if (!srv->pub_lock)
        return 0;
    pthread_mutex_lock(lock_of(srv));
    struct krait__pub *m = srv->pub_head;
    srv->pub_head = srv->pub_tail = NULL;
    srv->pub_bytes = 0;
    pthread_mutex_unlock(lock_of(srv));
    int any = m != NULL;
    while (m) {
        struct krait__pub *next = m->next;
        krait__chan_publish(srv, m->bytes, m->name_len, m->binary, m->bytes + m->name_len,
                            m->len);
        free(m);
        m = next;
    }
    return any;
}

void krait__chan_free_all(struct krait_server *srv)
{
    if (srv->pub_lock) {
        struct krait__pub *m = srv->pub_head;
        while (m) {
            struct krait__pub *next = m->next;
            free(m);
            m = next;
        }
        pthread_mutex_destroy(lock_of(srv));
        free(srv->pub_lock);
        srv->pub_lock = NULL;
    }
    for (size_t i = 0; i < srv->channels.cap; i++) {
        krait__map_entry *e = &srv->channels.e[i];
        if (e->key) {
            channel *ch = (channel *)(intptr_t)e->num[0];
            free(ch->subs);
            free(ch);
        }
    }
    krait__map_free(&srv->channels);
}
