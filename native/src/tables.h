/* tables.c: the bounded maps (core.h), MIME types, routes decided in C and the caches of the
 * answers Python gives for regex routes and cache rules. */
#ifndef KRAIT_TABLES_H
#define KRAIT_TABLES_H

#include "core.h"

int krait__route_resolve(struct krait_server *srv, int verb, const char *path, size_t len,
                         krait__route_answer *ans);
int krait__cache_flags(struct krait_server *srv, const char *rel, size_t len);
const char *krait__mime_lookup(struct krait_server *srv, const char *name, size_t len);
/* A segment of path[0..len) ('/'-separated) matches a never-serve pattern. */
int krait__never_served(struct krait_server *srv, const char *path, size_t len);
/* rel (root-relative, no leading '/') lies in a static-only folder. */
int krait__static_only(struct krait_server *srv, const char *rel, size_t len);
/* The Host value (port, case ignored) is allowed (always, with no list). */
int krait__host_allowed(struct krait_server *srv, const char *host, size_t len);

#endif
