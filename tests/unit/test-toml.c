/* SPDX-License-Identifier: MIT */

/* The value tree API of toml.h and the parser's error reporting. The grammar itself is covered by
 * the document corpus under tests/toml/. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <sys/stat.h>

#include "macro.h"
#include "toml.h"

static TomlValue *parse_ok(const char *text)
{
        TomlValue *root = NULL;
        TomlError error = {};

        if (toml_parse(text, strlen(text), &root, &error) < 0)
                fail_msg("unexpected parse error: line %u, column %u: %s", error.line, error.column,
                         error.message);
        assert_non_null(root);
        assert_int_equal(root->type, TOML_TABLE);
        return root;
}

/* Parses text that must be rejected (len SIZE_MAX: up to the NUL), and checks where. */
static void assert_parse_error(const char *text, size_t len, unsigned line, unsigned column,
                               const char *message_part)
{
        TomlValue *root = NULL;
        TomlError error;

        if (len == SIZE_MAX)
                len = strlen(text);
        memset(&error, 0x55, sizeof(error));
        assert_int_equal(toml_parse(text, len, &root, &error), -EINVAL);
        assert_null(root);
        if (error.line != line || error.column != column || !strstr(error.message, message_part))
                fail_msg("expected line %u, column %u: …%s…; got line %u, column %u: %s", line,
                         column, message_part, error.line, error.column, error.message);
}

static void test_lookup(void **state)
{
        _cleanup_toml_ TomlValue *root = parse_ok("name = \"keyd\"\n"
                                                  "count = 3\n"
                                                  "[server]\n"
                                                  "ports = [80, 443]\n"
                                                  "tls.enabled = true\n");
        TomlValue *v, *server, *ports;

        v = toml_table_get(root, "name");
        assert_non_null(v);
        assert_int_equal(v->type, TOML_STRING);
        assert_string_equal(v->string.data, "keyd");
        assert_int_equal(v->string.len, 4);

        v = toml_table_get(root, "count");
        assert_non_null(v);
        assert_int_equal(v->type, TOML_INTEGER);
        assert_int_equal(v->integer, 3);

        server = toml_table_get(root, "server");
        assert_non_null(server);
        assert_int_equal(toml_table_size(server), 2);
        ports = toml_table_get(server, "ports");
        assert_int_equal(toml_array_size(ports), 2);
        assert_int_equal(toml_array_get(ports, 1)->integer, 443);
        assert_null(toml_array_get(ports, 2));
        v = toml_table_get(toml_table_get(server, "tls"), "enabled");
        assert_non_null(v);
        assert_true(v->boolean);

        /* Absent keys, wrong container types and NULL all give NULL (or 0). */
        assert_null(toml_table_get(root, "missing"));
        assert_null(toml_table_get(root, "nam"));
        assert_null(toml_table_get(root, "name2"));
        assert_null(toml_table_get(ports, "0"));
        assert_null(toml_array_get(server, 0));
        assert_null(toml_table_get(NULL, "name"));
        assert_null(toml_table_get(root, NULL));
        assert_int_equal(toml_table_size(ports), 0);
        assert_int_equal(toml_array_size(server), 0);
        assert_int_equal(toml_table_size(NULL), 0);

        /* Keys are visited in document order. */
        const char *order[] = {"name", "count", "server"};
        size_t i = 0;
        toml_table_foreach (e, root) {
                assert_true(i < ELEMENTSOF(order));
                assert_string_equal(e->key, order[i++]);
        }
        assert_int_equal(i, 3);
}

static void test_lookup_key_with_nul(void **state)
{
        _cleanup_toml_ TomlValue *root = parse_ok("\"a\\u0000b\" = \"x\\u0000y\"\n");
        TomlValue *v;

        /* A key holding U+0000 can only be found with its length. */
        assert_null(toml_table_get(root, "a"));
        v = toml_table_get_n(root, "a\0b", 3);
        assert_non_null(v);
        assert_int_equal(v->string.len, 3);
        assert_memory_equal(v->string.data, "x\0y", 4);
        assert_null(toml_table_get_n(root, "a\0c", 3));
}

