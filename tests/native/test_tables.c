/* The core's bounded maps (tables.c): insertion, lookup and deletion against a reference,
 * through many random operations, including deletions that must shift later keys back into
 * their probe chains (backward-shift deletion), growth, and the bound that clears a cache. */
#include "core.h"
#include "harness.h"

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

int main(void)
{
    (void)guarded_copy;
    (void)guarded_free;
    test_random_operations();
    test_bounded_map_clears();
    return done();
}
