/* SPDX-License-Identifier: MIT */
/* The bus surface of aziot-identityd. Callers are classified by the principals of the
 * configuration (spec §4.5); what the table refuses them, polkit may still grant (actions
 * org.aziot.identity.*), the call being dispatched again with polkit's answer. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "bus-authorize.h"
#include "identity-modules.h"
#include "identity-object.h"
#include "identityd.h"
#include "log.h"
#include "macro.h"

#define KEYS_BUS_NAME "org.aziot.Keys1"
#define KEYS_OBJECT_PATH "/org/aziot/Keys1"
#define KEYS_INTERFACE "org.aziot.Keys1"
#define CERTS_BUS_NAME "org.aziot.Certificates1"
#define CERTS_OBJECT_PATH "/org/aziot/Certificates1"
#define CERTS_INTERFACE "org.aziot.Certificates1"
#define PAYLOAD_MAX (64u * 1024u)
#define TRUST_BUNDLE_ID "aziot-dps-trust-bundle"

static const char *const actions[] = {
        [IDENTITY_OP_GET_DEVICE] = "org.aziot.identity.get-device",
        [IDENTITY_OP_GET_MODULE] = "org.aziot.identity.get-module",
        [IDENTITY_OP_MANAGE] = "org.aziot.identity.manage",
        [IDENTITY_OP_TRUST_BUNDLE] = NULL,
};

int identity_reply_not_authorized(sd_bus_error *error)
{
        return sd_bus_error_set(error, IDENTITY_ERROR_NOT_AUTHORIZED, "authorization error");
}

/* CreateModuleIdentity's own option, read again by identity_local_create(). */
static int accept_attributes(sd_bus_message *msg, const char *name, void *userdata,
                             sd_bus_error *error)
{
        bool *allowed = userdata;
        int r;

        if (!*allowed || !streq(name, "attributes"))
                return 0;
        r = sd_bus_message_skip(msg, "v");
        return r < 0 ? r : 1;
}

static int authorize_with(Manager *m, sd_bus_message *msg, IdentityOperation op,
                          const char *module_id, bool attributes_allowed,
                          IdentityCaller *ret_caller, sd_bus_error *error)
{
        const char *details[] = { module_id ? "module_id" : NULL, module_id, NULL };
        BusCaller who;
        IdentityCaller caller;
        int client_socket = -EBADF, r;

        r = bus_read_options(msg, true, &client_socket, accept_attributes, &attributes_allowed,
                             error);
        if (r < 0)
                return r;
        r = bus_caller_resolve(msg, NULL, client_socket, m->gateway_uid, &m->sender_uids, &who);
        if (r == -EPERM)
                return sd_bus_error_setf(error, IDENTITY_ERROR_NOT_AUTHORIZED,
                                         "user %u may not act for another process",
                                         (unsigned)who.uid);
        if (r == -ENOTSOCK || r == -ESRCH || r == -EBADF)
                return sd_bus_error_set(error, IDENTITY_ERROR_INVALID_PARAMETER,
                                        "parameter \"client-socket\" has an invalid value");
        if (r < 0)
                return r;
        caller = identity_config_classify(&m->config, who.uid);
        if (ret_caller)
                *ret_caller = caller;
        if (identity_caller_allowed(&caller, op, module_id))
                return 1;
        if (!actions[op])
                return identity_reply_not_authorized(error);
        r = polkit_check_async(msg, actions[op], details, who.process_subject ? &who.peer : NULL,
                               &m->polkit_registry);
        if (r == 0)
                return 0;
        if (r > 0)
                return 1;
        if (r != -EACCES)
                log_debug_errno(r, "Authorization of user %u failed: %m", (unsigned)who.uid);
        return identity_reply_not_authorized(error);
}

int identity_authorize(Manager *m, sd_bus_message *msg, IdentityOperation op,
                       const char *module_id, IdentityCaller *ret_caller, sd_bus_error *error)
{
        return authorize_with(m, msg, op, module_id, false, ret_caller, error);
}

/* ---- calls to keyd and certd, as identityd ---- */

