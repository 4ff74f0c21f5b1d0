/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

#include "bus-util.h"
#include "bus.h"
#include "log.h"
#include "macro.h"

#define USEC_PER_SEC 1000000ULL
/* One link per service the gateway calls. */
#define LINKS_MAX 4
/* A private connection unused this long (up to half as much again: the timer is not moved on
 * every call) is closed, so that the service may exit when idle. */
#define PRIVATE_IDLE_USEC (10 * USEC_PER_SEC)
/* After OpenPrivateConnection failed for a passing reason, ask again no sooner than this. */
#define PRIVATE_RETRY_USEC (1 * USEC_PER_SEC)

typedef enum LinkState {
        LINK_NONE,        /* no private connection; one may be asked for */
        LINK_OPENING,     /* OpenPrivateConnection is in flight */
        LINK_OPEN,        /* calls take the private connection */
        LINK_UNSUPPORTED, /* the service does not offer one: always the bus */
} LinkState;

struct GatewayLink {
        GatewayBus *owner;
        const char *destination, *path, *interface; /* static strings of the service table */
        LinkState state;
        sd_bus *bus;
        sd_bus_slot *open_slot;
        sd_event_source *idle;
        uint64_t last_used, retry_after;
        unsigned in_flight;
};

struct GatewayBus {
        sd_event *event;
        sd_bus *bus;
        GatewayLink links[LINKS_MAX];
        size_t n_links;
};

int gateway_bus_new(sd_event *event, GatewayBus **ret)
{
        GatewayBus *b = calloc(1, sizeof(GatewayBus));

        if (!b)
                return -ENOMEM;
        b->event = sd_event_ref(event);
        *ret = b;
        return 0;
}

static void close_connection(sd_bus *bus)
{
        if (!bus)
                return;
        sd_bus_detach_event(bus);
        sd_bus_flush_close_unref(bus);
}

static void link_close(GatewayLink *l)
{
        l->open_slot = sd_bus_slot_unref(l->open_slot);
        close_connection(l->bus);
        l->bus = NULL;
        (void)sd_event_source_set_enabled(l->idle, SD_EVENT_OFF);
        if (l->state != LINK_UNSUPPORTED)
                l->state = LINK_NONE;
}

GatewayBus *gateway_bus_free(GatewayBus *b)
{
        if (!b)
                return NULL;
        for (size_t i = 0; i < b->n_links; i++) {
                link_close(&b->links[i]);
                sd_event_source_disable_unref(b->links[i].idle);
        }
        close_connection(b->bus);
        sd_event_unref(b->event);
        free(b);
        return NULL;
}

