/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "macro.h"
#include "principal.h"

static void test_glob_literal(void **state)
{
        assert_true(glob_match("device-id", "device-id"));
        assert_false(glob_match("device-id", "device-id2"));
        assert_false(glob_match("device-id", "device-i"));
        assert_false(glob_match("Device-id", "device-id")); /* case-sensitive */
        assert_true(glob_match("", ""));
        assert_false(glob_match("", "a"));
}

static void test_glob_star(void **state)
{
        assert_true(glob_match("*", ""));
        assert_true(glob_match("*", "anything/at all"));
        assert_true(glob_match("aziot_*", "aziot_identityd_master_id"));
        assert_false(glob_match("aziot_*", "xaziot_identityd"));
        assert_true(glob_match("*-temp", "device-id-temp"));
        assert_false(glob_match("*-temp", "device-id-temp2"));
        assert_true(glob_match("a*b*c", "aXXbYYc"));
        assert_true(glob_match("a*b*c", "abc"));
        assert_false(glob_match("a*b*c", "aXXbYY"));
        assert_true(glob_match("a**", "a"));
        assert_true(glob_match("*a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"));
        assert_false(glob_match("*a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}

static void test_glob_question(void **state)
{
        assert_true(glob_match("key?", "key1"));
        assert_false(glob_match("key?", "key"));
        assert_false(glob_match("key?", "key12"));
        assert_true(glob_match("k?y", "k\xc3\xa9y")); /* one character, two bytes */
        assert_true(glob_match("?*", "x"));
        assert_false(glob_match("?*", ""));
}

static int load(const char *text, PrincipalSet *set, ConfigError *err)
{
        _cleanup_toml_ TomlValue *root = NULL;
        TomlError terr = {};
        int r = toml_parse(text, strlen(text), &root, &terr);

        assert_int_equal(r, 0);
        return principal_set_from_config(root, "keys", set, err);
}

static void test_principals_merge_per_uid(void **state)
{
        _cleanup_(principal_set_done) PrincipalSet set = {};
        ConfigError err = {};

        assert_int_equal(load("[[principal]]\nuid = 1000\nkeys = [\"a\", \"b*\"]\n"
                              "[[principal]]\nuid = 1001\nkeys = [\"c\"]\n"
                              "[[principal]]\nuid = 1000\nkeys = [\"d?\"]\n",
                              &set, &err),
                         0);
        assert_int_equal(set.n, 2);
        assert_true(principal_allows(&set, 1000, "a"));
        assert_true(principal_allows(&set, 1000, "bee"));
        assert_true(principal_allows(&set, 1000, "d1"));
        assert_false(principal_allows(&set, 1000, "c"));
        assert_true(principal_allows(&set, 1001, "c"));
        assert_false(principal_allows(&set, 1001, "a"));
        assert_false(principal_allows(&set, 0, "a")); /* root is the caller's business */
        assert_false(principal_allows(&set, 1002, "a"));
}

static void test_principals_none(void **state)
{
        _cleanup_(principal_set_done) PrincipalSet set = {};
        ConfigError err = {};

        assert_int_equal(load("max_requests = 10\n", &set, &err), 0);
        assert_int_equal(set.n, 0);
        assert_false(principal_allows(&set, 1000, "a"));
}

static void expect_error(const char *text, unsigned line, const char *needle)
{
        _cleanup_(principal_set_done) PrincipalSet set = {};
        ConfigError err = {};

        assert_int_equal(load(text, &set, &err), -EINVAL);
        assert_int_equal(err.line, line);
        if (!strstr(err.message, needle))
                fail_msg("message \"%s\" lacks \"%s\"", err.message, needle);
        config_error_done(&err);
}

static void test_principals_malformed(void **state)
{
        expect_error("[[principal]]\nkeys = [\"a\"]\n", 1, "missing \"uid\"");
        expect_error("[[principal]]\nuid = \"1000\"\nkeys = [\"a\"]\n", 2, "uid");
        expect_error("[[principal]]\nuid = -1\nkeys = [\"a\"]\n", 2, "uid");
        expect_error("[[principal]]\nuid = 4294967295\nkeys = [\"a\"]\n", 2, "uid");
        expect_error("[[principal]]\nuid = 1000\n", 1, "missing \"keys\"");
        expect_error("[[principal]]\nuid = 1000\nkeys = \"a\"\n", 3, "must be an array");
        expect_error("[[principal]]\nuid = 1000\nkeys = [\"a\", 3]\n", 3, "list of strings");
        expect_error("principal = 5\n", 1, "must be an array");
        expect_error("principal = [1]\n", 1, "must be a table");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_glob_literal),
                cmocka_unit_test(test_glob_star),
                cmocka_unit_test(test_glob_question),
                cmocka_unit_test(test_principals_merge_per_uid),
                cmocka_unit_test(test_principals_none),
                cmocka_unit_test(test_principals_malformed),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
