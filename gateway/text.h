/* SPDX-License-Identifier: MIT */
#pragma once

/* Text helpers for the gateway: UTF-8 checks, the lossy decoding upstream applies to query strings,
 * and the Rust "{:?}" quoting its error messages use (invalid api-version "…", string "…"). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "utf8.h"

/* A growable byte buffer. data is NUL-terminated whenever len > 0 (the terminator is not
 * counted). error is sticky: after a failed allocation every append is a no-op. */
typedef struct Buffer {
        char *data;
        size_t len, allocated;
        int error;
} Buffer;

int buffer_reserve(Buffer *b, size_t extra);
void buffer_append(Buffer *b, const void *data, size_t n);
void buffer_append_str(Buffer *b, const char *s);
void buffer_append_byte(Buffer *b, char c);
void buffer_appendf(Buffer *b, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Wipes the contents (they may be key material) and frees. Code that shortens len must wipe the
 * bytes it drops. */
void buffer_done(Buffer *b);

/* Appends s with every ill-formed sequence replaced by U+FFFD. */
void utf8_append_lossy(Buffer *b, const char *s, size_t n);

/* Appends s (valid UTF-8) surrounded by double quotes and escaped like Rust's Debug for str:
 * \" \\ \0 \t \r \n, and \u{…} for other characters that are not printable. */
void rust_debug_quote(Buffer *b, const char *s, size_t n);
