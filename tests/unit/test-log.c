/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>

#include "atomic-file.h"
#include "log.h"

static void test_level_names(void **state)
{
        assert_int_equal(log_level_from_string("error"), LOG_ERR);
        assert_int_equal(log_level_from_string("warn"), LOG_WARNING);
        assert_int_equal(log_level_from_string("info"), LOG_INFO);
        assert_int_equal(log_level_from_string("DEBUG"), LOG_DEBUG);
        assert_int_equal(log_level_from_string("trace"), LOG_TRACE);
        assert_int_equal(log_level_from_string("loud"), -EINVAL);
        assert_int_equal(log_level_from_string(""), -EINVAL);
        /* env_logger form: the bare level counts, other targets are ignored */
        assert_int_equal(log_level_from_string("hyper=warn,debug"), LOG_DEBUG);
        assert_int_equal(log_level_from_string("other=trace"), -EINVAL);
        assert_string_equal(log_level_to_string(LOG_WARNING), "warn");
        assert_null(log_level_to_string(99));
}

/* Runs fn with stderr redirected to a file and returns what was written. */
static char *capture(void (*fn)(void))
{
        char path[] = "/tmp/test-log-XXXXXX";
        int fd = mkstemp(path), saved = dup(STDERR_FILENO);
        char *out;

        assert_true(fd >= 0);
        fflush(stderr);
        dup2(fd, STDERR_FILENO);
        fn();
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        close(fd);
        assert_int_equal(read_file_full(path, 65536, &out, NULL), 0);
        unlink(path);
        return out;
}

static int returned;

static void emit(void)
{
        log_set_max_level(LOG_INFO);
        returned = log_error_errno(-ENOENT, "Failed to load key %s: %m", "device-id");
        log_debug("this is below the level");
        log_warning("careful");
}

static void test_output_and_errno(void **state)
{
        _cleanup_free_ char *out = NULL;

        unsetenv("JOURNAL_STREAM");
        log_setup("test-log");
        errno = 42;
        out = capture(emit);
        assert_int_equal(returned, -ENOENT);
        assert_int_equal(errno, 42); /* logging leaves errno alone */
        assert_non_null(strstr(out, "[ERR!] test-log: Failed to load key device-id: No such file or directory\n"));
        assert_non_null(strstr(out, "[WARN] test-log: careful\n"));
        assert_null(strstr(out, "below the level"));
}

static void test_env_level(void **state)
{
        setenv("AZIOT_LOG", "trace", 1);
        log_setup("test-log");
        assert_int_equal(log_get_max_level(), LOG_TRACE);
        setenv("AZIOT_LOG", "error", 1);
        log_setup("test-log");
        assert_int_equal(log_get_max_level(), LOG_ERR);
        /* A bad value keeps the level and says so. */
        setenv("AZIOT_LOG", "shouting", 1);
        log_setup("test-log");
        assert_int_equal(log_get_max_level(), LOG_ERR);
        unsetenv("AZIOT_LOG");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_level_names),
                cmocka_unit_test(test_output_and_errno),
                cmocka_unit_test(test_env_level),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
