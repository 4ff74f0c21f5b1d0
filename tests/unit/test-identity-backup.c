/* SPDX-License-Identifier: MIT */
/* identityd's module identity backups and prev_state (spec §4.7), checked against upstream's
 * layout computed here (SHA-256 values worked out independently, files written by hand as
 * upstream writes them), never against the store itself. */
#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "atomic-file.h"
#include "identity-backup.h"
#include "macro.h"

#define HUB "hub.azure-devices.net"
#define HUB_HEX "bdd3c0aa7c56192e0608f89ba433f143af641a743afabce8da4486da1b57d500"
#define DEV1_HEX "cf4b9c1f5eb31deb9ea41f56faa757b68be9cab8b73f463229df17036bdfa13e"
#define MOD1_HEX "82d4f4cb4d38e5edc3485ac6bf1fcdef0bd211847e63281f2fb42d5151758e5f"

static char home[PATH_MAX];

static int setup(void **state)
{
        strcpy(home, "/tmp/test-identity-backup-XXXXXX");
        assert_non_null(mkdtemp(home));
        return 0;
}

static int teardown(void **state)
{
        char cmd[PATH_MAX + 16];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
        assert_int_equal(system(cmd), 0);
        return 0;
}

static char *path_in_home(const char *rel)
{
        char *p;

        assert_true(asprintf(&p, "%s/%s", home, rel) > 0);
        return p;
}

static void write_text(const char *rel, const char *text)
{
        _cleanup_free_ char *p = path_in_home(rel);
        FILE *f = fopen(p, "w");

        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
}

static bool exists(const char *rel)
{
        _cleanup_free_ char *p = path_in_home(rel);
        struct stat st;

        return stat(p, &st) == 0;
}

static char *read_text(const char *rel)
{
        _cleanup_free_ char *p = path_in_home(rel);
        char *text = NULL;

        assert_int_equal(read_file_full(p, 1 << 20, &text, NULL), 0);
        return text;
}

static const IdentityDevice dev1 = { (char *)HUB, NULL, (char *)"dev1" };

/* ---- names ---- */

static void test_paths(void **state)
{
        _cleanup_free_ char *dir = NULL, *name = NULL;

        assert_int_equal(identity_backup_device_dir("/var/lib/aziot/identityd", HUB, "dev1", &dir),
                         0);
        assert_string_equal(dir, "/var/lib/aziot/identityd/modules/" HUB_HEX "-" DEV1_HEX);

        assert_int_equal(identity_backup_file_name("mod1", &name), 0);
        assert_string_equal(name, "mod1-" MOD1_HEX);
        free(name);
        /* Only ASCII letters and digits survive before the hash. */
        assert_int_equal(identity_backup_file_name("my-Mod_1.x", &name), 0);
        assert_string_equal(name,
                            "myMod1x-9a71743f4577513add9bed8aeb07fa3ee58f7960d21b4c55533853d7ae5c6888");
        free(name);
        assert_int_equal(identity_backup_file_name("\xc3\xa9/../x", &name), 0);
        assert_true(name[0] == 'x' && name[1] == '-' && strlen(name) == 66);
        assert_null(strchr(name, '/'));
        free(name);
        name = NULL;
}

static void test_name_too_long(void **state)
{
        char id[200];
        char *name = NULL;

        memset(id, 'a', sizeof(id) - 1);
        id[sizeof(id) - 1] = '\0';
        assert_int_equal(identity_backup_file_name(id, &name), -ENAMETOOLONG);
        assert_null(name);
        /* Not counted: what is not a letter or digit. */
        memset(id, '-', sizeof(id) - 1);
        assert_int_equal(identity_backup_file_name(id, &name), 0);
        free(name);
}

/* ---- JSON ---- */

