/* SPDX-License-Identifier: MIT */
/* The bus surface of aziot-tpmd. Each TPM call is read and checked here, authorized when it needs
 * it, then handed to the TPM thread; the reply is sent when the thread is done, so the bus is
 * served while the TPM works. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bus-authorize.h"
#include "log.h"
#include "macro.h"
#include "tpmd.h"

typedef enum CallKind {
        CALL_KEYS,
        CALL_IMPORT,
        CALL_SIGN,
} CallKind;

typedef struct Call {
        Manager *m;
        CallKind kind;
        sd_bus_message *msg; /* NULL: the warm-up at start */
        uint32_t index;
        uint8_t *input;
        size_t input_len;
        /* the outcome, written by the TPM thread */
        int r;
        char message[TPM_MESSAGE_MAX];
        TpmBuffer ek, srk;
        uint8_t digest[32];
} Call;

static void call_free(Call *c)
{
        if (!c)
                return;
        sd_bus_message_unref(c->msg);
        if (c->input)
                explicit_bzero(c->input, c->input_len);
        free(c->input);
        tpm_buffer_done(&c->ek);
        tpm_buffer_done(&c->srk);
        explicit_bzero(c->digest, sizeof(c->digest));
        free(c);
}

static void call_freep(Call **c)
{
        call_free(*c);
}

static void call_run(TpmDevice *d, void *data)
{
        Call *c = data;

        switch (c->kind) {
        case CALL_KEYS:
                c->r = tpm_device_keys(d, &c->ek, &c->srk, c->message, sizeof(c->message));
                break;
        case CALL_IMPORT:
                c->r = tpm_device_import_auth_key(d, c->index, c->input, c->input_len, c->message,
                                                  sizeof(c->message));
                break;
        case CALL_SIGN:
                c->r = tpm_device_hmac(d, c->index, c->input, c->input_len, c->digest, c->message,
                                       sizeof(c->message));
                break;
        }
}

static const char *error_name(int r)
{
        switch (r) {
        case -EBADMSG:
        case -EINVAL:
                return TPM_ERROR_INVALID_PARAMETER;
        case -ENOENT:
                return TPM_ERROR_NOT_FOUND;
        case -ENODEV:
                return TPM_ERROR_UNAVAILABLE;
        default:
                return TPM_ERROR_FAILED;
        }
}

static int append_bytes(sd_bus_message *reply, const uint8_t *data, size_t len)
{
        return sd_bus_message_append_array(reply, 'y', data, len);
}

static int reply_keys(sd_bus_message *msg, const TpmBuffer *ek, const TpmBuffer *srk)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = append_bytes(reply, ek->data, ek->len);
        if (r >= 0)
                r = append_bytes(reply, srk->data, srk->len);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        return r;
}

static void call_done(void *data, bool cancelled)
{
        _cleanup_(call_freep) Call *c = data;
        Manager *m = c->m;
        int r = 0;

        if (cancelled) {
                if (c->msg)
                        (void)sd_bus_reply_method_errorf(c->msg, TPM_ERROR_UNAVAILABLE,
                                                         "tpmd is stopping");
                return;
        }
        if (c->r < 0) {
                log_warning("%s", c->message);
                if (c->msg)
                        (void)sd_bus_reply_method_errorf(c->msg, error_name(c->r), "%s",
                                                         c->message);
                return;
        }
        switch (c->kind) {
        case CALL_KEYS:
                if (!m->ek.data) {
                        m->ek = c->ek;
                        m->srk = c->srk;
                        c->ek = c->srk = (TpmBuffer){};
                }
                if (c->msg)
                        r = reply_keys(c->msg, &m->ek, &m->srk);
                break;
        case CALL_IMPORT:
                r = sd_bus_reply_method_return(c->msg, "");
                break;
        case CALL_SIGN: {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;

                r = sd_bus_message_new_method_return(c->msg, &reply);
                if (r >= 0)
                        r = append_bytes(reply, c->digest, sizeof(c->digest));
                if (r >= 0)
                        r = sd_bus_send(NULL, reply, NULL);
                break;
        }
        }
        if (r < 0)
                log_warning_errno(r, "Failed to reply: %m");
}

