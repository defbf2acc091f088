/* Open WebSocket connections in the core (RFC 6455): the handshake checks before a worker is
 * asked, the 101 answer, frame input (masking, fragmentation and reassembly, control frames
 * between fragments, ping/pong, UTF-8 validation, size limit, close handshake), server pings on
 * idle connections, and the messages exchanged with the worker that accepted the connection.
 * Frame parsing itself is ws.c's (sans-IO). A data frame's payload is taken as it arrives, so
 * every check (UTF-8 included) fails the connection at the first bad byte. When the client
 * closes or fails the connection, our close frame waits (at most KRAIT__WS_HOLD_MS) for the
 * worker to answer the WS_CLOSE it is sent, so that its answers to the messages before go
 * first. Output is appended and the connection posted; the driver sends it and calls
 * krait__ws_flushed, which finishes a close that waited for it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <zlib.h>

#include "conn.h"
#include "ipc.h"
#include "logjson.h"
#include "response.h"
#include "wio.h"
#include "wsconn.h"

/* permessage-deflate (RFC 7692) with no context takeover either way: each message is a fresh
 * raw-deflate stream, so a connection keeps no 32 KiB window between messages. Messages under
 * this size go out uncompressed (RSV1 clear), which §6.1 allows per message. */
#define DEFLATE_MIN 64

static int param_is(const char *p, size_t n, const char *name)
{
    return n == strlen(name) && strncasecmp(p, name, n) == 0;
}

/* Is this one extension offer (after "permessage-deflate") acceptable? Returns the server
 * window bits to use (9..15), or 0 to decline it (§7.1: unknown or duplicate parameters,
 * bad values, a server window of 8 that zlib cannot honour). */
static int deflate_params(const char *p, const char *end)
{
    int sbits = 15, seen_s = 0, seen_c = 0, seen_snct = 0, seen_cnct = 0;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ';'))
            p++;
        if (p >= end)
            break;
        const char *name = p;
        while (p < end && *p != '=' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t nl = (size_t)(p - name);
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *val = NULL;
        size_t vl = 0;
        if (p < end && *p == '=') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            int quoted = p < end && *p == '"';
            if (quoted)
                p++;
            val = p;
            while (p < end && *p != ';' && *p != '"' && *p != ' ' && *p != '\t')
                p++;
            vl = (size_t)(p - val);
            if (quoted) {
                if (p >= end || *p != '"')
                    return 0;
                p++;
            }
        }
        int bits = -1;
        if (val) {
            if (vl < 1 || vl > 2)
                return 0;
            bits = 0;
            for (size_t i = 0; i < vl; i++) {
                if (val[i] < '0' || val[i] > '9')
                    return 0;
                bits = bits * 10 + (val[i] - '0');
            }
            if ((vl == 2 && val[0] == '0') || bits < 8 || bits > 15)
                return 0;
        }
        if (param_is(name, nl, "server_no_context_takeover")) {
            if (val || seen_snct++)
                return 0;
        } else if (param_is(name, nl, "client_no_context_takeover")) {
            if (val || seen_cnct++)
                return 0;
        } else if (param_is(name, nl, "server_max_window_bits")) {
            if (!val || seen_s++ || bits < 9)
                return 0;
            sbits = bits;
        } else if (param_is(name, nl, "client_max_window_bits")) {
            if (seen_c++)
                return 0;
        } else {
            return 0;
        }
    }
    return sbits;
}

/* Walk every Sec-WebSocket-Extensions field; accept the first usable permessage-deflate offer. */
static int deflate_offer(krait_server *srv)
{
    for (size_t i = 0; i < srv->nhdr; i++) {
        const krait__header *h = &srv->hdr[i];
        if (!param_is(h->name, h->name_len, "sec-websocket-extensions"))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            const char *ext = p;
            int inq = 0;
            while (p < end && (inq || *p != ',')) {
                if (*p == '"')
                    inq = !inq;
                p++;
            }
            const char *ext_end = p;
            if (p < end)
                p++;
            while (ext < ext_end && (*ext == ' ' || *ext == '\t'))
                ext++;
            const char *semi = memchr(ext, ';', (size_t)(ext_end - ext));
            const char *name_end = semi ? semi : ext_end;
            while (name_end > ext && (name_end[-1] == ' ' || name_end[-1] == '\t'))
                name_end--;
            if (!param_is(ext, (size_t)(name_end - ext), "permessage-deflate"))
                continue;
            int sbits = deflate_params(semi ? semi : ext_end, ext_end);
            if (sbits)
                return sbits;
        }
    }
    return 0;
}

