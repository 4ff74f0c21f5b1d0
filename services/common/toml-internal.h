/* SPDX-License-Identifier: MIT */
#pragma once

/* What the TOML parser (toml.c) uses of the value tree (toml-value.c) beyond toml.h. */

#include <stddef.h>

#include "toml.h"

/* A NUL-terminated copy of len bytes of s. */
char *memdup_nul(const char *s, size_t len);
/* Makes room for one more item of item_size in *array (n used, *allocated available). */
int grow_for_one(void **array, size_t *allocated, size_t n, size_t item_size);
/* Appends without looking for an existing key; takes ownership of key and value on success. */
int table_append(TomlValue *table, char *key, size_t key_len, TomlValue *value);
/* Appends, taking ownership of item on success. */
int array_push(TomlValue *array, TomlValue *item);