/* Queues c (taken over); on failure the call is answered. Returns 1. */
static int submit(Manager *m, Call *c, sd_bus_error *error)
{
        int r;

        c->m = m;
        c->index = m->config.auth_key_index;
        r = tpm_worker_submit(m->worker, call_run, call_done, c);
        if (r < 0) {
                call_free(c);
                return r;
        }
        return 1;
}

static Call *call_new(CallKind kind, sd_bus_message *msg)
{
        Call *c = calloc(1, sizeof(*c));

        if (c) {
                c->kind = kind;
                c->msg = sd_bus_message_ref(msg);
        }
        return c;
}

/* A call with a copy of the bytes it works on (the message's are gone once the handler returns). */
static Call *call_new_with_input(CallKind kind, sd_bus_message *msg, const void *data, size_t len)
{
        Call *c = call_new(kind, msg);

        if (!c)
                return NULL;
        c->input = malloc(MAX(len, (size_t)1));
        if (!c->input) {
                call_free(c);
                return NULL;
        }
        if (len)
                memcpy(c->input, data, len);
        c->input_len = len;
        return c;
}

static BusAuthContext auth_context(Manager *m)
{
        return (BusAuthContext){
                .gateway_uid = m->gateway_uid,
                .sender_uids = &m->sender_uids,
                .principals = &m->no_principals,
                .polkit_registry = &m->polkit_registry,
        };
}

static int read_options(sd_bus_message *msg, int *ret_client_socket, sd_bus_error *error)
{
        return bus_read_options(msg, true, ret_client_socket, NULL, NULL, error);
}

static int reply_not_delegating(sd_bus_error *error, uid_t uid)
{
        return sd_bus_error_setf(error, TPM_ERROR_NOT_AUTHORIZED,
                                 "user %u may not act for another process", (unsigned)uid);
}

/* Open to every caller the bus lets through, but a socket passed by one that may not delegate is
 * refused. */
static int check_delegation(Manager *m, sd_bus_message *msg, int client_socket,
                            sd_bus_error *error)
{
        BusAuthContext ctx = auth_context(m);
        uid_t uid = UID_INVALID;
        int r;

        r = bus_check_delegation(&ctx, msg, NULL, client_socket, &uid);
        if (r == -EPERM)
                return reply_not_delegating(error, uid);
        return r;
}

static int read_bytes(sd_bus_message *msg, const void **ret, size_t *ret_len)
{
        return sd_bus_message_read_array(msg, 'y', ret, ret_len);
}

static int method_get_tpm_keys(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        int client_socket, r;
        Call *c;

        r = read_options(msg, &client_socket, error);
        if (r < 0)
                return r;
        r = check_delegation(m, msg, client_socket, error);
        if (r < 0)
                return r;
        if (m->ek.data)
                return reply_keys(msg, &m->ek, &m->srk);
        c = call_new(CALL_KEYS, msg);
        if (!c)
                return -ENOMEM;
        return submit(m, c, error);
}

