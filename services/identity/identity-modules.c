/* SPDX-License-Identifier: MIT */
/* Module identities in IoT Hub (spec §4.7, §4.8; cloud-protocols.md §4).
 *
 * Every D-Bus method and every reconciliation is an operation (ModuleOp) that owns what it works
 * with: a copy of the device as it was when the operation began, the device's credentials, and
 * the IoT Hub request in flight. IoT Hub is called asynchronously through identity-cloud.h; keyd
 * synchronously, as elsewhere in identityd. An operation for a device that is no longer the
 * current one (reprovisioned meanwhile) still answers its caller, but writes no backup: it would
 * bring back the directory of a device identityd has forgotten. */
#include <stdio.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "base64.h"
#include "identity-backup.h"
#include "identity-modules.h"
#include "identity-object.h"
#include "identityd.h"
#include "log.h"
#include "macro.h"

#define KEYS_BUS_NAME "org.aziot.Keys1"
#define KEYS_OBJECT_PATH "/org/aziot/Keys1"
#define KEYS_INTERFACE "org.aziot.Keys1"
#define HUB_API_VERSION "2017-11-08-preview"
#define MESSAGE_MAX 1024
#define DERIVED_KEY_LEN 32u

typedef enum OpKind {
        OP_GET,
        OP_LIST,
        OP_CREATE,
        OP_UPDATE,
        OP_DELETE,
        OP_RECONCILE,
} OpKind;

/* The IoT Hub request an operation waits for. */
typedef enum HubCall {
        HUB_NONE,
        HUB_LIST,
        HUB_GET,
        HUB_CREATE,   /* PUT without If-Match: IoT Hub picks keys and a generationId */
        HUB_SET_KEYS, /* PUT with If-Match: *: the derived keys */
        HUB_DELETE,
} HubCall;

/* Why an operation failed: the D-Bus error to answer and its message (upstream's words), and
 * whether IoT Hub could not be reached (reconciliation: the backup is used then). */
typedef struct OpError {
        const char *name;
        char text[MESSAGE_MAX];
        bool network;
} OpError;

typedef struct ModuleOp ModuleOp;

/* A reconciliation asked for while another runs: started when that one has ended. */
typedef struct WaitingReconcile {
        IdentityModulesDone done;
        void *userdata;
} WaitingReconcile;

struct IdentityModules {
        Manager *manager;
        ModuleOp *ops; /* in flight */
        bool reconciling;
        WaitingReconcile *waiting;
        size_t n_waiting;
};

struct ModuleOp {
        IdentityModules *mods;
        ModuleOp *prev, *next;
        OpKind kind;
        sd_bus_message *msg;       /* the D-Bus call to answer; NULL for reconciliation */
        IdentityModulesDone done;  /* reconciliation */
        void *userdata;
        IdentityDevice device;
        IdentityCredentials credentials;
        IdentityCloudCall *call;
        HubCall pending;
        char *module_id;           /* the module of the request in flight */
        char *key_handle;          /* the primary key's handle, once derived */
        /* reconciliation: the principals with idtype "module" (names and uids), which of them
         * IoT Hub already has as they should be, what to delete, and how far it has gone */
        char **current;
        uid_t *current_uids;
        size_t n_current;
        bool *keep;
        char **to_delete;
        size_t n_delete, next_delete, next_create;
};

/* A module identity as IoT Hub (or a backup) describes it; the strings are borrowed. */
typedef struct HubModule {
        const char *module_id, *device_id, *generation_id, *managed_by;
} HubModule;

static int op_error(OpError *e, int r, const char *name, const char *format, ...) _printf_(4, 5);

static int op_error(OpError *e, int r, const char *name, const char *format, ...)
{
        va_list ap;

        if (r == -ENOMEM) {
                e->name = IDENTITY_ERROR_FAILED;
                (void)snprintf(e->text, sizeof(e->text), "internal error");
                return r;
        }
        e->name = name;
        va_start(ap, format);
        (void)vsnprintf(e->text, sizeof(e->text), format, ap);
        va_end(ap);
        return r;
}

/* ---- operations ---- */

