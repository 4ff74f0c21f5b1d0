/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/stat.h>

#include "atomic-file.h"
#include "config.h"
#include "macro.h"

static char tmpdir[] = "/tmp/test-config-XXXXXX";

static void put(const char *rel, const char *text)
{
        char path[512];

        snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
        assert_int_equal(write_file_atomic(path, text, strlen(text), 0644), 0);
}

static char *path_of(const char *rel)
{
        char *p;
        assert_true(asprintf(&p, "%s/%s", tmpdir, rel) > 0);
        return p;
}

static int setup(void **state)
{
        char cmd[600];

        snprintf(cmd, sizeof(cmd), "rm -rf %s/* %s/.[!.]*", tmpdir, tmpdir);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(mkdir_parents(tmpdir, 0755), 0);
        return 0;
}

static void test_missing_everything_is_empty(void **state)
{
        _cleanup_toml_ TomlValue *root = NULL;
        _cleanup_free_ char *m = path_of("nope.toml"), *d = path_of("nope.d");
        ConfigError err = {};

        assert_int_equal(config_load_files(m, d, &root, &err), 0);
        assert_int_equal(root->type, TOML_TABLE);
        assert_int_equal(toml_table_size(root), 0);
}

static void test_merge_rules(void **state)
{
        _cleanup_toml_ TomlValue *root = NULL;
        _cleanup_free_ char *m = path_of("config.toml"), *d = path_of("config.d"),
                            *sub = path_of("config.d/dir.toml");
        const TomlValue *t, *arr;
        const char *s;
        int64_t i;
        ConfigError err = {};

        put("config.toml", "max_requests = 10\n"
                           "[aziot_keys]\nhomedir_path = \"/var/lib/aziot/keyd\"\nkeep = \"yes\"\n"
                           "[[principal]]\nuid = 1\nkeys = [\"a\"]\n"
                           "list = [1, 2]\nswitch = [1]\n");
        assert_int_equal(mkdir(d, 0755), 0);
        /* Applied in sorted order: 10 before 20, and "b.toml" is not a config file name. */
        put("config.d/20-late.toml", "max_requests = 30\n[aziot_keys]\nhomedir_path = \"/late\"\n");
        put("config.d/10-early.toml", "max_requests = 20\nlist = [3]\nswitch = { now = \"a table\" }\n"
                                      "[[principal]]\nuid = 2\nkeys = [\"b\"]\n");
        put("config.d/b.toml.bak", "max_requests = 99\n");
        put("config.d/.hidden.toml", "max_requests = 98\n");
        assert_int_equal(mkdir(sub, 0755), 0);

        assert_int_equal(config_load_files(m, d, &root, &err), 0);

        assert_int_equal(config_get_integer(root, "max_requests", &i, &err), 0);
        assert_int_equal(i, 30);

        assert_int_equal(config_get_table(root, "aziot_keys", &t, &err), 0);
        assert_int_equal(config_get_string(t, "homedir_path", &s, &err), 0);
        assert_string_equal(s, "/late");
        assert_int_equal(config_get_string(t, "keep", &s, &err), 0); /* tables merge key by key */
        assert_string_equal(s, "yes");

        assert_int_equal(config_get_array(root, "principal", &arr, &err), 0);
        assert_int_equal(toml_array_size(arr), 2); /* arrays concatenate */
        assert_int_equal(toml_table_get(toml_array_get(arr, 1), "uid")->integer, 2);

        /* "list" and "switch" ended up inside [[principal]] of the main file (TOML scoping). */
        t = toml_array_get(arr, 0);
        assert_int_equal(toml_array_size(toml_table_get(t, "list")), 2);

        assert_int_equal(config_get_array(root, "list", &arr, &err), 0);
        assert_int_equal(toml_array_size(arr), 1);
        assert_int_equal(config_get_table(root, "switch", &t, &err), 0);
}

static void test_type_mismatch_replaces(void **state)
{
        _cleanup_toml_ TomlValue *a = NULL, *b = NULL;
        const char *x = "k = [1, 2]\n[t]\nv = 1\n", *y = "k = 5\nt = \"flat\"\n";
        int64_t i;

        assert_int_equal(toml_parse(x, strlen(x), &a, NULL), 0);
        assert_int_equal(toml_parse(y, strlen(y), &b, NULL), 0);
        assert_int_equal(config_merge(a, b), 0);
        assert_int_equal(config_get_integer(a, "k", &i, NULL), 0);
        assert_int_equal(i, 5);
        assert_int_equal(toml_table_get(a, "t")->type, TOML_STRING);
        /* src untouched */
        assert_int_equal(toml_table_get(b, "k")->integer, 5);
}

static void test_parse_error_names_file_line_column(void **state)
{
        _cleanup_toml_ TomlValue *root = NULL;
        _cleanup_free_ char *m = path_of("config.toml"), *d = path_of("config.d");
        ConfigError err = {};
        char buf[1024];

        put("config.toml", "a = 1\n");
        assert_int_equal(mkdir(d, 0755), 0);
        put("config.d/50-bad.toml", "ok = true\nbad = \"unterminated\n");
        assert_int_equal(config_load_files(m, d, &root, &err), -EINVAL);
        assert_null(root);
        assert_non_null(err.path);
        assert_true(endswith(err.path, "config.d/50-bad.toml"));
        assert_int_equal(err.line, 2);
        assert_true(err.column > 0);
        config_error_format(&err, buf, sizeof(buf));
        assert_non_null(strstr(buf, "config.d/50-bad.toml:2:"));
        config_error_done(&err);

        /* A broken main file is reported the same way. */
        put("config.toml", "[a]\n[a]\n");
        assert_int_equal(config_load_files(m, NULL, &root, &err), -EINVAL);
        assert_true(endswith(err.path, "config.toml"));
        assert_int_equal(err.line, 2);
        config_error_done(&err);
}

