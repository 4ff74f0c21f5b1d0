/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-caller.h"
#include "cert-renewal.h"
#include "http-client.h"
#include "identity-cloud.h"
#include "config-watch.h"
#include "identity-config.h"
#include "identity-device.h"
#include "polkit.h"

#define IDENTITY_BUS_NAME "org.aziot.Identity1"
#define IDENTITY_OBJECT_PATH "/org/aziot/Identity1"
#define IDENTITY_INTERFACE "org.aziot.Identity1"

#define IDENTITY_ERROR_INVALID_PARAMETER "org.aziot.Identity1.Error.InvalidParameter"
#define IDENTITY_ERROR_NOT_FOUND "org.aziot.Identity1.Error.NotFound"
#define IDENTITY_ERROR_NOT_AUTHORIZED "org.aziot.Identity1.Error.NotAuthorized"
#define IDENTITY_ERROR_CLOUD "org.aziot.Identity1.Error.CloudError"
#define IDENTITY_ERROR_FAILED "org.aziot.Identity1.Error.Failed"

typedef enum IdentityState {
        IDENTITY_STATE_UNPROVISIONED,
        IDENTITY_STATE_PROVISIONING,
        IDENTITY_STATE_PROVISIONED,
        IDENTITY_STATE_OFFLINE, /* from the backup: the cloud was out of reach */
        IDENTITY_STATE_FAILED,
} IdentityState;

const char *identity_state_to_string(IdentityState s);

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;
        sd_bus_slot *object_slot;
        PolkitRegistry *polkit_registry;
        SenderUidCache sender_uids;
        ConfigWatch *config_watch;
        uint32_t max_requests; /* MaxRequests: as configured at start (upstream reloads it not) */

        IdentityConfig config;
        IdentityState state;
        IdentityDevice device; /* valid when PROVISIONED or OFFLINE */
        struct IdentityDps *dps; /* a DPS registration in progress */
        struct Provisioning *provisionings; /* in progress, freed at exit */
        struct IdentityModules *modules;
        RenewalEngine *renewal; /* the DPS X.509 identity certificate (identity-renew.h) */
        HttpClient *http;

        uid_t gateway_uid;
} Manager;

int identity_dbus_register(Manager *m);

/* Sets the state (announcing ProvisioningState) and, for PROVISIONED, emits DeviceProvisioned. */
void identity_set_state(Manager *m, IdentityState state);

/* Provisions the device as the configuration says (from the backup when use_backup and there is
 * one, spec §4.7), then reconciles the module identities; the previous device and its backup stay
 * until a new provisioning succeeds. done runs once with 0 or a negative errno and a message for
 * the caller and the log (possibly before this returns). Returns 0, or -ENOMEM. */
int identity_provision_start(Manager *m, bool use_backup,
                             void (*done)(Manager *m, int error, const char *message,
                                          void *userdata),
                             void *userdata);

/* Takes d as the device (copied) and keeps it as the backup. */
int identity_adopt_device(Manager *m, const IdentityDevice *d, char *message, size_t size);

/* Frees the provisionings still in progress (at exit: their callbacks are not called). */
void identity_provisionings_free(Manager *m);

/* ---- shared by the parts of identityd (identity-dbus.c) ---- */

/* Classifies the caller of msg (reading the trailing options, "client-socket"), and allows op by
 * the table of spec §4.5, else asks polkit. Returns 1 allowed, 0 polkit asked (return 1 from the
 * handler: it runs again with the answer), negative with error set. */
int identity_authorize(Manager *m, sd_bus_message *msg, IdentityOperation op,
                       const char *module_id, IdentityCaller *ret_caller, sd_bus_error *error);
int identity_reply_not_authorized(sd_bus_error *error);

/* A CloudError with message ("Hub client error\ncaused by: …"), logged. */
int identity_reply_cloud_error(sd_bus_error *error, int r, const char *message);

/* A synchronous call of keyd ("keyd") or certd ("certd") with the arguments of types and an empty
 * options dictionary, returning its one string result in *ret (ret may be NULL for none).
 * -ENOENT when the service says NotFound; message: "Key client error\ncaused by: …". */
int identity_call_string(Manager *m, const char *service, const char *method, char **ret,
                         char *message, size_t size, const char *types, ...);

/* Appends {key: <s value>} to an open a{sv}; nothing for a NULL value. */
int identity_append_entry(sd_bus_message *reply, const char *key, const char *value);

/* The key handle the device's SAS tokens are signed with (manual sas, dps symmetric_key). */
int identity_device_key_handle(Manager *m, char **ret, char *message, size_t size);

/* The device's credentials for IoT Hub (and DPS): SAS with the device key or the TPM, or its
 * X.509 identity as TLS client certificate. */
int identity_device_credentials(Manager *m, IdentityCredentials *ret, char *message, size_t size);

/* The DPS registration id: configured, else the CN of the identity certificate. */
int identity_registration_id(Manager *m, char **ret);

/* The CN of the first certificate of pem. */
int identity_pem_common_name(const char *pem, char **ret);

/* ReprovisionDevice: provisions again, then reconciles; answers msg when done. */
int identity_reprovision(Manager *m, sd_bus_message *msg, sd_bus_error *error);

/* Local identities (spec §4.9): answer msg. */
int identity_local_get(Manager *m, sd_bus_message *msg, const char *module_id,
                       sd_bus_error *error);
int identity_local_create(Manager *m, sd_bus_message *msg, const char *module_id,
                          sd_bus_error *error);
