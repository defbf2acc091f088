/* The core's bounded maps (tables.c): insertion, lookup and deletion against a reference,
 * through many random operations, including deletions that must shift later keys back into
 * their probe chains (backward-shift deletion), growth, and the bound that clears a cache; the
 * cache rules evaluated in C (krait_server_add_cache_rule) and the answers workers give. */
#include "core.h"
#include "harness.h"
#include "krait.h"
#include "tables.h"

#define KEYS 512

static void key_of(int k, char *buf, size_t *len)
{
    *len = (size_t)snprintf(buf, 32, "key-%d-%d", k, k * 7919 % 97);
}

static void test_random_operations(void)
{
    krait__map m = {0};
    int present[KEYS] = {0};
    unsigned seed = 12345;
    for (int step = 0; step < 200000; step++) {
        seed = seed * 1103515245 + 12345;
        int k = (int)((seed >> 8) % KEYS);
        char key[32];
        size_t len;
        key_of(k, key, &len);
        if ((seed >> 20) % 3) {
            krait__map_entry *e = krait__map_put(&m, key, len);
            ok(e != NULL, "put %d", k);
            e->num[0] = k;
            present[k] = 1;
        } else {
            krait__map_del(&m, key, len);
            present[k] = 0;
        }
        if (step % 997 == 0) {
            size_t count = 0;
            for (int j = 0; j < KEYS; j++) {
                key_of(j, key, &len);
                krait__map_entry *e = krait__map_get(&m, key, len);
                if (present[j])
                    count++;
                if (!(present[j] ? e && e->num[0] == j : e == NULL))
                    ok(0, "step %d: key %d %s", step, j, present[j] ? "lost" : "still there");
            }
            ok(m.count == count, "step %d: count %zu, want %zu", step, m.count, count);
        }
    }
    krait__map_free(&m);
}

static void test_bounded_map_clears(void)
{
    krait__map m = {0};
    m.max = 8;
    char key[32];
    size_t len;
    for (int k = 0; k < 8; k++) {
        key_of(k, key, &len);
        krait__map_put(&m, key, len);
    }
    ok(m.count == 8, "full");
    key_of(100, key, &len);
    ok(krait__map_put(&m, key, len) != NULL && m.count == 1, "cleared when the bound is hit");
    key_of(0, key, &len);
    ok(krait__map_get(&m, key, len) == NULL, "the old entries are gone");
    krait__map_free(&m);
}

static int eval(krait_server *srv, const char *rel)
{
    return krait__cache_rules_eval(srv, rel, strlen(rel));
}

/* Rules in C: literal, before.*after, with Rules.cache_flags' order (no-store, private,
 * public, long-term, later ones overriding) and '.' not taking a newline. */
static void test_cache_rules_in_c(void)
{
    char err[256];
    krait_server *srv = krait_server_new("/tmp", err, sizeof err);
    ok(srv != NULL, "server: %s", err);
    if (!srv)
        return;
    ok(eval(srv, "a.css") == 0, "no rules: storable, nothing else");
    ok(krait_server_add_cache_rule(srv, KRAIT_CACHE_NO_STORE, "secret.txt", NULL) == 0, "add");
    ok(krait_server_add_cache_rule(srv, KRAIT_CACHE_PRIVATE, "priv/", "") == 0, "add");
    ok(krait_server_add_cache_rule(srv, KRAIT_CACHE_PUBLIC, "", ".css") == 0, "add");
    ok(krait_server_add_cache_rule(srv, KRAIT_CACHE_LONG, "img/", ".png") == 0, "add");
    ok(krait_server_add_cache_rule(srv, KRAIT_CACHE_NO_STORE, "ab", "ba") == 0, "add");
    ok(krait_server_add_cache_rule(srv, KRAIT_CACHE_LONG, "secret.txt", NULL) == 0, "add");
    ok(krait_server_add_cache_rule(srv, 3, "x", NULL) == KRAIT_EINVAL, "not one list");
    ok(krait_server_add_cache_rule(srv, KRAIT_CACHE_LONG, NULL, "x") == KRAIT_EINVAL, "NULL");
    ok(eval(srv, "secret.txt") == KRAIT_CACHE_LONG, "no-store, overridden by long-term");
    ok(eval(srv, "secret.txtx") == 0 && eval(srv, "xsecret.txt") == 0, "exact is exact");
    ok(eval(srv, "priv/a") == KRAIT_CACHE_PRIVATE, "prefix");
    ok(eval(srv, "priv/") == KRAIT_CACHE_PRIVATE, "prefix, .* empty");
    ok(eval(srv, "priv") == 0, "shorter than the prefix");
    ok(eval(srv, "priv/a.css") == KRAIT_CACHE_PUBLIC, "public overrides private");
    ok(eval(srv, "a.css") == KRAIT_CACHE_PUBLIC && eval(srv, ".css") == KRAIT_CACHE_PUBLIC,
       "suffix");
    ok(eval(srv, "a.cs") == 0, "suffix is a suffix");
    ok(eval(srv, "img/x.png") == KRAIT_CACHE_LONG && eval(srv, "img/.png") == KRAIT_CACHE_LONG,
       "before.*after");
    ok(eval(srv, "img.png") == 0, "before and after may not overlap");
    ok(eval(srv, "aba") == 0 && eval(srv, "abba") == KRAIT_CACHE_NO_STORE, "overlap");
    ok(eval(srv, "priv/a\nb") == 0 && eval(srv, "a\n.css") == 0 &&
       eval(srv, "img/\n.png") == 0, "'.' takes no newline");
    ok(eval(srv, "priv/\n") == 0, "nor at the end");
    ok(krait__cache_rules_eval(srv, "priv/a\0b", 8) == KRAIT_CACHE_PRIVATE, "length, not NUL");

    /* With a regex the core does not evaluate, every file is a question until answered. */
    int flags = -1;
    krait_server_set_cache_questions(srv, 1);
    ok(krait__cache_flags(srv, "a.css", 5, &flags) == KRAIT__CACHE_ASK, "asks");
    ok(krait__cache_store(srv, "a.css", 5, KRAIT_CACHE_PRIVATE) == 0, "stored");
    ok(krait__cache_flags(srv, "a.css", 5, &flags) == 0 && flags == KRAIT_CACHE_PRIVATE,
       "the answer, not the C rules");
    ok(krait__cache_flags(srv, "a.cs", 4, &flags) == KRAIT__CACHE_ASK, "per path");
    krait_server_set_cache_questions(srv, 0);
    ok(krait__cache_flags(srv, "a.cs", 4, &flags) == 0 && flags == 0, "no questions: C");
    krait_server_free(srv);
}

int main(void)
{
    test_cache_rules_in_c();
    (void)guarded_copy;
    (void)guarded_free;
    test_random_operations();
    test_bounded_map_clears();
    return done();
}
