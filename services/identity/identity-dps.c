/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-glib/json-glib.h>

#include "base64.h"
#include "identity-dps.h"
#include "identityd.h"
#include "log.h"
#include "macro.h"

#define TPM_BUS_NAME "org.aziot.Tpm1"
#define TPM_OBJECT_PATH "/org/aziot/Tpm1"
#define TPM_INTERFACE "org.aziot.Tpm1"
#define MESSAGE_MAX 768
#define USEC_PER_SEC 1000000ull

typedef enum DpsStep {
        DPS_TPM_CHALLENGE, /* the first PUT of TPM attestation, expecting 401 */
        DPS_REGISTER,
        DPS_POLL,
} DpsStep;

typedef struct TpmKeys {
        char *ek, *srk; /* base64 */
} TpmKeys;

typedef struct IdentityDps {
        Manager *m;
        DpsStep step;
        char *base;            /* scheme://authority of the global endpoint */
        char *registration_id;
        char *authorization;   /* the register request's, reused by the polls (upstream) */
        char *operation_id;
        JsonNode *payload;     /* NULL: none */
        IdentityCredentials credentials;
        IdentityCloudCall *call;
        sd_event_source *timer;
        IdentityDpsDone done;
        void *userdata;
} IdentityDps;

static void dps_free(IdentityDps *d)
{
        if (!d)
                return;
        if (d->call)
                identity_cloud_call_cancel(d->call);
        sd_event_source_disable_unref(d->timer);
        free(d->base);
        free(d->registration_id);
        free(d->authorization);
        free(d->operation_id);
        if (d->payload)
                json_node_unref(d->payload);
        identity_credentials_done(&d->credentials);
        free(d);
}

void identity_dps_cancel(Manager *m)
{
        dps_free(m->dps);
        m->dps = NULL;
}

static void dps_finish(IdentityDps *d, int error, const char *message, bool network,
                       const IdentityDevice *device)
{
        Manager *m = d->m;
        IdentityDpsDone done = d->done;
        void *userdata = d->userdata;

        m->dps = NULL;
        dps_free(d);
        done(m, error, message, network, device, userdata);
}

static void dps_fail(IdentityDps *d, int error, bool network, const char *format, ...)
        _printf_(4, 5);
static void dps_fail(IdentityDps *d, int error, bool network, const char *format, ...)
{
        char cause[MESSAGE_MAX - 32], message[MESSAGE_MAX];
        va_list ap;

        va_start(ap, format);
        (void)vsnprintf(cause, sizeof(cause), format, ap);
        va_end(ap);
        (void)snprintf(message, sizeof(message), "DPS client error\ncaused by: %s", cause);
        dps_finish(d, error, message, network, NULL);
}

/* The characters a URL path may not hold raw, percent-encoded. */
static char *path_encode(const char *s)
{
        char *out = malloc(strlen(s) * 3 + 1), *p = out;

        if (!out)
                return NULL;
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;

                if (c <= 0x20 || c >= 0x7f || strchr("\"#<>?`{}%", c))
                        p += sprintf(p, "%%%02X", c);
                else
                        *p++ = (char)c;
        }
        *p = '\0';
        return out;
}

static char *dps_url(IdentityDps *d, const char *tail)
{
        _cleanup_free_ char *scope = path_encode(d->m->config.provisioning.scope_id),
                            *rid = path_encode(d->registration_id);
        char *url = NULL;

        if (!scope || !rid ||
            asprintf(&url, "%s/%s/registrations/%s/%s?api-version=" IDENTITY_DPS_API_VERSION,
                     d->base, scope, rid, tail) < 0)
                return NULL;
        return url;
}


/* The service's error body (cloud-protocols.md §3.6), or the status. */
static void describe_error(long status, JsonNode *json, char *buf, size_t size)
{
        JsonObject *o = json && JSON_NODE_HOLDS_OBJECT(json) ? json_node_get_object(json) : NULL;
        const char *text = identity_json_string(o, "message");

        if (!text)
                text = identity_json_string(o, "errorMessage");
        if (text)
                (void)snprintf(buf, size, "%s (HTTP %ld)", text, status);
        else
                (void)snprintf(buf, size, "HTTP error %ld", status);
}

static void on_poll_timer_done(IdentityDps *d);

/* Before the next status poll: what DPS asks (Retry-After, 1 to 60 s), else upstream's 5 s. */
static uint64_t poll_delay(const IdentityCloudCall *call)
{
        uint64_t s = identity_cloud_call_retry_after(call);

        if (s == 0)
                return IDENTITY_DPS_POLL_USEC;
        return CLAMP(s, (uint64_t)1, (uint64_t)60) * USEC_PER_SEC;
}

static int on_poll_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        IdentityDps *d = userdata;

        d->timer = sd_event_source_disable_unref(d->timer);
        on_poll_timer_done(d);
        return 0;
}

