/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-glib/json-glib.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "atomic-file.h"
#include "config.h"
#include "identity-backup.h"
#include "log.h"
#include "macro.h"
#include "toml.h"

#define MODULES_DIR "modules"
#define PREV_STATE "prev_state"
#define PREV_STATE_MAX (1024u * 1024u)
#define SHA256_HEX_LEN 64u
/* atomic-file.h writes through a temporary name 20 bytes longer than the target's. */
#define FILE_NAME_MAX (NAME_MAX - 20)

void identity_module_backup_done(IdentityModuleBackup *b)
{
        free(b->module_id);
        free(b->device_id);
        free(b->generation_id);
        free(b->managed_by);
        *b = (IdentityModuleBackup){};
}

void identity_module_backups_free(IdentityModuleBackup *b, size_t n)
{
        for (size_t i = 0; b && i < n; i++)
                identity_module_backup_done(&b[i]);
        free(b);
}

static int sha256_hex(const char *s, char ret[SHA256_HEX_LEN + 1])
{
        static const char hex[] = "0123456789abcdef";
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;

        if (!EVP_Digest(s, strlen(s), md, &md_len, EVP_sha256(), NULL) || md_len != 32) {
                ERR_clear_error();
                return -EIO;
        }
        for (unsigned i = 0; i < md_len; i++) {
                ret[2 * i] = hex[md[i] >> 4];
                ret[2 * i + 1] = hex[md[i] & 0xf];
        }
        ret[SHA256_HEX_LEN] = '\0';
        return 0;
}

static bool ascii_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int identity_backup_device_dir(const char *homedir, const char *hub, const char *device_id,
                               char **ret)
{
        char hub_hex[SHA256_HEX_LEN + 1], device_hex[SHA256_HEX_LEN + 1];
        int r;

        r = sha256_hex(hub, hub_hex);
        if (r >= 0)
                r = sha256_hex(device_id, device_hex);
        if (r < 0)
                return r;
        if (asprintf(ret, "%s/" MODULES_DIR "/%s-%s", homedir, hub_hex, device_hex) < 0)
                return -ENOMEM;
        return 0;
}

int identity_backup_file_name(const char *module_id, char **ret)
{
        char hex[SHA256_HEX_LEN + 1];
        size_t alnum = 0;
        char *name, *p;
        int r;

        for (const char *s = module_id; *s; s++)
                alnum += ascii_alnum(*s);
        if (alnum + 1 + SHA256_HEX_LEN > FILE_NAME_MAX)
                return -ENAMETOOLONG;
        r = sha256_hex(module_id, hex);
        if (r < 0)
                return r;
        name = malloc(alnum + 1 + SHA256_HEX_LEN + 1);
        if (!name)
                return -ENOMEM;
        p = name;
        for (const char *s = module_id; *s; s++)
                if (ascii_alnum(*s))
                        *p++ = *s;
        *p++ = '-';
        memcpy(p, hex, SHA256_HEX_LEN + 1);
        *ret = name;
        return 0;
}

