/* SPDX-License-Identifier: MIT */
#pragma once

/* The frame every aziot daemon shares: its command line (--help, --version, --idle-timeout), the
 * event loop that SIGTERM and SIGINT end, the system bus with polkit, and the gateway's uid. */

#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "polkit.h"

typedef struct ServiceDescription {
        const char *program;   /* "aziot-keyd" */
        const char *what;      /* "The Keys service of the device identity stack" */
        const char *bus_name;  /* "org.aziot.Keys1" */
        const char *config;    /* "keyd": /etc/aziot/keyd/config.toml, AZIOT_KEYD_CONFIG… */
        unsigned default_idle_sec;
        /* Serves until idle (idle_usec 0: never) or signalled; 0 or a negative errno. */
        int (*run)(uint64_t idle_usec);
} ServiceDescription;

/* Parses the command line, sets up logging and calls d->run(): the whole of main(). */
int service_main(const ServiceDescription *d, int argc, char *argv[]);

/* The default event loop, ended by SIGTERM and SIGINT. */
int service_event_new(sd_event **ret);

/* The user allowed to pass client sockets besides root: AZIOT_GATEWAY_USER, else the build's
 * gateway user; UID_INVALID when there is no such user. */
uid_t service_gateway_uid(void);

/* Connects to the system bus (DBUS_SYSTEM_BUS_ADDRESS honoured), attaches it to e and sets up the
 * polkit checks on it. Errors are logged. */
int service_connect_bus(sd_event *e, sd_bus **ret_bus, PolkitRegistry **ret_registry);
