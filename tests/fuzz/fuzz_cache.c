/* libFuzzer driver for native/src/cache.c: every parser in cache.h gets hostile bytes, and the
 * results are checked against invariants (dates round-trip, matches are consistent between
 * If-Match and If-None-Match, ranges are inside the size, sorted, disjoint and at most cap).
 * Seeds live in tests/fuzz/corpus/cache/.
 *
 * Input layout: byte 0 chooses the cap (low 5 bits) and how the size is derived (high 2
 * bits); bytes 1..8 are a little-endian u64 for the size, the clock and a timestamp; the rest
 * is "ETAG\nFIELD" (our entity-tag, then the field value) or just FIELD, with our tag made by
 * krait__etag_make. Each piece is copied into its own exact-size allocation so that ASan
 * catches a read one byte past it. */
#include "cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

#define MAX_CAP 32

/* The instants an IMF-fixdate can spell (years 0000..9999). */
#define DATE_MIN ((int64_t)-62167219200)
#define DATE_MAX ((int64_t)253402300799)

static char *dup_exact(const uint8_t *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (!c)
        abort();
    if (n)
        memcpy(c, p, n);
    return c;
}

static void trim(const char **s, size_t *len)
{
    while (*len && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

static void fuzz_dates(const char *f, size_t len, time_t now, const char *etag, size_t elen)
{
    time_t t, t2;
    char out[KRAIT__DATE_LEN + 1], again[KRAIT__DATE_LEN + 1];

    int rc = krait__http_date_parse_at(f, len, now, &t);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        /* Any parsed instant formats to a date that parses back to itself. */
        CHECK((int64_t)t >= DATE_MIN - 3153600000LL && (int64_t)t <= DATE_MAX + 3153600000LL);
        krait__http_date(t, out);
        CHECK(strlen(out) == KRAIT__DATE_LEN);
        if ((int64_t)t >= DATE_MIN && (int64_t)t <= DATE_MAX) {
            CHECK(krait__http_date_parse_at(out, KRAIT__DATE_LEN, now, &t2) == 0 && t2 == t);
            /* An IMF-fixdate comes back byte for byte after the day name (which is only
             * checked for spelling), unless it named a leap second. */
            if (len == KRAIT__DATE_LEN && f[3] == ',' && memcmp(f + 23, "60", 2) != 0)
                CHECK(memcmp(out + 3, f + 3, KRAIT__DATE_LEN - 3) == 0);
        }
        /* Only RFC 850 dates depend on the clock, and the two other forms have fixed sizes. */
        if (len == KRAIT__DATE_LEN || len == 24)
            CHECK(krait__http_date_parse_at(f, len, (time_t)((uint64_t)now + 1234567890u),
                                            &t2) == 0 &&
                  t2 == t);
    }

    /* The field helpers trim OWS, then parse the date with the real clock. */
    const char *g = f;
    size_t glen = len;
    trim(&g, &glen);
    time_t tc = 0;
    int prc = krait__http_date_parse(g, glen, &tc);
    int ms = krait__modified_since(f, len, tc);
    CHECK(ms == (prc == 0 ? 0 : -1));
    if (prc == 0) {
        if ((int64_t)tc < INT64_MAX)
            CHECK(krait__modified_since(f, len, tc + 1) == 1);
        /* A valid date never starts with a DQUOTE, so If-Range compares it with mtime. */
        CHECK(krait__if_range(f, len, etag, elen, tc) == 1);
        if ((int64_t)tc > INT64_MIN)
            CHECK(krait__if_range(f, len, etag, elen, tc - 1) == 0);
    }

    /* Formatting any instant gives a valid date for the clamped instant. */
    krait__http_date(now, again);
    int64_t c = (int64_t)now < DATE_MIN ? DATE_MIN : (int64_t)now > DATE_MAX ? DATE_MAX : now;
    CHECK(krait__http_date_parse_at(again, KRAIT__DATE_LEN, now, &t2) == 0 && (int64_t)t2 == c);
}

static void fuzz_etags(const char *f, size_t len, const char *etag, size_t elen, time_t mtime)
{
    int n = krait__if_none_match(f, len, etag, elen);
    int m = krait__if_match(f, len, etag, elen);
    CHECK(n >= -1 && n <= 1 && m >= -1 && m <= 1);
    /* Same grammar: malformed for one is malformed for both. */
    CHECK((n == -1) == (m == -1));
    /* A strong match is also a weak match. */
    if (m == 1)
        CHECK(n == 1);
    int r = krait__if_range(f, len, etag, elen, mtime);
    CHECK(r == 0 || r == 1);
    /* If-Range holds for a tag only when If-Match would (strong comparison, one tag). */
    const char *g = f;
    size_t glen = len;
    trim(&g, &glen);
    if (r == 1 && memchr(g, '"', glen < 3 ? glen : 3))
        CHECK(m == 1);
    /* Our tag always matches itself, both ways, when it is a strong tag. */
    if (elen >= 2 && etag[0] == '"' && krait__if_match(etag, elen, etag, elen) == 1)
        CHECK(krait__if_none_match(etag, elen, etag, elen) == 1 &&
              krait__if_range(etag, elen, etag, elen, mtime) == 1);
}

static void fuzz_range(const char *f, size_t len, uint64_t size, size_t cap)
{
    krait__range *out = malloc((cap ? cap : 1) * sizeof *out);
    krait__range *big = malloc(MAX_CAP * 2 * sizeof *big);
    if (!out || !big)
        abort();
    int rc = krait__range_parse(f, len, size, out, cap);
    CHECK(rc >= KRAIT__RANGE_UNSATISFIABLE && rc <= (int)cap);
    if (size == 0)
        CHECK(rc <= 0);
    for (int i = 0; i < rc; i++) {
        CHECK(out[i].first <= out[i].last && out[i].last < size);
        if (i > 0)
            CHECK(out[i].first > out[i - 1].last); /* sorted and non-overlapping */
    }
    /* A bigger cap only turns "too many" (NONE) into an answer; an answer never changes. */
    int rc2 = krait__range_parse(f, len, size, big, MAX_CAP * 2);
    if (rc != KRAIT__RANGE_NONE) {
        CHECK(rc2 == rc);
        if (rc > 0)
            CHECK(memcmp(out, big, (size_t)rc * sizeof *out) == 0);
    }
    free(out);
    free(big);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t raw = 0;
    size_t cap = 8;
    uint64_t rsize = 10000;
    const uint8_t *rest = data;
    size_t rest_len = size;

    if (size >= 9) {
        for (int i = 8; i >= 1; i--)
            raw = raw << 8 | data[i];
        cap = data[0] & (MAX_CAP - 1);
        switch (data[0] >> 6) {
        case 0: rsize = raw % 10001; break;
        case 1: rsize = raw % 16; break;
        case 2: rsize = raw; break;
        default: rsize = UINT64_MAX - raw % 16; break;
        }
        rest = data + 9;
        rest_len = size - 9;
    }
    /* A clock between 1970 and about 2200, and the same bits as an arbitrary instant. */
    time_t now = (time_t)(raw % 7258118400u);
    time_t any = (time_t)(int64_t)raw;

    char made[KRAIT__ETAG_MAX];
    size_t made_len = krait__etag_make(raw, rsize, (int64_t)raw, (long)(raw % 1000000000u), made);
    CHECK(made_len == strlen(made) && made_len < KRAIT__ETAG_MAX && made[0] == '"' &&
          made[made_len - 1] == '"');

    const uint8_t *nl = memchr(rest, '\n', rest_len);
    char *etag, *field;
    size_t elen, flen;
    if (nl) {
        elen = (size_t)(nl - rest);
        flen = rest_len - elen - 1;
        etag = dup_exact(rest, elen);
        field = dup_exact(nl + 1, flen);
    } else {
        elen = made_len;
        flen = rest_len;
        etag = dup_exact((const uint8_t *)made, elen);
        field = dup_exact(rest, flen);
    }

    fuzz_dates(field, flen, now, etag, elen);
    fuzz_dates(field, flen, any, etag, elen);
    fuzz_etags(field, flen, etag, elen, now);
    fuzz_range(field, flen, rsize, cap);

    /* The whole input as one field too, so that seeds without the header still reach every
     * parser with all of their bytes. */
    char *whole = dup_exact(data, size);
    fuzz_dates(whole, size, now, made, made_len);
    fuzz_etags(whole, size, made, made_len, now);
    fuzz_range(whole, size, 10000, 8);
    free(whole);

    free(etag);
    free(field);
    return 0;
}
