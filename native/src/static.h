/* static.c: answer a request with a file of the site, decided and served in C. */
#ifndef KRAIT_STATIC_H
#define KRAIT_STATIC_H

#include "core.h"

enum { KRAIT__STATIC_ANSWERED = 0, KRAIT__STATIC_PYTHON = 1 };
/* Answer rq with the file rel names (no leading '/') in the tree t (the site root, or a static
 * folder), appending the response to c: returns KRAIT__STATIC_ANSWERED, or (never for a tree
 * with files_only) KRAIT__STATIC_PYTHON with the script's or template's absolute path in
 * script[0..script_cap) when a worker must answer. */
int krait__static_respond(struct krait_server *srv, krait__conn *c, krait__request *rq,
                          const krait__tree *t, const char *rel, size_t rel_len, char *script,
                          size_t script_cap);

#endif
