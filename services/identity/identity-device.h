/* SPDX-License-Identifier: MIT */
#pragma once

/* The provisioned device (spec §4.7): which hub, which gateway, which device id; kept in
 * <homedir>/device_info as upstream keeps it, so that a restart while the cloud is out of reach
 * serves the last good provisioning:
 *
 *     hub_name = "myhub.azure-devices.net"
 *     local_gateway_hostname = "parent"      (nested mode only)
 *     device_id = "dev1"
 *
 * A file holding the word "unprovisioned" (upstream writes it) counts as no device. Written
 * atomically, mode 0600. */

#include <stdbool.h>

typedef struct IdentityDevice {
        char *hub_name;
        char *local_gateway_hostname; /* NULL: not nested */
        char *device_id;
} IdentityDevice;

void identity_device_done(IdentityDevice *d);
int identity_device_copy(const IdentityDevice *d, IdentityDevice *ret);
bool identity_device_equal(const IdentityDevice *a, const IdentityDevice *b);

/* The host IoT Hub REST calls and the identities' gatewayHost use: the parent's in nested mode,
 * else the hub's. */
const char *identity_device_gateway(const IdentityDevice *d);

/* 0 with *ret filled; -ENOENT when there is no device_info or it says "unprovisioned";
 * -EBADMSG when it does not parse. */
int identity_device_load(const char *homedir, IdentityDevice *ret);
int identity_device_save(const char *homedir, const IdentityDevice *d);
/* Removes device_info; 0 when there was none. */
int identity_device_forget(const char *homedir);
