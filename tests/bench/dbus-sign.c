/* SPDX-License-Identifier: MIT */
/*
 * dbus-sign: Sign (HMAC-SHA256) calls straight to org.aziot.Keys1 over the system bus
 * (DBUS_SYSTEM_BUS_ADDRESS), without the gateway.
 *
 *   dbus-sign --seconds 5 --in-flight 1     one call at a time: round-trip latency
 *   dbus-sign --seconds 5 --in-flight 16    16 calls outstanding: throughput
 *   --with-socket                           pass a socket with each call, as the gateway does
 *   --private                               call over a private connection (OpenPrivateConnection)
 *                                           rather than through dbus-daemon
 *
 * Prints one JSON object: calls per second and latency percentiles.
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <systemd/sd-bus.h>

#include "macro.h"

#define KEY_ID "bench-hmac"

typedef struct Bench {
        sd_bus *bus;
        const char *handle;
        int client_socket; /* passed as option "client-socket" with each call, as the gateway does */
        uint64_t deadline, record_from;
        uint64_t *lat;
        size_t n, allocated;
        uint64_t errors;
        unsigned outstanding;
} Bench;

static uint64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int send_one(Bench *b);

/* Counts the answer and keeps the pipeline full until the deadline. */
static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        Bench *b = userdata;
        uint64_t t = now_ns();

        b->outstanding--;
        if (sd_bus_message_is_method_error(reply, NULL)) {
                b->errors++;
                fprintf(stderr, "Sign failed: %s\n", sd_bus_message_get_error(reply)->message);
        }
        if (t < b->deadline)
                return send_one(b);
        return 0;
}

typedef struct Pending {
        Bench *b;
        uint64_t started;
} Pending;

static int on_reply_timed(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        Pending *p = userdata;
        Bench *b = p->b;
        uint64_t t = now_ns();

        if (p->started >= b->record_from && !sd_bus_message_is_method_error(reply, NULL)) {
                if (b->n == b->allocated) {
                        b->allocated = b->allocated ? b->allocated * 2 : 65536;
                        b->lat = realloc(b->lat, b->allocated * sizeof(uint64_t));
                        if (!b->lat)
                                exit(EXIT_FAILURE);
                }
                b->lat[b->n++] = t - p->started;
        }
        free(p);
        return on_reply(reply, b, ret_error);
}

static int send_one(Bench *b)
{
        static const uint8_t message[32] = "the message the benchmark signs";
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        Pending *p;
        int r;

        r = sd_bus_message_new_method_call(b->bus, &m, "org.aziot.Keys1", "/org/aziot/Keys1",
                                           "org.aziot.Keys1", "Sign");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", b->handle, "HMAC-SHA256");
        if (r >= 0)
                r = sd_bus_message_append_array(m, 'y', message, sizeof(message));
        if (r >= 0 && b->client_socket >= 0)
                r = sd_bus_message_append(m, "a{sv}", 1, "client-socket", "h", b->client_socket);
        else if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return r;
        p = malloc(sizeof(*p));
        if (!p)
                return -ENOMEM;
        *p = (Pending){ .b = b, .started = now_ns() };
        r = sd_bus_call_async(b->bus, NULL, m, on_reply_timed, p, 0);
        if (r < 0) {
                free(p);
                return r;
        }
        b->outstanding++;
        return 0;
}

/* Replaces *bus by a private connection to keyd, asked for over *bus. */
static int open_private(sd_bus **bus)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        sd_bus *p = NULL;
        int fd, r;

        r = sd_bus_call_method(*bus, "org.aziot.Keys1", "/org/aziot/Keys1", "org.aziot.Keys1",
                               "OpenPrivateConnection", &error, &reply, "a{sv}", 0);
        if (r < 0) {
                fprintf(stderr, "OpenPrivateConnection: %s\n", error.message ?: strerror(-r));
                return r;
        }
        r = sd_bus_message_read(reply, "h", &fd);
        if (r >= 0)
                r = fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (r >= 0)
                r = sd_bus_new(&p);
        if (r >= 0)
                r = sd_bus_set_fd(p, fd, fd);
        if (r >= 0)
                r = sd_bus_set_anonymous(p, 1);
        if (r >= 0)
                r = sd_bus_negotiate_fds(p, 1);
        if (r >= 0)
                r = sd_bus_start(p);
        if (r < 0) {
                fprintf(stderr, "private connection: %s\n", strerror(-r));
                return r;
        }
        /* Keep the system bus connection: keyd stays while the private one is open. */
        *bus = p;
        return 0;
}

