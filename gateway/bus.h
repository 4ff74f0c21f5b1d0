/* SPDX-License-Identifier: MIT */
#pragma once

/* The gateway's connections to the services.
 *
 * The system bus (DBUS_SYSTEM_BUS_ADDRESS when set) is opened when first needed and again after it
 * was lost, so the gateway can start before the bus and outlive a restart of it; meanwhile
 * requests fail with 500.
 *
 * A service that offers OpenPrivateConnection (keyd does) hands the gateway one end of a
 * peer-to-peer D-Bus connection serving the same object, which skips dbus-daemon: on this
 * machine dbus-daemon costs more per request than everything else on the path (docs/design.md).
 * The first calls to a service go over the bus (which also activates the service) while the
 * private connection is asked for in the background; then calls take the private connection
 * until it has been unused for a while (it keeps the service from exiting when idle) or is lost.
 * A service without the method is simply always called over the bus. */

#include <stdbool.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

typedef struct GatewayBus GatewayBus;
typedef struct GatewayLink GatewayLink;

int gateway_bus_new(sd_event *event, GatewayBus **ret);
GatewayBus *gateway_bus_free(GatewayBus *b);
static inline void gateway_bus_freep(GatewayBus **b)
{
        if (*b)
                gateway_bus_free(*b);
}

/* The system bus connection, (re)opened if needed. The reference stays with b. */
int gateway_bus_get(GatewayBus *b, sd_bus **ret);

/* The connection for a call to the service owning destination at path: its private connection
 * when there is one (then *ret_private is true and the call must have no destination), else the
 * bus. *ret_link, to pass to gateway_link_begin()/end(), may be NULL (no private link). */
int gateway_bus_for(GatewayBus *b, const char *destination, const char *path,
                    const char *interface, sd_bus **ret, bool *ret_private,
                    GatewayLink **ret_link);

/* Calls in flight on a link: it is not closed for idleness while there are any. */
void gateway_link_begin(GatewayLink *link);
void gateway_link_end(GatewayLink *link);
