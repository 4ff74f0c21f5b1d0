/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "json.h"
#include "macro.h"

/* serde_json allows 128 levels of recursion, counting the container being entered. */
#define JSON_MAX_DEPTH 128

/* How values nobody asked for are read: as serde's IgnoredAny (iterative, strings not decoded), or
 * as serde's Content, which flattened structs collect (recursive, strings and numbers decoded). */
typedef enum SkipMode {
        SKIP_IGNORE,
        SKIP_CONTENT,
} SkipMode;

static inline bool is_digit(int c)
{
        return c >= '0' && c <= '9';
}

void json_reader_init(JsonReader *r, const char *text, size_t len, JsonError *error)
{
        *r = (JsonReader){
                .text = text,
                .len = len,
                .line = 1,
                .remaining_depth = JSON_MAX_DEPTH,
                .error = error,
        };
        *error = (JsonError){};
}

void json_reader_init_fixed(JsonReader *r, const char *text, size_t len, unsigned line,
                            unsigned column, JsonError *error)
{
        json_reader_init(r, text, len, error);
        r->fixed = true;
        r->fixed_line = line;
        r->fixed_column = column;
}

void json_error_append(Buffer *b, const JsonError *e)
{
        if (e->line == 0)
                buffer_append_str(b, e->message);
        else
                buffer_appendf(b, "%s at line %u column %u", e->message, e->line, e->column);
}

/* serde_json's position_of_index(): the line of byte i and the bytes before it on that line. */
static void position_of(const JsonReader *r, size_t i, unsigned *ret_line, unsigned *ret_column)
{
        unsigned line = r->line;
        size_t line_start = r->line_start;

        if (r->fixed) {
                *ret_line = r->fixed_line;
                *ret_column = r->fixed_column;
                return;
        }
        i = MIN(i, r->len);
        for (size_t j = line_start; j < i; j++)
                if (r->text[j] == '\n') {
                        line++;
                        line_start = j + 1;
                }
        *ret_line = line;
        *ret_column = (unsigned)(i >= line_start ? i - line_start : 0);
}

static int fail_at(JsonReader *r, size_t i, const char *message)
{
        position_of(r, i, &r->error->line, &r->error->column);
        snprintf(r->error->message, sizeof(r->error->message), "%s", message);
        return -EINVAL;
}

/* serde_json's error(): at the last byte read. */
static int fail(JsonReader *r, const char *message)
{
        return fail_at(r, r->index, message);
}

/* serde_json's peek_error(): at the byte looked at but not read. */
static int fail_peek(JsonReader *r, const char *message)
{
        return fail_at(r, MIN(r->index + 1, r->len), message);
}

static int fail_pending(JsonReader *r, const char *format, ...)
        __attribute__((format(printf, 2, 3)));
/* An error raised while reading an object's members, before its closing brace: serde positions it
 * only after the brace has been read (see fix_position()). */
static int fail_pending(JsonReader *r, const char *format, ...)
{
        va_list ap;

        va_start(ap, format);
        vsnprintf(r->error->message, sizeof(r->error->message), format, ap);
        va_end(ap);
        r->error->line = 0;
        return -EINVAL;
}

static void fix_position(JsonReader *r)
{
        if (r->error->line == 0)
                position_of(r, r->index, &r->error->line, &r->error->column);
}

int json_reader_fail(JsonReader *r, const char *format, ...)
{
        va_list ap;

        va_start(ap, format);
        vsnprintf(r->error->message, sizeof(r->error->message), format, ap);
        va_end(ap);
        position_of(r, r->index, &r->error->line, &r->error->column);
        return -EINVAL;
}

/* Skips whitespace; returns the next byte without reading it, or -1 at the end. */
static int peek(JsonReader *r)
{
        while (r->index < r->len) {
                char c = r->text[r->index];

                if (c == '\n') {
                        r->index++;
                        r->line++;
                        r->line_start = r->index;
                } else if (c == ' ' || c == '\t' || c == '\r') {
                        r->index++;
                } else {
                        return (unsigned char)c;
                }
        }
        return -1;
}

/* Enters the list or map whose bracket is next; serde checks the depth before reading it. */
static int enter(JsonReader *r)
{
        if (--r->remaining_depth == 0)
                return fail_peek(r, "recursion limit exceeded");
        r->index++;
        return 0;
}

static void leave(JsonReader *r)
{
        r->remaining_depth++;
}

/* The rest of "null", "true" or "false" after its first byte. */
static int read_ident(JsonReader *r, const char *rest)
{
        for (; *rest; rest++) {
                if (r->index >= r->len)
                        return fail(r, "EOF while parsing a value");
                if (r->text[r->index++] != *rest)
                        return fail(r, "expected ident");
        }
        return 0;
}

/* --- Numbers --- */

/* Reads a number starting at r->index ('-' or a digit). strict: serde's parse path (EOF is "EOF
 * while parsing a value", the value must fit a double); otherwise its ignore path (every
 * malformation is "invalid number", any magnitude is fine). */