static int module_path(const char *homedir, const char *hub, const char *device_id,
                       const char *module_id, char **ret)
{
        _cleanup_free_ char *dir = NULL, *name = NULL;
        int r;

        r = identity_backup_device_dir(homedir, hub, device_id, &dir);
        if (r >= 0)
                r = identity_backup_file_name(module_id, &name);
        if (r < 0)
                return r;
        if (asprintf(ret, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        return 0;
}

/* ---- the JSON of one backup ---- */

int identity_backup_to_json(const IdentityModuleBackup *b, char **ret)
{
        g_autoptr(JsonBuilder) builder = json_builder_new();
        g_autoptr(JsonGenerator) generator = json_generator_new();
        g_autoptr(JsonNode) root = NULL;

        json_builder_begin_object(builder);
        json_builder_set_member_name(builder, "moduleId");
        json_builder_add_string_value(builder, b->module_id);
        json_builder_set_member_name(builder, "deviceId");
        json_builder_add_string_value(builder, b->device_id);
        if (b->generation_id) {
                json_builder_set_member_name(builder, "generationId");
                json_builder_add_string_value(builder, b->generation_id);
        }
        if (b->managed_by) {
                json_builder_set_member_name(builder, "managedBy");
                json_builder_add_string_value(builder, b->managed_by);
        }
        json_builder_end_object(builder);
        root = json_builder_get_root(builder);
        json_generator_set_root(generator, root);
        *ret = json_generator_to_data(generator, NULL);
        return *ret ? 0 : -ENOMEM;
}

/* A member as a new string: NULL when absent or not a string; -ENOMEM. */
static int dup_member(JsonObject *o, const char *name, char **ret)
{
        JsonNode *n = json_object_get_member(o, name);

        *ret = NULL;
        if (!n || JSON_NODE_TYPE(n) != JSON_NODE_VALUE ||
            json_node_get_value_type(n) != G_TYPE_STRING)
                return 0;
        *ret = strdup(json_node_get_string(n));
        return *ret ? 0 : -ENOMEM;
}

int identity_backup_from_json(const char *text, size_t len, IdentityModuleBackup *ret)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        IdentityModuleBackup b = {};
        JsonNode *root;
        JsonObject *o;
        int r;

        if (len > G_MAXSSIZE || !json_parser_load_from_data(parser, text, (gssize)len, NULL))
                return -EBADMSG;
        root = json_parser_get_root(parser);
        if (!root || !JSON_NODE_HOLDS_OBJECT(root))
                return -EBADMSG;
        o = json_node_get_object(root);
        r = dup_member(o, "moduleId", &b.module_id);
        if (r >= 0)
                r = dup_member(o, "deviceId", &b.device_id);
        if (r >= 0)
                r = dup_member(o, "generationId", &b.generation_id);
        if (r >= 0)
                r = dup_member(o, "managedBy", &b.managed_by);
        if (r >= 0 && (!b.module_id || !b.device_id))
                r = -EBADMSG;
        if (r < 0) {
                identity_module_backup_done(&b);
                return r;
        }
        *ret = b;
        return 0;
}

/* ---- files ---- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        /* Depth first: the directories are empty when they come. */
        return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

int identity_backup_forget_all(const char *homedir)
{
        _cleanup_free_ char *path = NULL;
        struct stat st;

        if (asprintf(&path, "%s/" MODULES_DIR, homedir) < 0)
                return -ENOMEM;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : negative_errno();
        if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
                return log_warning_errno(errno ?: EIO, "Failed to remove %s: %m", path);
        return 1;
}

int identity_backup_forget_others(const char *homedir, const char *hub, const char *device_id)
{
        _cleanup_free_ char *modules = NULL, *keep = NULL;
        _cleanup_closedir_ DIR *d = NULL;
        const char *keep_name;
        struct dirent *de;
        bool removed = false;
        int r;

        r = identity_backup_device_dir(homedir, hub, device_id, &keep);
        if (r < 0)
                return r;
        keep_name = strrchr(keep, '/') + 1;
        if (asprintf(&modules, "%s/" MODULES_DIR, homedir) < 0)
                return -ENOMEM;
        d = opendir(modules);
        if (!d)
                return errno == ENOENT ? 0 : negative_errno();
        while ((errno = 0, de = readdir(d))) {
                _cleanup_free_ char *path = NULL;

                if (streq(de->d_name, ".") || streq(de->d_name, "..") ||
                    streq(de->d_name, keep_name))
                        continue;
                if (asprintf(&path, "%s/%s", modules, de->d_name) < 0)
                        return -ENOMEM;
                if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
                        return log_warning_errno(errno ?: EIO, "Failed to remove %s: %m", path);
                removed = true;
        }
        if (errno != 0)
                return negative_errno();
        return removed;
}

int identity_backup_open_device(const char *homedir, const char *hub, const char *device_id)
{
        _cleanup_free_ char *dir = NULL;
        struct stat st;
        int r;

        r = identity_backup_device_dir(homedir, hub, device_id, &dir);
        if (r < 0)
                return r;
        if (stat(dir, &st) >= 0 && S_ISDIR(st.st_mode))
                return 0;
        /* A device seen for the first time: the backups of any other are of no use. */
        r = identity_backup_forget_all(homedir);
        if (r < 0)
                return r;
        r = mkdir_parents(dir, 0700);
        if (r < 0)
                return r;
        return 1;
}

int identity_backup_save(const char *homedir, const char *hub, const char *device_id,
                         const IdentityModuleBackup *b)
{
        _cleanup_free_ char *path = NULL, *json = NULL;
        int r;

        r = module_path(homedir, hub, device_id, b->module_id, &path);
        if (r < 0)
                return r;
        r = identity_backup_to_json(b, &json);
        if (r < 0)
                return r;
        r = identity_backup_open_device(homedir, hub, device_id);
        if (r < 0)
                return r;
        return write_file_atomic(path, json, strlen(json), 0600);
}

int identity_backup_load(const char *homedir, const char *hub, const char *device_id,
                         const char *module_id, IdentityModuleBackup *ret)
{
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t len = 0;
        int r;

        r = module_path(homedir, hub, device_id, module_id, &path);
        if (r < 0)
                return r;
        r = read_file_full(path, IDENTITY_BACKUP_MAX, &text, &len);
        if (r < 0)
                return r;
        r = identity_backup_from_json(text, len, ret);
        if (r == -EBADMSG)
                log_warning("The module backup %s does not parse; ignoring it.", path);
        return r;
}

int identity_backup_remove(const char *homedir, const char *hub, const char *device_id,
                           const char *module_id)
{
        _cleanup_free_ char *path = NULL;
        int r;

        r = module_path(homedir, hub, device_id, module_id, &path);
        if (r < 0)
                return r;
        if (unlink(path) < 0)
                return errno == ENOENT ? 0 : negative_errno();
        return 1;
}

static int compare_backups(const void *a, const void *b)
{
        return strcmp(((const IdentityModuleBackup *)a)->module_id,
                      ((const IdentityModuleBackup *)b)->module_id);
}

typedef struct BackupList {
        IdentityModuleBackup *items;
        size_t n;
} BackupList;

static void backup_list_done(BackupList *l)
{
        identity_module_backups_free(l->items, l->n);
        *l = (BackupList){};
}

int identity_backup_list(const char *homedir, const char *hub, const char *device_id,
                         IdentityModuleBackup **ret, size_t *ret_n)
{
        _cleanup_(backup_list_done) BackupList l = {};
        _cleanup_closedir_ DIR *d = NULL;
        _cleanup_free_ char *dir = NULL;
        struct dirent *de;
        int r;

        r = identity_backup_device_dir(homedir, hub, device_id, &dir);
        if (r < 0)
                return r;
        d = opendir(dir);
        if (!d)
                return negative_errno();
        while ((errno = 0, de = readdir(d))) {
                _cleanup_free_ char *text = NULL;
                IdentityModuleBackup b = {}, *items;
                size_t len = 0;

                /* Hidden names are atomic-file.h's temporary files. */
                if (de->d_name[0] == '.')
                        continue;
                r = read_file_full_at(dirfd(d), de->d_name, IDENTITY_BACKUP_MAX, &text, &len);
                if (r == -ENOMEM)
                        return r;
                if (r >= 0)
                        r = identity_backup_from_json(text, len, &b);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        log_warning("The module backup %s/%s cannot be used; ignoring it.", dir,
                                    de->d_name);
                        continue;
                }
                items = reallocarray(l.items, l.n + 1, sizeof(*items));
                if (!items) {
                        identity_module_backup_done(&b);
                        return -ENOMEM;
                }
                l.items = items;
                l.items[l.n++] = b;
        }
        if (errno != 0)
                return negative_errno();
        if (l.n > 0)
                qsort(l.items, l.n, sizeof(*l.items), compare_backups);
        *ret = TAKE_PTR(l.items);
        *ret_n = l.n;
        l.n = 0;
        return 0;
}

