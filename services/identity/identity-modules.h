/* SPDX-License-Identifier: MIT */
#pragma once

/* Module identities in IoT Hub (spec §4.7, §4.8; cloud-protocols.md §4): the IoT Hub registry
 * client, the per-module backups under <homedir>/modules, reconciliation with the principals of
 * idtype "module", and the D-Bus methods on them. Every call to IoT Hub is asynchronous; the
 * D-Bus methods answer their message when IoT Hub has (or from the backup when it cannot be
 * reached, spec §4.7).
 *
 * Module keys: primary/secondary = HMAC-SHA256(master key, "<m>:<genId>:primary|secondary"),
 * made by keyd from the master key "aziot_identityd_master_id" (created with usage derive,sign
 * when absent); the identity's keyHandle is the derived-key handle of the primary key. */

#include <stdbool.h>

#include <systemd/sd-bus.h>

typedef struct Manager Manager;
typedef struct IdentityModules IdentityModules;

int identity_modules_new(Manager *m, IdentityModules **ret);
/* Cancels what is in flight: pending D-Bus calls are dropped unanswered, reconciliations end
 * without calling their done. */
void identity_modules_free(IdentityModules *mods);

/* Reconciles IoT Hub's module identities of the device with the principals (spec §4.7), then
 * writes device_info and prev_state. done gets 0, or a negative errno, a message and whether IoT
 * Hub could not be reached (network: the backup is used). done may run before this returns (the
 * device is not provisioned, its credentials cannot be had); reconciliations run one at a time,
 * one asked for while another runs waiting for it. Returns 0, or -ENOMEM (done is not called).
 * prev_state also records the device it was written for, so that a device_info written before
 * the reconciliation does not make another device's modules look like this one's. */
typedef void (*IdentityModulesDone)(Manager *m, int error, const char *message, bool network,
                                    void *userdata);
int identity_modules_reconcile(Manager *m, IdentityModulesDone done, void *userdata);

/* Removes the module backups of every device but the one <homedir>/device_info names (the device
 * changed, and the caller has saved the new one; when device_info names none, every backup). So
 * a call when identityd knew no device before (at startup) keeps the backups of the device it
 * provisions, which an offline restart needs. */
int identity_modules_forget(Manager *m);

/* The D-Bus methods (authorized already). Return 1 when msg will be answered, or a negative
 * errno with error set. */
int identity_modules_list(Manager *m, sd_bus_message *msg, sd_bus_error *error);
int identity_modules_get(Manager *m, sd_bus_message *msg, const char *module_id,
                         sd_bus_error *error);
int identity_modules_create(Manager *m, sd_bus_message *msg, const char *module_id,
                            sd_bus_error *error);
int identity_modules_update(Manager *m, sd_bus_message *msg, const char *module_id,
                            sd_bus_error *error);
int identity_modules_delete(Manager *m, sd_bus_message *msg, const char *module_id,
                            sd_bus_error *error);
