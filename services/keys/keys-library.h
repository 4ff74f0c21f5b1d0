/* SPDX-License-Identifier: MIT */
#pragma once

/* The libaziot-keys implementation keyd uses: the built-in store (keys-store.h), or a library
 * named by configuration (aziot_keys_library) that exports aziot_keys_get_function_list() as
 * upstream's libaziot_keys.so does. Function list 2.1.0.0 is asked for first, then 2.0.0.0; with
 * 2.0.0.0, moving and deleting keys succeed without doing anything, as with upstream keyd. */

#include "aziot-keys.h"

typedef struct KeysLibrary {
        void *dl; /* NULL: the built-in store */
        AZIOT_KEYS_VERSION version;
        AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 list; /* what keyd calls, whatever the version */
} KeysLibrary;

/* path NULL: the built-in store. Errors are logged: the library cannot be loaded, lacks the
 * entry point, or offers no version keyd speaks. */
int keys_library_open(const char *path, KeysLibrary *ret);
void keys_library_close(KeysLibrary *l);