static void test_value_positions(void **state)
{
        _cleanup_toml_ TomlValue *root = parse_ok("# comment\n"
                                                  "a = 1\n"
                                                  "  b =   \"é\"\n"
                                                  "[t]\n"
                                                  "c = [ 1,\n"
                                                  "      { d = 2 } ]\n"
                                                  "\"ü\" = 'é'\n"
                                                  "[[arr]]\n");
        TomlValue *t, *c, *v;

        v = toml_table_get(root, "a");
        assert_int_equal(v->line, 2);
        assert_int_equal(v->column, 5);
        v = toml_table_get(root, "b");
        assert_int_equal(v->line, 3);
        assert_int_equal(v->column, 9);

        t = toml_table_get(root, "t");
        assert_int_equal(t->line, 4);
        assert_int_equal(t->column, 1);
        c = toml_table_get(t, "c");
        assert_int_equal(c->line, 5);
        assert_int_equal(c->column, 5);
        v = toml_array_get(c, 1);
        assert_int_equal(v->line, 6);
        assert_int_equal(v->column, 7);
        v = toml_table_get(v, "d");
        assert_int_equal(v->line, 6);
        assert_int_equal(v->column, 13);
        /* Columns count characters, not bytes: "ü" is one. */
        v = toml_table_get(t, "ü");
        assert_int_equal(v->line, 7);
        assert_int_equal(v->column, 7);

        v = toml_array_get(toml_table_get(t, "arr"), 0);
        assert_null(v);
        v = toml_array_get(toml_table_get(root, "arr"), 0);
        assert_non_null(v);
        assert_int_equal(v->line, 8);
        assert_int_equal(v->column, 1);
}

static void test_error_positions(void **state)
{
        const char nul[] = "a = \"x\0\"\n";

        assert_parse_error("a = 1\nb = 2\na = 3\n", SIZE_MAX, 3, 1, "duplicate key \"a\"");
        assert_parse_error("s = \"ok \\q\"\n", SIZE_MAX, 1, 9, "invalid escape sequence \\q");
        assert_parse_error("[t]\nkey value\n", SIZE_MAX, 2, 5, "expected '=' after key");
        /* Columns are counted in characters: "éé" before the error are two columns. */
        assert_parse_error("\"éé\" = 1 2\n", SIZE_MAX, 1, 10, "expected a newline");
        assert_parse_error("a = {b = 1}\n[a]\n", SIZE_MAX, 2, 2, "inline table");
        assert_parse_error("[a]\n[a]\n", SIZE_MAX, 2, 2, "already defined");
        assert_parse_error("a = 2023-02-29\n", SIZE_MAX, 1, 13, "no day 29");
        assert_parse_error("a = 9223372036854775808\n", SIZE_MAX, 1, 5, "64 bits");
        /* Forbidden bytes are reported where they are, even inside strings. */
        assert_parse_error(nul, sizeof(nul) - 1, 1, 7, "NUL");
        assert_parse_error("a = 'ok'\nb = '\xc3'\n", SIZE_MAX, 2, 6, "UTF-8");
}

static void test_error_without_error_struct(void **state)
{
        TomlValue *root = NULL;

        /* ret_error is optional. */
        assert_int_equal(toml_parse("a = ", 4, &root, NULL), -EINVAL);
        assert_null(root);
        assert_int_equal(toml_parse(NULL, 0, &root, NULL), 0);
        assert_non_null(root);
        assert_int_equal(toml_table_size(root), 0);
        toml_value_free(root);
}

static void test_length_is_respected(void **state)
{
        _cleanup_toml_ TomlValue *root = NULL;
        const char text[] = "a = 1\nb = 2 this is beyond the length";
        TomlError error;

        /* Only the first len bytes are the document; nothing past them is read. */
        assert_int_equal(toml_parse(text, 11, &root, &error), 0);
        assert_int_equal(toml_table_size(root), 2);
        assert_int_equal(toml_table_get(root, "b")->integer, 2);
}

