/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "log.h"
#include "max-requests.h"

static uint64_t now_usec(const MaxRequests *m)
{
        uint64_t now = 0;

        (void)sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        return now;
}

static void failed(MaxRequests *m, const char *why)
{
        m->retry_after = now_usec(m) + MAX_REQUESTS_RETRY_USEC;
        if (m->warned)
                return;
        m->warned = true;
        log_warning("Cannot ask %s for its MaxRequests (%s); max_requests on %s.sock stays %u "
                    "for now.",
                    m->service->bus_name, why, m->service->name, MAX_REQUESTS_DEFAULT);
}

static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        MaxRequests *m = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        uint32_t max;

        m->slot = sd_bus_slot_unref(m->slot);
        if (e) {
                failed(m, e->message ?: e->name);
                return 0;
        }
        if (sd_bus_message_read(reply, "v", "u", &max) < 0) {
                failed(m, "a reply that is not a uint32");
                return 0;
        }
        http_listener_set_max_connections_per_uid(m->listener, max);
        m->known = true;
        log_info("max_requests on %s.sock is %" PRIu32 " (%s).", m->service->name, max,
                 m->service->bus_name);
        return 0;
}

/* On every connection: a few tests, and a call only until the answer has come. */
static void on_accept(void *userdata)
{
        MaxRequests *m = userdata;
        sd_bus *bus;
        int r;

        if (m->known)
                return;
        if (m->slot) {
                /* A call on a bus connection since lost may never be answered: ask anew. */
                if (sd_bus_is_open(sd_bus_slot_get_bus(m->slot)) > 0)
                        return;
                m->slot = sd_bus_slot_unref(m->slot);
        }
        if (m->retry_after > 0 && now_usec(m) < m->retry_after)
                return;

        r = gateway_bus_get(m->bus, &bus);
        if (r >= 0)
                /* Over the bus, which activates the service if need be. */
                r = sd_bus_call_method_async(bus, &m->slot, m->service->bus_name,
                                             m->service->object_path,
                                             "org.freedesktop.DBus.Properties", "Get", on_reply, m,
                                             "ss", m->service->interface, "MaxRequests");
        if (r < 0)
                failed(m, strerror(-r));
}

void max_requests_init(MaxRequests *m, sd_event *event, const Service *service, GatewayBus *bus,
                       HttpListener *listener)
{
        *m = (MaxRequests){ .event = event, .service = service, .bus = bus, .listener = listener };
        http_listener_set_max_connections_per_uid(listener, MAX_REQUESTS_DEFAULT);
        http_listener_set_accept_hook(listener, on_accept, m);
}

void max_requests_done(MaxRequests *m)
{
        m->slot = sd_bus_slot_unref(m->slot);
}