static void op_free(ModuleOp *op)
{
        if (!op)
                return;
        if (op->mods) {
                if (op->prev)
                        op->prev->next = op->next;
                else
                        op->mods->ops = op->next;
                if (op->next)
                        op->next->prev = op->prev;
        }
        identity_cloud_call_cancel(op->call);
        sd_bus_message_unref(op->msg);
        identity_credentials_done(&op->credentials);
        identity_device_done(&op->device);
        free(op->module_id);
        free(op->key_handle);
        strv_free(op->current);
        free(op->current_uids);
        free(op->keep);
        strv_free(op->to_delete);
        free(op);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(ModuleOp *, op_free)

static bool device_provisioned(Manager *m)
{
        return (m->state == IDENTITY_STATE_PROVISIONED || m->state == IDENTITY_STATE_OFFLINE) &&
               m->device.hub_name && m->device.device_id;
}

/* A new operation on the current device, with its credentials; not linked yet. */
static int op_new(Manager *m, OpKind kind, const char *module_id, ModuleOp **ret, OpError *e)
{
        _cleanup_(op_freep) ModuleOp *op = calloc(1, sizeof(*op));
        char message[MESSAGE_MAX];
        int r;

        if (!op)
                return -ENOMEM;
        op->kind = kind;
        if (module_id && !(op->module_id = strdup(module_id)))
                return -ENOMEM;
        r = identity_device_copy(&m->device, &op->device);
        if (r < 0)
                return r;
        r = identity_device_credentials(m, &op->credentials, message, sizeof(message));
        if (r < 0)
                return op_error(e, r, IDENTITY_ERROR_CLOUD, "Hub client error\ncaused by: %s",
                                message);
        *ret = TAKE_PTR(op);
        return 0;
}

static void op_link(IdentityModules *mods, ModuleOp *op)
{
        op->mods = mods;
        op->next = mods->ops;
        if (mods->ops)
                mods->ops->prev = op;
        mods->ops = op;
}

/* Whether op's device is still identityd's device (its backups may be written). */
static bool op_device_current(const ModuleOp *op)
{
        return identity_device_equal(&op->device, &op->mods->manager->device);
}

/* Ends op with e: answers its caller (or reports to the reconciliation's owner) and frees it. */
static void reconcile_ended(Manager *m, IdentityModulesDone done, void *userdata, int r,
                            const char *message, bool network);

static void op_fail(ModuleOp *op, int r, const OpError *e)
{
        Manager *m = op->mods->manager;
        IdentityModulesDone done = op->done;
        void *userdata = op->userdata;

        if (op->msg) {
                log_warning("%s", e->text);
                r = sd_bus_reply_method_errorf(op->msg, e->name ?: IDENTITY_ERROR_FAILED, "%s",
                                               e->name ? e->text : "internal error");
                if (r < 0)
                        log_debug_errno(r, "Failed to answer a module identity call: %m");
                op_free(op);
                return;
        }
        op_free(op);
        reconcile_ended(m, done, userdata, r, e->text, e->network);
}

/* ---- keys (spec §4.8, cloud-protocols.md §2.3) ---- */

/* A call of keyd with a key handle, and derivation data when data is not NULL. */
static int keyd_call(Manager *m, const char *method, const char *handle, const void *data,
                     size_t len, sd_bus_message **ret_reply, OpError *e)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        int r;

        r = sd_bus_message_new_method_call(m->bus, &call, KEYS_BUS_NAME, KEYS_OBJECT_PATH,
                                           KEYS_INTERFACE, method);
        if (r >= 0)
                r = sd_bus_message_append(call, "s", handle);
        if (r >= 0 && data)
                r = sd_bus_message_append_array(call, 'y', data, len);
        if (r >= 0)
                r = sd_bus_message_append(call, "a{sv}", 0);
        if (r < 0)
                return op_error(e, r, IDENTITY_ERROR_FAILED, "internal error");
        r = sd_bus_call(m->bus, call, 0, &error, ret_reply);
        if (r < 0)
                return op_error(e, r, IDENTITY_ERROR_CLOUD, "Key client error\ncaused by: %s",
                                error.message ?: strerror(-r));
        return 0;
}

/* The master key's handle: loaded, else created (usage derive and sign) as upstream does. */
static int master_key(Manager *m, char **ret, OpError *e)
{
        char message[MESSAGE_MAX];
        int r;

        r = identity_call_string(m, "keyd", "LoadKey", ret, message, sizeof(message), "s",
                                 IDENTITY_MASTER_KEY_ID);
        if (r >= 0 || r == -ENOMEM)
                return r;
        log_debug("Loading %s failed (%s); creating it.", IDENTITY_MASTER_KEY_ID, message);
        r = identity_call_string(m, "keyd", "CreateKeyIfNotExists", ret, message, sizeof(message),
                                 "sas", IDENTITY_MASTER_KEY_ID, 2, "derive", "sign");
        if (r < 0)
                return op_error(e, r, IDENTITY_ERROR_CLOUD, "%s", message);
        return 0;
}

/* The handle of HMAC-SHA256(master, "<module_id>:<generation_id>:<which>"). */
static int derive_key(Manager *m, const char *master, const char *module_id,
                      const char *generation_id, const char *which, char **ret, OpError *e)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *data = NULL;
        const char *handle;
        int r;

        if (asprintf(&data, "%s:%s:%s", module_id, generation_id, which) < 0)
                return -ENOMEM;
        r = keyd_call(m, "CreateDerivedKey", master, data, strlen(data), &reply, e);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "s", &handle);
        if (r < 0)
                return op_error(e, r, IDENTITY_ERROR_CLOUD,
                                "Key client error\ncaused by: a malformed answer from keyd");
        *ret = strdup(handle);
        return *ret ? 0 : -ENOMEM;
}

/* The derived key itself, base64 (a secret: erase_and_free() it). */
static int export_key(Manager *m, const char *handle, char **ret, OpError *e)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const void *key = NULL;
        size_t n = 0;
        int r;

        r = keyd_call(m, "ExportDerivedKey", handle, NULL, 0, &reply, e);
        if (r < 0)
                return r;
        /* The key is in the reply: wiped when it is freed. */
        (void)sd_bus_message_sensitive(reply);
        r = sd_bus_message_read_array(reply, 'y', &key, &n);
        if (r < 0 || n != DERIVED_KEY_LEN)
                return op_error(e, r < 0 ? r : -EBADMSG, IDENTITY_ERROR_CLOUD,
                                "Key client error\ncaused by: a %zu-byte derived key", n);
        *ret = base64_encode_alloc(key, n);
        return *ret ? 0 : -ENOMEM;
}

typedef struct ModuleKeys {
        char *primary_handle;
        char *primary, *secondary; /* base64 */
} ModuleKeys;

static void module_keys_done(ModuleKeys *k)
{
        free(k->primary_handle);
        if (k->primary)
                erase_and_free(k->primary, strlen(k->primary));
        if (k->secondary)
                erase_and_free(k->secondary, strlen(k->secondary));
        *k = (ModuleKeys){};
}

/* The module's keys: the primary key's handle, and with export the keys themselves. "module
 * identity not found" when IoT Hub gave no generationId (spec §4.4). */