static void test_unreadable_and_directory(void **state)
{
        _cleanup_toml_ TomlValue *root = NULL;
        _cleanup_free_ char *m = path_of("config.toml");
        ConfigError err = {};

        assert_int_equal(mkdir(m, 0755), 0);
        assert_int_equal(config_load_files(m, NULL, &root, &err), -EISDIR);
        assert_non_null(strstr(err.message, "cannot read"));
        config_error_done(&err);
}

static void test_type_error_position(void **state)
{
        _cleanup_toml_ TomlValue *root = NULL;
        _cleanup_free_ char *m = path_of("config.toml");
        ConfigError err = {};
        int64_t i;
        const char *s;
        char buf[1024];

        put("config.toml", "\n\nmax_requests = \"ten\"\nname = \"a\\u0000b\"\n");
        assert_int_equal(config_load_files(m, NULL, &root, &err), 0);
        assert_int_equal(config_get_integer(root, "max_requests", &i, &err), -EMEDIUMTYPE);
        assert_int_equal(err.line, 3);
        assert_int_equal(err.column, 16);
        config_error_format(&err, buf, sizeof(buf));
        assert_non_null(strstr(buf, "config.toml:3:16: \"max_requests\" must be an integer, not a string"));
        assert_int_equal(config_get_string(root, "name", &s, &err), -EMEDIUMTYPE);
        assert_int_equal(config_get_string(root, "absent", &s, &err), -ENOENT);
        config_error_done(&err);
}

static void test_max_requests(void **state)
{
        static const struct {
                const char *text;
                int r;
                uint32_t value;
        } cases[] = {
                { "", 0, 10 },
                { "max_requests = 0\n", 0, 0 },
                { "max_requests = 64\n", 0, 64 },
                { "max_requests = 4294967295\n", 0, UINT32_MAX },
                { "max_requests = -1\n", -EINVAL, 0 },
                { "max_requests = 4294967296\n", -EINVAL, 0 },
                { "max_requests = \"ten\"\n", -EMEDIUMTYPE, 0 },
                { "max_requests = 1.5\n", -EMEDIUMTYPE, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_toml_ TomlValue *root = NULL;
                ConfigError err = {};
                uint32_t v = 12345;

                assert_int_equal(toml_parse(cases[i].text, strlen(cases[i].text), &root, NULL), 0);
                assert_int_equal(config_get_max_requests(root, &v, &err), cases[i].r);
                if (cases[i].r == 0)
                        assert_int_equal(v, cases[i].value);
                else
                        assert_non_null(strstr(err.message, "\"max_requests\" must be"));
                config_error_done(&err);
        }
}

static void test_env_paths(void **state)
{
        _cleanup_free_ char *m = NULL, *d = NULL, *m2 = NULL, *d2 = NULL;

        unsetenv("AZIOT_KEYD_CONFIG");
        unsetenv("AZIOT_KEYD_CONFIG_DIR");
        assert_int_equal(config_paths("keyd", &m, &d), 0);
        assert_string_equal(m, "/etc/aziot/keyd/config.toml");
        assert_string_equal(d, "/etc/aziot/keyd/config.d");

        setenv("AZIOT_KEYD_CONFIG", "/x/keyd.toml", 1);
        setenv("AZIOT_KEYD_CONFIG_DIR", "/x/keyd.d", 1);
        assert_int_equal(config_paths("keyd", &m2, &d2), 0);
        assert_string_equal(m2, "/x/keyd.toml");
        assert_string_equal(d2, "/x/keyd.d");
        unsetenv("AZIOT_KEYD_CONFIG");
        unsetenv("AZIOT_KEYD_CONFIG_DIR");
}

static void test_env_load(void **state)
{
        _cleanup_toml_ TomlValue *root = NULL;
        _cleanup_free_ char *m = path_of("svc.toml"), *d = path_of("svc.d");
        ConfigError err = {};
        int64_t i;

        put("svc.toml", "max_requests = 3\n");
        assert_int_equal(mkdir(d, 0755), 0);
        put("svc.d/x.toml", "max_requests = 4\n");
        setenv("AZIOT_CERTD_CONFIG", m, 1);
        setenv("AZIOT_CERTD_CONFIG_DIR", d, 1);
        assert_int_equal(config_load("certd", &root, &err), 0);
        assert_int_equal(config_get_integer(root, "max_requests", &i, &err), 0);
        assert_int_equal(i, 4);
        unsetenv("AZIOT_CERTD_CONFIG");
        unsetenv("AZIOT_CERTD_CONFIG_DIR");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup(test_missing_everything_is_empty, setup),
                cmocka_unit_test_setup(test_merge_rules, setup),
                cmocka_unit_test_setup(test_type_mismatch_replaces, setup),
                cmocka_unit_test_setup(test_parse_error_names_file_line_column, setup),
                cmocka_unit_test_setup(test_unreadable_and_directory, setup),
                cmocka_unit_test_setup(test_type_error_position, setup),
                cmocka_unit_test_setup(test_max_requests, setup),
                cmocka_unit_test_setup(test_env_paths, setup),
                cmocka_unit_test_setup(test_env_load, setup),
        };
        int r;

        assert_non_null(mkdtemp(tmpdir));
        r = cmocka_run_group_tests(tests, NULL, NULL);
        {
                char cmd[600];
                snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
                (void)!system(cmd);
        }
        return r;
}
