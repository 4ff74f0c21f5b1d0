/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "log.h"
#include "macro.h"
#include "polkit.h"

#define POLKIT_SERVICE "org.freedesktop.PolicyKit1"
#define POLKIT_AUTHORITY_PATH "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_AUTHORITY_INTERFACE "org.freedesktop.PolicyKit1.Authority"

/* A non-interactive check takes polkitd milliseconds. The bound keeps a wedged polkitd from holding
 * our callers for ever: it is above polkitd's own limit for a rule script (15 s) and below the
 * default method call timeout of D-Bus clients (25 s), so a caller gets a denial, not a timeout. */
#define POLKIT_CHECK_TIMEOUT_USEC (20ULL * 1000000ULL)

typedef enum QueryState {
        QUERY_PENDING,  /* CheckAuthorization is in flight */
        QUERY_ANSWERED, /* the answer is in, the method call was queued again */
        QUERY_CONSUMED, /* the re-run handler has taken the answer */
} QueryState;

typedef struct PolkitQuery PolkitQuery;

struct PolkitQuery {
        PolkitRegistry *registry;
        PolkitQuery *prev, *next;

        sd_bus_message *message; /* the method call being authorized (one reference) */
        sd_bus_slot *slot;       /* the CheckAuthorization call while it is in flight */

        char *action;
        char **details;
        char *sender; /* subject "system-bus-name", when process is unset */
        bool is_process;
        PeerCred process; /* subject "unix-process" */

        QueryState state;
        bool seen_by_gc;
        int result; /* 1 or -EACCES, once answered */
};

struct PolkitRegistry {
        PolkitQuery *queries;
        /* Where polkitd is asked: the system bus. Messages may come in on other connections (a
         * private connection of the gateway) and are dispatched again on their own. */
        sd_bus *bus;
        /* Frees queries whose method call is done, once the loop is idle. NULL when the bus has no
         * sd-event loop: then finished queries are collected at the next check instead. */
        sd_event_source *gc_source;
};

static size_t strv_length(const char *const *l)
{
        size_t n = 0;

        for (; l && l[n]; n++)
                ;
        return n;
}

static int strv_copy(const char *const *l, char ***ret)
{
        size_t n = strv_length(l);
        _cleanup_strv_free_ char **copy = NULL;

        copy = calloc(n + 1, sizeof(char *));
        if (!copy)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                copy[i] = strdup(l[i]);
                if (!copy[i])
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(copy);
        return 0;
}

static bool strv_equal(const char *const *a, const char *const *b)
{
        size_t n = strv_length(a);

        if (n != strv_length(b))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!streq(a[i], b[i]))
                        return false;
        return true;
}

static void query_free(PolkitQuery *q)
{
        if (!q)
                return;

        if (q->registry) {
                if (q->prev)
                        q->prev->next = q->next;
                else
                        q->registry->queries = q->next;
                if (q->next)
                        q->next->prev = q->prev;
        }

        /* Dropping the slot of a call still in flight cancels it: its reply is never delivered. */
        sd_bus_slot_unref(q->slot);
        sd_bus_message_unref(q->message);
        free(q->action);
        strv_free(q->details);
        free(q->sender);
        free(q);
}

static void query_freep(PolkitQuery **q)
{
        query_free(*q);
}

/* Names the subject in log messages. */
static const char *query_subject(const PolkitQuery *q, char *buf, size_t size)
{
        if (q->is_process)
                snprintf(buf, size, "process %d (uid %u)", (int)q->process.pid,
                         (unsigned)q->process.uid);
        else
                snprintf(buf, size, "bus client %s", q->sender);
        return buf;
}

static bool query_matches(const PolkitQuery *q, sd_bus_message *m, const char *action,
                          const char *const *details, const PeerCred *process, const char *sender)
{
        if (q->message != m || !streq(q->action, action))
                return false;
        if (!strv_equal((const char *const *)q->details, details))
                return false;
        if (q->is_process != !!process)
                return false;
        if (process)
                return q->process.pid == process->pid && q->process.uid == process->uid &&
                       q->process.start_time == process->start_time;
        return streq_ptr(q->sender, sender);
}

/* True while some query for m still waits for polkitd or for its handler to run again. */
static bool message_in_flight(const PolkitRegistry *registry, sd_bus_message *m)
{
        for (const PolkitQuery *q = registry->queries; q; q = q->next)
                if (q->message == m && q->state != QUERY_CONSUMED)
                        return true;
        return false;
}

/* Frees the queries of method calls that are done. A consumed answer is kept while another query
 * for the same call is in flight: a handler that checks two actions runs three times and must find
 * the first answer again on the third run. An answer its handler never asked for again (the re-run
 * took another path) is dropped by the second idle pass after it arrived; the re-run itself always
 * comes before the first one, since the bus dispatches at a higher priority than idle sources. */
