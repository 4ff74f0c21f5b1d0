/* SPDX-License-Identifier: MIT */
#pragma once

/* Strict UTF-8 (Unicode table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes one UTF-8 sequence at s (n bytes available). Returns its length and the code point, or 0
 * when s does not start with a well-formed sequence; *ret_bad is then the length of the maximal
 * ill-formed prefix to replace with one U+FFFD (at least 1), as Rust's from_utf8_lossy does. */
size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *ret_cp, size_t *ret_bad);

bool utf8_is_valid(const char *s, size_t n);
