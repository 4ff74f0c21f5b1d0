/* SPDX-License-Identifier: MIT */
#include <sys/socket.h>

#include "keys-private.h"
#include "log.h"
#include "macro.h"

struct PrivateConnection {
        Manager *manager;
        sd_bus *bus;
        sd_bus_slot *object_slot, *disconnect_slot;
        sd_event_source *drain; /* until the first call after authentication: see on_drain() */
        PeerCred opener;
        PrivateConnection *prev, *next;
};

static void private_connection_free(PrivateConnection *c)
{
        if (!c)
                return;
        if (c->prev)
                c->prev->next = c->next;
        else if (c->manager && c->manager->private_connections == c)
                c->manager->private_connections = c->next;
        if (c->next)
                c->next->prev = c->prev;
        if (c->manager && c->manager->n_private_connections > 0)
                c->manager->n_private_connections--;

        sd_event_source_disable_unref(c->drain);
        sd_bus_slot_unref(c->object_slot);
        sd_bus_slot_unref(c->disconnect_slot);
        sd_bus_flush_close_unref(c->bus);
        free(c);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(PrivateConnection *, private_connection_free)

void private_connections_free(Manager *m)
{
        while (m->private_connections)
                private_connection_free(m->private_connections);
}

static int on_disconnected(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        PrivateConnection *c = userdata;

        log_debug("Private connection of process %d closed.", (int)c->opener.pid);
        private_connection_free(c);
        return 0;
}

static int opener_credentials(sd_bus_message *request, PeerCred *ret)
{
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        pid_t pid;
        uid_t uid;
        int r;

        r = sd_bus_query_sender_creds(request, SD_BUS_CREDS_PID | SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return r;
        r = sd_bus_creds_get_pid(creds, &pid);
        if (r >= 0)
                r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0)
                return r;
        *ret = (PeerCred){ .pid = pid, .uid = uid };
        return process_start_time(pid, &ret->start_time);
}

static bool private_connection_alive(Manager *m, sd_bus *bus)
{
        for (PrivateConnection *c = m->private_connections; c; c = c->next)
                if (c->bus == bus)
                        return true;
        return false;
}

/* sd-bus leaves a message that arrived in the same read as the end of the authentication ("BEGIN")
 * in its buffer, and does not look at it until more bytes arrive: a client that sends its first
 * call right behind BEGIN would wait forever. So, after each turn of the event loop and until the
 * connection runs and has been processed once, the bus is processed until it has nothing left. */
static int on_drain(sd_event_source *s, void *userdata)
{
        PrivateConnection *c = userdata;
        Manager *m = c->manager;
        _cleanup_(sd_bus_unrefp) sd_bus *bus = sd_bus_ref(c->bus);
        bool ready = sd_bus_is_ready(bus) > 0;
        int r;

        do
                r = sd_bus_process(bus, NULL);
        while (r > 0 && private_connection_alive(m, bus));
        /* Processing may have closed the connection, and freed c with it. */
        if (ready && private_connection_alive(m, bus))
                (void)sd_event_source_set_enabled(s, SD_EVENT_OFF);
        return 0;
}

/* Sets up the server end: anonymous authentication (the socket pair carries keyd's own
 * credentials, so the peer's cannot be checked there; the opener was checked on the bus instead),
 * fd passing for "client-socket", and the Keys1 object. */
static int serve(Manager *m, PrivateConnection *c, int *fd)
{
        sd_id128_t id;
        int r;

        r = sd_bus_new(&c->bus);
        if (r < 0)
                return r;
        r = sd_bus_set_fd(c->bus, *fd, *fd);
        if (r < 0)
                return r;
        *fd = -EBADF; /* the bus owns it now */
        r = sd_id128_randomize(&id);
        if (r < 0)
                return r;
        r = sd_bus_set_server(c->bus, 1, id);
        if (r >= 0)
                r = sd_bus_set_anonymous(c->bus, 1);
        if (r >= 0)
                r = sd_bus_negotiate_fds(c->bus, 1);
        if (r < 0)
                return r;
        r = sd_bus_start(c->bus);
        if (r < 0)
                return r;
        r = sd_bus_attach_event(c->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;
        r = sd_event_add_post(m->event, &c->drain, on_drain, c);
        if (r < 0)
                return r;
        r = sd_bus_match_signal(c->bus, &c->disconnect_slot, NULL, "/org/freedesktop/DBus/Local",
                                "org.freedesktop.DBus.Local", "Disconnected", on_disconnected, c);
        if (r < 0)
                return r;
        return keys_dbus_add_object(m, c->bus, &c->object_slot);
}

int private_connection_open(Manager *m, sd_bus_message *request, int *ret_fd)
{
        _cleanup_(private_connection_freep) PrivateConnection *c = NULL;
        _cleanup_close_ int ours = -EBADF, theirs = -EBADF;
        int pair[2], r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        r = opener_credentials(request, &c->opener);
        if (r < 0)
                return r;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) < 0)
                return negative_errno();
        ours = pair[0];
        theirs = pair[1];
        r = serve(m, c, &ours);
        if (r < 0)
                return r;

        c->manager = m;
        c->next = m->private_connections;
        if (c->next)
                c->next->prev = c;
        m->private_connections = c;
        m->n_private_connections++;
        log_debug("Opened a private connection for process %d (uid %u).", (int)c->opener.pid,
                  (unsigned)c->opener.uid);
        TAKE_PTR(c);
        *ret_fd = TAKE_FD(theirs);
        return 0;
}

PrivateConnection *private_connection_of(Manager *m, sd_bus_message *msg)
{
        sd_bus *bus = sd_bus_message_get_bus(msg);

        if (bus == m->bus)
                return NULL;
        for (PrivateConnection *c = m->private_connections; c; c = c->next)
                if (c->bus == bus)
                        return c;
        return NULL;
}

const PeerCred *private_connection_opener(const PrivateConnection *c)
{
        return &c->opener;
}
