/* SPDX-License-Identifier: MIT */
/* aziot-gatewayd: serves the upstream HTTP-over-Unix-socket APIs (keyd.sock, …) by translating each
 * request into calls of the D-Bus services. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "build-config.h"
#include "bus-util.h"
#include "bus.h"
#include "certs-routes.h"
#include "identity-routes.h"
#include "http-server.h"
#include "keys-routes.h"
#include "log.h"
#include "macro.h"
#include "max-requests.h"
#include "routes.h"
#include "tpm-routes.h"

/* The sockets, by the names socket activation gives them. */
static const struct {
        const char *name;
        const Service *service;
} sockets[] = {
        { "keyd", &keys_service },
        { "certd", &certs_service },
        { "identityd", &identity_service },
        { "tpmd", &tpm_service },
};

#define N_SOCKETS ELEMENTSOF(sockets)

typedef struct Listen {
        int fd;          /* -EBADF: not listening */
        char *path;      /* bound by us, to remove at exit */
        bool activated;  /* passed by the service manager */
} Listen;

typedef struct Context {
        const char *paths[N_SOCKETS]; /* --<name>-socket */
        Listen listen[N_SOCKETS];
        RouteService services[N_SOCKETS];
        MaxRequests max_requests[N_SOCKETS];
        uint64_t body_timeout_usec;
} Context;

static void context_done(Context *c)
{
        for (size_t i = 0; i < N_SOCKETS; i++) {
                /* Still ours (start-up failed before the server took it): remove what we bound. */
                if (c->listen[i].fd >= 0 && c->listen[i].path)
                        (void)unlink(c->listen[i].path);
                safe_close(c->listen[i].fd);
                free(c->listen[i].path);
                max_requests_done(&c->max_requests[i]);
        }
}

static void help(void)
{
        printf("Usage: aziot-gatewayd [OPTIONS]\n\n"
               "Serves the local HTTP APIs of the Azure IoT Identity Service over Unix sockets,\n"
               "translating each request into D-Bus calls of the aziot services.\n\n"
               "  --keyd-socket PATH       serve keyd.sock at PATH\n"
               "  --certd-socket PATH      serve certd.sock at PATH\n"
               "  --identityd-socket PATH  serve identityd.sock at PATH\n"
               "  --tpmd-socket PATH       serve tpmd.sock at PATH\n"
               "  -h, --help               show this help\n"
               "      --version            show the version\n\n"
               "Sockets passed by socket activation (LISTEN_FDS, named with LISTEN_FDNAMES: keyd,\n"
               "certd, identityd, tpmd) are served as well. The bus is DBUS_SYSTEM_BUS_ADDRESS or\n"
               "the system bus; the log level is AZIOT_LOG.\n");
}

static int socket_index(const char *name)
{
        for (size_t i = 0; i < N_SOCKETS; i++)
                if (streq(sockets[i].name, name))
                        return (int)i;
        return -1;
}

static int parse_argv(int argc, char *argv[], Context *c)
{
        enum { ARG_VERSION = 0x100, ARG_SOCKET };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "keyd-socket", required_argument, NULL, ARG_SOCKET + 0 },
                { "certd-socket", required_argument, NULL, ARG_SOCKET + 1 },
                { "identityd-socket", required_argument, NULL, ARG_SOCKET + 2 },
                { "tpmd-socket", required_argument, NULL, ARG_SOCKET + 3 },
                {},
        };
        int opt;

        while ((opt = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                if (opt == 'h') {
                        help();
                        return 0;
                }
                if (opt == ARG_VERSION) {
                        printf("aziot-gatewayd %s\n", PACKAGE_VERSION);
                        return 0;
                }
                if (opt >= ARG_SOCKET && opt < ARG_SOCKET + (int)N_SOCKETS) {
                        c->paths[opt - ARG_SOCKET] = optarg;
                        continue;
                }
                return -EINVAL;
        }
        if (optind < argc) {
                log_error("Unexpected argument: %s", argv[optind]);
                return -EINVAL;
        }
        return 1;
}

static int take_activated(Context *c)
{
        _cleanup_strv_free_ char **names = NULL;
        int n;

        n = sd_listen_fds_with_names(/* unset_environment= */ true, &names);
        if (n < 0)
                return log_error_errno(n, "Cannot read the sockets passed by the service "
                                          "manager: %m");

        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i, k = socket_index(names[i]);

                if (k < 0) {
                        log_error("Passed socket \"%s\" is not one of keyd, certd, identityd, tpmd "
                                  "(set FileDescriptorName=).",
                                  names[i]);
                        return -EINVAL;
                }
                if (c->listen[k].fd >= 0) {
                        log_error("Socket \"%s\" was passed twice.", names[i]);
                        return -EINVAL;
                }
                if (sd_is_socket_unix(fd, SOCK_STREAM, /* listening= */ 1, NULL, 0) <= 0) {
                        log_error("Passed socket \"%s\" is not a listening Unix stream socket.",
                                  names[i]);
                        return -EINVAL;
                }
                c->listen[k].fd = fd;
                c->listen[k].activated = true;
        }
        return 0;
}

