/* SPDX-License-Identifier: MIT */
/* Sequential round trips of org.aziot.Bench1.Ping through a gdbus-codegen proxy (docs/design.md).
 * Usage: bench-gdbus sync|async N. Prints calls per second. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench1-gdbus.h"

typedef struct Run {
        AziotBench1 *proxy;
        GMainLoop *loop;
        GVariant *payload;
        long left;
        gboolean failed;
} Run;

static GVariant *make_payload(void)
{
        static const guint8 bytes[32] = { 1, 2, 3 };
        return g_variant_ref_sink(
                g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, bytes, sizeof(bytes), 1));
}

static gboolean run_sync(Run *run, long n)
{
        for (long i = 0; i < n; i++) {
                g_autoptr(GVariant) echo = NULL;
                g_autoptr(GError) error = NULL;

                if (!aziot_bench1_call_ping_sync(run->proxy, run->payload, &echo, NULL, &error)) {
                        g_printerr("bench-gdbus: %s\n", error->message);
                        return FALSE;
                }
        }
        return TRUE;
}

static void send_next(Run *run);

static void on_reply(GObject *source, GAsyncResult *res, gpointer user_data)
{
        Run *run = user_data;
        g_autoptr(GVariant) echo = NULL;
        g_autoptr(GError) error = NULL;

        if (!aziot_bench1_call_ping_finish(run->proxy, &echo, res, &error)) {
                g_printerr("bench-gdbus: %s\n", error->message);
                run->failed = TRUE;
                g_main_loop_quit(run->loop);
                return;
        }
        if (--run->left == 0) {
                g_main_loop_quit(run->loop);
                return;
        }
        send_next(run);
}

static void send_next(Run *run)
{
        aziot_bench1_call_ping(run->proxy, run->payload, NULL, on_reply, run);
}

static gboolean run_async(Run *run, long n)
{
        run->left = n;
        run->loop = g_main_loop_new(NULL, FALSE);
        send_next(run);
        g_main_loop_run(run->loop);
        g_main_loop_unref(run->loop);
        return !run->failed;
}

int main(int argc, char **argv)
{
        g_autoptr(GError) error = NULL;
        Run run = {};
        gboolean async, ok;
        gint64 t0, t1;
        long n;

        if (argc != 3 || (strcmp(argv[1], "sync") != 0 && strcmp(argv[1], "async") != 0)) {
                g_printerr("usage: bench-gdbus sync|async N\n");
                return EXIT_FAILURE;
        }
        async = strcmp(argv[1], "async") == 0;
        n = atol(argv[2]);
        run.proxy = aziot_bench1_proxy_new_for_bus_sync(
                G_BUS_TYPE_SESSION, G_DBUS_PROXY_FLAGS_DO_NOT_LOAD_PROPERTIES, "org.aziot.Bench1",
                "/org/aziot/Bench1", NULL, &error);
        if (!run.proxy) {
                g_printerr("bench-gdbus: %s\n", error->message);
                return EXIT_FAILURE;
        }
        run.payload = make_payload();
        ok = run_sync(&run, 100);
        t0 = g_get_monotonic_time();
        if (ok)
                ok = async ? run_async(&run, n) : run_sync(&run, n);
        t1 = g_get_monotonic_time();
        g_variant_unref(run.payload);
        g_object_unref(run.proxy);
        if (!ok)
                return EXIT_FAILURE;
        printf("GDBus %s: %ld calls in %.3f s = %.0f calls/s\n", argv[1], n,
               (double)(t1 - t0) / 1e6, (double)n * 1e6 / (double)(t1 - t0));
        return EXIT_SUCCESS;
}
