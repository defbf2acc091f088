/* Unit tests for native/src/cache.c: HTTP dates, ETags, If-None-Match / If-Match /
 * If-Modified-Since / If-Range and Range. Vectors come from RFC 9110 where it gives them. Every
 * input is placed against a PROT_NONE guard page, and every prefix of it is parsed too, so a
 * read past the end faults. */
#define _GNU_SOURCE /* timegm, used only to cross-check our calendar. */
#include "cache.h"
#include "harness.h"

#include <inttypes.h>
#include <time.h>

/* 1994-11-06T08:49:37Z, the instant of every RFC 9110 §5.6.7 example. */
#define RFC_T ((time_t)784111777)
/* 2023-11-14T22:13:20Z, a fixed "now" for two-digit years. */
#define NOW ((time_t)1700000000)

static time_t utc(int y, int mon, int d, int h, int mi, int s)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return timegm(&tm);
}

/* ------------------------------------------------------------------------------------------ */
/* Guarded wrappers: the input ends at a guard page, and every proper prefix is tried too.    */

/* Parses s with now, after parsing each proper prefix of it. When s is a valid date, every
 * prefix must be rejected: each form has a fixed length once its day name is known, and no
 * prefix of one form is another. */
static int date_at(const char *s, time_t now, time_t *t)
{
    size_t len = strlen(s);
    int prefix_parsed = 0;
    for (size_t k = 0; k < len; k++) {
        guarded g = guarded_copy(s, k);
        time_t dummy;
        prefix_parsed |= krait__http_date_parse_at(g.data, k, now, &dummy) == 0;
        guarded_free(g);
    }
    guarded g = guarded_copy(s, len);
    int rc = krait__http_date_parse_at(g.data, len, now, t);
    guarded_free(g);
    ok(rc != 0 || !prefix_parsed, "a prefix of valid \"%s\" parsed", s);
    return rc;
}

/* The entry point without `now`, guarded. */
static int date_nonow(const char *s, time_t *t)
{
    size_t len = strlen(s);
    guarded g = guarded_copy(s, len);
    int rc = krait__http_date_parse(g.data, len, t);
    guarded_free(g);
    return rc;
}

static int date_ok(const char *s, time_t now, time_t expect)
{
    time_t t = 0;
    return date_at(s, now, &t) == 0 && t == expect;
}

static int date_bad(const char *s)
{
    time_t t;
    return date_at(s, NOW, &t) == -1;
}

typedef int (*list_fn)(const char *, size_t, const char *, size_t);

static int list_call(list_fn fn, const char *field, const char *etag)
{
    size_t len = strlen(field), elen = strlen(etag);
    guarded e = guarded_copy(etag, elen);
    for (size_t k = 0; k < len; k++) {
        guarded g = guarded_copy(field, k);
        int rc = fn(g.data, k, e.data, elen);
        ok(rc >= -1 && rc <= 1, "prefix %zu of '%s' gave %d", k, field, rc);
        guarded_free(g);
    }
    guarded g = guarded_copy(field, len);
    int rc = fn(g.data, len, e.data, elen);
    guarded_free(g);
    guarded_free(e);
    return rc;
}

static int inm(const char *field, const char *etag)
{
    return list_call(krait__if_none_match, field, etag);
}

static int im(const char *field, const char *etag)
{
    return list_call(krait__if_match, field, etag);
}

static int ims(const char *date, time_t mtime)
{
    size_t len = strlen(date);
    for (size_t k = 0; k < len; k++) {
        guarded g = guarded_copy(date, k);
        int rc = krait__modified_since(g.data, k, mtime);
        ok(rc >= -1 && rc <= 1, "prefix %zu of '%s' gave %d", k, date, rc);
        guarded_free(g);
    }
    guarded g = guarded_copy(date, len);
    int rc = krait__modified_since(g.data, len, mtime);
    guarded_free(g);
    return rc;
}

static int ifr(const char *v, const char *etag, time_t mtime)
{
    size_t len = strlen(v), elen = strlen(etag);
    guarded e = guarded_copy(etag, elen);
    for (size_t k = 0; k < len; k++) {
        guarded g = guarded_copy(v, k);
        int rc = krait__if_range(g.data, k, e.data, elen, mtime);
        ok(rc == 0 || rc == 1, "prefix %zu of '%s' gave %d", k, v, rc);
        guarded_free(g);
    }
    guarded g = guarded_copy(v, len);
    int rc = krait__if_range(g.data, len, e.data, elen, mtime);
    guarded_free(g);
    guarded_free(e);
    return rc;
}

#define MAX_CAP 64
static const krait__range zero_ranges[MAX_CAP];

/* The invariants every Range result must keep, whatever the input. */
static int ranges_sane(int rc, const krait__range *r, uint64_t size, size_t cap)
{
    if (rc == KRAIT__RANGE_NONE || rc == KRAIT__RANGE_UNSATISFIABLE)
        return 1;
    if (rc < 0 || (size_t)rc > cap)
        return 0;
    for (int i = 0; i < rc; i++) {
        if (r[i].first > r[i].last || r[i].last >= size)
            return 0;
        if (i > 0 && r[i].first <= r[i - 1].last)
            return 0;
    }
    return 1;
}

