/* SPDX-License-Identifier: MIT */
/* A small bus service for the polkit tests: it answers whether polkit lets a subject do an action,
 * using the same services/common code as the daemons (asynchronous checks, re-dispatch, delegated
 * sockets, idle exit).
 *
 *   polkit-probe [--idle-exit-ms=N]
 *
 * Owns org.aziot.test.PolkitProbe1 on the system bus (DBUS_SYSTEM_BUS_ADDRESS) and serves
 * /org/aziot/test/PolkitProbe1:
 *   Check(s action) -> (b)                     authorizes the bus caller
 *   CheckDelegated(h socket, s action) -> (b)  authorizes the process on the other end of socket
 *   CheckDetails(s action, a{ss} details) -> (b)  the caller, with polkit details
 *   CheckAll(as actions) -> (b)                the caller, for each action in turn (one method
 *                                              call that needs several answers)
 * Each replies true, or fails with org.aziot.test.PolkitProbe1.Error.NotAuthorized. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-util.h"
#include "log.h"
#include "macro.h"
#include "peercred.h"
#include "polkit.h"

#define PROBE_NAME "org.aziot.test.PolkitProbe1"
#define PROBE_PATH "/org/aziot/test/PolkitProbe1"
#define PROBE_INTERFACE "org.aziot.test.PolkitProbe1"
#define PROBE_ERROR_NOT_AUTHORIZED "org.aziot.test.PolkitProbe1.Error.NotAuthorized"

typedef struct Context {
        sd_event *event;
        sd_bus *bus;
        PolkitRegistry *polkit;
} Context;

static void context_done(Context *c)
{
        /* Queries hold method calls, which hold the bus: free them first. */
        c->polkit = polkit_registry_free(c->polkit);
        c->bus = sd_bus_flush_close_unref(c->bus);
        c->event = sd_event_unref(c->event);
}