static void schedule_poll(IdentityDps *d, uint64_t delay)
{
        if (sd_event_add_time_relative(d->m->event, &d->timer, CLOCK_MONOTONIC, delay, 0,
                                       on_poll_timer, d) < 0)
                dps_fail(d, -ENOMEM, false, "cannot schedule the status poll");
}

/* The certificates of a trustBundle (§3.8), kept in certd. */
static void store_trust_bundle(IdentityDps *d, JsonObject *state)
{
        JsonObject *bundle = json_object_has_member(state, "trustBundle")
                                     ? json_object_get_object_member(state, "trustBundle")
                                     : NULL;
        JsonArray *certs = bundle && json_object_has_member(bundle, "certificates")
                                   ? json_object_get_array_member(bundle, "certificates")
                                   : NULL;
        g_autoptr(GString) pem = g_string_new(NULL);
        char message[MESSAGE_MAX];

        for (guint i = 0; certs && i < json_array_get_length(certs); i++) {
                JsonNode *n = json_array_get_element(certs, i);
                const char *c = JSON_NODE_HOLDS_OBJECT(n)
                                        ? identity_json_string(json_node_get_object(n),
                                                               "certificate")
                                        : NULL;

                if (c)
                        g_string_append(pem, c);
        }
        if (pem->len == 0)
                return;
        if (identity_call_string(d->m, "certd", "ImportCertificate", NULL, message,
                                 sizeof(message), "ss", "aziot-dps-trust-bundle", pem->str) < 0)
                log_warning("Cannot keep the trust bundle DPS sent: %s", message);
}

static int import_auth_key(IdentityDps *d, const char *b64, char *message, size_t size)
{
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        _cleanup_free_ uint8_t *blob = NULL;
        size_t len = 0;
        int r;

        r = base64_decode_alloc(b64, strlen(b64), &blob, &len);
        if (r < 0) {
                (void)snprintf(message, size, "the authenticationKey is not base64");
                return r;
        }
        r = sd_bus_message_new_method_call(d->m->bus, &call, TPM_BUS_NAME, TPM_OBJECT_PATH,
                                           TPM_INTERFACE, "ImportAuthKey");
        if (r >= 0)
                r = sd_bus_message_append_array(call, 'y', blob, len);
        if (r >= 0)
                r = sd_bus_message_append(call, "a{sv}", 0);
        if (r >= 0)
                r = sd_bus_call(d->m->bus, call, 0, &e, NULL);
        explicit_bzero(blob, len);
        if (r < 0)
                (void)snprintf(message, size, "TPM client error: %s",
                               e.message ? e.message : strerror(-r));
        return r;
}

static void on_status(int error, const char *message, bool network, long status, JsonNode *json,
                      void *userdata)
{
        IdentityDps *d = userdata;
        JsonObject *o = json && JSON_NODE_HOLDS_OBJECT(json) ? json_node_get_object(json) : NULL;
        JsonObject *state;
        const char *st, *hub, *device_id, *auth_key;
        char text[MESSAGE_MAX];
        uint64_t delay = poll_delay(d->call);

        d->call = NULL;
        if (error < 0) {
                dps_fail(d, error, network, "%s", message);
                return;
        }
        if (status != 200 && status != 202) {
                describe_error(status, json, text, sizeof(text));
                dps_fail(d, -EPROTO, status >= 500, "%s", text);
                return;
        }
        st = identity_json_string(o, "status");
        state = o && json_object_has_member(o, "registrationState") &&
                                JSON_NODE_HOLDS_OBJECT(
                                        json_object_get_member(o, "registrationState"))
                        ? json_object_get_object_member(o, "registrationState")
                        : NULL;
        if (st && streq(st, "assigning") && state &&
            identity_json_string(state, "registrationId")) {
                schedule_poll(d, delay);
                return;
        }
        if (st && streq(st, "failed") && state) {
                const char *why = identity_json_string(state, "errorMessage");

                dps_fail(d, -EPROTO, false, "registration failed: %s",
                         why ? why : "no reason given");
                return;
        }
        hub = identity_json_string(state, "assignedHub");
        device_id = identity_json_string(state, "deviceId");
        if (!st || !streq(st, "assigned") || !hub || !device_id) {
                dps_fail(d, -EBADMSG, false, "unexpected operation status \"%s\"",
                         st ? st : "(none)");
                return;
        }
        if (json_object_has_member(state, "tpm") &&
            JSON_NODE_HOLDS_OBJECT(json_object_get_member(state, "tpm"))) {
                auth_key = identity_json_string(json_object_get_object_member(state, "tpm"),
                                                "authenticationKey");
                if (auth_key && import_auth_key(d, auth_key, text, sizeof(text)) < 0) {
                        dps_fail(d, -EIO, false, "%s", text);
                        return;
                }
        }
        store_trust_bundle(d, state);
        log_info("DPS assigned the device %s in %s.", device_id, hub);
        dps_finish(d, 0, NULL, false,
                   &(IdentityDevice){ .hub_name = (char *)hub, .device_id = (char *)device_id });
}