static int read_number(JsonReader *r, bool strict, size_t *ret_start)
{
        size_t start = r->index;
        const char *eof_message = strict ? "EOF while parsing a value" : "invalid number";
        char c;

        if (r->text[r->index] == '-')
                r->index++;
        if (r->index >= r->len)
                return fail(r, eof_message);
        c = r->text[r->index++];
        if (c == '0') {
                if (r->index < r->len && is_digit(r->text[r->index]))
                        return fail_peek(r, "invalid number");
        } else if (is_digit(c)) {
                while (r->index < r->len && is_digit(r->text[r->index]))
                        r->index++;
        } else {
                return fail(r, "invalid number");
        }

        if (r->index < r->len && r->text[r->index] == '.') {
                r->index++;
                if (r->index >= r->len)
                        return fail_peek(r, eof_message);
                if (!is_digit(r->text[r->index]))
                        return fail_peek(r, "invalid number");
                while (r->index < r->len && is_digit(r->text[r->index]))
                        r->index++;
        }

        if (r->index < r->len && (r->text[r->index] == 'e' || r->text[r->index] == 'E')) {
                r->index++;
                if (r->index < r->len && (r->text[r->index] == '+' || r->text[r->index] == '-'))
                        r->index++;
                if (r->index >= r->len)
                        return fail(r, eof_message);
                if (!is_digit(r->text[r->index++]))
                        return fail(r, "invalid number");
                while (r->index < r->len && is_digit(r->text[r->index]))
                        r->index++;
        }

        if (ret_start)
                *ret_start = start;
        return 0;
}

/* Formats a double the way Rust's ryu crate does: shortest round-trip digits, "1.0", "1e16",
 * "1.5e-7". */
static void format_float(double v, char *buf, size_t size)
{
        char digits[32], sci[40];
        int exp10, n_digits, point;
        bool negative = signbit(v);
        const char *sign = negative ? "-" : "";

        if (v == 0) {
                snprintf(buf, size, "%s0.0", sign);
                return;
        }
        for (int precision = 1; precision <= 17; precision++) {
                snprintf(sci, sizeof(sci), "%.*e", precision - 1, fabs(v));
                if (strtod(sci, NULL) == fabs(v))
                        break;
        }
        /* sci is "d.ddde±x": collect the digits and the exponent. */
        n_digits = 0;
        for (const char *p = sci; *p && *p != 'e'; p++)
                if (is_digit(*p))
                        digits[n_digits++] = *p;
        while (n_digits > 1 && digits[n_digits - 1] == '0')
                n_digits--;
        digits[n_digits] = 0;
        exp10 = atoi(strchr(sci, 'e') + 1);
        point = exp10 + 1; /* digits before the decimal point */

        if (point > 0 && point <= 16) {
                if (n_digits <= point)
                        snprintf(buf, size, "%s%s%.*s.0", sign, digits, point - n_digits,
                                 "0000000000000000");
                else
                        snprintf(buf, size, "%s%.*s.%s", sign, point, digits, digits + point);
        } else if (point <= 0 && point > -5) {
                snprintf(buf, size, "%s0.%.*s%s", sign, -point, "0000", digits);
        } else if (n_digits == 1) {
                snprintf(buf, size, "%s%se%d", sign, digits, exp10);
        } else {
                snprintf(buf, size, "%s%c.%se%d", sign, digits[0], digits + 1, exp10);
        }
}

/* Describes the number text[start..index) as serde's Unexpected: "integer `N`" when it is an
 * integer that fits 64 bits, else "floating point `x`". An infinite value is an error. */
static int describe_number(JsonReader *r, size_t start, Buffer *what)
{
        _cleanup_free_ char *s = strndup(r->text + start, r->index - start);
        bool integer;
        char *end;
        double d;

        if (!s)
                return -ENOMEM;
        integer = !strpbrk(s, ".eE");
        errno = 0;
        if (integer && s[0] == '-') {
                long long v = strtoll(s, &end, 10);

                if (errno == 0) {
                        buffer_appendf(what, "integer `%lld`", v);
                        return 0;
                }
        } else if (integer) {
                unsigned long long v = strtoull(s, &end, 10);

                if (errno == 0) {
                        buffer_appendf(what, "integer `%llu`", v);
                        return 0;
                }
        }
        d = strtod(s, &end);
        if (isinf(d))
                return fail(r, "number out of range");
        {
                char f[64];

                format_float(d, f, sizeof(f));
                buffer_appendf(what, "floating point `%s`", f);
        }
        return 0;
}

/* --- Strings --- */

static void append_utf8(Buffer *out, uint32_t cp)
{
        char b[4];

        if (!out)
                return;
        if (cp < 0x80) {
                b[0] = (char)cp;
                buffer_append(out, b, 1);
        } else if (cp < 0x800) {
                b[0] = (char)(0xc0 | cp >> 6);
                b[1] = (char)(0x80 | (cp & 0x3f));
                buffer_append(out, b, 2);
        } else if (cp < 0x10000) {
                b[0] = (char)(0xe0 | cp >> 12);
                b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
                b[2] = (char)(0x80 | (cp & 0x3f));
                buffer_append(out, b, 3);
        } else {
                b[0] = (char)(0xf0 | cp >> 18);
                b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
                b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
                b[3] = (char)(0x80 | (cp & 0x3f));
                buffer_append(out, b, 4);
        }
}


