/* SPDX-License-Identifier: MIT */
#include "keys-config.h"
#include "macro.h"

void keys_config_done(KeysConfig *c)
{
        if (c->parameters)
                for (char **p = c->parameters; *p; p++)
                        erase_and_free(*p, strlen(*p)); /* a pkcs11 URI may carry a PIN */
        free(c->parameters);
        c->parameters = NULL;
        principal_set_done(&c->principals);
        c->library = mfree_str(c->library);
}

static int strv_push_pair(char ***l, size_t *n, const char *a, const char *b)
{
        char **nl = realloc(*l, (*n + 3) * sizeof(char *));

        if (!nl)
                return -ENOMEM;
        *l = nl;
        nl[*n] = strdup(a);
        nl[*n + 1] = strdup(b);
        nl[*n + 2] = NULL;
        if (!nl[*n] || !nl[*n + 1]) {
                free(nl[*n]);
                free(nl[*n + 1]);
                nl[*n] = NULL;
                return -ENOMEM;
        }
        *n += 2;
        return 0;
}

/* Appends every string entry of a table as (prefix + key, value). */
static int push_table(const TomlValue *root, const char *name, const char *prefix, char ***l,
                      size_t *n, ConfigError *ret_error)
{
        const TomlValue *t;
        int r;

        r = config_get_table(root, name, &t, ret_error);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return -EINVAL;

        toml_table_foreach(e, t)
        {
                _cleanup_free_ char *full = NULL;

                if (e->value->type != TOML_STRING ||
                    memchr(e->value->string.data, 0, e->value->string.len))
                        return config_error_at(ret_error, e->value, "[%s] %s must be a string", name,
                                               e->key);
                if (memchr(e->key, 0, e->key_len))
                        return config_error_at(ret_error, e->value,
                                               "[%s] keys must not contain NUL", name);
                if (asprintf(&full, "%s%s", prefix, e->key) < 0)
                        return -ENOMEM;
                r = strv_push_pair(l, n, full, e->value->string.data);
                if (r < 0)
                        return r;
        }
        return 0;
}

int keys_config_parse(const TomlValue *root, KeysConfig *ret, ConfigError *ret_error)
{
        _cleanup_(keys_config_done) KeysConfig c = {};
        const char *library = NULL;
        size_t n = 0;
        int r;

        c.parameters = calloc(1, sizeof(char *));
        if (!c.parameters)
                return -ENOMEM;

        r = push_table(root, "aziot_keys", "", &c.parameters, &n, ret_error);
        if (r < 0)
                return r;
        r = push_table(root, "preloaded_keys", "preloaded_key:", &c.parameters, &n, ret_error);
        if (r < 0)
                return r;
        r = principal_set_from_config(root, "keys", &c.principals, ret_error);
        if (r < 0)
                return r;
        r = config_get_max_requests(root, &c.max_requests, ret_error);
        if (r < 0)
                return r;
        r = config_get_string(root, "aziot_keys_library", &library, ret_error);
        if (r >= 0) {
                if (library[0] != '/')
                        return config_error_at(ret_error, toml_table_get(root, "aziot_keys_library"),
                                               "aziot_keys_library must be an absolute path");
                c.library = strdup(library);
                if (!c.library)
                        return -ENOMEM;
        } else if (r != -ENOENT)
                return r;

        *ret = c;
        c = (KeysConfig){};
        return 0;
}

int keys_config_load(KeysConfig *ret, ConfigError *ret_error)
{
        _cleanup_toml_ TomlValue *root = NULL;
        int r;

        r = config_load("keyd", &root, ret_error);
        if (r < 0)
                return r;
        return keys_config_parse(root, ret, ret_error);
}