static bool registry_collect(PolkitRegistry *registry, sd_bus_message *current, bool idle_pass)
{
        PolkitQuery *next;
        bool again = false;

        for (PolkitQuery *q = registry->queries; q; q = next) {
                next = q->next;

                if (q->message == current)
                        continue;
                if (q->state == QUERY_CONSUMED && !message_in_flight(registry, q->message)) {
                        query_free(q);
                        continue;
                }
                if (idle_pass && q->state == QUERY_ANSWERED) {
                        if (q->seen_by_gc) {
                                log_debug("Dropping the unused polkit answer for %s.", q->action);
                                q->state = QUERY_CONSUMED;
                        } else {
                                q->seen_by_gc = true;
                        }
                        again = true;
                }
        }
        return again;
}

static void registry_schedule_gc(PolkitRegistry *registry)
{
        int r;

        if (!registry->gc_source)
                return;
        r = sd_event_source_set_enabled(registry->gc_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_debug_errno(r, "Failed to schedule polkit query clean-up, ignoring: %m");
}

static int on_gc(sd_event_source *s, void *userdata)
{
        PolkitRegistry *registry = userdata;

        if (registry_collect(registry, /* current= */ NULL, /* idle_pass= */ true))
                registry_schedule_gc(registry);
        return 0;
}

int polkit_registry_new(sd_bus *bus, PolkitRegistry **ret)
{
        _cleanup_(polkit_registry_freep) PolkitRegistry *registry = NULL;
        sd_event *event;
        int r;

        registry = calloc(1, sizeof(PolkitRegistry));
        if (!registry)
                return -ENOMEM;
        registry->bus = sd_bus_ref(bus);

        event = sd_bus_get_event(bus);
        if (event) {
                r = sd_event_add_defer(event, &registry->gc_source, on_gc, registry);
                if (r < 0)
                        return r;
                r = sd_event_source_set_priority(registry->gc_source, SD_EVENT_PRIORITY_IDLE);
                if (r < 0)
                        return r;
                r = sd_event_source_set_enabled(registry->gc_source, SD_EVENT_OFF);
                if (r < 0)
                        return r;
                (void)sd_event_source_set_description(registry->gc_source, "polkit-gc");
        }

        *ret = TAKE_PTR(registry);
        return 0;
}

/* Turns polkitd's reply into 1 (authorized) or -EACCES, saying why at the right level. */
static int query_parse_reply(const PolkitQuery *q, sd_bus_message *reply)
{
        const sd_bus_error *e;
        char subject[128];
        int authorized, challenge, r;

        query_subject(q, subject, sizeof(subject));

        e = sd_bus_message_get_error(reply);
        if (e) {
                if (sd_bus_error_has_names(e, SD_BUS_ERROR_NAME_HAS_NO_OWNER,
                                           SD_BUS_ERROR_SERVICE_UNKNOWN))
                        log_warning("polkit is not running: denying %s to %s (%s).", q->action,
                                    subject, e->message ?: e->name);
                else
                        log_warning("polkit check of %s for %s failed, denying: %s: %s", q->action,
                                    subject, e->name, strempty(e->message));
                return -EACCES;
        }

        if (!sd_bus_message_has_signature(reply, "(bba{ss})")) {
                log_warning("Malformed reply from polkit (signature '%s'): denying %s to %s.",
                            strempty(sd_bus_message_get_signature(reply, true)), q->action,
                            subject);
                return -EACCES;
        }
        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r < 0) {
                log_warning_errno(r, "Malformed reply from polkit: denying %s to %s: %m", q->action,
                                  subject);
                return -EACCES;
        }

        if (authorized && !challenge) {
                log_debug("polkit authorized %s for %s.", q->action, subject);
                return 1;
        }
        if (challenge)
                log_debug("polkit wants %s to authenticate for %s, which a service cannot ask "
                          "for: denied.",
                          subject, q->action);
        else
                log_debug("polkit denied %s to %s.", q->action, subject);
        return -EACCES;
}

static int on_check_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        PolkitQuery *q = userdata;
        sd_bus *bus = sd_bus_message_get_bus(q->message);
        int r;

        /* The call is over: the slot only kept it cancellable. */
        q->slot = sd_bus_slot_unref(q->slot);

        q->result = query_parse_reply(q, reply);
        q->state = QUERY_ANSWERED;
        registry_schedule_gc(q->registry);

        /* Hand the method call back to the bus: its handler runs again and finds the answer. */
        r = sd_bus_enqueue_for_read(bus, q->message);
        if (r < 0) {
                log_error_errno(r, "Failed to queue the method call %s again: %m",
                                strempty(sd_bus_message_get_member(q->message)));
                (void)sd_bus_reply_method_errnof(q->message, r,
                                                 "Failed to resume after the polkit check: %m");
                query_free(q);
        }
        return 0;
}

