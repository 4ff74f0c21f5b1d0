/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/rand.h>

#include "base64.h"
#include "identity-cloud.h"
#include "log.h"
#include "macro.h"

#define KEYS_BUS_NAME "org.aziot.Keys1"
#define KEYS_OBJECT_PATH "/org/aziot/Keys1"
#define KEYS_INTERFACE "org.aziot.Keys1"
#define TPM_BUS_NAME "org.aziot.Tpm1"
#define TPM_OBJECT_PATH "/org/aziot/Tpm1"
#define TPM_INTERFACE "org.aziot.Tpm1"
#define USEC_PER_SEC 1000000ull
#define HEADERS_MAX 8u

void identity_signer_done(IdentitySigner *s)
{
        free(s->key_handle);
        *s = (IdentitySigner){};
}

void identity_credentials_done(IdentityCredentials *c)
{
        identity_signer_done(&c->signer);
        sk_X509_pop_free(c->client_chain, X509_free);
        EVP_PKEY_free(c->client_key);
        *c = (IdentityCredentials){};
}

/* ---- signing ---- */

int identity_signer_sign(const IdentitySigner *s, const void *data, size_t len,
                         uint8_t ret_digest[32], char *message, size_t size)
{
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        bool keyd = s->kind == IDENTITY_SIGNER_KEYD;
        const void *digest;
        size_t n = 0;
        int r;

        if (s->kind == IDENTITY_SIGNER_NONE) {
                (void)snprintf(message, size, "no key to sign with");
                return -EINVAL;
        }
        r = sd_bus_message_new_method_call(s->bus, &call, keyd ? KEYS_BUS_NAME : TPM_BUS_NAME,
                                           keyd ? KEYS_OBJECT_PATH : TPM_OBJECT_PATH,
                                           keyd ? KEYS_INTERFACE : TPM_INTERFACE,
                                           keyd ? "Sign" : "SignWithAuthKey");
        if (r >= 0 && keyd)
                r = sd_bus_message_append(call, "ss", s->key_handle, "HMAC-SHA256");
        if (r >= 0)
                r = sd_bus_message_append_array(call, 'y', data, len);
        if (r >= 0)
                r = sd_bus_message_append(call, "a{sv}", 0);
        if (r < 0)
                return r;
        r = sd_bus_call(s->bus, call, 0, &e, &reply);
        if (r < 0) {
                (void)snprintf(message, size, "%s client error\ncaused by: %s",
                               keyd ? "Key" : "TPM", e.message ? e.message : strerror(-r));
                return r;
        }
        r = sd_bus_message_read_array(reply, 'y', &digest, &n);
        if (r < 0 || n != 32) {
                (void)snprintf(message, size, "%s client error\ncaused by: a %zu-byte signature",
                               keyd ? "Key" : "TPM", n);
                return r < 0 ? r : -EBADMSG;
        }
        memcpy(ret_digest, digest, 32);
        return 0;
}

/* ---- SAS tokens ---- */

static bool sas_escaped(unsigned char c)
{
        return c < 0x20 || c == 0x7f || strchr(" \"<>`#?{}=", c);
}

char *identity_sas_encode(const char *s)
{
        size_t n = 0;
        char *out, *p;

        for (const char *q = s; *q; q++)
                n += sas_escaped((unsigned char)*q) ? 3 : 1;
        out = malloc(n + 1);
        if (!out)
                return NULL;
        p = out;
        for (; *s; s++) {
                if (sas_escaped((unsigned char)*s))
                        p += sprintf(p, "%%%02X", (unsigned char)*s);
                else
                        *p++ = *s;
        }
        *p = '\0';
        return out;
}

/* application/x-www-form-urlencoded value encoding. */
static char *form_encode(const char *s)
{
        char *out = malloc(strlen(s) * 3 + 1), *p = out;

        if (!out)
                return NULL;
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;

                if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    strchr("*-._", c))
                        *p++ = (char)c;
                else if (c == ' ')
                        *p++ = '+';
                else
                        p += sprintf(p, "%%%02X", c);
        }
        *p = '\0';
        return out;
}

