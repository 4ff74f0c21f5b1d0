/* SPDX-License-Identifier: MIT */
#pragma once

/* Small sd-bus helpers shared by the daemons and the test services. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "peercred.h"

/* Connects to the system bus as a bus client. address, when set, wins; else DBUS_STARTER_ADDRESS
 * when a system bus activated us (DBUS_STARTER_BUS_TYPE unset or "system"); else
 * sd_bus_open_system(), which honours DBUS_SYSTEM_BUS_ADDRESS and falls back to
 * /run/dbus/system_bus_socket. */
int bus_open_system_or_address(const char *address, sd_bus **ret);

/* Reads an 'h' argument from m and returns the credentials of the process on the other end of
 * that socket (for a "unix-process" polkit subject). When the fd is not a connected Unix socket
 * whose peer still runs, sets org.freedesktop.DBus.Error.InvalidArgs in error and returns its
 * negative errno; other failures (a bad message) are returned as they are, for sd-bus to turn
 * into an error reply. */
int bus_message_read_peercred(sd_bus_message *m, PeerCred *ret, sd_bus_error *error);

/* Blocks SIGTERM and SIGINT and lets either end the loop of e (exit code 0). */
int event_add_exit_signals(sd_event *e);

/* Returns true while the service has work in flight (a polkit check, a reply still to send ...). */
typedef bool (*bus_busy_func_t)(void *userdata);

/* For an activatable service, once its objects are registered: attaches bus to e if it is not
 * attached yet, takes the well-known name, and runs e until sd_event_exit() (returns its exit
 * code) or until no method call has come in for idle_usec while busy() returned false (returns
 * 0). On idle it releases the name first, then answers whatever was already queued for it, so no
 * call is lost: later calls activate a new instance. idle_usec 0 never exits on idle. busy may be
 * NULL. Sets exit-on-disconnect: losing the bus ends the loop with EXIT_FAILURE. */
int bus_request_name_and_run_until_idle(sd_event *e, sd_bus *bus, const char *name,
                                        uint64_t idle_usec, bus_busy_func_t busy, void *userdata);
