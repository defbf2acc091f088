/* loop.c: the event loop and its driver. krait_server_run (krait.h) is the normal way in;
 * these entry points let the whole-server fuzzer run the real loop one turn at a time on
 * socketpairs, with time that it advances itself. */
#ifndef KRAIT_LOOP_H
#define KRAIT_LOOP_H

#include "core.h"

/* Prepare to run: listeners into epoll; with_signals: take SIGTERM/SIGINT/SIGHUP/SIGCHLD
 * through a signalfd (the calling thread's mask). */
int krait__loop_start(struct krait_server *srv, int with_signals);
/* One turn: wait up to timeout_ms (-1: as long as nothing is due) for events, handle them,
 * run timers and the driver until nothing is left. Returns 1 once a graceful stop is done. */
int krait__loop_turn(struct krait_server *srv, int timeout_ms);
/* Close what is left after the last turn. */
void krait__loop_end(struct krait_server *srv);
/* Take a connected socket as a client connection (TLS when tls and a context is loaded). */
krait__conn *krait__loop_adopt(struct krait_server *srv, int fd, int tls, const char *peer,
                               int peer_port);

#endif
