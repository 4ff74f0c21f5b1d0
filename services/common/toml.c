/* SPDX-License-Identifier: MIT */

/* A strict TOML 1.0.0 parser and the value tree of toml.h.
 *
 * The input is untrusted (config.d drop-ins, and the fuzzer), so the parser is written to fail
 * cleanly on anything:
 *  - every read of the input goes through peek()/peek_at()/looking_at(), which stop at P->end;
 *  - the nesting depth of the tree is capped at TOML_MAX_DEPTH, which bounds the recursion of the
 *    parser and of toml_value_free()/toml_value_dup();
 *  - duplicate keys are found through a hash index of the whole document, so a table with many keys
 *    costs linear time, not quadratic.
 *
 * Before parsing, one pass finds the first byte that TOML forbids everywhere: invalid UTF-8, NUL
 * and the other control characters except tab, and a CR not followed by LF. P->end is set there.
 * Any error the parser reports at that spot is reported as that byte's error (it is why the parser
 * could not go on), and a document that parses up to it is rejected for it. Everything else can
 * therefore rely on valid UTF-8 and on no control characters other than tab, LF and CRLF.
 *
 * Multi-line strings store CRLF line endings as LF. */

#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "toml-internal.h"
#include "toml.h"

/* TomlValue.flags: how a table or array came to be, which decides what may still be added to it. */
enum {
        /* Part of an inline table or array literal: nothing may be added once it is closed. */
        FLAG_INLINE = 1u << 0,
        /* A table defined by a [header], an element of an [[array]], or the root. */
        FLAG_HEADER = 1u << 1,
        /* A table created or extended by dotted keys (a.b = 1). */
        FLAG_DOTTED = 1u << 2,
        /* An array created by [[header]]: later [[header]]s append to it. */
        FLAG_ARRAY_OF_TABLES = 1u << 3,
        /* A table with none of these was created implicitly as a parent in a header ([a] of
         * [a.b]); it may still be defined once, by a header or by dotted keys. */
};

/* Config files are small; this only bounds what toml_parse_file() is willing to read. */
#define TOML_FILE_MAX (64u * 1024u * 1024u)

/* Error messages quote key paths and values up to this many bytes. */
#define QUOTE_MAX 96

/* ---- Parser state, positions and errors ---- */

typedef struct IndexSlot {
        const TomlValue *table; /* NULL for a free slot */
        const char *key;        /* the entry's own key string */
        size_t key_len;
        TomlValue *value;
        uint64_t hash;
} IndexSlot;

typedef struct Parser {
        const char *begin;     /* after a BOM: line 1, column 1 */
        const char *p;         /* the next byte to read */
        const char *end;       /* parsing stops here: the input end or the first forbidden byte */
        const char *input_end; /* the real end of the input */
        char bad_reason[64];   /* why *end is forbidden, "" when end == input_end */

        TomlValue *root;
        TomlValue *current; /* the table key/value lines go into */
        unsigned current_depth;

        /* The last position computed by locate(): the parser asks for positions in increasing
         * order, so counting from here keeps the counting linear overall. */
        const char *pos, *pos_line_start;
        unsigned pos_line, pos_column;

        /* Open-addressing hash index of every (table, key) of the document. */
        IndexSlot *slots;
        size_t n_slots, n_used;

        TomlError *error;
} Parser;

static void parser_done(Parser *P)
{
        toml_value_free(P->root);
        free(P->slots);
}

static int peek_at(const Parser *P, size_t k)
{
        return (size_t)(P->end - P->p) > k ? (unsigned char)P->p[k] : -1;
}

static int peek(const Parser *P)
{
        return peek_at(P, 0);
}

static bool looking_at(const Parser *P, const char *s)
{
        size_t l = strlen(s);

        return (size_t)(P->end - P->p) >= l && memcmp(P->p, s, l) == 0;
}

static bool is_digit(int c)
{
        return c >= '0' && c <= '9';
}

