/* SPDX-License-Identifier: MIT */
#pragma once

/* Private (peer-to-peer) D-Bus connections to keyd, for the gateway.
 *
 * Every HTTP request the gateway serves would otherwise cross dbus-daemon twice, and dbus-daemon is
 * the most expensive step of the whole path (see docs/design.md, "Private connections"). So the
 * gateway asks keyd, over the system bus, for a connection of its own: keyd makes a socket pair,
 * serves the same org.aziot.Keys1 object on one end and hands the other to the caller. Only root and
 * the gateway's user may ask. Calls on it are made by the process that opened it: its uid counts for
 * principals, and polkit sees it as a unix-process subject. keyd stays up while one is open; the
 * gateway closes it when it has been idle. */

#include "keyd.h"

typedef struct PrivateConnection PrivateConnection;

/* Serves a new private connection for the sender of request; returns the caller's end. */
int private_connection_open(Manager *m, sd_bus_message *request, int *ret_fd);

/* The private connection a message came in on, or NULL for the system bus. */
PrivateConnection *private_connection_of(Manager *m, sd_bus_message *msg);

/* The process that opened c. */
const PeerCred *private_connection_opener(const PrivateConnection *c);

void private_connections_free(Manager *m);