static void test_dup_is_independent(void **state)
{
        _cleanup_toml_ TomlValue *root = parse_ok("s = \"text\"\n"
                                                  "n = 1\n"
                                                  "d = 1979-05-27T07:32:00.5-07:00\n"
                                                  "[t]\n"
                                                  "list = [1, [2, {x = 3}]]\n");
        _cleanup_toml_ TomlValue *copy = toml_value_dup(root);
        TomlValue *s, *list, *inner;
        char a[TOML_DATETIME_MAX], b[TOML_DATETIME_MAX];

        assert_non_null(copy);
        assert_ptr_not_equal(copy, root);
        assert_int_equal(toml_table_size(copy), 4);

        s = toml_table_get(copy, "s");
        assert_ptr_not_equal(s, toml_table_get(root, "s"));
        assert_ptr_not_equal(s->string.data, toml_table_get(root, "s")->string.data);
        assert_string_equal(s->string.data, "text");
        assert_int_equal(s->line, 1);
        assert_int_equal(s->column, 5);
        assert_string_equal(toml_datetime_format(toml_table_get(copy, "d"), a),
                            toml_datetime_format(toml_table_get(root, "d"), b));

        /* Changing the copy leaves the original alone, at every depth. */
        s->string.data[0] = 'T';
        toml_table_get(copy, "n")->integer = 42;
        list = toml_table_get(toml_table_get(copy, "t"), "list");
        inner = toml_array_get(toml_array_get(list, 1), 1);
        assert_int_equal(toml_table_set(inner, "x", 1, toml_value_new_string("changed", 7)), 0);
        assert_int_equal(toml_array_append(list, toml_value_new(TOML_BOOL)), 0);

        assert_string_equal(toml_table_get(root, "s")->string.data, "text");
        assert_int_equal(toml_table_get(root, "n")->integer, 1);
        list = toml_table_get(toml_table_get(root, "t"), "list");
        assert_int_equal(toml_array_size(list), 2);
        inner = toml_array_get(toml_array_get(list, 1), 1);
        assert_int_equal(toml_table_get(inner, "x")->type, TOML_INTEGER);
        assert_int_equal(toml_table_get(inner, "x")->integer, 3);

        assert_null(toml_value_dup(NULL));
}

static void test_table_set(void **state)
{
        _cleanup_toml_ TomlValue *table = toml_value_new(TOML_TABLE);
        _cleanup_toml_ TomlValue *array = toml_value_new(TOML_ARRAY);
        TomlValue *v, *orphan;

        assert_non_null(table);
        assert_int_equal(toml_table_set(table, "a", 1, toml_value_new_string("one", 3)), 0);
        assert_int_equal(toml_table_set(table, "b", 1, toml_value_new(TOML_INTEGER)), 0);
        assert_int_equal(toml_table_size(table), 2);

        /* Setting an existing key replaces the value in place: same size, same order. */
        v = toml_value_new(TOML_FLOAT);
        v->floating = 2.5;
        assert_int_equal(toml_table_set(table, "a", 1, v), 0);
        assert_int_equal(toml_table_size(table), 2);
        assert_ptr_equal(toml_table_get(table, "a"), v);
        assert_string_equal(table->table.entries[0].key, "a");
        assert_string_equal(table->table.entries[1].key, "b");

        /* Setting the value that is already there must not free it. */
        assert_int_equal(toml_table_set(table, "a", 1, v), 0);
        assert_true(toml_table_get(table, "a")->floating == 2.5);

        /* Key lengths count, not NUL terminators. */
        assert_int_equal(toml_table_set(table, "ab", 1, toml_value_new(TOML_BOOL)), 0);
        assert_int_equal(toml_table_get(table, "a")->type, TOML_BOOL);
        assert_int_equal(toml_table_set(table, "", 0, toml_value_new(TOML_STRING)), 0);
        assert_int_equal(toml_table_size(table), 3);
        v = toml_table_get(table, "");
        assert_non_null(v);
        assert_string_equal(v->string.data, "");

        /* On failure the value stays with the caller. */
        orphan = toml_value_new(TOML_INTEGER);
        assert_int_equal(toml_table_set(array, "x", 1, orphan), -EINVAL);
        assert_int_equal(toml_table_set(table, "x", 1, NULL), -EINVAL);
        assert_int_equal(toml_array_append(table, orphan), -EINVAL);
        assert_int_equal(toml_array_append(array, NULL), -EINVAL);
        toml_value_free(orphan);
}