static int module_keys(Manager *m, const HubModule *module, bool export, ModuleKeys *ret,
                       OpError *e)
{
        _cleanup_(module_keys_done) ModuleKeys k = {};
        _cleanup_free_ char *master = NULL, *secondary_handle = NULL;
        int r;

        if (!module->generation_id)
                return op_error(e, -ENOENT, IDENTITY_ERROR_NOT_FOUND,
                                "module identity not found");
        r = master_key(m, &master, e);
        if (r >= 0)
                r = derive_key(m, master, module->module_id, module->generation_id, "primary",
                               &k.primary_handle, e);
        if (r >= 0 && export)
                r = export_key(m, k.primary_handle, &k.primary, e);
        if (r >= 0 && export)
                r = derive_key(m, master, module->module_id, module->generation_id, "secondary",
                               &secondary_handle, e);
        if (r >= 0 && export)
                r = export_key(m, secondary_handle, &k.secondary, e);
        if (r < 0)
                return r;
        *ret = k;
        k = (ModuleKeys){};
        return 0;
}

/* ---- answers ---- */

static int append_module(sd_bus_message *reply, const IdentityDevice *device,
                         const HubModule *module, const char *key_handle)
{
        int r;

        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r >= 0)
                r = identity_append_entry(reply, "type", "aziot");
        if (r >= 0)
                r = identity_append_entry(reply, "hubName", device->hub_name);
        if (r >= 0)
                r = identity_append_entry(reply, "gatewayHost", identity_device_gateway(device));
        if (r >= 0)
                r = identity_append_entry(reply, "deviceId", module->device_id);
        if (r >= 0)
                r = identity_append_entry(reply, "moduleId", module->module_id);
        if (r >= 0)
                r = identity_append_entry(reply, "genId", module->generation_id);
        /* Module identities are always SAS, with a key derived in keyd (spec §4.2). */
        if (r >= 0 && key_handle)
                r = identity_append_entry(reply, "authType", "sas");
        if (r >= 0)
                r = identity_append_entry(reply, "keyHandle", key_handle);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        return r;
}

/* Answers msg with module; key_handle NULL: derived here. */
static int reply_module(Manager *m, sd_bus_message *msg, const IdentityDevice *device,
                        const HubModule *module, const char *key_handle, OpError *e)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(module_keys_done) ModuleKeys keys = {};
        int r;

        if (!key_handle) {
                r = module_keys(m, module, /* export= */ false, &keys, e);
                if (r < 0)
                        return r;
                key_handle = keys.primary_handle;
        }
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = append_module(reply, device, module, key_handle);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        if (r < 0)
                return op_error(e, r, IDENTITY_ERROR_FAILED, "internal error");
        return 0;
}

static int reply_list(sd_bus_message *msg, const IdentityDevice *device,
                      const HubModule *modules, size_t n, OpError *e)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "a{sv}");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = append_module(reply, device, &modules[i], /* key_handle= */ NULL);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        if (r < 0)
                return op_error(e, r, IDENTITY_ERROR_FAILED, "internal error");
        return 0;
}

/* ---- backups (spec §4.7) ---- */

static HubModule module_of_backup(const IdentityModuleBackup *b)
{
        return (HubModule){ b->module_id, b->device_id, b->generation_id, b->managed_by };
}

static void save_backup(Manager *m, const IdentityDevice *device, const HubModule *module)
{
        const IdentityModuleBackup b = {
                (char *)module->module_id,
                (char *)module->device_id,
                (char *)module->generation_id,
                (char *)module->managed_by,
        };
        int r;

        bool existed = identity_object_exists(m, module->module_id);

        /* Losing a backup costs the offline fallback only: IoT Hub answered. */
        r = identity_backup_save(m->config.homedir, device->hub_name, device->device_id, &b);
        if (r < 0)
                log_warning_errno(r, "Failed to save the backup of module identity %s: %m",
                                  module->module_id);
        else if (identity_device_equal(device, &m->device))
                identity_object_emit_saved(m, module->module_id, existed);
}

static void remove_backup(Manager *m, const IdentityDevice *device, const char *module_id)
{
        int r;

        r = identity_backup_remove(m->config.homedir, device->hub_name, device->device_id,
                                   module_id);
        if (r < 0)
                log_warning_errno(r, "Failed to remove the backup of module identity %s: %m",
                                  module_id);
        else if (r > 0 && identity_device_equal(device, &m->device))
                identity_object_emit_removed(m, module_id);
}

/* Answers msg from the backups of device. -ENOENT when there is no backup directory, or (only
 * when require_some) no backup in it. */
static int reply_list_from_backups(Manager *m, sd_bus_message *msg, const IdentityDevice *device,
                                   bool require_some, OpError *e)
{
        _cleanup_free_ HubModule *modules = NULL;
        IdentityModuleBackup *backups = NULL;
        size_t n = 0;
        int r;

        r = identity_backup_list(m->config.homedir, device->hub_name, device->device_id,
                                 &backups, &n);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || (require_some && n == 0)) {
                identity_module_backups_free(backups, n);
                return -ENOENT;
        }
        modules = calloc(n + 1, sizeof(*modules));
        if (!modules) {
                identity_module_backups_free(backups, n);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
                modules[i] = module_of_backup(&backups[i]);
        r = reply_list(msg, device, modules, n, e);
        identity_module_backups_free(backups, n);
        return r;
}

/* ---- IoT Hub (cloud-protocols.md §4) ---- */

/* An id in a request path: the SAS set of cloud-protocols.md §4.1, and "/" too (IoT Hub allows
 * none in ids), so that no id can name another path; "." and ".." are spelled out for the
 * same reason. */
