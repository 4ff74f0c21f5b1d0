/* SPDX-License-Identifier: MIT */
#pragma once

/* Standard base64 (RFC 4648 alphabet, '=' padding), the encoding of every byte string on the local
 * HTTP APIs and inside key handles. Decoding is strict like upstream's: padding is required and canonical, and the unused
 * low bits of the last symbol must be zero. */

#include <stddef.h>
#include <stdint.h>

/* Length of the encoding of n bytes, without a terminator. */
static inline size_t base64_encoded_len(size_t n)
{
        return (n + 2) / 3 * 4;
}

/* Writes the encoding of data to out (base64_encoded_len(n) bytes, no terminator). */
void base64_encode(const uint8_t *data, size_t n, char *out);

/* Checks text; on failure returns -EINVAL and writes a message in upstream's wording ("Invalid byte
 * 33, offset 0.", "Invalid padding", …) to message. message may be NULL. */
int base64_validate(const char *text, size_t len, char *message, size_t size);

/* Decodes text into out, which may be text itself (the result is never longer). Returns 0 with the
 * number of bytes written in *ret_len, or -EINVAL when text is not valid. */
int base64_decode(const char *text, size_t len, uint8_t *out, size_t *ret_len);

/* The encoding of data as a new NUL-terminated string; NULL when out of memory. */
char *base64_encode_alloc(const void *data, size_t n);

/* Decodes strictly into a new buffer, NUL-terminated (not counted in *ret_len) so that decoded text
 * can be used as a string. -EINVAL for invalid text, -ENOMEM. */
int base64_decode_alloc(const char *text, size_t len, uint8_t **ret, size_t *ret_len);
