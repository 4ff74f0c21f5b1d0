/* SPDX-License-Identifier: MIT */
#include "certs-preloaded.h"
#include "file-uri.h"
#include "certs-store.h"
#include "log.h"

static void preloaded_done(CertsPreloaded *p)
{
        free(p->id);
        free(p->path);
        strv_free(p->members);
        *p = (CertsPreloaded){};
}

void certs_preloaded_set_clear(CertsPreloadedSet *set)
{
        for (size_t i = 0; i < set->n; i++)
                preloaded_done(&set->items[i]);
        free(set->items);
        *set = (CertsPreloadedSet){};
}

const CertsPreloaded *certs_preloaded_find(const CertsPreloadedSet *set, const char *id)
{
        for (size_t i = 0; i < set->n; i++)
                if (streq(set->items[i].id, id))
                        return &set->items[i];
        return NULL;
}

/* Fills p (id already set) from a URI. An unusable URI is kept as an error, not refused. */
static int preloaded_set_uri(CertsPreloaded *p, const char *uri)
{
        int r;

        r = file_uri_to_path(uri, &p->path);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                log_warning("Preloaded certificate %s: \"%s\" is not a file:///absolute/path URI; "
                            "it cannot be used.",
                            p->id, uri);
                p->error = r;
        }
        return 0;
}

static int preloaded_set_members(CertsPreloaded *p, char *const *ids, size_t n)
{
        p->members = calloc(n + 1, sizeof(char *));
        if (!p->members)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (certs_id_validate(ids[i]) < 0)
                        return -EINVAL;
                p->members[i] = strdup(ids[i]);
                if (!p->members[i])
                        return -ENOMEM;
        }
        return 0;
}

/* Appends a new entry for id to the set, or returns the existing one emptied. */
static int preloaded_slot(CertsPreloadedSet *set, const char *id, CertsPreloaded **ret)
{
        CertsPreloaded *l;
        char *copy;

        for (size_t i = 0; i < set->n; i++)
                if (streq(set->items[i].id, id)) {
                        copy = TAKE_PTR(set->items[i].id);
                        preloaded_done(&set->items[i]);
                        set->items[i].id = copy;
                        *ret = &set->items[i];
                        return 0;
                }
        copy = strdup(id);
        if (!copy)
                return -ENOMEM;
        l = reallocarray(set->items, set->n + 1, sizeof(CertsPreloaded));
        if (!l) {
                free(copy);
                return -ENOMEM;
        }
        set->items = l;
        set->items[set->n] = (CertsPreloaded){.id = copy};
        *ret = &set->items[set->n++];
        return 0;
}

int certs_preloaded_add_uri(CertsPreloadedSet *set, const char *id, const char *uri)
{
        CertsPreloaded *p;
        int r;

        r = certs_id_validate(id);
        if (r < 0 || !uri)
                return -EINVAL;
        r = preloaded_slot(set, id, &p);
        if (r < 0)
                return r;
        return preloaded_set_uri(p, uri);
}

int certs_preloaded_add_bundle(CertsPreloadedSet *set, const char *id, char *const *member_ids,
                               size_t n_members)
{
        CertsPreloaded *p;
        int r;

        r = certs_id_validate(id);
        if (r < 0 || (n_members > 0 && !member_ids))
                return -EINVAL;
        for (size_t i = 0; i < n_members; i++)
                if (certs_id_validate(member_ids[i]) < 0)
                        return -EINVAL;
        r = preloaded_slot(set, id, &p);
        if (r < 0)
                return r;
        return preloaded_set_members(p, member_ids, n_members);
}

static int preloaded_from_toml(CertsPreloadedSet *set, const TomlEntry *e, ConfigError *ret_error)
{
        const TomlValue *v = e->value;
        _cleanup_free_ char **ids = NULL;
        CertsPreloaded *p;
        int r;

        if (strlen(e->key) != e->key_len || certs_id_validate(e->key) < 0)
                return config_error_at(ret_error, v,
                                       "[preloaded_certs] has an invalid certificate id");

        if (v->type == TOML_STRING) {
                if (strlen(v->string.data) != v->string.len)
                        return config_error_at(ret_error, v, "preloaded_certs.%s: invalid URI",
                                               e->key);
                r = preloaded_slot(set, e->key, &p);
                return r < 0 ? r : preloaded_set_uri(p, v->string.data);
        }
        if (v->type != TOML_ARRAY)
                return config_error_at(ret_error, v,
                                       "preloaded_certs.%s must be a URI string or an array of "
                                       "certificate ids",
                                       e->key);

        ids = calloc(toml_array_size(v) + 1, sizeof(char *));
        if (!ids)
                return -ENOMEM;
        for (size_t i = 0; i < toml_array_size(v); i++) {
                const TomlValue *item = toml_array_get(v, i);

                if (item->type != TOML_STRING || strlen(item->string.data) != item->string.len ||
                    certs_id_validate(item->string.data) < 0)
                        return config_error_at(
                                ret_error, item,
                                "preloaded_certs.%s: item %zu is not a certificate id", e->key, i);
                ids[i] = item->string.data;
        }
        r = preloaded_slot(set, e->key, &p);
        return r < 0 ? r : preloaded_set_members(p, ids, toml_array_size(v));
}

int certs_preloaded_parse(const TomlValue *table, CertsPreloadedSet *ret, ConfigError *ret_error)
{
        CertsPreloadedSet set = {};
        int r;

        if (table && table->type != TOML_TABLE)
                return config_error_at(ret_error, table, "preloaded_certs must be a table");
        if (table)
                toml_table_foreach (e, table) {
                        r = preloaded_from_toml(&set, e, ret_error);
                        if (r < 0) {
                                certs_preloaded_set_clear(&set);
                                return r;
                        }
                }
        *ret = set;
        return 0;
}