int identity_sas_token(const IdentitySigner *s, const char *audience, bool registration,
                       uint64_t now_sec, char **ret, char *message, size_t size)
{
        _cleanup_free_ char *lower = strdup(audience), *sr = NULL, *to_sign = NULL, *b64 = NULL,
                            *sig = NULL;
        uint64_t expiry = now_sec + IDENTITY_SAS_TTL_SEC;
        uint8_t digest[32];
        int r;

        if (!lower)
                return -ENOMEM;
        for (char *p = lower; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char)(*p - 'A' + 'a');
        sr = identity_sas_encode(lower);
        if (!sr || asprintf(&to_sign, "%s\n%llu", sr, (unsigned long long)expiry) < 0)
                return -ENOMEM;
        r = identity_signer_sign(s, to_sign, strlen(to_sign), digest, message, size);
        if (r < 0)
                return r;
        b64 = base64_encode_alloc(digest, sizeof(digest));
        sig = b64 ? form_encode(b64) : NULL;
        if (!sig)
                return -ENOMEM;
        if (asprintf(ret, "SharedAccessSignature sr=%s&sig=%s&se=%llu%s", sr, sig,
                     (unsigned long long)expiry, registration ? "&skn=registration" : "") < 0)
                return -ENOMEM;
        return 0;
}

/* ---- requests ---- */

struct IdentityCloudCall {
        HttpClient *http;
        sd_event *event;
        sd_event_source *timer;
        HttpRequest *request;
        char *method, *url, *body, *authorization, *sas_audience;
        char **headers;
        size_t n_headers;
        const IdentityCredentials *credentials; /* the caller's, valid until done */
        bool sas_registration;
        unsigned timeout_sec, retries;
        unsigned attempts, throttled;
        uint64_t retry_after_sec; /* of the answer being delivered */
        IdentityCloudDone done;
        void *userdata;
};

static void call_free(IdentityCloudCall *c)
{
        if (!c)
                return;
        if (c->request)
                http_request_cancel(c->request);
        sd_event_source_disable_unref(c->timer);
        sd_event_unref(c->event);
        free(c->method);
        free(c->url);
        if (c->body)
                explicit_bzero(c->body, strlen(c->body)); /* module keys go in bodies */
        free(c->body);
        free(c->authorization);
        free(c->sas_audience);
        for (size_t i = 0; i < c->n_headers; i++)
                free(c->headers[i]);
        free(c->headers);
        free(c);
}

void identity_cloud_call_cancel(IdentityCloudCall *call)
{
        call_free(call);
}

uint64_t identity_cloud_backoff_usec(unsigned n, uint64_t retry_after_sec)
{
        static const unsigned base[] = { 60, 120, 180, 300 }, jitter[] = { 10, 20, 30, 30 };
        unsigned char rnd = 0;
        uint64_t usec;

        if (n >= ELEMENTSOF(base))
                return UINT64_MAX;
        (void)RAND_bytes(&rnd, 1);
        usec = (base[n] + rnd % (jitter[n] + 1)) * USEC_PER_SEC;
        if (retry_after_sec > 0 && retry_after_sec * USEC_PER_SEC < usec)
                usec = retry_after_sec * USEC_PER_SEC;
        return usec;
}

static void finish(IdentityCloudCall *c, int error, const char *message, bool network,
                   long status, JsonNode *json)
{
        c->done(error, message, network, status, json, c->userdata);
        call_free(c);
}

static int attempt(IdentityCloudCall *c);

static int on_retry_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        IdentityCloudCall *c = userdata;
        char message[256];
        int r;

        c->timer = sd_event_source_disable_unref(c->timer);
        r = attempt(c);
        if (r < 0) {
                (void)snprintf(message, sizeof(message), "cannot send the request: %s",
                               strerror(-r));
                finish(c, r, message, false, 0, NULL);
        }
        return 0;
}

