/* What the libFuzzer drivers share: CHECK(cond), which reports the failed condition with its
 * file and line and aborts, so that libFuzzer keeps the input that broke an invariant. */
#ifndef KRAIT_FUZZ_COMMON_H
#define KRAIT_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

#endif
