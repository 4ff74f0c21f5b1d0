/* SPDX-License-Identifier: MIT */
#pragma once

/* Cleanup helpers for the OpenSSL objects certd uses, and OpenSSL error logging. */

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIGNUM *, BN_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_REQ *, X509_REQ_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_NAME *, X509_NAME_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_EXTENSION *, X509_EXTENSION_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_BIT_STRING *, ASN1_BIT_STRING_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_OCTET_STRING *, ASN1_OCTET_STRING_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BASIC_CONSTRAINTS *, BASIC_CONSTRAINTS_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(AUTHORITY_KEYID *, AUTHORITY_KEYID_free);

/* Names for the stacks, which clang-format cannot lay out as STACK_OF(T) *. */
typedef STACK_OF(X509) X509Stack;
typedef STACK_OF(X509_EXTENSION) X509ExtensionStack;

static inline void sk_X509_pop_freep(X509Stack **sk)
{
        sk_X509_pop_free(*sk, X509_free);
}

static inline void sk_X509_EXTENSION_pop_freep(X509ExtensionStack **sk)
{
        sk_X509_EXTENSION_pop_free(*sk, X509_EXTENSION_free);
}

/* Logs the OpenSSL error queue under the given context, empties it, returns -EIO. */
int certs_log_openssl_error(const char *what);
