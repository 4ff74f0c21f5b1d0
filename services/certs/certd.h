/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-caller.h"
#include "cert-renewal.h"
#include "certs-config.h"
#include "certs-store.h"
#include "certs-openssl.h"
#include "config-watch.h"
#include "http-client.h"
#include "polkit.h"
#include "principal.h"

#define CERTS_BUS_NAME "org.aziot.Certificates1"
#define CERTS_OBJECT_PATH "/org/aziot/Certificates1"
#define CERTS_INTERFACE "org.aziot.Certificates1"
#define CERTS_CERT_INTERFACE "org.aziot.Certificates1.Certificate"

#define CERTS_ERROR_INVALID_PARAMETER "org.aziot.Certificates1.Error.InvalidParameter"
#define CERTS_ERROR_NOT_FOUND "org.aziot.Certificates1.Error.NotFound"
#define CERTS_ERROR_NOT_AUTHORIZED "org.aziot.Certificates1.Error.NotAuthorized"
#define CERTS_ERROR_FAILED "org.aziot.Certificates1.Error.Failed"

typedef struct EnrollTask EnrollTask;

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;
        sd_bus_slot *object_slot;
        sd_bus_slot *cert_vtable_slot, *cert_enumerator_slot, *object_manager_slot;
        PolkitRegistry *polkit_registry;
        SenderUidCache sender_uids;

        CertsStore *store;
        CertsConfig config; /* the configuration in force (issuance options), without principals */
        PrincipalSet principals;
        ConfigWatch *config_watch;
        uint32_t max_requests; /* MaxRequests: as configured at start (upstream reloads it not) */

        uid_t gateway_uid; /* the user allowed to pass a client socket, besides root */

        /* EST (certs-enroll.h) */
        HttpClient *http;
        RenewalEngine *renewal;
        X509Stack *est_trusted;  /* [cert_issuance.est] trusted_certs */
        EnrollTask *tasks;       /* waiting, in order */
        EnrollTask *running;
} Manager;

int certs_dbus_register(Manager *m);
