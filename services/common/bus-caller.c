/* SPDX-License-Identifier: MIT */
#include "bus-caller.h"
#include "macro.h"

void sender_uid_cache_done(SenderUidCache *c)
{
        for (size_t i = 0; i < ELEMENTSOF(c->entries); i++)
                free(c->entries[i].name);
        *c = (SenderUidCache){};
}

int bus_sender_uid(sd_bus_message *m, SenderUidCache *cache, uid_t *ret)
{
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        const char *sender = sd_bus_message_get_sender(m);
        uid_t uid;
        int r;

        if (!sender)
                return -ENXIO;
        if (cache)
                for (size_t i = 0; i < ELEMENTSOF(cache->entries); i++)
                        if (cache->entries[i].name && streq(cache->entries[i].name, sender)) {
                                *ret = cache->entries[i].uid;
                                return 0;
                        }

        r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return r;
        r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0)
                return r;

        if (cache) {
                unsigned i = cache->next++ % ELEMENTSOF(cache->entries);
                char *name = strdup(sender);

                if (name) {
                        free(cache->entries[i].name);
                        cache->entries[i].name = name;
                        cache->entries[i].uid = uid;
                }
        }
        *ret = uid;
        return 0;
}

int bus_caller_uid(sd_bus_message *m, const PeerCred *connection_peer, SenderUidCache *cache,
                   uid_t *ret)
{
        if (connection_peer) {
                *ret = connection_peer->uid;
                return 0;
        }
        return bus_sender_uid(m, cache, ret);
}

int bus_caller_resolve(sd_bus_message *m, const PeerCred *connection_peer, int client_socket,
                       uid_t delegate_uid, SenderUidCache *cache, BusCaller *ret)
{
        uid_t sender_uid;
        int r;

        r = bus_caller_uid(m, connection_peer, cache, &sender_uid);
        if (r < 0)
                return r;

        if (client_socket < 0) {
                if (connection_peer)
                        *ret = (BusCaller){ .uid = sender_uid,
                                            .process_subject = true,
                                            .peer = *connection_peer };
                else
                        *ret = (BusCaller){ .uid = sender_uid };
                return 0;
        }

        if (sender_uid != 0 && (delegate_uid == UID_INVALID || sender_uid != delegate_uid))
                return -EPERM;

        *ret = (BusCaller){ .process_subject = true };
        r = peercred_from_fd(client_socket, &ret->peer);
        if (r < 0)
                return r;
        ret->uid = ret->peer.uid;
        return 0;
}
