/* Validators and preconditions for static files, sans-IO: HTTP-date formatting and parsing,
 * our ETag, If-None-Match / If-Match / If-Modified-Since / If-Range evaluation and Range
 * parsing (RFC 9110 §5.6.7, §8.8, §13.1, §14). It reads bytes and returns answers; choosing the
 * status code, reading the file and writing headers are left to the static-file server. No
 * allocation; the only contact with the OS is reading the clock for two-digit RFC 850 years. */
#include "cache.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------------------------------
 * Calendar arithmetic. We do it ourselves rather than through gmtime_r/timegm so that the code
 * is the same on every libc, has no locale, and cannot fail on a 32-bit time_t halfway through.
 * days_from_civil/civil_from_days are the proleptic-Gregorian algorithms of H. Hinnant
 * ("chrono-compatible low-level date algorithms"): day 0 is 1970-01-01.
 * ------------------------------------------------------------------------------------------- */

static const char day_names[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const day_names_long[7] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                              "Thursday", "Friday", "Saturday"};
static const char month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

#define SECS_PER_DAY 86400

/* The instants an IMF-fixdate can spell: 0000-01-01T00:00:00Z to 9999-12-31T23:59:59Z
 * (RFC 9110 §5.6.7: year = 4DIGIT). */
#define DATE_MIN_DAYS (-719528)
#define DATE_MAX_DAYS 2932896
#define DATE_MIN ((int64_t)DATE_MIN_DAYS * SECS_PER_DAY)
#define DATE_MAX ((int64_t)DATE_MAX_DAYS * SECS_PER_DAY + SECS_PER_DAY - 1)

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned char mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : mdays[m - 1];
}

/* y is bounded by the callers to a few thousand years around 0..9999, so nothing overflows. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void krait__civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* A broken-down UTC time; only ever filled from validated fields or from civil_from_days. */
typedef struct {
    int64_t year;
    unsigned mon, day, hour, min, sec;
} civil_time;

/* Splits t into *c and returns its day number (floor(t / 86400), also for t < 0). */
static int64_t civil_from_time(int64_t t, civil_time *c)
{
    int64_t days = t / SECS_PER_DAY, rem = t % SECS_PER_DAY;
    if (rem < 0) {
        rem += SECS_PER_DAY;
        days--;
    }
    krait__civil_from_days(days, &c->year, &c->mon, &c->day);
    c->hour = (unsigned)(rem / 3600);
    c->min = (unsigned)(rem / 60 % 60);
    c->sec = (unsigned)(rem % 60);
    return days;
}

static int64_t clamp_date(int64_t t)
{
    return t < DATE_MIN ? DATE_MIN : t > DATE_MAX ? DATE_MAX : t;
}

static void put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