static bool is_alpha(int c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_bare_key_char(int c)
{
        return is_alpha(c) || is_digit(c) || c == '_' || c == '-';
}

/* Line and column (in code points) of a spot in the input. */
static void locate(Parser *P, const char *at, unsigned *ret_line, unsigned *ret_column)
{
        if (at < P->pos_line_start) {
                /* Only error messages point back across lines: counting from the top is fine. */
                P->pos = P->pos_line_start = P->begin;
                P->pos_line = P->pos_column = 1;
        } else if (at < P->pos) {
                P->pos = P->pos_line_start;
                P->pos_column = 1;
        }
        for (const char *s = P->pos; s < at; s++) {
                if (*s == '\n') {
                        P->pos_line++;
                        P->pos_column = 1;
                        P->pos_line_start = s + 1;
                } else if (((unsigned char)*s & 0xC0) != 0x80)
                        P->pos_column++;
        }
        P->pos = at;
        *ret_line = P->pos_line;
        *ret_column = P->pos_column;
}

_printf_(3, 4) static int parse_error(Parser *P, const char *at, const char *format, ...)
{
        va_list ap;

        /* Only the first error counts; callers return right away, but be safe. */
        if (P->error->message[0] != 0)
                return -EINVAL;

        if (at >= P->end && P->bad_reason[0] != 0) {
                at = P->end;
                snprintf(P->error->message, sizeof(P->error->message), "%s", P->bad_reason);
        } else {
                va_start(ap, format);
                vsnprintf(P->error->message, sizeof(P->error->message), format, ap);
                va_end(ap);
        }
        locate(P, at, &P->error->line, &P->error->column);
        return -EINVAL;
}

static int too_deep_error(Parser *P, const char *at)
{
        return parse_error(P, at, "arrays and tables are nested deeper than %d levels",
                           TOML_MAX_DEPTH);
}

/* Length of the valid UTF-8 sequence at s, or 0. Rejects overlong forms, surrogates and code
 * points above U+10FFFF. */
static size_t utf8_sequence_length(const unsigned char *s, size_t left)
{
        size_t n;
        unsigned char lo = 0x80, hi = 0xBF;

        if (s[0] < 0x80)
                return 1;
        if (s[0] < 0xC2)
                return 0;
        if (s[0] < 0xE0)
                n = 2;
        else if (s[0] < 0xF0) {
                n = 3;
                if (s[0] == 0xE0)
                        lo = 0xA0;
                else if (s[0] == 0xED)
                        hi = 0x9F;
        } else if (s[0] < 0xF5) {
                n = 4;
                if (s[0] == 0xF0)
                        lo = 0x90;
                else if (s[0] == 0xF4)
                        hi = 0x8F;
        } else
                return 0;

        if (left < n || s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < n; i++)
                if ((s[i] & 0xC0) != 0x80)
                        return 0;
        return n;
}

static void find_forbidden_byte(Parser *P)
{
        const unsigned char *s = (const unsigned char *)P->begin;
        const unsigned char *e = (const unsigned char *)P->input_end;

        while (s < e) {
                unsigned char c = *s;

                if ((c >= 0x20 && c < 0x7F) || c == '\t' || c == '\n') {
                        s++;
                } else if (c == '\r' && e - s >= 2 && s[1] == '\n') {
                        s += 2;
                } else if (c >= 0x80) {
                        size_t l = utf8_sequence_length(s, e - s);

                        if (l == 0) {
                                snprintf(P->bad_reason, sizeof(P->bad_reason),
                                         "invalid UTF-8 (byte 0x%02X)", c);
                                break;
                        }
                        s += l;
                } else {
                        if (c == 0)
                                snprintf(P->bad_reason, sizeof(P->bad_reason),
                                         "NUL bytes are not allowed");
                        else if (c == '\r')
                                snprintf(P->bad_reason, sizeof(P->bad_reason),
                                         "carriage return not followed by a line feed");
                        else
                                snprintf(P->bad_reason, sizeof(P->bad_reason),
                                         "control character U+%04X is not allowed", c);
                        break;
                }
        }
        P->end = (const char *)s;
}

/* ---- Quoting keys and values in messages ---- */

typedef struct Writer {
        char *buf;
        size_t size, len; /* size >= 8 */
        bool full;
} Writer;

static void writer_put(Writer *w, const char *s, size_t n)
{
        if (w->full)
                return;
        /* Leave room for "..." and the terminator; never cut a UTF-8 sequence in two. */
        if (w->len + n + 4 > w->size) {
                n = w->size - 4 - w->len;
                while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
                        n--;
                memcpy(w->buf + w->len, s, n);
                memcpy(w->buf + w->len + n, "...", 4);
                w->len += n + 3;
                w->full = true;
                return;
        }
        memcpy(w->buf + w->len, s, n);
        w->len += n;
        w->buf[w->len] = 0;
}

/* Writes a key as TOML would spell it: bare, 'literal' or "basic" with escapes. Messages put the
 * whole path in double quotes, so the quotes of a basic key are escaped as well. */
static void writer_put_key(Writer *w, const char *name, size_t len)
{
        bool bare = len > 0, literal_ok = true;
        size_t run = 0;

        for (size_t i = 0; i < len; i++) {
                unsigned char c = name[i];

                if (!is_bare_key_char(c))
                        bare = false;
                if (c == '\'' || c < 0x20 || c == 0x7F)
                        literal_ok = false;
        }
        if (bare) {
                writer_put(w, name, len);
                return;
        }
        if (literal_ok) {
                writer_put(w, "'", 1);
                writer_put(w, name, len);
                writer_put(w, "'", 1);
                return;
        }
        writer_put(w, "\\\"", 2);
        for (size_t i = 0; i <= len; i++) {
                unsigned char c = i < len ? name[i] : 0;
                char esc[8];

                if (i < len && c >= 0x20 && c != 0x7F && c != '"' && c != '\\') {
                        run++;
                        continue;
                }
                writer_put(w, name + i - run, run);
                run = 0;
                if (i == len)
                        break;
                if (c == '"' || c == '\\')
                        snprintf(esc, sizeof(esc), "\\%c", c);
                else
                        snprintf(esc, sizeof(esc), "\\u%04X", c);
                writer_put(w, esc, strlen(esc));
        }
        writer_put(w, "\\\"", 2);
}

/* ---- The key index ---- */

static uint64_t index_hash(const TomlValue *table, const char *key, size_t len)
{
        uint64_t h = UINT64_C(0xcbf29ce484222325);

        /* FNV-1a over the key, then the table, then a final mix so that the low bits (the slot)
         * depend on all of them. Not hardened against deliberately colliding keys: a collision
         * only costs time, and the worst case is the linear scan a plain table would do. */
        for (size_t i = 0; i < len; i++) {
                h ^= (unsigned char)key[i];
                h *= UINT64_C(0x100000001b3);
        }
        h ^= (uint64_t)(uintptr_t)table;
        h ^= h >> 30;
        h *= UINT64_C(0xbf58476d1ce4e5b9);
        h ^= h >> 27;
        h *= UINT64_C(0x94d049bb133111eb);
        h ^= h >> 31;
        return h;
}

static TomlValue *index_find(const Parser *P, const TomlValue *table, const char *key, size_t len)
{
        uint64_t h;
        size_t mask;

        if (P->n_slots == 0)
                return NULL;
        h = index_hash(table, key, len);
        mask = P->n_slots - 1;
        for (size_t i = h & mask;; i = (i + 1) & mask) {
                const IndexSlot *s = &P->slots[i];

                if (!s->table)
                        return NULL;
                if (s->hash == h && s->table == table && s->key_len == len &&
                    (len == 0 || memcmp(s->key, key, len) == 0))
                        return s->value;
        }
}

static void index_put(IndexSlot *slots, size_t n_slots, const IndexSlot *item)
{
        size_t i = item->hash & (n_slots - 1);

        while (slots[i].table)
                i = (i + 1) & (n_slots - 1);
        slots[i] = *item;
}

static int index_add(Parser *P, const TomlValue *table, const char *key, size_t len,
                     TomlValue *value)
{
        /* At most half full, so that probe sequences stay short and always end. */
        if ((P->n_used + 1) * 2 > P->n_slots) {
                size_t n = P->n_slots > 0 ? P->n_slots * 2 : 64;
                IndexSlot *slots;

                if (n <= P->n_slots)
                        return -ENOMEM;
                slots = calloc(n, sizeof(IndexSlot));
                if (!slots)
                        return -ENOMEM;
                for (size_t i = 0; i < P->n_slots; i++)
                        if (P->slots[i].table)
                                index_put(slots, n, &P->slots[i]);
                free(P->slots);
                P->slots = slots;
                P->n_slots = n;
        }
        index_put(P->slots, P->n_slots,
                  &(IndexSlot){
                          .table = table,
                          .key = key,
                          .key_len = len,
                          .value = value,
                          .hash = index_hash(table, key, len),
                  });
        P->n_used++;
        return 0;
}

/* Adds key → value to a table of the document. Key and value pass to the table on success only. */
static int table_add(Parser *P, TomlValue *table, char *key, size_t len, TomlValue *value)
{
        int r;

        r = table_append(table, key, len, value);
        if (r < 0)
                return r;
        r = index_add(P, table, key, len, value);
        if (r < 0) {
                table->table.n--;
                return r;
        }
        return 0;
}

/* ---- Whitespace, comments, newlines ---- */

static void skip_ws(Parser *P)
{
        while (peek(P) == ' ' || peek(P) == '\t')
                P->p++;
}

static void skip_comment(Parser *P)
{
        /* Forbidden characters were excluded up front: a comment is anything up to the newline. */
        while (P->p < P->end && *P->p != '\n' && *P->p != '\r')
                P->p++;
}

static bool skip_newline(Parser *P)
{
        if (peek(P) == '\n') {
                P->p++;
                return true;
        }
        if (peek(P) == '\r' && peek_at(P, 1) == '\n') {
                P->p += 2;
                return true;
        }
        return false;
}

/* Whitespace, comments and newlines, as allowed between the elements of an array. */
static void skip_ws_comment_newline(Parser *P)
{
        for (;;) {
                skip_ws(P);
                if (peek(P) == '#')
                        skip_comment(P);
                if (!skip_newline(P))
                        return;
        }
}

/* ---- Strings ---- */

typedef struct Buf {
        char *data;
        size_t len, allocated;
} Buf;

static void buf_done(Buf *b)
{
        free(b->data);
}

static int buf_put(Buf *b, const char *s, size_t n)
{
        if (n == 0)
                return 0;
        /* Always keep one byte free for the terminator. */
        if (b->allocated - b->len <= n) {
                size_t want = b->len + n + 1, a = b->allocated < 32 ? 32 : b->allocated;
                char *q;

                if (want <= b->len)
                        return -ENOMEM;
                while (a < want) {
                        if (a > SIZE_MAX / 2)
                                return -ENOMEM;
                        a *= 2;
                }
                q = realloc(b->data, a);
                if (!q)
                        return -ENOMEM;
                b->data = q;
                b->allocated = a;
        }
        memcpy(b->data + b->len, s, n);
        b->len += n;
        return 0;
}

/* Hands out the NUL-terminated contents. */
static int buf_steal(Buf *b, char **ret, size_t *ret_len)
{
        if (!b->data) {
                b->data = malloc(1);
                if (!b->data)
                        return -ENOMEM;
        }
        b->data[b->len] = 0;
        *ret_len = b->len;
        *ret = TAKE_PTR(b->data);
        b->len = b->allocated = 0;
        return 0;
}

static size_t utf8_encode(uint32_t cp, char out[static 4])
{
        if (cp < 0x80) {
                out[0] = (char)cp;
                return 1;
        }
        if (cp < 0x800) {
                out[0] = (char)(0xC0 | (cp >> 6));
                out[1] = (char)(0x80 | (cp & 0x3F));
                return 2;
        }
        if (cp < 0x10000) {
                out[0] = (char)(0xE0 | (cp >> 12));
                out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[2] = (char)(0x80 | (cp & 0x3F));
                return 3;
        }
        out[0] = (char)(0xF0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        return 4;
}


static int parse_unicode_escape(Parser *P, Buf *b)
{
        const char *at = P->p;
        char kind = at[1], out[4];
        size_t n = kind == 'u' ? 4 : 8;
        uint32_t cp = 0;

        for (size_t i = 0; i < n; i++) {
                int d = unhexchar(peek_at(P, 2 + i));

                if (d < 0)
                        return parse_error(P, at,
                                           "invalid escape sequence \\%c: expected %zu hexadecimal "
                                           "digits",
                                           kind, n);
                cp = cp << 4 | (uint32_t)d;
        }
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
                return parse_error(P, at, "escape sequence \\%c%.*s is not a Unicode scalar value",
                                   kind, (int)n, at + 2);
        P->p += 2 + n;
        return buf_put(b, out, utf8_encode(cp, out));
}

/* At a backslash in a basic string. */
static int parse_escape(Parser *P, Buf *b)
{
        const char *at = P->p;
        int c = peek_at(P, 1);
        char ch;

        switch (c) {
        case 'b':
                ch = '\b';
                break;
        case 't':
                ch = '\t';
                break;
        case 'n':
                ch = '\n';
                break;
        case 'f':
                ch = '\f';
                break;
        case 'r':
                ch = '\r';
                break;
        case '"':
                ch = '"';
                break;
        case '\\':
                ch = '\\';
                break;
        case 'u':
        case 'U':
                return parse_unicode_escape(P, b);
        case -1:
                return parse_error(P, at + 1, "unterminated string");
        default:
                if (c > 0x20 && c < 0x7F)
                        return parse_error(P, at, "invalid escape sequence \\%c", c);
                if (c >= 0x80)
                        return parse_error(P, at, "invalid escape sequence \\%.*s",
                                           (int)utf8_sequence_length((const unsigned char *)at + 1,
                                                                     P->end - at - 1),
                                           at + 1);
                return parse_error(P, at, "invalid escape sequence: backslash followed by U+%04X",
                                   c);
        }
        P->p += 2;
        return buf_put(b, &ch, 1);
}

static int parse_basic_string(Parser *P, char **ret, size_t *ret_len)
{
        _cleanup_(buf_done) Buf b = {};
        int r;

        P->p++;
        for (;;) {
                const char *s = P->p;
                int c = peek(P);

                if (c < 0)
                        return parse_error(P, P->p, "unterminated string");
                if (c == '\n' || c == '\r')
                        return parse_error(P, P->p, "newline in a single-line string");
                if (c == '"')
                        break;
                if (c == '\\')
                        r = parse_escape(P, &b);
                else {
                        while (P->p < P->end && *P->p != '"' && *P->p != '\\' && *P->p != '\n' &&
                               *P->p != '\r')
                                P->p++;
                        r = buf_put(&b, s, P->p - s);
                }
                if (r < 0)
                        return r;
        }
        P->p++;
        return buf_steal(&b, ret, ret_len);
}

static int parse_literal_string(Parser *P, char **ret, size_t *ret_len)
{
        const char *s = ++P->p;
        char *d;

        while (P->p < P->end && *P->p != '\'' && *P->p != '\n' && *P->p != '\r')
                P->p++;
        if (peek(P) != '\'')
                return parse_error(P, P->p,
                                   peek(P) < 0 ? "unterminated string"
                                               : "newline in a single-line string");
        d = memdup_nul(s, P->p - s);
        if (!d)
                return -ENOMEM;
        *ret_len = P->p - s;
        *ret = d;
        P->p++;
        return 0;
}

/* In a multi-line basic string, a backslash that is the last non-blank character of a line
 * removes itself, the newline and all whitespace and newlines up to the next other character. */
static bool skip_line_ending_backslash(Parser *P)
{
        size_t i = 1;
        int c;

        while (peek_at(P, i) == ' ' || peek_at(P, i) == '\t')
                i++;
        c = peek_at(P, i);
        if (c != '\n' && c != '\r')
                return false;
        P->p += i;
        for (;;) {
                c = peek(P);
                if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
                        return true;
                P->p++;
        }
}

/* Parses """…""" or '''…''' (quote is '"' or '\''). */
static int parse_multiline_string(Parser *P, char quote, char **ret, size_t *ret_len)
{
        _cleanup_(buf_done) Buf b = {};
        int r;

        P->p += 3;
        /* A newline right after the opening delimiter is not part of the string. */
        (void)skip_newline(P);

        for (;;) {
                const char *s = P->p;
                int c = peek(P);

                if (c < 0)
                        return parse_error(P, P->p, "unterminated multi-line string");
                if (c == quote) {
                        size_t n = 0;

                        while (peek_at(P, n) == quote)
                                n++;
                        /* Up to two quotes may end the body, right before the delimiter. */
                        if (n > 5)
                                return parse_error(P, P->p + 5,
                                                   "too many quotes at the end of a multi-line "
                                                   "string");
                        r = buf_put(&b, s, n >= 3 ? n - 3 : n);
                        if (r < 0)
                                return r;
                        P->p += n;
                        if (n >= 3)
                                return buf_steal(&b, ret, ret_len);
                        continue;
                }
                if (c == '\\' && quote == '"') {
                        if (skip_line_ending_backslash(P))
                                continue;
                        r = parse_escape(P, &b);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (c == '\r') {
                        /* Always followed by LF here: CRLF is stored as LF. */
                        P->p++;
                        continue;
                }
                while (P->p < P->end && *P->p != quote && *P->p != '\r' &&
                       !(*P->p == '\\' && quote == '"'))
                        P->p++;
                r = buf_put(&b, s, P->p - s);
                if (r < 0)
                        return r;
        }
}

static int parse_string(Parser *P, char **ret, size_t *ret_len)
{
        if (looking_at(P, "\"\"\""))
                return parse_multiline_string(P, '"', ret, ret_len);
        if (looking_at(P, "'''"))
                return parse_multiline_string(P, '\'', ret, ret_len);
        if (peek(P) == '"')
                return parse_basic_string(P, ret, ret_len);
        return parse_literal_string(P, ret, ret_len);
}

/* ---- Keys ---- */

typedef struct KeyPart {
        char *owned;      /* the decoded name until it is handed to a table */
        const char *name; /* stays valid after that, for error messages */
        size_t len;
        const char *at; /* where it is written */
} KeyPart;

typedef struct Key {
        KeyPart *parts;
        size_t n, allocated;
} Key;

static void key_done(Key *k)
{
        for (size_t i = 0; i < k->n; i++)
                free(k->parts[i].owned);
        free(k->parts);
}

/* The key path parts[0..n) as TOML would spell it, for messages. */
static const char *key_path(const Key *k, size_t n, char *buf, size_t size)
{
        Writer w = {.buf = buf, .size = size};

        buf[0] = 0;
        for (size_t i = 0; i < n; i++) {
                if (i > 0)
                        writer_put(&w, ".", 1);
                writer_put_key(&w, k->parts[i].name, k->parts[i].len);
        }
        return buf;
}

static int parse_simple_key(Parser *P, KeyPart *ret)
{
        const char *at = P->p;
        int c = peek(P), r;
        char *name;
        size_t len;

        if (c == '"' || c == '\'') {
                if (looking_at(P, "\"\"\"") || looking_at(P, "'''"))
                        return parse_error(P, at, "multi-line strings cannot be used as keys");
                r = c == '"' ? parse_basic_string(P, &name, &len)
                             : parse_literal_string(P, &name, &len);
                if (r < 0)
                        return r;
        } else if (is_bare_key_char(c)) {
                while (is_bare_key_char(peek(P)))
                        P->p++;
                len = P->p - at;
                name = memdup_nul(at, len);
                if (!name)
                        return -ENOMEM;
        } else
                return parse_error(P, at, "expected a key");

        *ret = (KeyPart){.owned = name, .name = name, .len = len, .at = at};
        return 0;
}

/* simple-key *( ws "." ws simple-key ), and the whitespace after it. */
static int parse_key(Parser *P, Key *key)
{
        int r;

        for (;;) {
                /* Each part nests one level deeper, so longer keys could never be stored. */
                if (key->n >= TOML_MAX_DEPTH)
                        return too_deep_error(P, P->p);
                r = grow_for_one((void **)&key->parts, &key->allocated, key->n, sizeof(KeyPart));
                if (r < 0)
                        return r;
                r = parse_simple_key(P, &key->parts[key->n]);
                if (r < 0)
                        return r;
                key->n++;
                skip_ws(P);
                if (peek(P) != '.')
                        return 0;
                P->p++;
                skip_ws(P);
        }
}

/* ---- Numbers ---- */

static int digit_value(int c, int base)
{
        int d = unhexchar(c);

        return d < base ? d : -1;
}

/* Scans digits of the given base starting at s, where '_' may only stand between two digits.
 * Returns the end of the run (s itself when there is no digit); *ret_bad is set to a misplaced
 * underscore, or NULL. */
static const char *scan_digits(const char *s, const char *e, int base, const char **ret_bad)
{
        const char *q = s;

        *ret_bad = NULL;
        while (q < e) {
                if (digit_value(*q, base) >= 0) {
                        q++;
                } else if (*q == '_') {
                        if (q == s || q + 1 >= e || digit_value(q[1], base) < 0) {
                                *ret_bad = q;
                                return q;
                        }
                        q++;
                } else
                        break;
        }
        return q;
}

static int underscore_error(Parser *P, const char *at)
{
        return parse_error(P, at, "underscores in numbers must stand between two digits");
}

static int parse_prefixed_integer(Parser *P, const char *s, const char *e, TomlValue *v)
{
        int base = s[1] == 'x' ? 16 : s[1] == 'o' ? 8 : 2;
        const char *name = base == 16 ? "hexadecimal" : base == 8 ? "octal" : "binary";
        const char *q = s + 2, *bad, *end;
        uint64_t acc = 0;

        end = scan_digits(q, e, base, &bad);
        if (bad)
                return underscore_error(P, bad);
        if (end == q)
                return parse_error(P, s, "expected %s digits after %.2s", name, s);
        if (end != e)
                return parse_error(P, end, "invalid character in %s integer", name);

        for (; q < e; q++) {
                uint64_t d;

                if (*q == '_')
                        continue;
                d = (uint64_t)digit_value(*q, base);
                if (acc > ((uint64_t)INT64_MAX - d) / (uint64_t)base)
                        return parse_error(P, s, "integer does not fit in 64 bits");
                acc = acc * (uint64_t)base + d;
        }
        v->type = TOML_INTEGER;
        v->integer = (int64_t)acc;
        return 0;
}

static int parse_decimal_integer(Parser *P, const char *s, const char *q, const char *e,
                                 bool negative, TomlValue *v)
{
        /* The magnitude of INT64_MIN is one more than INT64_MAX. */
        uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, acc = 0;

        for (; q < e; q++) {
                uint64_t d;

                if (*q == '_')
                        continue;
                d = (uint64_t)(*q - '0');
                if (acc > (limit - d) / 10)
                        return parse_error(P, s, "integer does not fit in 64 bits");
                acc = acc * 10 + d;
        }
        v->type = TOML_INTEGER;
        if (!negative)
                v->integer = (int64_t)acc;
        else if (acc == (uint64_t)INT64_MAX + 1)
                v->integer = INT64_MIN;
        else
                v->integer = -(int64_t)acc;
        return 0;
}

static locale_t c_locale(void)
{
        static locale_t cached;
        locale_t l, expected = (locale_t)0;

        /* strtod() follows the process locale, whose decimal point need not be '.'. */
        l = __atomic_load_n(&cached, __ATOMIC_ACQUIRE);
        if (l)
                return l;
        l = newlocale(LC_ALL_MASK, "C", (locale_t)0);
        if (!l)
                return (locale_t)0;
        if (!__atomic_compare_exchange_n(&cached, &expected, l, false, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
                freelocale(l);
                l = expected;
        }
        return l;
}

/* s..e is a complete, validated float: convert it. */
static int convert_float(Parser *P, const char *s, const char *e, TomlValue *v)
{
        _cleanup_free_ char *digits = malloc(e - s + 1);
        locale_t loc = c_locale();
        char *end, *d = digits;
        double x;

        if (!digits || !loc)
                return -ENOMEM;
        for (const char *q = s; q < e; q++)
                if (*q != '_')
                        *d++ = *q;
        *d = 0;

        errno = 0;
        x = strtod_l(digits, &end, loc);
        if (*end != 0)
                return parse_error(P, s, "invalid float");
        /* Underflow rounds towards zero, which is fine; overflow would silently become inf. */
        if (errno == ERANGE && isinf(x))
                return parse_error(P, s, "float is out of range");
        v->type = TOML_FLOAT;
        v->floating = x;
        return 0;
}

/* q is the end of the integer part of s..e: parse the fraction and exponent. */
static int parse_float(Parser *P, const char *s, const char *q, const char *e, TomlValue *v)
{
        const char *bad;

        if (*q == '.') {
                const char *f = q + 1, *f_end = scan_digits(f, e, 10, &bad);

                if (bad)
                        return underscore_error(P, bad);
                if (f_end == f)
                        return parse_error(P, q, "a decimal point must be followed by digits");
                q = f_end;
        }
        if (q < e && (*q == 'e' || *q == 'E')) {
                const char *x = q + 1, *x_end;

                if (x < e && (*x == '+' || *x == '-'))
                        x++;
                x_end = scan_digits(x, e, 10, &bad);
                if (bad)
                        return underscore_error(P, bad);
                if (x_end == x)
                        return parse_error(P, q, "an exponent must be followed by digits");
                q = x_end;
        }
        if (q != e)
                return parse_error(P, q, "invalid character in number");
        return convert_float(P, s, e, v);
}

static int parse_number(Parser *P, const char *s, size_t n, TomlValue *v)
{
        const char *e = s + n, *q = s, *bad, *int_end;
        bool negative = false;

        if (*q == '+' || *q == '-') {
                negative = *q == '-';
                q++;
        }
        if (e - q == 3 && (memcmp(q, "inf", 3) == 0 || memcmp(q, "nan", 3) == 0)) {
                v->type = TOML_FLOAT;
                v->floating = q[0] == 'i' ? INFINITY : NAN;
                if (negative)
                        v->floating = -v->floating;
                return 0;
        }
        if (e - q >= 2 && q[0] == '0' && (q[1] == 'x' || q[1] == 'o' || q[1] == 'b')) {
                if (q != s)
                        return parse_error(P, s,
                                           "hexadecimal, octal and binary integers cannot have a "
                                           "sign");
                return parse_prefixed_integer(P, s, e, v);
        }

        int_end = scan_digits(q, e, 10, &bad);
        if (bad)
                return underscore_error(P, bad);
        if (int_end == q)
                return parse_error(P, s, "invalid value %.*s", (int)MIN(n, (size_t)QUOTE_MAX), s);
        if (q[0] == '0' && int_end - q > 1)
                return parse_error(P, s, "leading zeros are not allowed in decimal numbers");
        if (int_end == e)
                return parse_decimal_integer(P, s, q, e, negative, v);
        return parse_float(P, s, int_end, e, v);
}

/* ---- Dates and times ---- */

static bool take_digits(const char **q, const char *e, size_t n, int *ret)
{
        int v = 0;

        if ((size_t)(e - *q) < n)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (!is_digit((*q)[i]))
                        return false;
                v = v * 10 + ((*q)[i] - '0');
        }
        *q += n;
        *ret = v;
        return true;
}

static bool take_char(const char **q, const char *e, char c)
{
        if (*q >= e || **q != c)
                return false;
        (*q)++;
        return true;
}

static int days_in_month(int year, int month)
{
        static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        bool leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);

        return month == 2 && leap ? 29 : days[month - 1];
}

static int parse_date(Parser *P, const char **q, const char *e, TomlDatetime *dt)
{
        const char *at = *q;

        if (!take_digits(q, e, 4, &dt->year) || !take_char(q, e, '-') ||
            !take_digits(q, e, 2, &dt->month) || !take_char(q, e, '-') ||
            !take_digits(q, e, 2, &dt->day))
                return parse_error(P, at, "invalid date: expected YYYY-MM-DD");
        if (dt->month < 1 || dt->month > 12)
                return parse_error(P, at + 5, "invalid date: month %02d does not exist", dt->month);
        if (dt->day < 1 || dt->day > days_in_month(dt->year, dt->month))
                return parse_error(P, at + 8, "invalid date: %04d-%02d has no day %02d", dt->year,
                                   dt->month, dt->day);
        return 0;
}

static int parse_time(Parser *P, const char **q, const char *e, TomlDatetime *dt)
{
        const char *at = *q;
        size_t digits = 0;

        if (!take_digits(q, e, 2, &dt->hour) || !take_char(q, e, ':') ||
            !take_digits(q, e, 2, &dt->minute) || !take_char(q, e, ':') ||
            !take_digits(q, e, 2, &dt->second))
                return parse_error(P, at, "invalid time: expected HH:MM:SS");
        if (dt->hour > 23)
                return parse_error(P, at, "invalid time: hour %02d does not exist", dt->hour);
        if (dt->minute > 59)
                return parse_error(P, at + 3, "invalid time: minute %02d does not exist",
                                   dt->minute);
        /* 60 is a leap second, which RFC 3339 allows. */
        if (dt->second > 60)
                return parse_error(P, at + 6, "invalid time: second %02d does not exist",
                                   dt->second);

        if (!take_char(q, e, '.'))
                return 0;
        /* Digits beyond nanoseconds are dropped: truncated, not rounded. */
        for (; *q < e && is_digit(**q); (*q)++, digits++)
                if (digits < sizeof(dt->fraction) - 1)
                        dt->fraction[digits] = **q;
        if (digits == 0)
                return parse_error(P, *q - 1, "invalid time: expected digits after '.'");
        return 0;
}

static int parse_offset(Parser *P, const char **q, const char *e, TomlDatetime *dt)
{
        const char *at = *q;
        int hours, minutes;
        bool negative;

        if (take_char(q, e, 'Z') || take_char(q, e, 'z')) {
                dt->has_offset = dt->offset_z = true;
                return 0;
        }
        if (!take_char(q, e, '+') && !take_char(q, e, '-'))
                return parse_error(P, at, "invalid character in date-time");
        negative = *at == '-';
        if (!take_digits(q, e, 2, &hours) || !take_char(q, e, ':') ||
            !take_digits(q, e, 2, &minutes))
                return parse_error(P, at, "invalid time offset: expected Z, +HH:MM or -HH:MM");
        if (hours > 23 || minutes > 59)
                return parse_error(P, at, "invalid time offset: %.6s is out of range", at);
        dt->has_offset = true;
        dt->offset_minutes = (negative ? -1 : 1) * (hours * 60 + minutes);
        return 0;
}

/* s..s+n is a date, a time, or a date and a time with optional offset. */
static int parse_datetime(Parser *P, const char *s, size_t n, TomlValue *v)
{
        const char *q = s, *e = s + n;
        TomlDatetime dt = {};
        bool has_date = false;
        int r;

        if (n >= 5 && s[4] == '-') {
                r = parse_date(P, &q, e, &dt);
                if (r < 0)
                        return r;
                has_date = true;
                if (q == e) {
                        v->type = TOML_DATE_LOCAL;
                        v->datetime = dt;
                        return 0;
                }
                if (*q != 'T' && *q != 't' && *q != ' ')
                        return parse_error(P, q, "invalid date-time: expected 'T' after the date");
                q++;
        }

        r = parse_time(P, &q, e, &dt);
        if (r < 0)
                return r;
        if (q == e) {
                v->type = has_date ? TOML_DATETIME_LOCAL : TOML_TIME_LOCAL;
                v->datetime = dt;
                return 0;
        }
        if (!has_date)
                return parse_error(P, q,
                                   *q == 'Z' || *q == 'z' || *q == '+' || *q == '-'
                                           ? "a time without a date cannot have an offset"
                                           : "invalid character in time");
        r = parse_offset(P, &q, e, &dt);
        if (r < 0)
                return r;
        if (q != e)
                return parse_error(P, q, "invalid character after date-time");
        v->type = TOML_DATETIME;
        v->datetime = dt;
        return 0;
}

/* ---- Values ---- */

static int parse_value(Parser *P, unsigned depth, TomlValue **ret);
static int parse_keyval(Parser *P, TomlValue *table, unsigned depth, bool in_inline);

static bool is_token_char(int c)
{
        return is_bare_key_char(c) || c == '+' || c == '.' || c == ':';
}

static bool starts_with_digits(const char *s, size_t n, size_t count)
{
        if (n < count)
                return false;
        for (size_t i = 0; i < count; i++)
                if (!is_digit(s[i]))
                        return false;
        return true;
}

/* Numbers, booleans, dates and times: everything not quoted or bracketed. */
static int parse_bare_value(Parser *P, TomlValue *v)
{
        const char *s = P->p;
        size_t n;

        while (is_token_char(peek(P)))
                P->p++;
        n = P->p - s;
        if (n == 0)
                return parse_error(P, s, "expected a value");

        if (starts_with_digits(s, n, 4) && n > 4 && s[4] == '-') {
                /* A space may stand for the 'T' between date and time. */
                if (n == 10 && peek(P) == ' ' && is_digit(peek_at(P, 1))) {
                        P->p++;
                        while (is_token_char(peek(P)))
                                P->p++;
                        n = P->p - s;
                }
                return parse_datetime(P, s, n, v);
        }
        if (starts_with_digits(s, n, 2) && n > 2 && s[2] == ':')
                return parse_datetime(P, s, n, v);
        if ((n == 4 && memcmp(s, "true", 4) == 0) || (n == 5 && memcmp(s, "false", 5) == 0)) {
                v->type = TOML_BOOL;
                v->boolean = n == 4;
                return 0;
        }
        if (is_alpha(s[0]) && !(n == 3 && (memcmp(s, "inf", 3) == 0 || memcmp(s, "nan", 3) == 0)))
                return parse_error(P, s, "invalid value %.*s (strings must be quoted)",
                                   (int)MIN(n, (size_t)QUOTE_MAX), s);
        return parse_number(P, s, n, v);
}

static int parse_array(Parser *P, unsigned depth, TomlValue **ret)
{
        _cleanup_toml_ TomlValue *array = NULL;
        int r;

        if (depth > TOML_MAX_DEPTH)
                return too_deep_error(P, P->p);
        array = toml_value_new(TOML_ARRAY);
        if (!array)
                return -ENOMEM;
        array->flags = FLAG_INLINE;

        P->p++;
        for (;;) {
                _cleanup_toml_ TomlValue *item = NULL;
                int c;

                skip_ws_comment_newline(P);
                if (peek(P) == ']')
                        break;
                if (peek(P) < 0)
                        return parse_error(P, P->p, "unterminated array");
                r = parse_value(P, depth + 1, &item);
                if (r < 0)
                        return r;
                r = array_push(array, item);
                if (r < 0)
                        return r;
                TAKE_PTR(item);

                skip_ws_comment_newline(P);
                c = peek(P);
                if (c == ']')
                        break;
                if (c != ',')
                        return parse_error(P, P->p,
                                           c < 0 ? "unterminated array"
                                                 : "expected ',' or ']' after an array element");
                P->p++;
        }
        P->p++;
        *ret = TAKE_PTR(array);
        return 0;
}

static int parse_inline_table(Parser *P, unsigned depth, TomlValue **ret)
{
        _cleanup_toml_ TomlValue *table = NULL;
        int r;

        if (depth > TOML_MAX_DEPTH)
                return too_deep_error(P, P->p);
        table = toml_value_new(TOML_TABLE);
        if (!table)
                return -ENOMEM;
        table->flags = FLAG_INLINE;

        P->p++;
        skip_ws(P);
        if (peek(P) == '}') {
                P->p++;
                *ret = TAKE_PTR(table);
                return 0;
        }
        for (;;) {
                const char *comma;
                int c = peek(P);

                if (c == '\n' || c == '\r')
                        return parse_error(P, P->p, "inline tables must be on a single line");
                r = parse_keyval(P, table, depth, /* in_inline= */ true);
                if (r < 0)
                        return r;
                skip_ws(P);
                c = peek(P);
                if (c == '}')
                        break;
                if (c < 0)
                        return parse_error(P, P->p, "unterminated inline table");
                if (c == '\n' || c == '\r')
                        return parse_error(P, P->p, "inline tables must be on a single line");
                if (c == '#')
                        return parse_error(P, P->p, "comments are not allowed in inline tables");
                if (c != ',')
                        return parse_error(P, P->p, "expected ',' or '}' in an inline table");
                comma = P->p++;
                skip_ws(P);
                if (peek(P) == '}')
                        return parse_error(P, comma, "inline tables cannot have a trailing comma");
        }
        P->p++;
        *ret = TAKE_PTR(table);
        return 0;
}

/* The value at P->p, which will be stored at the given depth. */
static int parse_value(Parser *P, unsigned depth, TomlValue **ret)
{
        _cleanup_toml_ TomlValue *v = NULL;
        unsigned line, column;
        int c = peek(P), r;

        locate(P, P->p, &line, &column);
        if (c == '[')
                r = parse_array(P, depth, &v);
        else if (c == '{')
                r = parse_inline_table(P, depth, &v);
        else {
                v = calloc(1, sizeof(TomlValue));
                if (!v)
                        return -ENOMEM;
                if (c == '"' || c == '\'') {
                        v->type = TOML_STRING;
                        r = parse_string(P, &v->string.data, &v->string.len);
                } else
                        r = parse_bare_value(P, v);
        }
        if (r < 0)
                return r;
        v->line = line;
        v->column = column;
        *ret = TAKE_PTR(v);
        return 0;
}

/* ---- Tables: key/value lines and headers ---- */

/* Creates an empty table named by part in parent. */
static int add_table(Parser *P, TomlValue *parent, unsigned depth, KeyPart *part, unsigned flags,
                     TomlValue **ret)
{
        _cleanup_toml_ TomlValue *table = NULL;
        int r;

        if (depth > TOML_MAX_DEPTH)
                return too_deep_error(P, part->at);
        table = toml_value_new(TOML_TABLE);
        if (!table)
                return -ENOMEM;
        table->flags = flags;
        locate(P, part->at, &table->line, &table->column);
        r = table_add(P, parent, part->owned, part->len, table);
        if (r < 0)
                return r;
        TAKE_PTR(part->owned);
        *ret = TAKE_PTR(table);
        return 0;
}

static int already_defined_error(Parser *P, const Key *key, size_t i, const TomlValue *v)
{
        char path[QUOTE_MAX];

        return parse_error(P, key->parts[i].at, "key \"%s\" is already defined as %s",
                           key_path(key, i + 1, path, sizeof(path)), toml_type_with_article(v->type));
}

static int inline_table_error(Parser *P, const Key *key, size_t i)
{
        char path[QUOTE_MAX];

        return parse_error(P, key->parts[i].at, "inline table \"%s\" cannot be extended",
                           key_path(key, i + 1, path, sizeof(path)));
}

/* Walks the dotted prefix of a key (all parts but the last) down from table, creating tables. */
static int walk_dotted_key(Parser *P, TomlValue *table, unsigned depth, Key *key, bool in_inline,
                           TomlValue **ret_table, unsigned *ret_depth)
{
        char path[QUOTE_MAX];
        int r;

        for (size_t i = 0; i + 1 < key->n; i++) {
                KeyPart *part = &key->parts[i];
                TomlValue *child = index_find(P, table, part->name, part->len);

                if (!child) {
                        r = add_table(P, table, depth + 1, part,
                                      FLAG_DOTTED | (in_inline ? FLAG_INLINE : 0), &child);
                        if (r < 0)
                                return r;
                } else if (child->type != TOML_TABLE) {
                        return already_defined_error(P, key, i, child);
                } else if ((child->flags & FLAG_INLINE) &&
                           !(in_inline && (child->flags & FLAG_DOTTED))) {
                        /* Within an inline table, dotted keys may extend the tables that other
                         * dotted keys of the same inline table created, and nothing else. */
                        return inline_table_error(P, key, i);
                } else if (child->flags & FLAG_HEADER) {
                        return parse_error(P, part->at,
                                           "table \"%s\" is defined by a header and cannot be "
                                           "extended with dotted keys",
                                           key_path(key, i + 1, path, sizeof(path)));
                }
                child->flags |= FLAG_DOTTED;
                table = child;
                depth++;
        }
        *ret_table = table;
        *ret_depth = depth;
        return 0;
}

/* key = value, into table (at the given depth). */
static int parse_keyval(Parser *P, TomlValue *table, unsigned depth, bool in_inline)
{
        _cleanup_(key_done) Key key = {};
        _cleanup_toml_ TomlValue *v = NULL;
        TomlValue *parent = NULL;
        unsigned parent_depth = 0;
        KeyPart *last;
        char path[QUOTE_MAX];
        int r;

        r = parse_key(P, &key);
        if (r < 0)
                return r;
        if (peek(P) != '=')
                return parse_error(P, P->p, "expected '=' after key");
        P->p++;
        skip_ws(P);

        /* Find the place before parsing the value: duplicate keys are reported before errors in
         * their values, and positions are computed in document order. */
        r = walk_dotted_key(P, table, depth, &key, in_inline, &parent, &parent_depth);
        if (r < 0)
                return r;
        last = &key.parts[key.n - 1];
        if (index_find(P, parent, last->name, last->len))
                return parse_error(P, last->at, "duplicate key \"%s\"",
                                   key_path(&key, key.n, path, sizeof(path)));

        r = parse_value(P, parent_depth + 1, &v);
        if (r < 0)
                return r;
        r = table_add(P, parent, last->owned, last->len, v);
        if (r < 0)
                return r;
        TAKE_PTR(last->owned);
        TAKE_PTR(v);
        return 0;
}

/* Walks the parent parts of a [header] key down from the root, creating implicit tables. */
static int walk_header_key(Parser *P, Key *key, TomlValue **ret_table, unsigned *ret_depth)
{
        TomlValue *table = P->root;
        unsigned depth = 0;
        int r;

        for (size_t i = 0; i + 1 < key->n; i++) {
                KeyPart *part = &key->parts[i];
                TomlValue *child = index_find(P, table, part->name, part->len);

                if (!child) {
                        r = add_table(P, table, depth + 1, part, /* flags= */ 0, &child);
                        if (r < 0)
                                return r;
                        depth++;
                } else if (child->type == TOML_ARRAY && (child->flags & FLAG_ARRAY_OF_TABLES)) {
                        /* [a.b] after [[a]] belongs to the last table of the array, which always
                         * exists: such arrays are created with their first table. */
                        child = child->array.items[child->array.n - 1];
                        depth += 2;
                } else if (child->type != TOML_TABLE) {
                        return already_defined_error(P, key, i, child);
                } else if (child->flags & FLAG_INLINE) {
                        return inline_table_error(P, key, i);
                } else
                        depth++;
                table = child;
        }
        *ret_table = table;
        *ret_depth = depth;
        return 0;
}

/* [a.b.c]: defines table c in parent (at depth). */
static int define_table(Parser *P, Key *key, TomlValue *parent, unsigned depth, unsigned line,
                        unsigned column)
{
        KeyPart *last = &key->parts[key->n - 1];
        TomlValue *child = index_find(P, parent, last->name, last->len);
        char path[QUOTE_MAX];
        int r;

        key_path(key, key->n, path, sizeof(path));
        if (!child) {
                r = add_table(P, parent, depth + 1, last, FLAG_HEADER, &child);
                if (r < 0)
                        return r;
        } else if (child->type == TOML_ARRAY && (child->flags & FLAG_ARRAY_OF_TABLES)) {
                return parse_error(P, last->at,
                                   "\"%s\" is an array of tables: use [[%s]] to add to it", path,
                                   path);
        } else if (child->type != TOML_TABLE) {
                return already_defined_error(P, key, key->n - 1, child);
        } else if (child->flags & FLAG_INLINE) {
                return inline_table_error(P, key, key->n - 1);
        } else if (child->flags & FLAG_HEADER) {
                return parse_error(P, last->at, "table \"%s\" is already defined", path);
        } else if (child->flags & FLAG_DOTTED) {
                return parse_error(P, last->at, "table \"%s\" is already defined by dotted keys",
                                   path);
        } else
                /* Created implicitly by an earlier [a.b.c.d]: this is its definition. */
                child->flags |= FLAG_HEADER;

        child->line = line;
        child->column = column;
        P->current = child;
        P->current_depth = depth + 1;
        return 0;
}

/* [[a.b.c]]: appends a table to array c in parent (at depth), creating the array. */
static int append_array_table(Parser *P, Key *key, TomlValue *parent, unsigned depth, unsigned line,
                              unsigned column)
{
        KeyPart *last = &key->parts[key->n - 1];
        TomlValue *array = index_find(P, parent, last->name, last->len);
        _cleanup_toml_ TomlValue *table = NULL;
        char path[QUOTE_MAX];
        int r;

        key_path(key, key->n, path, sizeof(path));
        if (depth + 2 > TOML_MAX_DEPTH)
                return too_deep_error(P, last->at);
        if (!array) {
                _cleanup_toml_ TomlValue *a = toml_value_new(TOML_ARRAY);

                if (!a)
                        return -ENOMEM;
                a->flags = FLAG_ARRAY_OF_TABLES;
                a->line = line;
                a->column = column;
                r = table_add(P, parent, last->owned, last->len, a);
                if (r < 0)
                        return r;
                TAKE_PTR(last->owned);
                array = TAKE_PTR(a);
        } else if (array->type == TOML_TABLE) {
                return parse_error(P, last->at,
                                   "\"%s\" is already defined as a table, not an array of tables",
                                   path);
        } else if (array->type != TOML_ARRAY) {
                return already_defined_error(P, key, key->n - 1, array);
        } else if (!(array->flags & FLAG_ARRAY_OF_TABLES)) {
                return parse_error(P, last->at, "static array \"%s\" cannot be extended", path);
        }

        table = toml_value_new(TOML_TABLE);
        if (!table)
                return -ENOMEM;
        table->flags = FLAG_HEADER;
        table->line = line;
        table->column = column;
        r = array_push(array, table);
        if (r < 0)
                return r;
        P->current = TAKE_PTR(table);
        P->current_depth = depth + 2;
        return 0;
}

static int parse_table_header(Parser *P)
{
        _cleanup_(key_done) Key key = {};
        bool is_array = looking_at(P, "[[");
        TomlValue *parent = NULL;
        unsigned depth = 0, line, column;
        int r;

        locate(P, P->p, &line, &column);
        P->p += is_array ? 2 : 1;
        skip_ws(P);
        r = parse_key(P, &key);
        if (r < 0)
                return r;
        if (is_array ? !looking_at(P, "]]") : peek(P) != ']')
                return parse_error(P, P->p,
                                   is_array ? "expected ']]' at the end of the header"
                                            : "expected ']' at the end of the header");
        P->p += is_array ? 2 : 1;

        r = walk_header_key(P, &key, &parent, &depth);
        if (r < 0)
                return r;
        if (is_array)
                return append_array_table(P, &key, parent, depth, line, column);
        return define_table(P, &key, parent, depth, line, column);
}

static int parse_document(Parser *P)
{
        int r;

        for (;;) {
                const char *what = NULL;
                int c;

                skip_ws(P);
                c = peek(P);
                if (c < 0)
                        break;
                if (c == '#')
                        skip_comment(P);
                else if (c == '[') {
                        r = parse_table_header(P);
                        if (r < 0)
                                return r;
                        what = "the header";
                } else if (c != '\n' && c != '\r') {
                        r = parse_keyval(P, P->current, P->current_depth,
                                         /* in_inline= */ false);
                        if (r < 0)
                                return r;
                        what = "the value";
                }

                skip_ws(P);
                if (peek(P) == '#')
                        skip_comment(P);
                if (peek(P) < 0)
                        break;
                if (!skip_newline(P))
                        return parse_error(P, P->p, "expected a newline after %s",
                                           what ?: "the comment");
        }

        /* Everything up to the first forbidden byte was fine: the byte itself is the error. */
        if (P->end < P->input_end)
                return parse_error(P, P->end, "%s", P->bad_reason);
        return 0;
}

static int out_of_memory(TomlError *error)
{
        *error = (TomlError){};
        snprintf(error->message, sizeof(error->message), "out of memory");
        return -ENOMEM;
}

int toml_parse(const char *text, size_t len, TomlValue **ret_root, TomlError *ret_error)
{
        _cleanup_(parser_done) Parser P = {};
        TomlError scratch;
        int r;

        if (!ret_error)
                ret_error = &scratch;
        *ret_error = (TomlError){};
        if (!ret_root || (!text && len > 0)) {
                snprintf(ret_error->message, sizeof(ret_error->message), "invalid arguments");
                return -EINVAL;
        }
        if (!text)
                text = "";

        P.begin = text;
        P.input_end = text + len;
        /* A UTF-8 byte order mark is not part of the document. */
        if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
                P.begin += 3;
        P.p = P.pos = P.pos_line_start = P.begin;
        P.pos_line = P.pos_column = 1;
        P.error = ret_error;
        find_forbidden_byte(&P);

        P.root = toml_value_new(TOML_TABLE);
        if (!P.root)
                return out_of_memory(ret_error);
        P.root->flags = FLAG_HEADER;
        P.root->line = P.root->column = 1;
        P.current = P.root;

        r = parse_document(&P);
        if (r == -ENOMEM)
                return out_of_memory(ret_error);
        if (r < 0)
                return r;
        *ret_root = TAKE_PTR(P.root);
        return 0;
}

/* I/O errors are not about a position: line and column stay 0. */
static int io_error(TomlError *error, int r, const char *what, const char *path)
{
        char buf[128];

        *error = (TomlError){};
        snprintf(error->message, sizeof(error->message), "%s %s: %s", what, path,
                 strerror_r(-r, buf, sizeof(buf)));
        return r;
}

static int read_all(int fd, size_t hint, char **ret, size_t *ret_len)
{
        _cleanup_free_ char *data = NULL;
        size_t len = 0, allocated = 0;

        for (;;) {
                ssize_t n;

                if (len == allocated) {
                        size_t want = allocated == 0 ? MAX(hint + 1, (size_t)4096) : allocated * 2;
                        char *q;

                        if (len >= TOML_FILE_MAX)
                                return -EFBIG;
                        want = MIN(want, (size_t)TOML_FILE_MAX + 1);
                        q = realloc(data, want);
                        if (!q)
                                return -ENOMEM;
                        data = q;
                        allocated = want;
                }
                n = read(fd, data + len, allocated - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += n;
        }
        if (len > TOML_FILE_MAX)
                return -EFBIG;
        *ret = TAKE_PTR(data);
        *ret_len = len;
        return 0;
}

int toml_parse_file(const char *path, TomlValue **ret_root, TomlError *ret_error)
{
        _cleanup_free_ char *text = NULL;
        _cleanup_close_ int fd = -EBADF;
        TomlError scratch;
        struct stat st;
        size_t len = 0;
        int r;

        if (!ret_error)
                ret_error = &scratch;
        if (!path || !ret_root)
                return io_error(ret_error, -EINVAL, "cannot read", "(null)");

        /* O_NONBLOCK: opening a FIFO must not hang; it is rejected below. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return io_error(ret_error, -errno, "cannot open", path);
        if (fstat(fd, &st) < 0)
                return io_error(ret_error, -errno, "cannot stat", path);
        if (S_ISDIR(st.st_mode))
                return io_error(ret_error, -EISDIR, "cannot read", path);
        /* Devices, FIFOs and sockets are no config files (and could be endless). */
        if (!S_ISREG(st.st_mode))
                return io_error(ret_error, -EBADFD, "not a regular file:", path);

        r = read_all(fd, (size_t)MIN(st.st_size, (off_t)TOML_FILE_MAX), &text, &len);
        if (r < 0)
                return io_error(ret_error, r, "cannot read", path);
        return toml_parse(text, len, ret_root, ret_error);
}