static char *path_encode(const char *id)
{
        _cleanup_free_ char *sas = identity_sas_encode(id);
        size_t slashes = 0;
        char *out, *p;

        if (!sas)
                return NULL;
        if (streq(sas, ".") || streq(sas, ".."))
                return strdup(streq(sas, ".") ? "%2E" : "%2E%2E");
        for (const char *q = sas; *q; q++)
                slashes += *q == '/';
        out = malloc(strlen(sas) + 2 * slashes + 1);
        if (!out)
                return NULL;
        p = out;
        for (const char *q = sas; *q; q++) {
                if (*q == '/') {
                        memcpy(p, "%2F", 3);
                        p += 3;
                } else
                        *p++ = *q;
        }
        *p = '\0';
        return out;
}

static int hub_url(const IdentityDevice *device, const char *module_id, char **ret)
{
        _cleanup_free_ char *d = path_encode(device->device_id), *mid = NULL;

        if (!d || (module_id && !(mid = path_encode(module_id))))
                return -ENOMEM;
        if (asprintf(ret, "https://%s/devices/%s/modules%s%s?api-version=" HUB_API_VERSION,
                     identity_device_gateway(device), d, mid ? "/" : "", strempty(mid)) < 0)
                return -ENOMEM;
        return 0;
}

/* The outcome of a request as upstream's Hub client judges it: 0, or a negative errno with e
 * filled ("Hub client error\ncaused by: …"). */
static int hub_outcome(HubCall what, int error, const char *message, bool network, long status,
                       JsonNode *json, OpError *e)
{
        long expected = what == HUB_DELETE ? 204 : 200;
        JsonObject *o;
        const char *text;
        int r;

        e->network = false;
        if (error < 0) {
                e->network = network;
                return op_error(e, error, IDENTITY_ERROR_CLOUD, "Hub client error\ncaused by: %s",
                                message ?: strerror(-error));
        }
        if (status >= 400) {
                r = status == 404 ? -ENOENT : (status == 401 || status == 403) ? -EACCES : -EIO;
                /* 500 is how a parent edgeHub says that it cannot reach IoT Hub (§4.11). */
                e->network = status == 500;
                if (!json)
                        return op_error(e, r, IDENTITY_ERROR_CLOUD,
                                        "Hub client error\ncaused by: HTTP error %ld", status);
                o = JSON_NODE_HOLDS_OBJECT(json) ? json_node_get_object(json) : NULL;
                text = identity_json_string(o, "Message") ?: identity_json_string(o, "errorMessage");
                if (!text)
                        return op_error(e, r, IDENTITY_ERROR_CLOUD,
                                        "Hub client error\ncaused by: HTTP %ld with an error "
                                        "body that is not IoT Hub's",
                                        status);
                if (json_object_has_member(o, "networkError") &&
                    json_node_get_value_type(json_object_get_member(o, "networkError")) ==
                            G_TYPE_BOOLEAN &&
                    json_object_get_boolean_member(o, "networkError"))
                        e->network = true;
                return op_error(e, r, IDENTITY_ERROR_CLOUD, "Hub client error\ncaused by: %s",
                                text);
        }
        if (status != expected)
                return op_error(e, -EBADMSG, IDENTITY_ERROR_CLOUD,
                                "Hub client error\ncaused by: Expected one of [%ld], got %ld",
                                expected, status);
        if (expected == 200 && !json)
                return op_error(e, -EBADMSG, IDENTITY_ERROR_CLOUD,
                                "Hub client error\ncaused by: HTTP %ld without a body", status);
        return 0;
}

static int parse_module(JsonNode *node, HubModule *ret, OpError *e)
{
        JsonObject *o = node && JSON_NODE_HOLDS_OBJECT(node) ? json_node_get_object(node) : NULL;
        HubModule mod = {
                identity_json_string(o, "moduleId"),
                identity_json_string(o, "deviceId"),
                identity_json_string(o, "generationId"),
                identity_json_string(o, "managedBy"),
        };

        if (!mod.module_id || !mod.device_id)
                return op_error(e, -EBADMSG, IDENTITY_ERROR_CLOUD,
                                "Hub client error\ncaused by: invalid data: a module without "
                                "moduleId or deviceId");
        *ret = mod;
        return 0;
}

static int parse_module_list(JsonNode *node, HubModule **ret, size_t *ret_n, OpError *e)
{
        _cleanup_free_ HubModule *modules = NULL;
        JsonArray *a;
        size_t n;
        int r;

        if (!node || !JSON_NODE_HOLDS_ARRAY(node))
                return op_error(e, -EBADMSG, IDENTITY_ERROR_CLOUD,
                                "Hub client error\ncaused by: invalid data: not a list of "
                                "modules");
        a = json_node_get_array(node);
        n = json_array_get_length(a);
        modules = calloc(n + 1, sizeof(*modules));
        if (!modules)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                r = parse_module(json_array_get_element(a, (guint)i), &modules[i], e);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(modules);
        *ret_n = n;
        return 0;
}

static void on_hub_answer(int error, const char *message, bool network, long status,
                          JsonNode *json, void *userdata);

