/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <signal.h>
#include <time.h>

#include "bus-util.h"
#include "log.h"
#include "macro.h"

/* After releasing the name on idle: how long to wait for queued work before exiting anyway. */
#define DRAIN_TIMEOUT_USEC (5ULL * 1000000ULL)

int bus_open_system_or_address(const char *address, sd_bus **ret)
{
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;
        int r;

        if (!address) {
                const char *type = secure_getenv("DBUS_STARTER_BUS_TYPE");

                if (!type || streq(type, "system"))
                        address = secure_getenv("DBUS_STARTER_ADDRESS");
        }
        if (isempty(address))
                return sd_bus_open_system(ret);

        r = sd_bus_new(&bus);
        if (r < 0)
                return r;
        r = sd_bus_set_address(bus, address);
        if (r < 0)
                return r;
        r = sd_bus_set_bus_client(bus, true);
        if (r < 0)
                return r;
        r = sd_bus_set_description(bus, "system");
        if (r < 0)
                return r;
        r = sd_bus_start(bus);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(bus);
        return 0;
}

int bus_message_read_peercred(sd_bus_message *m, PeerCred *ret, sd_bus_error *error)
{
        int fd, r;

        r = sd_bus_message_read(m, "h", &fd);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENXIO;

        r = peercred_from_fd(fd, ret);
        if (r < 0) {
                errno = -r;
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "The passed file descriptor is not a connected Unix "
                                         "socket with a live peer: %m");
        }
        return 0;
}

int event_add_exit_signals(sd_event *e)
{
        static const int signals[] = {SIGTERM, SIGINT};
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        for (size_t i = 0; i < ELEMENTSOF(signals); i++)
                sigaddset(&mask, signals[i]);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return negative_errno();

        for (size_t i = 0; i < ELEMENTSOF(signals); i++) {
                /* No handler: sd-event ends the loop. */
                r = sd_event_add_signal(e, NULL, signals[i], NULL, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

typedef struct IdleContext {
        sd_event_source *timer;
        uint64_t idle_usec;
        bus_busy_func_t busy;
        void *userdata;
        bool idle;
} IdleContext;

static void idle_context_done(IdleContext *c)
{
        c->timer = sd_event_source_disable_unref(c->timer);
}

static int idle_rearm(IdleContext *c)
{
        int r;

        r = sd_event_source_set_time_relative(c->timer, c->idle_usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
}

/* Bus filter: every incoming method call, also one queued again after a polkit check, restarts the
 * idle period. */
static int on_incoming_message(sd_bus_message *m, void *userdata, sd_bus_error *ret_error)
{
        IdleContext *c = userdata;
        int r;

        if (sd_bus_message_is_method_call(m, NULL, NULL) > 0) {
                r = idle_rearm(c);
                if (r < 0)
                        log_warning_errno(r, "Failed to restart the idle timer, ignoring: %m");
        }
        return 0;
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        IdleContext *c = userdata;

        if (c->busy && c->busy(c->userdata)) {
                log_debug("Idle timeout, but work is still in flight: staying.");
                return idle_rearm(c);
        }
        c->idle = true;
        return 0;
}

/* The name is gone: answer what the bus had already routed to us, then let the caller exit. */
static int drain_after_release(sd_event *e, sd_bus *bus, const IdleContext *c)
{
        int r;

        for (;;) {
                uint64_t queued = 0;

                r = sd_bus_get_n_queued_read(bus, &queued);
                if (r < 0)
                        return r;
                if (queued == 0 && !(c->busy && c->busy(c->userdata)))
                        break;

                r = sd_event_run(e, DRAIN_TIMEOUT_USEC);
                if (r < 0)
                        return r;
                if (r == 0) {
                        log_warning("Work still in flight after the idle exit began, exiting "
                                    "anyway.");
                        break;
                }
                if (sd_event_get_state(e) == SD_EVENT_FINISHED)
                        break;
        }
        return sd_bus_flush(bus);
}

int bus_request_name_and_run_until_idle(sd_event *e, sd_bus *bus, const char *name,
                                        uint64_t idle_usec, bus_busy_func_t busy, void *userdata)
{
        _cleanup_(idle_context_done) IdleContext c = {
                .idle_usec = idle_usec,
                .busy = busy,
                .userdata = userdata,
        };
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *filter = NULL;
        int r, code = 0;

        if (!e || !bus || isempty(name))
                return -EINVAL;

        if (!sd_bus_get_event(bus)) {
                r = sd_bus_attach_event(bus, e, SD_EVENT_PRIORITY_NORMAL);
                if (r < 0)
                        return log_error_errno(r, "Failed to attach the bus to the event loop: %m");
        }
        /* Losing the bus ends the loop: there is nothing left to serve. */
        r = sd_bus_set_exit_on_disconnect(bus, true);
        if (r < 0)
                return log_error_errno(r, "Failed to set exit on disconnect: %m");

        if (idle_usec > 0 && idle_usec != UINT64_MAX) {
                r = sd_event_add_time_relative(e, &c.timer, CLOCK_MONOTONIC, idle_usec,
                                               /* accuracy= */ 0, on_idle_timer, &c);
                if (r < 0)
                        return log_error_errno(r, "Failed to add the idle timer: %m");
                (void)sd_event_source_set_description(c.timer, "idle-exit");
                r = sd_bus_add_filter(bus, &filter, on_incoming_message, &c);
                if (r < 0)
                        return log_error_errno(r, "Failed to add the idle filter: %m");
        }

        r = sd_bus_request_name(bus, name, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to acquire bus name %s: %m", name);
        log_debug("Acquired bus name %s.", name);

        while (!c.idle) {
                r = sd_event_get_state(e);
                if (r < 0)
                        return log_error_errno(r, "Failed to get the event loop state: %m");
                if (r == SD_EVENT_FINISHED) {
                        r = sd_event_get_exit_code(e, &code);
                        if (r < 0)
                                return r;
                        return code;
                }

                r = sd_event_run(e, UINT64_MAX);
                if (r < 0)
                        return log_error_errno(r, "Event loop failed: %m");
        }

        log_debug("Idle for %" PRIu64 " ms, releasing %s and exiting.", idle_usec / 1000, name);
        r = sd_bus_release_name(bus, name);
        if (r < 0)
                log_warning_errno(r, "Failed to release bus name %s, ignoring: %m", name);

        r = drain_after_release(e, bus, &c);
        if (r < 0)
                log_warning_errno(r, "Failed to finish queued work, ignoring: %m");
        return 0;
}
