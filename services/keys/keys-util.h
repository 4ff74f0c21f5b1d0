/* SPDX-License-Identifier: MIT */
#pragma once

/* Small helpers of the key service that have no better home yet (candidates for services/common
 * once a second user appears). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF) of len bytes. */
bool utf8_is_valid(const char *s, size_t len);

/* Standard base64 (RFC 4648 alphabet, '=' padding, no line breaks). Returns a NUL-terminated
 * string, or NULL when out of memory. */
char *base64_encode(const void *data, size_t len);

/* Decodes standard base64 strictly: the length must be a multiple of 4, padding must be present
 * and only at the end, the unused bits of the last symbol must be zero, and nothing but the 64
 * symbols may appear. Returns 0, -EINVAL for anything else, -ENOMEM. *ret is NUL-terminated (not
 * counted in *ret_len) so that text can be used as a string. */
int base64_decode_strict(const char *s, size_t len, uint8_t **ret, size_t *ret_len);