/* The four hex digits after "\u". */
static int read_hex4(JsonReader *r, uint32_t *ret)
{
        uint32_t v = 0;

        if (r->len - r->index < 4) {
                r->index = r->len;
                return fail(r, "EOF while parsing a string");
        }
        for (int i = 0; i < 4; i++) {
                int h = unhexchar(r->text[r->index + i]);

                if (h < 0) {
                        r->index += 4;
                        return fail(r, "invalid escape");
                }
                v = v << 4 | (uint32_t)h;
        }
        r->index += 4;
        *ret = v;
        return 0;
}

static int next_byte_in_string(JsonReader *r, char *ret)
{
        if (r->index >= r->len)
                return fail(r, "EOF while parsing a string");
        *ret = r->text[r->index++];
        return 0;
}

/* After "\u": one code point, surrogate pairs required to be paired. */
static int read_unicode_escape(JsonReader *r, Buffer *out)
{
        uint32_t n, n2;
        char c;
        int k;

        k = read_hex4(r, &n);
        if (k < 0)
                return k;
        if (n >= 0xdc00 && n <= 0xdfff)
                return fail(r, "lone leading surrogate in hex escape");
        if (n < 0xd800 || n > 0xdbff) {
                append_utf8(out, n);
                return 0;
        }
        for (const char *expect = "\\u"; *expect; expect++) {
                if (r->index >= r->len)
                        return fail(r, "EOF while parsing a string");
                c = r->text[r->index++];
                if (c != *expect)
                        return fail(r, "unexpected end of hex escape");
        }
        k = read_hex4(r, &n2);
        if (k < 0)
                return k;
        if (n2 < 0xdc00 || n2 > 0xdfff)
                return fail(r, "lone leading surrogate in hex escape");
        append_utf8(out, (((n - 0xd800) << 10) | (n2 - 0xdc00)) + 0x10000);
        return 0;
}

static int read_escape(JsonReader *r, bool strict, Buffer *out)
{
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *p;
        uint32_t ignored;
        char c;
        int k;

        k = next_byte_in_string(r, &c);
        if (k < 0)
                return k;
        if (c == 'u')
                return strict ? read_unicode_escape(r, out) : read_hex4(r, &ignored);
        p = c ? strchr(from, c) : NULL;
        if (!p)
                return fail(r, "invalid escape");
        if (out)
                buffer_append_byte(out, to[p - from]);
        return 0;
}

/* Reads a string after its opening quote. strict: serde's parse path (escapes decoded into out,
 * which may be NULL, and the result must be UTF-8); otherwise its ignore path (only the syntax). */
static int read_string_body(JsonReader *r, bool strict, Buffer *out)
{
        bool valid = true;

        for (;;) {
                size_t start = r->index;
                unsigned char c = 0;
                int k;

                while (r->index < r->len) {
                        c = (unsigned char)r->text[r->index];
                        if (c == '"' || c == '\\' || c < 0x20)
                                break;
                        r->index++;
                }
                if (strict) {
                        /* A backslash never splits a UTF-8 sequence, so segments can be
                         * checked one by one. */
                        valid = valid && utf8_is_valid(r->text + start, r->index - start);
                        if (out)
                                buffer_append(out, r->text + start, r->index - start);
                }
                if (r->index >= r->len)
                        return fail(r, "EOF while parsing a string");
                if (c == '"') {
                        r->index++;
                        if (!valid)
                                return fail(r, "invalid unicode code point");
                        return out && out->error ? out->error : 0;
                }
                if (c != '\\') {
                        if (strict)
                                r->index++;
                        return fail(r, "control character (\\u0000-\\u001F) found while "
                                       "parsing a string");
                }
                r->index++;
                k = read_escape(r, strict, strict ? out : NULL);
                if (k < 0)
                        return k;
        }
}

/* --- Values --- */

static int skip_content(JsonReader *r);

/* serde's SeqAccess over a list whose '[' has been read, reading each element as Content. */
static int skip_content_list(JsonReader *r)
{
        bool first = true;
        int c, k;

        for (;;) {
                c = peek(r);
                if (c == ']')
                        break;
                if (c == ',' && !first) {
                        r->index++;
                        c = peek(r);
                } else if (c < 0) {
                        return fail_peek(r, "EOF while parsing a list");
                } else if (!first) {
                        return fail_peek(r, "expected `,` or `]`");
                }
                first = false;
                if (c == ']')
                        return fail_peek(r, "trailing comma");
                if (c < 0)
                        return fail_peek(r, "EOF while parsing a value");
                k = skip_content(r);
                if (k < 0)
                        return k;
        }
        r->index++;
        return 0;
}

/* serde's MapAccess: the separator before the next key. Returns 1 with r->index at the key's
 * opening quote, 0 at the closing brace (not read), or an error. */
