/* SPDX-License-Identifier: MIT */
#pragma once

/* EST issuance and the renewal of EST identity certificates in aziot-certd (spec §3.5, §3.7).
 *
 * Issuing id with method "est" (CreateCertificate): the URL and authentication come from the
 * configuration (certs_config_est()). With an X.509 identity (identity_cert, identity_pk):
 *   - when the identity certificate exists, it is renewed first if its threshold has passed (if
 *     that fails, the current one is used while it is valid);
 *   - when it does not, the bootstrap identity gets it: the key pair identity_pk is made anew in
 *     keyd (ec-p256, else rsa-4096, else keyd's default), a CSR (the id's subject override or the
 *     caller's subject, extendedKeyUsage clientAuth) is enrolled with the bootstrap certificate as
 *     TLS client certificate, and stored as identity_cert, then tracked for renewal;
 * then the caller's CSR is enrolled as is with the identity (and Basic auth when configured).
 * The result (enrolled certificates, then /cacerts) is stored as id and returned.
 *
 * Renewal. Every EST identity certificate the configuration names that exists is tracked by the
 * renewal engine with [cert_issuance.est.identity_auto_renew]. A renewal makes a new key pair
 * "<identity_pk>-temp" (when rotate_key; else it keeps identity_pk), enrolls a CSR with the current
 * certificate's subject at /simplereenroll authenticated by the current identity (or at
 * /simpleenroll by the bootstrap identity once the current one has expired), checks that the
 * certificate it gets is for the new key, then commits:
 *   1. the new certificate goes to the store's pending area (certs_store_put_pending());
 *   2. keyd moves "<identity_pk>-temp" over identity_pk;
 *   3. the new certificate replaces the old one; the pending copy goes.
 * Until 2 the old certificate and key are untouched; after 2, the pending copy finishes the job:
 * whenever the configuration is applied (at start and on reload) a pending certificate is
 * committed when identity_pk (or the temporary key) is its key, and dropped otherwise. So a crash
 * at any point leaves the old certificate with the old key, or the new with the new. Failures
 * retry after the retry period, keeping the old certificate. Each renewal emits
 * CertificateRenewed.
 *
 * EST work is done one task at a time (issuance and renewals touch the same identity), except that
 * a task waiting for its identity to be renewed lets the renewal run. Keyd is called as certd
 * itself.
 *
 * Fault injection for the crash-safety tests: when the environment variable
 * AZIOT_CERTD_CRASH_AT names a step ("renewal-pending-written", "renewal-key-moved"), certd kills
 * itself with SIGKILL right after that step. */

#include <stdbool.h>

#include <systemd/sd-bus.h>

#include "certs-config.h"

typedef struct Manager Manager;

/* The HTTP client and the renewal engine; certs_enroll_done() cancels everything pending. */
int certs_enroll_init(Manager *m);
void certs_enroll_done(Manager *m);

/* Loads what the configuration c needs before it is applied: the trusted_certs of
 * [cert_issuance.est]. -ENOENT/-EBADMSG with *ret_error filled when one cannot be loaded. */
int certs_enroll_prepare(Manager *m, const CertsConfig *c, ConfigError *ret_error);

/* After m->config was replaced: finishes interrupted renewals and rebuilds the set of tracked EST
 * identities. */
void certs_enroll_apply(Manager *m);

/* Starts issuing id for the PEM CSR csr (whose signature was checked) with method "est";
 * subject is the id's override (used for a bootstrap CSR only; may be NULL). The call msg is
 * answered when done. Returns 1, or a negative errno with error set. */
int certs_enroll_issue(Manager *m, sd_bus_message *msg, const char *id, const char *csr,
                       const X509_NAME *subject, sd_bus_error *error);

/* Whether certd must stay up: EST work pending or identities to renew. */
bool certs_enroll_busy(Manager *m);