/* Sends op's next request (the module: op->module_id). */
static int hub_start(ModuleOp *op, HubCall what, JsonNode *body, OpError *e)
{
        Manager *m = op->mods->manager;
        static const char *const if_match[] = { "If-Match: *", NULL };
        _cleanup_free_ char *url = NULL, *audience = NULL;
        static const char *const methods[] = {
                [HUB_LIST] = "GET",    [HUB_GET] = "GET",       [HUB_CREATE] = "PUT",
                [HUB_SET_KEYS] = "PUT", [HUB_DELETE] = "DELETE",
        };
        int r;

        r = hub_url(&op->device, what == HUB_LIST ? NULL : op->module_id, &url);
        if (r >= 0 && asprintf(&audience, "%s/devices/%s", op->device.hub_name,
                               op->device.device_id) < 0)
                r = -ENOMEM;
        if (r >= 0)
                r = identity_cloud_request(
                        m->http, m->event,
                        &(IdentityCloudRequest){
                                .method = methods[what],
                                .url = url,
                                .body = body,
                                .headers = what == HUB_SET_KEYS || what == HUB_DELETE ? if_match
                                                                                      : NULL,
                                .credentials = &op->credentials,
                                /* Always the hub's name, even through a parent (§4.11). */
                                .sas_audience = audience,
                                .timeout_sec = m->config.cloud_timeout_sec,
                                .retries = m->config.cloud_retries,
                        },
                        on_hub_answer, op, &op->call);
        if (r < 0)
                return op_error(e, r, IDENTITY_ERROR_CLOUD,
                                "Hub client error\ncaused by: cannot send the request: %s",
                                strerror(-r));
        op->pending = what;
        log_debug("IoT Hub: %s %s", methods[what], url);
        return 0;
}

/* Zeroes a string member of o in place (json-glib keeps its own copy of what it was given). */
static void wipe_member(JsonObject *o, const char *name)
{
        JsonNode *n = o ? json_object_get_member(o, name) : NULL;
        char *s;

        if (!n || json_node_get_value_type(n) != G_TYPE_STRING)
                return;
        s = (char *)json_node_get_string(n);
        if (s)
                explicit_bzero(s, strlen(s));
}

/* Derives the module's keys and writes them into IoT Hub (spec §4.8). */
static int set_keys(ModuleOp *op, const HubModule *module, OpError *e)
{
        Manager *m = op->mods->manager;
        g_autoptr(JsonBuilder) builder = json_builder_new();
        g_autoptr(JsonNode) body = NULL;
        _cleanup_(module_keys_done) ModuleKeys keys = {};
        JsonObject *symmetric;
        int r;

        r = module_keys(m, module, /* export= */ true, &keys, e);
        if (r < 0)
                return r;
        json_builder_begin_object(builder);
        json_builder_set_member_name(builder, "moduleId");
        json_builder_add_string_value(builder, module->module_id);
        json_builder_set_member_name(builder, "deviceId");
        json_builder_add_string_value(builder, op->device.device_id);
        json_builder_set_member_name(builder, "authentication");
        json_builder_begin_object(builder);
        json_builder_set_member_name(builder, "symmetricKey");
        json_builder_begin_object(builder);
        json_builder_set_member_name(builder, "primaryKey");
        json_builder_add_string_value(builder, keys.primary);
        json_builder_set_member_name(builder, "secondaryKey");
        json_builder_add_string_value(builder, keys.secondary);
        json_builder_end_object(builder);
        json_builder_set_member_name(builder, "type");
        json_builder_add_string_value(builder, "sas");
        json_builder_end_object(builder);
        json_builder_end_object(builder);
        body = json_builder_get_root(builder);

        free(op->module_id);
        op->module_id = strdup(module->module_id);
        if (!op->module_id)
                return -ENOMEM;
        r = hub_start(op, HUB_SET_KEYS, body, e);
        symmetric = json_object_get_object_member(
                json_object_get_object_member(json_node_get_object(body), "authentication"),
                "symmetricKey");
        wipe_member(symmetric, "primaryKey");
        wipe_member(symmetric, "secondaryKey");
        if (r < 0)
                return r;
        free(op->key_handle);
        op->key_handle = TAKE_PTR(keys.primary_handle);
        return 0;
}

static int start_create(ModuleOp *op, OpError *e)
{
        g_autoptr(JsonBuilder) builder = json_builder_new();
        g_autoptr(JsonNode) body = NULL;

        json_builder_begin_object(builder);
        json_builder_set_member_name(builder, "moduleId");
        json_builder_add_string_value(builder, op->module_id);
        json_builder_set_member_name(builder, "deviceId");
        json_builder_add_string_value(builder, op->device.device_id);
        json_builder_end_object(builder);
        body = json_builder_get_root(builder);
        return hub_start(op, HUB_CREATE, body, e);
}

/* ---- reconciliation (spec §4.7) ---- */

static bool strv_contains(char **l, const char *s)
{
        for (; l && *l; l++)
                if (streq(*l, s))
                        return true;
        return false;
}

static ssize_t current_index(const ModuleOp *op, const char *name)
{
        for (size_t i = 0; i < op->n_current; i++)
                if (streq(op->current[i], name))
                        return (ssize_t)i;
        return -1;
}

static int strv_append(char ***l, size_t *n, const char *s)
{
        char **grown = reallocarray(*l, *n + 2, sizeof(char *));

        if (!grown)
                return -ENOMEM;
        *l = grown;
        grown[*n] = strdup(s);
        if (!grown[*n])
                return -ENOMEM;
        grown[++*n] = NULL;
        return 0;
}

