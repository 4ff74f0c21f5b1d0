/* SPDX-License-Identifier: MIT */
#pragma once

/* The EST client of certd (RFC 7030 as upstream speaks it: cloud-protocols.md §5).
 *
 * One enrollment sends two requests at once to the base URL (a "/" appended when missing):
 *   POST <url>/simpleenroll (or /simplereenroll, see below)
 *        Content-Type: application/pkcs10, content-transfer-encoding: base64, the DER CSR in
 *        base64, 64 characters a line, every line ending in "\n";
 *   GET  <url>/cacerts
 * both with "Authorization: Basic …" when a username is given, and presenting the client
 * certificate when one is given. Each response must be status 200 with Content-Type
 * application/pkcs7-mime (parameters allowed) and a certs-only PKCS#7 SignedData, PEM or base64
 * DER with any whitespace. The result is the PEM of the enrolled certificates followed by the PEM
 * of the /cacerts certificates.
 *
 * Re-enrollment (renewing an EST identity certificate while it is still valid, authenticated by
 * it) uses /simplereenroll, as RFC 7030 §4.2.2 asks; a server that answers 404, 405 or 501 there
 * is asked again at /simpleenroll, which is what upstream always uses. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "certs-est-wire.h"
#include "certs-openssl.h"
#include "http-client.h"

#define CERTS_EST_TIMEOUT_USEC (70ull * 1000ull * 1000ull)

typedef struct CertsEstRequest {
        const char *url;                  /* the EST base URL */
        const char *username, *password;  /* Basic auth; NULL: none */
        X509Stack *client_chain;          /* client certificate first; NULL: none */
        EVP_PKEY *client_key;             /* its key (with client_chain) */
        X509Stack *trusted;               /* trusted besides the system store; may be NULL */
        bool reenroll;                    /* /simplereenroll first */
} CertsEstRequest;

typedef struct CertsEstJob CertsEstJob;

/* The outcome: error 0 and the PEM chain, or a negative errno and a message for the log and the
 * caller (no secret in it). Called once, from the event loop; the job is freed after. */
typedef void (*CertsEstDone)(int error, const char *message, const char *pem, size_t pem_len,
                             void *userdata);

/* Starts enrolling csr; everything in req is copied or referenced. */
int certs_est_enroll(HttpClient *http, const CertsEstRequest *req, X509_REQ *csr,
                     CertsEstDone done, void *userdata, CertsEstJob **ret);

/* Stops a job without calling its callback. */
void certs_est_job_cancel(CertsEstJob *job);