static int next_key(JsonReader *r, bool *first)
{
        int c = peek(r);

        if (c == '}')
                return 0;
        if (c == ',' && !*first) {
                r->index++;
                c = peek(r);
        } else if (c < 0) {
                return fail_peek(r, "EOF while parsing an object");
        } else if (!*first) {
                return fail_peek(r, "expected `,` or `}`");
        }
        *first = false;
        if (c == '"')
                return 1;
        if (c == '}')
                return fail_peek(r, "trailing comma");
        if (c < 0)
                return fail_peek(r, "EOF while parsing a value");
        return fail_peek(r, "key must be a string");
}

static int read_colon(JsonReader *r)
{
        int c = peek(r);

        if (c == ':') {
                r->index++;
                return 0;
        }
        if (c < 0)
                return fail_peek(r, "EOF while parsing an object");
        return fail_peek(r, "expected `:`");
}

/* serde's end_map(): the closing brace. */
static int end_map(JsonReader *r)
{
        int c = peek(r);

        if (c == '}') {
                r->index++;
                return 0;
        }
        if (c == ',')
                return fail_peek(r, "trailing comma");
        if (c < 0)
                return fail_peek(r, "EOF while parsing an object");
        return fail_peek(r, "trailing characters");
}

static int skip_content_map(JsonReader *r)
{
        bool first = true;
        int k;

        while ((k = next_key(r, &first)) > 0) {
                r->index++;
                k = read_string_body(r, /* strict= */ true, NULL);
                if (k < 0)
                        return k;
                k = read_colon(r);
                if (k < 0)
                        return k;
                k = skip_content(r);
                if (k < 0)
                        return k;
        }
        if (k < 0)
                return k;
        return end_map(r);
}

/* serde's deserialize_any into Content. */
static int skip_content(JsonReader *r)
{
        int c = peek(r), k;

        switch (c) {
        case -1:
                return fail_peek(r, "EOF while parsing a value");
        case 'n':
        case 't':
        case 'f':
                r->index++;
                return read_ident(r, c == 'n' ? "ull" : c == 't' ? "rue" : "alse");
        case '"':
                r->index++;
                return read_string_body(r, /* strict= */ true, NULL);
        case '[':
        case '{':
                k = enter(r);
                if (k >= 0)
                        k = c == '[' ? skip_content_list(r) : skip_content_map(r);
                leave(r);
                return k;
        default:
                if (c == '-' || is_digit(c)) {
                        size_t start;
                        Buffer what = {};

                        k = read_number(r, /* strict= */ true, &start);
                        if (k >= 0)
                                k = describe_number(r, start, &what);
                        buffer_done(&what);
                        return k;
                }
                return fail_peek(r, "expected value");
        }
}

/* One scalar for skip_ignored(). */
static int skip_ignored_scalar(JsonReader *r, int c)
{
        switch (c) {
        case 'n':
        case 't':
        case 'f':
                r->index++;
                return read_ident(r, c == 'n' ? "ull" : c == 't' ? "rue" : "alse");
        case '"':
                r->index++;
                return read_string_body(r, /* strict= */ false, NULL);
        default:
                if (c == '-' || is_digit(c))
                        return read_number(r, /* strict= */ false, NULL);
                return fail_peek(r, "expected value");
        }
}

/* After a value inside containers: closes what ends there. Returns 1 when the whole value is
 * done, 0 when another element or member follows, or an error. */
static int skip_ignored_close(JsonReader *r, Buffer *stack, bool accept_comma)
{
        for (;;) {
                char frame = stack->data[stack->len - 1];
                int c = peek(r);

                if (c == ',' && accept_comma) {
                        r->index++;
                        return 0;
                }
                if (c < 0)
                        return fail_peek(r, frame == '[' ? "EOF while parsing a list"
                                                         : "EOF while parsing an object");
                if (!((c == ']' && frame == '[') || (c == '}' && frame == '{'))) {
                        if (accept_comma)
                                return fail_peek(r, frame == '[' ? "expected `,` or `]`"
                                                                 : "expected `,` or `}`");
                        return 0;
                }
                r->index++;
                stack->len--;
                if (stack->len == 0)
                        return 1;
                accept_comma = true;
        }
}

/* Before a member of an object: its key and colon. */
static int skip_ignored_key(JsonReader *r)
{
        int c = peek(r), k;

        if (c < 0)
                return fail_peek(r, "EOF while parsing an object");
        if (c != '"')
                return fail_peek(r, "key must be a string");
        r->index++;
        k = read_string_body(r, /* strict= */ false, NULL);
        if (k < 0)
                return k;
        c = peek(r);
        if (c < 0)
                return fail_peek(r, "EOF while parsing an object");
        if (c != ':')
                return fail_peek(r, "expected `:`");
        r->index++;
        return 0;
}

