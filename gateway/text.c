/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"
#include "utf8.h"

int buffer_reserve(Buffer *b, size_t extra)
{
        size_t need, n;
        char *p;

        if (b->error)
                return b->error;
        if (extra > SIZE_MAX - b->len - 1)
                return (b->error = -ENOMEM);
        need = b->len + extra + 1;
        if (need <= b->allocated)
                return 0;
        n = b->allocated ? b->allocated : 64;
        while (n < need)
                n = n > SIZE_MAX / 2 ? need : n * 2;
        p = realloc(b->data, n);
        if (!p)
                return (b->error = -ENOMEM);
        b->data = p;
        b->allocated = n;
        return 0;
}

void buffer_append(Buffer *b, const void *data, size_t n)
{
        if (buffer_reserve(b, n) < 0)
                return;
        if (n > 0)
                memcpy(b->data + b->len, data, n);
        b->len += n;
        b->data[b->len] = 0;
}

void buffer_append_str(Buffer *b, const char *s)
{
        buffer_append(b, s, strlen(s));
}

void buffer_append_byte(Buffer *b, char c)
{
        buffer_append(b, &c, 1);
}

void buffer_appendf(Buffer *b, const char *format, ...)
{
        va_list ap;
        int n;

        va_start(ap, format);
        n = vsnprintf(NULL, 0, format, ap);
        va_end(ap);
        if (n < 0) {
                b->error = -EINVAL;
                return;
        }
        if (buffer_reserve(b, (size_t)n) < 0)
                return;
        va_start(ap, format);
        vsnprintf(b->data + b->len, (size_t)n + 1, format, ap);
        va_end(ap);
        b->len += (size_t)n;
}

void buffer_done(Buffer *b)
{
        /* Only what is in use holds data: whoever shortens a buffer wipes what it drops. Wiping
         * the whole allocation would also fault in pages never used. */
        if (b->data) {
                explicit_bzero(b->data, b->len);
                free(b->data);
        }
        *b = (Buffer){};
}

void utf8_append_lossy(Buffer *b, const char *s, size_t n)
{
        const uint8_t *p = (const uint8_t *)s;
        size_t i = 0, bad;
        uint32_t cp;

        while (i < n) {
                size_t l = utf8_decode(p + i, n - i, &cp, &bad);

                if (l > 0) {
                        buffer_append(b, p + i, l);
                        i += l;
                } else {
                        buffer_append_str(b, "\xef\xbf\xbd");
                        i += bad;
                }
        }
}

/* Characters Rust's Debug writes as \u{…}: controls, and the most common of the characters that
 * are not printable or that extend a grapheme (an approximation of Rust's Unicode tables). */
static bool needs_unicode_escape(uint32_t cp)
{
        static const struct {
                uint32_t from, to;
        } ranges[] = {
                { 0x0000, 0x001f }, { 0x007f, 0x009f }, { 0x00ad, 0x00ad }, { 0x0300, 0x036f },
                { 0x200b, 0x200f }, { 0x2028, 0x202e }, { 0x2060, 0x2064 }, { 0xe000, 0xf8ff },
                { 0xfe00, 0xfe0f }, { 0xfeff, 0xfeff }, { 0xfff9, 0xfffb },
        };

        for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
                if (cp >= ranges[i].from && cp <= ranges[i].to)
                        return true;
        return false;
}

void rust_debug_quote(Buffer *b, const char *s, size_t n)
{
        const uint8_t *p = (const uint8_t *)s;
        size_t i = 0, bad;
        uint32_t cp;

        buffer_append_byte(b, '"');
        while (i < n) {
                size_t l = utf8_decode(p + i, n - i, &cp, &bad);

                if (l == 0) {
                        /* Callers pass UTF-8; anything else is shown as U+FFFD. */
                        buffer_append_str(b, "\xef\xbf\xbd");
                        i += bad;
                        continue;
                }
                switch (cp) {
                case '"':
                        buffer_append_str(b, "\\\"");
                        break;
                case '\\':
                        buffer_append_str(b, "\\\\");
                        break;
                case 0:
                        buffer_append_str(b, "\\0");
                        break;
                case '\t':
                        buffer_append_str(b, "\\t");
                        break;
                case '\r':
                        buffer_append_str(b, "\\r");
                        break;
                case '\n':
                        buffer_append_str(b, "\\n");
                        break;
                default:
                        if (needs_unicode_escape(cp))
                                buffer_appendf(b, "\\u{%x}", (unsigned)cp);
                        else
                                buffer_append(b, p + i, l);
                }
                i += l;
        }
        buffer_append_byte(b, '"');
}
