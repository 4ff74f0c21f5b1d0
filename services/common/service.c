/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <getopt.h>
#include <pwd.h>

#include "build-config.h"
#include "bus-caller.h"
#include "bus-util.h"
#include "log.h"
#include "macro.h"
#include "service.h"

static void help(const ServiceDescription *d)
{
        _cleanup_free_ char *upper = strdup(d->config);

        for (char *p = upper; p && *p; p++)
                *p = (char)toupper((unsigned char)*p);
        printf("%s [OPTIONS]\n\n"
               "%s, on D-Bus as %s.\n\n"
               "  -h --help               Show this help\n"
               "     --version            Show the version\n"
               "     --idle-timeout=SEC   Exit after SEC seconds without calls (default %u,\n"
               "                          0: never)\n"
               "\nConfiguration: /etc/aziot/%s/config.toml and config.d/*.toml, or\n"
               "AZIOT_%s_CONFIG and AZIOT_%s_CONFIG_DIR. Log level: AZIOT_LOG.\n",
               d->program, d->what, d->bus_name, d->default_idle_sec, d->config,
               upper ?: "?", upper ?: "?");
}

int service_main(const ServiceDescription *d, int argc, char *argv[])
{
        enum { ARG_VERSION = 0x100, ARG_IDLE };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "idle-timeout", required_argument, NULL, ARG_IDLE },
                {},
        };
        unsigned long idle_sec = d->default_idle_sec;
        char *end;
        int c;

        log_setup(d->program);

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help(d);
                        return EXIT_SUCCESS;
                case ARG_VERSION:
                        printf("%s %s\n", d->program, PACKAGE_VERSION);
                        return EXIT_SUCCESS;
                case ARG_IDLE:
                        errno = 0;
                        idle_sec = strtoul(optarg, &end, 10);
                        if (errno || *end || end == optarg || idle_sec > 86400) {
                                log_error("Invalid --idle-timeout: %s", optarg);
                                return EXIT_FAILURE;
                        }
                        break;
                default:
                        return EXIT_FAILURE;
                }
        if (optind < argc) {
                log_error("Unexpected argument: %s", argv[optind]);
                return EXIT_FAILURE;
        }

        return d->run((uint64_t)idle_sec * 1000000) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int service_event_new(sd_event **ret)
{
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        int r;

        r = sd_event_default(&e);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate the event loop: %m");
        r = event_add_exit_signals(e);
        if (r < 0)
                return log_error_errno(r, "Failed to handle SIGTERM and SIGINT: %m");
        *ret = TAKE_PTR(e);
        return 0;
}

uid_t service_gateway_uid(void)
{
        const char *gw = getenv("AZIOT_GATEWAY_USER") ?: GATEWAY_USER;
        struct passwd *pw = getpwnam(gw);

        return pw ? pw->pw_uid : UID_INVALID;
}

int service_connect_bus(sd_event *e, sd_bus **ret_bus, PolkitRegistry **ret_registry)
{
        int r;

        r = bus_open_system_or_address(NULL, ret_bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");
        r = sd_bus_attach_event(*ret_bus, e, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");
        r = polkit_registry_new(*ret_bus, ret_registry);
        if (r < 0)
                return log_error_errno(r, "Failed to set up polkit checks: %m");
        return 0;
}
