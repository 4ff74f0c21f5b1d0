/* SPDX-License-Identifier: MIT */
#pragma once

/* Local issuance of certd (spec §3.4 A and B: an explicit issuer, "local_ca", "self_signed"): an
 * X.509 v3 certificate for the public key of a CSR, signed with SHA-256 by an issuer key given as
 * an EVP_PKEY (in certd it comes from keyd through the OpenSSL provider: it is only ever used to
 * sign, never read).
 *
 * What is issued (upstream's rules, with the deliberate fixes of DESIGN §5):
 *   - subject: the override if given, else the CSR's; issuer name: the issuer certificate's subject
 *     (self-signed: the subject); public key: the CSR's, whose self-signature must verify;
 *   - notBefore = now; notAfter = now + expiry_days (default 30), capped at the issuer's notAfter;
 *   - serial: 128 random bits, positive (upstream leaves every serial at 0);
 *   - extensions: those of the CSR, filtered. Never copied: subjectKeyIdentifier and
 *     authorityKeyIdentifier (computed here: SKI = SHA-1 of the subject public key, RFC 5280 method
 *     1; AKI = the issuer's SKI, or the hash of its key when it has none; a self-signed
 * certificate's AKI is its own SKI). For a leaf (ca = false) also never basicConstraints and
 * nameConstraints: a leaf carries "basicConstraints = critical, CA:FALSE", and the keyCertSign and
 * cRLSign bits are cleared from a requested keyUsage (dropped when nothing is left). For a CA (ca =
 * true: the local CA certificate) basicConstraints is "critical, CA:TRUE" keeping a pathLen the CSR
 * asked for, nameConstraints are copied, and keyUsage is the CSR's with keyCertSign and cRLSign
 * added, or "critical, digitalSignature, keyCertSign, cRLSign" when the CSR asked for none.
 * Everything else (subjectAltName, extendedKeyUsage, …) is copied verbatim, as upstream does. A CSR
 * that repeats an extension is refused.
 *
 * Errors: -EBADMSG the CSR does not parse, its signature does not verify or it repeats an
 * extension; -EINVAL bad arguments, an issuer chain that is not PEM certificates, an issuer key
 * that does not match the issuer certificate (or, self-signed, the CSR), expiry_days out of range;
 * -EKEYEXPIRED the issuer has expired; -EIO OpenSSL failures (logged); -ENOMEM. */

#include <stdbool.h>
#include <stddef.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#define CERTS_ISSUE_DEFAULT_EXPIRY_DAYS 30u
#define CERTS_ISSUE_EXPIRY_DAYS_MAX 36500u
#define CERTS_ISSUE_SERIAL_BYTES 16u

typedef struct CertsIssueOptions {
        const X509_NAME *subject; /* replaces the CSR's subject; NULL = keep it */
        unsigned expiry_days;     /* 0 = CERTS_ISSUE_DEFAULT_EXPIRY_DAYS */
        bool ca;                  /* issue a CA certificate (the local CA) */
} CertsIssueOptions;

/* Issues a certificate for csr_pem (a PEM "CERTIFICATE REQUEST").
 *
 * issuer_chain_pem: the issuer's certificate first, then the rest of its chain (what the store
 * holds for the issuer id); NULL (and issuer_len 0) to self-sign. issuer_key signs: the key of the
 * issuer's first certificate, or for self-signing the key of the CSR. opts may be NULL.
 *
 * Returns in *ret_pem (NUL-terminated, *ret_len bytes without it; ret_len may be NULL) the new
 * certificate followed by the issuer chain re-encoded, as upstream returns and stores it. */
int certs_issue(const char *csr_pem, size_t csr_len, const char *issuer_chain_pem,
                size_t issuer_len, EVP_PKEY *issuer_key, const CertsIssueOptions *opts,
                char **ret_pem, size_t *ret_len);

