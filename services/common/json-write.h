/* SPDX-License-Identifier: MIT */
#pragma once

/* JSON strings for the programs that print JSON (aziotctl, the TOML corpus oracle): the escapes
 * RFC 8259 asks for, the short forms where it has them, and DEL as \u007f. UTF-8 passes through. */

#include <stddef.h>
#include <stdio.h>

/* The len bytes at s (which may hold NUL bytes) as a JSON string. */
void json_write_string_len(FILE *f, const char *s, size_t len);

/* The NUL-terminated s as a JSON string; NULL as null. */
void json_write_string(FILE *f, const char *s);
