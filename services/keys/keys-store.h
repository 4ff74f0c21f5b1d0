/* SPDX-License-Identifier: MIT */
#pragma once

/* The key store of aziot-keyd: our implementation of the libaziot-keys ABI (aziot-keys.h, the
 * aziot_keys_get_function_list() entry point), over two backends: PKCS#11 tokens
 * (keys-pkcs11.h) and the filesystem (keys-fs.h).
 *
 * Parameters, as upstream: homedir_path, pkcs11_lib_path, pkcs11_base_slot and
 * preloaded_key:<id> (file:// or pkcs11: URI). Where a key id is, as upstream resolves it:
 *   1. a preloaded location, if the id has one (and only there);
 *   2. else, when pkcs11_lib_path and pkcs11_base_slot are both set, the base slot's token
 *      (object labelled with the id) first;
 *   3. then the filesystem, under homedir_path.
 * Loads and uses take the first location that has the key. Key pairs are created in the first
 * location only; symmetric keys go to the next location when the token cannot make them (no HMAC
 * or AES-GCM mechanism). A token that fails (gone, PIN rejected, library missing) does not hide
 * the keys of the filesystem: they keep working, and the token's error is what a caller gets for
 * a key found nowhere.
 *
 * Not thread-safe as a whole (the filesystem backend is not): callers serialize, as keyd does. */

#include "aziot-keys.h"

/* The 2.1.0.0 function list, for callers linked with the store. */
const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *keys_store_function_list(void);

/* After the parameters: when a base slot is configured, loads the PKCS#11 module and logs in to
 * the token now, so that a wrong PIN, a missing token or library shows in the log at start-up.
 * A failure is logged and keys on the filesystem keep working. */
void keys_store_start(void);

/* Forgets every parameter and cached key, closes the token sessions and unloads the PKCS#11
 * module: for tests, and before exit. */
void keys_store_reset(void);
