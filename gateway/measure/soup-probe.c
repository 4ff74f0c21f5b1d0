/* SPDX-License-Identifier: MIT */
/* The DESIGN §3 stack at rest, and its Host handling (docs/design.md): a libsoup 3 server on a Unix
 * socket answering every path with 200 {} through json-glib, plus a GDBus connection.
 * Usage: soup-probe SOCKET-PATH. Runs until killed. */
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <stdlib.h>

static void handle_any(SoupServer *server, SoupServerMessage *msg, const char *path,
                       GHashTable *query, gpointer user_data)
{
        g_autoptr(JsonBuilder) builder = json_builder_new();
        g_autoptr(JsonNode) root = NULL;
        g_autofree char *body = NULL;

        json_builder_begin_object(builder);
        json_builder_end_object(builder);
        root = json_builder_get_root(builder);
        body = json_to_string(root, FALSE);
        soup_server_message_set_status(msg, 200, NULL);
        soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_COPY, body,
                                         strlen(body));
}

int main(int argc, char **argv)
{
        g_autoptr(GError) error = NULL;
        g_autoptr(GDBusConnection) bus = NULL;
        g_autoptr(GSocketAddress) address = NULL;
        g_autoptr(SoupServer) server = NULL;
        g_autoptr(GMainLoop) loop = NULL;

        if (argc != 2) {
                g_printerr("usage: soup-probe SOCKET-PATH\n");
                return EXIT_FAILURE;
        }
        bus = g_bus_get_sync(G_BUS_TYPE_SESSION, NULL, &error);
        if (!bus) {
                g_printerr("soup-probe: %s\n", error->message);
                return EXIT_FAILURE;
        }
        server = soup_server_new(NULL, NULL);
        soup_server_add_handler(server, NULL, handle_any, NULL, NULL);
        address = g_unix_socket_address_new(argv[1]);
        if (!soup_server_listen(server, address, 0, &error)) {
                g_printerr("soup-probe: %s\n", error->message);
                return EXIT_FAILURE;
        }
        loop = g_main_loop_new(NULL, FALSE);
        g_main_loop_run(loop);
        return EXIT_SUCCESS;
}
