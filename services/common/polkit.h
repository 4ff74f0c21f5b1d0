/* SPDX-License-Identifier: MIT */
#pragma once

/* Asynchronous polkit checks from sd-bus method handlers, in the re-dispatch model:
 *
 *   r = polkit_check_async(m, "org.aziot.keys.use", details, NULL, &registry);
 *   if (r == 0)   return 1;          // asked polkitd; m is dispatched again when it answers
 *   if (r < 0)    return <error reply, -EACCES = denied>;
 *   // r > 0: authorized, go on
 *
 * The first call sends CheckAuthorization to org.freedesktop.PolicyKit1 without blocking, keeps a
 * reference to m and returns 0. When the answer arrives, m is put back into the bus's read queue
 * (sd_bus_enqueue_for_read), so the handler runs again from the top; this time the stored answer is
 * returned. Because the handler re-runs from the top, nothing before the authorization step may change
 * state.
 *
 * Subject: the sender of m ("system-bus-name", polkitd resolves it) or, when process is given, the
 * process whose socket was delegated to us ("unix-process": pid, start-time, uid as int32).
 * Any polkit error, a missing polkitd, or a challenge (no agent can answer one for a service) is a
 * denial: -EACCES. */

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "peercred.h"

typedef struct PolkitRegistry PolkitRegistry;

/* details: NULL or a NULL-terminated list of key, value, key, value, ... strings. */
int polkit_check_async(sd_bus_message *m, const char *action, const char *const *details,
                       const PeerCred *process, PolkitRegistry **registry);

/* Creates the registry up front, bound to the bus polkitd is asked on (the system bus). A daemon
 * that also takes calls on private connections must do this: otherwise the registry binds to the
 * bus of the first message checked. */
int polkit_registry_new(sd_bus *bus, PolkitRegistry **ret);

PolkitRegistry *polkit_registry_free(PolkitRegistry *registry);
static inline void polkit_registry_freep(PolkitRegistry **r)
{
        polkit_registry_free(*r);
}

/* More about the registry:
 *  - *registry is created by the first check (NULL before). It belongs to the daemon's context and
 *    must outlive every handler; free it before the bus, since its queries hold method calls.
 *  - A query is matched by message, action, details and subject. One method call may check several
 *    actions in turn (its handler then runs once more per action); the answers stay until the call
 *    is done, then an idle event source of the bus's sd-event loop frees them. Without an event
 *    loop, consumed answers are freed at the next check of another call, and an answer whose
 *    handler never asked again stays until the registry is freed.
 *  - polkitd gets 20 s to answer; no answer is a denial. */

/* True while a check waits for polkitd or for its method call to run again: a service that exits
 * when idle must not exit then. */
bool polkit_registry_busy(const PolkitRegistry *registry);
