/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-caller.h"
#include "polkit.h"
#include "principal.h"
#include "tpm-config.h"
#include "tpm-worker.h"

#define TPM_BUS_NAME "org.aziot.Tpm1"
#define TPM_OBJECT_PATH "/org/aziot/Tpm1"
#define TPM_INTERFACE "org.aziot.Tpm1"

#define TPM_ERROR_INVALID_PARAMETER "org.aziot.Tpm1.Error.InvalidParameter"
#define TPM_ERROR_NOT_FOUND "org.aziot.Tpm1.Error.NotFound"
#define TPM_ERROR_NOT_AUTHORIZED "org.aziot.Tpm1.Error.NotAuthorized"
#define TPM_ERROR_UNAVAILABLE "org.aziot.Tpm1.Error.Unavailable"
#define TPM_ERROR_FAILED "org.aziot.Tpm1.Error.Failed"

#define TPM_ACTION_IMPORT "org.aziot.tpm.import-auth-key"
#define TPM_SIGN_DATA_MAX (64u * 1024u)

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;
        sd_bus_slot *object_slot;
        PolkitRegistry *polkit_registry;
        SenderUidCache sender_uids;
        PrincipalSet no_principals; /* tpmd has none: root, else polkit */

        TpmConfig config;
        TpmWorker *worker;
        TpmBuffer ek, srk; /* cached once read: they never change */

        uid_t gateway_uid; /* the user allowed to pass a client socket, besides root */
} Manager;

int tpm_dbus_register(Manager *m);

/* Reads the EK and SRK (creating them when absent) in the background, so that the first
 * GetTpmKeys is answered from the cache; a TPM that is not there is logged. */
int tpm_dbus_warm_up(Manager *m);
