/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "base64.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The 6-bit value of a symbol, or -1. */
static int symbol_value(unsigned char c)
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

void base64_encode(const uint8_t *data, size_t n, char *out)
{
        size_t i = 0;

        for (; i + 3 <= n; i += 3) {
                uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];

                *out++ = alphabet[v >> 18];
                *out++ = alphabet[(v >> 12) & 0x3f];
                *out++ = alphabet[(v >> 6) & 0x3f];
                *out++ = alphabet[v & 0x3f];
        }
        if (n - i == 1) {
                uint32_t v = (uint32_t)data[i] << 16;

                *out++ = alphabet[v >> 18];
                *out++ = alphabet[(v >> 12) & 0x3f];
                *out++ = '=';
                *out++ = '=';
        } else if (n - i == 2) {
                uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;

                *out++ = alphabet[v >> 18];
                *out++ = alphabet[(v >> 12) & 0x3f];
                *out++ = alphabet[(v >> 6) & 0x3f];
                *out++ = '=';
        }
}

static int invalid_byte(char *message, size_t size, unsigned char byte, size_t offset)
{
        if (message)
                snprintf(message, size, "Invalid byte %u, offset %zu.", byte, offset);
        return -EINVAL;
}

static int invalid(char *message, size_t size, const char *text)
{
        if (message)
                snprintf(message, size, "%s", text);
        return -EINVAL;
}

int base64_validate(const char *text, size_t len, char *message, size_t size)
{
        size_t data_len = 0, pad = 0, last;
        int v;

        /* Symbols, then at most the padding: a symbol after '=' makes that '=' the bad byte. */
        while (data_len < len && text[data_len] != '=') {
                if (symbol_value((unsigned char)text[data_len]) < 0)
                        return invalid_byte(message, size, (unsigned char)text[data_len],
                                            data_len);
                data_len++;
        }
        for (size_t i = data_len; i < len; i++) {
                if (text[i] != '=')
                        return invalid_byte(message, size, '=', data_len);
                pad++;
        }

        if (data_len % 4 == 1)
                return invalid(message, size, "Encoded text cannot have a 6-bit remainder.");
        if ((data_len + pad) % 4 != 0 || pad > 2 || (data_len % 4 == 0 && pad > 0))
                return invalid(message, size, "Invalid padding");

        /* The bits of the last symbol that fall outside the last byte must be zero. */
        if (data_len % 4 == 0)
                return 0;
        last = data_len - 1;
        v = symbol_value((unsigned char)text[last]);
        if ((data_len % 4 == 2 && (v & 0x0f) != 0) || (data_len % 4 == 3 && (v & 0x03) != 0)) {
                if (message)
                        snprintf(message, size, "Invalid last symbol %u, offset %zu.",
                                 (unsigned char)text[last], last);
                return -EINVAL;
        }
        return 0;
}

int base64_decode(const char *text, size_t len, uint8_t *out, size_t *ret_len)
{
        uint32_t acc = 0;
        size_t n = 0;
        unsigned bits = 0;
        int r;

        r = base64_validate(text, len, NULL, 0);
        if (r < 0)
                return r;

        /* Writing never overtakes reading (3 bytes out per 4 symbols in), so out may alias text. */
        for (size_t i = 0; i < len && text[i] != '='; i++) {
                acc = acc << 6 | (uint32_t)symbol_value((unsigned char)text[i]);
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[n++] = (uint8_t)(acc >> bits);
                        acc &= (1u << bits) - 1;
                }
        }
        *ret_len = n;
        return 0;
}

char *base64_encode_alloc(const void *data, size_t n)
{
        char *out;

        if (n > (SIZE_MAX - 1) / 4 * 3 - 3)
                return NULL;
        out = malloc(base64_encoded_len(n) + 1);
        if (!out)
                return NULL;
        base64_encode(data, n, out);
        out[base64_encoded_len(n)] = 0;
        return out;
}

int base64_decode_alloc(const char *text, size_t len, uint8_t **ret, size_t *ret_len)
{
        uint8_t *out;
        size_t n;
        int r;

        r = base64_validate(text, len, NULL, 0);
        if (r < 0)
                return r;
        out = malloc(len / 4 * 3 + 1);
        if (!out)
                return -ENOMEM;
        r = base64_decode(text, len, out, &n);
        if (r < 0) {
                free(out);
                return r;
        }
        out[n] = 0;
        *ret = out;
        *ret_len = n;
        return 0;
}
