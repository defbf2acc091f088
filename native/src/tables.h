/* tables.c: the bounded maps (core.h), MIME types, routes and cache rules decided in C and
 * the caches of the answers workers give for regex routes and regex cache rules. */
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
/* The KRAIT_CACHE_* flags of the file rel (root-relative): 0 with *flags set, or
 * KRAIT__CACHE_ASK when a worker must decide (a regex rule, no answer cached on this loop nor
 * the hub). */
#define KRAIT__CACHE_ASK 1
int krait__cache_flags(struct krait_server *srv, const char *rel, size_t len, int *flags);
/* The flags the rules evaluated in C give rel. */
int krait__cache_rules_eval(struct krait_server *srv, const char *rel, size_t len);
/* A worker's answer for rel, cached on the hub (srv) for every loop. */
int krait__cache_store(struct krait_server *srv, const char *rel, size_t len, int flags);
const char *krait__mime_lookup(struct krait_server *srv, const char *name, size_t len);
/* A segment of path[0..len) ('/'-separated) matches a never-serve pattern. */
int krait__never_served(struct krait_server *srv, const char *path, size_t len);
/* rel (root-relative, no leading '/') lies in a static-only folder. */
int krait__static_only(struct krait_server *srv, const char *rel, size_t len);
/* The Host value (port, case ignored) is allowed (always, with no list). */
int krait__host_allowed(struct krait_server *srv, const char *host, size_t len);

#endif