static bool action_is_valid(const char *action)
{
        if (isempty(action) || strlen(action) > 255)
                return false;
        for (const char *p = action; *p; p++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-", *p))
                        return false;
        return true;
}

/* Returns 1 when authorized, 0 when the method must wait for polkitd (its handler returns 1 then
 * and runs again later), or a negative errno with error set for a denial. */
static int authorize(sd_bus_message *m, Context *c, const char *action, const char *const *details,
                     const PeerCred *process, sd_bus_error *error)
{
        int r;

        r = polkit_check_async(m, action, details, process, &c->polkit);
        if (r == -EACCES)
                return sd_bus_error_setf(error, PROBE_ERROR_NOT_AUTHORIZED,
                                         "Not authorized for %s.", action);
        return r;
}

/* The common tail of the methods that check one action: authorize, then reply. */
static int authorize_and_reply(sd_bus_message *m, Context *c, const char *action,
                               const char *const *details, const PeerCred *process,
                               sd_bus_error *error)
{
        int r;

        r = authorize(m, c, action, details, process, error);
        if (r == 0)
                /* Not decided yet: the method runs again when polkitd answers. */
                return 1;
        if (r < 0)
                return r;

        return sd_bus_reply_method_return(m, "b", true);
}

static int method_check(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Context *c = userdata;
        const char *action;
        int r;

        r = sd_bus_message_read(m, "s", &action);
        if (r < 0)
                return r;
        if (!action_is_valid(action))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid action id.");

        return authorize_and_reply(m, c, action, /* details= */ NULL, /* process= */ NULL, error);
}

static int method_check_delegated(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Context *c = userdata;
        const char *action;
        PeerCred peer;
        int r;

        r = bus_message_read_peercred(m, &peer, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "s", &action);
        if (r < 0)
                return r;
        if (!action_is_valid(action))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid action id.");

        log_debug("CheckDelegated: peer pid %d uid %u start time %" PRIu64 ".", (int)peer.pid,
                  (unsigned)peer.uid, peer.start_time);
        return authorize_and_reply(m, c, action, /* details= */ NULL, &peer, error);
}

/* Reads an a{ss} into a NULL-terminated key, value, key, value ... list. */
static int read_details(sd_bus_message *m, char ***ret)
{
        _cleanup_strv_free_ char **details = NULL;
        size_t n = 0;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{ss}");
        if (r < 0)
                return r;
        for (;;) {
                const char *key, *value;
                _cleanup_free_ char *k = NULL, *v = NULL;
                char **grown;

                r = sd_bus_message_read(m, "{ss}", &key, &value);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                k = strdup(key);
                v = strdup(value);
                if (!k || !v)
                        return -ENOMEM;
                grown = realloc(details, (n + 3) * sizeof(char *));
                if (!grown)
                        return -ENOMEM;
                details = grown;
                details[n] = TAKE_PTR(k);
                details[n + 1] = TAKE_PTR(v);
                details[n + 2] = NULL;
                n += 2;
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(details);
        return 0;
}

static int method_check_details(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Context *c = userdata;
        _cleanup_strv_free_ char **details = NULL;
        const char *action;
        int r;

        r = sd_bus_message_read(m, "s", &action);
        if (r < 0)
                return r;
        r = read_details(m, &details);
        if (r < 0)
                return r;
        if (!action_is_valid(action))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid action id.");

        return authorize_and_reply(m, c, action, (const char *const *)details,
                                   /* process= */ NULL, error);
}

static int method_check_all(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Context *c = userdata;
        _cleanup_strv_free_ char **actions = NULL;
        int r;

        r = sd_bus_message_read_strv(m, &actions);
        if (r < 0)
                return r;
        if (!actions || !actions[0])
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "No action given.");
        for (char **a = actions; *a; a++)
                if (!action_is_valid(*a))
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid action id.");

        /* Every run asks again from the first action: the answers already in are returned at
         * once, the first missing one is asked for. */
        for (char **a = actions; *a; a++) {
                r = authorize(m, c, *a, /* details= */ NULL, /* process= */ NULL, error);
                if (r == 0)
                        return 1;
                if (r < 0)
                        return r;
        }

        return sd_bus_reply_method_return(m, "b", true);
}

static const sd_bus_vtable probe_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD_WITH_ARGS("Check", SD_BUS_ARGS("s", action), SD_BUS_RESULT("b", authorized),
                                method_check, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CheckDelegated", SD_BUS_ARGS("h", socket, "s", action),
                                SD_BUS_RESULT("b", authorized), method_check_delegated,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CheckDetails", SD_BUS_ARGS("s", action, "a{ss}", details),
                                SD_BUS_RESULT("b", authorized), method_check_details,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CheckAll", SD_BUS_ARGS("as", actions),
                                SD_BUS_RESULT("b", authorized), method_check_all,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static bool probe_busy(void *userdata)
{
        Context *c = userdata;

        return polkit_registry_busy(c->polkit);
}

static int parse_argv(int argc, char *argv[], uint64_t *ret_idle_usec)
{
        uint64_t idle_usec = 0;

        for (int i = 1; i < argc; i++) {
                const char *v = startswith(argv[i], "--idle-exit-ms=");
                char *end;
                unsigned long long ms;

                if (!v)
                        return log_error_errno(EINVAL, "Unknown argument: %s", argv[i]);
                errno = 0;
                ms = strtoull(v, &end, 10);
                if (errno != 0 || end == v || *end || ms > UINT64_MAX / 1000)
                        return log_error_errno(EINVAL, "Invalid --idle-exit-ms: %s", v);
                idle_usec = ms * 1000;
        }
        *ret_idle_usec = idle_usec;
        return 0;
}

static int run(int argc, char *argv[])
{
        _cleanup_(context_done) Context c = {};
        uint64_t idle_usec = 0;
        int r;

        log_setup("polkit-probe");
        r = parse_argv(argc, argv, &idle_usec);
        if (r < 0)
                return r;

        r = sd_event_default(&c.event);
        if (r < 0)
                return log_error_errno(r, "Failed to get the event loop: %m");
        r = event_add_exit_signals(c.event);
        if (r < 0)
                return log_error_errno(r, "Failed to handle SIGTERM/SIGINT: %m");

        r = bus_open_system_or_address(/* address= */ NULL, &c.bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");
        r = sd_bus_attach_event(c.bus, c.event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");
        r = sd_bus_add_object_vtable(c.bus, NULL, PROBE_PATH, PROBE_INTERFACE, probe_vtable, &c);
        if (r < 0)
                return log_error_errno(r, "Failed to add the object: %m");

        r = bus_request_name_and_run_until_idle(c.event, c.bus, PROBE_NAME, idle_usec, probe_busy,
                                                &c);
        if (r < 0)
                return r;
        log_info("Exiting.");
        return r;
}

int main(int argc, char *argv[])
{
        int r = run(argc, argv);

        return r < 0 ? EXIT_FAILURE : r;
}
