/* SPDX-License-Identifier: MIT */

/* libFuzzer target for the TOML parser: any input must either be rejected with a positioned error
 * or give a tree that can be duplicated, walked, formatted and freed. Sanitizers do the rest. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const TomlValue *v, const TomlValue *copy, unsigned depth)
{
        char buf[TOML_DATETIME_MAX];

        if (depth > TOML_MAX_DEPTH + 1 || v->type != copy->type || v->line != copy->line ||
            v->column != copy->column || !toml_type_to_string(v->type) || v->line == 0 ||
            v->column == 0)
                abort();

        switch (v->type) {
        case TOML_STRING:
                /* Explicit length, and NUL-terminated as well. */
                if (v->string.data[v->string.len] != 0 || copy->string.len != v->string.len ||
                    memcmp(v->string.data, copy->string.data, v->string.len) != 0)
                        abort();
                break;
        case TOML_ARRAY:
                if (toml_array_size(v) != toml_array_size(copy))
                        abort();
                for (size_t i = 0; i < v->array.n; i++)
                        check(toml_array_get(v, i), toml_array_get(copy, i), depth + 1);
                break;
        case TOML_TABLE:
                if (toml_table_size(v) != toml_table_size(copy))
                        abort();
                toml_table_foreach (e, v) {
                        /* Keys are unique, so a lookup finds this very entry. */
                        if (toml_table_get_n(v, e->key, e->key_len) != e->value)
                                abort();
                        check(e->value, toml_table_get_n(copy, e->key, e->key_len), depth + 1);
                }
                break;
        case TOML_DATETIME:
        case TOML_DATETIME_LOCAL:
        case TOML_DATE_LOCAL:
        case TOML_TIME_LOCAL:
                if (strlen(toml_datetime_format(v, buf)) >= TOML_DATETIME_MAX - 1)
                        abort();
                break;
        default:
                break;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_toml_ TomlValue *root = NULL, *copy = NULL;
        TomlError error;

        if (toml_parse((const char *)data, size, &root, &error) < 0) {
                /* Every rejection says why, and where (nothing here is an I/O error). */
                if (error.message[0] == 0 || error.line == 0 || error.column == 0 ||
                    strnlen(error.message, sizeof(error.message)) == sizeof(error.message))
                        abort();
                return 0;
        }

        copy = toml_value_dup(root);
        if (!copy)
                return 0;
        check(root, copy, 0);

        /* Mutate the copy through the public API; the original must not notice. */
        if (copy->table.n > 0) {
                TomlEntry *first = &copy->table.entries[0];
                TomlValue *replacement = toml_value_dup(root);

                if (!replacement)
                        return 0;
                if (toml_table_set(copy, first->key, first->key_len, replacement) < 0)
                        abort();
                if (toml_table_size(copy) != toml_table_size(root) ||
                    toml_table_get_n(copy, first->key, first->key_len) != replacement)
                        abort();
        }
        return 0;
}