/* serde's ignore_value(): iterative, so no depth limit; stack holds the open brackets. */
static int skip_ignored(JsonReader *r)
{
        Buffer stack = {};
        int k = 0;

        for (;;) {
                int c = peek(r);
                bool opened = false;

                if (c < 0) {
                        k = fail_peek(r, "EOF while parsing a value");
                        break;
                }
                if (c == '[' || c == '{') {
                        r->index++;
                        buffer_append_byte(&stack, (char)c);
                        if (stack.error) {
                                k = stack.error;
                                break;
                        }
                        opened = true;
                } else {
                        k = skip_ignored_scalar(r, c);
                        if (k < 0)
                                break;
                        if (stack.len == 0)
                                break;
                }
                k = skip_ignored_close(r, &stack, /* accept_comma= */ !opened);
                if (k != 0)
                        break;
                if (stack.data[stack.len - 1] == '{') {
                        k = skip_ignored_key(r);
                        if (k < 0)
                                break;
                }
        }
        buffer_done(&stack);
        return k < 0 ? k : 0;
}

static int skip_value(JsonReader *r, SkipMode mode)
{
        return mode == SKIP_IGNORE ? skip_ignored(r) : skip_content(r);
}

int json_skip_value(JsonReader *r)
{
        return skip_ignored(r);
}

int json_reader_end(JsonReader *r)
{
        if (peek(r) >= 0)
                return fail_peek(r, "trailing characters");
        return 0;
}

int json_validate(const char *text, size_t len, JsonError *error)
{
        JsonReader r;
        int k;

        json_reader_init(&r, text, len, error);
        k = json_skip_value(&r);
        if (k < 0)
                return k;
        return json_reader_end(&r);
}

/* serde_json's peek_invalid_type(): describes (and reads, if it is a scalar) the next value.
 * Lists and maps are not read. */
static int describe_unexpected(JsonReader *r, Buffer *what)
{
        int c = peek(r), k;
        size_t start;
        Buffer s = {};

        switch (c) {
        case 'n':
                r->index++;
                k = read_ident(r, "ull");
                buffer_append_str(what, "null");
                return k;
        case 't':
        case 'f':
                r->index++;
                k = read_ident(r, c == 't' ? "rue" : "alse");
                buffer_append_str(what, c == 't' ? "boolean `true`" : "boolean `false`");
                return k;
        case '"':
                r->index++;
                k = read_string_body(r, /* strict= */ true, &s);
                if (k >= 0) {
                        buffer_append_str(what, "string ");
                        rust_debug_quote(what, s.data ?: "", s.len);
                }
                buffer_done(&s);
                return k;
        case '[':
                buffer_append_str(what, "sequence");
                return 0;
        case '{':
                buffer_append_str(what, "map");
                return 0;
        default:
                if (c == '-' || is_digit(c)) {
                        k = read_number(r, /* strict= */ true, &start);
                        if (k < 0)
                                return k;
                        return describe_number(r, start, what);
                }
                if (c < 0)
                        return fail_peek(r, "EOF while parsing a value");
                return fail_peek(r, "expected value");
        }
}

static int fail_invalid_type(JsonReader *r, const char *expecting)
{
        Buffer what = {};
        int k;

        k = describe_unexpected(r, &what);
        if (k >= 0)
                k = what.error ?: json_reader_fail(r, "invalid type: %s, expected %s",
                                                   what.data ?: "", expecting);
        buffer_done(&what);
        return k;
}

int json_read_string(JsonReader *r, const char *expecting, char **ret, size_t *ret_len)
{
        Buffer s = {};
        int c = peek(r), k;

        if (c != '"')
                return fail_invalid_type(r, expecting);
        r->index++;
        k = read_string_body(r, /* strict= */ true, &s);
        if (k < 0) {
                buffer_done(&s);
                return k;
        }
        if (!s.data) {
                s.data = strdup("");
                if (!s.data)
                        return -ENOMEM;
        }
        *ret = s.data;
        *ret_len = s.len;
        return 0;
}

int json_read_null(JsonReader *r)
{
        int k;

        if (peek(r) != 'n')
                return 0;
        r->index++;
        k = read_ident(r, "ull");
        return k < 0 ? k : 1;
}

/* --- Structs --- */

static const char *field_expecting(const JsonField *f)
{
        return f->type == JSON_FIELD_BYTES ? "a base64-encoded string" : "a string";
}

/* A string or byte-string member, its value next in the text. */
static int read_field(JsonReader *r, const JsonField *f, JsonFieldValue *v)
{
        char message[256];
        int k;

        if (f->optional) {
                k = json_read_null(r);
                if (k != 0)
                        return k < 0 ? k : 0;
        }
        if (f->type == JSON_FIELD_STRUCT) {
                JsonFieldValue *sub = calloc(f->n_fields, sizeof(*sub));

                if (!sub)
                        return -ENOMEM;
                v->data = (char *)sub;
                v->len = f->n_fields;
                v->present = true;
                return json_read_struct(r, f->expecting, f->fields, f->n_fields, sub, NULL, NULL);
        }
        k = json_read_string(r, field_expecting(f), &v->data, &v->len);
        if (k < 0)
                return k;
        v->present = true;

        if (f->type == JSON_FIELD_BYTES) {
                if (base64_validate(v->data, v->len, message, sizeof(message)) < 0)
                        return json_reader_fail(r, "%s", message);
                k = base64_decode(v->data, v->len, (uint8_t *)v->data, &v->len);
                if (k < 0)
                        return k;
        } else if (f->check && f->check(v->data, v->len, message, sizeof(message)) < 0) {
                return json_reader_fail(r, "%s", message);
        }
        return 0;
}

