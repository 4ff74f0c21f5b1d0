/* SPDX-License-Identifier: MIT */
#pragma once

/* The provider's calls to aziot-keyd: synchronous sd-bus method calls on the system bus
 * (DBUS_SYSTEM_BUS_ADDRESS honoured), made as the calling process, so keyd and the bus authorize it
 * and no one else. One connection per provider context, opened on first use, shared by the threads
 * of the process under a lock, and opened again after it broke or after a fork.
 *
 * Each call returns 1 on success; 0 after putting an error on the OpenSSL error queue that says
 * what keyd (or the bus) answered. what names the key in those messages; never a handle. */

#include <stddef.h>
#include <stdint.h>

#include "provider.h"

int keyd_client_new(KeydClient **ret);
void keyd_client_free(KeydClient *client);

/* LoadKeyPair: a handle to the key pair key_pair_id. */
int keyd_load_key_pair(AziotProvider *prov, const char *key_pair_id, char **ret_handle);

/* GetKeyPairPublicParameter "algorithm": "ECDSA" or "RSA". */
int keyd_key_pair_algorithm(AziotProvider *prov, const char *handle, const char *what,
                            char **ret_algorithm);

/* GetKeyPairPublicParameter for the byte-valued parameters ("ec-curve-oid", "ec-point",
 * "rsa-modulus", "rsa-exponent"). */
int keyd_key_pair_parameter(AziotProvider *prov, const char *handle, const char *what,
                            const char *name, uint8_t **ret, size_t *ret_len);

/* Sign (ECDSA over a digest) when sign is true, else Encrypt (RSA-PKCS1, RSA-NO-PADDING). */
int keyd_private_operation(AziotProvider *prov, const char *handle, const char *what, bool sign,
                           const char *algorithm, const uint8_t *data, size_t len, uint8_t **ret,
                           size_t *ret_len);