static int open_bus(GatewayBus *b)
{
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;
        int r;

        /* The handshake goes on asynchronously; calls sent meanwhile are queued by sd-bus. File
         * descriptor passing is negotiated by default (the client socket goes with each call). */
        r = bus_open_system_or_address(NULL, &bus);
        if (r < 0)
                return r;
        r = sd_bus_attach_event(bus, b->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;
        b->bus = TAKE_PTR(bus);
        return 0;
}

int gateway_bus_get(GatewayBus *b, sd_bus **ret)
{
        int r;

        if (b->bus && sd_bus_is_open(b->bus) <= 0) {
                log_info("The bus connection was lost; reconnecting.");
                sd_bus_detach_event(b->bus);
                b->bus = sd_bus_unref(b->bus);
        }
        if (!b->bus) {
                r = open_bus(b);
                if (r < 0)
                        return r;
        }
        *ret = b->bus;
        return 0;
}

static uint64_t now_usec(GatewayBus *b)
{
        uint64_t now = 0;

        (void)sd_event_now(b->event, CLOCK_MONOTONIC, &now);
        return now;
}

/* --- Private connections --- */

static int on_idle(sd_event_source *source, uint64_t usec, void *userdata)
{
        GatewayLink *l = userdata;
        uint64_t due = l->last_used + PRIVATE_IDLE_USEC;

        if (l->in_flight == 0 && usec >= due) {
                log_debug("Closing the idle private connection to %s.", l->destination);
                link_close(l);
                return 0;
        }
        (void)sd_event_source_set_time(source, MAX(due, usec + PRIVATE_IDLE_USEC / 2));
        return sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
}

static int arm_idle(GatewayLink *l)
{
        int r;

        if (!l->idle) {
                r = sd_event_add_time(l->owner->event, &l->idle, CLOCK_MONOTONIC, UINT64_MAX, 0,
                                      on_idle, l);
                if (r < 0)
                        return r;
        }
        r = sd_event_source_set_time(l->idle, l->last_used + PRIVATE_IDLE_USEC);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(l->idle, SD_EVENT_ONESHOT);
}

/* Becomes the client end of the peer-to-peer connection whose socket the service sent. */
static int link_adopt(GatewayLink *l, int passed_fd)
{
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r;

        fd = fcntl(passed_fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return negative_errno();
        r = sd_bus_new(&bus);
        if (r < 0)
                return r;
        r = sd_bus_set_fd(bus, fd, fd);
        if (r < 0)
                return r;
        TAKE_FD(fd);
        /* The socket pair carries the service's own credentials: the service authenticated us
         * on the bus when it handed the socket out. */
        r = sd_bus_set_anonymous(bus, true);
        if (r >= 0)
                r = sd_bus_negotiate_fds(bus, true);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r >= 0)
                r = sd_bus_attach_event(bus, l->owner->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;
        l->bus = TAKE_PTR(bus);
        l->last_used = now_usec(l->owner);
        l->state = LINK_OPEN;
        return arm_idle(l);
}

static int on_open_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        GatewayLink *l = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        int fd, r;

        l->open_slot = sd_bus_slot_unref(l->open_slot);
        if (e) {
                if (sd_bus_error_has_names(e, SD_BUS_ERROR_UNKNOWN_METHOD,
                                           SD_BUS_ERROR_UNKNOWN_OBJECT,
                                           SD_BUS_ERROR_UNKNOWN_INTERFACE,
                                           SD_BUS_ERROR_ACCESS_DENIED)) {
                        log_info("%s offers no private connection (%s); calling it over the bus.",
                                 l->destination, e->name);
                        l->state = LINK_UNSUPPORTED;
                        return 0;
                }
                log_debug("No private connection to %s for now: %s: %s", l->destination, e->name,
                          strempty(e->message));
                l->state = LINK_NONE;
                l->retry_after = now_usec(l->owner) + PRIVATE_RETRY_USEC;
                return 0;
        }

        r = sd_bus_message_read(reply, "h", &fd);
        if (r >= 0)
                r = link_adopt(l, fd);
        if (r < 0) {
                log_warning_errno(r, "Cannot use the private connection to %s: %m",
                                  l->destination);
                link_close(l);
                l->retry_after = now_usec(l->owner) + PRIVATE_RETRY_USEC;
                return 0;
        }
        log_debug("Calling %s over a private connection.", l->destination);
        return 0;
}

static int link_request(GatewayLink *l, sd_bus *bus)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, l->destination, l->path, l->interface,
                                           "OpenPrivateConnection");
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r >= 0)
                r = sd_bus_call_async(bus, &l->open_slot, m, on_open_reply, l, /* usec= */ 0);
        if (r < 0)
                return r;
        l->state = LINK_OPENING;
        return 0;
}

static GatewayLink *find_link(GatewayBus *b, const char *destination, const char *path,
                              const char *interface)
{
        GatewayLink *l;

        for (size_t i = 0; i < b->n_links; i++)
                if (streq(b->links[i].destination, destination))
                        return &b->links[i];
        if (b->n_links >= LINKS_MAX)
                return NULL;
        l = &b->links[b->n_links++];
        *l = (GatewayLink){
                .owner = b,
                .destination = destination,
                .path = path,
                .interface = interface,
        };
        return l;
}

int gateway_bus_for(GatewayBus *b, const char *destination, const char *path,
                    const char *interface, sd_bus **ret, bool *ret_private,
                    GatewayLink **ret_link)
{
        GatewayLink *l = find_link(b, destination, path, interface);
        sd_bus *bus;
        int r;

        if (l && l->state == LINK_OPEN) {
                if (sd_bus_is_open(l->bus) > 0) {
                        l->last_used = now_usec(b);
                        *ret = l->bus;
                        *ret_private = true;
                        *ret_link = l;
                        return 0;
                }
                log_debug("The private connection to %s was lost.", destination);
                link_close(l);
        }

        r = gateway_bus_get(b, &bus);
        if (r < 0)
                return r;
        if (l && l->state == LINK_NONE && now_usec(b) >= l->retry_after) {
                r = link_request(l, bus);
                if (r < 0)
                        log_debug_errno(r, "Cannot ask %s for a private connection: %m",
                                        destination);
        }
        *ret = bus;
        *ret_private = false;
        *ret_link = NULL;
        return 0;
}

void gateway_link_begin(GatewayLink *link)
{
        link->in_flight++;
}

void gateway_link_end(GatewayLink *link)
{
        if (link->in_flight > 0)
                link->in_flight--;
}
