/* SPDX-License-Identifier: MIT */
#pragma once

/* The filesystem backend of the key store (keys-store.h): the libaziot-keys operations
 * (aziot-keys.h) on files, byte-compatible with upstream's store under <homedir_path>/keys/.
 *
 * Keys are cached in memory after their first use and revalidated on each use with one stat() of
 * their file (device, inode, size, modification time): a file replaced on disk, by us or by anyone
 * else, is read again. Not thread-safe: the caller serializes calls, as the ABI requires. */

#include "aziot-keys.h"

/* The 2.1.0.0 function list of the backend alone; its parameters are homedir_path and
 * preloaded_key:<id> with file:// locations. */
const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *keys_fs_function_list(void);

/* Forgets every parameter given to set_parameter() and every cached key (secrets are wiped) and
 * releases the crypto library objects: for tests, for a configuration reload (followed by the
 * set_parameter() calls again) and before exit. */
void keys_fs_reset(void);