static int method_import_auth_key(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        BusAuthContext ctx = auth_context(m);
        const char *ids[] = { NULL };
        const char *denied = NULL;
        char problem[TPM_MESSAGE_MAX];
        const void *blob;
        uid_t uid = UID_INVALID;
        size_t len;
        int client_socket, r;
        Call *c;

        r = read_bytes(msg, &blob, &len);
        if (r < 0)
                return r;
        r = read_options(msg, &client_socket, error);
        if (r < 0)
                return r;
        /* Checked before authorization, so that nothing is asked about garbage. */
        if (len > TPM_BLOB_MAX)
                return sd_bus_error_setf(error, TPM_ERROR_INVALID_PARAMETER,
                                         "malformed authentication key: over %u bytes",
                                         TPM_BLOB_MAX);
        r = tpm_auth_blob_check(blob, len, problem, sizeof(problem));
        if (r < 0)
                return sd_bus_error_set(error, TPM_ERROR_INVALID_PARAMETER, problem);

        r = bus_authorize(&ctx, msg, NULL, client_socket, ids, NULL, TPM_ACTION_IMPORT, NULL,
                          &uid, &denied);
        switch (r) {
        case -EPERM:
                return reply_not_delegating(error, uid);
        case -ENOTSOCK:
                return sd_bus_error_set(error, TPM_ERROR_INVALID_PARAMETER,
                                        "parameter \"client-socket\" has an invalid value");
        case -EACCES:
                return sd_bus_error_setf(error, TPM_ERROR_NOT_AUTHORIZED,
                                         "user %u is not authorized to import the TPM "
                                         "authentication key",
                                         (unsigned)uid);
        default:
                if (r <= 0)
                        return r < 0 ? r : 1;
        }

        c = call_new_with_input(CALL_IMPORT, msg, blob, len);
        if (!c)
                return -ENOMEM;
        log_info("Importing the TPM authentication key for uid %u.", (unsigned)uid);
        return submit(m, c, error);
}

static int method_sign_with_auth_key(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const void *data;
        size_t len;
        int client_socket, r;
        Call *c;

        r = read_bytes(msg, &data, &len);
        if (r < 0)
                return r;
        r = read_options(msg, &client_socket, error);
        if (r < 0)
                return r;
        r = check_delegation(m, msg, client_socket, error);
        if (r < 0)
                return r;
        if (len > TPM_SIGN_DATA_MAX)
                return sd_bus_error_setf(error, TPM_ERROR_INVALID_PARAMETER,
                                         "parameter \"data\" is over %u bytes",
                                         TPM_SIGN_DATA_MAX);
        c = call_new_with_input(CALL_SIGN, msg, data, len);
        if (!c)
                return -ENOMEM;
        return submit(m, c, error);
}

static int property_get_index(sd_bus *bus, const char *path, const char *interface,
                              const char *property, sd_bus_message *reply, void *userdata,
                              sd_bus_error *error)
{
        Manager *m = userdata;

        return sd_bus_message_append(reply, "u", m->config.auth_key_index);
}

static int property_get_tcti(sd_bus *bus, const char *path, const char *interface,
                             const char *property, sd_bus_message *reply, void *userdata,
                             sd_bus_error *error)
{
        Manager *m = userdata;

        return sd_bus_message_append(reply, "s", strempty(m->config.settings.tcti));
}

static const sd_bus_vtable tpm_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("AuthKeyIndex", "u", property_get_index, 0,
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Tcti", "s", property_get_tcti, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("MaxRequests", "u", NULL, offsetof(Manager, config.max_requests),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("GetTpmKeys", SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("ay", endorsement_key, "ay", storage_root_key),
                                method_get_tpm_keys, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ImportAuthKey", SD_BUS_ARGS("ay", key, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_import_auth_key,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SignWithAuthKey", SD_BUS_ARGS("ay", data, "a{sv}", options),
                                SD_BUS_RESULT("ay", digest), method_sign_with_auth_key,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int tpm_dbus_register(Manager *m)
{
        int r;

        r = sd_bus_add_object_vtable(m->bus, &m->object_slot, TPM_OBJECT_PATH, TPM_INTERFACE,
                                     tpm_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register %s: %m", TPM_OBJECT_PATH);
        return 0;
}

int tpm_dbus_warm_up(Manager *m)
{
        Call *c = calloc(1, sizeof(*c));

        if (!c)
                return log_oom();
        c->kind = CALL_KEYS;
        return submit(m, c, NULL) < 0 ? log_oom() : 0;
}