/* Parses s into res (cap entries); the output array also ends at a guard page. */
static int rp(const char *s, uint64_t size, size_t cap, krait__range *res)
{
    size_t len = strlen(s);
    guarded o = guarded_copy(zero_ranges, cap * sizeof(krait__range));
    krait__range *out = (krait__range *)(void *)o.data;
    for (size_t k = 0; k < len; k++) {
        guarded g = guarded_copy(s, k);
        int rc = krait__range_parse(g.data, k, size, out, cap);
        ok(ranges_sane(rc, out, size, cap), "prefix %zu of '%s' gave %d", k, s, rc);
        guarded_free(g);
    }
    guarded g = guarded_copy(s, len);
    int rc = krait__range_parse(g.data, len, size, out, cap);
    ok(ranges_sane(rc, out, size, cap), "'%s' gave %d, broken ranges", s, rc);
    if (rc > 0)
        memcpy(res, out, (size_t)rc * sizeof *res);
    guarded_free(g);
    guarded_free(o);
    return rc;
}

/* Checks that s over size gives exactly the n ranges in want (pairs first,last). */
static int range_is(const char *s, uint64_t size, size_t cap, int n, const uint64_t *want)
{
    krait__range r[MAX_CAP];
    int rc = rp(s, size, cap, r);
    if (rc != n) {
        fprintf(stderr, "  '%s' size %" PRIu64 ": got %d ranges, want %d\n", s, size, rc, n);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (r[i].first != want[2 * i] || r[i].last != want[2 * i + 1]) {
            fprintf(stderr, "  '%s' range %d: got %" PRIu64 "-%" PRIu64 "\n", s, i, r[i].first,
                    r[i].last);
            return 0;
        }
    }
    return 1;
}

#define RANGES(...) ((const uint64_t[]){__VA_ARGS__})

/* ------------------------------------------------------------------------------------------ */

