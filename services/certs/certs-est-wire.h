/* SPDX-License-Identifier: MIT */
#pragma once

/* What certd's EST client puts on the wire and reads from it (cloud-protocols.md §5): the body of
 * an enrollment, the CSR of an EST identity, and the certificates of a response. No I/O. */

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "certs-openssl.h"

/* The certificates of an EST response body (content_type is the header's value, NULL when
 * absent). -EBADMSG with a static *ret_problem when it is not what RFC 7030 allows. A SignedData
 * without certificates gives an empty stack. */
int certs_est_parse_response(const char *content_type, const uint8_t *body, size_t len,
                             X509Stack **ret, const char **ret_problem);

/* The body of an enrollment: base64 of the DER of csr, 64 characters a line, each ending in
 * "\n". */
int certs_est_csr_body(X509_REQ *csr, char **ret, size_t *ret_len);

/* A CSR for an EST identity: version 1, subject, the public key of key, the one requested
 * extension extendedKeyUsage = clientAuth, signed with SHA-256 by key. */
int certs_est_identity_csr(const X509_NAME *subject, EVP_PKEY *key, X509_REQ **ret);