static void on_poll_timer_done(IdentityDps *d)
{
        Manager *m = d->m;
        _cleanup_free_ char *tail = NULL, *url = NULL;
        int r;

        if (asprintf(&tail, "operations/%s", d->operation_id) < 0 || !(url = dps_url(d, tail))) {
                dps_fail(d, -ENOMEM, false, "out of memory");
                return;
        }
        d->step = DPS_POLL;
        /* Same Authorization as the register request, as upstream (not minted again). */
        r = identity_cloud_request(m->http, m->event,
                                   &(IdentityCloudRequest){
                                           .method = "GET",
                                           .url = url,
                                           .credentials = &d->credentials,
                                           .authorization = d->authorization,
                                           .timeout_sec = 30,
                                           .retries = 0,
                                   },
                                   on_status, d, &d->call);
        if (r < 0)
                dps_fail(d, r, false, "cannot ask for the operation status: %s", strerror(-r));
}

static int start_register(IdentityDps *d);

static void on_register(int error, const char *message, bool network, long status,
                        JsonNode *json, void *userdata)
{
        IdentityDps *d = userdata;
        JsonObject *o = json && JSON_NODE_HOLDS_OBJECT(json) ? json_node_get_object(json) : NULL;
        const char *op, *auth_key;
        char text[MESSAGE_MAX];
        uint64_t delay = poll_delay(d->call);
        int r;

        d->call = NULL;
        if (error < 0) {
                dps_fail(d, error, network, "%s", message);
                return;
        }
        if (d->step == DPS_TPM_CHALLENGE) {
                auth_key = status == 401 ? identity_json_string(o, "authenticationKey") : NULL;
                if (!auth_key) {
                        describe_error(status, json, text, sizeof(text));
                        dps_fail(d, -EPROTO, status >= 500,
                                 "expected the TPM challenge (401 with an authenticationKey), "
                                 "got %s",
                                 text);
                        return;
                }
                r = import_auth_key(d, auth_key, text, sizeof(text));
                if (r < 0) {
                        dps_fail(d, r, false, "%s", text);
                        return;
                }
                d->step = DPS_REGISTER;
                r = start_register(d);
                if (r < 0)
                        dps_fail(d, r, false, "cannot register: %s", strerror(-r));
                return;
        }
        if (status != 202) {
                describe_error(status, json, text, sizeof(text));
                dps_fail(d, -EPROTO, status >= 500, "%s", text);
                return;
        }
        op = identity_json_string(o, "operationId");
        if (!op) {
                dps_fail(d, -EBADMSG, false, "the registration answer has no operationId");
                return;
        }
        d->operation_id = strdup(op);
        if (!d->operation_id) {
                dps_fail(d, -ENOMEM, false, "out of memory");
                return;
        }
        schedule_poll(d, delay);
}

static JsonNode *register_body(IdentityDps *d, const TpmKeys *tpm)
{
        g_autoptr(JsonBuilder) b = json_builder_new();

        json_builder_begin_object(b);
        json_builder_set_member_name(b, "registrationId");
        json_builder_add_string_value(b, d->registration_id);
        if (tpm) {
                json_builder_set_member_name(b, "tpm");
                json_builder_begin_object(b);
                json_builder_set_member_name(b, "endorsementKey");
                json_builder_add_string_value(b, tpm->ek);
                json_builder_set_member_name(b, "storageRootKey");
                json_builder_add_string_value(b, tpm->srk);
                json_builder_end_object(b);
        }
        if (d->payload) {
                json_builder_set_member_name(b, "payload");
                json_builder_add_value(b, json_node_copy(d->payload));
        }
        json_builder_end_object(b);
        return json_builder_get_root(b);
}

static int tpm_keys(IdentityDps *d, TpmKeys *ret, char *message, size_t size)
{
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const void *ek, *srk;
        size_t ek_len, srk_len;
        int r;

        r = sd_bus_call_method(d->m->bus, TPM_BUS_NAME, TPM_OBJECT_PATH, TPM_INTERFACE,
                               "GetTpmKeys", &e, &reply, "a{sv}", 0);
        if (r >= 0)
                r = sd_bus_message_read_array(reply, 'y', &ek, &ek_len);
        if (r >= 0)
                r = sd_bus_message_read_array(reply, 'y', &srk, &srk_len);
        if (r < 0) {
                (void)snprintf(message, size, "TPM client error: %s",
                               e.message ? e.message : strerror(-r));
                return r;
        }
        ret->ek = base64_encode_alloc(ek, ek_len);
        ret->srk = base64_encode_alloc(srk, srk_len);
        return ret->ek && ret->srk ? 0 : -ENOMEM;
}

