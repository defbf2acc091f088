/* A small, strict JSON checker for the access log's lines (RFC 8259), written apart from
 * logjson.c so that the tests do not trust the code they test: jc_line parses one line (an
 * object whose values are strings, numbers, true, false or null, then "\n"), jc_string decodes
 * a string's inside to UTF-8 (refusing raw control bytes, bad escapes, lone surrogates and
 * invalid UTF-8), and jc_bytes undoes the log's \xHH convention to give the bytes a client
 * sent. Used by tests/native/test_logjson.c and tests/fuzz/fuzz_logjson.c. */
#ifndef KRAIT_TEST_JSON_CHECK_H
#define KRAIT_TEST_JSON_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define JC_FN __attribute__((unused)) static

enum { JC_STRING = 1, JC_NUMBER, JC_TRUE, JC_FALSE, JC_NULL };

typedef struct {
    const char *key;        /* inside the quotes, not decoded */
    size_t key_len;
    int type;
    const char *val;        /* a string's inside (not decoded), or the literal's text */
    size_t val_len;
} jc_pair;

JC_FN int jc_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

JC_FN size_t jc_put_utf8(unsigned char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* One raw UTF-8 character at s[0..n): its code point and length, or 0 if invalid. Decodes the
 * value and checks its range (the encoder under test checks lead and second bytes instead). */
JC_FN size_t jc_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t v, min;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    } else if ((s[0] & 0xe0) == 0xc0) {
        len = 2, v = s[0] & 0x1f, min = 0x80;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3, v = s[0] & 0x0f, min = 0x800;
    } else if ((s[0] & 0xf8) == 0xf0) {
        len = 4, v = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* Decode a JSON string's inside s[0..n) into out (at least n bytes); returns the length, or -1
 * if it is not a valid JSON string of valid UTF-8. */
JC_FN long jc_string(const char *str, size_t n, unsigned char *out)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, o = 0;
    while (i < n) {
        if (s[i] == '"' || s[i] < 0x20)
            return -1;
        if (s[i] != '\\') {
            uint32_t cp;
            size_t len = jc_utf8(s + i, n - i, &cp);
            if (!len)
                return -1;
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
            continue;
        }
        if (++i >= n)
            return -1;
        const char *simple = strchr("\"\\/bfnrt", s[i]);
        if (s[i] && simple) {
            out[o++] = (unsigned char)"\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            i++;
            continue;
        }
        if (s[i] != 'u' || n - i < 5)
            return -1;
        uint32_t cp = 0;
        for (int k = 1; k <= 4; k++) {
            int h = jc_hex(s[i + k]);
            if (h < 0)
                return -1;
            cp = cp << 4 | (uint32_t)h;
        }
        i += 5;
        if (cp >= 0xdc00 && cp <= 0xdfff)
            return -1;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (n - i < 6 || s[i] != '\\' || s[i + 1] != 'u')
                return -1;
            uint32_t lo = 0;
            for (int k = 2; k <= 5; k++) {
                int h = jc_hex(s[i + k]);
                if (h < 0)
                    return -1;
                lo = lo << 4 | (uint32_t)h;
            }
            if (lo < 0xdc00 || lo > 0xdfff)
                return -1;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            i += 6;
        }
        o += jc_put_utf8(out + o, cp);
    }
    return (long)o;
}

/* The log's convention undone: each "\xHH" of a decoded value is byte HH (a literal backslash
 * was logged as \x5c, so every backslash starts one). out needs n bytes; -1 for a backslash
 * that starts no \xHH. */
JC_FN long jc_bytes(const unsigned char *d, size_t n, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] != '\\') {
            out[o++] = d[i];
            continue;
        }
        if (n - i < 4 || d[i + 1] != 'x' || jc_hex(d[i + 2]) < 0 || jc_hex(d[i + 3]) < 0)
            return -1;
        out[o++] = (unsigned char)(jc_hex(d[i + 2]) << 4 | jc_hex(d[i + 3]));
        i += 3;
    }
    return (long)o;
}

/* The end of the string starting after its opening quote at s[i], or 0. */
JC_FN size_t jc_skip_string(const char *s, size_t n, size_t i)
{
    while (i < n && s[i] != '"')
        i += s[i] == '\\' ? 2 : 1;
    return i < n ? i : 0;
}

/* A JSON number (RFC 8259 §6) at s[i..n): its end, or 0. */
JC_FN size_t jc_skip_number(const char *s, size_t n, size_t i)
{
    if (i < n && s[i] == '-')
        i++;
    if (i >= n || s[i] < '0' || s[i] > '9')
        return 0;
    if (s[i] == '0')
        i++;
    else
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return 0;
    }
    return i;
}

/* Parse one line s[0..n): '{', pairs, '}', '\n', nothing else, no spaces (the log writes
 * none). Fills up to max pairs; returns their number, or -1 if the line is not such an
 * object of valid strings (each string is decoded to check it). */
JC_FN int jc_line(const char *s, size_t n, jc_pair *pairs, int max)
{
    static unsigned char scratch[1 << 16];
    size_t i = 0;
    int np = 0;
    if (n < 3 || s[0] != '{' || s[n - 1] != '\n' || s[n - 2] != '}')
        return -1;
    n--;  /* the newline */
    i = 1;
    if (s[i] == '}')
        return i + 1 == n ? 0 : -1;
    for (;;) {
        if (i >= n || s[i] != '"' || np >= max)
            return -1;
        size_t end = jc_skip_string(s, n, i + 1);
        if (!end || end - i - 1 > sizeof scratch || jc_string(s + i + 1, end - i - 1, scratch) < 0)
            return -1;
        jc_pair *p = &pairs[np++];
        p->key = s + i + 1;
        p->key_len = end - i - 1;
        i = end + 1;
        if (i >= n || s[i] != ':')
            return -1;
        i++;
        if (i < n && s[i] == '"') {
            end = jc_skip_string(s, n, i + 1);
            if (!end || end - i - 1 > sizeof scratch ||
                jc_string(s + i + 1, end - i - 1, scratch) < 0)
                return -1;
            p->type = JC_STRING;
            p->val = s + i + 1;
            p->val_len = end - i - 1;
            i = end + 1;
        } else {
            static const struct { const char *t; int type; } lits[] = {
                {"true", JC_TRUE}, {"false", JC_FALSE}, {"null", JC_NULL}};
            size_t end2 = 0;
            for (size_t k = 0; k < 3; k++) {
                size_t ln = strlen(lits[k].t);
                if (n - i >= ln && memcmp(s + i, lits[k].t, ln) == 0) {
                    p->type = lits[k].type;
                    end2 = i + ln;
                }
            }
            if (!end2) {
                end2 = jc_skip_number(s, n, i);
                if (!end2)
                    return -1;
                p->type = JC_NUMBER;
            }
            p->val = s + i;
            p->val_len = end2 - i;
            i = end2;
        }
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        return i + 1 == n && s[i] == '}' ? np : -1;
    }
}

#endif