static int cmp(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

int main(int argc, char *argv[])
{
        static const struct option options[] = {
                { "seconds", required_argument, NULL, 't' },
                { "warmup", required_argument, NULL, 'w' },
                { "in-flight", required_argument, NULL, 'k' },
                { "with-socket", no_argument, NULL, 's' },
                { "private", no_argument, NULL, 'p' },
                {},
        };
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        double seconds = 5, warmup = 1, elapsed;
        unsigned in_flight = 1;
        bool private_connection = false;
        Bench b = { .client_socket = -1 };
        int pair[2];
        uint64_t start;
        int c, r;

        while ((c = getopt_long(argc, argv, "t:w:k:", options, NULL)) >= 0)
                switch (c) {
                case 't': seconds = atof(optarg); break;
                case 'w': warmup = atof(optarg); break;
                case 'k': in_flight = (unsigned)atoi(optarg); break;
                case 's':
                        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
                                return EXIT_FAILURE;
                        b.client_socket = pair[0];
                        break;
                case 'p': private_connection = true; break;
                default: return EXIT_FAILURE;
                }
        if (seconds <= 0 || seconds > 600 || in_flight < 1 || in_flight > 1024) {
                fprintf(stderr, "usage: dbus-sign [--seconds S] [--warmup S] [--in-flight 1..1024] "
                                "[--with-socket]\n");
                return EXIT_FAILURE;
        }

        r = sd_bus_open_system(&b.bus);
        if (r < 0) {
                fprintf(stderr, "cannot connect to the system bus: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        r = sd_bus_call_method(b.bus, "org.aziot.Keys1", "/org/aziot/Keys1", "org.aziot.Keys1",
                               "CreateKeyIfNotExists", &error, &reply, "sasa{sv}", KEY_ID, 1, "sign",
                               0);
        if (r < 0) {
                fprintf(stderr, "CreateKeyIfNotExists: %s\n", error.message ?: strerror(-r));
                return EXIT_FAILURE;
        }
        r = sd_bus_message_read(reply, "s", &b.handle);
        if (r < 0)
                return EXIT_FAILURE;
        if (private_connection && open_private(&b.bus) < 0)
                return EXIT_FAILURE;

        start = now_ns();
        b.record_from = start + (uint64_t)(warmup * 1e9);
        b.deadline = b.record_from + (uint64_t)(seconds * 1e9);
        for (unsigned i = 0; i < in_flight; i++)
                if (send_one(&b) < 0)
                        return EXIT_FAILURE;
        while (b.outstanding > 0) {
                r = sd_bus_process(b.bus, NULL);
                if (r < 0) {
                        fprintf(stderr, "bus: %s\n", strerror(-r));
                        return EXIT_FAILURE;
                }
                if (r == 0 && sd_bus_wait(b.bus, 100000) < 0)
                        return EXIT_FAILURE;
        }
        elapsed = (double)(now_ns() - b.record_from) / 1e9;

        qsort(b.lat, b.n, sizeof(uint64_t), cmp);
        printf("{\"in_flight\": %u, \"seconds\": %.2f, \"calls\": %zu, \"errors\": %" PRIu64
               ", \"calls_per_second\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f}\n",
               in_flight, elapsed, b.n, b.errors, (double)b.n / elapsed,
               b.n ? (double)b.lat[b.n / 2] / 1000.0 : 0,
               b.n ? (double)b.lat[(size_t)((double)(b.n - 1) * 0.99)] / 1000.0 : 0);
        free(b.lat);
        sd_bus_flush_close_unref(b.bus);
        return b.errors == 0 && b.n > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
