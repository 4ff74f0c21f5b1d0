/* SPDX-License-Identifier: MIT */
/* The floor of a sequential request on this machine (docs/design.md, "Performance against DESIGN
 * §7"): a client sends 200 bytes over a Unix stream socket and waits for them to come back, in a
 * loop, for SECONDS.
 *
 *   pingpong 1 SECONDS   client -> echo server                    (two processes woken per request)
 *   pingpong 2 SECONDS   client -> relay -> echo server -> relay  (four, as client/gateway/keyd)
 *
 * The servers sleep in epoll_wait as the real daemons do. No HTTP, no D-Bus, no crypto: what is
 * left is the cost of waking processes. Run under `taskset -c 0` to see it without CPU crossings. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MESSAGE_SIZE 200

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int write_all(int fd, const char *p, size_t n)
{
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

/* Forwards what arrives on fds[i] to fds[peer[i]]; an echo server is the case fds[0] == its peer. */
static _Noreturn void forward_loop(int a, int b)
{
        struct epoll_event ev = { .events = EPOLLIN };
        char buf[4096];
        int ep;

        ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0)
                _exit(EXIT_FAILURE);
        ev.data.fd = a;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev) < 0)
                _exit(EXIT_FAILURE);
        if (b != a) {
                ev.data.fd = b;
                if (epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev) < 0)
                        _exit(EXIT_FAILURE);
        }

        for (;;) {
                struct epoll_event got;
                ssize_t n;
                int from, to;

                if (epoll_wait(ep, &got, 1, -1) < 1)
                        continue;
                from = got.data.fd;
                to = from == a ? b : a;
                n = read(from, buf, sizeof buf);
                if (n <= 0)
                        _exit(n == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
                if (write_all(to, buf, (size_t) n) < 0)
                        _exit(EXIT_FAILURE);
        }
}

static pid_t spawn_forwarder(int a, int b, int close1, int close2)
{
        pid_t pid = fork();

        if (pid == 0) {
                if (close1 >= 0)
                        close(close1);
                if (close2 >= 0)
                        close(close2);
                forward_loop(a, b);
        }
        return pid;
}

int main(int argc, char **argv)
{
        char msg[MESSAGE_SIZE];
        int client[2], inner[2] = { -1, -1 };
        double seconds, start, end, t;
        long hops, count = 0;

        if (argc != 3 || (hops = strtol(argv[1], NULL, 10)) < 1 || hops > 2 ||
            (seconds = strtod(argv[2], NULL)) <= 0) {
                fprintf(stderr, "usage: %s 1|2 SECONDS\n", argv[0]);
                return EXIT_FAILURE;
        }

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, client) < 0) {
                perror("socketpair");
                return EXIT_FAILURE;
        }
        if (hops == 1) {
                if (spawn_forwarder(client[1], client[1], client[0], -1) < 0)
                        return EXIT_FAILURE;
        } else {
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, inner) < 0) {
                        perror("socketpair");
                        return EXIT_FAILURE;
                }
                /* relay: client[1] <-> inner[0]; echo server on inner[1] */
                if (spawn_forwarder(client[1], inner[0], client[0], inner[1]) < 0 ||
                    spawn_forwarder(inner[1], inner[1], client[0], inner[0]) < 0)
                        return EXIT_FAILURE;
                close(inner[0]);
                close(inner[1]);
        }
        close(client[1]);

        memset(msg, 'x', sizeof msg);
        start = now();
        end = start + seconds;
        while ((t = now()) < end) {
                size_t got = 0;

                if (write_all(client[0], msg, sizeof msg) < 0)
                        return EXIT_FAILURE;
                while (got < sizeof msg) {
                        ssize_t n = read(client[0], msg + got, sizeof msg - got);
                        if (n <= 0)
                                return EXIT_FAILURE;
                        got += (size_t) n;
                }
                count++;
        }
        t = now() - start;
        printf("{\"hops\": %ld, \"round_trips_per_second\": %.0f, \"mean_us\": %.1f}\n", hops,
               (double) count / t, t / (double) count * 1e6);

        close(client[0]);
        while (wait(NULL) > 0)
                ;
        return EXIT_SUCCESS;
}
