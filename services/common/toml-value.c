/* SPDX-License-Identifier: MIT */

/* The TOML value tree of toml.h: construction, lookup, copying, freeing and date/time formatting.
 * The parser (toml.c) builds it; the config loader merges it. */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "toml-internal.h"
#include "toml.h"

/* clang-format off */
static const char *const type_names[_TOML_TYPE_MAX] = {
        [TOML_STRING] = "string",
        [TOML_INTEGER] = "integer",
        [TOML_FLOAT] = "float",
        [TOML_BOOL] = "bool",
        [TOML_DATETIME] = "datetime",
        [TOML_DATETIME_LOCAL] = "datetime-local",
        [TOML_DATE_LOCAL] = "date-local",
        [TOML_TIME_LOCAL] = "time-local",
        [TOML_ARRAY] = "array",
        [TOML_TABLE] = "table",
};
/* clang-format on */

const char *toml_type_to_string(TomlType t)
{
        if ((unsigned)t >= _TOML_TYPE_MAX)
                return NULL;
        return type_names[t];
}

/* For messages such as 'key "a" is already defined as an integer'. */
const char *toml_type_with_article(TomlType t)
{
        switch (t) {
        case TOML_STRING:
                return "a string";
        case TOML_INTEGER:
                return "an integer";
        case TOML_FLOAT:
                return "a float";
        case TOML_BOOL:
                return "a bool";
        case TOML_ARRAY:
                return "an array";
        case TOML_TABLE:
                return "a table";
        default:
                return "a date/time";
        }
}

/* ---- The value tree ---- */

char *memdup_nul(const char *s, size_t len)
{
        char *d;

        if (len == SIZE_MAX)
                return NULL;
        d = malloc(len + 1);
        if (!d)
                return NULL;
        if (len > 0)
                memcpy(d, s, len);
        d[len] = 0;
        return d;
}

/* Makes room for one more item of size item_size in *array. */
int grow_for_one(void **array, size_t *allocated, size_t n, size_t item_size)
{
        size_t want;
        void *q;

        if (n < *allocated)
                return 0;
        want = *allocated < 4 ? 4 : *allocated * 2;
        if (want <= *allocated)
                return -ENOMEM;
        q = reallocarray(*array, want, item_size);
        if (!q)
                return -ENOMEM;
        *array = q;
        *allocated = want;
        return 0;
}

/* Appends an entry; key and value pass to the table only on success. No duplicate check. */
int table_append(TomlValue *table, char *key, size_t key_len, TomlValue *value)
{
        int r;

        r = grow_for_one((void **)&table->table.entries, &table->table.allocated, table->table.n,
                         sizeof(TomlEntry));
        if (r < 0)
                return r;
        table->table.entries[table->table.n++] = (TomlEntry){
                .key = key,
                .key_len = key_len,
                .value = value,
        };
        return 0;
}

/* Appends an item; it passes to the array only on success. */
int array_push(TomlValue *array, TomlValue *item)
{
        int r;

        r = grow_for_one((void **)&array->array.items, &array->array.allocated, array->array.n,
                         sizeof(TomlValue *));
        if (r < 0)
                return r;
        array->array.items[array->array.n++] = item;
        return 0;
}

TomlValue *toml_value_new(TomlType type)
{
        _cleanup_toml_ TomlValue *v = NULL;

        if ((unsigned)type >= _TOML_TYPE_MAX)
                return NULL;
        v = calloc(1, sizeof(TomlValue));
        if (!v)
                return NULL;
        v->type = type;
        /* Strings are always NUL-terminated, the empty one too. */
        if (type == TOML_STRING) {
                v->string.data = calloc(1, 1);
                if (!v->string.data)
                        return NULL;
        }
        return TAKE_PTR(v);
}

TomlValue *toml_value_new_string(const char *s, size_t len)
{
        _cleanup_free_ char *data = NULL;
        TomlValue *v;

        if (!s && len > 0)
                return NULL;
        data = memdup_nul(s, len);
        if (!data)
                return NULL;
        v = calloc(1, sizeof(TomlValue));
        if (!v)
                return NULL;
        v->type = TOML_STRING;
        v->string.data = TAKE_PTR(data);
        v->string.len = len;
        return v;
}

TomlValue *toml_value_free(TomlValue *v)
{
        if (!v)
                return NULL;

        switch (v->type) {
        case TOML_STRING:
                free(v->string.data);
                break;
        case TOML_ARRAY:
                for (size_t i = 0; i < v->array.n; i++)
                        toml_value_free(v->array.items[i]);
                free(v->array.items);
                break;
        case TOML_TABLE:
                for (size_t i = 0; i < v->table.n; i++) {
                        free(v->table.entries[i].key);
                        toml_value_free(v->table.entries[i].value);
                }
                free(v->table.entries);
                break;
        default:
                break;
        }
        free(v);
        return NULL;
}

static int dup_children(TomlValue *copy, const TomlValue *v)
{
        int r;

        if (v->type == TOML_ARRAY) {
                for (size_t i = 0; i < v->array.n; i++) {
                        _cleanup_toml_ TomlValue *item = toml_value_dup(v->array.items[i]);

                        if (!item)
                                return -ENOMEM;
                        r = array_push(copy, item);
                        if (r < 0)
                                return r;
                        TAKE_PTR(item);
                }
        } else if (v->type == TOML_TABLE) {
                for (size_t i = 0; i < v->table.n; i++) {
                        const TomlEntry *e = &v->table.entries[i];
                        _cleanup_free_ char *key = memdup_nul(e->key, e->key_len);
                        _cleanup_toml_ TomlValue *value = toml_value_dup(e->value);

                        if (!key || !value)
                                return -ENOMEM;
                        r = table_append(copy, key, e->key_len, value);
                        if (r < 0)
                                return r;
                        TAKE_PTR(key);
                        TAKE_PTR(value);
                }
        }
        return 0;
}

