/* Tiny C test harness: ok(cond, fmt, ...) records a check; done() prints the summary line and
 * returns the exit status. guarded_copy() places bytes right before a PROT_NONE page so that
 * any read past the end faults under the tests. */
#ifndef KRAIT_TEST_HARNESS_H
#define KRAIT_TEST_HARNESS_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int harness_passed, harness_failed;

static void ok_at(int cond, const char *file, int line, const char *fmt, ...)
{
    if (cond) {
        harness_passed++;
        return;
    }
    harness_failed++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
#define ok(cond, ...) ok_at(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

static int done(void)
{
    printf("%d passed, %d failed\n", harness_passed, harness_failed);
    return harness_failed ? 1 : 0;
}

/* A copy of data[0..len) that ends exactly at a PROT_NONE guard page. Free with guarded_free. */
typedef struct { char *map; size_t map_len; char *data; } guarded;

__attribute__((unused)) static guarded guarded_copy(const void *data, size_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t body = (len + (size_t)page - 1) / (size_t)page * (size_t)page;
    guarded g;
    g.map_len = body + (size_t)page;
    g.map = mmap(NULL, g.map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g.map == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    mprotect(g.map + body, (size_t)page, PROT_NONE);
    g.data = g.map + body - len;
    if (len)
        memcpy(g.data, data, len);
    return g;
}

__attribute__((unused)) static void guarded_free(guarded g)
{
    munmap(g.map, g.map_len);
}

#endif