static void test_json(void **state)
{
        IdentityModuleBackup b = { (char *)"mod1", (char *)"dev1", (char *)"637", (char *)"me" };
        _cleanup_(identity_module_backup_done) IdentityModuleBackup back = {};
        _cleanup_free_ char *text = NULL, *bare = NULL;

        assert_int_equal(identity_backup_to_json(&b, &text), 0);
        assert_string_equal(text, "{\"moduleId\":\"mod1\",\"deviceId\":\"dev1\","
                                  "\"generationId\":\"637\",\"managedBy\":\"me\"}");
        assert_int_equal(identity_backup_from_json(text, strlen(text), &back), 0);
        assert_string_equal(back.module_id, "mod1");
        assert_string_equal(back.device_id, "dev1");
        assert_string_equal(back.generation_id, "637");
        assert_string_equal(back.managed_by, "me");

        /* Absent members are left out, not null. */
        b.generation_id = b.managed_by = NULL;
        assert_int_equal(identity_backup_to_json(&b, &bare), 0);
        assert_string_equal(bare, "{\"moduleId\":\"mod1\",\"deviceId\":\"dev1\"}");
}

static void test_json_upstream(void **state)
{
        /* As upstream's serde writes a hub::Module, authentication included. */
        static const char text[] =
                "{\"moduleId\":\"m\",\"managedBy\":null,\"deviceId\":\"d\","
                "\"generationId\":\"6371\",\"authentication\":null}";
        _cleanup_(identity_module_backup_done) IdentityModuleBackup b = {};

        assert_int_equal(identity_backup_from_json(text, strlen(text), &b), 0);
        assert_string_equal(b.module_id, "m");
        assert_string_equal(b.generation_id, "6371");
        assert_null(b.managed_by);
}

static void test_json_bad(void **state)
{
        static const char *const bad[] = {
                "", "not json", "[]", "\"mod1\"", "{\"moduleId\":\"m\"}",
                "{\"deviceId\":\"d\"}", "{\"moduleId\":1,\"deviceId\":\"d\"}",
                "{\"moduleId\":\"m\",\"deviceId\":null}",
        };
        IdentityModuleBackup b = {};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                assert_int_equal(identity_backup_from_json(bad[i], strlen(bad[i]), &b), -EBADMSG);
                assert_null(b.module_id);
        }
}

static void test_json_wrong_optional_types(void **state)
{
        static const char text[] =
                "{\"moduleId\":\"m\",\"deviceId\":\"d\",\"generationId\":5,\"managedBy\":[]}";
        _cleanup_(identity_module_backup_done) IdentityModuleBackup b = {};

        assert_int_equal(identity_backup_from_json(text, strlen(text), &b), 0);
        assert_null(b.generation_id);
        assert_null(b.managed_by);
}

/* ---- files ---- */

