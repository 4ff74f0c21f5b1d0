/* SPDX-License-Identifier: MIT */
#pragma once

/* Configuration loading with upstream's rules: the main file (missing = empty), then every regular
 * "*.toml" file directly inside the config directory in sorted order, merged into one tree: tables merge
 * key by key, arrays are concatenated, anything else is replaced by the later file. Paths come from
 * AZIOT_<SVC>_CONFIG / AZIOT_<SVC>_CONFIG_DIR, else /etc/aziot/<svc>/config.toml and config.d. */

#include <stdint.h>

#include "toml.h"

typedef struct ConfigError {
        char *path; /* the file the error is about, NULL when none */
        unsigned line, column;
        char message[256];
} ConfigError;

void config_error_done(ConfigError *e);

/* Logs "<what>: <e formatted>" at level (LOG_ERR, LOG_WARNING) and empties e. */
void config_error_log(ConfigError *e, int level, const char *what);
/* "path:line:column: message" (or shorter forms when parts are unknown) into buf. */
const char *config_error_format(const ConfigError *e, char *buf, size_t size);

/* svc is "keyd", "certd", "identityd" or "tpmd". Returns newly allocated paths. */
int config_paths(const char *svc, char **ret_main, char **ret_dir);

/* Loads and merges. Returns 0, or a negative errno with *ret_error filled (parse errors: -EINVAL with
 * file, line and column). dir may be NULL. */
int config_load_files(const char *main_path, const char *dir, TomlValue **ret, ConfigError *ret_error);
int config_load(const char *svc, TomlValue **ret, ConfigError *ret_error);

/* Merges src into dst (both tables) with the rules above; src is left untouched. */
int config_merge(TomlValue *dst, const TomlValue *src);

/* Typed lookups in a table. -ENOENT when absent; -EMEDIUMTYPE with *ret_error filled (naming the key,
 * the expected type and where the value was written) when of another type. ret_error may be NULL. */
int config_get_string(const TomlValue *table, const char *key, const char **ret,
                      ConfigError *ret_error);
int config_get_integer(const TomlValue *table, const char *key, int64_t *ret,
                       ConfigError *ret_error);
int config_get_bool(const TomlValue *table, const char *key, bool *ret, ConfigError *ret_error);
int config_get_table(const TomlValue *table, const char *key, const TomlValue **ret,
                     ConfigError *ret_error);
int config_get_array(const TomlValue *table, const char *key, const TomlValue **ret,
                     ConfigError *ret_error);

/* Upstream's default for max_requests. */
#define CONFIG_MAX_REQUESTS_DEFAULT 10u

/* The top-level max_requests of a service's configuration (upstream's per-uid limit of connections
 * on its socket, which the gateway enforces after asking the service for it): 0 to UINT32_MAX,
 * CONFIG_MAX_REQUESTS_DEFAULT when absent. -EINVAL or -EMEDIUMTYPE with *ret_error filled. */
int config_get_max_requests(const TomlValue *root, uint32_t *ret, ConfigError *ret_error);

/* Fills *e with a message about v (its position is added). Returns -EINVAL. */
int config_error_at(ConfigError *e, const TomlValue *v, const char *format, ...)
        __attribute__((format(printf, 3, 4)));