void krait__http_date(time_t t, char out[KRAIT__DATE_LEN + 1])
{
    /* An instant outside years 0000..9999 has no IMF-fixdate; we write the nearest one rather
     * than a malformed field. Worked example: 784111777 -> "Sun, 06 Nov 1994 08:49:37 GMT". */
    int64_t s = clamp_date((int64_t)t);
    civil_time c;
    int64_t days = civil_from_time(s, &c);
    unsigned wday = (unsigned)(((days + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday. */
    unsigned year = (unsigned)c.year;

    memcpy(out, day_names[wday], 3);
    out[3] = ',';
    out[4] = ' ';
    put2(out + 5, c.day);
    out[7] = ' ';
    memcpy(out + 8, month_names[c.mon - 1], 3);
    out[11] = ' ';
    put2(out + 12, year / 100);
    put2(out + 14, year % 100);
    out[16] = ' ';
    put2(out + 17, c.hour);
    out[19] = ':';
    put2(out + 20, c.min);
    out[22] = ':';
    put2(out + 23, c.sec);
    memcpy(out + 25, " GMT", 4);
    out[KRAIT__DATE_LEN] = '\0';
}

/* ---------------------------------------------------------------------------------------------
 * HTTP-date parsing (RFC 9110 §5.6.7). Every form has a fixed layout once the day name is
 * known, so each parser checks the exact length first and then reads fixed offsets: no offset
 * is ever computed from the input beyond the day-name length, which is checked against len.
 * ------------------------------------------------------------------------------------------- */

static int digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Returns 1..12 for an exact, case-sensitive month name at s[0..3), else 0.
 * RFC 9110 §5.6.7: "HTTP-date is case sensitive". */
static unsigned month_of(const char *s)
{
    for (unsigned i = 0; i < 12; i++)
        if (memcmp(s, month_names[i], 3) == 0)
            return i + 1;
    return 0;
}

static int is_day_name(const char *s)
{
    for (unsigned i = 0; i < 7; i++)
        if (memcmp(s, day_names[i], 3) == 0)
            return 1;
    return 0;
}

/* Reads "HH:MM:SS" at s[0..8). RFC 9110 §5.6.7: hour 00-23, minute 00-59, second 00-60; a leap
 * second is accepted and, like timegm would, lands on the first second of the next minute. */
static int time_of_day(const char *s, civil_time *c)
{
    if (s[2] != ':' || s[5] != ':')
        return -1;
    if (digits(s, 2, &c->hour) || digits(s + 3, 2, &c->min) || digits(s + 6, 2, &c->sec))
        return -1;
    return c->hour <= 23 && c->min <= 59 && c->sec <= 60 ? 0 : -1;
}

/* The day name is checked only for spelling, not against the date: the date alone names the
 * instant, and a sender's wrong weekday is no reason to drop a validator (Go's net/http and
 * nginx accept it the same way). */
static int civil_valid(const civil_time *c)
{
    if (c->mon < 1 || c->mon > 12 || c->day < 1)
        return -1;
    return c->day <= days_in_month(c->year, c->mon) ? 0 : -1;
}

/* "Sun, 06 Nov 1994 08:49:37 GMT" */
static int parse_imf_fixdate(const char *s, size_t len, civil_time *c)
{
    unsigned year;
    if (len != KRAIT__DATE_LEN || !is_day_name(s) || memcmp(s + 3, ", ", 2) != 0 ||
        s[7] != ' ' || s[11] != ' ' || s[16] != ' ' || memcmp(s + 25, " GMT", 4) != 0)
        return -1;
    if (digits(s + 5, 2, &c->day) || !(c->mon = month_of(s + 8)) || digits(s + 12, 4, &year) ||
        time_of_day(s + 17, c))
        return -1;
    c->year = year;
    return civil_valid(c);
}

/* "Sun Nov  6 08:49:37 1994" (asctime). date3 = month SP ( 2DIGIT / ( SP DIGIT ) ). */
static int parse_asctime(const char *s, size_t len, civil_time *c)
{
    unsigned year;
    if (len != 24 || !is_day_name(s) || s[3] != ' ' || s[7] != ' ' || s[10] != ' ' ||
        s[19] != ' ')
        return -1;
    if (!(c->mon = month_of(s + 4)))
        return -1;
    if (s[8] == ' ' ? digits(s + 9, 1, &c->day) : digits(s + 8, 2, &c->day))
        return -1;
    if (time_of_day(s + 11, c) || digits(s + 20, 4, &year))
        return -1;
    c->year = year;
    return civil_valid(c);
}

static time_t clock_now(void);

/* "Sunday, 06-Nov-94 08:49:37 GMT" (RFC 850). The century comes from *now, see below; with
 * now == NULL the clock is read, and only once the syntax has been accepted. */
static int parse_rfc850(const char *s, size_t len, const time_t *now, civil_time *c)
{
    size_t n = 0;
    unsigned yy;
    for (unsigned i = 0; i < 7 && !n; i++) {
        size_t l = strlen(day_names_long[i]);
        if (len > l && memcmp(s, day_names_long[i], l) == 0 && s[l] == ',')
            n = l;
    }
    /* After the day name: ", DD-Mon-YY HH:MM:SS GMT", 24 bytes. */
    if (!n || len != n + 24)
        return -1;
    s += n;
    if (s[1] != ' ' || s[4] != '-' || s[8] != '-' || s[11] != ' ' || memcmp(s + 20, " GMT", 4))
        return -1;
    if (digits(s + 2, 2, &c->day) || !(c->mon = month_of(s + 5)) || digits(s + 9, 2, &yy) ||
        time_of_day(s + 12, c))
        return -1;

    /* RFC 9110 §5.6.7: a two-digit year that "appears to be more than 50 years in the future"
     * means the most recent past year with those digits. So the year is the latest one ending
     * in yy whose instant is at most 50 calendar years after now. Worked example, now =
     * 2025-06-01: the limit is 2075-06-01, so "94" is 1994, "70" is 2070 and "75" with a date
     * in July is 1975 but with a date in May is 2075. */
    civil_time lim;
    civil_from_time(clamp_date((int64_t)(now ? *now : clock_now())), &lim);
    lim.year += 50;
    int64_t y = lim.year - ((lim.year % 100 - (int64_t)yy) % 100 + 100) % 100;
    if (y == lim.year) {
        unsigned a[5] = {c->mon, c->day, c->hour, c->min, c->sec};
        unsigned b[5] = {lim.mon, lim.day, lim.hour, lim.min, lim.sec};
        for (int i = 0; i < 5; i++) {
            if (a[i] != b[i]) {
                if (a[i] > b[i])
                    y -= 100;
                break;
            }
        }
    }
    c->year = y;
    return civil_valid(c);
}

/* The one clock read in this file, reached only by an RFC 850 date through the entry points
 * that take no `now`. */
static time_t clock_now(void)
{
    return time(NULL);
}

static int date_parse(const char *s, size_t len, int have_now, time_t now, time_t *t)
{
    civil_time c;
    int rc;
    if (!s || len < 3)
        return -1;
    /* RFC 9110 §5.6.7: the three forms are told apart by what follows the day name. */
    if (len == KRAIT__DATE_LEN && s[3] == ',')
        rc = parse_imf_fixdate(s, len, &c);
    else if (len == 24 && s[3] == ' ')
        rc = parse_asctime(s, len, &c);
    else
        rc = parse_rfc850(s, len, have_now ? &now : NULL, &c);
    if (rc)
        return -1;
    int64_t v = days_from_civil(c.year, c.mon, c.day) * SECS_PER_DAY + (int64_t)c.hour * 3600 +
                (int64_t)c.min * 60 + c.sec;
    if ((int64_t)(time_t)v != v) /* Only possible with a 32-bit time_t. */
        return -1;
    *t = (time_t)v;
    return 0;
}

int krait__http_date_parse(const char *s, size_t len, time_t *t)
{
    return date_parse(s, len, 0, 0, t);
}

int krait__http_date_parse_at(const char *s, size_t len, time_t now, time_t *t)
{
    return date_parse(s, len, 1, now, t);
}

/* ---------------------------------------------------------------------------------------------
 * Entity tags (RFC 9110 §8.8.3).
 * ------------------------------------------------------------------------------------------- */

static char *put_hex(char *p, uint64_t v)
{
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

size_t krait__etag_make(uint64_t ino, uint64_t size, int64_t mtime_sec, long mtime_nsec,
                        char out[KRAIT__ETAG_MAX])
{
    /* The modification time in nanoseconds is computed modulo 2^64: unsigned arithmetic cannot
     * overflow, and two mtimes only collide if they are 584 years apart with the same inode and
     * size. Longest result: 2 quotes + 3 x 16 digits + 2 dashes = 52 bytes, plus NUL. */
    uint64_t ns = (uint64_t)mtime_sec * 1000000000u + (uint64_t)(int64_t)mtime_nsec;
    char *p = out;
    *p++ = '"';
    p = put_hex(p, ino);
    *p++ = '-';
    p = put_hex(p, size);
    *p++ = '-';
    p = put_hex(p, ns);
    *p++ = '"';
    *p = '\0';
    return (size_t)(p - out);
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Drops leading and trailing OWS from s[*i..*end); the HTTP parser already trims field values
 * (RFC 9110 §5.5), this keeps direct callers equally safe. */
static void trim(const char *s, size_t *i, size_t *end)
{
    while (*i < *end && is_ows(s[*i]))
        (*i)++;
    while (*end > *i && is_ows(s[*end - 1]))
        (*end)--;
}

/* etagc = %x21 / %x23-7E / obs-text (RFC 9110 §8.8.3). */
static int is_etagc(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c != 0x7f);
}

typedef struct {
    int weak;
    const char *tag; /* opaque-tag, quotes included */
    size_t tag_len;
} etag_view;

/* Reads one entity-tag at s[*i..end) and advances *i past it. Returns 0 or -1 (malformed).
 * entity-tag = [ weakness ] opaque-tag; weakness = %s"W/" (case-sensitive). */
static int etag_scan(const char *s, size_t *i, size_t end, etag_view *e)
{
    size_t p = *i;
    e->weak = 0;
    if (end - p >= 2 && s[p] == 'W' && s[p + 1] == '/') {
        e->weak = 1;
        p += 2;
    }
    if (p >= end || s[p] != '"')
        return -1;
    size_t start = p++;
    while (p < end && s[p] != '"') {
        if (!is_etagc((unsigned char)s[p]))
            return -1;
        p++;
    }
    if (p >= end)
        return -1;
    p++;
    e->tag = s + start;
    e->tag_len = p - start;
    *i = p;
    return 0;
}

/* Our own tag as a view; 0 on success, -1 if the caller's etag is not one entity-tag, in which
 * case only "*" can match (there is no tag to compare with). */
static int own_etag(const char *etag, size_t etag_len, etag_view *e)
{
    size_t i = 0;
    if (!etag || etag_len == 0)
        return -1;
    return etag_scan(etag, &i, etag_len, e) == 0 && i == etag_len ? 0 : -1;
}

/* RFC 9110 §8.8.3.2: strong comparison needs both tags strong; weak comparison ignores W/. */
static int etag_equal(const etag_view *a, const etag_view *b, int strong)
{
    if (strong && (a->weak || b->weak))
        return 0;
    return a->tag_len == b->tag_len && memcmp(a->tag, b->tag, a->tag_len) == 0;
}

/* The body of If-Match and If-None-Match: "*" / #entity-tag. The whole field is validated
 * before answering, so a match followed by garbage is still "malformed" (-1): the result does
 * not depend on where in the list the garbage sits. */
static int etag_list_match(const char *s, size_t len, const char *etag, size_t etag_len,
                           int strong)
{
    size_t i = 0, end = len;
    if (!s)
        return len ? -1 : 0;
    trim(s, &i, &end);
    if (i == end)
        return 0; /* The contract: an empty value matches nothing. */
    if (s[i] == '*')
        return end - i == 1 ? 1 : -1; /* "*" is the whole value or nothing. */

    etag_view mine, theirs;
    int have_mine = own_etag(etag, etag_len, &mine) == 0;
    int matched = 0;
    for (;;) {
        /* RFC 9110 §5.6.1.2: a recipient accepts and ignores empty list elements. */
        while (i < end && (is_ows(s[i]) || s[i] == ','))
            i++;
        if (i == end)
            break;
        if (etag_scan(s, &i, end, &theirs))
            return -1;
        if (have_mine && etag_equal(&mine, &theirs, strong))
            matched = 1;
        while (i < end && is_ows(s[i]))
            i++;
        if (i < end && s[i] != ',')
            return -1;
    }
    return matched;
}

int krait__if_none_match(const char *inm, size_t len, const char *etag, size_t etag_len)
{
    /* RFC 9110 §13.1.2: If-None-Match uses the weak comparison function. */
    return etag_list_match(inm, len, etag, etag_len, 0);
}

int krait__if_match(const char *im, size_t len, const char *etag, size_t etag_len)
{
    /* RFC 9110 §13.1.1: If-Match uses the strong comparison function. */
    return etag_list_match(im, len, etag, etag_len, 1);
}

int krait__modified_since(const char *date, size_t len, time_t mtime)
{
    size_t i = 0, end = len;
    time_t t;
    if (!date)
        return -1;
    trim(date, &i, &end);
    /* RFC 9110 §13.1.3: an invalid date, or more than one member, means the field is ignored;
     * a list never has the exact length of a single date, so it fails to parse. */
    if (krait__http_date_parse(date + i, end - i, &t))
        return -1;
    return mtime > t ? 1 : 0;
}

int krait__if_range(const char *v, size_t len, const char *etag, size_t etag_len, time_t mtime)
{
    size_t i = 0, end = len;
    if (!v)
        return 0;
    trim(v, &i, &end);
    /* RFC 9110 §13.1.5: "A valid entity-tag can be distinguished from a valid HTTP-date by
     * examining the first three characters for a DQUOTE." */
    int is_tag = 0;
    for (size_t k = i; k < end && k < i + 3; k++)
        if (v[k] == '"')
            is_tag = 1;
    if (is_tag) {
        etag_view mine, theirs;
        if (etag_scan(v, &i, end, &theirs) || i != end || own_etag(etag, etag_len, &mine))
            return 0;
        /* RFC 9110 §13.1.5: the condition is true only for a strong match; a weak tag in
         * If-Range never matches. */
        return etag_equal(&mine, &theirs, 1);
    }
    /* RFC 9110 §13.1.5: an HTTP-date holds only if it exactly matches Last-Modified. Whether
     * that Last-Modified is a strong validator (§8.8.2.2: at least one second older than the
     * Date) is the caller's call, since only the caller has the clock. */
    time_t t;
    if (krait__http_date_parse(v + i, end - i, &t))
        return 0;
    return t == mtime ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------------
 * Range (RFC 9110 §14.1.2, §14.2).
 * ------------------------------------------------------------------------------------------- */

/* Reads 1*DIGIT at s[*i..end) into *out. Returns 1 if it read digits, 0 if there were none,
 * -1 on overflow past 2^64-1 (the whole field is then ignored). Leading zeros are fine. */
static int read_pos(const char *s, size_t *i, size_t end, uint64_t *out)
{
    size_t p = *i;
    uint64_t v = 0;
    while (p < end && s[p] >= '0' && s[p] <= '9') {
        unsigned d = (unsigned)(s[p] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
        p++;
    }
    if (p == *i)
        return 0;
    *i = p;
    *out = v;
    return 1;
}

static int range_less(const krait__range *a, const krait__range *b)
{
    return a->first < b->first || (a->first == b->first && a->last < b->last);
}

static void sift_down(krait__range *r, size_t root, size_t n)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && range_less(&r[child], &r[child + 1]))
            child++;
        if (!range_less(&r[root], &r[child]))
            return;
        krait__range tmp = r[root];
        r[root] = r[child];
        r[child] = tmp;
        root = child;
    }
}

/* Heapsort: in place and O(n log n) whatever cap the caller chose. */
static void sort_ranges(krait__range *r, size_t n)
{
    for (size_t k = n / 2; k-- > 0;)
        sift_down(r, k, n);
    for (size_t end = n; end-- > 1;) {
        krait__range tmp = r[0];
        r[0] = r[end];
        r[end] = tmp;
        sift_down(r, 0, end);
    }
}

/* Sorts and merges ranges that share at least one byte; returns the new count. Ranges that
 * merely touch (500-600, 601-999) stay apart, so the result is the same as for a request that
 * listed them in order. Example: 600-999, 0-99, 50-120 -> 0-120, 600-999. */
static size_t coalesce(krait__range *r, size_t n)
{
    sort_ranges(r, n);
    size_t k = 0;
    for (size_t j = 1; j < n; j++) {
        if (r[j].first <= r[k].last) {
            if (r[j].last > r[k].last)
                r[k].last = r[j].last;
        } else {
            r[++k] = r[j];
        }
    }
    return k + 1;
}

int krait__range_parse(const char *v, size_t len, uint64_t size, krait__range *out, size_t cap)
{
    size_t i = 0, end = len;
    size_t specs = 0, n = 0;
    int disorder = 0;
    if (!v)
        return KRAIT__RANGE_NONE;
    if (cap > INT_MAX)
        cap = INT_MAX;
    trim(v, &i, &end);

    /* RFC 9110 §14.1: range units are case-insensitive; §14.2: a server MUST ignore a Range
     * with a unit it does not understand. ranges-specifier = range-unit "=" range-set. */
    static const char unit[] = "bytes=";
    if (end - i < sizeof unit - 1)
        return KRAIT__RANGE_NONE;
    for (size_t k = 0; k < sizeof unit - 1; k++) {
        char c = v[i + k];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != unit[k])
            return KRAIT__RANGE_NONE;
    }
    i += sizeof unit - 1;

    for (;;) {
        /* range-set = 1#range-spec. RFC 9110 §5.6.1.2: empty elements and OWS around commas
         * are accepted; OWS right after "=" too, as in the §14.1.2 example
         * "bytes= 0-999, 4500-5499, -1000". */
        while (i < end && (is_ows(v[i]) || v[i] == ','))
            i++;
        if (i == end)
            break;

        uint64_t first = 0, last = 0;
        int has_first = read_pos(v, &i, end, &first);
        if (has_first < 0 || i == end || v[i] != '-')
            return KRAIT__RANGE_NONE;
        i++;
        int has_last = read_pos(v, &i, end, &last);
        if (has_last < 0 || (!has_first && !has_last))
            return KRAIT__RANGE_NONE;
        /* RFC 9110 §14.1.1: an int-range whose last-pos is less than its first-pos is invalid,
         * and §14.2 lets a server ignore a Range with an invalid ranges-specifier. */
        if (has_first && has_last && last < first)
            return KRAIT__RANGE_NONE;
        /* RFC 9110 §14.2: a server may ignore a Range with "more than some threshold" of
         * ranges; the threshold counts every range-spec, satisfiable or not. */
        if (++specs > cap)
            return KRAIT__RANGE_NONE;

        krait__range r;
        int satisfiable;
        if (has_first) {
            /* RFC 9110 §14.1.1: satisfiable iff first-pos < length; a last-pos at or past the
             * end means the rest of the representation. */
            satisfiable = first < size;
            r.first = first;
            r.last = has_last && last < size ? last : size - 1;
        } else {
            /* suffix-range: the last `last` bytes, all of them if that is more than there are;
             * "-0" is unsatisfiable. §14.1.1 calls a non-zero suffix of an empty representation
             * satisfiable, but it selects no byte, so the contract makes it unsatisfiable. */
            satisfiable = last > 0 && size > 0;
            r.first = last >= size ? 0 : size - last;
            r.last = size - 1;
        }
        if (satisfiable) {
            if (n > 0 && r.first <= out[n - 1].last)
                disorder = 1;
            out[n++] = r;
        }

        while (i < end && is_ows(v[i]))
            i++;
        if (i < end && v[i] != ',')
            return KRAIT__RANGE_NONE;
    }

    if (specs == 0)
        return KRAIT__RANGE_NONE; /* "bytes=" or "bytes=,": 1#range-spec needs one. */
    if (n == 0)
        return KRAIT__RANGE_UNSATISFIABLE;
    /* RFC 9110 §14.2: a server MAY coalesce overlapping ranges or ones out of order. */
    if (disorder)
        n = coalesce(out, n);
    return (int)n;
}
