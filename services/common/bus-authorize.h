/* SPDX-License-Identifier: MIT */
#pragma once

/* What every service does before it acts for a caller (DESIGN §5), in one place: read the method's
 * trailing a{sv} (with the "client-socket" a gateway passes), resolve who the call is really for,
 * and decide: root, then [[principal]] globs, then polkit.
 *
 * Return convention of bus_authorize(): 1 allowed; 0 polkit was asked (the handler returns 1 and
 * is dispatched again with the answer, so nothing before this step may change state); negative:
 *   -EACCES    denied: *ret_uid is the caller, *ret_denied the id that was refused
 *   -EPERM     the sender passed a client socket but may not act for another process (*ret_uid)
 *   -ENOTSOCK  the client socket is not a connected Unix socket with a live peer
 *   other      internal errors */

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "bus-caller.h"
#include "polkit.h"
#include "principal.h"

typedef struct BusAuthContext {
        uid_t gateway_uid; /* besides root, the one user that may pass a client socket */
        SenderUidCache *sender_uids;
        const PrincipalSet *principals;
        PolkitRegistry **polkit_registry;
} BusAuthContext;

/* A service's own option: reads the variant of name (the message is positioned on it) and returns
 * 1 when it took it, 0 when name is not one of its options, negative on error. */
typedef int (*BusOptionFunc)(sd_bus_message *m, const char *name, void *userdata,
                             sd_bus_error *error);

/* Reads the trailing a{sv}: "client-socket" (h, left owned by the message; -EBADF when absent)
 * when allow_client_socket, the service's options through fn (may be NULL); anything else is an
 * InvalidArgs error naming the option. */
int bus_read_options(sd_bus_message *m, bool allow_client_socket, int *ret_client_socket,
                     BusOptionFunc fn, void *userdata, sd_bus_error *error);

/* For operations that need no authorization: a client socket passed by a sender that may not
 * delegate is still refused (-EPERM, *ret_uid set), so that it never looks allowed. */
int bus_check_delegation(const BusAuthContext *ctx, sd_bus_message *msg,
                         const PeerCred *connection_peer, int client_socket, uid_t *ret_uid);

/* Authorizes the caller for every id of ids (NULL-terminated): ids equal to reserved (may be NULL)
 * are refused to everyone, root included; root is allowed; a principal whose globs match every id
 * is allowed (with no ids, no principal is); else polkit action with details (NULL-terminated key,
 * value pairs). */
int bus_authorize(const BusAuthContext *ctx, sd_bus_message *msg, const PeerCred *connection_peer,
                  int client_socket, const char *const *ids, const char *reserved,
                  const char *action, const char *const *details, uid_t *ret_uid,
                  const char **ret_denied);
