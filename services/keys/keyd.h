/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "aziot-keys.h"
#include "bus-caller.h"
#include "config-watch.h"
#include "keys-handle.h"
#include "keys-library.h"
#include "polkit.h"
#include "principal.h"

#define KEYS_BUS_NAME "org.aziot.Keys1"
#define KEYS_OBJECT_PATH "/org/aziot/Keys1"
#define KEYS_INTERFACE "org.aziot.Keys1"

#define KEYS_ERROR_INVALID_PARAMETER "org.aziot.Keys1.Error.InvalidParameter"
#define KEYS_ERROR_NOT_FOUND "org.aziot.Keys1.Error.NotFound"
#define KEYS_ERROR_NOT_AUTHORIZED "org.aziot.Keys1.Error.NotAuthorized"
#define KEYS_ERROR_FAILED "org.aziot.Keys1.Error.Failed"

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;
        sd_bus_slot *object_slot;
        PolkitRegistry *polkit_registry;
        SenderUidCache sender_uids;

        KeysLibrary library;
        const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *keys; /* &library.list */
        KeysHandleAziotKeys handle_keys; /* what the handle signer uses of the store */
        KeysHandleSigner signer;
        PrincipalSet principals;
        ConfigWatch *config_watch;
        uint32_t max_requests; /* MaxRequests: as configured at start (upstream reloads it not) */

        uid_t gateway_uid; /* the user allowed to pass a client socket, besides root */
        struct PrivateConnection *private_connections;
        unsigned n_private_connections;
} Manager;

int keys_dbus_register(Manager *m);
/* Serves the Keys1 object on another connection (a private one). */
int keys_dbus_add_object(Manager *m, sd_bus *bus, sd_bus_slot **ret_slot);
