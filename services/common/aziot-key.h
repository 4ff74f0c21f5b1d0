/* SPDX-License-Identifier: MIT */
#pragma once

/* keyd-held private keys as OpenSSL EVP_PKEYs: the "aziot-key:" URI scheme that the OpenSSL
 * provider (provider/, loaded as "aziot") serves through OSSL_STORE, the reasons it puts on the
 * OpenSSL error queue, and the call our daemons use to get an EVP_PKEY for a key pair id.
 *
 *   aziot-key:pair/<key pair id>     the key pair of that id (keyd's LoadKeyPair, authorized as the
 *                                    calling process: root, a [[principal]], else polkit)
 *   aziot-key:handle/<key handle>    the key pair an existing key handle names (no further
 *                                    authorization: a handle is a bearer token)
 *
 * The scheme is case-insensitive; the id or handle after "pair/" or "handle/" is percent-decoded
 * (RFC 3986): "%" must be written %25, and "?", "#", spaces, control characters and bytes outside
 * ASCII must be percent-encoded. Key handles (base64, "=", "&") need no encoding. */

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/types.h>

#define AZIOT_KEY_URI_SCHEME "aziot-key"
#define AZIOT_KEY_PROVIDER_NAME "aziot"

typedef enum AziotKeyUriKind {
        AZIOT_KEY_URI_PAIR,
        AZIOT_KEY_URI_HANDLE,
} AziotKeyUriKind;

/* Parses an aziot-key: URI. On success returns 0 and a new string with the decoded key pair id or
 * handle in *ret_value. -EINVAL when uri is not an aziot-key: URI or is malformed (the static
 * message in *ret_problem, when not NULL, says what is wrong), -ENOMEM. */
int aziot_key_uri_parse(const char *uri, AziotKeyUriKind *ret_kind, char **ret_value,
                        const char **ret_problem);

/* Formats the URI of a key pair id or handle (everything but ALPHA, DIGIT and "-._~" escaped).
 * Returns 0, -EINVAL for an empty value, -ENOMEM. */
int aziot_key_uri_format(AziotKeyUriKind kind, const char *value, char **ret);

/* The reasons of the provider's errors on the OpenSSL error queue (library "aziot"). */
typedef enum AziotKeyReason {
        AZIOT_KEY_R_KEYD_UNREACHABLE = 1,
        AZIOT_KEY_R_NOT_AUTHORIZED,
        AZIOT_KEY_R_BUS_DENIED,
        AZIOT_KEY_R_KEY_NOT_FOUND,
        AZIOT_KEY_R_KEYD_REJECTED,
        AZIOT_KEY_R_KEYD_FAILED,
        AZIOT_KEY_R_BAD_URI,
        AZIOT_KEY_R_UNSUPPORTED_KEY,
        AZIOT_KEY_R_NOT_SUPPORTED,
        AZIOT_KEY_R_BAD_REPLY,
        AZIOT_KEY_R_INTERNAL,
} AziotKeyReason;

/* The text of each reason (what `openssl` prints), NULL for an unknown one. */
const char *aziot_key_reason_to_string(int reason);

/* For our daemons: an EVP_PKEY for the keyd key pair key_pair_id, whose private-key operations go
 * to keyd over the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured), authorized as this process.
 * Loads the "aziot" provider into libctx (NULL: the default library context) once, keeping the
 * default provider available, then opens aziot-key:pair/<id> through OSSL_STORE.
 *
 * Every call blocks on one or two D-Bus round trips, and so does every signature made with the key.
 *
 * Returns 0; or -EACCES (not authorized: bus policy or keyd), -ENOENT (no such key pair),
 * -EHOSTUNREACH (keyd or the bus cannot be reached), -ENOPKG (the provider cannot be loaded),
 * -EBADMSG (keyd rejected the request, e.g. a forged handle), -EINVAL, -ENOMEM, -EIO; then, when
 * ret_message is not NULL, a new string that says why (from the OpenSSL error queue, which is
 * cleared). */
int aziot_key_evp_pkey(OSSL_LIB_CTX *libctx, const char *key_pair_id, EVP_PKEY **ret,
                       char **ret_message);

/* The same for a key handle the caller was given (aziot-key:handle/<handle>): whoever holds a
 * handle may use its key, as with keyd's HTTP API. */
int aziot_key_evp_pkey_from_handle(OSSL_LIB_CTX *libctx, const char *handle, EVP_PKEY **ret,
                                   char **ret_message);

/* Unloads the provider aziot_key_evp_pkey() loaded into the default library context (at exit,
 * once every key it made is freed: a daemon's last step, so that nothing it holds looks leaked). */
void aziot_key_provider_unload(void);
