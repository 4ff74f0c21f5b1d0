/* SPDX-License-Identifier: MIT */
#pragma once

/* Who a method call is really for (DESIGN §5): the bus sender itself, or — when the sender is the
 * gateway (or root) and passed the accepted client socket — the process at the other end of that
 * socket. Anyone else who passes a socket is refused, so a process cannot borrow another's identity. */

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "peercred.h"

#define UID_INVALID ((uid_t)-1)

typedef struct BusCaller {
        uid_t uid;
        /* true: polkit must be asked about the process in peer (a client behind the gateway, or the
         * process at the other end of a private connection), false: about the bus sender. */
        bool process_subject;
        PeerCred peer;
} BusCaller;

/* Sender uids by unique name. Unique names are never reused on a bus, so entries never go stale;
 * the cache is bounded and forgets the oldest entry first. */
typedef struct SenderUidCache {
        struct {
                char *name;
                uid_t uid;
        } entries[32];
        unsigned next;
} SenderUidCache;

void sender_uid_cache_done(SenderUidCache *c);

/* The effective uid of the sender of m (cached). */
int bus_sender_uid(sd_bus_message *m, SenderUidCache *cache, uid_t *ret);

/* The uid a call comes from: the bus sender, or connection_peer for a call on a private connection
 * (which has no sender). */
int bus_caller_uid(sd_bus_message *m, const PeerCred *connection_peer, SenderUidCache *cache,
                   uid_t *ret);

/* Resolves the caller. client_socket < 0: the sender (or connection_peer, see above). Otherwise the
 * sender must be uid 0 or delegate_uid, and the caller is the socket's peer process. Returns -EPERM
 * for a sender that may not delegate, -ENOTSOCK / -ESRCH for a socket that is not a connected Unix
 * socket with a live peer. */
int bus_caller_resolve(sd_bus_message *m, const PeerCred *connection_peer, int client_socket,
                       uid_t delegate_uid, SenderUidCache *cache, BusCaller *ret);