static void test_save_load_remove(void **state)
{
        IdentityModuleBackup b = { (char *)"mod1", (char *)"dev1", (char *)"637", NULL };
        _cleanup_(identity_module_backup_done) IdentityModuleBackup back = {};
        _cleanup_free_ char *text = NULL, *dir = NULL;
        struct stat st;

        assert_int_equal(identity_backup_load(home, HUB, "dev1", "mod1", &back), -ENOENT);
        assert_int_equal(identity_backup_save(home, HUB, "dev1", &b), 0);
        text = read_text("modules/" HUB_HEX "-" DEV1_HEX "/mod1-" MOD1_HEX);
        assert_string_equal(text, "{\"moduleId\":\"mod1\",\"deviceId\":\"dev1\","
                                  "\"generationId\":\"637\"}");
        dir = path_in_home("modules/" HUB_HEX "-" DEV1_HEX "/mod1-" MOD1_HEX);
        assert_int_equal(stat(dir, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);

        assert_int_equal(identity_backup_load(home, HUB, "dev1", "mod1", &back), 0);
        assert_string_equal(back.generation_id, "637");
        assert_null(back.managed_by);

        assert_int_equal(identity_backup_remove(home, HUB, "dev1", "mod1"), 1);
        assert_false(exists("modules/" HUB_HEX "-" DEV1_HEX "/mod1-" MOD1_HEX));
        assert_int_equal(identity_backup_remove(home, HUB, "dev1", "mod1"), 0);
}

static void test_load_garbage(void **state)
{
        IdentityModuleBackup b = {};

        assert_int_equal(identity_backup_open_device(home, HUB, "dev1"), 1);
        write_text("modules/" HUB_HEX "-" DEV1_HEX "/mod1-" MOD1_HEX, "{\"moduleId\":");
        assert_int_equal(identity_backup_load(home, HUB, "dev1", "mod1", &b), -EBADMSG);
}

static void test_new_device_wipes_modules(void **state)
{
        IdentityModuleBackup b = { (char *)"mod1", (char *)"dev1", (char *)"1", NULL };

        assert_int_equal(identity_backup_save(home, HUB, "dev1", &b), 0);
        write_text("modules/stray", "x");
        /* The same device again: nothing goes. */
        assert_int_equal(identity_backup_open_device(home, HUB, "dev1"), 0);
        assert_true(exists("modules/stray"));
        /* Another device: the whole tree goes first. */
        assert_int_equal(identity_backup_open_device(home, HUB, "dev2"), 1);
        assert_false(exists("modules/stray"));
        assert_false(exists("modules/" HUB_HEX "-" DEV1_HEX));
        assert_int_equal(identity_backup_open_device(home, HUB, "dev2"), 0);
        /* Saving for a device seen for the first time does the same. */
        assert_int_equal(identity_backup_save(home, HUB, "dev1", &b), 0);
        assert_int_equal(identity_backup_open_device(home, HUB, "dev1"), 0);
}

static void test_forget_all(void **state)
{
        IdentityModuleBackup b = { (char *)"mod1", (char *)"dev1", NULL, NULL };

        assert_int_equal(identity_backup_forget_all(home), 0);
        assert_int_equal(identity_backup_save(home, HUB, "dev1", &b), 0);
        assert_int_equal(identity_backup_forget_all(home), 1);
        assert_false(exists("modules"));
        assert_true(exists("."));
}

static void test_forget_others(void **state)
{
        IdentityModuleBackup b = { (char *)"mod1", (char *)"dev1", NULL, NULL };
        _cleanup_free_ char *other = path_in_home("modules/other-dev");

        assert_int_equal(identity_backup_forget_others(home, HUB, "dev1"), 0);
        assert_int_equal(identity_backup_save(home, HUB, "dev1", &b), 0);
        assert_int_equal(identity_backup_forget_others(home, HUB, "dev1"), 0);
        write_text("modules/stray", "x");
        assert_int_equal(mkdir(other, 0700), 0);
        write_text("modules/other-dev/m", "{}");
        assert_int_equal(identity_backup_forget_others(home, HUB, "dev1"), 1);
        assert_false(exists("modules/stray"));
        assert_false(exists("modules/other-dev"));
        assert_true(exists("modules/" HUB_HEX "-" DEV1_HEX "/mod1-" MOD1_HEX));
        /* For another device, this one's go. */
        assert_int_equal(identity_backup_forget_others(home, HUB, "dev2"), 1);
        assert_false(exists("modules/" HUB_HEX "-" DEV1_HEX));
        assert_true(exists("modules"));
}

static void test_list(void **state)
{
        const char *ids[] = { "zeta", "alpha", "m-1" };
        IdentityModuleBackup *list = NULL;
        size_t n = 99;

        assert_int_equal(identity_backup_list(home, HUB, "dev1", &list, &n), -ENOENT);
        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                IdentityModuleBackup b = { (char *)ids[i], (char *)"dev1", (char *)"7", NULL };

                assert_int_equal(identity_backup_save(home, HUB, "dev1", &b), 0);
        }
        /* What cannot be a backup is skipped: a temporary file, garbage. */
        write_text("modules/" HUB_HEX "-" DEV1_HEX "/.#alpha-x.0123", "{\"moduleId\":\"tmp\","
                                                                     "\"deviceId\":\"dev1\"}");
        write_text("modules/" HUB_HEX "-" DEV1_HEX "/junk", "junk");
        assert_int_equal(identity_backup_list(home, HUB, "dev1", &list, &n), 0);
        assert_int_equal(n, 3);
        assert_string_equal(list[0].module_id, "alpha");
        assert_string_equal(list[1].module_id, "m-1");
        assert_string_equal(list[2].module_id, "zeta");
        assert_string_equal(list[2].generation_id, "7");
        identity_module_backups_free(list, n);
}