static void test_array_append(void **state)
{
        _cleanup_toml_ TomlValue *array = toml_value_new(TOML_ARRAY);

        for (int i = 0; i < 1000; i++) {
                TomlValue *v = toml_value_new(TOML_INTEGER);

                assert_non_null(v);
                v->integer = i;
                assert_int_equal(toml_array_append(array, v), 0);
        }
        assert_int_equal(toml_array_size(array), 1000);
        for (size_t i = 0; i < 1000; i++)
                assert_int_equal(toml_array_get(array, i)->integer, (int64_t)i);

        int64_t expected = 0;
        toml_array_foreach (item, array)
                assert_int_equal((*item)->integer, expected++);
        assert_int_equal(expected, 1000);
}

static void test_constructors(void **state)
{
        _cleanup_toml_ TomlValue *s = toml_value_new_string("a\0b", 3);
        _cleanup_toml_ TomlValue *empty = toml_value_new_string(NULL, 0);
        _cleanup_toml_ TomlValue *blank = toml_value_new(TOML_STRING);

        assert_int_equal(s->type, TOML_STRING);
        assert_int_equal(s->string.len, 3);
        assert_memory_equal(s->string.data, "a\0b", 4);
        assert_string_equal(empty->string.data, "");
        assert_non_null(blank->string.data);
        assert_string_equal(blank->string.data, "");
        assert_null(toml_value_new(_TOML_TYPE_MAX));
        assert_null(toml_value_new_string(NULL, 1));
        assert_null(toml_value_free(NULL));
}

static void test_type_names(void **state)
{
        static const char *const names[_TOML_TYPE_MAX] = {
                "string",         "integer",    "float",      "bool",  "datetime",
                "datetime-local", "date-local", "time-local", "array", "table",
        };

        for (TomlType t = 0; t < _TOML_TYPE_MAX; t++)
                assert_string_equal(toml_type_to_string(t), names[t]);
        assert_null(toml_type_to_string(_TOML_TYPE_MAX));
}

static void test_datetime_format(void **state)
{
        _cleanup_toml_ TomlValue *root = parse_ok("a = 1979-05-27T07:32:00Z\n"
                                                  "b = 1979-05-27 00:32:00.999999-07:00\n"
                                                  "c = 1979-05-27t07:32:00\n"
                                                  "d = 1979-05-27\n"
                                                  "e = 07:32:00.5\n"
                                                  "f = 1979-05-27T07:32:00.500+05:30\n"
                                                  "g = 1979-05-27T07:32:00z\n"
                                                  "h = 2000-01-01T00:00:00+00:00\n"
                                                  "i = 00:00:00.1234567891\n");
        static const struct {
                const char *key, *text;
                TomlType type;
        } cases[] = {
                {"a", "1979-05-27T07:32:00Z", TOML_DATETIME},
                {"b", "1979-05-27T00:32:00.999999-07:00", TOML_DATETIME},
                {"c", "1979-05-27T07:32:00", TOML_DATETIME_LOCAL},
                {"d", "1979-05-27", TOML_DATE_LOCAL},
                {"e", "07:32:00.5", TOML_TIME_LOCAL},
                {"f", "1979-05-27T07:32:00.500+05:30", TOML_DATETIME},
                {"g", "1979-05-27T07:32:00Z", TOML_DATETIME},
                {"h", "2000-01-01T00:00:00+00:00", TOML_DATETIME},
                {"i", "00:00:00.123456789", TOML_TIME_LOCAL},
        };
        char buf[TOML_DATETIME_MAX];
        TomlValue *v;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                v = toml_table_get(root, cases[i].key);
                assert_non_null(v);
                assert_int_equal(v->type, cases[i].type);
                assert_ptr_equal(toml_datetime_format(v, buf), buf);
                assert_string_equal(buf, cases[i].text);
        }

        v = toml_table_get(root, "b");
        assert_int_equal(v->datetime.year, 1979);
        assert_int_equal(v->datetime.hour, 0);
        assert_string_equal(v->datetime.fraction, "999999");
        assert_true(v->datetime.has_offset);
        assert_false(v->datetime.offset_z);
        assert_int_equal(v->datetime.offset_minutes, -7 * 60);
        assert_true(toml_table_get(root, "g")->datetime.offset_z);

        /* Values built by hand are formatted too, and out-of-range fields cannot overflow. */
        _cleanup_toml_ TomlValue *odd = toml_value_new(TOML_DATETIME);
        odd->datetime = (TomlDatetime){.year = -2147483647 - 1,
                                       .month = 99999999,
                                       .day = -5,
                                       .hour = 2147483647,
                                       .fraction = "123456789",
                                       .has_offset = true,
                                       .offset_minutes = -2147483647 - 1};
        toml_datetime_format(odd, buf);
        assert_true(strlen(buf) < TOML_DATETIME_MAX);

        /* Not a date/time: empty string. */
        assert_string_equal(toml_datetime_format(toml_table_get(root, "nope"), buf), "");
}

