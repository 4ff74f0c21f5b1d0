/* SPDX-License-Identifier: MIT */
/* Sequential round trips of org.aziot.Bench1.Ping through sd-bus (docs/design.md).
 * Usage: bench-sdbus sync|async N. Prints calls per second. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "macro.h"

static const uint8_t payload[32] = { 1, 2, 3 };

typedef struct Run {
        sd_bus *bus;
        long left;
        int error;
} Run;

static double now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int new_call(sd_bus *bus, sd_bus_message **ret)
{
        int r = sd_bus_message_new_method_call(bus, ret, "org.aziot.Bench1", "/org/aziot/Bench1",
                                               "org.aziot.Bench1", "Ping");
        if (r < 0)
                return r;
        return sd_bus_message_append_array(*ret, 'y', payload, sizeof(payload));
}

static int run_sync(sd_bus *bus, long n)
{
        for (long i = 0; i < n; i++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
                int r = new_call(bus, &m);
                if (r >= 0)
                        r = sd_bus_call(bus, m, 0, NULL, &reply);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int send_next(Run *run);

static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Run *run = userdata;

        if (sd_bus_message_is_method_error(reply, NULL)) {
                run->error = -EIO;
                return sd_event_exit(sd_bus_get_event(run->bus), -EIO);
        }
        if (--run->left == 0)
                return sd_event_exit(sd_bus_get_event(run->bus), 0);
        return send_next(run);
}

static int send_next(Run *run)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r = new_call(run->bus, &m);
        if (r < 0)
                return r;
        return sd_bus_call_async(run->bus, NULL, m, on_reply, run, 0);
}

static int run_async(sd_bus *bus, long n)
{
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Run run = { .bus = bus, .left = n };
        int r;

        r = sd_event_default(&e);
        if (r >= 0)
                r = sd_bus_attach_event(bus, e, 0);
        if (r >= 0)
                r = send_next(&run);
        if (r >= 0)
                r = sd_event_loop(e);
        sd_bus_detach_event(bus);
        return r < 0 ? r : run.error;
}

int main(int argc, char **argv)
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        bool async;
        long n;
        double t0, t1;
        int r;

        if (argc != 3 || (strcmp(argv[1], "sync") != 0 && strcmp(argv[1], "async") != 0)) {
                fprintf(stderr, "usage: bench-sdbus sync|async N\n");
                return EXIT_FAILURE;
        }
        async = strcmp(argv[1], "async") == 0;
        n = atol(argv[2]);
        r = sd_bus_open_user(&bus);
        if (r < 0) {
                fprintf(stderr, "bench-sdbus: cannot connect: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        /* One untimed call so that the connection is up and the peer is warm. */
        r = run_sync(bus, 100);
        t0 = now();
        if (r >= 0)
                r = async ? run_async(bus, n) : run_sync(bus, n);
        t1 = now();
        if (r < 0) {
                fprintf(stderr, "bench-sdbus: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        printf("sd-bus %s: %ld calls in %.3f s = %.0f calls/s\n", argv[1], n, t1 - t0,
               (double)n / (t1 - t0));
        return EXIT_SUCCESS;
}
