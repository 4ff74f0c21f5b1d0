/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "atomic-file.h"
#include "build-config.h"
#include "config.h"
#include "log.h"
#include "macro.h"

#define CONFIG_FILE_MAX (4u * 1024u * 1024u)

/* Values remember the file they came from by pointer. Paths are interned for the life of the process:
 * a daemon reads the same few files again on every reload, so this stays small. */
static char **origins = NULL;
static size_t n_origins = 0;

static const char *origin_intern(const char *path)
{
        char **n;

        for (size_t i = 0; i < n_origins; i++)
                if (streq(origins[i], path))
                        return origins[i];
        n = realloc(origins, (n_origins + 1) * sizeof(char *));
        if (!n)
                return NULL;
        origins = n;
        origins[n_origins] = strdup(path);
        if (!origins[n_origins])
                return NULL;
        return origins[n_origins++];
}

static void origin_stamp(TomlValue *v, const char *origin)
{
        v->origin = origin;
        if (v->type == TOML_TABLE)
                toml_table_foreach(e, v) origin_stamp(e->value, origin);
        else if (v->type == TOML_ARRAY)
                toml_array_foreach(i, v) origin_stamp(*i, origin);
}

void config_error_done(ConfigError *e)
{
        if (!e)
                return;
        free(e->path);
        e->path = NULL;
}

static void config_error_set(ConfigError *e, const char *path, unsigned line, unsigned column,
                             const char *format, ...) __attribute__((format(printf, 5, 6)));

static void config_error_set(ConfigError *e, const char *path, unsigned line, unsigned column,
                             const char *format, ...)
{
        va_list ap;

        if (!e)
                return;
        free(e->path);
        e->path = path ? strdup(path) : NULL;
        e->line = line;
        e->column = column;
        va_start(ap, format);
        vsnprintf(e->message, sizeof(e->message), format, ap);
        va_end(ap);
}

void config_error_log(ConfigError *e, int level, const char *what)
{
        char buf[1024];

        log_full(level, "%s: %s", what, config_error_format(e, buf, sizeof(buf)));
        config_error_done(e);
}

const char *config_error_format(const ConfigError *e, char *buf, size_t size)
{
        if (e->path && e->line > 0)
                snprintf(buf, size, "%s:%u:%u: %s", e->path, e->line, e->column, e->message);
        else if (e->path)
                snprintf(buf, size, "%s: %s", e->path, e->message);
        else if (e->line > 0)
                snprintf(buf, size, "line %u, column %u: %s", e->line, e->column, e->message);
        else
                snprintf(buf, size, "%s", e->message);
        return buf;
}

int config_error_at(ConfigError *e, const TomlValue *v, const char *format, ...)
{
        va_list ap;

        if (!e)
                return -EINVAL;
        free(e->path);
        e->path = v && v->origin ? strdup(v->origin) : NULL;
        e->line = v ? v->line : 0;
        e->column = v ? v->column : 0;
        va_start(ap, format);
        vsnprintf(e->message, sizeof(e->message), format, ap);
        va_end(ap);
        return -EINVAL;
}

int config_paths(const char *svc, char **ret_main, char **ret_dir)
{
        char var[64], upper[32];
        _cleanup_free_ char *main_path = NULL, *dir = NULL;
        const char *e;
        size_t n = strlen(svc);

        if (n == 0 || n >= sizeof(upper))
                return -EINVAL;
        for (size_t i = 0; i <= n; i++)
                upper[i] = (char)toupper((unsigned char)svc[i]);

        snprintf(var, sizeof(var), "AZIOT_%s_CONFIG", upper);
        e = getenv(var);
        if (!isempty(e))
                main_path = strdup(e);
        else if (asprintf(&main_path, "%s/aziot/%s/config.toml", SYSCONFDIR, svc) < 0)
                main_path = NULL;

        snprintf(var, sizeof(var), "AZIOT_%s_CONFIG_DIR", upper);
        e = getenv(var);
        if (!isempty(e))
                dir = strdup(e);
        else if (asprintf(&dir, "%s/aziot/%s/config.d", SYSCONFDIR, svc) < 0)
                dir = NULL;

        if (!main_path || !dir)
                return -ENOMEM;
        *ret_main = TAKE_PTR(main_path);
        *ret_dir = TAKE_PTR(dir);
        return 0;
}

/* Merges src into dst, consuming src's children (they move into dst). */
static int merge_steal(TomlValue *dst, TomlValue *src)
{
        int r;

        for (size_t i = 0; i < src->table.n; i++) {
                TomlEntry *e = &src->table.entries[i];
                TomlValue *cur = toml_table_get_n(dst, e->key, e->key_len);

                if (cur && cur->type == TOML_TABLE && e->value->type == TOML_TABLE) {
                        r = merge_steal(cur, e->value);
                        if (r < 0)
                                return r;
                } else if (cur && cur->type == TOML_ARRAY && e->value->type == TOML_ARRAY) {
                        TomlValue *a = e->value;

                        for (size_t j = 0; j < a->array.n; j++) {
                                r = toml_array_append(cur, a->array.items[j]);
                                if (r < 0)
                                        return r;
                                a->array.items[j] = NULL;
                        }
                        a->array.n = 0;
                } else {
                        r = toml_table_set(dst, e->key, e->key_len, e->value);
                        if (r < 0)
                                return r;
                        e->value = NULL;
                }
        }
        return 0;
}

int config_merge(TomlValue *dst, const TomlValue *src)
{
        _cleanup_toml_ TomlValue *copy = NULL;

        if (!dst || !src || dst->type != TOML_TABLE || src->type != TOML_TABLE)
                return -EINVAL;
        copy = toml_value_dup(src);
        if (!copy)
                return -ENOMEM;
        return merge_steal(dst, copy);
}