/* What to do with the modules IoT Hub has. */
static int reconcile_plan(ModuleOp *op, const HubModule *modules, size_t n)
{
        Manager *m = op->mods->manager;
        _cleanup_(identity_device_done) IdentityDevice device_info = {};
        _cleanup_strv_free_ char **previous = NULL;
        bool has_device_info;
        int r;

        r = identity_device_load(m->config.homedir, &device_info);
        if (r == -ENOMEM)
                return r;
        has_device_info = r >= 0;
        r = identity_prev_state_modules(m->config.homedir, &op->device,
                                        has_device_info ? &device_info : NULL, &previous);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                const char *id = modules[i].module_id;
                ssize_t cur = current_index(op, id);
                bool prev = strv_contains(previous, id);

                if (cur >= 0 && prev) {
                        op->keep[cur] = true;
                        log_info("Hub identity %s already exists.", id);
                        continue;
                }
                /* Gone from the principals, or not created by this configuration (its keys
                 * are not ours): deleted, and in the second case created again. */
                if (cur >= 0 || prev) {
                        r = strv_append(&op->to_delete, &op->n_delete, id);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int reconcile_finish(ModuleOp *op, OpError *e)
{
        Manager *m = op->mods->manager;
        _cleanup_free_ IdentityHubModule *kept = calloc(op->n_current + 1, sizeof(*kept));
        int r;

        if (!kept)
                return -ENOMEM;
        if (!op_device_current(op)) {
                log_info("The device changed during the reconciliation; not recording it.");
                return 0;
        }
        for (size_t i = 0; i < op->n_current; i++)
                kept[i] = (IdentityHubModule){ op->current[i], op->current_uids[i] };
        r = identity_device_save(m->config.homedir, &op->device);
        if (r < 0)
                return op_error(e, r, IDENTITY_ERROR_FAILED,
                                "could not save device information state: %s", strerror(-r));
        r = identity_prev_state_save(m->config.homedir, &op->device, kept, op->n_current);
        if (r < 0)
                return op_error(e, r, IDENTITY_ERROR_FAILED, "could not save settings: %s",
                                strerror(-r));
        return 0;
}

/* The next step of a reconciliation: deletions, then creations, then the record. Returns 1 when
 * a request is in flight, 0 when done. */
static int reconcile_next(ModuleOp *op, OpError *e)
{
        const char *id;
        int r;

        if (op->next_delete < op->n_delete) {
                id = op->to_delete[op->next_delete++];
                free(op->module_id);
                op->module_id = strdup(id);
                if (!op->module_id)
                        return -ENOMEM;
                log_info("Deleting Hub identity %s.", id);
                r = hub_start(op, HUB_DELETE, NULL, e);
                return r < 0 ? r : 1;
        }
        while (op->next_create < op->n_current) {
                size_t i = op->next_create++;

                if (op->keep[i])
                        continue;
                id = op->current[i];
                free(op->module_id);
                op->module_id = strdup(id);
                if (!op->module_id)
                        return -ENOMEM;
                log_info("Creating Hub identity %s.", id);
                r = start_create(op, e);
                return r < 0 ? r : 1;
        }
        return reconcile_finish(op, e);
}

/* ---- the answers of IoT Hub ---- */

/* Moves op on after IoT Hub said yes. Returns 1 when op waits for another request, 0 when it is
 * finished (its caller answered), or a negative errno with e filled. */
static int op_step(ModuleOp *op, JsonNode *json, OpError *e)
{
        Manager *m = op->mods->manager;
        _cleanup_free_ HubModule *modules = NULL;
        HubModule module;
        size_t n = 0;
        int r;

        switch (op->pending) {
        case HUB_LIST:
                r = parse_module_list(json, &modules, &n, e);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n && op_device_current(op); i++)
                        save_backup(m, &op->device, &modules[i]);
                if (op->kind == OP_LIST) {
                        r = reply_list(op->msg, &op->device, modules, n, e);
                        return r < 0 ? r : 0;
                }
                r = reconcile_plan(op, modules, n);
                if (r < 0)
                        return op_error(e, r, IDENTITY_ERROR_FAILED, "internal error");
                return reconcile_next(op, e);
        case HUB_GET:
                r = parse_module(json, &module, e);
                if (r < 0)
                        return r;
                if (op_device_current(op))
                        save_backup(m, &op->device, &module);
                if (op->kind == OP_UPDATE) {
                        r = set_keys(op, &module, e);
                        return r < 0 ? r : 1;
                }
                r = reply_module(m, op->msg, &op->device, &module, /* key_handle= */ NULL, e);
                return r < 0 ? r : 0;
        case HUB_CREATE:
                r = parse_module(json, &module, e);
                if (r < 0)
                        return r;
                r = set_keys(op, &module, e);
                return r < 0 ? r : 1;
        case HUB_SET_KEYS:
                r = parse_module(json, &module, e);
                if (r < 0)
                        return r;
                if (op_device_current(op))
                        save_backup(m, &op->device, &module);
                if (op->kind == OP_RECONCILE) {
                        log_info("Hub identity %s added.", module.module_id);
                        return reconcile_next(op, e);
                }
                r = reply_module(m, op->msg, &op->device, &module, op->key_handle, e);
                return r < 0 ? r : 0;
        case HUB_DELETE:
                if (op_device_current(op))
                        remove_backup(m, &op->device, op->module_id);
                if (op->kind == OP_RECONCILE) {
                        log_info("Hub identity %s removed.", op->module_id);
                        return reconcile_next(op, e);
                }
                r = sd_bus_reply_method_return(op->msg, "");
                if (r < 0)
                        return op_error(e, r, IDENTITY_ERROR_FAILED, "internal error");
                return 0;
        default:
                return op_error(e, -EINVAL, IDENTITY_ERROR_FAILED, "internal error");
        }
}

/* IoT Hub said no or could not be reached: the backups answer GET and LIST when they can
 * (spec §4.7). */
static void op_hub_failed(ModuleOp *op, int r, const OpError *e)
{
        Manager *m = op->mods->manager;
        _cleanup_(identity_module_backup_done) IdentityModuleBackup b = {};
        OpError fallback = {};
        HubModule module;
        int k;

        switch (op->kind) {
        case OP_GET:
                k = identity_backup_load(m->config.homedir, op->device.hub_name,
                                         op->device.device_id, op->module_id, &b);
                if (k < 0) {
                        /* Upstream's words; why IoT Hub failed goes to the log. */
                        log_warning("%s", e->text);
                        (void)op_error(&fallback, r, IDENTITY_ERROR_CLOUD,
                                       "Hub client error\ncaused by: module %s not found",
                                       op->module_id);
                        op_fail(op, r, &fallback);
                        return;
                }
                log_warning("%s\nAnswering from the backup of module identity %s.", e->text,
                            op->module_id);
                module = module_of_backup(&b);
                k = reply_module(m, op->msg, &op->device, &module, NULL, &fallback);
                if (k < 0) {
                        op_fail(op, k, &fallback);
                        return;
                }
                op_free(op);
                return;
        case OP_LIST:
                k = reply_list_from_backups(m, op->msg, &op->device, /* require_some= */ false,
                                            &fallback);
                if (k >= 0) {
                        log_warning("%s\nAnswering from the module identity backups.", e->text);
                        op_free(op);
                        return;
                }
                if (k != -ENOENT) {
                        if (!fallback.name)
                                (void)op_error(&fallback, k, IDENTITY_ERROR_FAILED,
                                               "internal error");
                        op_fail(op, k, &fallback);
                        return;
                }
                break;
        default:
                break;
        }
        op_fail(op, r, e);
}

static void on_hub_answer(int error, const char *message, bool network, long status,
                          JsonNode *json, void *userdata)
{
        ModuleOp *op = userdata;
        IdentityModulesDone done = op->done;
        void *done_userdata = op->userdata;
        Manager *m = op->mods->manager;
        bool answered_call = op->msg;
        OpError e = {};
        int r;

        /* identity-cloud.h frees the call when this returns. */
        op->call = NULL;
        r = hub_outcome(op->pending, error, message, network, status, json, &e);
        if (r < 0) {
                op_hub_failed(op, r, &e);
                return;
        }
        r = op_step(op, json, &e);
        if (r > 0)
                return;
        if (r < 0) {
                if (!e.name)
                        (void)op_error(&e, r, IDENTITY_ERROR_FAILED, "internal error");
                op_fail(op, r, &e);
                return;
        }
        op_free(op);
        if (!answered_call)
                reconcile_ended(m, done, done_userdata, 0, NULL, false);
}

/* ---- the D-Bus methods ---- */

static int reply_op_error(sd_bus_error *error, int r, const OpError *e)
{
        if (r == -ENOMEM)
                return r;
        log_warning("%s", e->text);
        return sd_bus_error_set(error, e->name ?: IDENTITY_ERROR_FAILED,
                                e->name ? e->text : "internal error");
}

static int not_provisioned(sd_bus_error *error)
{
        return sd_bus_error_set(error, IDENTITY_ERROR_NOT_FOUND, "device identity not found");
}

/* Starts an operation answering msg with its first request. */
static int op_start_call(Manager *m, OpKind kind, sd_bus_message *msg, const char *module_id,
                         HubCall first, sd_bus_error *error)
{
        _cleanup_(op_freep) ModuleOp *op = NULL;
        OpError e = {};
        int r;

        if (!device_provisioned(m))
                return not_provisioned(error);
        r = op_new(m, kind, module_id, &op, &e);
        if (r >= 0) {
                op_link(m->modules, op);
                r = first == HUB_CREATE ? start_create(op, &e) : hub_start(op, first, NULL, &e);
        }
        if (r < 0)
                return reply_op_error(error, r, &e);
        op->msg = sd_bus_message_ref(msg);
        TAKE_PTR(op);
        return 1;
}

int identity_modules_get(Manager *m, sd_bus_message *msg, const char *module_id,
                         sd_bus_error *error)
{
        _cleanup_(identity_module_backup_done) IdentityModuleBackup b = {};
        HubModule module;
        OpError e = {};
        int r;

        if (!device_provisioned(m))
                return not_provisioned(error);
        if (m->config.prefer_module_identity_cache) {
                r = identity_backup_load(m->config.homedir, m->device.hub_name,
                                         m->device.device_id, module_id, &b);
                if (r == -ENOMEM)
                        return r;
                if (r >= 0) {
                        module = module_of_backup(&b);
                        r = reply_module(m, msg, &m->device, &module, NULL, &e);
                        return r < 0 ? reply_op_error(error, r, &e) : 1;
                }
        }
        return op_start_call(m, OP_GET, msg, module_id, HUB_GET, error);
}

int identity_modules_list(Manager *m, sd_bus_message *msg, sd_bus_error *error)
{
        OpError e = {};
        int r;

        if (!device_provisioned(m))
                return not_provisioned(error);
        if (m->config.prefer_module_identity_cache) {
                r = reply_list_from_backups(m, msg, &m->device, /* require_some= */ true, &e);
                if (r >= 0)
                        return 1;
                if (r != -ENOENT)
                        return reply_op_error(error, r, &e);
        }
        return op_start_call(m, OP_LIST, msg, NULL, HUB_LIST, error);
}

int identity_modules_create(Manager *m, sd_bus_message *msg, const char *module_id,
                            sd_bus_error *error)
{
        return op_start_call(m, OP_CREATE, msg, module_id, HUB_CREATE, error);
}

int identity_modules_update(Manager *m, sd_bus_message *msg, const char *module_id,
                            sd_bus_error *error)
{
        /* The module as IoT Hub has it, then its keys written again (spec §4.3). */
        return op_start_call(m, OP_UPDATE, msg, module_id, HUB_GET, error);
}

int identity_modules_delete(Manager *m, sd_bus_message *msg, const char *module_id,
                            sd_bus_error *error)
{
        return op_start_call(m, OP_DELETE, msg, module_id, HUB_DELETE, error);
}

/* ---- the rest of the interface ---- */

/* The principals with idtype "module", copied: a reload may replace the configuration while the
 * reconciliation runs. */
static int copy_current(ModuleOp *op, const IdentityConfig *c)
{
        op->current = calloc(c->n_principals + 1, sizeof(char *));
        op->current_uids = calloc(c->n_principals + 1, sizeof(uid_t));
        op->keep = calloc(c->n_principals + 1, sizeof(bool));
        if (!op->current || !op->current_uids || !op->keep)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_principals; i++) {
                if (!(c->principals[i].idtypes & IDENTITY_IDTYPE_MODULE) ||
                    current_index(op, c->principals[i].name) >= 0)
                        continue;
                op->current[op->n_current] = strdup(c->principals[i].name);
                if (!op->current[op->n_current])
                        return -ENOMEM;
                op->current_uids[op->n_current++] = c->principals[i].uid;
        }
        return 0;
}

