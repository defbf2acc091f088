/* Validators and preconditions for static files (RFC 9110 §8.8, §13, §14), sans-IO:
 * HTTP dates, ETags, If-None-Match / If-Modified-Since / If-Range, and Range parsing.
 * Implemented in cache.c; tested by tests/native/test_cache.c; fuzzed by
 * tests/fuzz/fuzz_cache.c. No syscalls, no allocation. */
#ifndef KRAIT_CACHE_H
#define KRAIT_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define KRAIT__DATE_LEN 29   /* "Sun, 06 Nov 1994 08:49:37 GMT" */
#define KRAIT__ETAG_MAX 64   /* enough for the quoted tag we make, NUL included */

/* Write the IMF-fixdate for t into out (KRAIT__DATE_LEN bytes + NUL). */
void krait__http_date(time_t t, char out[KRAIT__DATE_LEN + 1]);

/* The proleptic Gregorian date of a day count from 1970-01-01 (H. Hinnant's civil_from_days):
 * pure arithmetic, where gmtime_r takes glibc's time-zone lock. Also the JSON log's date. */
void krait__civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);

/* Parse an HTTP date (IMF-fixdate, and the obsolete RFC 850 and asctime forms that
 * RFC 9110 §5.6.7 says recipients must accept). Returns 0 and sets *t, or -1. */
int krait__http_date_parse(const char *s, size_t len, time_t *t);

/* The same with the current time supplied: an RFC 850 date has a two-digit year, and RFC 9110
 * §5.6.7 picks its century relative to now (a year more than 50 years after now means the
 * previous century). krait__http_date_parse and the helpers below that parse dates read the
 * clock with time(NULL) for that one case only; this variant never touches the OS. */
int krait__http_date_parse_at(const char *s, size_t len, time_t now, time_t *t);

/* Make our strong ETag, quoted, from a file's identity: "<inode hex>-<size hex>-<mtime ns hex>"
 * (any strong, deterministic format is allowed). Returns its length (without NUL). */
size_t krait__etag_make(uint64_t ino, uint64_t size, int64_t mtime_sec, long mtime_nsec,
                        char out[KRAIT__ETAG_MAX]);

/* If-None-Match (RFC 9110 §13.1.2): does the field value `inm` match `etag` (quoted) using
 * WEAK comparison? "*" matches any existing representation; the value is a comma list of
 * entity-tags, each optionally W/-prefixed, with optional whitespace. Returns 1 match,
 * 0 no match, -1 when the field is malformed (treat as no match). An empty value is no match. */
int krait__if_none_match(const char *inm, size_t len, const char *etag, size_t etag_len);

/* If-Match (RFC 9110 §13.1.1), STRONG comparison, "*" matches. 1/0/-1 as above. */
int krait__if_match(const char *im, size_t len, const char *etag, size_t etag_len);

/* If-Modified-Since / If-Unmodified-Since helper: parse the date; returns 1 when the resource
 * was modified after the date (mtime > date), 0 when not, -1 when the date is invalid
 * (the condition is then ignored). */
int krait__modified_since(const char *date, size_t len, time_t mtime);

/* If-Range (RFC 9110 §13.1.5): 1 if the condition holds (Range should be honoured): the value is
 * an entity-tag that strongly matches etag, or an HTTP date exactly equal to mtime; else 0
 * (send the whole representation). A weak tag never matches. */
int krait__if_range(const char *v, size_t len, const char *etag, size_t etag_len, time_t mtime);

typedef struct {
    uint64_t first;  /* inclusive */
    uint64_t last;   /* inclusive */
} krait__range;

#define KRAIT__RANGE_NONE 0          /* header absent/ignored: send 200 with the whole body */
#define KRAIT__RANGE_UNSATISFIABLE -1 /* 416 with Content-Range: bytes * /size */

/* Parse a Range field value ("bytes=0-99, 200-, -500", RFC 9110 §14.1.2) against a
 * representation of `size` bytes. Ranges are clipped to the size; unsatisfiable ones dropped.
 * Returns the number of satisfiable ranges written to out (at most cap), KRAIT__RANGE_NONE
 * when the field is syntactically invalid, uses a unit other than "bytes", or has more than
 * cap ranges (ignore it, RFC 9110 §14.2 allows that), or KRAIT__RANGE_UNSATISFIABLE when it is
 * valid but no range is satisfiable (including any range on an empty representation).
 * Overlapping or out-of-order ranges: when there are more than one, if any two overlap or are
 * out of order, they are coalesced into a sorted, non-overlapping list (RFC 9110 §14.2). */
int krait__range_parse(const char *v, size_t len, uint64_t size, krait__range *out, size_t cap);

#endif
