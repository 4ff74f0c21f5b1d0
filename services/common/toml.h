/* SPDX-License-Identifier: MIT */
#pragma once

/* A strict TOML 1.0 parser and the value tree it produces.
 *
 * The tree is also what the config loader merges (config.h), so it offers a few mutators besides the
 * accessors. Tables keep their keys in insertion order. Strings carry an explicit length because TOML
 * allows U+0000 in basic strings; they are always NUL-terminated as well. Every value remembers the
 * line and column (1-based) where it was defined, so configuration errors can point at it. */

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

typedef enum TomlType {
        TOML_STRING,
        TOML_INTEGER,
        TOML_FLOAT,
        TOML_BOOL,
        TOML_DATETIME,       /* offset date-time */
        TOML_DATETIME_LOCAL, /* local date-time */
        TOML_DATE_LOCAL,     /* local date */
        TOML_TIME_LOCAL,     /* local time */
        TOML_ARRAY,
        TOML_TABLE,
        _TOML_TYPE_MAX,
} TomlType;

/* The deepest nesting of arrays and tables the parser accepts (the root table is depth 0, a value
 * stored in it depth 1). Deeper documents are rejected rather than parsed, so that the recursive
 * parser and the recursive toml_value_free()/toml_value_dup() have a bounded stack. */
#define TOML_MAX_DEPTH 128

typedef struct TomlDatetime {
        int year, month, day;     /* unset (0) for TOML_TIME_LOCAL */
        int hour, minute, second; /* unset (0) for TOML_DATE_LOCAL */
        char fraction[10];        /* fractional-second digits as written (at most 9), "" when none */
        bool has_offset;          /* TOML_DATETIME only */
        int offset_minutes;       /* east of UTC; "Z" is 0 */
        bool offset_z;            /* the offset was written as Z/z */
} TomlDatetime;

typedef struct TomlValue TomlValue;

typedef struct TomlEntry {
        char *key; /* NUL-terminated; key_len excludes the terminator */
        size_t key_len;
        TomlValue *value;
} TomlEntry;

struct TomlValue {
        TomlType type;
        unsigned line, column;
        unsigned flags; /* parser bookkeeping, see toml.c */
        const char *origin; /* not owned: the file the value came from (set by config.c), or NULL */
        union {
                struct {
                        char *data;
                        size_t len;
                } string;
                int64_t integer;
                double floating;
                bool boolean;
                TomlDatetime datetime;
                struct {
                        TomlValue **items;
                        size_t n, allocated;
                } array;
                struct {
                        TomlEntry *entries;
                        size_t n, allocated;
                } table;
        };
};

typedef struct TomlError {
        unsigned line, column; /* 1-based; 0 when the error is not about a position */
        char message[256];
} TomlError;

/* Parses a whole document. Returns 0 and a TOML_TABLE in *ret_root, or -EINVAL with *ret_error
 * filled (line, column, message) for invalid TOML, or -ENOMEM. ret_error may be NULL. */
int toml_parse(const char *text, size_t len, TomlValue **ret_root, TomlError *ret_error);

/* Reads and parses a file. -ENOENT etc. for I/O errors (ret_error->line == 0), -EINVAL for bad TOML. */
int toml_parse_file(const char *path, TomlValue **ret_root, TomlError *ret_error);

TomlValue *toml_value_free(TomlValue *v);
static inline void toml_value_freep(TomlValue **v)
{
        if (*v)
                toml_value_free(*v);
}
#define _cleanup_toml_ __attribute__((cleanup(toml_value_freep)))

const char *toml_type_to_string(TomlType t);
/* "a string", "an integer", "a table", … for messages. */
const char *toml_type_with_article(TomlType t);

/* Construction and mutation (used by the parser and by the config merge). */
TomlValue *toml_value_new(TomlType type);
TomlValue *toml_value_new_string(const char *s, size_t len);
TomlValue *toml_value_dup(const TomlValue *v);
/* Sets key in a table, taking ownership of v; an existing value under that key is freed first.
 * Ownership passes only on success: on failure (-ENOMEM; -EINVAL when table is not a TOML_TABLE or
 * v is NULL) v still belongs to the caller. */
int toml_table_set(TomlValue *table, const char *key, size_t key_len, TomlValue *v);
/* Appends to an array, taking ownership of v on success only (as toml_table_set()). */
int toml_array_append(TomlValue *array, TomlValue *v);

/* Lookup. NULL when absent or when the container is not of the right type. */
TomlValue *toml_table_get(const TomlValue *table, const char *key);
TomlValue *toml_table_get_n(const TomlValue *table, const char *key, size_t key_len);
TomlValue *toml_array_get(const TomlValue *array, size_t i);
size_t toml_table_size(const TomlValue *table);
size_t toml_array_size(const TomlValue *array);

#define toml_table_foreach(entry_, table_)                                                         \
        for (TomlEntry *entry_ = (table_)->table.entries;                                          \
             entry_ && entry_ < (table_)->table.entries + (table_)->table.n; entry_++)

#define toml_array_foreach(item_, array_)                                                          \
        for (TomlValue **item_ = (array_)->array.items;                                            \
             item_ && item_ < (array_)->array.items + (array_)->array.n; item_++)

/* Formats a date/time value in RFC 3339 form ("1979-05-27T07:32:00.5-07:00", "07:32:00", …) into buf.
 * Returns buf. buf must hold at least TOML_DATETIME_MAX bytes. */
#define TOML_DATETIME_MAX 64
char *toml_datetime_format(const TomlValue *v, char *buf);

/* Writes s as a TOML basic string (quoted; quote, backslash and control characters escaped). */
void toml_write_string(FILE *f, const char *s);