static int append_subject(sd_bus_message *call, const PolkitQuery *q)
{
        if (q->is_process)
                /* polkitd 122 wants the uid as int32 and ignores a uint32 one. */
                return sd_bus_message_append(call, "(sa{sv})", "unix-process", 3, "pid", "u",
                                             (uint32_t)q->process.pid, "start-time", "t",
                                             (uint64_t)q->process.start_time, "uid", "i",
                                             (int32_t)q->process.uid);

        return sd_bus_message_append(call, "(sa{sv})", "system-bus-name", 1, "name", "s",
                                     q->sender);
}

static int append_details(sd_bus_message *call, char *const *details)
{
        int r;

        r = sd_bus_message_open_container(call, 'a', "{ss}");
        if (r < 0)
                return r;
        for (char *const *d = details; d && d[0]; d += 2) {
                r = sd_bus_message_append(call, "{ss}", d[0], d[1]);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(call);
}

static int query_send(PolkitQuery *q, sd_bus *bus)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &call, POLKIT_SERVICE, POLKIT_AUTHORITY_PATH,
                                           POLKIT_AUTHORITY_INTERFACE, "CheckAuthorization");
        if (r < 0)
                return r;
        r = append_subject(call, q);
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "s", q->action);
        if (r < 0)
                return r;
        r = append_details(call, q->details);
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "us", /* flags= */ UINT32_C(0), /* cancellation_id= */ "");
        if (r < 0)
                return r;

        return sd_bus_call_async(bus, &q->slot, call, on_check_reply, q, POLKIT_CHECK_TIMEOUT_USEC);
}

static int query_start(PolkitRegistry *registry, sd_bus_message *m, const char *action,
                       const char *const *details, const PeerCred *process, const char *sender)
{
        _cleanup_(query_freep) PolkitQuery *q = NULL;
        char subject[128];
        int r;

        q = calloc(1, sizeof(PolkitQuery));
        if (!q)
                return -ENOMEM;
        q->action = strdup(action);
        if (!q->action)
                return -ENOMEM;
        r = strv_copy(details, &q->details);
        if (r < 0)
                return r;
        if (process) {
                q->is_process = true;
                q->process = *process;
        } else {
                q->sender = strdup(sender);
                if (!q->sender)
                        return -ENOMEM;
        }
        q->message = sd_bus_message_ref(m);

        r = query_send(q, registry->bus);
        if (r < 0)
                return log_error_errno(r, "Failed to ask polkit about %s for %s: %m", action,
                                       query_subject(q, subject, sizeof(subject)));

        log_debug("Asked polkit about %s for %s.", action,
                  query_subject(q, subject, sizeof(subject)));

        q->registry = registry;
        q->next = registry->queries;
        if (q->next)
                q->next->prev = q;
        registry->queries = TAKE_PTR(q);
        return 0;
}

int polkit_check_async(sd_bus_message *m, const char *action, const char *const *details,
                       const PeerCred *process, PolkitRegistry **registry)
{
        const char *sender = NULL;
        sd_bus *bus;
        int r;

        if (!m || isempty(action) || !registry)
                return -EINVAL;
        if (strv_length(details) % 2 != 0)
                return -EINVAL;

        if (process) {
                if (process->pid <= 0)
                        return -EINVAL;
        } else {
                sender = sd_bus_message_get_sender(m);
                if (!sender)
                        /* A direct connection has no bus name polkitd could look up. */
                        return log_warning_errno(EACCES,
                                                 "Cannot ask polkit about %s for a caller "
                                                 "without a bus name: denied.",
                                                 action);
        }

        bus = sd_bus_message_get_bus(m);
        if (!bus)
                return -ENOTCONN;

        if (!*registry) {
                r = polkit_registry_new(bus, registry);
                if (r < 0)
                        return r;
        }

        if (!(*registry)->gc_source)
                (void)registry_collect(*registry, m, /* idle_pass= */ false);

        for (PolkitQuery *q = (*registry)->queries; q; q = q->next) {
                if (!query_matches(q, m, action, details, process, sender))
                        continue;
                if (q->state == QUERY_PENDING)
                        /* Dispatched again before polkitd answered: keep waiting. */
                        return 0;
                q->state = QUERY_CONSUMED;
                registry_schedule_gc(*registry);
                return q->result;
        }

        r = query_start(*registry, m, action, details, process, sender);
        if (r < 0)
                return r;
        return 0;
}

bool polkit_registry_busy(const PolkitRegistry *registry)
{
        if (!registry)
                return false;
        for (const PolkitQuery *q = registry->queries; q; q = q->next)
                if (q->state != QUERY_CONSUMED)
                        return true;
        return false;
}

PolkitRegistry *polkit_registry_free(PolkitRegistry *registry)
{
        if (!registry)
                return NULL;

        while (registry->queries)
                query_free(registry->queries);
        sd_event_source_disable_unref(registry->gc_source);
        sd_bus_unref(registry->bus);
        free(registry);
        return NULL;
}
