/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>

#include "identity-backup.h"
#include "identity-object.h"
#include "identityd.h"
#include "log.h"
#include "macro.h"

#define MODULE_INTERFACE IDENTITY_INTERFACE ".Module"
#define MODULE_PATH_PREFIX IDENTITY_OBJECT_PATH "/module"

static bool provisioned(Manager *m)
{
        return m->device.hub_name && m->device.device_id;
}

static int load(Manager *m, const char *path, IdentityModuleBackup *ret)
{
        _cleanup_free_ char *id = NULL;
        int r;

        r = sd_bus_path_decode(path, MODULE_PATH_PREFIX, &id);
        if (r <= 0)
                return r == 0 ? -ENXIO : r;
        if (!provisioned(m))
                return -ENOENT;
        return identity_backup_load(m->config.homedir, m->device.hub_name, m->device.device_id,
                                    id, ret);
}

static int module_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                       void **ret_found, sd_bus_error *error)
{
        IdentityModuleBackup b = {};
        Manager *m = userdata;
        int r;

        r = load(m, path, &b);
        identity_module_backup_done(&b);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return 0;
        *ret_found = m;
        return 1;
}

static int module_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***ret_nodes,
                            sd_bus_error *error)
{
        Manager *m = userdata;
        IdentityModuleBackup *list = NULL;
        size_t n = 0;
        char **nodes;
        int r = 0;

        if (provisioned(m)) {
                r = identity_backup_list(m->config.homedir, m->device.hub_name,
                                         m->device.device_id, &list, &n);
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        nodes = calloc(n + 1, sizeof(char *));
        r = nodes ? 0 : -ENOMEM;
        for (size_t i = 0; i < n && r >= 0; i++)
                r = sd_bus_path_encode(MODULE_PATH_PREFIX, list[i].module_id, &nodes[i]);
        identity_module_backups_free(list, n);
        if (r < 0) {
                for (size_t i = 0; nodes && nodes[i]; i++)
                        free(nodes[i]);
                free(nodes);
                return r;
        }
        *ret_nodes = nodes;
        return 0;
}

static int property_get(sd_bus *bus, const char *path, const char *interface,
                        const char *property, sd_bus_message *reply, void *userdata,
                        sd_bus_error *error)
{
        IdentityModuleBackup b = {};
        Manager *m = userdata;
        const char *v;
        int r;

        r = load(m, path, &b);
        if (r < 0) {
                identity_module_backup_done(&b);
                if (r == -ENOMEM)
                        return r;
                return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_OBJECT, "No such object %s",
                                         path);
        }
        v = streq(property, "ModuleId")       ? b.module_id
            : streq(property, "DeviceId")     ? b.device_id
            : streq(property, "GenerationId") ? b.generation_id
                                              : b.managed_by;
        r = sd_bus_message_append(reply, "s", strempty(v));
        identity_module_backup_done(&b);
        return r;
}

static const sd_bus_vtable module_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("ModuleId", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DeviceId", "s", property_get, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("GenerationId", "s", property_get, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("ManagedBy", "s", property_get, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_VTABLE_END,
};

int identity_object_register(Manager *m)
{
        int r;

        r = sd_bus_add_fallback_vtable(m->bus, NULL, MODULE_PATH_PREFIX, MODULE_INTERFACE,
                                       module_vtable, module_find, m);
        if (r >= 0)
                r = sd_bus_add_node_enumerator(m->bus, NULL, MODULE_PATH_PREFIX, module_enumerate,
                                               m);
        if (r >= 0)
                r = sd_bus_add_object_manager(m->bus, NULL, IDENTITY_OBJECT_PATH);
        if (r < 0)
                return log_error_errno(r, "Failed to register the module objects: %m");
        return 0;
}

bool identity_object_exists(Manager *m, const char *module_id)
{
        IdentityModuleBackup b = {};
        bool found;

        found = provisioned(m) &&
                identity_backup_load(m->config.homedir, m->device.hub_name, m->device.device_id,
                                     module_id, &b) >= 0;
        identity_module_backup_done(&b);
        return found;
}

void identity_object_emit_saved(Manager *m, const char *module_id, bool existed)
{
        _cleanup_free_ char *path = NULL;
        int r;

        r = sd_bus_path_encode(MODULE_PATH_PREFIX, module_id, &path);
        if (r >= 0)
                r = existed ? sd_bus_emit_properties_changed(m->bus, path, MODULE_INTERFACE,
                                                             "GenerationId", "ManagedBy", NULL)
                            : sd_bus_emit_interfaces_added(m->bus, path, MODULE_INTERFACE, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to announce the module %s: %m", module_id);
}

void identity_object_emit_removed(Manager *m, const char *module_id)
{
        _cleanup_free_ char *path = NULL;
        int r;

        r = sd_bus_path_encode(MODULE_PATH_PREFIX, module_id, &path);
        if (r >= 0)
                r = sd_bus_emit_interfaces_removed(m->bus, path, MODULE_INTERFACE, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to announce the removal of %s: %m", module_id);
}
