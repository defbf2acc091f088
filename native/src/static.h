/* static.c: answer a request with a file of the site, decided and served in C. */
#ifndef KRAIT_STATIC_H
#define KRAIT_STATIC_H

#include "core.h"

enum { KRAIT__STATIC_ANSWERED = 0, KRAIT__STATIC_PYTHON = 1, KRAIT__STATIC_CACHE_ASK = 2 };
/* Answer rq with the file rel names (no leading '/') in the tree t (the site root, or a static
 * folder), appending the response to c: returns KRAIT__STATIC_ANSWERED; (never for a tree
 * with files_only) KRAIT__STATIC_PYTHON with the script's or template's absolute path in
 * script[0..script_cap) when a worker must answer; or KRAIT__STATIC_CACHE_ASK with the name
 * the cache rules see (root-relative, or the URL path in a static folder) in script when a
 * worker must say which rules apply to it (nothing is answered then; c->cache_asked with
 * c->cache_answer gives the answer on the next try). */
int krait__static_respond(struct krait_server *srv, krait__conn *c, krait__request *rq,
                          const krait__tree *t, const char *rel, size_t rel_len, char *script,
                          size_t script_cap);

#endif
