/* SPDX-License-Identifier: MIT */
#pragma once

/* Key handles: the bearer strings the Keys Service hands out for keys, in upstream's format so
 * that handles minted by either implementation stay valid across a switch:
 *
 *     sr=<base64(sr_json)>&sig=<base64(HMAC-SHA256(handle validation key, sr_json))>
 *     sr_json = {"key_id":<key id>,"nonce":"<base64 of 64 random bytes>"}
 *     key id  = {"KeyPair":"<id>"} | {"Key":"<id>"} | {"Derived":["<base handle>",[<bytes>]]}
 *
 * The MAC key is the symmetric key "handle-validation-key" of the key store. This module only
 * sees it through a KeysHandleSigner, so it does not depend on a particular backend.
 *
 * Return convention of keys_handle_parse() and the minting functions: 0 on success, a negative
 * errno for internal failures (the daemon answers "internal error"), and a positive
 * KeysHandleError when the handle or the request is at fault (the daemon answers 400 with
 * keys_handle_error_to_string() as the cause). */

#include <stddef.h>
#include <stdint.h>

#include "aziot-keys.h"
#include "macro.h"

#define KEYS_HANDLE_VALIDATION_KEY_ID "handle-validation-key"
#define KEYS_HANDLE_MAC_SIZE 32u
#define KEYS_HANDLE_NONCE_SIZE 64u
/* Longer strings are not handles (a derived handle grows about 5.5 bytes per derivation byte). */
#define KEYS_HANDLE_MAX_LENGTH (256u * 1024u)

/* Computes HMAC-SHA256 of data with the handle validation key. Returns 0 or a negative errno. */
typedef int (*KeysHandleMacFunc)(void *userdata, const void *data, size_t len,
                                 uint8_t ret_mac[KEYS_HANDLE_MAC_SIZE]);

typedef struct KeysHandleSigner {
        KeysHandleMacFunc mac;
        void *userdata;
} KeysHandleSigner;

/* The two operations of a libaziot-keys function list that a signer needs. Take them from
 * whichever function list version was loaded. */
typedef struct KeysHandleAziotKeys {
        AZIOT_KEYS_CREATE_KEY_IF_NOT_EXISTS_FN create_key_if_not_exists;
        AZIOT_KEYS_SIGN_FN sign;
} KeysHandleAziotKeys;

/* A signer that MACs with the library's "handle-validation-key", creating the key (32 random
 * bytes, usage sign) the first time it turns out to be missing. ak must outlive the signer. */
void keys_handle_signer_from_aziot_keys(KeysHandleSigner *ret, const KeysHandleAziotKeys *ak);

typedef enum KeysHandleKind {
        KEYS_HANDLE_KEY_PAIR = 1,
        KEYS_HANDLE_KEY,
        KEYS_HANDLE_DERIVED,
} KeysHandleKind;

typedef enum KeysHandleError {
        KEYS_HANDLE_ERR_INVALID = 1,    /* "invalid handle": undecodable, forged, malformed */
        KEYS_HANDLE_ERR_NESTED_DERIVED, /* a derived key whose base is itself derived */
        KEYS_HANDLE_ERR_RESERVED_ID,    /* names the handle validation key */
        KEYS_HANDLE_ERR_NOT_KEY,        /* a handle of another kind where a Key was required */
        KEYS_HANDLE_ERR_NOT_KEY_PAIR,
        KEYS_HANDLE_ERR_NOT_DERIVED,
        _KEYS_HANDLE_ERR_MAX,
} KeysHandleError;

/* Upstream's wording of each error ("invalid handle", "handle is not for a key", …). */
const char *keys_handle_error_to_string(KeysHandleError e);

/* A verified handle. */
typedef struct KeysHandle {
        KeysHandleKind kind;
        /* KeyPair and Key: the key's id. Derived: the id of the base key. */
        char *id;
        /* Derived only: the kind of the base key (KEY or KEY_PAIR), its handle as embedded, and
         * the derivation data. */
        KeysHandleKind base_kind;
        char *base_handle;
        uint8_t *derivation_data;
        size_t derivation_data_len;
} KeysHandle;

KeysHandle *keys_handle_free(KeysHandle *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(KeysHandle *, keys_handle_free);

/* Mints a new handle (fresh nonce each time) for key pair / symmetric key id. The handle
 * validation key itself never gets a handle: KEYS_HANDLE_ERR_RESERVED_ID. */
int keys_handle_mint_key_pair(const KeysHandleSigner *s, const char *id, char **ret);
int keys_handle_mint_key(const KeysHandleSigner *s, const char *id, char **ret);

/* Mints a Derived handle over base_handle, which is verified first: it must be a Key or KeyPair
 * handle (a Derived one gives KEYS_HANDLE_ERR_NESTED_DERIVED). */
int keys_handle_mint_derived(const KeysHandleSigner *s, const char *base_handle,
                             const uint8_t *derivation_data, size_t derivation_data_len,
                             char **ret);

/* Verifies handle (MAC in constant time over the decoded sr bytes, then the JSON) and returns
 * what it designates. For Derived handles the embedded base handle is verified too. */
int keys_handle_parse(const KeysHandleSigner *s, const char *handle, KeysHandle **ret);

/* 0 when h is of the kind the operation needs, else the matching KEYS_HANDLE_ERR_NOT_*. */
int keys_handle_require(const KeysHandle *h, KeysHandleKind kind);