/* Starts a reconciliation; none may be running. */
static int reconcile_begin(Manager *m, IdentityModulesDone done, void *userdata)
{
        _cleanup_(op_freep) ModuleOp *op = NULL;
        OpError e = {};
        int r;

        m->modules->reconciling = true;
        if (!device_provisioned(m)) {
                log_info("Reconciliation skipped: the device is not provisioned.");
                reconcile_ended(m, done, userdata, 0, NULL, false);
                return 0;
        }
        r = op_new(m, OP_RECONCILE, NULL, &op, &e);
        if (r >= 0) {
                op->done = done;
                op->userdata = userdata;
                r = copy_current(op, &m->config);
        }
        if (r == -ENOMEM) {
                m->modules->reconciling = false;
                return r;
        }
        if (r < 0) {
                log_warning("%s", e.text);
                reconcile_ended(m, done, userdata, r, e.text, false);
                return 0;
        }
        /* A device seen for the first time: the backups of any other go (spec §4.7). */
        r = identity_backup_open_device(m->config.homedir, op->device.hub_name,
                                        op->device.device_id);
        if (r < 0)
                log_warning_errno(r, "Failed to prepare the module identity backups: %m");
        log_info("Reconciling the module identities of device %s with IoT Hub (%zu principal(s) "
                 "with idtype \"module\").",
                 op->device.device_id, op->n_current);
        op_link(m->modules, op);
        r = hub_start(op, HUB_LIST, NULL, &e);
        if (r < 0) {
                op_fail(TAKE_PTR(op), r, &e);
                return 0;
        }
        TAKE_PTR(op);
        return 0;
}

