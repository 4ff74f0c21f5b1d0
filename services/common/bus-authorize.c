/* SPDX-License-Identifier: MIT */
#include "bus-authorize.h"
#include "log.h"
#include "macro.h"

int bus_read_options(sd_bus_message *m, bool allow_client_socket, int *ret_client_socket,
                     BusOptionFunc fn, void *userdata, sd_bus_error *error)
{
        int r;

        *ret_client_socket = -EBADF;
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *name;

                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                if (streq(name, "client-socket") && allow_client_socket) {
                        r = sd_bus_message_enter_container(m, 'v', "h");
                        if (r < 0)
                                return sd_bus_error_set(
                                        error, SD_BUS_ERROR_INVALID_ARGS,
                                        "Option \"client-socket\" must be of type h.");
                        r = sd_bus_message_read(m, "h", ret_client_socket);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                } else {
                        r = fn ? fn(m, name, userdata, error) : 0;
                        if (r == 0)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Unknown option \"%s\".", name);
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

int bus_check_delegation(const BusAuthContext *ctx, sd_bus_message *msg,
                         const PeerCred *connection_peer, int client_socket, uid_t *ret_uid)
{
        uid_t uid;
        int r;

        if (client_socket < 0)
                return 0;
        r = bus_caller_uid(msg, connection_peer, ctx->sender_uids, &uid);
        if (r < 0)
                return r;
        if (uid != 0 && uid != ctx->gateway_uid) {
                *ret_uid = uid;
                return -EPERM;
        }
        return 0;
}

int bus_authorize(const BusAuthContext *ctx, sd_bus_message *msg, const PeerCred *connection_peer,
                  int client_socket, const char *const *ids, const char *reserved,
                  const char *action, const char *const *details, uid_t *ret_uid,
                  const char **ret_denied)
{
        const char *denied = NULL;
        BusCaller caller;
        int r;

        r = bus_caller_resolve(msg, connection_peer, client_socket, ctx->gateway_uid,
                               ctx->sender_uids, &caller);
        if (r == -EPERM) {
                r = bus_check_delegation(ctx, msg, connection_peer, client_socket, ret_uid);
                return r < 0 ? r : -EPERM;
        }
        if (r == -ENOTSOCK || r == -ESRCH || r == -EBADF)
                return -ENOTSOCK;
        if (r < 0)
                return r;
        *ret_uid = caller.uid;

        for (const char *const *id = ids; reserved && *id; id++)
                if (streq(*id, reserved)) {
                        *ret_denied = *id;
                        return -EACCES;
                }
        if (caller.uid == 0)
                return 1;
        /* A principal is for ids: an operation on none (tpmd's import) is for polkit alone. */
        for (const char *const *id = ids; *id && !denied; id++)
                if (!principal_allows(ctx->principals, caller.uid, *id))
                        denied = *id;
        if (!denied && ids[0])
                return 1;

        r = polkit_check_async(msg, action, details, caller.process_subject ? &caller.peer : NULL,
                               ctx->polkit_registry);
        if (r == 0)
                return 0;
        if (r > 0)
                return 1;
        if (r != -EACCES)
                log_debug_errno(r, "Authorization of user %u failed: %m", (unsigned)caller.uid);
        *ret_denied = denied;
        return -EACCES;
}
