/* SPDX-License-Identifier: MIT */
#pragma once

/* One bus object per module identity of the device, from its backups (what identityd last heard
 * from IoT Hub): /org/aziot/Identity1/module/<module id, sd_bus_path_encode()d>, interface
 * org.aziot.Identity1.Module (ModuleId, DeviceId, GenerationId, ManagedBy), announced by the
 * object manager at /org/aziot/Identity1. No keys: a key handle comes from GetModuleIdentity,
 * which is authorized. */

#include <stdbool.h>

typedef struct Manager Manager;

int identity_object_register(Manager *m);

/* Whether module_id has an object now (before a backup is written). */
bool identity_object_exists(Manager *m, const char *module_id);

/* After the backup of module_id was written (existed: before) or removed. */
void identity_object_emit_saved(Manager *m, const char *module_id, bool existed);
void identity_object_emit_removed(Manager *m, const char *module_id);