static int find_field(const JsonField *fields, size_t n, const char *key, size_t key_len)
{
        for (size_t i = 0; i < n; i++)
                if (strlen(fields[i].name) == key_len && memcmp(fields[i].name, key, key_len) == 0)
                        return (int)i;
        return -1;
}

/* One member: key (its opening quote next), colon, value. */
static int read_member(JsonReader *r, const JsonField *fields, size_t n, JsonFieldValue *values,
                       SkipMode unknown, unsigned *flatten_count)
{
        Buffer key = {};
        int i, k;
        size_t start;

        r->index++;
        k = read_string_body(r, /* strict= */ true, &key);
        i = k < 0 ? -1 : find_field(fields, n, key.data ?: "", key.len);
        buffer_done(&key);
        if (k < 0)
                return k;

        if (i >= 0 && fields[i].type != JSON_FIELD_FLATTEN && values[i].seen)
                return fail_pending(r, "duplicate field `%s`", fields[i].name);
        k = read_colon(r);
        if (k < 0)
                return k;
        if (i < 0)
                return skip_value(r, unknown);

        values[i].seen = true;
        if (fields[i].type != JSON_FIELD_FLATTEN)
                return read_field(r, &fields[i], &values[i]);

        /* Flattened: keep the first occurrence as text, count the others. */
        (void)peek(r);
        start = r->index;
        k = skip_value(r, SKIP_CONTENT);
        if (k < 0)
                return k;
        if (values[i].count++ == 0) {
                values[i].present = true;
                values[i].data = (char *)r->text + start;
                values[i].len = r->index - start;
                values[i].order = ++*flatten_count;
        }
        return 0;
}

static bool has_flatten(const JsonField *fields, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (fields[i].type == JSON_FIELD_FLATTEN)
                        return true;
        return false;
}

/* serde's derived visit_map(). */
static int read_members(JsonReader *r, const JsonField *fields, size_t n, JsonFieldValue *values)
{
        /* A struct with flattened members collects every unknown member as Content. */
        SkipMode unknown = has_flatten(fields, n) ? SKIP_CONTENT : SKIP_IGNORE;
        unsigned flatten_count = 0;
        bool first = true;
        int k;

        while ((k = next_key(r, &first)) > 0) {
                k = read_member(r, fields, n, values, unknown, &flatten_count);
                if (k < 0)
                        return k;
        }
        if (k < 0)
                return k;

        for (size_t i = 0; i < n; i++)
                if (fields[i].type != JSON_FIELD_FLATTEN && !fields[i].optional && !values[i].seen)
                        return fail_pending(r, "missing field `%s`", fields[i].name);
        return 0;
}

/* serde's end_seq(): the closing bracket of a list read as a struct. */
static int end_seq(JsonReader *r)
{
        int c = peek(r);

        if (c == ']') {
                r->index++;
                return 0;
        }
        if (c == ',') {
                r->index++;
                return fail_peek(r, peek(r) == ']' ? "trailing comma" : "trailing characters");
        }
        if (c < 0)
                return fail_peek(r, "EOF while parsing a list");
        return fail_peek(r, "trailing characters");
}

/* serde's derived visit_seq(): a struct given as the list of its fields, in order. */
static int read_elements(JsonReader *r, const char *expecting, const JsonField *fields, size_t n,
                         JsonFieldValue *values)
{
        for (size_t i = 0; i < n; i++) {
                int c = peek(r), k;

                if (c == ']')
                        return fail_pending(r, "invalid length %zu, expected %s with %zu element%s",
                                            i, expecting, n, n == 1 ? "" : "s");
                if (c < 0)
                        return fail_peek(r, "EOF while parsing a list");
                if (i > 0) {
                        if (c != ',')
                                return fail_peek(r, "expected `,` or `]`");
                        r->index++;
                        c = peek(r);
                        if (c == ']')
                                return fail_peek(r, "trailing comma");
                }
                if (c < 0)
                        return fail_peek(r, "EOF while parsing a value");
                values[i].seen = true;
                k = read_field(r, &fields[i], &values[i]);
                if (k < 0)
                        return k;
        }
        return 0;
}

static int read_struct_from_list(JsonReader *r, const char *expecting, const JsonField *fields,
                                 size_t n, JsonFieldValue *values)
{
        int k;

        k = enter(r);
        if (k >= 0)
                k = read_elements(r, expecting, fields, n, values);
        leave(r);
        if (k == -EINVAL && r->error->line != 0)
                return k;
        if (k < 0) {
                JsonError pending = *r->error;

                (void)end_seq(r);
                *r->error = pending;
                fix_position(r);
                return k;
        }
        return end_seq(r);
}