static void test_floats_and_integers(void **state)
{
        _cleanup_toml_ TomlValue *root = parse_ok("min = -9223372036854775808\n"
                                                  "max = 0x7fffffffffffffff\n"
                                                  "nan = -nan\n"
                                                  "inf = -inf\n"
                                                  "zero = -0.0\n"
                                                  "exp = 1_0.5e-1_0\n");

        assert_true(toml_table_get(root, "min")->integer == INT64_MIN);
        assert_true(toml_table_get(root, "max")->integer == INT64_MAX);
        assert_true(isnan(toml_table_get(root, "nan")->floating));
        assert_true(isinf(toml_table_get(root, "inf")->floating));
        assert_true(toml_table_get(root, "inf")->floating < 0);
        assert_true(signbit(toml_table_get(root, "zero")->floating));
        assert_true(toml_table_get(root, "exp")->floating == 10.5e-10);
}

static void test_parse_file(void **state)
{
        char dir[] = "/tmp/test-toml-XXXXXX", path[64];
        _cleanup_toml_ TomlValue *root = NULL;
        TomlError error;
        FILE *f;

        assert_non_null(mkdtemp(dir));

        snprintf(path, sizeof(path), "%s/missing.toml", dir);
        memset(&error, 0x55, sizeof(error));
        assert_int_equal(toml_parse_file(path, &root, &error), -ENOENT);
        assert_null(root);
        assert_int_equal(error.line, 0);
        assert_int_equal(error.column, 0);
        assert_non_null(strstr(error.message, "missing.toml"));

        assert_int_equal(toml_parse_file(dir, &root, &error), -EISDIR);
        assert_int_equal(error.line, 0);
        assert_int_equal(toml_parse_file("/dev/null", &root, &error), -EBADFD);
        assert_int_equal(error.line, 0);

        snprintf(path, sizeof(path), "%s/config.toml", dir);
        f = fopen(path, "we");
        assert_non_null(f);
        fputs("[aziot_keys]\nhomedir_path = \"/var/lib/aziot/keyd\"\n", f);
        fclose(f);
        assert_int_equal(toml_parse_file(path, &root, &error), 0);
        assert_string_equal(
                toml_table_get(toml_table_get(root, "aziot_keys"), "homedir_path")->string.data,
                "/var/lib/aziot/keyd");
        root = toml_value_free(root);

        f = fopen(path, "we");
        assert_non_null(f);
        fputs("a = 1\n[b\n", f);
        fclose(f);
        assert_int_equal(toml_parse_file(path, &root, &error), -EINVAL);
        assert_int_equal(error.line, 2);
        assert_int_equal(error.column, 3);

        assert_int_equal(unlink(path), 0);
        assert_int_equal(rmdir(dir), 0);
}

static void test_depth_limit(void **state)
{
        _cleanup_free_ char *text = malloc(16 + 2 * (TOML_MAX_DEPTH + 1));
        _cleanup_toml_ TomlValue *root = NULL;
        TomlError error;
        size_t n;

        /* TOML_MAX_DEPTH nested arrays are fine ... */
        n = (size_t)sprintf(text, "a = ");
        for (int i = 0; i < TOML_MAX_DEPTH; i++)
                text[n++] = '[';
        for (int i = 0; i < TOML_MAX_DEPTH; i++)
                text[n++] = ']';
        assert_int_equal(toml_parse(text, n, &root, &error), 0);
        root = toml_value_free(root);

        /* ... one more is not. */
        n = (size_t)sprintf(text, "a = [");
        for (int i = 0; i < TOML_MAX_DEPTH; i++)
                text[n++] = '[';
        for (int i = 0; i <= TOML_MAX_DEPTH; i++)
                text[n++] = ']';
        assert_int_equal(toml_parse(text, n, &root, &error), -EINVAL);
        assert_null(root);
        assert_int_equal(error.line, 1);
        assert_int_equal(error.column, 5 + TOML_MAX_DEPTH);
        assert_non_null(strstr(error.message, "nested"));
}

