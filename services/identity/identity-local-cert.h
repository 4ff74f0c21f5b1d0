/* SPDX-License-Identifier: MIT */
#pragma once

/* What a local identity is made of (spec §4.9): a new RSA-2048 key made in identityd's memory,
 * never stored, a certificate request certd issues for, and the end of the certificate's validity
 * as upstream writes it. No bus: the D-Bus side is identity-local.c. */

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

#define IDENTITY_EXPIRATION_MAX 32u

int identity_local_key_new(EVP_PKEY **ret);

/* The CSR, PEM: subject CN = "<module_id>.<hostname>.<domain>" cut to 64 characters; extensions
 * basicConstraints critical CA:FALSE, keyUsage critical digitalSignature, nonRepudiation,
 * keyEncipherment, extendedKeyUsage critical clientAuth (and serverAuth for server); signed with
 * key, SHA-256. */
int identity_local_csr(EVP_PKEY *key, const char *module_id, const char *hostname,
                       const char *domain, bool server, char **ret);

/* The private key as PKCS#8 PEM, in a new string the caller wipes (erase_and_free()) with the
 * length in *ret_len. */
int identity_local_key_pem(EVP_PKEY *key, char **ret, size_t *ret_len);

/* The notAfter of the first certificate of pem in RFC 3339, UTC, as upstream writes it
 * ("2025-01-01T00:00:00+00:00"). -EBADMSG when pem holds no certificate. */
int identity_cert_expiration(const char *pem, char ret[static IDENTITY_EXPIRATION_MAX]);
