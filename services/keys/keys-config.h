/* SPDX-License-Identifier: MIT */
#pragma once

/* The keyd configuration (/etc/aziot/keyd/config.toml + config.d), as upstream reads it:
 *   [aziot_keys]      string → string, handed to the key store's set_parameter() verbatim
 *   [preloaded_keys]  key id → location URI ("file:///…", "pkcs11:…")
 *   [[principal]]     uid + "keys" globs (hot-reloaded)
 *   max_requests      published as the MaxRequests property, which the gateway enforces on
 *                     keyd.sock (read once: not reloaded)
 * and one key of ours:
 *   aziot_keys_library  path of a libaziot-keys implementation to load instead of the built-in
 *                       store (a vendor's libaziot_keys.so written for upstream's ABI) */

#include "config.h"
#include "principal.h"

typedef struct KeysConfig {
        char **parameters; /* NULL-terminated name, value, name, value, … for set_parameter() */
        PrincipalSet principals;
        char *library; /* aziot_keys_library, NULL: the built-in store */
        uint32_t max_requests;
} KeysConfig;

int keys_config_parse(const TomlValue *root, KeysConfig *ret, ConfigError *ret_error);
int keys_config_load(KeysConfig *ret, ConfigError *ret_error);
void keys_config_done(KeysConfig *c);
