/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "macro.h"
#include "peercred.h"

static void test_socketpair_self(void **state)
{
        int sv[2];
        PeerCred c;
        uint64_t st;

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(peercred_from_fd(sv[0], &c), 0);
        assert_int_equal(c.pid, getpid());
        assert_int_equal(c.uid, getuid());
        assert_int_equal(c.gid, getgid());
        assert_int_equal(process_start_time(getpid(), &st), 0);
        assert_int_equal(c.start_time, st);
        assert_true(st > 0);
        close(sv[0]);
        close(sv[1]);
}

static void test_peer_is_other_process(void **state)
{
        /* The peer of a listening socket's accepted connection is the connecting child. */
        int sv[2], sync_pipe[2];
        PeerCred c;
        pid_t pid;
        char x;

        assert_int_equal(pipe(sync_pipe), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                /* A fresh socket pair created by the child, one end sent back to the parent. */
                int inner[2];
                struct msghdr mh = {};
                char cbuf[CMSG_SPACE(sizeof(int))] = {};
                struct iovec iov = { .iov_base = (char *)"x", .iov_len = 1 };
                struct cmsghdr *cm;

                if (socketpair(AF_UNIX, SOCK_STREAM, 0, inner) < 0)
                        _exit(1);
                mh.msg_iov = &iov;
                mh.msg_iovlen = 1;
                mh.msg_control = cbuf;
                mh.msg_controllen = sizeof(cbuf);
                cm = CMSG_FIRSTHDR(&mh);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cm), &inner[0], sizeof(int));
                if (sendmsg(sv[1], &mh, 0) < 0)
                        _exit(1);
                (void)!read(sync_pipe[0], &x, 1);
                _exit(0);
        }
        {
                struct msghdr mh = {};
                char cbuf[CMSG_SPACE(sizeof(int))] = {};
                char b;
                struct iovec iov = { .iov_base = &b, .iov_len = 1 };
                int fd;

                mh.msg_iov = &iov;
                mh.msg_iovlen = 1;
                mh.msg_control = cbuf;
                mh.msg_controllen = sizeof(cbuf);
                assert_int_equal(recvmsg(sv[0], &mh, 0), 1);
                memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(int));
                assert_int_equal(peercred_from_fd(fd, &c), 0);
                assert_int_equal(c.pid, pid);
                close(fd);
        }
        assert_int_equal(write(sync_pipe[1], "x", 1), 1);
        assert_int_equal(waitpid(pid, NULL, 0), pid);
        close(sv[0]);
        close(sv[1]);
        close(sync_pipe[0]);
        close(sync_pipe[1]);
}

static void test_not_a_socket(void **state)
{
        int p[2];
        PeerCred c;

        assert_int_equal(pipe(p), 0);
        assert_int_equal(peercred_from_fd(p[0], &c), -ENOTSOCK);
        close(p[0]);
        close(p[1]);
        assert_int_equal(peercred_from_fd(9999, &c), -EBADF);
}

static void test_start_time_of_gone_process(void **state)
{
        uint64_t st;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0)
                _exit(0);
        assert_int_equal(waitpid(pid, NULL, 0), pid);
        assert_int_equal(process_start_time(pid, &st), -ESRCH);
        assert_int_equal(process_start_time(0, &st), -ESRCH);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_socketpair_self),
                cmocka_unit_test(test_peer_is_other_process),
                cmocka_unit_test(test_not_a_socket),
                cmocka_unit_test(test_start_time_of_gone_process),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