/* ---- prev_state ---- */

static void assert_modules(char **names, const char *const *expected)
{
        size_t i = 0;

        for (; expected[i]; i++) {
                assert_non_null(names[i]);
                assert_string_equal(names[i], expected[i]);
        }
        assert_null(names[i]);
}

static void test_prev_state_round_trip(void **state)
{
        const IdentityHubModule mods[] = { { "mod1", 1000 }, { "we\"ird\\name", 1001 } };
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_free_ char *text = NULL;

        assert_int_equal(identity_prev_state_save(home, &dev1, mods, ELEMENTSOF(mods)), 0);
        text = read_text("prev_state");
        assert_non_null(strstr(text, "[device]\nhub_name = \"" HUB "\"\ndevice_id = \"dev1\"\n"));
        assert_non_null(strstr(text, "[[principal]]\nuid = 1000\nname = \"mod1\"\n"
                                     "idtype = [\"module\"]\n"));
        assert_int_equal(identity_prev_state_modules(home, &dev1, NULL, &names), 0);
        assert_modules(names, (const char *[]){ "mod1", "we\"ird\\name", NULL });
}

static void test_prev_state_other_device(void **state)
{
        const IdentityHubModule mods[] = { { "mod1", 1000 } };
        const IdentityDevice dev2 = { (char *)HUB, NULL, (char *)"dev2" };
        const IdentityDevice nested = { (char *)HUB, (char *)"parent", (char *)"dev1" };
        const IdentityDevice other_hub = { (char *)"other.azure-devices.net", NULL,
                                           (char *)"dev1" };
        char **names = NULL;

        assert_int_equal(identity_prev_state_save(home, &dev1, mods, 1), 0);
        /* device_info is not asked when prev_state names its device. */
        assert_int_equal(identity_prev_state_modules(home, &dev2, &dev2, &names), 0);
        assert_null(names[0]);
        names = strv_free(names);
        assert_int_equal(identity_prev_state_modules(home, &nested, NULL, &names), 0);
        assert_null(names[0]);
        names = strv_free(names);
        assert_int_equal(identity_prev_state_modules(home, &other_hub, NULL, &names), 0);
        assert_null(names[0]);
        names = strv_free(names);

        /* Nested, recorded and asked the same way. */
        assert_int_equal(identity_prev_state_save(home, &nested, mods, 1), 0);
        assert_int_equal(identity_prev_state_modules(home, &nested, NULL, &names), 0);
        assert_modules(names, (const char *[]){ "mod1", NULL });
        names = strv_free(names);
        assert_int_equal(identity_prev_state_modules(home, &dev1, NULL, &names), 0);
        assert_null(names[0]);
        strv_free(names);
}

