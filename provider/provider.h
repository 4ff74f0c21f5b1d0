/* SPDX-License-Identifier: MIT */
#pragma once

/* The "aziot" OpenSSL 3 provider: private keys that live in aziot-keyd, used through OpenSSL
 * without ever leaving keyd. See provider/README.md for what it offers and how it is built.
 *
 * Every key object of the provider holds an EVP_PKEY of OpenSSL's default provider in the
 * provider's own library context: the public half for a keyd key (whose handle it also holds), or
 * the whole key for any other key. The second kind exists because OpenSSL fetches a key management
 * or signature by name ("EC", "RSA", "ECDSA") from whichever provider comes first, and that may be
 * this one: so every operation on an ordinary key (key generation for ECDHE, verification of a
 * peer's signature, keys read from files) is forwarded to the default provider, and only the
 * private-key operations of keyd keys go to keyd. */

#include <stdbool.h>
#include <stdint.h>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/evp.h>

#include "aziot-key.h"
#include "macro.h"
#include "openssl-util.h"

typedef struct KeydClient KeydClient;

typedef enum AziotKeyType {
        AZIOT_KEY_EC,
        AZIOT_KEY_RSA,
        _AZIOT_KEY_TYPE_MAX,
} AziotKeyType;

typedef struct AziotProvider {
        const OSSL_CORE_HANDLE *core;
        OSSL_FUNC_core_new_error_fn *core_new_error;
        OSSL_FUNC_core_set_error_debug_fn *core_set_error_debug;
        OSSL_FUNC_core_vset_error_fn *core_vset_error;

        /* Private: only OpenSSL's default provider is loaded in it. */
        OSSL_LIB_CTX *libctx;
        OSSL_PROVIDER *default_provider;
        /* The default provider's own algorithms, for their parameter lists. */
        EVP_KEYMGMT *keymgmt[_AZIOT_KEY_TYPE_MAX];
        EVP_SIGNATURE *signature[_AZIOT_KEY_TYPE_MAX];
        const OSSL_PARAM *gen_settable[_AZIOT_KEY_TYPE_MAX];

        KeydClient *keyd;
} AziotProvider;

typedef struct AziotKey {
        AziotProvider *prov;
        AziotKeyType type;
        /* In prov->libctx: the public half of a keyd key, or a whole ordinary key. NULL while an
         * empty key waits for an import. */
        EVP_PKEY *pkey;
        /* A keyd key: its handle (a bearer secret: never in a message) and what messages call it.
         */
        char *handle;
        char *name;
} AziotKey;

static inline bool aziot_key_in_keyd(const AziotKey *key)
{
        return key && key->handle;
}

/* The OpenSSL name of a key type ("EC", "RSA"). */
const char *aziot_key_type_name(AziotKeyType type);

/* Puts an error of the provider (library "aziot", reason an AziotKeyReason) on the OpenSSL error
 * queue, with a formatted detail (fmt may be NULL). */
void aziot_raise_internal(const AziotProvider *prov, int reason, const char *file, int line,
                          const char *func, const char *fmt, ...) _printf_(6, 7);
#define aziot_raise(prov, reason, ...)                                                             \
        aziot_raise_internal((prov), (reason), __FILE__, __LINE__, __func__, __VA_ARGS__)

/* keymgmt.c */
extern const OSSL_DISPATCH aziot_ec_keymgmt_functions[];
extern const OSSL_DISPATCH aziot_rsa_keymgmt_functions[];
/* The default provider's import (and export) parameter lists, set by the first provider init. */
extern const OSSL_PARAM *aziot_import_types[_AZIOT_KEY_TYPE_MAX];
void aziot_key_free(AziotKey *key);
/* A new key object for the keyd key pair behind handle (taken over), its public half read from
 * keyd. name is what messages call it. Returns NULL after raising an error. */
AziotKey *aziot_key_from_keyd(AziotProvider *prov, char *handle, const char *name);

/* signature.c */
extern const OSSL_DISPATCH aziot_ecdsa_signature_functions[];
extern const OSSL_DISPATCH aziot_rsa_signature_functions[];

/* store.c */
extern const OSSL_DISPATCH aziot_store_functions[];

DEFINE_TRIVIAL_CLEANUP_FUNC(AziotKey *, aziot_key_free);