/* ---- prev_state ---- */

static void toml_put_entry(FILE *f, const char *key, const char *value)
{
        fprintf(f, "%s = ", key);
        toml_write_string(f, value);
        fputc('\n', f);
}

int identity_prev_state_save(const char *homedir, const IdentityDevice *device,
                             const IdentityHubModule *modules, size_t n)
{
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t len = 0;
        FILE *f;
        int r;

        if (asprintf(&path, "%s/" PREV_STATE, homedir) < 0)
                return -ENOMEM;
        f = open_memstream(&text, &len);
        if (!f)
                return -ENOMEM;
        fputs("# The module identities aziot-identityd keeps in IoT Hub, as of its last "
              "reconciliation.\n\n[device]\n",
              f);
        toml_put_entry(f, "hub_name", device->hub_name);
        if (device->local_gateway_hostname)
                toml_put_entry(f, "local_gateway_hostname", device->local_gateway_hostname);
        toml_put_entry(f, "device_id", device->device_id);
        for (size_t i = 0; i < n; i++) {
                fprintf(f, "\n[[principal]]\nuid = %llu\n", (unsigned long long)modules[i].uid);
                toml_put_entry(f, "name", modules[i].name);
                fputs("idtype = [\"module\"]\n", f);
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        r = write_file_atomic(path, text, len, 0600);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", path);
        return 0;
}

static const char *gateway_of(const IdentityDevice *d)
{
        return d->local_gateway_hostname ?: d->hub_name;
}

static bool same_device(const IdentityDevice *a, const IdentityDevice *b)
{
        /* Upstream records the hub's name as the gateway when there is none. */
        return streq_ptr(a->hub_name, b->hub_name) && streq_ptr(a->device_id, b->device_id) &&
               streq_ptr(gateway_of(a), gateway_of(b));
}

/* Whether prev_state (root) was written for device. */
static bool prev_state_for(const TomlValue *root, const IdentityDevice *device,
                           const IdentityDevice *device_info)
{
        const TomlValue *table = NULL;
        const char *hub = NULL, *gateway = NULL, *id = NULL;

        if (config_get_table(root, "device", &table, NULL) >= 0) {
                if (config_get_string(table, "hub_name", &hub, NULL) < 0 ||
                    config_get_string(table, "device_id", &id, NULL) < 0)
                        return false;
                (void)config_get_string(table, "local_gateway_hostname", &gateway, NULL);
                return same_device(&(IdentityDevice){ (char *)hub, (char *)gateway, (char *)id },
                                   device);
        }
        return device_info && same_device(device_info, device);
}

static bool has_module_idtype(const TomlValue *principal)
{
        const TomlValue *idtype = NULL;

        if (config_get_array(principal, "idtype", &idtype, NULL) < 0)
                return false;
        toml_array_foreach(item, idtype)
                if ((*item)->type == TOML_STRING && streq((*item)->string.data, "module"))
                        return true;
        return false;
}

static int strv_push_unique(char ***l, size_t *n, const char *s)
{
        char **grown;

        for (size_t i = 0; i < *n; i++)
                if (streq((*l)[i], s))
                        return 0;
        grown = reallocarray(*l, *n + 2, sizeof(char *));
        if (!grown)
                return -ENOMEM;
        *l = grown;
        grown[*n] = strdup(s);
        if (!grown[*n])
                return -ENOMEM;
        grown[++*n] = NULL;
        return 0;
}

int identity_prev_state_modules(const char *homedir, const IdentityDevice *device,
                                const IdentityDevice *device_info, char ***ret)
{
        _cleanup_strv_free_ char **names = calloc(1, sizeof(char *));
        _cleanup_free_ char *path = NULL, *text = NULL;
        _cleanup_toml_ TomlValue *root = NULL;
        const TomlValue *principals = NULL;
        size_t n = 0, len = 0;
        int r;

        if (!names || asprintf(&path, "%s/" PREV_STATE, homedir) < 0)
                return -ENOMEM;
        r = read_file_full(path, PREV_STATE_MAX, &text, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                if (r != -ENOENT)
                        log_warning_errno(r, "Ignoring %s: %m", path);
                *ret = TAKE_PTR(names);
                return 0;
        }
        r = toml_parse(text, len, &root, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                log_warning("Ignoring %s: it does not parse.", path);
                *ret = TAKE_PTR(names);
                return 0;
        }
        if (!prev_state_for(root, device, device_info)) {
                log_info("%s was written for another device; every module identity will be "
                         "created again.",
                         path);
                *ret = TAKE_PTR(names);
                return 0;
        }
        if (config_get_array(root, "principal", &principals, NULL) >= 0)
                toml_array_foreach(item, principals) {
                        const char *name = NULL;

                        if ((*item)->type != TOML_TABLE || !has_module_idtype(*item) ||
                            config_get_string(*item, "name", &name, NULL) < 0)
                                continue;
                        r = strv_push_unique(&names, &n, name);
                        if (r < 0)
                                return r;
                }
        *ret = TAKE_PTR(names);
        return 0;
}
