/* SPDX-License-Identifier: MIT */
#pragma once

/* What identityd keeps on disk about module identities (spec §4.7), in upstream's layout so that
 * either can take over the other's home directory:
 *
 *   <homedir>/modules/<sha256hex(hub)>-<sha256hex(deviceId)>/<alnum moduleId>-<sha256hex(moduleId)>
 *       one JSON file per module: {"moduleId","deviceId","generationId"?,"managedBy"?}, no keys
 *       (they are derived again from the master key and the generationId);
 *   <homedir>/prev_state
 *       the module identities kept in IoT Hub at the last reconciliation, as [[principal]] entries
 *       with idtype "module" (upstream writes its whole configuration there, which reads the
 *       same), and the device they were kept for:
 *
 *           [device]
 *           hub_name = "myhub.azure-devices.net"
 *           local_gateway_hostname = "parent"      (nested mode only)
 *           device_id = "dev1"
 *
 *           [[principal]]
 *           uid = 1000
 *           name = "mod1"
 *           idtype = ["module"]
 *
 * Everything is written atomically (atomic-file.h), mode 0600, directories 0700. No bus, no
 * network: the daemon's module code and the unit tests share this. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "identity-device.h"

#define IDENTITY_BACKUP_MAX (64u * 1024u)

typedef struct IdentityModuleBackup {
        char *module_id, *device_id;
        char *generation_id; /* NULL: IoT Hub gave none */
        char *managed_by;    /* NULL: none */
} IdentityModuleBackup;

void identity_module_backup_done(IdentityModuleBackup *b);
void identity_module_backups_free(IdentityModuleBackup *b, size_t n);

/* "<homedir>/modules/<sha256hex(hub)>-<sha256hex(device_id)>". */
int identity_backup_device_dir(const char *homedir, const char *hub, const char *device_id,
                               char **ret);
/* "<the ASCII letters and digits of module_id>-<sha256hex(module_id)>"; -ENAMETOOLONG when that
 * is no file name. */
int identity_backup_file_name(const char *module_id, char **ret);

/* The JSON text of a backup, and back. Parsing wants the string members moduleId and deviceId,
 * takes generationId and managedBy when they are strings, and ignores anything else; -EBADMSG
 * otherwise. */
int identity_backup_to_json(const IdentityModuleBackup *b, char **ret);
int identity_backup_from_json(const char *text, size_t len, IdentityModuleBackup *ret);

/* Makes sure the device's directory exists; when it does not, the whole modules/ tree (the
 * backups of any other device) is removed before it is created. Returns 1 when it was created. */
int identity_backup_open_device(const char *homedir, const char *hub, const char *device_id);

/* Writes (creating the device's directory as identity_backup_open_device() does), reads and
 * removes the backup of b->module_id / module_id. Load: -ENOENT when there is none, -EBADMSG
 * when it does not parse. Remove: 0 when there was none. */
int identity_backup_save(const char *homedir, const char *hub, const char *device_id,
                         const IdentityModuleBackup *b);
int identity_backup_load(const char *homedir, const char *hub, const char *device_id,
                         const char *module_id, IdentityModuleBackup *ret);
int identity_backup_remove(const char *homedir, const char *hub, const char *device_id,
                           const char *module_id);

/* Every backup of the device that parses, sorted by module id; -ENOENT when the device has no
 * backup directory. */
int identity_backup_list(const char *homedir, const char *hub, const char *device_id,
                         IdentityModuleBackup **ret, size_t *ret_n);

/* Removes <homedir>/modules and everything in it; 0 when there was none. */
int identity_backup_forget_all(const char *homedir);
/* Removes the backups of every device but this one; 1 when something was removed. */
int identity_backup_forget_others(const char *homedir, const char *hub, const char *device_id);

/* A module identity kept in IoT Hub: the name of a principal with idtype "module", and its
 * uid. */
typedef struct IdentityHubModule {
        const char *name;
        uid_t uid;
} IdentityHubModule;

/* Writes prev_state for device and its modules. */
int identity_prev_state_save(const char *homedir, const IdentityDevice *device,
                             const IdentityHubModule *modules, size_t n);

/* The module identities kept at the last reconciliation (a NULL-terminated list of names, empty
 * when there is none), when that was for device: as prev_state's [device] says, else (a
 * prev_state of upstream's, which has none) as device_info, what <homedir>/device_info holds
 * (NULL: nothing), says. Empty when prev_state or the device record is missing, does not parse
 * or names another device (spec §4.7: then every module is created again). */
int identity_prev_state_modules(const char *homedir, const IdentityDevice *device,
                                const IdentityDevice *device_info, char ***ret);
