/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "log.h"
#include "macro.h"
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

static int on_owner_changed(sd_bus_message *signal, void *userdata, sd_bus_error *ret_error);

/* Watches the service's bus name on bus, before the Get is sent on it: an owner change after the
 * answer cannot go unseen. */
static int watch_owner(MaxRequests *m, sd_bus *bus)
{
        char match[256];

        if (m->owner_slot && sd_bus_slot_get_bus(m->owner_slot) == bus)
                return 0;
        m->owner_slot = sd_bus_slot_unref(m->owner_slot);
        (void)snprintf(match, sizeof(match),
                       "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                       "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='%s'",
                       m->service->bus_name);
        return sd_bus_add_match_async(bus, &m->owner_slot, match, on_owner_changed, NULL, m);
}

/* Asks the service for MaxRequests unless the answer is known or on its way. */
static void ask(MaxRequests *m)
{
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
                r = watch_owner(m, bus);
        if (r >= 0)
                /* Over the bus, which activates the service if need be. */
                r = sd_bus_call_method_async(bus, &m->slot, m->service->bus_name,
                                             m->service->object_path,
                                             "org.freedesktop.DBus.Properties", "Get", on_reply, m,
                                             "ss", m->service->interface, "MaxRequests");
        if (r < 0)
                failed(m, strerror(-r));
}

/* The service has a new owner (it was restarted, perhaps with another configuration): it is
 * asked again at once, which starts nothing since it runs. */
static int on_owner_changed(sd_bus_message *signal, void *userdata, sd_bus_error *ret_error)
{
        MaxRequests *m = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(signal, "sss", &name, &old_owner, &new_owner) < 0 ||
            !streq(name, m->service->bus_name) || isempty(new_owner))
                return 0;
        m->known = false;
        m->retry_after = 0;
        m->slot = sd_bus_slot_unref(m->slot); /* it may be the old owner's answer */
        ask(m);
        return 0;
}

/* On every connection: a few tests, and a call only until the answer has come. */
static void on_accept(void *userdata)
{
        MaxRequests *m = userdata;

        /* The watch went with a lost bus connection: the answer may be stale. */
        if (m->known && sd_bus_is_open(sd_bus_slot_get_bus(m->owner_slot)) <= 0)
                m->known = false;
        ask(m);
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
        m->owner_slot = sd_bus_slot_unref(m->owner_slot);
}
