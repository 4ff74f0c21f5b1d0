/* SPDX-License-Identifier: MIT */
/*
 * http-load: a closed-loop HTTP/1.1 load generator over a Unix socket.
 *
 * N keep-alive connections each send one request, wait for the whole response, and send the next, for
 * a fixed time after a warm-up. Prints requests per second and latency percentiles (per request, from
 * the first byte written to the last byte read) as one JSON object:
 *
 *   http-load --socket /run/aziot/keyd.sock --connections 16 --seconds 10 \
 *             --method POST --path '/sign?api-version=2021-05-01' --body-file req.json
 *
 * Any response other than the expected status counts as an error; the run fails if there is one.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RESPONSE_MAX 65536

typedef struct Conn {
        int fd;
        size_t sent;
        char buf[RESPONSE_MAX];
        size_t got;
        uint64_t started_ns;
} Conn;

typedef struct Run {
        const char *socket_path;
        char *request;
        size_t request_len;
        unsigned expect_status;
        uint64_t *latencies;
        size_t n_latencies, allocated;
        uint64_t errors;
        bool recording;
} Run;

static uint64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int connect_unix(const char *path)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

/* Returns the total length of a complete response in buf, 0 if more is needed, -1 if malformed. */
static long response_complete(const char *buf, size_t len, unsigned *ret_status)
{
        const char *end = memmem(buf, len, "\r\n\r\n", 4);
        const char *p, *eol;
        long body = 0;

        if (!end)
                return len >= RESPONSE_MAX ? -1 : 0;
        if (end - buf < 12 || strncmp(buf, "HTTP/1.1 ", 9) != 0)
                return -1;
        *ret_status = (unsigned)atoi(buf + 9);
        /* Header lines lie between the status line and end; the buffer is not NUL-terminated. */
        for (p = memmem(buf, (size_t)(end - buf), "\r\n", 2); p && p < end; p = eol) {
                p += 2;
                eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
                if (!eol)
                        break;
                if (eol - p > 15 && strncasecmp(p, "content-length:", 15) == 0)
                        body = strtol(p + 15, NULL, 10);
        }
        if (end + 4 - buf + body > (long)len)
                return 0;
        return end + 4 - buf + body;
}

static void record(Run *run, uint64_t ns)
{
        if (!run->recording)
                return;
        if (run->n_latencies == run->allocated) {
                size_t n = run->allocated ? run->allocated * 2 : 65536;
                uint64_t *l = realloc(run->latencies, n * sizeof(uint64_t));

                if (!l) {
                        fprintf(stderr, "out of memory\n");
                        exit(EXIT_FAILURE);
                }
                run->latencies = l;
                run->allocated = n;
        }
        run->latencies[run->n_latencies++] = ns;
}

static int send_request(Run *run, Conn *c)
{
        while (c->sent < run->request_len) {
                ssize_t n = write(c->fd, run->request + c->sent, run->request_len - c->sent);
                if (n < 0)
                        return errno == EAGAIN ? 0 : -errno;
                c->sent += (size_t)n;
        }
        return 0;
}

static int start_request(Run *run, Conn *c)
{
        c->sent = 0;
        c->got = 0;
        c->started_ns = now_ns();
        return send_request(run, c);
}

/* Reads what is there; on a complete response records it and starts the next request. */
static int on_readable(Run *run, Conn *c)
{
        for (;;) {
                unsigned status = 0;
                long total;
                ssize_t n = read(c->fd, c->buf + c->got, sizeof(c->buf) - c->got);

                if (n < 0)
                        return errno == EAGAIN ? 0 : -errno;
                if (n == 0)
                        return -ECONNRESET;
                c->got += (size_t)n;
                total = response_complete(c->buf, c->got, &status);
                if (total < 0)
                        return -EBADMSG;
                if (total == 0)
                        continue;
                if ((size_t)total != c->got)
                        return -EBADMSG; /* one request in flight: nothing may follow */
                if (status != run->expect_status) {
                        if (run->recording)
                                run->errors++;
                } else
                        record(run, now_ns() - c->started_ns);
                return start_request(run, c);
        }
}

static int compare_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

static double percentile_us(const Run *run, double p)
{
        size_t i;

        if (run->n_latencies == 0)
                return 0;
        i = (size_t)(p * (double)(run->n_latencies - 1) + 0.5);
        return (double)run->latencies[i] / 1000.0;
}

static char *read_body_file(const char *path, size_t *ret_len)
{
        FILE *f = fopen(path, "re");
        char *b;
        long n;

        if (!f)
                return NULL;
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        rewind(f);
        b = malloc((size_t)n + 1);
        if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
                free(b);
                b = NULL;
        }
        fclose(f);
        if (b) {
                b[n] = 0;
                *ret_len = (size_t)n;
        }
        return b;
}