/* Reports the end of the reconciliation that ran, then starts the next one asked for (unless
 * done started one itself). */
static void reconcile_ended(Manager *m, IdentityModulesDone done, void *userdata, int r,
                            const char *message, bool network)
{
        IdentityModules *mods = m->modules;

        mods->reconciling = false;
        done(m, r, message, network, userdata);
        while (!mods->reconciling && mods->n_waiting > 0) {
                WaitingReconcile next = mods->waiting[0];

                memmove(mods->waiting, mods->waiting + 1,
                        --mods->n_waiting * sizeof(*mods->waiting));
                r = reconcile_begin(m, next.done, next.userdata);
                if (r < 0)
                        next.done(m, r, "cannot reconcile module identities: out of memory",
                                  false, next.userdata);
        }
}

int identity_modules_reconcile(Manager *m, IdentityModulesDone done, void *userdata)
{
        IdentityModules *mods = m->modules;
        WaitingReconcile *waiting;

        /* One at a time, as upstream (its API lock): two would create and delete the same
         * modules. */
        if (!mods->reconciling)
                return reconcile_begin(m, done, userdata);
        waiting = reallocarray(mods->waiting, mods->n_waiting + 1, sizeof(*waiting));
        if (!waiting)
                return -ENOMEM;
        mods->waiting = waiting;
        mods->waiting[mods->n_waiting++] = (WaitingReconcile){ done, userdata };
        log_debug("A reconciliation is running; the next one waits for it.");
        return 0;
}

int identity_modules_forget(Manager *m)
{
        _cleanup_(identity_device_done) IdentityDevice recorded = {};
        int r;

        /* The device device_info names (the caller saved the new one) keeps its backups: at
         * startup, before identityd knew any device, "changed" is no change at all. */
        r = identity_device_load(m->config.homedir, &recorded);
        if (r == -ENOMEM)
                return r;
        if (r >= 0)
                r = identity_backup_forget_others(m->config.homedir, recorded.hub_name,
                                                  recorded.device_id);
        else
                r = identity_backup_forget_all(m->config.homedir);
        if (r < 0)
                return log_warning_errno(r, "Failed to remove the module identity backups: %m");
        if (r > 0)
                log_info("Removed the module identity backups of the previous device.");
        return 0;
}

int identity_modules_new(Manager *m, IdentityModules **ret)
{
        IdentityModules *mods = calloc(1, sizeof(*mods));

        if (!mods)
                return -ENOMEM;
        mods->manager = m;
        *ret = mods;
        return 0;
}

void identity_modules_free(IdentityModules *mods)
{
        if (!mods)
                return;
        /* Pending calls are dropped unanswered (the bus goes next), and reconciliations end
         * without their callback. */
        while (mods->ops)
                op_free(mods->ops);
        free(mods->waiting);
        free(mods);
}
