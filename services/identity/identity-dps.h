/* SPDX-License-Identifier: MIT */
#pragma once

/* Registration with the Device Provisioning Service (cloud-protocols.md §3): symmetric key (SAS
 * signed by keyd), X.509 (the identity certificate as TLS client certificate, its key in keyd)
 * and TPM (the authentication key DPS sends imported into the TPM through tpmd, SAS signed by
 * tpmd). PUT …/register, then GET …/operations/<id> until the registration is assigned or failed:
 * after the Retry-After DPS sends (1 to 60 s; upstream ignores it), else every 5 s as upstream. A trust bundle in the
 * registration state (cloud-protocols.md §3.8) is stored in certd as "aziot-dps-trust-bundle". */

#include <stdbool.h>

#include "identity-cloud.h"
#include "identity-device.h"

typedef struct Manager Manager;

#define IDENTITY_DPS_API_VERSION "2021-06-01"
#define IDENTITY_DPS_POLL_USEC (5ull * 1000ull * 1000ull)

/* device: the assignment (valid during the call) when error is 0. */
typedef void (*IdentityDpsDone)(Manager *m, int error, const char *message, bool network,
                                const IdentityDevice *device, void *userdata);

/* Starts a registration (one at a time: -EBUSY while one runs). */
int identity_dps_register(Manager *m, IdentityDpsDone done, void *userdata);

/* The same with the given credentials (taken over; the caller's become empty): the renewal of
 * the identity certificate registers with the new one before it is put in place (spec §4.10). */
int identity_dps_register_with(Manager *m, IdentityCredentials *credentials,
                               IdentityDpsDone done, void *userdata);

/* Stops the registration in progress, if any, without calling its callback. */
void identity_dps_cancel(Manager *m);