static int build_request(Run *run, const char *method, const char *path, const char *body_file)
{
        char *body = NULL;
        size_t body_len = 0;
        int n;

        if (body_file) {
                body = read_body_file(body_file, &body_len);
                if (!body)
                        return -errno;
                while (body_len > 0 && (body[body_len - 1] == '\n' || body[body_len - 1] == '\r'))
                        body[--body_len] = 0;
                n = asprintf(&run->request,
                             "%s %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\n\r\n%s",
                             method, path, body_len, body);
        } else
                n = asprintf(&run->request, "%s %s HTTP/1.1\r\nHost: bench\r\n\r\n", method, path);
        free(body);
        if (n < 0)
                return -ENOMEM;
        run->request_len = (size_t)n;
        return 0;
}

static int run_load(Run *run, unsigned n_conns, double warmup, double seconds, double *ret_elapsed)
{
        Conn *conns = calloc(n_conns, sizeof(Conn));
        struct epoll_event evs[64];
        uint64_t t0, start = 0, deadline;
        int ep = epoll_create1(EPOLL_CLOEXEC);

        if (!conns || ep < 0)
                return -ENOMEM;
        for (unsigned i = 0; i < n_conns; i++) {
                struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = &conns[i] };

                conns[i].fd = connect_unix(run->socket_path);
                if (conns[i].fd < 0) {
                        fprintf(stderr, "connect %s: %s\n", run->socket_path, strerror(-conns[i].fd));
                        return conns[i].fd;
                }
                if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0)
                        return -errno;
        }

        t0 = now_ns();
        deadline = t0 + (uint64_t)((warmup + seconds) * 1e9);
        for (unsigned i = 0; i < n_conns; i++)
                if (start_request(run, &conns[i]) < 0)
                        return -EIO;

        while (now_ns() < deadline) {
                int n = epoll_wait(ep, evs, 64, 100);

                if (!run->recording && now_ns() >= t0 + (uint64_t)(warmup * 1e9)) {
                        run->recording = true;
                        start = now_ns();
                }
                for (int i = 0; i < n; i++) {
                        Conn *c = evs[i].data.ptr;
                        int r = 0;

                        if (evs[i].events & EPOLLOUT)
                                r = send_request(run, c);
                        if (r >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                                r = on_readable(run, c);
                        if (r < 0) {
                                fprintf(stderr, "connection failed: %s\n", strerror(-r));
                                return r;
                        }
                }
        }
        *ret_elapsed = (double)(now_ns() - start) / 1e9;
        for (unsigned i = 0; i < n_conns; i++)
                close(conns[i].fd);
        free(conns);
        close(ep);
        return 0;
}

int main(int argc, char *argv[])
{
        static const struct option options[] = {
                { "socket", required_argument, NULL, 's' },
                { "connections", required_argument, NULL, 'c' },
                { "seconds", required_argument, NULL, 't' },
                { "warmup", required_argument, NULL, 'w' },
                { "method", required_argument, NULL, 'm' },
                { "path", required_argument, NULL, 'p' },
                { "body-file", required_argument, NULL, 'b' },
                { "expect-status", required_argument, NULL, 'e' },
                {},
        };
        Run run = { .expect_status = 200 };
        const char *method = "GET", *path = NULL, *body_file = NULL;
        unsigned n_conns = 1;
        double seconds = 5, warmup = 1, elapsed = 0;
        int c, r;

        while ((c = getopt_long(argc, argv, "s:c:t:w:m:p:b:e:", options, NULL)) >= 0)
                switch (c) {
                case 's': run.socket_path = optarg; break;
                case 'c': n_conns = (unsigned)atoi(optarg); break;
                case 't': seconds = atof(optarg); break;
                case 'w': warmup = atof(optarg); break;
                case 'm': method = optarg; break;
                case 'p': path = optarg; break;
                case 'b': body_file = optarg; break;
                case 'e': run.expect_status = (unsigned)atoi(optarg); break;
                default: return EXIT_FAILURE;
                }
        if (!run.socket_path || !path || n_conns < 1 || n_conns > 1024 || seconds <= 0 ||
            seconds > 600 || warmup < 0 || warmup > 60) {
                fprintf(stderr, "usage: http-load --socket PATH --path PATH [--method M] "
                                "[--body-file F] [--connections 1..1024] [--seconds S] [--warmup S]\n");
                return EXIT_FAILURE;
        }
        r = build_request(&run, method, path, body_file);
        if (r < 0) {
                fprintf(stderr, "cannot build the request: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }

        r = run_load(&run, n_conns, warmup, seconds, &elapsed);
        if (r < 0)
                return EXIT_FAILURE;

        qsort(run.latencies, run.n_latencies, sizeof(uint64_t), compare_u64);
        printf("{\"connections\": %u, \"seconds\": %.2f, \"requests\": %zu, \"errors\": %" PRIu64
               ", \"requests_per_second\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
               "\"max_us\": %.1f}\n",
               n_conns, elapsed, run.n_latencies, run.errors,
               elapsed > 0 ? (double)run.n_latencies / elapsed : 0, percentile_us(&run, 0.50),
               percentile_us(&run, 0.99), percentile_us(&run, 1.0));
        free(run.latencies);
        free(run.request);
        return run.errors == 0 && run.n_latencies > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
