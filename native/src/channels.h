/* channels.c: WebSocket channels in the core. A worker subscribes the connections it accepted
 * to named channels; any worker publishes a message once; the core encodes the frame once
 * (and its permessage-deflate form once per window size in use) and queues it on every
 * subscriber, whichever worker owns it. Above wsconn.c, below worker.c. */
#ifndef KRAIT_CHANNELS_H
#define KRAIT_CHANNELS_H

#include "core.h"

/* A WS_SUBSCRIBE, WS_UNSUBSCRIBE or PUBLISH frame (ipc.h) from the worker in slot/gen. */
void krait__chan_frame(struct krait_server *srv, const void *frame, int slot, uint32_t gen);
/* c closed: its subscriptions end with it. */
void krait__chan_conn_gone(struct krait_server *srv, krait__conn *c);
/* Deliver one message to a channel's local subscribers (a worker's PUBLISH, or the relay). */
void krait__chan_publish(struct krait_server *srv, const char *name, size_t name_len, int binary,
                         const char *data, size_t len);
void krait__chan_free_all(struct krait_server *srv);
/* Deliver what other threads handed over with krait_server_publish (the driver). Returns
 * non-zero if there was any. */
int krait__chan_inbox_run(struct krait_server *srv);

#endif