TomlValue *toml_value_dup(const TomlValue *v)
{
        _cleanup_toml_ TomlValue *copy = NULL;

        if (!v)
                return NULL;
        copy = calloc(1, sizeof(TomlValue));
        if (!copy)
                return NULL;

        switch (v->type) {
        case TOML_STRING:
                copy->type = TOML_STRING;
                copy->string.data = memdup_nul(v->string.data, v->string.len);
                if (!copy->string.data)
                        return NULL;
                copy->string.len = v->string.len;
                break;
        case TOML_ARRAY:
        case TOML_TABLE:
                /* Containers start empty, so that freeing a half-made copy frees only the copy. */
                copy->type = v->type;
                if (dup_children(copy, v) < 0)
                        return NULL;
                break;
        default:
                /* Scalars hold no pointers. */
                *copy = *v;
                break;
        }
        copy->line = v->line;
        copy->column = v->column;
        copy->flags = v->flags;
        return TAKE_PTR(copy);
}

static bool key_equal(const TomlEntry *e, const char *key, size_t key_len)
{
        return e->key_len == key_len && (key_len == 0 || memcmp(e->key, key, key_len) == 0);
}

int toml_table_set(TomlValue *table, const char *key, size_t key_len, TomlValue *v)
{
        _cleanup_free_ char *copy = NULL;
        int r;

        if (!table || table->type != TOML_TABLE || !v || (!key && key_len > 0))
                return -EINVAL;

        for (size_t i = 0; i < table->table.n; i++) {
                TomlEntry *e = &table->table.entries[i];

                if (key_equal(e, key, key_len)) {
                        if (e->value != v)
                                toml_value_free(e->value);
                        e->value = v;
                        return 0;
                }
        }

        copy = memdup_nul(key, key_len);
        if (!copy)
                return -ENOMEM;
        r = table_append(table, copy, key_len, v);
        if (r < 0)
                return r;
        TAKE_PTR(copy);
        return 0;
}

int toml_array_append(TomlValue *array, TomlValue *v)
{
        if (!array || array->type != TOML_ARRAY || !v)
                return -EINVAL;
        return array_push(array, v);
}

TomlValue *toml_table_get_n(const TomlValue *table, const char *key, size_t key_len)
{
        if (!table || table->type != TOML_TABLE || (!key && key_len > 0))
                return NULL;
        for (size_t i = 0; i < table->table.n; i++)
                if (key_equal(&table->table.entries[i], key, key_len))
                        return table->table.entries[i].value;
        return NULL;
}

TomlValue *toml_table_get(const TomlValue *table, const char *key)
{
        if (!key)
                return NULL;
        return toml_table_get_n(table, key, strlen(key));
}

TomlValue *toml_array_get(const TomlValue *array, size_t i)
{
        if (!array || array->type != TOML_ARRAY || i >= array->array.n)
                return NULL;
        return array->array.items[i];
}

size_t toml_table_size(const TomlValue *table)
{
        return table && table->type == TOML_TABLE ? table->table.n : 0;
}

size_t toml_array_size(const TomlValue *array)
{
        return array && array->type == TOML_ARRAY ? array->array.n : 0;
}

/* ---- Date/time formatting ---- */

char *toml_datetime_format(const TomlValue *v, char *buf)
{
        const TomlDatetime *d;
        size_t n = 0;

        buf[0] = 0;
        if (!v || v->type < TOML_DATETIME || v->type > TOML_TIME_LOCAL)
                return buf;
        d = &v->datetime;

        /* snprintf() bounds every step: the fields may come from callers, not only the parser. */
        if (v->type != TOML_TIME_LOCAL)
                n += snprintf(buf, TOML_DATETIME_MAX, "%04d-%02d-%02d", d->year, d->month, d->day);
        if ((v->type == TOML_DATETIME || v->type == TOML_DATETIME_LOCAL) && n < TOML_DATETIME_MAX)
                n += snprintf(buf + n, TOML_DATETIME_MAX - n, "T");
        if (v->type != TOML_DATE_LOCAL && n < TOML_DATETIME_MAX) {
                n += snprintf(buf + n, TOML_DATETIME_MAX - n, "%02d:%02d:%02d", d->hour, d->minute,
                              d->second);
                if (d->fraction[0] != 0 && n < TOML_DATETIME_MAX)
                        n += snprintf(buf + n, TOML_DATETIME_MAX - n, ".%.9s", d->fraction);
        }
        if (v->type == TOML_DATETIME && n < TOML_DATETIME_MAX) {
                long m = d->offset_minutes;

                /* +00:00 stays as written; only an offset written as Z prints as Z. */
                if (d->offset_z)
                        snprintf(buf + n, TOML_DATETIME_MAX - n, "Z");
                else
                        snprintf(buf + n, TOML_DATETIME_MAX - n, "%c%02ld:%02ld", m < 0 ? '-' : '+',
                                 labs(m) / 60, labs(m) % 60);
        }
        return buf;
}

void toml_write_string(FILE *f, const char *s)
{
        fputc('"', f);
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;

                if (c == '"' || c == '\\')
                        fprintf(f, "\\%c", c);
                else if (c < 0x20 || c == 0x7f)
                        fprintf(f, "\\u%04x", c);
                else
                        fputc(c, f);
        }
        fputc('"', f);
}