int json_read_struct(JsonReader *r, const char *expecting, const JsonField *fields, size_t n,
                     JsonFieldValue *values, unsigned *ret_end_line, unsigned *ret_end_column)
{
        int c = peek(r), k, end;

        /* A struct without flattened members may also be written as the list of its fields. */
        if (c == '[' && !has_flatten(fields, n)) {
                k = read_struct_from_list(r, expecting, fields, n, values);
                if (k >= 0 && ret_end_line)
                        position_of(r, r->index, ret_end_line, ret_end_column);
                return k;
        }
        if (c != '{')
                return fail_invalid_type(r, expecting);
        k = enter(r);
        if (k >= 0)
                k = read_members(r, fields, n, values);
        leave(r);
        if (k == -EINVAL && r->error->line != 0)
                return k; /* a syntax error: the text cannot be read further */

        /* serde reads the closing brace even after an error in the members, then positions it. */
        if (k < 0) {
                JsonError pending = *r->error;

                (void)end_map(r);
                *r->error = pending;
                fix_position(r);
                return k;
        }
        end = end_map(r);
        if (end < 0)
                return end;
        if (ret_end_line)
                position_of(r, r->index, ret_end_line, ret_end_column);
        return 0;
}

void json_field_values_done(const JsonField *fields, JsonFieldValue *values, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                if (fields[i].type == JSON_FIELD_STRUCT && values[i].data)
                        json_field_values_done(fields[i].fields, (JsonFieldValue *)values[i].data,
                                               fields[i].n_fields);
                if (fields[i].type != JSON_FIELD_FLATTEN && values[i].data) {
                        explicit_bzero(values[i].data, values[i].len);
                        free(values[i].data);
                }
                values[i] = (JsonFieldValue){};
        }
}

int json_decode_body(const char *text, size_t len, const char *expecting, const JsonField *fields,
                     size_t n, JsonFieldValue *values, JsonError *error, unsigned *ret_end_line,
                     unsigned *ret_end_column)
{
        JsonReader r;
        int k;

        json_reader_init(&r, text, len, error);
        k = json_read_struct(&r, expecting, fields, n, values, ret_end_line, ret_end_column);
        if (k < 0)
                return k;
        return json_reader_end(&r);
}

static int read_variant_name(const JsonFieldValue *tag, const JsonVariant *variants, size_t n,
                             unsigned line, unsigned column, JsonError *error)
{
        _cleanup_free_ char *name = NULL;
        const char *names[16];
        Buffer expected = {};
        JsonReader r;
        size_t len;
        int k;

        json_reader_init_fixed(&r, tag->data, tag->len, line, column, error);
        if (is_digit(tag->data[0]) && !memchr(tag->data, '.', tag->len) &&
            !memchr(tag->data, 'e', tag->len) && !memchr(tag->data, 'E', tag->len)) {
                /* serde also takes a variant by its index. */
                unsigned long long index;

                errno = 0;
                index = strtoull(tag->data, NULL, 10);
                if (errno == 0 && index < n)
                        return (int)index;
                if (errno == 0)
                        return json_reader_fail(&r,
                                                "invalid value: integer `%llu`, expected variant "
                                                "index 0 <= i < %zu",
                                                index, n);
        }
        k = json_read_string(&r, "variant identifier", &name, &len);
        if (k < 0)
                return k;
        for (size_t i = 0; i < n; i++)
                if (strlen(variants[i].name) == len && memcmp(variants[i].name, name, len) == 0)
                        return (int)i;

        for (size_t i = 0; i < n && i < ELEMENTSOF(names); i++)
                names[i] = variants[i].name;
        json_append_expected_names(&expected, names, MIN(n, ELEMENTSOF(names)));
        k = expected.error ?: json_reader_fail(&r, "unknown variant `%s`, expected %s", name,
                                               expected.data);
        buffer_done(&expected);
        return k;
}

static int read_variant_content(const JsonVariant *v, const JsonFieldValue *content,
                                unsigned line, unsigned column, JsonFieldValue *values,
                                JsonError *error)
{
        JsonReader r;
        int k;

        if (!content->seen)
                return 0;
        json_reader_init_fixed(&r, content->data, content->len, line, column, error);
        if (!v->fields) {
                k = json_read_null(&r);
                if (k != 0)
                        return k < 0 ? k : 0;
                return fail_invalid_type(&r, v->expecting);
        }
        /* Unlike a struct, a struct variant cannot be written as a list. */
        if (peek(&r) == '[')
                return fail_invalid_type(&r, v->expecting);
        return json_read_struct(&r, v->expecting, v->fields, v->n_fields, values, NULL, NULL);
}

static int fail_fixed(JsonError *error, unsigned line, unsigned column, const char *what,
                      const char *name)
{
        error->line = line;
        error->column = column;
        snprintf(error->message, sizeof(error->message), "%s `%s`", what, name);
        return -EINVAL;
}

