/* SPDX-License-Identifier: MIT */
#include "principal.h"
#include "macro.h"

/* Length of the UTF-8 sequence starting at s (1 for anything malformed, so we always advance). */
static size_t utf8_char_len(const char *s)
{
        unsigned char c = (unsigned char)*s;
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 1;

        for (size_t i = 1; i < n; i++)
                if (((unsigned char)s[i] & 0xc0) != 0x80)
                        return 1;
        return n;
}

bool glob_match(const char *pattern, const char *s)
{
        /* Greedy matching with one backtrack point: the last '*' seen and where it started matching.
         * Linear in practice, never exponential. */
        const char *star = NULL, *star_s = NULL;

        while (*s) {
                if (*pattern == '*') {
                        star = ++pattern;
                        star_s = s;
                        continue;
                }
                if (*pattern == '?') {
                        pattern++;
                        s += utf8_char_len(s);
                        continue;
                }
                if (*pattern && *pattern == *s) {
                        pattern++;
                        s++;
                        continue;
                }
                if (!star)
                        return false;
                /* Let the last '*' swallow one more character and retry after it. */
                star_s += utf8_char_len(star_s);
                s = star_s;
                pattern = star;
        }
        while (*pattern == '*')
                pattern++;
        return *pattern == 0;
}

void principal_set_done(PrincipalSet *set)
{
        for (size_t i = 0; i < set->n; i++)
                strv_free(set->items[i].globs);
        free(set->items);
        *set = (PrincipalSet){};
}

static Principal *principal_for_uid(PrincipalSet *set, uid_t uid)
{
        Principal *n;

        for (size_t i = 0; i < set->n; i++)
                if (set->items[i].uid == uid)
                        return &set->items[i];
        n = realloc(set->items, (set->n + 1) * sizeof(Principal));
        if (!n)
                return NULL;
        set->items = n;
        n = &set->items[set->n];
        *n = (Principal){ .uid = uid, .globs = calloc(1, sizeof(char *)) };
        if (!n->globs)
                return NULL;
        set->n++;
        return n;
}

static int principal_add_glob(Principal *p, const char *glob)
{
        char **n = realloc(p->globs, (p->n_globs + 2) * sizeof(char *));

        if (!n)
                return -ENOMEM;
        p->globs = n;
        p->globs[p->n_globs] = strdup(glob);
        if (!p->globs[p->n_globs])
                return -ENOMEM;
        p->globs[++p->n_globs] = NULL;
        return 0;
}

static int principal_parse_one(PrincipalSet *set, const TomlValue *entry, const char *list_key,
                               ConfigError *ret_error)
{
        const TomlValue *uid_v, *list;
        Principal *p;
        int r;

        if (entry->type != TOML_TABLE)
                return config_error_at(ret_error, entry, "each [[principal]] must be a table");

        uid_v = toml_table_get(entry, "uid");
        if (!uid_v)
                return config_error_at(ret_error, entry, "[[principal]] is missing \"uid\"");
        if (uid_v->type != TOML_INTEGER || uid_v->integer < 0 || uid_v->integer >= (int64_t)UINT32_MAX)
                return config_error_at(ret_error, uid_v,
                                       "\"uid\" of a [[principal]] must be an integer uid");

        r = config_get_array(entry, list_key, &list, ret_error);
        if (r == -ENOENT)
                return config_error_at(ret_error, entry, "[[principal]] is missing \"%s\"",
                                       list_key);
        if (r < 0)
                return -EINVAL;

        p = principal_for_uid(set, (uid_t)uid_v->integer);
        if (!p)
                return -ENOMEM;

        toml_array_foreach(item, list)
        {
                if ((*item)->type != TOML_STRING || memchr((*item)->string.data, 0, (*item)->string.len))
                        return config_error_at(ret_error, *item,
                                               "\"%s\" of a [[principal]] must be a list of strings",
                                               list_key);
                r = principal_add_glob(p, (*item)->string.data);
                if (r < 0)
                        return r;
        }
        return 0;
}

int principal_set_from_config(const TomlValue *config, const char *list_key, PrincipalSet *ret,
                              ConfigError *ret_error)
{
        _cleanup_(principal_set_done) PrincipalSet set = {};
        const TomlValue *list;
        int r;

        r = config_get_array(config, "principal", &list, ret_error);
        if (r == -ENOENT) {
                *ret = (PrincipalSet){};
                return 0;
        }
        if (r < 0)
                return -EINVAL;

        toml_array_foreach(entry, list)
        {
                r = principal_parse_one(&set, *entry, list_key, ret_error);
                if (r < 0)
                        return r;
        }

        *ret = set;
        set = (PrincipalSet){};
        return 0;
}

bool principal_allows(const PrincipalSet *set, uid_t uid, const char *id)
{
        for (size_t i = 0; i < set->n; i++) {
                if (set->items[i].uid != uid)
                        continue;
                for (size_t j = 0; j < set->items[i].n_globs; j++)
                        if (glob_match(set->items[i].globs[j], id))
                                return true;
        }
        return false;
}