/* Tries again after delay; false when it could not be scheduled. */
static bool retry_after(IdentityCloudCall *c, uint64_t delay)
{
        return sd_event_add_time_relative(c->event, &c->timer, CLOCK_MONOTONIC, delay, 0,
                                          on_retry_timer, c) >= 0;
}

static bool content_type_json(const char *ct)
{
        size_t n = STRLEN("application/json");

        for (; ct && *ct; ct++)
                if (strncasecmp(ct, "application/json", n) == 0)
                        return true;
        return false;
}

static void on_response(HttpRequest *request, int error, const char *message,
                        const HttpResponse *response, void *userdata)
{
        IdentityCloudCall *c = userdata;
        g_autoptr(JsonParser) parser = NULL;
        g_autoptr(GError) gerror = NULL;
        char text[512];
        uint64_t delay;

        c->request = NULL;
        c->attempts++;
        c->retry_after_sec = response ? response->retry_after_sec : 0;
        if (error < 0) {
                if (c->attempts <= c->retries && retry_after(c, IDENTITY_RETRY_DELAY_USEC))
                        return;
                finish(c, error, message, error != -EPROTO && error != -EFBIG, 0, NULL);
                return;
        }
        if (response->status == 429) {
                delay = identity_cloud_backoff_usec(c->throttled++, response->retry_after_sec);
                if (delay != UINT64_MAX) {
                        log_info("%s %s: throttled (429); trying again in %llu s.", c->method,
                                 c->url, (unsigned long long)(delay / USEC_PER_SEC));
                        if (retry_after(c, delay))
                                return;
                }
                finish(c, -EBUSY, "the service kept answering 429 Too Many Requests", false,
                       429, NULL);
                return;
        }
        if (response->status >= 500 && response->status != 501 && c->attempts <= c->retries &&
            retry_after(c, IDENTITY_RETRY_DELAY_USEC))
                return;
        if (response->body_len == 0) {
                finish(c, 0, NULL, false, response->status, NULL);
                return;
        }
        if (response->content_type && !content_type_json(response->content_type)) {
                (void)snprintf(text, sizeof(text), "HTTP %ld with Content-Type %s, not JSON",
                               response->status, response->content_type);
                finish(c, -EBADMSG, text, false, response->status, NULL);
                return;
        }
        parser = json_parser_new();
        if (!json_parser_load_from_data(parser, (const char *)response->body,
                                        (gssize)response->body_len, &gerror)) {
                (void)snprintf(text, sizeof(text), "HTTP %ld with a body that is not JSON: %s",
                               response->status, gerror ? gerror->message : "?");
                finish(c, -EBADMSG, text, false, response->status, NULL);
                return;
        }
        finish(c, 0, NULL, false, response->status, json_parser_get_root(parser));
}

