/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>

#include "keys-util.h"

bool utf8_is_valid(const char *s, size_t len)
{
        const uint8_t *p = (const uint8_t *)s, *end = p + len;

        while (p < end) {
                uint32_t c = *p, min;
                size_t n;

                if (c < 0x80) {
                        p++;
                        continue;
                }
                if ((c & 0xe0) == 0xc0)
                        n = 1, c &= 0x1f, min = 0x80;
                else if ((c & 0xf0) == 0xe0)
                        n = 2, c &= 0x0f, min = 0x800;
                else if ((c & 0xf8) == 0xf0)
                        n = 3, c &= 0x07, min = 0x10000;
                else
                        return false;
                if ((size_t)(end - p) <= n)
                        return false;
                for (size_t i = 1; i <= n; i++) {
                        if ((p[i] & 0xc0) != 0x80)
                                return false;
                        c = (c << 6) | (p[i] & 0x3f);
                }
                if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
                        return false;
                p += n + 1;
        }
        return true;
}

static const char b64_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *base64_encode(const void *data, size_t len)
{
        const uint8_t *in = data;
        char *out, *o;

        if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
                return NULL;
        out = malloc((len + 2) / 3 * 4 + 1);
        if (!out)
                return NULL;
        o = out;
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t)in[i] << 16;
                size_t left = len - i;

                if (left > 1)
                        v |= (uint32_t)in[i + 1] << 8;
                if (left > 2)
                        v |= in[i + 2];
                *o++ = b64_alphabet[(v >> 18) & 0x3f];
                *o++ = b64_alphabet[(v >> 12) & 0x3f];
                *o++ = left > 1 ? b64_alphabet[(v >> 6) & 0x3f] : '=';
                *o++ = left > 2 ? b64_alphabet[v & 0x3f] : '=';
        }
        *o = 0;
        return out;
}

static int b64_value(char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

/* Decodes one group of four symbols, of which the last pad (0, 1 or 2) are '='. */
static int b64_group(const char *s, size_t pad, uint8_t *out)
{
        uint32_t v = 0;

        for (size_t i = 0; i < 4; i++) {
                int d = i < 4 - pad ? b64_value(s[i]) : (s[i] == '=' ? 0 : -1);

                if (d < 0)
                        return -EINVAL;
                v = (v << 6) | (uint32_t)d;
        }
        /* Canonical form only: the bits that padding leaves unused must be zero. */
        if ((pad == 1 && (v & 0xff)) || (pad == 2 && (v & 0xffff)))
                return -EINVAL;
        out[0] = (uint8_t)(v >> 16);
        out[1] = (uint8_t)(v >> 8);
        out[2] = (uint8_t)v;
        return 0;
}

int base64_decode_strict(const char *s, size_t len, uint8_t **ret, size_t *ret_len)
{
        size_t pad = 0, n = 0;
        uint8_t *out;

        if (len % 4 != 0)
                return -EINVAL;
        if (len > 0 && s[len - 1] == '=')
                pad = len > 1 && s[len - 2] == '=' ? 2 : 1;

        out = malloc(len / 4 * 3 + 3);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i += 4) {
                size_t group_pad = i + 4 == len ? pad : 0;

                if (b64_group(s + i, group_pad, out + n) < 0) {
                        free(out);
                        return -EINVAL;
                }
                n += 3 - group_pad;
        }
        out[n] = 0;
        *ret = out;
        *ret_len = n;
        return 0;
}