/* prev_state as upstream writes it: its whole configuration, no [device]; device_info tells. */
static void test_prev_state_upstream(void **state)
{
        /* Upstream records the hub as the gateway when not nested. */
        const IdentityDevice upstream_info = { (char *)HUB, (char *)HUB, (char *)"dev1" };
        const IdentityDevice dev2 = { (char *)HUB, NULL, (char *)"dev2" };
        char **names = NULL;

        write_text("prev_state",
                   "hostname = \"my-device\"\nhomedir = \"/var/lib/aziot/identityd\"\n"
                   "prefer_module_identity_cache = false\n"
                   "[provisioning]\nsource = \"manual\"\niothub_hostname = \"" HUB "\"\n"
                   "device_id = \"dev1\"\n[provisioning.authentication]\nmethod = \"sas\"\n"
                   "device_id_pk = \"device-id\"\n"
                   "[[principal]]\nuid = 0\nname = \"edge\"\n"
                   "[[principal]]\nuid = 1000\nname = \"hostmod\"\nidtype = [\"module\"]\n"
                   "[[principal]]\nuid = 1001\nname = \"both\"\nidtype = [\"local\", \"module\"]\n"
                   "[[principal]]\nuid = 1002\nname = \"localonly\"\nidtype = [\"local\"]\n"
                   "[[principal]]\nuid = 1003\nname = \"dev\"\nidtype = [\"device\"]\n");
        assert_int_equal(identity_prev_state_modules(home, &dev1, &upstream_info, &names), 0);
        assert_modules(names, (const char *[]){ "hostmod", "both", NULL });
        names = strv_free(names);
        /* Without device_info, or for another device: nothing was kept. */
        assert_int_equal(identity_prev_state_modules(home, &dev1, NULL, &names), 0);
        assert_null(names[0]);
        names = strv_free(names);
        assert_int_equal(identity_prev_state_modules(home, &dev1, &dev2, &names), 0);
        assert_null(names[0]);
        strv_free(names);
}

static void test_prev_state_unusable(void **state)
{
        static const char *const texts[] = {
                "this is not toml ===",
                "[device]\nhub_name = \"" HUB "\"\n[[principal]]\nname = \"m\"\n"
                "idtype = [\"module\"]\n",
                "[device]\nhub_name = 1\ndevice_id = \"dev1\"\n",
        };
        char **names = NULL;

        /* None at all. */
        assert_int_equal(identity_prev_state_modules(home, &dev1, &dev1, &names), 0);
        assert_null(names[0]);
        names = strv_free(names);
        for (size_t i = 0; i < ELEMENTSOF(texts); i++) {
                write_text("prev_state", texts[i]);
                assert_int_equal(identity_prev_state_modules(home, &dev1, &dev1, &names), 0);
                assert_null(names[0]);
                names = strv_free(names);
        }
}

static void test_prev_state_odd_principals(void **state)
{
        char **names = NULL;

        write_text("prev_state",
                   "[device]\nhub_name = \"" HUB "\"\ndevice_id = \"dev1\"\n"
                   "[[principal]]\nname = \"dup\"\nidtype = [\"module\"]\n"
                   "[[principal]]\nname = \"dup\"\nidtype = [\"module\"]\n"
                   "[[principal]]\nname = 5\nidtype = [\"module\"]\n"
                   "[[principal]]\nidtype = [\"module\"]\n"
                   "[[principal]]\nname = \"str\"\nidtype = \"module\"\n"
                   "[[principal]]\nname = \"ok\"\nidtype = [3, \"module\"]\n");
        assert_int_equal(identity_prev_state_modules(home, &dev1, NULL, &names), 0);
        assert_modules(names, (const char *[]){ "dup", "ok", NULL });
        strv_free(names);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_paths),
                cmocka_unit_test(test_name_too_long),
                cmocka_unit_test(test_json),
                cmocka_unit_test(test_json_upstream),
                cmocka_unit_test(test_json_bad),
                cmocka_unit_test(test_json_wrong_optional_types),
                cmocka_unit_test_setup_teardown(test_save_load_remove, setup, teardown),
                cmocka_unit_test_setup_teardown(test_load_garbage, setup, teardown),
                cmocka_unit_test_setup_teardown(test_new_device_wipes_modules, setup, teardown),
                cmocka_unit_test_setup_teardown(test_forget_all, setup, teardown),
                cmocka_unit_test_setup_teardown(test_forget_others, setup, teardown),
                cmocka_unit_test_setup_teardown(test_list, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prev_state_round_trip, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prev_state_other_device, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prev_state_upstream, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prev_state_unusable, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prev_state_odd_principals, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
