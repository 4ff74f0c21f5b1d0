/* SPDX-License-Identifier: MIT */
#pragma once

/* What identityd's DPS and IoT Hub clients share (cloud-protocols.md §1, §2): SAS tokens signed
 * by keyd or tpmd, the device's credentials, and JSON requests over HTTPS with upstream's retry
 * rules:
 *   - each attempt is bounded by cloud_timeout_sec;
 *   - a transport failure or an HTTP status of 500 or more (but 501) is tried again up to
 *     cloud_retries times, 3 s apart (upstream also tries 4xx answers again, which cannot
 *     change);
 *   - HTTP 429 backs off 60 s (+0–10 s), 120 s (+0–20), 180 s (+0–30), 300 s (+0–30), then gives
 *     up (5 attempts), whatever cloud_retries says; a shorter Retry-After of the answer is waited
 *     instead (upstream ignores it and always waits the schedule);
 *   - a response with a Content-Type must say application/json; an error status with a body must
 *     have a body that parses.
 * Requests carry Content-Type: application/json when they have a body, the Authorization header
 * when SAS is used, and nothing else. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-glib/json-glib.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <systemd/sd-bus.h>

#include "http-client.h"

#define IDENTITY_SAS_TTL_SEC 30u
#define IDENTITY_RETRY_DELAY_USEC (3ull * 1000ull * 1000ull)

/* Who signs a SAS token: keyd with a key handle (HMAC-SHA256), or tpmd with the DPS
 * authentication key. */
typedef enum IdentitySignerKind {
        IDENTITY_SIGNER_NONE,
        IDENTITY_SIGNER_KEYD,
        IDENTITY_SIGNER_TPMD,
} IdentitySignerKind;

typedef struct IdentitySigner {
        IdentitySignerKind kind;
        sd_bus *bus;      /* not owned */
        char *key_handle; /* KEYD */
} IdentitySigner;

void identity_signer_done(IdentitySigner *s);

/* HMAC-SHA256 of data. 0, or a negative errno with a message ("Key client error…"). */
int identity_signer_sign(const IdentitySigner *s, const void *data, size_t len,
                         uint8_t ret_digest[32], char *message, size_t size);

/* §2.1 step 3: the SAS percent-encoding (C0 controls, DEL, space, " < > ` # ? { } = as %XX;
 * nothing else). A new string, NULL when out of memory. */
char *identity_sas_encode(const char *s);

/* A token for audience (lower-cased), expiring now + IDENTITY_SAS_TTL_SEC, with skn=registration
 * for DPS: "SharedAccessSignature sr=…&sig=…&se=…[&skn=registration]". */
int identity_sas_token(const IdentitySigner *s, const char *audience, bool registration,
                       uint64_t now_sec, char **ret, char *message, size_t size);

/* The device's credentials for a request: a SAS signer, or a TLS client identity. */
typedef struct IdentityCredentials {
        IdentitySigner signer;         /* NONE: no SAS */
        STACK_OF(X509) *client_chain;  /* TLS client certificate first; NULL: none */
        EVP_PKEY *client_key;
} IdentityCredentials;

void identity_credentials_done(IdentityCredentials *c);

typedef struct IdentityCloudCall IdentityCloudCall;

typedef struct IdentityCloudRequest {
        const char *method;
        const char *url;
        JsonNode *body;                   /* NULL: none; serialized when the request starts */
        const char *const *headers;       /* more headers ("If-Match: *"); may be NULL */
        const IdentityCredentials *credentials; /* may be NULL */
        const char *sas_audience;         /* with credentials->signer: the token's audience */
        bool sas_registration;            /* skn=registration */
        const char *authorization;        /* a fixed Authorization value instead (DPS polls) */
        unsigned timeout_sec, retries;
} IdentityCloudRequest;

/* The outcome. error 0: an HTTP answer came (status, and the parsed body when there was one:
 * json may be NULL). error < 0: none did after the retries (message says why; network is true
 * for timeouts and connection failures), or the body was not JSON (-EBADMSG). The json node is
 * the callee's: valid during the call only. */
typedef void (*IdentityCloudDone)(int error, const char *message, bool network, long status,
                                  JsonNode *json, void *userdata);

/* Starts a request (copies everything; a SAS token is minted for every attempt). Retries per the
 * rules above; only statuses >= 500 other than 501, 429 and transport failures are retried. */
int identity_cloud_request(HttpClient *http, sd_event *event, const IdentityCloudRequest *req,
                           IdentityCloudDone done, void *userdata, IdentityCloudCall **ret);
void identity_cloud_call_cancel(IdentityCloudCall *call);

/* During the done callback: the answer's Retry-After in seconds, 0 when it had none. */
uint64_t identity_cloud_call_retry_after(const IdentityCloudCall *call);

/* The 429 back-off before attempt n + 1 (n 0-based), jitter included, in microseconds;
 * UINT64_MAX after the last. retry_after_sec (0: none) shortens it. */
uint64_t identity_cloud_backoff_usec(unsigned n, uint64_t retry_after_sec);

/* JSON helpers over json-glib: a member as a string (NULL when absent or not a string). */
const char *identity_json_string(JsonObject *o, const char *member);
