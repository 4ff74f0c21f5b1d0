/* SPDX-License-Identifier: MIT */
#pragma once

/* Each socket's max_requests (upstream's per-uid connection limit, spec §1.2) comes from its
 * service's MaxRequests property: the gateway cannot read the services' configuration files, which
 * hold secrets and belong to the services' users.
 *
 * The property is asked for on the first connection to the socket, not at start, so that starting
 * the gateway does not activate the services; the call is asynchronous and until it is answered
 * the default of 10 holds. When it fails (the service cannot be activated, …) a warning is logged
 * once and the question is asked again on a later connection, no sooner than 10 s after. When
 * the service's name gets a new owner (a restart, which may bring another configuration), it is
 * asked again at once. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "bus.h"
#include "http-server.h"
#include "routes.h"

/* upstream's default for max_requests */
#define MAX_REQUESTS_DEFAULT 10u
#define MAX_REQUESTS_RETRY_USEC (10u * 1000000u)

typedef struct MaxRequests {
        sd_event *event;
        const Service *service;
        GatewayBus *bus;
        HttpListener *listener;
        sd_bus_slot *slot;    /* the Get in flight */
        sd_bus_slot *owner_slot; /* NameOwnerChanged of the service's name */
        uint64_t retry_after; /* CLOCK_MONOTONIC; no new Get before it */
        bool known;           /* answered: nothing more to ask */
        bool warned;
} MaxRequests;

/* Applies the default to listener and has it ask on its first connection. */
void max_requests_init(MaxRequests *m, sd_event *event, const Service *service, GatewayBus *bus,
                       HttpListener *listener);
void max_requests_done(MaxRequests *m);
