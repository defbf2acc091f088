/* server.c: the API krait.h gives Python (configuration, running the loops). Its one internal
 * entry point lets the whole-server fuzzer drive two loops from one thread. */
#ifndef KRAIT_SERVER_H
#define KRAIT_SERVER_H

#include "core.h"

/* Loop index of hub: its own epoll, lists and caches, the hub's configuration shared. The
 * caller registers it (hub->loops[index]) and runs it; krait_server_free(hub) frees it. */
struct krait_server *krait__server_clone(struct krait_server *hub, int index);

#endif
