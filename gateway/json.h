/* SPDX-License-Identifier: MIT */
#pragma once

/* JSON for the gateway: a strict RFC 8259 pull reader and a small writer.
 *
 * The reader is shaped like the decoder upstream's services use (serde_json), because clients see
 * its error texts in 422 responses: request bodies are decoded field by field as the text is read,
 * the first error in document order wins, and errors carry serde_json's wording and position
 * ("missing field `keyId` at line 1 column 2", "expected value at line 1 column 1", …): line is
 * 1-based, column counts the bytes of that line up to the error. Nesting is limited to 127 levels,
 * strings must be valid UTF-8 without lone surrogates, unknown members are skipped (but still
 * checked). Nothing is built for skipped values, so memory stays bounded by the body size. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "text.h"

#define JSON_MESSAGE_MAX 512

typedef struct JsonError {
        unsigned line, column; /* line 0: the error has no position yet */
        char message[JSON_MESSAGE_MAX];
} JsonError;

/* serde_json's Display: "<message> at line <L> column <C>" (the message alone without position). */
void json_error_append(Buffer *b, const JsonError *e);

typedef struct JsonReader {
        const char *text;
        size_t len, index;
        unsigned line;
        size_t line_start;
        unsigned remaining_depth;
        bool fixed; /* flattened content: every error is reported at fixed_line/fixed_column */
        unsigned fixed_line, fixed_column;
        JsonError *error;
} JsonReader;

void json_reader_init(JsonReader *r, const char *text, size_t len, JsonError *error);
/* For re-reading a value already checked by json_skip_value(), whose errors belong at a fixed
 * position (serde reports errors in flattened content after the enclosing object). */
void json_reader_init_fixed(JsonReader *r, const char *text, size_t len, unsigned line,
                            unsigned column, JsonError *error);

/* After the top-level value: only whitespace may follow ("trailing characters"). */
int json_reader_end(JsonReader *r);

/* Reads and checks one value of any type, keeping nothing (serde's IgnoredAny). */
int json_skip_value(JsonReader *r);

/* The whole text is one JSON value (what a route without a body type accepts). */
int json_validate(const char *text, size_t len, JsonError *error);

/* Sets a custom error at the reader's current position (serde's fix_position). Returns -EINVAL. */
int json_reader_fail(JsonReader *r, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* Reads a string value. Anything else is "invalid type: <what it is>, expected <expecting>".
 * *ret is NUL-terminated (it may hold U+0000 too: check *ret_len) and owned by the caller. */
int json_read_string(JsonReader *r, const char *expecting, char **ret, size_t *ret_len);

/* For Option<T>: consumes a null and returns 1, or returns 0 when the next value is not null. */
int json_read_null(JsonReader *r);

/* --- Structs, as serde's derived Deserialize reads them --- */

typedef enum JsonFieldType {
        JSON_FIELD_STRING,  /* a JSON string */
        JSON_FIELD_BYTES,   /* a JSON string holding strict base64 ("a base64-encoded string") */
        JSON_FIELD_FLATTEN, /* member of a #[serde(flatten)] enum: only kept as raw JSON text */
        JSON_FIELD_STRUCT,  /* a nested struct: data holds len JsonFieldValues of its fields */
} JsonFieldType;

typedef struct JsonField {
        const char *name;
        JsonFieldType type;
        bool optional; /* Option<T>: may be absent or null */
        /* An extra check of a string member (a custom serde error), or NULL. Returns 0, or -EINVAL
         * with the message written. */
        int (*check)(const char *s, size_t len, char *message, size_t size);
        /* JSON_FIELD_STRUCT: the nested struct's fields and serde's name for it ("struct X"). */
        const struct JsonField *fields;
        size_t n_fields;
        const char *expecting;
} JsonField;

typedef struct JsonFieldValue {
        bool seen;      /* the member was there (perhaps as null) */
        bool present;   /* the member was there and not null */
        char *data;     /* STRING: the text (NUL-terminated), BYTES: the decoded bytes */
        size_t len;     /* FLATTEN: data points into the body (not owned), len bytes of JSON */
        unsigned order; /* FLATTEN: position of the first occurrence among flattened members */
        unsigned count; /* FLATTEN: occurrences */
} JsonFieldValue;

/* Reads an object into values[] (n fields, values[] zeroed by the caller): members in document
 * order, each known one type-checked as it comes, duplicates an error, unknown ones skipped; then
 * the missing required non-flattened fields, in declaration order. A value that is not an object is
 * "invalid type: …, expected <expecting>". On success *ret_end holds the position just after the
 * object, where errors about flattened members belong. */
int json_read_struct(JsonReader *r, const char *expecting, const JsonField *fields, size_t n,
                     JsonFieldValue *values, unsigned *ret_end_line, unsigned *ret_end_column);

/* Frees (and wipes) what json_read_struct stored. */
void json_field_values_done(const JsonField *fields, JsonFieldValue *values, size_t n);

/* Reads a whole request body as one struct: json_read_struct() then json_reader_end(). */
int json_decode_body(const char *text, size_t len, const char *expecting, const JsonField *fields,
                     size_t n, JsonFieldValue *values, JsonError *error, unsigned *ret_end_line,
                     unsigned *ret_end_column);

/* A variant of an enum tagged like #[serde(tag = "…", content = "…")] and flattened into the
 * enclosing struct. */
typedef struct JsonVariant {
        const char *name;      /* the tag value */
        const char *expecting; /* "struct variant Parameters::Ecdsa", "unit variant …" */
        const JsonField *fields; /* NULL for a unit variant (no content, or null) */
        size_t n_fields;
} JsonVariant;

/* Reads such an enum from the tag and content members json_read_struct() kept (both declared
 * JSON_FIELD_FLATTEN); errors are positioned at line/column, the end of the enclosing object.
 * Fills values[] (zeroed by the caller, variant->n_fields long) and returns the variant's index. */
int json_read_flattened_enum(const char *tag_name, const JsonFieldValue *tag,
                             const char *content_name, const JsonFieldValue *content,
                             const JsonVariant *variants, size_t n_variants, unsigned line,
                             unsigned column, JsonFieldValue *values, JsonError *error);

/* serde's list of allowed names in "unknown variant `x`, expected …": "`a` or `b`", "one of `a`,
 * `b`, `c`". */
void json_append_expected_names(Buffer *b, const char *const *names, size_t n);

/* --- Writer --- */

typedef struct JsonWriter {
        Buffer out;
        unsigned depth;
        bool need_comma[8];
} JsonWriter;

void json_begin_object(JsonWriter *w);
void json_end_object(JsonWriter *w);
/* Arrays hold objects (json_begin_object() per element). */
void json_begin_array(JsonWriter *w);
void json_end_array(JsonWriter *w);
void json_key(JsonWriter *w, const char *key);
void json_null(JsonWriter *w);
/* text must be a whole JSON value (a service's own serialization). */
void json_raw(JsonWriter *w, const char *text, size_t n);
/* s must be UTF-8; escaped the way serde_json does (\" \\ \b \f \n \r \t, other controls
 * \u00XX). */
void json_string(JsonWriter *w, const char *s, size_t n);
void json_base64(JsonWriter *w, const uint8_t *data, size_t n);
/* Appends an escaped string (without quotes) to b. */
void json_escape_append(Buffer *b, const char *s, size_t n);
/* The one shape of every error body: {"message":"…"}. */
void json_write_message(Buffer *b, const char *message, size_t n);