int identity_call_string(Manager *m, const char *service, const char *method, char **ret,
                         char *message, size_t size, const char *types, ...)
{
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        bool keyd = streq(service, "keyd");
        const char *s;
        va_list ap;
        int r;

        r = sd_bus_message_new_method_call(m->bus, &call, keyd ? KEYS_BUS_NAME : CERTS_BUS_NAME,
                                           keyd ? KEYS_OBJECT_PATH : CERTS_OBJECT_PATH,
                                           keyd ? KEYS_INTERFACE : CERTS_INTERFACE, method);
        if (r < 0)
                return r;
        va_start(ap, types);
        r = sd_bus_message_appendv(call, types, ap);
        va_end(ap);
        if (r >= 0)
                r = sd_bus_message_append(call, "a{sv}", 0);
        if (r >= 0)
                r = sd_bus_call(m->bus, call, 0, &e, &reply);
        if (r < 0) {
                (void)snprintf(message, size, "%s client error\ncaused by: %s",
                               keyd ? "Key" : "Cert", e.message ? e.message : strerror(-r));
                if (sd_bus_error_has_name(&e, "org.aziot.Keys1.Error.NotFound") ||
                    sd_bus_error_has_name(&e, "org.aziot.Certificates1.Error.NotFound"))
                        return -ENOENT;
                return r;
        }
        if (!ret)
                return 0;
        r = sd_bus_message_read(reply, "s", &s);
        if (r < 0)
                return r;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int identity_reply_cloud_error(sd_bus_error *error, int r, const char *message)
{
        if (r == -ENOMEM)
                return r;
        log_warning("%s", message);
        return sd_bus_error_set(error, IDENTITY_ERROR_CLOUD, message);
}

/* ---- identities ---- */

int identity_append_entry(sd_bus_message *reply, const char *key, const char *value)
{
        if (!value)
                return 0;
        return sd_bus_message_append(reply, "{sv}", key, "s", value);
}

/* The device identity's auth members, with a fresh key handle. */
static int append_device_auth(Manager *m, sd_bus_message *reply, sd_bus_error *error)
{
        const IdentityProvisioning *p = &m->config.provisioning;
        _cleanup_free_ char *handle = NULL;
        char message[512];
        int r;

        switch (p->auth) {
        case IDENTITY_AUTH_TPM:
                return identity_append_entry(reply, "authType", "tpm");
        case IDENTITY_AUTH_X509:
                r = identity_call_string(m, "keyd", "LoadKeyPair", &handle, message,
                                         sizeof(message), "s", p->identity_pk);
                if (r < 0)
                        return identity_reply_cloud_error(error, r, message);
                r = identity_append_entry(reply, "authType", "x509");
                if (r >= 0)
                        r = identity_append_entry(reply, "keyHandle", handle);
                if (r >= 0)
                        r = identity_append_entry(reply, "certId", p->identity_cert);
                return r;
        default:
                r = identity_device_key_handle(m, &handle, message, sizeof(message));
                if (r < 0)
                        return identity_reply_cloud_error(error, r, message);
                r = identity_append_entry(reply, "authType", "sas");
                if (r >= 0)
                        r = identity_append_entry(reply, "keyHandle", handle);
                return r;
        }
}

static int reply_device_identity(Manager *m, sd_bus_message *msg, sd_bus_error *error)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        if (m->state != IDENTITY_STATE_PROVISIONED && m->state != IDENTITY_STATE_OFFLINE)
                return sd_bus_error_set(error, IDENTITY_ERROR_NOT_FOUND,
                                        "device identity not found");
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r >= 0)
                r = identity_append_entry(reply, "type", "aziot");
        if (r >= 0)
                r = identity_append_entry(reply, "hubName", m->device.hub_name);
        if (r >= 0)
                r = identity_append_entry(reply, "gatewayHost",
                                          identity_device_gateway(&m->device));
        if (r >= 0)
                r = identity_append_entry(reply, "deviceId", m->device.device_id);
        if (r >= 0)
                r = append_device_auth(m, reply, error);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_device_identity(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        int r;

        r = identity_authorize(m, msg, IDENTITY_OP_GET_DEVICE, NULL, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        return reply_device_identity(m, msg, error);
}

static int method_get_identity(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        IdentityCaller caller;
        int r;

        /* The device for callers allowed it, else the caller's own module. */
        r = identity_authorize(m, msg, IDENTITY_OP_TRUST_BUNDLE, NULL, &caller, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (identity_caller_allowed(&caller, IDENTITY_OP_GET_DEVICE, NULL))
                return reply_device_identity(m, msg, error);
        if (caller.kind != IDENTITY_CALLER_HOST)
                return identity_reply_not_authorized(error);
        return identity_modules_get(m, msg, caller.principal->name, error);
}

static int method_reprovision(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        int r;

        r = identity_authorize(m, msg, IDENTITY_OP_MANAGE, NULL, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        return identity_reprovision(m, msg, error);
}

/* The payload file as JSON text; -EINVAL when it cannot be read or is not JSON. */
static int read_payload(const char *path, char **ret)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GError) gerror = NULL;

        if (!json_parser_load_from_file(parser, path, &gerror) || !json_parser_get_root(parser)) {
                log_warning("The provisioning payload %s cannot be used: %s", path,
                            gerror ? gerror->message : "it is empty");
                return -EINVAL;
        }
        *ret = json_to_string(json_parser_get_root(parser), FALSE);
        return *ret ? 0 : -ENOMEM;
}

static int method_get_provisioning_info(sd_bus_message *msg, void *userdata,
                                        sd_bus_error *error)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *payload = NULL, *cn = NULL;
        Manager *m = userdata;
        const IdentityProvisioning *p = &m->config.provisioning;
        static const char *const dps_auth[] = {
                [IDENTITY_AUTH_SYMMETRIC_KEY] = "symmetric_key",
                [IDENTITY_AUTH_X509] = "x509",
                [IDENTITY_AUTH_TPM] = "tpm",
                [IDENTITY_AUTH_SAS] = "sas",
        };
        const char *registration_id = p->registration_id;
        int r;

        r = identity_authorize(m, msg, IDENTITY_OP_TRUST_BUNDLE, NULL, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (p->source == IDENTITY_SOURCE_DPS && p->payload_path) {
                r = read_payload(p->payload_path, &payload);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return sd_bus_error_set(error, IDENTITY_ERROR_INVALID_PARAMETER,
                                                "parameter \"provisioning.payload\" has an "
                                                "invalid value");
        }
        if (p->source == IDENTITY_SOURCE_DPS && !registration_id) {
                r = identity_registration_id(m, &cn);
                if (r == -ENOMEM)
                        return r;
                registration_id = cn;
        }

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r >= 0)
                r = identity_append_entry(reply, "source",
                                          p->source == IDENTITY_SOURCE_DPS      ? "dps"
                                          : p->source == IDENTITY_SOURCE_MANUAL ? "manual"
                                                                                : "none");
        if (r >= 0 && p->source != IDENTITY_SOURCE_NONE)
                r = identity_append_entry(reply, "auth", dps_auth[p->auth]);
        if (r >= 0 && p->source == IDENTITY_SOURCE_DPS) {
                r = identity_append_entry(reply, "endpoint", p->global_endpoint);
                if (r >= 0)
                        r = identity_append_entry(reply, "scope_id", p->scope_id);
                if (r >= 0)
                        r = identity_append_entry(reply, "registration_id", registration_id);
                if (r >= 0)
                        r = identity_append_entry(reply, "payload", payload);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_trust_bundle(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        _cleanup_free_ char *pem = NULL;
        Manager *m = userdata;
        char message[256];
        int r;

        r = identity_authorize(m, msg, IDENTITY_OP_TRUST_BUNDLE, NULL, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        /* What DPS gave the device to trust, kept in certd; nothing when it gave nothing. */
        r = identity_call_string(m, "certd", "GetCertificate", &pem, message, sizeof(message),
                                 "s", TRUST_BUNDLE_ID);
        if (r == -ENOMEM)
                return r;
        return sd_bus_reply_method_return(msg, "s", r >= 0 ? pem : "");
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface,
                              const char *property, sd_bus_message *reply, void *userdata,
                              sd_bus_error *error)
{
        Manager *m = userdata;

        return sd_bus_message_append(reply, "s", identity_state_to_string(m->state));
}

static int method_list_modules(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        int r;

        r = identity_authorize(m, msg, IDENTITY_OP_MANAGE, NULL, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        return identity_modules_list(m, msg, error);
}

static int read_type_and_id(sd_bus_message *msg, bool with_type, const char **ret_type,
                            const char **ret_id, sd_bus_error *error)
{
        const char *type = "aziot", *id;
        int r;

        if (with_type) {
                r = sd_bus_message_read(msg, "s", &type);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_read(msg, "s", &id);
        if (r < 0)
                return r;
        if (!streq(type, "aziot") && !streq(type, "local"))
                return sd_bus_error_setf(error, IDENTITY_ERROR_INVALID_PARAMETER,
                                         "parameter \"type\" has an invalid value\ncaused by: "
                                         "invalid type: %s",
                                         type);
        if (strspn(id, " \t\r\n") == strlen(id))
                return sd_bus_error_set(error, IDENTITY_ERROR_INVALID_PARAMETER,
                                        "parameter \"module_id\" has an invalid value");
        *ret_type = type;
        *ret_id = id;
        return 0;
}

static int method_get_module(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *type, *id;
        int r;

        r = read_type_and_id(msg, true, &type, &id, error);
        if (r < 0)
                return r;
        r = identity_authorize(m, msg, IDENTITY_OP_GET_MODULE, id, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (streq(type, "local"))
                return identity_local_get(m, msg, id, error);
        return identity_modules_get(m, msg, id, error);
}

static int method_create_module(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *type, *id;
        int r;

        r = read_type_and_id(msg, true, &type, &id, error);
        if (r < 0)
                return r;
        r = authorize_with(m, msg, IDENTITY_OP_MANAGE, NULL, streq(type, "local"), NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (streq(type, "local"))
                return identity_local_create(m, msg, id, error);
        return identity_modules_create(m, msg, id, error);
}

/* Update and delete: a module id, IDENTITY_OP_MANAGE, then the IoT Hub call. */
static int module_method(sd_bus_message *msg, Manager *m, sd_bus_error *error,
                         int (*act)(Manager *, sd_bus_message *, const char *, sd_bus_error *))
{
        const char *type, *id;
        int r;

        r = read_type_and_id(msg, false, &type, &id, error);
        if (r < 0)
                return r;
        r = identity_authorize(m, msg, IDENTITY_OP_MANAGE, NULL, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        return act(m, msg, id, error);
}

static int method_update_module(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return module_method(msg, userdata, error, identity_modules_update);
}

static int method_delete_module(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return module_method(msg, userdata, error, identity_modules_delete);
}

static const sd_bus_vtable identity_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("ProvisioningState", "s", property_get_state, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("MaxRequests", "u", NULL, offsetof(Manager, max_requests),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("GetIdentity", SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("a{sv}", identity), method_get_identity,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetDeviceIdentity", SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("a{sv}", identity), method_get_device_identity,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ReprovisionDevice", SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_NO_RESULT, method_reprovision, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetProvisioningInfo", SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("a{sv}", info), method_get_provisioning_info,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListModuleIdentities", SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("aa{sv}", identities), method_list_modules,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreateModuleIdentity",
                                SD_BUS_ARGS("s", type, "s", module_id, "a{sv}", options),
                                SD_BUS_RESULT("a{sv}", identity), method_create_module,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetModuleIdentity",
                                SD_BUS_ARGS("s", type, "s", module_id, "a{sv}", options),
                                SD_BUS_RESULT("a{sv}", identity), method_get_module,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("UpdateModuleIdentity", SD_BUS_ARGS("s", module_id, "a{sv}", options),
                                SD_BUS_RESULT("a{sv}", identity), method_update_module,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeleteModuleIdentity", SD_BUS_ARGS("s", module_id, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_delete_module,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetTrustBundle", SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("s", certificate), method_get_trust_bundle,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("DeviceProvisioned", SD_BUS_ARGS("s", hub_name, "s", device_id),
                                0),
        SD_BUS_VTABLE_END,
};

int identity_dbus_register(Manager *m)
{
        int r;

        r = sd_bus_add_object_vtable(m->bus, &m->object_slot, IDENTITY_OBJECT_PATH,
                                     IDENTITY_INTERFACE, identity_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register %s: %m", IDENTITY_OBJECT_PATH);
        return identity_object_register(m);
}