static int parse_one(const char *path, bool missing_ok, TomlValue **ret, ConfigError *ret_error)
{
        _cleanup_free_ char *text = NULL;
        TomlError terr = {};
        const char *origin;
        size_t len;
        int r;

        r = read_file_full(path, CONFIG_FILE_MAX, &text, &len);
        if (r == -ENOENT && missing_ok) {
                *ret = NULL;
                return 0;
        }
        if (r < 0) {
                config_error_set(ret_error, path, 0, 0, "cannot read: %s", strerror(-r));
                return r;
        }

        r = toml_parse(text, len, ret, &terr);
        if (r < 0) {
                config_error_set(ret_error, path, terr.line, terr.column, "%s", terr.message);
                return r;
        }

        origin = origin_intern(path);
        if (!origin)
                return -ENOMEM;
        origin_stamp(*ret, origin);
        return 0;
}

static int is_config_file(const struct dirent *de)
{
        return de->d_name[0] != '.' && endswith(de->d_name, ".toml");
}

static int merge_dir(TomlValue *root, const char *dir, ConfigError *ret_error)
{
        struct dirent **entries = NULL;
        int n, r = 0;

        n = scandir(dir, &entries, is_config_file, alphasort);
        if (n < 0) {
                if (errno == ENOENT)
                        return 0;
                r = negative_errno();
                config_error_set(ret_error, dir, 0, 0, "cannot read directory: %s", strerror(-r));
                return r;
        }

        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *path = NULL;
                _cleanup_toml_ TomlValue *v = NULL;
                struct stat st;

                if (r < 0)
                        continue; /* keep freeing the entries */
                if (asprintf(&path, "%s/%s", dir, entries[i]->d_name) < 0) {
                        path = NULL;
                        r = -ENOMEM;
                        continue;
                }
                /* Only regular files, following symlinks as upstream does. */
                if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
                        continue;
                r = parse_one(path, /* missing_ok= */ true, &v, ret_error);
                if (r >= 0 && v)
                        r = merge_steal(root, v);
        }
        for (int i = 0; i < n; i++)
                free(entries[i]);
        free(entries);
        return r;
}

int config_load_files(const char *main_path, const char *dir, TomlValue **ret,
                      ConfigError *ret_error)
{
        _cleanup_toml_ TomlValue *root = NULL;
        int r;

        r = parse_one(main_path, /* missing_ok= */ true, &root, ret_error);
        if (r < 0)
                return r;
        if (!root) {
                root = toml_value_new(TOML_TABLE);
                if (!root)
                        return -ENOMEM;
        }

        if (dir) {
                r = merge_dir(root, dir, ret_error);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(root);
        return 0;
}

int config_load(const char *svc, TomlValue **ret, ConfigError *ret_error)
{
        _cleanup_free_ char *main_path = NULL, *dir = NULL;
        int r;

        r = config_paths(svc, &main_path, &dir);
        if (r < 0)
                return r;
        return config_load_files(main_path, dir, ret, ret_error);
}

static int get_typed(const TomlValue *table, const char *key, TomlType type,
                     const TomlValue **ret, ConfigError *ret_error)
{
        const TomlValue *v = toml_table_get(table, key);

        if (!v)
                return -ENOENT;
        if (v->type != type) {
                config_error_at(ret_error, v, "\"%s\" must be %s, not %s", key,
                                toml_type_with_article(type), toml_type_with_article(v->type));
                return -EMEDIUMTYPE;
        }
        *ret = v;
        return 0;
}

int config_get_string(const TomlValue *table, const char *key, const char **ret,
                      ConfigError *ret_error)
{
        const TomlValue *v;
        int r = get_typed(table, key, TOML_STRING, &v, ret_error);

        if (r < 0)
                return r;
        if (memchr(v->string.data, 0, v->string.len)) {
                config_error_at(ret_error, v, "\"%s\" must not contain a NUL character", key);
                return -EMEDIUMTYPE;
        }
        *ret = v->string.data;
        return 0;
}

int config_get_integer(const TomlValue *table, const char *key, int64_t *ret,
                       ConfigError *ret_error)
{
        const TomlValue *v;
        int r = get_typed(table, key, TOML_INTEGER, &v, ret_error);

        if (r < 0)
                return r;
        *ret = v->integer;
        return 0;
}

int config_get_max_requests(const TomlValue *root, uint32_t *ret, ConfigError *ret_error)
{
        int64_t v;
        int r = config_get_integer(root, "max_requests", &v, ret_error);

        if (r == -ENOENT) {
                *ret = CONFIG_MAX_REQUESTS_DEFAULT;
                return 0;
        }
        if (r < 0)
                return r;
        if (v < 0 || v > UINT32_MAX)
                return config_error_at(ret_error, toml_table_get(root, "max_requests"),
                                       "\"max_requests\" must be from 0 to %" PRIu32
                                       ", not %" PRId64,
                                       UINT32_MAX, v);
        *ret = (uint32_t)v;
        return 0;
}

int config_get_bool(const TomlValue *table, const char *key, bool *ret, ConfigError *ret_error)
{
        const TomlValue *v;
        int r = get_typed(table, key, TOML_BOOL, &v, ret_error);

        if (r < 0)
                return r;
        *ret = v->boolean;
        return 0;
}

int config_get_table(const TomlValue *table, const char *key, const TomlValue **ret,
                     ConfigError *ret_error)
{
        return get_typed(table, key, TOML_TABLE, ret, ret_error);
}

int config_get_array(const TomlValue *table, const char *key, const TomlValue **ret,
                     ConfigError *ret_error)
{
        return get_typed(table, key, TOML_ARRAY, ret, ret_error);
}