static int attempt(IdentityCloudCall *c)
{
        _cleanup_free_ char *token = NULL, *auth_header = NULL;
        const char *headers[HEADERS_MAX + 3];
        HttpTls tls = {};
        char message[256];
        size_t n = 0;
        int r;

        for (size_t i = 0; i < c->n_headers && i < HEADERS_MAX; i++)
                headers[n++] = c->headers[i];
        if (c->body)
                headers[n++] = "Content-Type: application/json";
        if (c->authorization) {
                if (asprintf(&auth_header, "Authorization: %s", c->authorization) < 0)
                        return -ENOMEM;
        } else if (c->credentials && c->credentials->signer.kind != IDENTITY_SIGNER_NONE &&
                   c->sas_audience) {
                r = identity_sas_token(&c->credentials->signer, c->sas_audience,
                                       c->sas_registration, (uint64_t)time(NULL), &token, message,
                                       sizeof(message));
                if (r < 0) {
                        log_warning("%s", message);
                        return r;
                }
                if (asprintf(&auth_header, "Authorization: %s", token) < 0)
                        return -ENOMEM;
        }
        if (auth_header)
                headers[n++] = auth_header;
        headers[n] = NULL;
        if (c->credentials && c->credentials->client_chain &&
            sk_X509_num(c->credentials->client_chain) > 0) {
                /* Borrowed certificates: http_client_start() takes its own references. */
                STACK_OF(X509) *rest = sk_X509_new_null();

                if (!rest)
                        return -ENOMEM;
                for (int i = 1; i < sk_X509_num(c->credentials->client_chain); i++)
                        if (!sk_X509_push(rest, sk_X509_value(c->credentials->client_chain, i))) {
                                sk_X509_free(rest);
                                return -ENOMEM;
                        }
                tls.client_cert = sk_X509_value(c->credentials->client_chain, 0);
                tls.client_chain = rest;
                tls.client_key = c->credentials->client_key;
                r = http_client_start(c->http,
                                      &(HttpRequestSpec){
                                              .method = c->method,
                                              .url = c->url,
                                              .headers = headers,
                                              .body = c->body,
                                              .body_len = c->body ? strlen(c->body) : 0,
                                              .tls = &tls,
                                              .timeout_usec = c->timeout_sec * USEC_PER_SEC,
                                      },
                                      on_response, c, &c->request);
                sk_X509_free(rest);
                return r;
        }
        return http_client_start(c->http,
                                 &(HttpRequestSpec){
                                         .method = c->method,
                                         .url = c->url,
                                         .headers = headers,
                                         .body = c->body,
                                         .body_len = c->body ? strlen(c->body) : 0,
                                         .timeout_usec = c->timeout_sec * USEC_PER_SEC,
                                 },
                                 on_response, c, &c->request);
}

static int call_copy(IdentityCloudCall *c, const IdentityCloudRequest *req)
{
        c->method = strdup(req->method);
        c->url = strdup(req->url);
        if (!c->method || !c->url)
                return -ENOMEM;
        if (req->authorization && !(c->authorization = strdup(req->authorization)))
                return -ENOMEM;
        if (req->sas_audience && !(c->sas_audience = strdup(req->sas_audience)))
                return -ENOMEM;
        if (req->body && !(c->body = json_to_string(req->body, FALSE)))
                return -ENOMEM;
        for (const char *const *h = req->headers; h && *h; h++) {
                char **l = reallocarray(c->headers, c->n_headers + 1, sizeof(char *));

                if (!l)
                        return -ENOMEM;
                c->headers = l;
                c->headers[c->n_headers] = strdup(*h);
                if (!c->headers[c->n_headers])
                        return -ENOMEM;
                c->n_headers++;
        }
        return 0;
}

int identity_cloud_request(HttpClient *http, sd_event *event, const IdentityCloudRequest *req,
                           IdentityCloudDone done, void *userdata, IdentityCloudCall **ret)
{
        IdentityCloudCall *c = calloc(1, sizeof(*c));
        int r;

        if (!c)
                return -ENOMEM;
        *c = (IdentityCloudCall){
                .http = http,
                .event = sd_event_ref(event),
                .credentials = req->credentials,
                .sas_registration = req->sas_registration,
                .timeout_sec = req->timeout_sec,
                .retries = req->retries,
                .done = done,
                .userdata = userdata,
        };
        r = call_copy(c, req);
        if (r >= 0)
                r = attempt(c);
        if (r < 0) {
                call_free(c);
                return r;
        }
        if (ret)
                *ret = c;
        return 0;
}

uint64_t identity_cloud_call_retry_after(const IdentityCloudCall *call)
{
        return call ? call->retry_after_sec : 0;
}

const char *identity_json_string(JsonObject *o, const char *member)
{
        JsonNode *n = o ? json_object_get_member(o, member) : NULL;

        if (!n || JSON_NODE_TYPE(n) != JSON_NODE_VALUE ||
            json_node_get_value_type(n) != G_TYPE_STRING)
                return NULL;
        return json_node_get_string(n);
}
