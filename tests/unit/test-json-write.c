/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-write.h"
#include "macro.h"

/* What json_write_string_len(s, len) writes, or json_write_string(s) when len is SIZE_MAX. */
static char *written(const char *s, size_t len)
{
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        assert_non_null(f);
        if (len == SIZE_MAX)
                json_write_string(f, s);
        else
                json_write_string_len(f, s, len);
        assert_int_equal(fclose(f), 0);
        return buf;
}

static void test_plain_and_utf8(void **state)
{
        _cleanup_free_ char *a = written("device-id", SIZE_MAX);
        _cleanup_free_ char *b = written("caf\xc3\xa9", SIZE_MAX);

        assert_string_equal(a, "\"device-id\"");
        assert_string_equal(b, "\"caf\xc3\xa9\""); /* UTF-8 passes through */
}

static void test_null_is_null(void **state)
{
        _cleanup_free_ char *s = written(NULL, SIZE_MAX);

        assert_string_equal(s, "null");
}

static void test_escapes(void **state)
{
        _cleanup_free_ char *s = written("\"\\\b\f\n\r\t\x01\x1f\x7f/", SIZE_MAX);

        assert_string_equal(s, "\"\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f/\"");
}

static void test_nul_bytes_with_len(void **state)
{
        _cleanup_free_ char *s = written("a\0b", 3);

        assert_string_equal(s, "\"a\\u0000b\"");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_plain_and_utf8),
                cmocka_unit_test(test_null_is_null),
                cmocka_unit_test(test_escapes),
                cmocka_unit_test(test_nul_bytes_with_len),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
