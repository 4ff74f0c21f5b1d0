/* SPDX-License-Identifier: MIT */
/* The keyd stand-in of the gateway's throughput measurement (docs/design.md) and of its private
 * connection test: owns org.aziot.Keys1 on the system bus (DBUS_SYSTEM_BUS_ADDRESS), answers Sign
 * with HMAC-SHA256 under a fixed key after reading the "client-socket" option the way keyd must,
 * and hands out peer-to-peer connections with OpenPrivateConnection (unless --no-private). Each
 * Sign prints "sign bus" or "sign private" when --verbose. Not a test double of keyd's behaviour:
 * only the shape and cost of the calls. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <systemd/sd-id128.h>

#include "macro.h"

static const uint8_t key[32] = { 0x42 };
static sd_bus *system_bus;
static bool verbose;

/* Reads the a{sv} options; returns the client socket, or -ENXIO when there is none. */
static int read_client_socket(sd_bus_message *m, int *ret)
{
        const char *name;
        int fd = -ENXIO, r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                r = sd_bus_message_read(m, "s", &name);
                if (r >= 0 && streq(name, "client-socket"))
                        r = sd_bus_message_read(m, "v", "h", &fd);
                else if (r >= 0)
                        r = sd_bus_message_skip(m, "v");
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = fd;
        return fd < 0 ? fd : 0;
}

static int method_sign(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *handle, *algorithm;
        uint8_t mac[EVP_MAX_MD_SIZE];
        size_t n, mac_len;
        const void *data;
        int fd, r;

        r = sd_bus_message_read(m, "ss", &handle, &algorithm);
        if (r >= 0)
                r = sd_bus_message_read_array(m, 'y', &data, &n);
        if (r >= 0)
                r = read_client_socket(m, &fd);
        if (r < 0)
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "bad arguments");
        if (!streq(algorithm, "HMAC-SHA256"))
                return sd_bus_error_set(error, "org.aziot.Keys1.Error.InvalidParameter",
                                        "parameter \"mechanism\" has an invalid value");
        if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, sizeof(key), data, n, mac,
                       sizeof(mac), &mac_len))
                return sd_bus_error_set(error, "org.aziot.Keys1.Error.Failed", "HMAC failed");

        if (verbose) {
                printf("sign %s\n", sd_bus_message_get_bus(m) == system_bus ? "bus" : "private");
                fflush(stdout);
        }
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_append_array(reply, 'y', mac, mac_len);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        return r;
}

static int method_open_private(sd_bus_message *m, void *userdata, sd_bus_error *error);

static const sd_bus_vtable keys_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Sign", "ssaya{sv}", "ay", method_sign, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("OpenPrivateConnection", "a{sv}", "h", method_open_private,
                      SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static const sd_bus_vtable keys_vtable_bus_only[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Sign", "ssaya{sv}", "ay", method_sign, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static int on_private_disconnected(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        sd_bus *bus = sd_bus_message_get_bus(m);

        sd_bus_detach_event(bus);
        sd_bus_unref(bus); /* the reference taken in method_open_private */
        return 0;
}

/* The server end of a socket pair, serving the same object, anonymous, with fd passing. Takes
 * over fd. */
static int serve_private(int fd)
{
        sd_bus *bus = NULL;
        sd_id128_t id;
        int r;

        r = sd_bus_new(&bus);
        if (r < 0) {
                safe_close(fd);
                return r;
        }
        r = sd_bus_set_fd(bus, fd, fd);
        if (r < 0)
                safe_close(fd);
        if (r >= 0)
                r = sd_id128_randomize(&id);
        if (r >= 0)
                r = sd_bus_set_server(bus, 1, id);
        if (r >= 0)
                r = sd_bus_set_anonymous(bus, 1);
        if (r >= 0)
                r = sd_bus_negotiate_fds(bus, 1);
        if (r >= 0)
                r = sd_bus_add_object_vtable(bus, NULL, "/org/aziot/Keys1", "org.aziot.Keys1",
                                             keys_vtable, NULL);
        if (r >= 0)
                r = sd_bus_match_signal(bus, NULL, NULL, "/org/freedesktop/DBus/Local",
                                        "org.freedesktop.DBus.Local", "Disconnected",
                                        on_private_disconnected, NULL);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r >= 0)
                r = sd_bus_attach_event(bus, sd_bus_get_event(system_bus), 0);
        if (r < 0)
                sd_bus_unref(bus);
        return r;
}

static int method_open_private(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        _cleanup_close_ int theirs = -EBADF;
        int pair[2], r;

        if (sd_bus_message_get_bus(m) != system_bus)
                return sd_bus_error_set(error, "org.aziot.Keys1.Error.NotAuthorized",
                                        "not on a private connection");
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) < 0)
                return -errno;
        theirs = pair[1];
        r = serve_private(pair[0]);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "h", theirs);
}

int main(int argc, char *argv[])
{
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        bool private = true;
        int r;

        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--no-private"))
                        private = false;
                else if (streq(argv[i], "--verbose"))
                        verbose = true;
                else {
                        fprintf(stderr, "usage: mock-keyd [--no-private] [--verbose]\n");
                        return EXIT_FAILURE;
                }
        }
        r = sd_event_default(&e);
        if (r >= 0)
                r = sd_bus_open_system(&bus);
        system_bus = bus;
        if (r >= 0)
                r = sd_bus_add_object_vtable(bus, NULL, "/org/aziot/Keys1", "org.aziot.Keys1",
                                             private ? keys_vtable : keys_vtable_bus_only, NULL);
        if (r >= 0)
                r = sd_bus_request_name(bus, "org.aziot.Keys1", 0);
        if (r >= 0)
                r = sd_bus_attach_event(bus, e, 0);
        if (r >= 0 && verbose) {
                printf("ready\n");
                fflush(stdout);
        }
        if (r >= 0)
                r = sd_event_loop(e);
        if (r < 0)
                fprintf(stderr, "mock-keyd: %s\n", strerror(-r));
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
