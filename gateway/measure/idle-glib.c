/* SPDX-License-Identifier: MIT */
/* The smallest GLib/GIO process: a GDBus connection and a main loop, idling (docs/design.md). */
#include <gio/gio.h>
#include <stdlib.h>

int main(void)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(GDBusConnection) bus = NULL;
        g_autoptr(GMainLoop) loop = NULL;

        bus = g_bus_get_sync(G_BUS_TYPE_SESSION, NULL, &error);
        if (!bus) {
                g_printerr("idle-glib: %s\n", error->message);
                return EXIT_FAILURE;
        }
        loop = g_main_loop_new(NULL, FALSE);
        g_main_loop_run(loop);
        return EXIT_SUCCESS;
}