int json_read_flattened_enum(const char *tag_name, const JsonFieldValue *tag,
                             const char *content_name, const JsonFieldValue *content,
                             const JsonVariant *variants, size_t n_variants, unsigned line,
                             unsigned column, JsonFieldValue *values, JsonError *error)
{
        bool content_first = content->seen && (!tag->seen || content->order < tag->order);
        int v, k;

        *error = (JsonError){};
        if (content_first && content->count > 1)
                return fail_fixed(error, line, column, "duplicate field", content_name);
        if (!tag->seen)
                return fail_fixed(error, line, column, "missing field", tag_name);

        v = read_variant_name(tag, variants, n_variants, line, column, error);
        if (v < 0)
                return v;
        if (!content_first && tag->count > 1)
                return fail_fixed(error, line, column, "duplicate field", tag_name);
        if (!content->seen && variants[v].fields)
                return fail_fixed(error, line, column, "missing field", content_name);

        k = read_variant_content(&variants[v], content, line, column, values, error);
        if (k < 0)
                return k;
        if (content_first && tag->count > 1)
                return fail_fixed(error, line, column, "duplicate field", tag_name);
        if (!content_first && content->count > 1)
                return fail_fixed(error, line, column, "duplicate field", content_name);
        return v;
}

void json_append_expected_names(Buffer *b, const char *const *names, size_t n)
{
        if (n == 0) {
                buffer_append_str(b, "there are no variants");
                return;
        }
        if (n == 1) {
                buffer_appendf(b, "`%s`", names[0]);
                return;
        }
        if (n == 2) {
                buffer_appendf(b, "`%s` or `%s`", names[0], names[1]);
                return;
        }
        buffer_append_str(b, "one of ");
        for (size_t i = 0; i < n; i++)
                buffer_appendf(b, "%s`%s`", i > 0 ? ", " : "", names[i]);
}

/* --- Writer --- */

void json_escape_append(Buffer *b, const char *s, size_t n)
{
        size_t start = 0;

        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                const char *esc = NULL;
                char u[8];

                if (c >= 0x20 && c != '"' && c != '\\')
                        continue;
                switch (c) {
                case '"':
                        esc = "\\\"";
                        break;
                case '\\':
                        esc = "\\\\";
                        break;
                case '\b':
                        esc = "\\b";
                        break;
                case '\f':
                        esc = "\\f";
                        break;
                case '\n':
                        esc = "\\n";
                        break;
                case '\r':
                        esc = "\\r";
                        break;
                case '\t':
                        esc = "\\t";
                        break;
                default:
                        snprintf(u, sizeof(u), "\\u%04x", c);
                        esc = u;
                }
                buffer_append(b, s + start, i - start);
                buffer_append_str(b, esc);
                start = i + 1;
        }
        buffer_append(b, s + start, n - start);
}

static void before_value(JsonWriter *w)
{
        if (w->depth > 0 && w->depth < ELEMENTSOF(w->need_comma)) {
                if (w->need_comma[w->depth])
                        buffer_append_byte(&w->out, ',');
                w->need_comma[w->depth] = true;
        }
}

void json_begin_object(JsonWriter *w)
{
        before_value(w);
        buffer_append_byte(&w->out, '{');
        w->depth++;
        if (w->depth < ELEMENTSOF(w->need_comma))
                w->need_comma[w->depth] = false;
}

void json_end_object(JsonWriter *w)
{
        buffer_append_byte(&w->out, '}');
        if (w->depth > 0)
                w->depth--;
}

void json_begin_array(JsonWriter *w)
{
        before_value(w);
        buffer_append_byte(&w->out, '[');
        w->depth++;
        if (w->depth < ELEMENTSOF(w->need_comma))
                w->need_comma[w->depth] = false;
}

void json_end_array(JsonWriter *w)
{
        buffer_append_byte(&w->out, ']');
        if (w->depth > 0)
                w->depth--;
}

void json_key(JsonWriter *w, const char *key)
{
        before_value(w);
        buffer_append_byte(&w->out, '"');
        json_escape_append(&w->out, key, strlen(key));
        buffer_append_str(&w->out, "\":");
        /* The value that follows needs no comma of its own. */
        if (w->depth < ELEMENTSOF(w->need_comma))
                w->need_comma[w->depth] = false;
}

static void after_key_value(JsonWriter *w)
{
        if (w->depth > 0 && w->depth < ELEMENTSOF(w->need_comma))
                w->need_comma[w->depth] = true;
}

void json_string(JsonWriter *w, const char *s, size_t n)
{
        buffer_append_byte(&w->out, '"');
        json_escape_append(&w->out, s, n);
        buffer_append_byte(&w->out, '"');
        after_key_value(w);
}

void json_null(JsonWriter *w)
{
        buffer_append_str(&w->out, "null");
        after_key_value(w);
}

void json_raw(JsonWriter *w, const char *text, size_t n)
{
        buffer_append(&w->out, text, n);
        after_key_value(w);
}

void json_base64(JsonWriter *w, const uint8_t *data, size_t n)
{
        size_t len = base64_encoded_len(n);

        buffer_append_byte(&w->out, '"');
        if (buffer_reserve(&w->out, len + 1) >= 0) {
                base64_encode(data, n, w->out.data + w->out.len);
                w->out.len += len;
                w->out.data[w->out.len] = 0;
        }
        buffer_append_byte(&w->out, '"');
        after_key_value(w);
}

void json_write_message(Buffer *b, const char *message, size_t n)
{
        buffer_append_str(b, "{\"message\":\"");
        json_escape_append(b, message, n);
        buffer_append_str(b, "\"}");
}