void krait__ws_free(krait__conn *c)
{
    if (c->ws_inflate) {
        inflateEnd(c->ws_inflate);
        free(c->ws_inflate);
        c->ws_inflate = NULL;
    }
    if (c->ws_deflater) {
        deflateEnd(c->ws_deflater);
        free(c->ws_deflater);
        c->ws_deflater = NULL;
    }
}

/* RFC 6455 §4.2.1: GET, HTTP/1.1, Upgrade/Connection (checked by the parser), version 13, a
 * key that is base64 of 16 bytes, no body. Returns 0 to go on, or answers 400/426 itself. */
int krait__ws_handshake_check(krait_server *srv, krait__conn *c, krait__request *rq)
{
    const krait__header *ver = krait__find_header(srv, "sec-websocket-version");
    const krait__header *key = krait__find_header(srv, "sec-websocket-key");
    char accept[KRAIT__WS_ACCEPT_LEN + 1];
    int is_get = rq->method_len == 3 && memcmp(rq->method, "GET", 3) == 0;
    if (!is_get || rq->version_minor != 1 || rq->has_body || !key ||
        key->value_len >= sizeof c->ws_key ||
        krait__ws_accept(key->value, key->value_len, accept) < 0) {
        krait__error(srv, c, rq, 400, 1);
        return -1;
    }
    if (!ver || ver->value_len != 2 || memcmp(ver->value, "13", 2) != 0) {
        /* §4.4: tell the client which version we speak. */
        size_t from = c->out_len;
        c->keep_alive = 0;
        krait__resp_start(srv, c, 426);
        krait__out_str(c, "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n"
                          "Content-Type: text/html; charset=utf-8\r\n");
        static const char body[] = "<html><body><h1>426 Upgrade Required</h1></body></html>";
        krait__resp_end_headers(srv, c, (int64_t)sizeof body - 1);
        krait__out_add(c, body, sizeof body - 1);
        krait__seg_mem(c, from);
        krait__log_begin(srv, c, rq, 426, sizeof body - 1);
        return -1;
    }
    memcpy(c->ws_key, key->value, key->value_len);
    c->ws_key[key->value_len] = '\0';
    c->ws_deflate = deflate_offer(srv);
    return 0;
}

static uint32_t ws_id(krait__conn *c);

