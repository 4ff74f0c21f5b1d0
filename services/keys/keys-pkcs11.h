/* SPDX-License-Identifier: MIT */
#pragma once

/* The PKCS#11 backend of the key store: keys that live in a token (an HSM, a TPM through
 * tpm2-pkcs11, softhsm2) and never leave it.
 *
 * Keys are token objects found by CKA_LABEL: a key pair is a CKO_PRIVATE_KEY and a
 * CKO_PUBLIC_KEY with the same label, a symmetric key a CKO_SECRET_KEY (CKK_GENERIC_SECRET for
 * HMAC, CKK_AES for AEAD). Keys generated here are CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE and not
 * CKA_EXTRACTABLE.
 *
 * A slot is named by a PKCS#11 URI (pkcs11-uri.h): slot-id, else token label; its pin-value logs
 * the session in as CKU_USER. Sessions are opened on first use and kept; one that the token
 * invalidates (CKR_SESSION_HANDLE_INVALID, CKR_USER_NOT_LOGGED_IN, …) is reopened and logged in
 * again, and after a device error (the token went away) the module is finalized and initialized
 * again, each time retrying the operation once. A PIN the token rejected is not tried again until
 * the configuration is reset, so that a wrong PIN cannot lock the token. Every entry point takes
 * one lock: the backend may be used from several threads.
 *
 * A NULL slot stands for a location whose URI was not valid: every operation on it fails with
 * -ENXIO.
 *
 * Errors are negative errno values; the reason is logged where it is found (with the slot in its
 * display form, never the PIN):
 *   -ENOENT      no such object (the store then tries its next location)
 *   -EOPNOTSUPP  the token cannot do it (no such mechanism), or the key is of the wrong type
 *   -EINVAL      bad argument for the token (wrong AES key length, …)
 *   -EBADE       a ciphertext that fails authentication
 *   -ENOBUFS     output buffer too small
 *   -ENXIO       no such token or slot, or the library cannot be loaded
 *   -EACCES      the token rejected the PIN
 *   -EIO         any other failure of the token */

#include <openssl/evp.h>
#include <stdbool.h>

#include "aziot-keys.h"
#include "keys-crypto.h"
#include "pkcs11-uri.h"

/* Private-key operations of a key pair. */
typedef enum KeysPkcs11PrivateOp {
        KEYS_PKCS11_ECDSA,    /* CKM_ECDSA over a digest; the signature comes back as DER */
        KEYS_PKCS11_RSA_PKCS, /* CKM_RSA_PKCS: PKCS#1 v1.5 type 1 padding of caller data */
        KEYS_PKCS11_RSA_X509, /* CKM_RSA_X509: raw RSA on a modulus-sized block */
} KeysPkcs11PrivateOp;

/* The module to dlopen. Loaded on first use. */
int keys_pkcs11_set_library(const char *path);
bool keys_pkcs11_has_library(void);
/* Loads the module, opens a session on slot and logs in: the start-up check. */
int keys_pkcs11_check_slot(const Pkcs11Uri *slot);
/* Closes every session, finalizes and unloads the module, forgets the library path. */
void keys_pkcs11_reset(void);

/* 0 when the key pair's private key exists. */
int keys_pkcs11_key_pair_find(const Pkcs11Uri *slot, const char *label);
/* Generates a key pair on the token with the first algorithm of algs that the token supports,
 * unless the token already holds one labelled label (checked on the session that would generate
 * it, so that a retry after the token came back does not replace a key). */
int keys_pkcs11_key_pair_create(const Pkcs11Uri *slot, const char *label,
                                const KeysAlgorithm *algs, size_t n_algs);
/* The public key, from the public key object (or the private key's public attributes). */
int keys_pkcs11_key_pair_public(const Pkcs11Uri *slot, const char *label, EVP_PKEY **ret);
/* *out_len is the capacity on input, the length written on output. */
int keys_pkcs11_private_op(const Pkcs11Uri *slot, const char *label, KeysPkcs11PrivateOp op,
                           const uint8_t *in, size_t len, uint8_t *out, size_t *out_len);
/* Destroys the key pair's objects; none is not an error. */
int keys_pkcs11_key_pair_delete(const Pkcs11Uri *slot, const char *label);
/* Relabels the key pair from as to, destroying what to was before. */
int keys_pkcs11_key_pair_move(const Pkcs11Uri *slot, const char *from, const char *to);

/* 0 when the symmetric key exists. */
int keys_pkcs11_secret_find(const Pkcs11Uri *slot, const char *label);
/* Generates a symmetric key, unless one labelled label exists (as for key pairs): an HMAC key
 * (usage sign/derive) or an AES key that the token can use with AES-GCM (usage encrypt).
 * -EOPNOTSUPP: the token cannot, use another location. Both usages at once: -EINVAL. */
int keys_pkcs11_secret_create(const Pkcs11Uri *slot, const char *label, AZIOT_KEYS_KEY_USAGE usage);
/* Stores bytes as the symmetric key label (C_CreateObject), replacing what was there. */
int keys_pkcs11_secret_import(const Pkcs11Uri *slot, const char *label, AZIOT_KEYS_KEY_USAGE usage,
                              const uint8_t *bytes, size_t len);
int keys_pkcs11_secret_delete(const Pkcs11Uri *slot, const char *label);
/* HMAC-SHA256 of data with the key, computed by the token. */
int keys_pkcs11_hmac(const Pkcs11Uri *slot, const char *label, const uint8_t *data, size_t len,
                     uint8_t out[KEYS_HMAC_SIZE]);
/* AES-GCM by the token, in the store's v2 ciphertext format (0x02 || ciphertext || tag). out holds
 * keys_aead_ciphertext_size(len) bytes when encrypting, the plaintext size when decrypting. */
int keys_pkcs11_aead_encrypt(const Pkcs11Uri *slot, const char *label,
                             const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p, const uint8_t *in,
                             size_t len, uint8_t *out);
int keys_pkcs11_aead_decrypt(const Pkcs11Uri *slot, const char *label,
                             const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p, const uint8_t *in,
                             size_t len, uint8_t *out, size_t *out_len);
