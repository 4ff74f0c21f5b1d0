/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "macro.h"
#include "routes.h"
#include "text.h"

static void check_split(const char *target, const char *path, const char *query)
{
        const char *p, *q;
        size_t pn, qn;

        route_split_target(target, &p, &pn, &q, &qn);
        print_message("%s\n", target);
        assert_int_equal(pn, strlen(path));
        assert_memory_equal(p, path, pn);
        assert_int_equal(qn, strlen(query));
        assert_memory_equal(q, query, qn);
}

static void test_split_target(void **state)
{
        check_split("/key/a?api-version=2021-05-01", "/key/a", "api-version=2021-05-01");
        check_split("/sign", "/sign", "");
        check_split("/sign?", "/sign", "");
        check_split("/a?b?c", "/a", "b?c");
        check_split("/a#frag?x", "/a", "");
        check_split("/a?x=1#frag", "/a", "x=1");
        check_split("http://keyd.sock/key/a?api-version=1", "/key/a", "api-version=1");
        check_split("http://keyd.sock", "", "");
        check_split("*", "*", "");
}

static char *decode(const char *s, bool plus)
{
        Buffer b = {};

        percent_decode(&b, s, strlen(s), plus);
        return b.data;
}

static void test_percent_decode(void **state)
{
        char *s;

        s = decode("a%20b%2Fc%2fd", false);
        assert_string_equal(s, "a b/c/d");
        free(s);
        s = decode("%zz%4%", false);
        assert_string_equal(s, "%zz%4%");
        free(s);
        s = decode("a+b%2B", false);
        assert_string_equal(s, "a+b+");
        free(s);
        s = decode("a+b%2B", true);
        assert_string_equal(s, "a b+");
        free(s);
        s = decode("", false);
        assert_string_equal(s, "");
        free(s);
}

static void test_query_parse(void **state)
{
        QueryParam *q;
        size_t n;
        const char *query = "a=1&&b&api-version=x+y&=v&api-version=%32%30%FF";

        assert_int_equal(query_parse(query, strlen(query), &q, &n), 0);
        assert_int_equal(n, 5);
        assert_string_equal(q[0].name, "a");
        assert_string_equal(q[0].value, "1");
        assert_string_equal(q[1].name, "b");
        assert_string_equal(q[1].value, "");
        assert_string_equal(q[2].value, "x y");
        assert_string_equal(q[3].name, "");
        assert_string_equal(q[3].value, "v");
        assert_string_equal(q[4].name, "api-version");
        /* Invalid UTF-8 becomes U+FFFD, as url's form_urlencoded does. */
        assert_string_equal(q[4].value, "20\xef\xbf\xbd");
        query_free(q, n);

        assert_int_equal(query_parse("", 0, &q, &n), 0);
        assert_int_equal(n, 0);
        query_free(q, n);
}

static size_t lens[ROUTE_PARAMS_MAX];

static int match(const char *pattern, const char *path, char **params)
{
        memset(params, 0, ROUTE_PARAMS_MAX * sizeof(char *));
        return route_match_path(pattern, path, strlen(path), params, lens, ROUTE_PARAMS_MAX);
}

static void free_params(char **params)
{
        for (size_t i = 0; i < ROUTE_PARAMS_MAX; i++)
                free(params[i]);
}

