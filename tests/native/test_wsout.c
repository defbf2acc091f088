/* A WebSocket subscriber's output (wsconn.c krait__ws_append_frame, conn.c krait__out_compact)
 * on a real socketpair: a reader that keeps up but is always a little behind (the socket is
 * full at every flush, so the buffer never drains completely) is never closed and its buffer
 * stays small; a reader that stops is closed with 1008 once it is two message limits behind. */
#define _GNU_SOURCE
#include <sys/socket.h>

#include "conn.h"
#include "core.h"
#include "harness.h"
#include "krait.h"
#include "loop.h"
#include "wsconn.h"

#define LIMIT (64 * 1024)

static krait__conn *ws_conn(krait_server *srv, int *peer)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return NULL;
    krait__conn *c = krait__loop_adopt(srv, sv[0], 0, "test", 1);
    c->state = CS_WS;  /* an open WebSocket, as after its 101 */
    *peer = sv[1];
    return c;
}

static size_t drain(int fd, size_t max)
{
    char buf[4096];
    size_t got = 0;
    while (got < max) {
        ssize_t n = recv(fd, buf, max - got < sizeof buf ? max - got : sizeof buf, MSG_DONTWAIT);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

int main(void)
{
    char dir[] = "/tmp/krait-wsout-XXXXXX";
    ok(mkdtemp(dir) != NULL, "mkdtemp");
    char err[256] = "";
    krait_server *srv = krait_server_new(dir, err, sizeof err);
    ok(srv != NULL, "server: %s", err);
    if (!srv)
        return done();
    krait_server_set_limit(srv, KRAIT_LIMIT_WS_MESSAGE, LIMIT);
    krait__loop_start(srv, 0);
    uint8_t frame[1024 + 4];
    frame[0] = 0x82;  /* a binary message of 1 KiB */
    frame[1] = 126;
    frame[2] = 1024 >> 8;
    frame[3] = 1024 & 0xff;
    memset(frame + 4, 'x', 1024);

    /* A reader a little behind: the socket takes 1,000 bytes (krait__seg_advance, what a
     * flush does after a send) per 1,028-byte message, so the output never drains completely
     * but falls behind by only 56 KB over 2,000 messages (2 MiB, 30 limits). */
    int peer;
    krait__conn *c = ws_conn(srv, &peer);
    ok(c != NULL, "connection");
    size_t most = 0;
    int never_empty = 1;
    krait__ws_append_frame(srv, c, frame, sizeof frame);
    for (int i = 0; i < 2000 && !c->closed && !c->ws_close_sent; i++) {
        krait__seg_advance(c, 1000);
        never_empty &= krait__conn_unsent(c) > 0;
        krait__ws_append_frame(srv, c, frame, sizeof frame);
        if (c->out_cap > most)
            most = c->out_cap;
    }
    ok(never_empty, "its output never drained completely");
    ok(!c->closed && !c->ws_close_sent, "a reader that keeps up is not closed");
    ok(krait__conn_unsent(c) < 2 * LIMIT, "%llu bytes waiting",
       (unsigned long long)krait__conn_unsent(c));
    ok(most <= 4 * LIMIT, "its buffer stayed small: %zu bytes at most", most);
    ok(c->nseg <= 2, "its segments were merged or dropped: %d", c->nseg);
    krait__ws_append_frame(srv, c, frame, sizeof frame);
    ok(krait__conn_flush(srv, c) != KRAIT__FLUSH_FAILED, "what is left goes out");
    ok(drain(peer, 1u << 20) > 0, "the reader gets it");

    /* A reader that stops: closed with 1008 once two limits are waiting. */
    int peer2;
    krait__conn *d = ws_conn(srv, &peer2);
    for (int i = 0; i < 8192 && !d->closed && !d->ws_close_sent; i++) {
        krait__ws_append_frame(srv, d, frame, sizeof frame);
        krait__conn_flush(srv, d);
    }
    ok(d->closed || d->ws_close_sent, "a reader that stopped is closed");
    ok(krait__conn_unsent(d) <= 2 * LIMIT + sizeof frame + 16, "no more was queued: %llu",
       (unsigned long long)krait__conn_unsent(d));

    krait__loop_end(srv);
    krait_server_free(srv);
    close(peer);
    close(peer2);
    rmdir(dir);
    return done();
}