static void test_date_format(void)
{
    char out[KRAIT__DATE_LEN + 1];
    krait__http_date(RFC_T, out);
    ok(strcmp(out, "Sun, 06 Nov 1994 08:49:37 GMT") == 0, "RFC 9110 example: %s", out);
    krait__http_date(0, out);
    ok(strcmp(out, "Thu, 01 Jan 1970 00:00:00 GMT") == 0, "epoch: %s", out);
    krait__http_date(-1, out);
    ok(strcmp(out, "Wed, 31 Dec 1969 23:59:59 GMT") == 0, "before epoch: %s", out);
    krait__http_date(utc(2000, 2, 29, 12, 0, 0), out);
    ok(strcmp(out, "Tue, 29 Feb 2000 12:00:00 GMT") == 0, "leap day: %s", out);
    krait__http_date(utc(2038, 1, 19, 3, 14, 8), out);
    ok(strcmp(out, "Tue, 19 Jan 2038 03:14:08 GMT") == 0, "past 2^31: %s", out);
    /* §16.6 of our behaviour spec: cookie expiry example. */
    krait__http_date(utc(2030, 1, 2, 3, 4, 5), out);
    ok(strcmp(out, "Wed, 02 Jan 2030 03:04:05 GMT") == 0, "cookie example: %s", out);

    /* Outside 0000..9999 the nearest representable instant is written. */
    krait__http_date(utc(9999, 12, 31, 23, 59, 59), out);
    ok(strcmp(out, "Fri, 31 Dec 9999 23:59:59 GMT") == 0, "year 9999: %s", out);
    krait__http_date((time_t)INT64_MAX, out);
    ok(strcmp(out, "Fri, 31 Dec 9999 23:59:59 GMT") == 0, "clamped high: %s", out);
    krait__http_date((time_t)INT64_MIN, out);
    ok(strcmp(out, "Sat, 01 Jan 0000 00:00:00 GMT") == 0, "clamped low: %s", out);
    krait__http_date(utc(999, 3, 1, 0, 0, 0), out);
    ok(strcmp(out, "Fri, 01 Mar 0999 00:00:00 GMT") == 0, "3-digit year padded: %s", out);

    /* Cross-check against libc over years 1000..9999 (strftime pads %Y only from 1000). */
    char want[64];
    int mismatches = 0, roundtrip = 0;
    uint64_t x = 88172645463325252u;
    for (int i = 0; i < 50000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        time_t t = utc(1000, 1, 1, 0, 0, 0) + (time_t)(x % (uint64_t)(utc(9999, 12, 31, 0, 0, 0) -
                                                                       utc(1000, 1, 1, 0, 0, 0)));
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(want, sizeof want, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        krait__http_date(t, out);
        mismatches += strcmp(out, want) != 0;
        time_t back;
        roundtrip += date_nonow(out, &back) != 0 || back != t;
    }
    ok(mismatches == 0, "%d formats differ from strftime", mismatches);
    ok(roundtrip == 0, "%d dates do not round-trip", roundtrip);
    /* Every day of the first centuries (years 0..1200) round-trips, leap rules included. */
    roundtrip = 0;
    for (time_t t = utc(0, 1, 1, 0, 0, 0); t < utc(1200, 1, 1, 0, 0, 0); t += 86400 + 3661) {
        time_t back;
        krait__http_date(t, out);
        roundtrip += date_nonow(out, &back) != 0 || back != t;
    }
    ok(roundtrip == 0, "%d early dates do not round-trip", roundtrip);
}

static void test_date_parse(void)
{
    /* RFC 9110 §5.6.7: the three forms a recipient must accept. */
    ok(date_ok("Sun, 06 Nov 1994 08:49:37 GMT", NOW, RFC_T), "IMF-fixdate");
    ok(date_ok("Sunday, 06-Nov-94 08:49:37 GMT", NOW, RFC_T), "RFC 850");
    ok(date_ok("Sun Nov  6 08:49:37 1994", NOW, RFC_T), "asctime");
    ok(date_ok("Sun Nov 06 08:49:37 1994", NOW, RFC_T), "asctime, 2DIGIT day");
    ok(date_ok("Wed Nov 16 08:49:37 1994", NOW, RFC_T + 10 * 86400), "asctime, day 16");
    /* The entry point without `now` agrees for forms that need no clock. */
    time_t t = 0;
    ok(date_nonow("Sun, 06 Nov 1994 08:49:37 GMT", &t) == 0 && t == RFC_T, "no-now IMF");
    time_t a = 1, b = 2;
    const char *r850 = "Sunday, 06-Nov-94 08:49:37 GMT";
    ok(date_nonow(r850, &a) == 0 && date_at(r850, time(NULL), &b) == 0 && a == b,
       "no-now RFC 850 uses the clock");

    ok(date_ok("Sat, 01 Jan 0000 00:00:00 GMT", NOW, utc(0, 1, 1, 0, 0, 0)), "year 0000");
    ok(date_ok("Fri, 31 Dec 9999 23:59:59 GMT", NOW, utc(9999, 12, 31, 23, 59, 59)), "year 9999");
    ok(date_ok("Tue, 29 Feb 2000 00:00:00 GMT", NOW, utc(2000, 2, 29, 0, 0, 0)), "29 Feb 2000");
    ok(date_ok("Thu, 29 Feb 1996 00:00:00 GMT", NOW, utc(1996, 2, 29, 0, 0, 0)), "29 Feb 1996");
    /* A leap second (second = 60, RFC 9110 §5.6.7) lands on the next minute, as with timegm. */
    ok(date_ok("Sun, 06 Nov 1994 08:49:60 GMT", NOW, RFC_T + 23), "leap second");
    ok(date_ok("Wed, 31 Dec 1969 23:59:59 GMT", NOW, -1), "before the epoch");
    /* The weekday is checked for spelling only. */
    ok(date_ok("Mon, 06 Nov 1994 08:49:37 GMT", NOW, RFC_T), "wrong weekday accepted");

    /* Invalid: names, calendar, clock, layout, trailing garbage. */
    ok(date_bad(""), "empty");
    ok(date_bad("Sud, 06 Nov 1994 08:49:37 GMT"), "bad day name");
    ok(date_bad("sun, 06 Nov 1994 08:49:37 GMT"), "day name is case-sensitive");
    ok(date_bad("Sun, 06 Nox 1994 08:49:37 GMT"), "bad month name");
    ok(date_bad("Sun, 06 nov 1994 08:49:37 GMT"), "month is case-sensitive");
    ok(date_bad("Sun, 06 Nov 1994 08:49:37 gmt"), "GMT is case-sensitive");
    ok(date_bad("Sun, 06 Nov 1994 08:49:37 UTC"), "UTC is not GMT");
    ok(date_bad("Sun, 30 Feb 1994 08:49:37 GMT"), "30 Feb");
    ok(date_bad("Sun, 29 Feb 1900 08:49:37 GMT"), "29 Feb 1900");
    ok(date_bad("Sun, 29 Feb 1995 08:49:37 GMT"), "29 Feb 1995");
    ok(date_bad("Sun, 31 Apr 1994 08:49:37 GMT"), "31 Apr");
    ok(date_bad("Sun, 32 Jan 1994 08:49:37 GMT"), "32 Jan");
    ok(date_bad("Sun, 00 Nov 1994 08:49:37 GMT"), "day 0");
    ok(date_bad("Sun, 06 Nov 1994 24:00:00 GMT"), "hour 24");
    ok(date_bad("Sun, 06 Nov 1994 08:60:00 GMT"), "minute 60");
    ok(date_bad("Sun, 06 Nov 1994 08:49:61 GMT"), "second 61");
    ok(date_bad("Sun, 06 Nov 1994 08:49:37 GMT "), "trailing space");
    ok(date_bad("Sun, 06 Nov 1994 08:49:37 GMTx"), "trailing garbage");
    ok(date_bad(" Sun, 06 Nov 1994 08:49:37 GMT"), "leading space");
    ok(date_bad("Sun, 6 Nov 1994 08:49:37 GMT"), "one-digit day in IMF");
    ok(date_bad("Sun, 06 Nov 94 08:49:37 GMT"), "two-digit year in IMF");
    ok(date_bad("Sun 06 Nov 1994 08:49:37 GMT"), "missing comma");
    ok(date_bad("Sun, 06 Nov 1994 08.49.37 GMT"), "bad time separators");
    ok(date_bad("Sun, 06 Nov 1994 08:4a:37 GMT"), "non-digit minute");
    ok(date_bad("Sun, -6 Nov 1994 08:49:37 GMT"), "sign in day");
    ok(date_bad("Sun, 06 Nov +994 08:49:37 GMT"), "sign in year");
    ok(date_bad("Sunday, 06 Nov 1994 08:49:37 GMT"), "long day name with IMF layout");
    ok(date_bad("Sun, 06-Nov-94 08:49:37 GMT"), "short day name with RFC 850 layout");
    ok(date_bad("Sunday, 06-Nov-1994 08:49:37 GMT"), "four-digit year in RFC 850");
    ok(date_bad("Sunday, 06-Nov-94 08:49:37 GMT "), "RFC 850 trailing space");
    ok(date_bad("Sunday, 06-Nov-94 08:49:37"), "RFC 850 without GMT");
    ok(date_bad("Funday, 06-Nov-94 08:49:37 GMT"), "RFC 850 bad day name");
    ok(date_bad("Sun Nov 6 08:49:37 1994"), "asctime single space before day");
    ok(date_bad("Sun Nov  0 08:49:37 1994"), "asctime day 0");
    ok(date_bad("Sun Nov  6 08:49:37 1994 "), "asctime trailing space");
    ok(date_bad("Sun Nov  6 08:49:37 94"), "asctime two-digit year");
    ok(date_bad("Sun Nov  6 08:49:37 1994\n"), "asctime trailing newline");
    {
        /* An embedded NUL is just a wrong byte. */
        static const char nul[] = "Sun, 06 Nov 1994 08:49:37 G\0T";
        guarded g = guarded_copy(nul, sizeof nul - 1);
        ok(krait__http_date_parse_at(g.data, sizeof nul - 1, NOW, &t) == -1, "embedded NUL");
        guarded_free(g);
    }
    ok(krait__http_date_parse_at(NULL, 0, NOW, &t) == -1, "NULL, 0");
}

static void test_rfc850_century(void)
{
    /* RFC 9110 §5.6.7: a two-digit year more than 50 years in the future is read as the most
     * recent past year with the same last two digits. */
    ok(date_ok("Thursday, 01-Jan-70 00:00:00 GMT", utc(2023, 11, 14, 0, 0, 0),
               utc(2070, 1, 1, 0, 0, 0)),
       "70 in 2023 is 2070 (47 years ahead)");
    ok(date_ok("Friday, 01-Jan-99 00:00:00 GMT", utc(2023, 11, 14, 0, 0, 0),
               utc(1999, 1, 1, 0, 0, 0)),
       "99 in 2023 is 1999 (2099 is 76 years ahead)");
    ok(date_ok("Saturday, 01-Jan-00 00:00:00 GMT", NOW, utc(2000, 1, 1, 0, 0, 0)), "00 in 2023");
    ok(date_ok("Sunday, 06-Nov-94 08:49:37 GMT", utc(1995, 1, 1, 0, 0, 0), RFC_T), "94 in 1995");
    ok(date_ok("Sunday, 06-Nov-94 08:49:37 GMT", utc(1950, 1, 1, 0, 0, 0), RFC_T), "94 in 1950");
    /* The limit is exact to the second: exactly 50 years ahead is still "not more than". */
    time_t now = utc(2044, 11, 6, 8, 49, 37);
    ok(date_ok("Sunday, 06-Nov-94 08:49:37 GMT", now, utc(2094, 11, 6, 8, 49, 37)),
       "exactly 50 years ahead stays in the future");
    ok(date_ok("Sunday, 06-Nov-94 08:49:37 GMT", now - 1, RFC_T),
       "50 years and a second ahead goes back a century");
    ok(date_ok("Sunday, 06-Nov-94 08:49:38 GMT", now, utc(1994, 11, 6, 8, 49, 38)),
       "a second later goes back a century");
    ok(date_ok("Sunday, 06-Oct-94 08:49:37 GMT", now, utc(2094, 10, 6, 8, 49, 37)),
       "an earlier month in the limit year stays");
    /* Near the end of a century the next one is closer than 50 years. */
    ok(date_ok("Saturday, 01-Jan-01 00:00:00 GMT", utc(2099, 6, 1, 0, 0, 0),
               utc(2101, 1, 1, 0, 0, 0)),
       "01 in 2099 is 2101");
    /* The century decides whether 29 Feb exists. */
    ok(date_ok("Tuesday, 29-Feb-00 00:00:00 GMT", NOW, utc(2000, 2, 29, 0, 0, 0)),
       "29-Feb-00 in 2023 is 2000");
    time_t t;
    ok(date_at("Thursday, 29-Feb-00 00:00:00 GMT", utc(1940, 1, 1, 0, 0, 0), &t) == -1,
       "29-Feb-00 in 1940 is 1900, not a leap year");
    /* Extreme clocks are clamped and cannot overflow. */
    ok(date_at("Sunday, 06-Nov-94 08:49:37 GMT", (time_t)INT64_MAX, &t) == 0, "now = max");
    ok(date_at("Sunday, 06-Nov-94 08:49:37 GMT", (time_t)INT64_MIN, &t) == 0, "now = min");
}

static void test_etag_make(void)
{
    char a[KRAIT__ETAG_MAX], b[KRAIT__ETAG_MAX];
    size_t n = krait__etag_make(0x1234, 0x10, 1, 5, a);
    ok(n == strlen(a) && strcmp(a, "\"1234-10-3b9aca05\"") == 0, "format: %s", a);
    n = krait__etag_make(UINT64_MAX, UINT64_MAX, -1, 0, a); /* ns = 2^64 - 10^9 */
    ok(n == strlen(a) && n < KRAIT__ETAG_MAX && a[0] == '"' && a[n - 1] == '"', "longest: %s", a);
    ok(n == 52, "longest is 52 bytes, got %zu", n);
    krait__etag_make(1, 2, 3, 4, a);
    krait__etag_make(1, 2, 3, 4, b);
    ok(strcmp(a, b) == 0, "deterministic");
    krait__etag_make(1, 2, 3, 5, b);
    ok(strcmp(a, b) != 0, "nanoseconds matter");
    krait__etag_make(1, 3, 3, 4, b);
    ok(strcmp(a, b) != 0, "size matters");
    krait__etag_make(2, 2, 3, 4, b);
    ok(strcmp(a, b) != 0, "inode matters");
    n = krait__etag_make(0, 0, 0, 0, a);
    ok(n == 7 && strcmp(a, "\"0-0-0\"") == 0, "zeros: %s", a);
    /* Our tag is strong and matches itself under both comparisons. */
    n = krait__etag_make(77, 1024, 1700000000, 123456789, a);
    ok(inm(a, a) == 1 && im(a, a) == 1, "self match");
}

static void test_if_none_match(void)
{
    const char *x = "\"xyzzy\"";
    /* RFC 9110 §13.1.2 examples. */
    ok(inm("\"xyzzy\"", x) == 1, "single tag");
    ok(inm("W/\"xyzzy\"", x) == 1, "weak tag matches weakly");
    ok(inm("\"xyzzy\", \"r2d2xxxx\", \"c3piozzzz\"", x) == 1, "list, first");
    ok(inm("\"r2d2xxxx\", \"xyzzy\", \"c3piozzzz\"", "\"xyzzy\"") == 1, "list, middle");
    ok(inm("W/\"xyzzy\", W/\"r2d2xxxx\", W/\"c3piozzzz\"", x) == 1, "weak list");
    ok(inm("\"r2d2xxxx\", \"c3piozzzz\"", x) == 0, "list, no match");
    ok(inm("*", x) == 1, "star");
    /* RFC 9110 §8.8.3.2 comparison table, weak column. */
    ok(inm("W/\"1\"", "W/\"1\"") == 1, "W/1 W/1 weak match");
    ok(inm("W/\"1\"", "W/\"2\"") == 0, "W/1 W/2 no match");
    ok(inm("W/\"1\"", "\"1\"") == 1, "W/1 1 weak match");
    ok(inm("\"1\"", "\"1\"") == 1, "1 1 match");

    /* Whitespace and empty list elements (RFC 9110 §5.6.1.2). */
    ok(inm("  \"xyzzy\"  ", x) == 1, "OWS around");
    ok(inm(" * ", x) == 1, "star with OWS");
    ok(inm("\"a\",\"xyzzy\"", x) == 1, "no space after comma");
    ok(inm("\"a\"\t,\t\"xyzzy\"", x) == 1, "tabs");
    ok(inm(", ,\"a\",, \"xyzzy\",", x) == 1, "empty elements");
    ok(inm("\"\"", "\"\"") == 1, "empty opaque tag matches itself");
    ok(inm("\"\"", x) == 0, "empty opaque tag");
    ok(inm("\"xyzz\"", x) == 0, "prefix is not a match");
    ok(inm("\"xyzzyy\"", x) == 0, "longer is not a match");
    ok(inm("\"XYZZY\"", x) == 0, "case-sensitive");
    ok(inm("\"a\\b\"", "\"a\\b\"") == 1, "backslash is an ordinary etagc");
    ok(inm("\"\x80\xff\"", "\"\x80\xff\"") == 1, "obs-text");

    /* Empty value: no match, not malformed. */
    ok(inm("", x) == 0, "empty");
    ok(inm("   ", x) == 0, "only OWS");
    ok(inm(",", x) == 0, "only a comma");

    /* Malformed: -1, even if a match came first. */
    ok(inm("xyzzy", x) == -1, "unquoted");
    ok(inm("\"xyzzy", x) == -1, "unterminated");
    ok(inm("xyzzy\"", x) == -1, "no opening quote");
    ok(inm("\"a\" \"xyzzy\"", x) == -1, "missing comma");
    ok(inm("\"xyzzy\" garbage", x) == -1, "trailing garbage after a match");
    ok(inm("\"xyzzy\", garbage", x) == -1, "garbage element after a match");
    ok(inm("\"xyzzy\"x", x) == -1, "junk glued to the tag");
    ok(inm("w/\"xyzzy\"", x) == -1, "lower-case w/");
    ok(inm("W/ \"xyzzy\"", x) == -1, "space after W/");
    ok(inm("W/", x) == -1, "W/ alone");
    ok(inm("W", x) == -1, "W alone");
    ok(inm("\"xy zzy\"", x) == -1, "space inside the tag");
    ok(inm("\"xy\tzzy\"", x) == -1, "tab inside the tag");
    ok(inm("\"xy\x7fzzy\"", x) == -1, "DEL inside the tag");
    ok(inm("\"xy\x01zzy\"", x) == -1, "control inside the tag");
    ok(inm("*, \"xyzzy\"", x) == -1, "star in a list");
    ok(inm("\"xyzzy\", *", x) == -1, "star after a tag");
    ok(inm("**", x) == -1, "double star");
    ok(inm("W/*", x) == -1, "weak star");
    ok(inm("\"", x) == -1, "lone quote");

    /* Our own tag missing or broken: lists cannot match, "*" still does. */
    ok(inm("\"xyzzy\"", "") == 0, "no own tag");
    ok(inm("*", "") == 1, "star with no own tag");
    ok(inm("\"xyzzy\"", "xyzzy") == 0, "unquoted own tag");
    ok(inm("\"x\" junk", "") == -1, "malformed still reported without own tag");
    ok(krait__if_none_match(NULL, 0, x, strlen(x)) == 0, "NULL, 0");
}

static void test_if_match(void)
{
    const char *x = "\"xyzzy\"";
    /* RFC 9110 §13.1.1 examples. */
    ok(im("\"xyzzy\"", x) == 1, "single tag");
    ok(im("\"xyzzy\", \"r2d2xxxx\", \"c3piozzzz\"", x) == 1, "list");
    ok(im("\"r2d2xxxx\", \"c3piozzzz\"", x) == 0, "list, no match");
    ok(im("*", x) == 1, "star");
    /* RFC 9110 §8.8.3.2 comparison table, strong column. */
    ok(im("W/\"1\"", "W/\"1\"") == 0, "W/1 W/1 no strong match");
    ok(im("W/\"1\"", "W/\"2\"") == 0, "W/1 W/2 no match");
    ok(im("W/\"1\"", "\"1\"") == 0, "W/1 1 no strong match");
    ok(im("\"1\"", "W/\"1\"") == 0, "1 W/1 no strong match");
    ok(im("\"1\"", "\"1\"") == 1, "1 1 match");
    ok(im("W/\"xyzzy\", \"xyzzy\"", x) == 1, "strong member of a mixed list");
    ok(im("", x) == 0, "empty");
    ok(im("\"xyzzy\" junk", x) == -1, "malformed");
    ok(im("*,", x) == -1, "star with a comma");
}

static void test_modified_since(void)
{
    ok(ims("Sun, 06 Nov 1994 08:49:37 GMT", RFC_T + 1) == 1, "modified after");
    ok(ims("Sun, 06 Nov 1994 08:49:37 GMT", RFC_T) == 0, "equal is not modified");
    ok(ims("Sun, 06 Nov 1994 08:49:37 GMT", RFC_T - 1) == 0, "older");
    ok(ims("Sun Nov  6 08:49:37 1994", RFC_T + 1) == 1, "asctime");
    ok(ims("Sunday, 06-Nov-94 08:49:37 GMT", RFC_T) == 0, "RFC 850");
    ok(ims(" Sun, 06 Nov 1994 08:49:37 GMT ", RFC_T + 1) == 1, "OWS trimmed");
    ok(ims("", RFC_T) == -1, "empty");
    ok(ims("yesterday", RFC_T) == -1, "not a date");
    ok(ims("Sun, 30 Feb 1994 08:49:37 GMT", RFC_T) == -1, "impossible date");
    /* RFC 9110 §13.1.3: more than one member means the field is ignored. */
    ok(ims("Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT", RFC_T) == -1,
       "a list");
    ok(ims("Sun, 06 Nov 1994 08:49:37 GMT; length=12", RFC_T) == -1, "old IE length suffix");
    ok(krait__modified_since(NULL, 0, RFC_T) == -1, "NULL, 0");
}

static void test_if_range(void)
{
    const char *x = "\"xyzzy\"";
    ok(ifr("\"xyzzy\"", x, RFC_T) == 1, "strong tag match");
    ok(ifr(" \"xyzzy\" ", x, RFC_T) == 1, "OWS trimmed");
    ok(ifr("\"other\"", x, RFC_T) == 0, "strong tag mismatch");
    /* RFC 9110 §13.1.5: weak tags never match in If-Range. */
    ok(ifr("W/\"xyzzy\"", x, RFC_T) == 0, "weak tag");
    ok(ifr("\"xyzzy\"", "W/\"xyzzy\"", RFC_T) == 0, "our weak tag");
    ok(ifr("\"xyzzy\", \"xyzzy\"", x, RFC_T) == 0, "a list is not an entity-tag");
    ok(ifr("\"xyzzy\" x", x, RFC_T) == 0, "trailing garbage");
    ok(ifr("\"xyzzy", x, RFC_T) == 0, "unterminated");
    ok(ifr("\"xyzzy\"", "", RFC_T) == 0, "no own tag");
    /* Dates: exact equality with mtime. */
    ok(ifr("Sun, 06 Nov 1994 08:49:37 GMT", x, RFC_T) == 1, "date equal");
    ok(ifr("Sun, 06 Nov 1994 08:49:37 GMT", x, RFC_T + 1) == 0, "date older than mtime");
    ok(ifr("Sun, 06 Nov 1994 08:49:37 GMT", x, RFC_T - 1) == 0, "date newer than mtime");
    ok(ifr("Sun Nov  6 08:49:37 1994", x, RFC_T) == 1, "asctime equal");
    ok(ifr("Sunday, 06-Nov-94 08:49:37 GMT", x, RFC_T) == 1, "RFC 850 equal");
    ok(ifr("Sun, 06 Nov 1994 08:49:37 GMT junk", x, RFC_T) == 0, "bad date");
    ok(ifr("xyzzy", x, RFC_T) == 0, "neither tag nor date");
    ok(ifr("", x, RFC_T) == 0, "empty");
    ok(krait__if_range(NULL, 0, x, strlen(x), RFC_T) == 0, "NULL, 0");
}

static void test_range_rfc(void)
{
    const uint64_t n = 10000;
    /* RFC 9110 §14.1.2 examples over a 10000-byte representation. */
    ok(range_is("bytes=0-499", n, 8, 1, RANGES(0, 499)), "first 500 bytes");
    ok(range_is("bytes=500-999", n, 8, 1, RANGES(500, 999)), "second 500 bytes");
    ok(range_is("bytes=-500", n, 8, 1, RANGES(9500, 9999)), "final 500 bytes, suffix");
    ok(range_is("bytes=9500-", n, 8, 1, RANGES(9500, 9999)), "final 500 bytes, open");
    ok(range_is("bytes=0-0,-1", n, 8, 2, RANGES(0, 0, 9999, 9999)), "first and last bytes");
    ok(range_is("bytes= 0-999, 4500-5499, -1000", n, 8, 3,
                RANGES(0, 999, 4500, 5499, 9000, 9999)),
       "first, middle and last 1000 bytes");
    ok(range_is("bytes=500-600,601-999", n, 8, 2, RANGES(500, 600, 601, 999)),
       "touching ranges in order are kept");
    ok(range_is("bytes=500-700,601-999", n, 8, 1, RANGES(500, 999)), "overlap coalesced");
}

static void test_range_edges(void)
{
    const uint64_t n = 10000;
    krait__range r[MAX_CAP];

    /* Invalid specs make the whole field ignored (RFC 9110 §14.1.1, §14.2). */
    ok(rp("bytes=5-4", n, 8, r) == KRAIT__RANGE_NONE, "first > last");
    ok(rp("bytes=20000-5", n, 8, r) == KRAIT__RANGE_NONE, "first > last beyond the size");
    ok(rp("bytes=0-1,5-4", n, 8, r) == KRAIT__RANGE_NONE, "one invalid spec among valid ones");
    ok(rp("bytes=20000-,5-4", n, 8, r) == KRAIT__RANGE_NONE, "invalid beats unsatisfiable");

    /* Satisfiability and clipping. */
    ok(rp("bytes=10000-", n, 8, r) == KRAIT__RANGE_UNSATISFIABLE, "first == size");
    ok(rp("bytes=10000-20000", n, 8, r) == KRAIT__RANGE_UNSATISFIABLE, "first > size");
    ok(range_is("bytes=9999-", n, 8, 1, RANGES(9999, 9999)), "last byte");
    ok(range_is("bytes=0-20000", n, 8, 1, RANGES(0, 9999)), "last clipped");
    ok(range_is("bytes=0-9999", n, 8, 1, RANGES(0, 9999)), "last = size-1");
    ok(range_is("bytes=-20000", n, 8, 1, RANGES(0, 9999)), "suffix longer than size");
    ok(range_is("bytes=-10000", n, 8, 1, RANGES(0, 9999)), "suffix == size");
    ok(range_is("bytes=-9999", n, 8, 1, RANGES(1, 9999)), "suffix one short");
    ok(rp("bytes=-0", n, 8, r) == KRAIT__RANGE_UNSATISFIABLE, "-0");
    ok(rp("bytes=-000", n, 8, r) == KRAIT__RANGE_UNSATISFIABLE, "-000");
    ok(range_is("bytes=20000-,0-1", n, 8, 1, RANGES(0, 1)), "unsatisfiable spec dropped");
    ok(range_is("bytes=0-1,-0,20000-", n, 8, 1, RANGES(0, 1)), "two dropped");

    /* Empty representation: nothing is satisfiable (the contract), the syntax still counts. */
    ok(rp("bytes=0-", 0, 8, r) == KRAIT__RANGE_UNSATISFIABLE, "size 0, 0-");
    ok(rp("bytes=0-0", 0, 8, r) == KRAIT__RANGE_UNSATISFIABLE, "size 0, 0-0");
    ok(rp("bytes=-1", 0, 8, r) == KRAIT__RANGE_UNSATISFIABLE, "size 0, -1");
    ok(rp("bytes=-0", 0, 8, r) == KRAIT__RANGE_UNSATISFIABLE, "size 0, -0");
    ok(rp("bytes=1-0", 0, 8, r) == KRAIT__RANGE_NONE, "size 0, invalid");
    ok(range_is("bytes=0-", 1, 8, 1, RANGES(0, 0)), "size 1, 0-");
    ok(range_is("bytes=-5", 1, 8, 1, RANGES(0, 0)), "size 1, -5");

    /* Numbers: leading zeros, the 64-bit edge and overflow. */
    ok(range_is("bytes=0000000000000000000000000001-0002", n, 8, 1, RANGES(1, 2)),
       "leading zeros");
    ok(rp("bytes=18446744073709551616-", n, 8, r) == KRAIT__RANGE_NONE, "first overflows");
    ok(rp("bytes=0-18446744073709551616", n, 8, r) == KRAIT__RANGE_NONE, "last overflows");
    ok(rp("bytes=-18446744073709551616", n, 8, r) == KRAIT__RANGE_NONE, "suffix overflows");
    ok(rp("bytes=99999999999999999999999999-", n, 8, r) == KRAIT__RANGE_NONE, "long number");
    ok(rp("bytes=18446744073709551615-", n, 8, r) == KRAIT__RANGE_UNSATISFIABLE, "2^64-1");
    ok(range_is("bytes=0-18446744073709551615", UINT64_MAX, 8, 1, RANGES(0, UINT64_MAX - 1)),
       "max last with max size");
    ok(range_is("bytes=18446744073709551614-", UINT64_MAX, 8, 1,
                RANGES(UINT64_MAX - 1, UINT64_MAX - 1)),
       "last byte of the largest size");
    ok(range_is("bytes=-18446744073709551615", UINT64_MAX, 8, 1, RANGES(0, UINT64_MAX - 1)),
       "max suffix");

    /* Syntax. */
    ok(rp("", n, 8, r) == KRAIT__RANGE_NONE, "empty");
    ok(rp("bytes", n, 8, r) == KRAIT__RANGE_NONE, "unit only");
    ok(rp("bytes=", n, 8, r) == KRAIT__RANGE_NONE, "no range-spec");
    ok(rp("bytes=,", n, 8, r) == KRAIT__RANGE_NONE, "only a comma");
    ok(rp("bytes= , ", n, 8, r) == KRAIT__RANGE_NONE, "only empty elements");
    ok(rp("items=0-1", n, 8, r) == KRAIT__RANGE_NONE, "unit items");
    ok(rp("byte=0-1", n, 8, r) == KRAIT__RANGE_NONE, "unit byte");
    ok(rp("bytesx=0-1", n, 8, r) == KRAIT__RANGE_NONE, "unit bytesx");
    ok(rp("bytes 0-1", n, 8, r) == KRAIT__RANGE_NONE, "no =");
    ok(rp("bytes =0-1", n, 8, r) == KRAIT__RANGE_NONE, "space before =");
    ok(range_is("BYTES=0-1", n, 8, 1, RANGES(0, 1)), "unit is case-insensitive");
    ok(range_is("Bytes=0-1", n, 8, 1, RANGES(0, 1)), "unit mixed case");
    ok(range_is("  bytes=0-1  ", n, 8, 1, RANGES(0, 1)), "OWS around the value");
    ok(range_is("bytes=0-1 , 3-4", n, 8, 2, RANGES(0, 1, 3, 4)), "spaces around comma");
    ok(range_is("bytes=0-1\t,\t3-4", n, 8, 2, RANGES(0, 1, 3, 4)), "tabs around comma");
    ok(range_is("bytes=0-1,,3-4,", n, 8, 2, RANGES(0, 1, 3, 4)), "empty elements");
    ok(range_is("bytes=,0-1", n, 8, 1, RANGES(0, 1)), "leading empty element");
    ok(rp("bytes=0 -1", n, 8, r) == KRAIT__RANGE_NONE, "space before -");
    ok(rp("bytes=0- 1", n, 8, r) == KRAIT__RANGE_NONE, "space after -");
    ok(rp("bytes=0-1 3-4", n, 8, r) == KRAIT__RANGE_NONE, "missing comma");
    ok(rp("bytes=0-1;3-4", n, 8, r) == KRAIT__RANGE_NONE, "semicolon");
    ok(rp("bytes=-", n, 8, r) == KRAIT__RANGE_NONE, "lone dash");
    ok(rp("bytes=5", n, 8, r) == KRAIT__RANGE_NONE, "no dash");
    ok(rp("bytes=1-2-3", n, 8, r) == KRAIT__RANGE_NONE, "two dashes");
    ok(rp("bytes=--1", n, 8, r) == KRAIT__RANGE_NONE, "double dash");
    ok(rp("bytes=+1-2", n, 8, r) == KRAIT__RANGE_NONE, "plus sign");
    ok(rp("bytes=0x10-", n, 8, r) == KRAIT__RANGE_NONE, "hex");
    ok(rp("bytes=a-b", n, 8, r) == KRAIT__RANGE_NONE, "letters");
    ok(rp("bytes=0-1\r\n", n, 8, r) == KRAIT__RANGE_NONE, "CRLF");

    /* The cap counts every range-spec, satisfiable or not (RFC 9110 §14.2). */
    ok(rp("bytes=0-1,3-4,6-7", n, 2, r) == KRAIT__RANGE_NONE, "three specs, cap 2");
    ok(range_is("bytes=0-1,3-4,6-7", n, 3, 3, RANGES(0, 1, 3, 4, 6, 7)), "three specs, cap 3");
    ok(rp("bytes=20000-,0-1", n, 1, r) == KRAIT__RANGE_NONE, "unsatisfiable specs count");
    ok(range_is("bytes=0-1,,,", n, 1, 1, RANGES(0, 1)), "empty elements do not count");
    ok(rp("bytes=0-1", n, 0, r) == KRAIT__RANGE_NONE, "cap 0");
    {
        guarded g = guarded_copy("bytes=0-1", 9);
        ok(krait__range_parse(g.data, 9, n, NULL, 0) == KRAIT__RANGE_NONE, "cap 0, no out");
        guarded_free(g);
    }
    ok(krait__range_parse(NULL, 0, n, r, 8) == KRAIT__RANGE_NONE, "NULL, 0");
}

static void test_range_coalesce(void)
{
    const uint64_t n = 10000;
    ok(range_is("bytes=600-999,0-99", n, 8, 2, RANGES(0, 99, 600, 999)), "out of order sorted");
    ok(range_is("bytes=601-999,500-600", n, 8, 2, RANGES(500, 600, 601, 999)),
       "touching, out of order: sorted, not merged");
    ok(range_is("bytes=0-10,5-20,100-200,150-", n, 8, 2, RANGES(0, 20, 100, 9999)),
       "two merges");
    ok(range_is("bytes=0-0,0-0", n, 8, 1, RANGES(0, 0)), "duplicates");
    ok(range_is("bytes=-1,0-0", n, 8, 2, RANGES(0, 0, 9999, 9999)), "suffix first");
    ok(range_is("bytes=0-,500-600", n, 8, 1, RANGES(0, 9999)), "contained range");
    ok(range_is("bytes=500-600,0-", n, 8, 1, RANGES(0, 9999)), "containing range second");
    ok(range_is("bytes=-500,9000-9600", n, 8, 1, RANGES(9000, 9999)), "suffix overlaps");
    ok(range_is("bytes=5-5,4-4,3-3,2-2,1-1", n, 8, 5, RANGES(1, 1, 2, 2, 3, 3, 4, 4, 5, 5)),
       "reversed singles");
    ok(range_is("bytes=0-99,20000-,50-60", n, 8, 1, RANGES(0, 99)),
       "unsatisfiable between overlapping");
    /* A long reversed list exercises the in-place sort. */
    char buf[2048], *p = buf;
    p += sprintf(p, "bytes=");
    for (int i = 63; i >= 0; i--)
        p += sprintf(p, "%d-%d%s", i * 10, i * 10 + 4, i ? "," : "");
    krait__range r[MAX_CAP];
    int rc = rp(buf, n, MAX_CAP, r);
    int sorted = rc == 64;
    for (int i = 0; sorted && i < 64; i++)
        sorted = r[i].first == (uint64_t)i * 10 && r[i].last == (uint64_t)i * 10 + 4;
    ok(sorted, "64 reversed ranges sorted (rc %d)", rc);
    ok(rp(buf, n, MAX_CAP - 1, r) == KRAIT__RANGE_NONE, "64 ranges over cap 63");
}

int main(void)
{
    test_date_format();
    test_date_parse();
    test_rfc850_century();
    test_etag_make();
    test_if_none_match();
    test_if_match();
    test_modified_since();
    test_if_range();
    test_range_rfc();
    test_range_edges();
    test_range_coalesce();
    return done();
}