static void test_match_path(void **state)
{
        char *p[ROUTE_PARAMS_MAX];

        assert_int_equal(match("/key", "/key", p), 1);
        assert_int_equal(match("/key", "/key/", p), 0);
        assert_int_equal(match("/key", "/keys", p), 0);
        assert_int_equal(match("/key", "/ke", p), 0);
        assert_int_equal(match("/key", "/KEY", p), 0);
        assert_int_equal(match("/key/*", "/key", p), 0);
        assert_int_equal(match("/key/*", "/key/", p), 0);
        assert_int_equal(match("/key/*", "/key/a/b", p), 0);
        assert_int_equal(match("/key/*", "/key//", p), 0);

        assert_int_equal(match("/key/*", "/key/device-id", p), 1);
        assert_string_equal(p[0], "device-id");
        free_params(p);

        /* Matched on the raw path, decoded afterwards: %2F is part of the segment. */
        assert_int_equal(match("/keypair/*", "/keypair/a%2Fb%20c", p), 1);
        assert_string_equal(p[0], "a/b c");
        free_params(p);
        assert_int_equal(match("/keypair/*", "/keypair/..%2F..%2Fetc", p), 1);
        assert_string_equal(p[0], "../../etc");
        free_params(p);
        /* A literal segment does not match its encoded form. */
        assert_int_equal(match("/keypair/*", "/%6Beypair/a", p), 0);

        /* Not UTF-8 once decoded: no match. */
        assert_int_equal(match("/key/*", "/key/%FF", p), 0);
        assert_int_equal(match("/key/*", "/key/%C3%A9", p), 1);
        assert_string_equal(p[0], "\xc3\xa9");
        free_params(p);

        /* U+0000 is UTF-8: it matches, and the length tells it is there. */
        assert_int_equal(match("/key/*", "/key/a%00b", p), 1);
        assert_int_equal(lens[0], 3);
        assert_memory_equal(p[0], "a\0b", 3);
        free_params(p);

        assert_int_equal(match("/a/*/b/*", "/a/x/b/y", p), 1);
        assert_string_equal(p[0], "x");
        assert_string_equal(p[1], "y");
        free_params(p);
}

static void test_content_type(void **state)
{
        assert_true(route_content_type_is_json(NULL));
        assert_true(route_content_type_is_json("application/json"));
        assert_true(route_content_type_is_json("application/json; charset=utf-8"));
        assert_true(route_content_type_is_json(" application/json ;x"));
        assert_false(route_content_type_is_json("Application/JSON"));
        assert_false(route_content_type_is_json("text/plain"));
        assert_false(route_content_type_is_json("application/json2"));
        assert_false(route_content_type_is_json(""));
        /* Not visible ASCII: upstream sees no Content-Type at all. */
        assert_true(route_content_type_is_json("text/\xc3\xa9"));
}

static void check_api_version_message(const char *version, const char *expected)
{
        Buffer b = {};

        route_invalid_api_version_message(&b, version);
        assert_string_equal(b.data, expected);
        buffer_done(&b);
}

static void test_api_version_message(void **state)
{
        check_api_version_message("2099-01-01", "invalid api-version \"2099-01-01\"");
        check_api_version_message("", "invalid api-version \"\"");
        check_api_version_message(
                "a\"b\\c\nd\te\x01\x7f\xc3\xa9",
                "invalid api-version \"a\\\"b\\\\c\\nd\\te\\u{1}\\u{7f}\xc3\xa9\"");
        check_api_version_message("\xef\xbf\xbd", "invalid api-version \"\xef\xbf\xbd\"");
}

static void test_utf8(void **state)
{
        Buffer b = {};

        assert_true(utf8_is_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
        assert_false(utf8_is_valid("\xc0\x80", 2));         /* overlong */
        assert_false(utf8_is_valid("\xed\xa0\x80", 3));     /* surrogate */
        assert_false(utf8_is_valid("\xf4\x90\x80\x80", 4)); /* beyond U+10FFFF */
        assert_false(utf8_is_valid("\xe2\x82", 2));         /* truncated */

        /* One U+FFFD per maximal ill-formed subpart. */
        utf8_append_lossy(&b, "a\xe2\x82z\xff\xc0\x80", 7);
        assert_string_equal(b.data, "a\xef\xbf\xbdz\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
        buffer_done(&b);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_split_target),     cmocka_unit_test(test_percent_decode),
                cmocka_unit_test(test_query_parse),      cmocka_unit_test(test_match_path),
                cmocka_unit_test(test_content_type),     cmocka_unit_test(test_api_version_message),
                cmocka_unit_test(test_utf8),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