static int bind_paths(Context *c)
{
        int r;

        for (size_t i = 0; i < N_SOCKETS; i++) {
                if (!c->paths[i])
                        continue;
                if (c->listen[i].activated) {
                        log_error("The %s socket was both passed by the service manager and given "
                                  "on the command line.",
                                  sockets[i].name);
                        return -EINVAL;
                }
                r = http_listen_unix(c->paths[i], &c->listen[i].fd);
                if (r < 0)
                        return log_error_errno(r, "Cannot listen on %s: %m", c->paths[i]);
                c->listen[i].path = strdup(c->paths[i]);
                if (!c->listen[i].path)
                        return log_oom();
        }
        return 0;
}

static int check_served(const Context *c)
{
        size_t n = 0;

        for (size_t i = 0; i < N_SOCKETS; i++) {
                if (c->listen[i].fd < 0 && !c->paths[i])
                        continue;
                n++;
        }
        if (n == 0) {
                log_error("Nothing to serve: pass sockets by socket activation or use "
                          "--keyd-socket PATH, --certd-socket PATH, --identityd-socket PATH or "
                          "--tpmd-socket PATH.");
                return -EINVAL;
        }
        return 0;
}

/* AZIOT_GATEWAY_BODY_TIMEOUT_MS: for the tests, which cannot wait 5 s for each 408. */
static int read_body_timeout(uint64_t *ret)
{
        const char *e = getenv("AZIOT_GATEWAY_BODY_TIMEOUT_MS");
        char *end;
        unsigned long long ms;

        *ret = HTTP_BODY_TIMEOUT_USEC;
        if (!e)
                return 0;
        errno = 0;
        ms = strtoull(e, &end, 10);
        if (errno != 0 || end == e || *end || ms == 0 || ms > UINT64_MAX / 1000) {
                log_error("Invalid AZIOT_GATEWAY_BODY_TIMEOUT_MS=%s: not a positive number.", e);
                return -EINVAL;
        }
        *ret = ms * 1000;
        return 0;
}

/* max_requests is not read here: the services' configuration is theirs (max-requests.h). */
static int add_listeners(Context *c, sd_event *event, HttpServer *server, GatewayBus *bus)
{
        HttpListener *listener;
        int r;

        for (size_t i = 0; i < N_SOCKETS; i++) {
                if (c->listen[i].fd < 0)
                        continue;
                c->services[i] = (RouteService){ .service = sockets[i].service, .bus = bus };
                r = http_server_add_listener(server, TAKE_FD(c->listen[i].fd), sockets[i].name,
                                             c->listen[i].path, MAX_REQUESTS_DEFAULT,
                                             &route_http_handler, &c->services[i], &listener);
                if (r < 0)
                        return log_error_errno(r, "Cannot serve %s: %m", sockets[i].name);
                max_requests_init(&c->max_requests[i], event, sockets[i].service, bus, listener);
                log_info("Serving %s.sock%s%s (max_requests from %s on the first connection).",
                         sockets[i].name, c->listen[i].path ? " at " : "",
                         strempty(c->listen[i].path), sockets[i].service->bus_name);
        }
        return 0;
}

static int run(int argc, char *argv[])
{
        _cleanup_(context_done) Context c = {};
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(gateway_bus_freep) GatewayBus *bus = NULL;
        _cleanup_(http_server_freep) HttpServer *server = NULL;
        sd_bus *unused;
        int r;

        log_setup("aziot-gatewayd");
        for (size_t i = 0; i < N_SOCKETS; i++)
                c.listen[i].fd = -EBADF;

        r = parse_argv(argc, argv, &c);
        if (r <= 0)
                return r;
        r = read_body_timeout(&c.body_timeout_usec);
        if (r >= 0)
                r = take_activated(&c);
        if (r >= 0)
                r = check_served(&c);
        if (r >= 0)
                r = bind_paths(&c);
        if (r < 0)
                return r;

        r = sd_event_default(&event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        r = event_add_exit_signals(event);
        if (r < 0)
                return log_error_errno(r, "Cannot watch for SIGTERM and SIGINT: %m");
        (void)sd_event_set_watchdog(event, true);

        r = gateway_bus_new(event, &bus);
        if (r >= 0)
                r = http_server_new(event, &server);
        if (r < 0)
                return log_oom();
        http_server_set_body_timeout(server, c.body_timeout_usec);
        r = add_listeners(&c, event, server, bus);
        if (r < 0)
                return r;

        /* Connect now so that the first request does not wait for it; failing is fine here. */
        r = gateway_bus_get(bus, &unused);
        if (r < 0)
                log_warning_errno(r, "No bus connection yet (%m); requests will retry.");

        (void)sd_notify(/* unset_environment= */ false, "READY=1");
        r = sd_event_loop(event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        (void)sd_notify(false, "STOPPING=1");
        return 0;
}

int main(int argc, char *argv[])
{
        return run(argc, argv) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
