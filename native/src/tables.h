/* tables.c: the bounded maps (core.h), MIME types, routes decided in C and the caches of the
 * answers Python gives for regex routes and cache rules. */
#ifndef KRAIT_TABLES_H
#define KRAIT_TABLES_H

#include "core.h"

/* 0 with ans filled, KRAIT__ROUTE_ASK when a worker must decide (a regex route, not cached),
 * or -1. */
#define KRAIT__ROUTE_ASK 1
int krait__route_resolve(struct krait_server *srv, int verb, const char *path, size_t len,
                         krait__route_answer *ans);
/* A worker's answer for (verb, path), cached for every later request. */
int krait__route_store(struct krait_server *srv, int verb, const char *path, size_t len,
                       int route, int allow, const char *target, size_t target_len,
                       const char *params, size_t params_len);
int krait__cache_flags(struct krait_server *srv, const char *rel, size_t len);
const char *krait__mime_lookup(struct krait_server *srv, const char *name, size_t len);
/* A segment of path[0..len) ('/'-separated) matches a never-serve pattern. */
int krait__never_served(struct krait_server *srv, const char *path, size_t len);
/* rel (root-relative, no leading '/') lies in a static-only folder. */
int krait__static_only(struct krait_server *srv, const char *rel, size_t len);
/* The Host value (port, case ignored) is allowed (always, with no list). */
int krait__host_allowed(struct krait_server *srv, const char *host, size_t len);

#endif