static void test_deep_document_rejected_without_stack_overflow(void **state)
{
        size_t n = 4 * 1024 * 1024;
        _cleanup_free_ char *text = malloc(n);
        TomlValue *root = NULL;
        TomlError error;

        /* Far beyond any stack: must fail cleanly and quickly, for brackets and braces alike. */
        memcpy(text, "a = ", 4);
        memset(text + 4, '[', n - 4);
        assert_int_equal(toml_parse(text, n, &root, &error), -EINVAL);
        for (size_t i = 4; i + 6 <= n; i += 6)
                memcpy(text + i, "{ b = ", 6);
        assert_int_equal(toml_parse(text, n, &root, &error), -EINVAL);
        assert_non_null(strstr(error.message, "nested"));
        assert_null(root);
}

static void test_many_keys_linear(void **state)
{
        size_t keys = 200000, n = 0;
        _cleanup_free_ char *text = malloc(keys * 32);
        _cleanup_toml_ TomlValue *root = NULL;
        TomlError error;

        /* With a linear duplicate check per key this would take minutes, not milliseconds. */
        for (size_t i = 0; i < keys; i++)
                n += (size_t)sprintf(text + n, "key%zu = %zu\n", i, i);
        assert_int_equal(toml_parse(text, n, &root, &error), 0);
        assert_int_equal(toml_table_size(root), keys);
        assert_int_equal(toml_table_get(root, "key199999")->integer, 199999);

        n += (size_t)sprintf(text + n, "key123456 = 0\n");
        root = toml_value_free(root);
        assert_int_equal(toml_parse(text, n, &root, &error), -EINVAL);
        assert_int_equal(error.line, keys + 1);
        assert_non_null(strstr(error.message, "duplicate key \"key123456\""));
}

/* What toml_write_string() writes parses back to the same bytes. */
static void test_write_string_round_trip(void **state)
{
        static const char *const samples[] = {
                "plain", "", "quote \" and back\\slash", "tab\tnew\nline\r", "\x01\x1f\x7f",
                "caf\xc3\xa9 \xe2\x82\xac", "[section] = \"x\"",
        };

        for (size_t i = 0; i < ELEMENTSOF(samples); i++) {
                _cleanup_toml_ TomlValue *root = NULL;
                char *text = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&text, &len);
                TomlError err = {};
                const TomlValue *v;

                fputs("k = ", f);
                toml_write_string(f, samples[i]);
                fputc('\n', f);
                fclose(f);
                assert_int_equal(toml_parse(text, len, &root, &err), 0);
                v = toml_table_get(root, "k");
                assert_non_null(v);
                assert_int_equal(v->string.len, strlen(samples[i]));
                assert_memory_equal(v->string.data, samples[i], v->string.len);
                free(text);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_lookup),
                cmocka_unit_test(test_lookup_key_with_nul),
                cmocka_unit_test(test_value_positions),
                cmocka_unit_test(test_error_positions),
                cmocka_unit_test(test_error_without_error_struct),
                cmocka_unit_test(test_length_is_respected),
                cmocka_unit_test(test_dup_is_independent),
                cmocka_unit_test(test_table_set),
                cmocka_unit_test(test_array_append),
                cmocka_unit_test(test_constructors),
                cmocka_unit_test(test_type_names),
                cmocka_unit_test(test_datetime_format),
                cmocka_unit_test(test_floats_and_integers),
                cmocka_unit_test(test_parse_file),
                cmocka_unit_test(test_depth_limit),
                cmocka_unit_test(test_deep_document_rejected_without_stack_overflow),
                cmocka_unit_test(test_many_keys_linear),
                cmocka_unit_test(test_write_string_round_trip),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
