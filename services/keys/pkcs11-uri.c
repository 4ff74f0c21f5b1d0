/* SPDX-License-Identifier: MIT */
#include <limits.h>
#include <stdarg.h>

#include "pkcs11-uri.h"

#define SCHEME "pkcs11:"
/* How many bytes of a bad value an error message quotes. */
#define ERROR_VALUE_MAX 64u

static const char hex_upper[] = "0123456789ABCDEF";

static bool ascii_alnum(unsigned char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char *append_escaped(char *p, unsigned char c)
{
        *p++ = '%';
        *p++ = hex_upper[c >> 4];
        *p++ = hex_upper[c & 0xf];
        return p;
}

Pkcs11Uri *pkcs11_uri_free(Pkcs11Uri *u)
{
        if (!u)
                return NULL;
        free(u->token);
        free(u->object);
        if (u->pin)
                erase_and_free(u->pin, strlen(u->pin));
        free(u);
        return NULL;
}

bool pkcs11_uri_is(const char *text)
{
        return text && startswith(text, SCHEME);
}

_printf_(2, 3) static int set_error(char **ret_error, const char *format, ...)
{
        va_list ap;
        int r;

        if (!ret_error)
                return -EINVAL;
        va_start(ap, format);
        r = vasprintf(ret_error, format, ap);
        va_end(ap);
        if (r < 0) {
                *ret_error = NULL;
                return -ENOMEM;
        }
        return -EINVAL;
}

/* The raw text of a (never secret) value for an error message: at most ERROR_VALUE_MAX bytes, with
 * quotes, backslashes and bytes that are not printable ASCII percent-encoded, so that the message
 * stays one line of ASCII whatever the URI holds. */
static char *quote_raw(const char *s, size_t n)
{
        size_t m = MIN(n, (size_t)ERROR_VALUE_MAX);
        char *q, *p;

        q = p = malloc(m * 3 + STRLEN("...") + 1);
        if (!q)
                return NULL;
        for (size_t i = 0; i < m; i++) {
                unsigned char c = s[i];

                if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
                        p = append_escaped(p, c);
                else
                        *p++ = c;
        }
        if (n > m)
                p = stpcpy(p, "...");
        *p = 0;
        return q;
}

/* Decodes the n bytes at s: -EINVAL on a malformed escape, -EBADMSG on %00. The partial result is
 * wiped on failure, as it may be part of a PIN. */
static int percent_decode(const char *s, size_t n, char **ret)
{
        char *d = malloc(n + 1);
        size_t k = 0;
        int r = 0;

        if (!d)
                return -ENOMEM;
        for (size_t i = 0; i < n && r == 0; i++) {
                int hi, lo;

                if (s[i] != '%') {
                        d[k++] = s[i];
                        continue;
                }
                hi = i + 1 < n ? unhexchar(s[i + 1]) : -1;
                lo = i + 2 < n ? unhexchar(s[i + 2]) : -1;
                if (hi < 0 || lo < 0)
                        r = -EINVAL;
                else if (hi == 0 && lo == 0)
                        r = -EBADMSG;
                else
                        d[k++] = (char)(hi << 4 | lo);
                i += 2;
        }
        d[k] = 0;
        if (r < 0) {
                erase_and_free(d, n + 1);
                return r;
        }
        *ret = d;
        return 0;
}

static int decode_error(int r, const char *name, char **ret_error)
{
        if (r == -EINVAL)
                return set_error(ret_error, "invalid percent-encoding in attribute \"%s\"", name);
        if (r == -EBADMSG)
                return set_error(ret_error, "attribute \"%s\" contains a NUL byte (%%00)", name);
        return r;
}

static bool name_is(const char *a, size_t n, const char *name)
{
        return strlen(name) == n && memcmp(a, name, n) == 0;
}

/* token= and object=: a non-empty label, given at most once. */
static int parse_label(const char *name, const char *v, size_t n, char **target, char **ret_error)
{
        int r;

        if (*target)
                return set_error(ret_error, "attribute \"%s\" given twice", name);
        if (n == 0)
                return set_error(ret_error, "attribute \"%s\" is empty", name);
        r = percent_decode(v, n, target);
        return r < 0 ? decode_error(r, name, ret_error) : 0;
}

static int slot_id_error(const char *v, size_t n, const char *what, char **ret_error)
{
        _cleanup_free_ char *q = NULL;

        if (!ret_error)
                return -EINVAL;
        q = quote_raw(v, n);
        if (!q)
                return -ENOMEM;
        return set_error(ret_error, "slot-id \"%s\" %s", q, what);
}

/* slot-id=: a decimal CK_SLOT_ID, nothing else (no sign, blanks or hex). */
static int parse_slot_id(Pkcs11Uri *u, const char *v, size_t n, char **ret_error)
{
        _cleanup_free_ char *d = NULL;
        unsigned long id = 0;
        int r;

        if (u->has_slot_id)
                return set_error(ret_error, "attribute \"slot-id\" given twice");
        if (n == 0)
                return set_error(ret_error, "attribute \"slot-id\" is empty");
        r = percent_decode(v, n, &d);
        if (r < 0)
                return decode_error(r, "slot-id", ret_error);
        for (const char *p = d; *p; p++) {
                unsigned digit = (unsigned char)*p - '0';

                if (digit > 9)
                        return slot_id_error(v, n, "is not a number", ret_error);
                if (id > (ULONG_MAX - digit) / 10)
                        return slot_id_error(v, n, "is out of range", ret_error);
                id = id * 10 + digit;
        }
        u->slot_id = id;
        u->has_slot_id = true;
        return 0;
}

static int parse_attribute(Pkcs11Uri *u, const char *a, size_t n, bool in_query, char **ret_error)
{
        const char *eq, *v;
        size_t name_len, vn;
        int r;

        /* An empty attribute ("pkcs11:token=a;", "…?") is skipped, as upstream does. */
        if (n == 0)
                return 0;
        eq = memchr(a, '=', n);
        if (!eq) {
                _cleanup_free_ char *q = NULL;

                /* In the query, this may be the tail of a PIN with an unescaped "&": not quoted. */
                if (in_query)
                        return set_error(ret_error, "query attribute without \"=\"");
                if (!ret_error)
                        return -EINVAL;
                q = quote_raw(a, n);
                if (!q)
                        return -ENOMEM;
                return set_error(ret_error, "attribute without \"=\": \"%s\"", q);
        }
        name_len = eq - a;
        v = eq + 1;
        vn = n - name_len - 1;

        if (in_query) {
                if (!name_is(a, name_len, "pin-value"))
                        return 0;
                if (u->pin)
                        return set_error(ret_error, "attribute \"pin-value\" given twice");
                /* An empty PIN is a PIN (some tokens have one). */
                r = percent_decode(v, vn, &u->pin);
                return r < 0 ? decode_error(r, "pin-value", ret_error) : 0;
        }
        if (name_is(a, name_len, "token"))
                return parse_label("token", v, vn, &u->token, ret_error);
        if (name_is(a, name_len, "object"))
                return parse_label("object", v, vn, &u->object, ret_error);
        if (name_is(a, name_len, "slot-id"))
                return parse_slot_id(u, v, vn, ret_error);
        return 0; /* manufacturer=, model=, serial=, id=, type=, library-*= … */
}

/* Parses the attributes between s and end, separated by sep. */
static int parse_list(Pkcs11Uri *u, const char *s, const char *end, char sep, bool in_query,
                      char **ret_error)
{
        int r;

        for (;;) {
                const char *e = memchr(s, sep, end - s) ?: end;

                r = parse_attribute(u, s, e - s, in_query, ret_error);
                if (r < 0)
                        return r;
                if (e == end)
                        return 0;
                s = e + 1;
        }
}

int pkcs11_uri_check_slot(const Pkcs11Uri *u, char **ret_error)
{
        if (!u->has_slot_id && !u->token)
                return set_error(ret_error, "the URI names neither a token nor a slot-id");
        return 0;
}

int pkcs11_uri_parse(const char *text, Pkcs11Uri **ret, char **ret_error)
{
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *u = NULL;
        const char *path, *query;
        int r;

        if (ret_error)
                *ret_error = NULL;
        /* The text is never quoted: it may hold the PIN. */
        if (!pkcs11_uri_is(text))
                return set_error(ret_error, "URI does not start with \"" SCHEME "\"");
        path = text + STRLEN(SCHEME);

        u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;

        query = strchr(path, '?');
        r = parse_list(u, path, query ?: path + strlen(path), ';', /* in_query= */ false,
                       ret_error);
        if (r < 0)
                return r;
        if (query) {
                query++;
                r = parse_list(u, query, query + strlen(query), '&', /* in_query= */ true,
                               ret_error);
                if (r < 0)
                        return r;
        }
        r = pkcs11_uri_check_slot(u, ret_error);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(u);
        return 0;
}

static char *append_attribute(char *p, const char *sep, const char *name, const char *value)
{
        p = stpcpy(stpcpy(stpcpy(p, sep), name), "=");
        for (const char *s = value; *s; s++)
                if (ascii_alnum(*s))
                        *p++ = *s;
                else
                        p = append_escaped(p, *s);
        return p;
}

char *pkcs11_uri_to_display(const Pkcs11Uri *u)
{
        size_t n = STRLEN(SCHEME) + STRLEN("slot-id=") + 20 + 1;
        const char *sep = "";
        char *s, *p;

        if (u->token)
                n += STRLEN(";token=") + 3 * strlen(u->token);
        if (u->object)
                n += STRLEN(";object=") + 3 * strlen(u->object);
        s = malloc(n);
        if (!s)
                return NULL;

        p = stpcpy(s, SCHEME);
        if (u->has_slot_id) {
                p += sprintf(p, "slot-id=%lu", u->slot_id);
                sep = ";";
        }
        if (u->token) {
                p = append_attribute(p, sep, "token", u->token);
                sep = ";";
        }
        if (u->object)
                p = append_attribute(p, sep, "object", u->object);
        *p = 0;
        return s;
}

Pkcs11Uri *pkcs11_uri_with_object(const Pkcs11Uri *u, const char *object)
{
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *c = NULL;

        c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->has_slot_id = u->has_slot_id;
        c->slot_id = u->slot_id;
        if ((u->token && !(c->token = strdup(u->token))) ||
            (object && !(c->object = strdup(object))) || (u->pin && !(c->pin = strdup(u->pin))))
                return NULL;
        return TAKE_PTR(c);
}