static int start_register(IdentityDps *d)
{
        Manager *m = d->m;
        const IdentityProvisioning *p = &m->config.provisioning;
        _cleanup_free_ char *url = dps_url(d, "register"), *audience = NULL;
        TpmKeys tpm = {};
        JsonNode *body;
        char message[MESSAGE_MAX];
        int r;

        if (!url)
                return -ENOMEM;
        if (d->step == DPS_TPM_CHALLENGE) {
                r = tpm_keys(d, &tpm, message, sizeof(message));
                if (r < 0) {
                        free(tpm.ek);
                        free(tpm.srk);
                        log_warning("%s", message);
                        return r;
                }
        }
        body = register_body(d, d->step == DPS_TPM_CHALLENGE ? &tpm : NULL);
        free(tpm.ek);
        free(tpm.srk);
        if (d->step == DPS_REGISTER && d->credentials.signer.kind != IDENTITY_SIGNER_NONE) {
                /* Minted here so that the polls can reuse it. */
                if (asprintf(&audience, "%s/registrations/%s", p->scope_id, d->registration_id) <
                    0) {
                        json_node_unref(body);
                        return -ENOMEM;
                }
                free(d->authorization);
                d->authorization = NULL;
                r = identity_sas_token(&d->credentials.signer, audience, true,
                                       (uint64_t)time(NULL), &d->authorization, message,
                                       sizeof(message));
                if (r < 0) {
                        json_node_unref(body);
                        log_warning("%s", message);
                        return r;
                }
        }
        r = identity_cloud_request(m->http, m->event,
                                   &(IdentityCloudRequest){
                                           .method = "PUT",
                                           .url = url,
                                           .body = body,
                                           .credentials = &d->credentials,
                                           .authorization = d->step == DPS_REGISTER
                                                                    ? d->authorization
                                                                    : NULL,
                                           .timeout_sec = m->config.cloud_timeout_sec,
                                           .retries = m->config.cloud_retries,
                                   },
                                   on_register, d, &d->call);
        json_node_unref(body);
        return r;
}

/* scheme://authority of the configured endpoint: its path and query are replaced. */
static char *endpoint_base(const char *endpoint)
{
        const char *authority = strstr(endpoint, "://"), *end;

        if (!authority)
                return NULL;
        end = strchr(authority + 3, '/');
        return strndup(endpoint, end ? (size_t)(end - endpoint) : strlen(endpoint));
}

static int load_payload(const char *path, JsonNode **ret, char *message, size_t size)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GError) gerror = NULL;

        if (!json_parser_load_from_file(parser, path, &gerror) || !json_parser_get_root(parser)) {
                (void)snprintf(message, size, "the payload %s: %s", path,
                               gerror ? gerror->message : "it is empty");
                return -EINVAL;
        }
        *ret = json_node_copy(json_parser_get_root(parser));
        return 0;
}

int identity_dps_register(Manager *m, IdentityDpsDone done, void *userdata)
{
        return identity_dps_register_with(m, NULL, done, userdata);
}

int identity_dps_register_with(Manager *m, IdentityCredentials *credentials,
                               IdentityDpsDone done, void *userdata)
{
        const IdentityProvisioning *p = &m->config.provisioning;
        IdentityDps *d;
        char message[MESSAGE_MAX];
        int r;

        if (m->dps)
                return -EBUSY;
        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        *d = (IdentityDps){ .m = m, .done = done, .userdata = userdata };
        d->base = endpoint_base(p->global_endpoint);
        r = d->base ? identity_registration_id(m, &d->registration_id) : -EINVAL;
        if (r >= 0 && p->payload_path)
                r = load_payload(p->payload_path, &d->payload, message, sizeof(message));
        if (r >= 0 && credentials) {
                d->credentials = *credentials;
                *credentials = (IdentityCredentials){};
                d->step = DPS_REGISTER;
        } else if (r >= 0 && p->auth == IDENTITY_AUTH_TPM) {
                d->credentials.signer =
                        (IdentitySigner){ .kind = IDENTITY_SIGNER_TPMD, .bus = m->bus };
                d->step = DPS_TPM_CHALLENGE;
        } else if (r >= 0) {
                r = identity_device_credentials(m, &d->credentials, message, sizeof(message));
                d->step = DPS_REGISTER;
        }
        if (r >= 0)
                r = start_register(d);
        if (r < 0) {
                dps_free(d);
                return r;
        }
        m->dps = d;
        log_info("Registering %s with DPS at %s (scope %s).", d->registration_id, d->base,
                 p->scope_id);
        return 0;
}
