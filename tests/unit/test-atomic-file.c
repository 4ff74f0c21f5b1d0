/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "atomic-file.h"
#include "macro.h"

static char tmpdir[] = "/tmp/test-atomic-XXXXXX";

static char *path_of(const char *rel)
{
        char *p;
        assert_true(asprintf(&p, "%s/%s", tmpdir, rel) > 0);
        return p;
}

static size_t count_entries(void)
{
        _cleanup_closedir_ DIR *d = opendir(tmpdir);
        struct dirent *de;
        size_t n = 0;

        assert_non_null(d);
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        n++;
        return n;
}

static void test_write_and_read(void **state)
{
        _cleanup_free_ char *p = path_of("a.key"), *buf = NULL;
        const char data[] = "secret\0bytes";
        struct stat st;
        size_t len;

        umask(022);
        assert_int_equal(write_file_atomic(p, data, sizeof(data), 0600), 0);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_int_equal(read_file_full(p, 1024, &buf, &len), 0);
        assert_int_equal(len, sizeof(data));
        assert_memory_equal(buf, data, sizeof(data));
        assert_int_equal(buf[len], 0);
        free(TAKE_PTR(buf));

        /* Mode is the caller's even when the umask would forbid it, and a rewrite replaces. */
        umask(077);
        assert_int_equal(write_file_atomic(p, "x", 1, 0640), 0);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0640);
        assert_int_equal(read_file_full(p, 1024, &buf, &len), 0);
        assert_int_equal(len, 1);
        umask(022);

        /* No temporary file is left behind. */
        assert_int_equal(count_entries(), 1);
        assert_int_equal(unlink(p), 0);
}

static void test_empty_file(void **state)
{
        _cleanup_free_ char *p = path_of("empty"), *buf = NULL;
        size_t len = 99;

        assert_int_equal(write_file_atomic(p, "", 0, 0600), 0);
        assert_int_equal(read_file_full(p, 10, &buf, &len), 0);
        assert_int_equal(len, 0);
        assert_int_equal(unlink(p), 0);
}

static void test_read_limits(void **state)
{
        _cleanup_free_ char *p = path_of("big"), *buf = NULL;

        assert_int_equal(write_file_atomic(p, "0123456789", 10, 0600), 0);
        assert_int_equal(read_file_full(p, 9, &buf, NULL), -EFBIG);
        assert_int_equal(read_file_full(p, 10, &buf, NULL), 0);
        assert_int_equal(read_file_full(tmpdir, 10, &buf, NULL), -EISDIR);
        assert_int_equal(read_file_full("/nonexistent/x", 10, &buf, NULL), -ENOENT);
        assert_int_equal(unlink(p), 0);
}

static void test_bad_names(void **state)
{
        _cleanup_close_ int dfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        assert_true(dfd >= 0);
        assert_int_equal(write_file_atomic_at(dfd, "a/b", "x", 1, 0600), -EINVAL);
        assert_int_equal(write_file_atomic_at(dfd, "", "x", 1, 0600), -EINVAL);
        assert_int_equal(write_file_atomic("/nonexistent-dir/file", "x", 1, 0600), -ENOENT);
        assert_int_equal(count_entries(), 0);
}

static void test_crash_never_tears(void **state)
{
        /* A child rewrites the file with alternating full contents until it is killed; the file must
         * always hold one of the complete contents. */
        _cleanup_free_ char *p = path_of("torn");
        char a[4096], b[8192];
        pid_t pid;

        memset(a, 'a', sizeof(a));
        memset(b, 'b', sizeof(b));
        assert_int_equal(write_file_atomic(p, a, sizeof(a), 0600), 0);

        for (int round = 0; round < 5; round++) {
                _cleanup_free_ char *buf = NULL;
                size_t len;

                pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                        for (unsigned i = 0;; i++)
                                (void)write_file_atomic(p, i % 2 ? b : a, i % 2 ? sizeof(b) : sizeof(a),
                                                        0600);
                }
                usleep(20000 + round * 7000);
                assert_int_equal(kill(pid, SIGKILL), 0);
                assert_int_equal(waitpid(pid, NULL, 0), pid);

                assert_int_equal(read_file_full(p, sizeof(b), &buf, &len), 0);
                if (len == sizeof(a))
                        assert_memory_equal(buf, a, len);
                else if (len == sizeof(b))
                        assert_memory_equal(buf, b, len);
                else
                        fail_msg("torn file of %zu bytes", len);
        }
}

static void test_mkdir_parents(void **state)
{
        _cleanup_free_ char *p = path_of("x/y/z");
        struct stat st;

        assert_int_equal(mkdir_parents(p, 0700), 0);
        assert_int_equal(stat(p, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(mkdir_parents(p, 0700), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_write_and_read),
                cmocka_unit_test(test_empty_file),
                cmocka_unit_test(test_read_limits),
                cmocka_unit_test(test_bad_names),
                cmocka_unit_test(test_crash_never_tears),
                cmocka_unit_test(test_mkdir_parents),
        };
        char cmd[128];
        int r;

        assert_non_null(mkdtemp(tmpdir));
        r = cmocka_run_group_tests(tests, NULL, NULL);
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
        (void)!system(cmd);
        return r;
}
