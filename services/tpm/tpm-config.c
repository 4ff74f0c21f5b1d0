/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "tpm-config.h"

void tpm_config_done(TpmConfig *c)
{
        if (c->settings.endorsement_auth)
                explicit_bzero(c->settings.endorsement_auth, strlen(c->settings.endorsement_auth));
        if (c->settings.owner_auth)
                explicit_bzero(c->settings.owner_auth, strlen(c->settings.owner_auth));
        free(c->settings.tcti);
        free(c->settings.endorsement_auth);
        free(c->settings.owner_auth);
        *c = (TpmConfig){};
}

static int copy_string(const TomlValue *table, const char *key, const char *fallback, char **ret,
                       ConfigError *ret_error)
{
        const char *s = fallback;
        int r;

        r = config_get_string(table, key, &s, ret_error);
        if (r < 0 && r != -ENOENT)
                return r;
        if (r >= 0 && memchr(s, 0, toml_table_get(table, key)->string.len))
                return config_error_at(ret_error, toml_table_get(table, key),
                                       "\"%s\" must not contain NUL", key);
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int tpm_config_parse(const TomlValue *root, TpmConfig *ret, ConfigError *ret_error)
{
        _cleanup_(tpm_config_done) TpmConfig c = { .auth_key_index = TPM_AUTH_KEY_INDEX_DEFAULT };
        const TomlValue *index, *hierarchy = NULL;
        int64_t v;
        int r;

        r = copy_string(root, "tcti", TPM_DEFAULT_TCTI, &c.settings.tcti, ret_error);
        if (r < 0)
                return r;

        index = toml_table_get(root, "auth_key_index");
        if (index && index->type == TOML_STRING) {
                /* Upstream's template writes it quoted, which upstream rejects without a word. */
                return config_error_at(ret_error, index,
                                       "auth_key_index must be an integer, not a string: write "
                                       "auth_key_index = %s without quotes",
                                       index->string.data);
        }
        r = config_get_integer(root, "auth_key_index", &v, ret_error);
        if (r >= 0) {
                if (v < 0 || v > TPM_AUTH_KEY_INDEX_MAX) {
                        return config_error_at(ret_error, index,
                                               "auth_key_index must be from 0 to 0x%x",
                                               TPM_AUTH_KEY_INDEX_MAX);
                }
                c.auth_key_index = (uint32_t)v;
        } else if (r != -ENOENT)
                return r;

        r = config_get_max_requests(root, &c.max_requests, ret_error);
        if (r < 0)
                return r;

        r = config_get_table(root, "hierarchy_authorization", &hierarchy, ret_error);
        if (r < 0 && r != -ENOENT)
                return r;
        if (hierarchy) {
                r = copy_string(hierarchy, "endorsement", NULL, &c.settings.endorsement_auth,
                                ret_error);
                if (r >= 0)
                        r = copy_string(hierarchy, "owner", NULL, &c.settings.owner_auth,
                                        ret_error);
                if (r < 0)
                        return r;
                for (const char *const *k = (const char *const[]){ "endorsement", "owner", NULL };
                     *k; k++) {
                        const TomlValue *p = toml_table_get(hierarchy, *k);

                        /* A TPM2B_AUTH holds at most 64 bytes (SHA-512). */
                        if (p && p->string.len > 64) {
                                return config_error_at(ret_error, p,
                                                       "hierarchy_authorization.%s is longer than "
                                                       "64 bytes",
                                                       *k);
                        }
                }
        }
        *ret = c;
        c = (TpmConfig){};
        return 0;
}

int tpm_config_load(TpmConfig *ret, ConfigError *ret_error)
{
        _cleanup_toml_ TomlValue *root = NULL;
        int r;

        r = config_load("tpmd", &root, ret_error);
        if (r < 0)
                return r;
        return tpm_config_parse(root, ret, ret_error);
}