/* The worker accepted (status 101): answer with Sec-WebSocket-Accept and its headers. */
void krait__ws_accept_response(krait_server *srv, krait__conn *c, const void *frame)
{
    const krait__ipc_frame *f = frame;
    char accept[KRAIT__WS_ACCEPT_LEN + 1];
    krait__ws_accept(c->ws_key, strlen(c->ws_key), accept);
    size_t from = c->out_len;
    krait__resp_start(srv, c, 101);
    krait__out_str(c, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    krait__out_str(c, accept);
    krait__out_add(c, "\r\n", 2);
    if (c->ws_deflate) {
        krait__out_str(c, "Sec-WebSocket-Extensions: permessage-deflate; "
                          "server_no_context_takeover; client_no_context_takeover");
        if (c->ws_deflate < 15) {
            krait__out_str(c, "; server_max_window_bits=");
            krait__out_u64(c, (uint64_t)c->ws_deflate);
        }
        krait__out_add(c, "\r\n", 2);
    }
    const uint8_t *at = f->headers_at;
    krait__slice rid = {NULL, 0};
    for (size_t i = 0; i < f->nheaders; i++) {
        krait__slice name, value;
        krait__ipc_next_pair(&at, &name, &value);
        /* The worker's request id, as the access log takes it (the last valid one, 1-128 of
         * [A-Za-z0-9-_.:+/=]): the same id on the 101 as in the log and on every answer. */
        if (name.n == 12 && strncasecmp(name.p, "x-request-id", 12) == 0) {
            if (krait__request_id_ok(value.p, value.n))
                rid = value;
            continue;
        }
        /* Only what a handshake answer may carry from the script. */
        if (!(name.n == 22 && strncasecmp(name.p, "sec-websocket-protocol", 22) == 0) &&
            !(name.n == 10 && strncasecmp(name.p, "set-cookie", 10) == 0))
            continue;
        if (!krait__header_ok(&name, &value))
            continue;
        krait__out_add(c, name.p, name.n);
        krait__out_add(c, ": ", 2);
        krait__out_add(c, value.p, value.n);
        krait__out_add(c, "\r\n", 2);
    }
    if (rid.p) {
        krait__out_str(c, "X-Request-ID: ");
        krait__out_add(c, rid.p, rid.n);
        krait__out_add(c, "\r\n", 2);
    }
    krait__out_add(c, "\r\n", 2);
    krait__seg_mem(c, from);
    c->ws_pending = 1;
    c->keep_alive = 1;
    /* Known by id from now on: the controller may send before the 101 has left. */
    uint32_t id = ws_id(c);
    krait__map_entry *e = krait__map_put(&srv->ws_ids, (const char *)&id, sizeof id);
    if (e)
        e->num[0] = (int64_t)(intptr_t)c;
    else
        c->broken = 1;  /* unreachable by its worker: better closed than deaf */
}

/* Compress data into the output buffer after a 10-byte hole for the header. Returns the
 * compressed length, or -1 to send the message uncompressed. */
static long deflate_into(krait__conn *c, const char *data, size_t len, size_t at)
{
    if (!c->ws_deflater) {
        c->ws_deflater = calloc(1, sizeof *c->ws_deflater);
        if (!c->ws_deflater || deflateInit2(c->ws_deflater, 6, Z_DEFLATED, -c->ws_deflate, 8,
                                            Z_DEFAULT_STRATEGY) != Z_OK) {
            free(c->ws_deflater);
            c->ws_deflater = NULL;
            return -1;
        }
    } else {
        deflateReset(c->ws_deflater);  /* server_no_context_takeover */
    }
    z_stream *z = c->ws_deflater;
    size_t bound = deflateBound(z, len) + 16;
    if (krait__out_reserve(c, at - c->out_len + bound) < 0)
        return -1;
    z->next_in = (Bytef *)data;
    z->avail_in = (uInt)len;
    z->next_out = (Bytef *)c->out + at;
    z->avail_out = (uInt)(c->out_cap - at);
    if (deflate(z, Z_SYNC_FLUSH) != Z_OK || z->avail_in != 0)
        return -1;
    size_t n = (size_t)((char *)z->next_out - (c->out + at));
    /* §7.2.1: drop the 00 00 ff ff tail of the sync flush. */
    if (n < 4)
        return -1;
    return (long)(n - 4);
}

static void ws_send(krait_server *srv, krait__conn *c, int opcode, const char *data, size_t len)
{
    (void)srv;
    if (c->closed || c->ws_close_sent)
        return;
    uint8_t head[10];
    if (c->ws_deflate && opcode < 8 && len >= DEFLATE_MIN && len <= UINT32_MAX) {
        krait__out_compact(c);
        size_t from = c->out_len;
        long n = deflate_into(c, data, len, from + 10);
        if (n >= 0) {
            size_t hn = krait__ws_write_header(head, 1, 1, opcode, (uint64_t)n);
            /* Place the header right before the compressed bytes. */
            memcpy(c->out + from + 10 - hn, head, hn);
            memmove(c->out + from, c->out + from + 10 - hn, hn + (size_t)n);
            c->out_len = from + hn + (size_t)n;
            krait__seg_mem(c, from);
            return;
        }
    }
    size_t hn = krait__ws_write_header(head, 1, 0, opcode, len);
    /* Drop what was already sent from the buffer before appending, so it never grows with
     * the connection's whole history (also while it never drains completely). */
    krait__out_compact(c);
    size_t from = c->out_len;
    krait__out_add(c, (const char *)head, hn);
    krait__out_add(c, data, len);
    krait__seg_mem(c, from);
}

static uint32_t ws_id(krait__conn *c)
{
    return c->req_id;
}

static void unmap(krait_server *srv, krait__conn *c)
{
    uint32_t id = ws_id(c);
    krait__map_entry *e = krait__map_get(&srv->ws_ids, (const char *)&id, sizeof id);
    if (e && e->num[0] == (int64_t)(intptr_t)c)
        krait__map_del(&srv->ws_ids, (const char *)&id, sizeof id);
}

/* Close from our side: a close frame with this payload (a code and a reason, or nothing), the
 * worker told notify_code (0: not told). Failing the connection (RFC 6455 §7.1.7) ends TCP
 * as soon as the frame is out, and reads nothing more. A clean close we start (linger) sends
 * the frame and a FIN (§7.1.1: the server closes TCP first), then goes on reading until the
 * client's close frame or EOF, within one ping interval: closing the socket with the
 * client's reply unread would reset the connection and could destroy our close frame before
 * the client reads it. */
static void send_held_close(krait_server *srv, krait__conn *c);

static void close_with(krait_server *srv, krait__conn *c, const uint8_t *payload, size_t n,
                       int notify_code, int linger)
{
    if (c->closed)
        return;
    if (c->ws_hold) {
        /* The client already closed or failed: its close code stands, and goes out now. */
        send_held_close(srv, c);
        return;
    }
    if (!c->ws_close_sent) {
        ws_send(srv, c, KRAIT__WS_CLOSE, (const char *)payload, n);
        c->ws_close_sent = 1;
    }
    if (notify_code && !c->ws_notified) {
        krait__wio_send_ws(srv, c, KRAIT__IPC_WS_CLOSE, (unsigned)notify_code, "", 0);
        c->ws_notified = 1;
    }
    if (!linger || c->state != CS_WS || c->ws_close_after_flush)
        c->ws_close_after_flush = 1;
    else
        c->ws_linger = 1;  /* once the frame is out: half-close and wait (krait__ws_flushed) */
    krait__conn_post(srv, c);
}

/* The close frame a client's close or failure waits to send: out now, then TCP ends. */
static void send_held_close(krait_server *srv, krait__conn *c)
{
    c->ws_hold = 0;
    if (!c->ws_close_sent) {
        ws_send(srv, c, KRAIT__WS_CLOSE, (const char *)c->ws_hold_payload,
                (size_t)c->ws_hold_len);
        c->ws_close_sent = 1;
    }
    c->ws_close_after_flush = 1;
    /* Bounds the wait for a client that does not read (krait__ws_timer closes). */
    krait__timer_set(srv, c, TL_WS);
    krait__conn_post(srv, c);
}

/* The client ended the conversation: its close frame (payload: the code to echo, or
 * nothing), or a frame that fails the connection (RFC 6455 §7.1.7; payload: our code).
 * Nothing it sends from now on is acted on: its bytes are read (so that it sees our close
 * frame, not a reset) and dropped. The worker is told after the messages that came before,
 * which it may still be answering, and our close frame waits for its WS_CLOSE back, at most
 * KRAIT__WS_HOLD_MS: what the worker sends meanwhile goes out first, so the answers to those
 * messages reach the client before the close (§5.5.1 allows the delay: "an endpoint MAY
 * delay sending a Close frame until its current message is sent"). */
static void close_after_worker(krait_server *srv, krait__conn *c, const uint8_t *payload,
                               size_t n, int notify_code, const char *reason,
                               size_t reason_len)
{
    c->ws_input_over = 1;
    c->in_len = 0;
    c->ws_in_frame = 0;
    memcpy(c->ws_hold_payload, payload, n);
    c->ws_hold_len = (int)n;
    int told = 0;
    if (!c->ws_notified) {
        told = krait__wio_send_ws(srv, c, KRAIT__IPC_WS_CLOSE, (unsigned)notify_code, reason,
                                  reason_len) == 0;
        c->ws_notified = 1;
    }
    if (told && !c->ws_close_sent) {
        c->ws_hold = 1;
        krait__timer_set(srv, c, TL_WS_HOLD);
        if (c->nseg)
            krait__conn_post(srv, c);  /* a pong answered before the end goes now */
        return;
    }
    send_held_close(srv, c);
}

void krait__ws_flushed(krait_server *srv, krait__conn *c)
{
    if (c->ws_close_after_flush) {
        krait__conn_finish(srv, c);
        return;
    }
    if (c->ws_linger) {
        c->ws_linger = 0;
        shutdown(c->fd, SHUT_WR);
        krait__timer_set(srv, c, TL_WS);
    }
}

void krait__ws_blocked(krait_server *srv, krait__conn *c)
{
    (void)srv;
    if (c->ws_linger) {
        c->ws_linger = 0;
        c->ws_close_after_flush = 1;  /* the client is not reading: no point waiting for it */
    }
}

void krait__ws_close(krait_server *srv, krait__conn *c, int code, int notify_code)
{
    uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    close_with(srv, c, payload, code ? 2 : 0, notify_code, 0);
}

/* A clean close we start (the controller asked, the worker died, the server stops). */
static void ws_close_clean(krait_server *srv, krait__conn *c, int code, const char *reason,
                           size_t reason_len, int notify_code)
{
    /* RFC 6455 §5.5: a control frame payload is at most 125 bytes, so the reason at most
     * 123. A code an endpoint may not send (§7.4.1/§7.4.2) or a reason that is not UTF-8
     * (§5.5.1) is not passed on: the client would have to fail the connection. */
    uint8_t payload[125] = {(uint8_t)(code >> 8), (uint8_t)code};
    size_t n = 2;
    int bad = 0;
    if (reason_len > 0 && reason_len <= 123) {
        memcpy(payload + 2, reason, reason_len);
        n += reason_len;
    }
    if (krait__ws_check_close(payload, n, &bad) < 0) {
        n = 2;
        if (krait__ws_check_close(payload, n, &bad) < 0) {
            payload[0] = 1011 >> 8;
            payload[1] = 1011 & 0xFF;
        }
    }
    close_with(srv, c, payload, n, notify_code, 1);
}

void krait__ws_begin(krait_server *srv, krait__conn *c)
{
    c->ws_pending = 0;
    c->state = CS_WS;
    KRAIT__STAT_ADD(srv, KRAIT_STAT_WS_OPEN, 1);  /* until krait__ws_gone */
    c->ws_key[0] = '\0';
    if (c->ws_close_after_flush) {
        /* The controller closed before the 101 was even out; that close frame is sent too. */
        krait__conn_finish(srv, c);
        return;
    }
    krait__timer_set(srv, c, TL_WS);
    if (c->in_len)
        krait__ws_input(srv, c);
    if (c->ws_linger || c->nseg)
        krait__conn_post(srv, c);
}

/* Inflate the assembled message (§7.2.2: append 00 00 ff ff) into a fresh buffer, never
 * beyond the message limit: a small compressed frame must not become gigabytes (1009). */
static int inflate_message(krait_server *srv, krait__conn *c)
{
    if (!c->ws_inflate) {
        c->ws_inflate = calloc(1, sizeof *c->ws_inflate);
        if (!c->ws_inflate || inflateInit2(c->ws_inflate, -15) != Z_OK) {
            free(c->ws_inflate);
            c->ws_inflate = NULL;
            return 1011;
        }
    } else {
        inflateReset(c->ws_inflate);  /* client_no_context_takeover */
    }
    static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
    size_t limit = (size_t)srv->limits[KRAIT_LIMIT_WS_MESSAGE];
    size_t cap = c->body_len * 4 + 1024;
    if (cap > limit + 1)
        cap = limit + 1;
    char *out = malloc(cap);
    if (!out)
        return 1011;
    z_stream *z = c->ws_inflate;
    size_t produced = 0;
    for (int part = 0; part < 2; part++) {
        z->next_in = part ? (Bytef *)tail : (Bytef *)c->body;
        z->avail_in = part ? 4 : (uInt)c->body_len;
        while (z->avail_in) {
            if (produced == cap) {
                if (cap > limit) {
                    free(out);
                    return 1009;
                }
                size_t ncap = cap * 2 > limit + 1 ? limit + 1 : cap * 2;
                char *p = realloc(out, ncap);
                if (!p) {
                    free(out);
                    return 1011;
                }
                out = p;
                cap = ncap;
            }
            z->next_out = (Bytef *)out + produced;
            z->avail_out = (uInt)(cap - produced);
            int r = inflate(z, Z_SYNC_FLUSH);
            produced = (size_t)((char *)z->next_out - out);
            if (r == Z_STREAM_END)
                break;
            if (r != Z_OK && r != Z_BUF_ERROR) {
                free(out);
                return 1007;  /* §8.1-style: data that cannot be decoded */
            }
            if (r == Z_BUF_ERROR && z->avail_out)
                break;
        }
    }
    if (produced > limit) {
        free(out);
        return 1009;
    }
    if (c->ws_msg_op == KRAIT__WS_TEXT &&
        (krait__utf8_feed(&c->ws_utf8, (const uint8_t *)out, produced) < 0 ||
         !krait__utf8_complete(&c->ws_utf8))) {
        free(out);
        return 1007;
    }
    free(c->body);
    c->body = out;
    c->body_cap = cap;
    c->body_len = produced;
    return 0;
}

static int deliver_message(krait_server *srv, krait__conn *c)
{
    if (c->ws_msg_compressed) {
        int rc = inflate_message(srv, c);
        if (rc)
            return rc;
    } else if (c->ws_msg_op == KRAIT__WS_TEXT && !krait__utf8_complete(&c->ws_utf8)) {
        return 1007;
    }
    if (!c->ws_notified) {
        krait__wio_send_ws(srv, c, KRAIT__IPC_WS_MESSAGE, c->ws_msg_op == KRAIT__WS_TEXT ? 1 : 2,
                           c->body ? c->body : "", c->body_len);
        KRAIT__STAT_ADD(srv, KRAIT_STAT_WS_IN, 1);
    }
    c->ws_msg_op = 0;
    c->body_len = 0;
    if (c->body_cap > (1u << 20)) {
        free(c->body);
        c->body = NULL;
        c->body_cap = 0;
    }
    return 0;
}

static int append_payload(krait_server *srv, krait__conn *c, const uint8_t *p, size_t n)
{
    if ((int64_t)(c->body_len + n) > srv->limits[KRAIT_LIMIT_WS_MESSAGE])
        return 1009;
    if (c->ws_msg_op == KRAIT__WS_TEXT && !c->ws_msg_compressed &&
        krait__utf8_feed(&c->ws_utf8, p, n) < 0)
        return 1007;
    if (c->body_len + n > c->body_cap) {
        size_t ncap = c->body_cap ? c->body_cap : 4096;
        while (ncap < c->body_len + n)
            ncap *= 2;
        char *b = realloc(c->body, ncap);
        if (!b)
            return 1011;
        c->body = b;
        c->body_cap = ncap;
    }
    if (n)
        memcpy(c->body + c->body_len, p, n);
    c->body_len += n;
    return 0;
}

/* A data frame's head has arrived: every check that needs no payload byte, at once. Returns
 * 0 (its payload is read as it comes, data_frame_bytes) or a close code. */
static int data_frame_begin(krait_server *srv, krait__conn *c, const krait__ws_frame *f)
{
    if (f->opcode != KRAIT__WS_CONT) {
        if (c->ws_msg_op)
            return 1002;  /* §5.4: a new message inside a fragmented one */
        c->ws_msg_op = f->opcode;
        c->ws_msg_compressed = (f->rsv & 4) != 0;
        memset(&c->ws_utf8, 0, sizeof c->ws_utf8);
        c->body_len = 0;
    } else {
        if (!c->ws_msg_op)
            return 1002;  /* a continuation with nothing to continue */
        if (f->rsv & 4)
            return 1002;  /* RFC 7692 §6.1: RSV1 only on a message's first frame */
    }
    /* The message would outgrow the limit: refused before its bytes are read. */
    if ((int64_t)(c->body_len + f->payload_len) > srv->limits[KRAIT_LIMIT_WS_MESSAGE])
        return 1009;
    c->ws_in_frame = 1;
    c->ws_frame_fin = f->fin;
    memcpy(c->ws_frame_mask, f->mask, 4);
    c->ws_frame_pos = 0;
    c->ws_frame_left = f->payload_len;
    return 0;
}

/* Payload bytes of the data frame in progress, as they arrive: unmasked, checked and added to
 * the message. The text of an uncompressed message is validated byte by byte here, so
 * invalid UTF-8 fails the connection as soon as it arrives, even in a frame whose end has not
 * (§8.1: "MUST Fail the WebSocket Connection" once invalid data is received). Compressed
 * text is validated once inflated (deliver_message). */
static int data_frame_bytes(krait_server *srv, krait__conn *c, uint8_t *p, size_t n)
{
    krait__ws_unmask(p, n, c->ws_frame_mask, c->ws_frame_pos);
    c->ws_frame_pos += n;
    c->ws_frame_left -= n;
    int rc = append_payload(srv, c, p, n);
    if (rc || c->ws_frame_left)
        return rc;
    c->ws_in_frame = 0;
    return c->ws_frame_fin ? deliver_message(srv, c) : 0;
}

/* Handle one complete control frame; returns 0, -1 once the client's close frame is handled,
 * or a close code to fail the connection with. */
static int control_frame(krait_server *srv, krait__conn *c, const krait__ws_frame *f,
                         uint8_t *payload)
{
    size_t n = (size_t)f->payload_len;
    if (f->rsv)
        return 1002;  /* control frames are never compressed */
    switch (f->opcode) {
    case KRAIT__WS_PING:
        /* A client that pings and does not read would have us buffer its pongs without
         * end: the same bound as the worker's messages (krait__ws_from_worker), 1008. */
        if ((int64_t)krait__conn_unsent(c) > 2 * srv->limits[KRAIT_LIMIT_WS_MESSAGE])
            return 1008;
        ws_send(srv, c, KRAIT__WS_PONG, (const char *)payload, n);  /* §5.5.2 */
        return 0;
    case KRAIT__WS_PONG:
        return 0;
    case KRAIT__WS_CLOSE: {
        int code = 0;
        if (krait__ws_check_close(payload, n, &code) < 0)
            return code ? code : 1002;
        int peer = n >= 2 ? (payload[0] << 8 | payload[1]) : 1005;
        /* §5.5.1: answer with a close frame echoing the status code, then end TCP. */
        close_after_worker(srv, c, payload, n >= 2 ? 2 : 0, peer,
                           n > 2 ? (const char *)payload + 2 : "", n > 2 ? n - 2 : 0);
        return -1;
    }
    default:
        return 1002;
    }
}

/* Frames in c->in. A data frame's payload is consumed as it arrives (data_frame_bytes), so
 * c->in only ever holds a partial frame head or control frame (at most 139 bytes) between
 * reads; a control frame is handled once whole. */
void krait__ws_input(krait_server *srv, krait__conn *c)
{
    if (c->ws_input_over) {
        c->in_len = 0;  /* after the client's close or a failure: read, never acted on */
        return;
    }
    size_t off = 0;
    int fail = 0;
    while (!c->closed && !fail && !c->ws_input_over) {
        if (c->ws_in_frame) {
            size_t n = c->in_len - off;
            if (n > c->ws_frame_left)
                n = (size_t)c->ws_frame_left;
            if (!n && c->ws_frame_left)
                break;  /* wait for more of the payload */
            if (n)
                c->ws_ping_out = 0;
            fail = data_frame_bytes(srv, c, (uint8_t *)c->in + off, n);
            off += n;
            continue;
        }
        if (off >= c->in_len)
            break;
        krait__ws_frame f;
        int code = 0;
        int allowed_rsv = c->ws_deflate ? 4 : 0;
        int hl = krait__ws_parse_header((const uint8_t *)c->in + off, c->in_len - off, 1,
                                        allowed_rsv,
                                        (uint64_t)srv->limits[KRAIT_LIMIT_WS_MESSAGE], &f, &code);
        if (hl == KRAIT__NEED_MORE)
            break;
        if (hl < 0) {
            fail = code ? code : 1002;
            break;
        }
        c->ws_ping_out = 0;
        if (!(f.opcode & 0x8)) {
            off += (size_t)hl;
            fail = data_frame_begin(srv, c, &f);  /* its payload: the next rounds */
            continue;
        }
        if (c->in_len - off - (size_t)hl < f.payload_len)
            break;  /* a control frame (at most 125 bytes) is handled whole */
        uint8_t *payload = (uint8_t *)c->in + off + hl;
        krait__ws_unmask(payload, (size_t)f.payload_len, f.mask, 0);
        off += (size_t)hl + (size_t)f.payload_len;
        int rc = control_frame(srv, c, &f, payload);
        if (rc > 0)
            fail = rc;
    }
    if (c->closed || c->ws_input_over)
        return;  /* the client's close frame: close_after_worker dropped the input */
    if (fail) {
        /* §7.1.7: fail the connection; nothing after the bad byte is acted on. */
        uint8_t payload[2] = {(uint8_t)(fail >> 8), (uint8_t)fail};
        close_after_worker(srv, c, payload, 2, fail, "", 0);
        return;
    }
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    /* Input re-arms the idle ping, but never extends the wait for an answer to our close. */
    if (!c->ws_close_after_flush && !c->ws_close_sent)
        krait__timer_set(srv, c, TL_WS);
    if (c->nseg || c->ws_close_after_flush)
        krait__conn_post(srv, c);
}

/* A WS_MESSAGE or WS_CLOSE from a worker: only for a connection that worker accepted. */
void krait__ws_from_worker(krait_server *srv, const void *frame, int slot, uint32_t gen)
{
    const krait__ipc_frame *f = frame;
    uint32_t id = f->id;
    krait__map_entry *e = krait__map_get(&srv->ws_ids, (const char *)&id, sizeof id);
    krait__conn *c = e ? (krait__conn *)(intptr_t)e->num[0] : NULL;
    if (!c || c->closed || (c->state != CS_WS && !c->ws_pending) || c->worker != slot ||
        c->worker_gen != gen)
        return;  /* the connection is gone: the controller learns it from our WS_CLOSE */
    if (f->type == KRAIT__IPC_WS_CLOSE) {
        if (c->ws_hold) {
            /* The worker's answer to our WS_CLOSE (or its own close, crossing it): what it
             * sent before is queued, our close frame follows it. */
            send_held_close(srv, c);
            return;
        }
        if (c->ws_close_sent)
            return;  /* closing already: an answer to a WS_CLOSE we sent */
        c->ws_notified = 1;  /* the worker knows: it asked */
        ws_close_clean(srv, c, f->status ? f->status : 1000, f->body.p, f->body.n, 0);
        return;
    }
    /* Never let one slow client hold unbounded output: beyond twice the message limit
     * not yet taken, the connection is closed (1008, policy). */
    if ((int64_t)krait__conn_unsent(c) > 2 * srv->limits[KRAIT_LIMIT_WS_MESSAGE]) {
        krait__ws_close(srv, c, 1008, 1008);
        return;
    }
    if (!c->ws_close_sent)
        KRAIT__STAT_ADD(srv, KRAIT_STAT_WS_OUT, 1);  /* ws_send drops it after our close */
    ws_send(srv, c, f->body_kind == 1 ? KRAIT__WS_TEXT : KRAIT__WS_BINARY, f->body.p, f->body.n);
    krait__conn_post(srv, c);
}

/* Idle: ping; still no answer one interval later: the peer is gone. */
void krait__ws_timer(krait_server *srv, krait__conn *c)
{
    if (c->ws_hold) {
        send_held_close(srv, c);  /* the worker did not answer in time: close anyway */
        return;
    }
    if (c->ws_close_after_flush || c->ws_close_sent || c->ws_ping_out) {
        krait__conn_close(srv, c);  /* no pong, or no answer to our close frame */
        return;
    }
    c->ws_ping_out = 1;
    ws_send(srv, c, KRAIT__WS_PING, "krait", 5);
    krait__timer_set(srv, c, TL_WS);
    krait__conn_post(srv, c);
}

/* The connection is being closed (any cause): tell the worker once, forget the id. */
void krait__ws_gone(krait_server *srv, krait__conn *c)
{
    if (c->state != CS_WS && !c->ws_pending)
        return;
    if (c->state == CS_WS)
        KRAIT__STAT_ADD(srv, KRAIT_STAT_WS_OPEN, -1);  /* counted open by krait__ws_begin */
    if (!c->ws_notified)
        krait__wio_send_ws(srv, c, KRAIT__IPC_WS_CLOSE, 1006, "", 0);
    c->ws_notified = 1;
    unmap(srv, c);
}

void krait__ws_worker_died(krait_server *srv, int slot, int code)
{
    for (krait__link *l = srv->conns.next; l != &srv->conns;) {
        krait__conn *c = KRAIT__CONTAINER(l, krait__conn, all);
        l = l->next;
        if ((c->state == CS_WS || c->ws_pending) && c->worker == slot && !c->closed) {
            c->ws_notified = 1;
            c->worker = -1;
            ws_close_clean(srv, c, code, "", 0, 0);
        }
    }
}

void krait__ws_drain(krait_server *srv)
{
    for (krait__link *l = srv->conns.next; l != &srv->conns;) {
        krait__conn *c = KRAIT__CONTAINER(l, krait__conn, all);
        l = l->next;
        if (c->state == CS_WS && !c->closed)
            ws_close_clean(srv, c, 1001, "", 0, 1001);  /* going away */
    }
}

krait__conn *krait__ws_conn_of(krait_server *srv, uint32_t id, int slot, uint32_t gen)
{
    krait__map_entry *e = krait__map_get(&srv->ws_ids, (const char *)&id, sizeof id);
    krait__conn *c = e ? (krait__conn *)(intptr_t)e->num[0] : NULL;
    if (!c || c->closed || (c->state != CS_WS && !c->ws_pending) || c->worker != slot ||
        c->worker_gen != gen)
        return NULL;
    return c;
}

void krait__ws_append_frame(krait_server *srv, krait__conn *c, const uint8_t *frame, size_t n)
{
    if (c->closed || c->ws_close_sent || (c->state != CS_WS && !c->ws_pending))
        return;
    /* What it has not taken yet, not what was queued since its buffer last drained: a reader
     * that is always a little behind is not a subscriber that does not read. */
    if ((int64_t)krait__conn_unsent(c) > 2 * srv->limits[KRAIT_LIMIT_WS_MESSAGE]) {
        krait__ws_close(srv, c, 1008, 1008);  /* a subscriber that does not read */
        return;
    }
    krait__out_compact(c);
    size_t from = c->out_len;
    krait__out_add(c, (const char *)frame, n);
    krait__seg_mem(c, from);
    KRAIT__STAT_ADD(srv, KRAIT_STAT_WS_OUT, 1);
    krait__conn_post(srv, c);
}
