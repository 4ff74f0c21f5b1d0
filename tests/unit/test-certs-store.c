/* SPDX-License-Identifier: MIT */
/* The certificate store, checked against upstream's layout computed here (file names from the spec,
 * files written by hand as upstream would), never against the store itself. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "certs-store.h"
#include "macro.h"
#include "toml.h"

static char home[PATH_MAX];

static int setup(void **state)
{
        strcpy(home, "/tmp/test-certs-store-XXXXXX");
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

/* ---- helpers ---- */

/* A self-signed certificate made with OpenSSL directly, as PEM. */
static char *make_cert_pem(const char *cn)
{
        EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        X509 *x = X509_new();
        BIO *bio = BIO_new(BIO_s_mem());
        char *data = NULL, *pem;
        long len;

        assert_non_null(key);
        assert_non_null(x);
        assert_true(X509_set_version(x, X509_VERSION_3));
        assert_true(ASN1_INTEGER_set(X509_get_serialNumber(x), 1));
        assert_true(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                                               (const unsigned char *)cn, -1, -1, 0));
        assert_true(X509_set_issuer_name(x, X509_get_subject_name(x)));
        assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
        assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
        assert_true(X509_set_pubkey(x, key));
        assert_true(X509_sign(x, key, EVP_sha256()) > 0);
        assert_true(PEM_write_bio_X509(bio, x));
        len = BIO_get_mem_data(bio, &data);
        pem = strndup(data, (size_t)len);
        assert_non_null(pem);
        BIO_free(bio);
        X509_free(x);
        EVP_PKEY_free(key);
        return pem;
}

static char *key_pem(void)
{
        EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        BIO *bio = BIO_new(BIO_s_mem());
        char *data = NULL, *pem;
        long len;

        assert_true(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL));
        len = BIO_get_mem_data(bio, &data);
        pem = strndup(data, (size_t)len);
        BIO_free(bio);
        EVP_PKEY_free(key);
        return pem;
}

/* <home>/certs/<alnum>-<sha256 hex>.cer, from the spec. */
static char *expected_path(const char *id)
{
        unsigned char md[32];
        size_t n = 0;
        char *path, *p;

        assert_true(EVP_Q_digest(NULL, "SHA256", NULL, id, strlen(id), md, &n));
        path = malloc(strlen(home) + strlen(id) + 100);
        assert_non_null(path);
        p = path + sprintf(path, "%s/certs/", home);
        for (const char *s = id; *s; s++)
                if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                    (*s >= '0' && *s <= '9'))
                        *p++ = *s;
        *p++ = '-';
        for (size_t i = 0; i < n; i++)
                p += sprintf(p, "%02x", md[i]);
        strcpy(p, ".cer");
        return path;
}

static void write_file(const char *path, const char *data)
{
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, strlen(data), f), strlen(data));
        assert_int_equal(fclose(f), 0);
}

static char *read_file(const char *path)
{
        FILE *f = fopen(path, "re");
        char *buf = calloc(1, 1 << 20);
        size_t n;

        assert_non_null(f);
        n = fread(buf, 1, (1 << 20) - 1, f);
        buf[n] = 0;
        fclose(f);
        return buf;
}

static bool exists(const char *path)
{
        return access(path, F_OK) == 0;
}

static CertsStore *store_with_config(const char *toml)
{
        _cleanup_toml_ TomlValue *root = NULL;
        CertsStore *s = NULL;
        ConfigError e = {};

        assert_int_equal(certs_store_new(home, &s), 0);
        if (toml) {
                assert_int_equal(toml_parse(toml, strlen(toml), &root, NULL), 0);
                assert_int_equal(
                        certs_store_set_preloaded(s, toml_table_get(root, "preloaded_certs"), &e),
                        0);
        }
        return s;
}

static void assert_get(CertsStore *s, const char *id, const char *expected)
{
        _cleanup_free_ char *pem = NULL;
        size_t len = 0;

        assert_int_equal(certs_store_get(s, id, &pem, &len), 0);
        assert_string_equal(pem, expected);
        assert_int_equal(len, strlen(expected));
}

/* ---- tests ---- */

static void test_file_names(void **state)
{
        static const char *const ids[] = {
                "device-id", "../../etc/passwd", "/", "..", "aziot-edged/module/$edgeHub:1:server",
                "ÄÖ ü"};
        char *name, *path;

        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                const char *slash;

                assert_int_equal(certs_file_name(ids[i], &name), 0);
                path = expected_path(ids[i]);
                slash = strrchr(path, '/');
                assert_string_equal(name, slash + 1);
                assert_null(strchr(name, '/'));
                free(name);
                free(path);
        }
}

static void test_device_id_name(void **state)
{
        _cleanup_free_ char *name = NULL;

        /* printf 'device-id' | sha256sum */
        assert_int_equal(certs_file_name("device-id", &name), 0);
        assert_string_equal(name, "deviceid-"
                                  "bd732105ef89cf8edd2606a5309c8a26b7b5599a4e124a0fe6199b6b2f60e655"
                                  ".cer");
}

static void test_id_validation(void **state)
{
        _cleanup_(certs_store_freep) CertsStore *s = store_with_config(NULL);
        _cleanup_free_ char *pem = make_cert_pem("x"), *big = NULL, *alnum = NULL;
        char *out = NULL;

        big = malloc(CERTS_ID_MAX + 2);
        memset(big, '-', CERTS_ID_MAX + 1);
        big[CERTS_ID_MAX + 1] = 0;
        alnum = malloc(201);
        memset(alnum, 'a', 200);
        alnum[200] = 0;

        assert_int_equal(certs_id_validate(NULL), -EINVAL);
        assert_int_equal(certs_id_validate(""), -EINVAL);
        assert_int_equal(certs_id_validate(big), -EINVAL);
        big[CERTS_ID_MAX] = 0;
        assert_int_equal(certs_id_validate(big), 0);
        assert_int_equal(certs_id_validate("a\nb"), -EINVAL);
        assert_int_equal(certs_id_validate("a\x7f"), -EINVAL);
        assert_int_equal(certs_id_validate("\xc3\x28"), -EINVAL);
        assert_int_equal(certs_id_validate("../x"), 0);

        assert_int_equal(certs_store_put(s, "a\nb", pem, strlen(pem)), -EINVAL);
        assert_int_equal(certs_store_get(s, "", &out, NULL), -EINVAL);
        assert_int_equal(certs_store_delete(s, NULL), -EINVAL);
        assert_int_equal(certs_store_put(s, alnum, pem, strlen(pem)), -ENAMETOOLONG);
}

static void test_put_get(void **state)
{
        _cleanup_(certs_store_freep) CertsStore *s = store_with_config(NULL);
        _cleanup_free_ char *pem = make_cert_pem("device"), *path = expected_path("device-id");
        _cleanup_free_ char *on_disk = NULL, *dir = NULL;
        char *out = NULL;
        struct stat st;

        assert_int_equal(certs_store_get(s, "device-id", &out, NULL), -ENOENT);
        assert_int_equal(certs_store_put(s, "device-id", pem, strlen(pem)), 0);

        on_disk = read_file(path);
        assert_string_equal(on_disk, pem);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0644);
        assert_int_equal(asprintf(&dir, "%s/certs", home), (int)strlen(home) + 6);
        assert_int_equal(stat(dir, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0755);

        assert_get(s, "device-id", pem);
}

/* A home as upstream leaves it (no index) serves its certificates; listing knows them once adopted.
 */
static void test_upstream_home(void **state)
{
        _cleanup_free_ char *a = make_cert_pem("leaf"), *b = make_cert_pem("ca"), *chain = NULL;
        _cleanup_free_ char *dir = NULL, *path = expected_path("aziot-edged-ca");
        _cleanup_(certs_store_freep) CertsStore *s = NULL;
        _cleanup_strv_free_ char **ids = NULL;
        size_t n = 99;

        assert_int_equal(asprintf(&chain, "%s%s", a, b), (int)(strlen(a) + strlen(b)));
        assert_int_equal(asprintf(&dir, "%s/certs", home), (int)strlen(home) + 6);
        assert_int_equal(mkdir(dir, 0755), 0);
        write_file(path, chain);

        s = store_with_config(NULL);
        assert_get(s, "aziot-edged-ca", chain);
        assert_int_equal(certs_store_list(s, &ids, &n), 0);
        assert_int_equal(n, 0);
        assert_null(ids[0]);
        ids = strv_free(ids);

        assert_int_equal(certs_store_adopt(s, "aziot-edged-ca"), 1);
        assert_int_equal(certs_store_adopt(s, "aziot-edged-ca"), 0);
        assert_int_equal(certs_store_adopt(s, "not-there"), 0);
        assert_int_equal(certs_store_list(s, &ids, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(ids[0], "aziot-edged-ca");
        ids = strv_free(ids);

        /* The adoption is durable. */
        s = certs_store_free(s);
        s = store_with_config(NULL);
        assert_int_equal(certs_store_list(s, &ids, &n), 0);
        assert_int_equal(n, 1);
}

static void test_pem_check(void **state)
{
        _cleanup_free_ char *a = make_cert_pem("a"), *b = make_cert_pem("b"), *k = key_pem();
        _cleanup_free_ char *two = NULL, *texty = NULL, *with_key = NULL, *cut = NULL;
        _cleanup_free_ char *nul = NULL, *other = NULL;
        _cleanup_(certs_store_freep) CertsStore *s = store_with_config(NULL);
        _cleanup_free_ char *path = expected_path("x");
        char *out = NULL;

        assert_true(asprintf(&two, "%s%s", a, b) > 0);
        assert_true(asprintf(&texty, "subject=CN = a\nissuer=CN = a\n%s\n", a) > 0);
        assert_true(asprintf(&with_key, "%s%s", a, k) > 0);
        cut = strndup(a, strlen(a) - 40);
        nul = strdup(a);
        nul[30] = 0;
        other = strdup(a);
        memcpy(strstr(other, "CERTIFICATE"), "CERTIFICATX", 11);

        assert_int_equal(certs_pem_check(a, strlen(a)), 1);
        assert_int_equal(certs_pem_check(two, strlen(two)), 2);
        assert_int_equal(certs_pem_check(texty, strlen(texty)), 1);

        assert_int_equal(certs_pem_check("", 0), -EBADMSG);
        assert_int_equal(certs_pem_check("hello", 5), -EBADMSG);
        assert_int_equal(certs_pem_check(k, strlen(k)), -EBADMSG);
        assert_int_equal(certs_pem_check(with_key, strlen(with_key)), -EBADMSG);
        assert_int_equal(certs_pem_check(cut, strlen(cut)), -EBADMSG);
        assert_int_equal(certs_pem_check(nul, strlen(a)), -EBADMSG);
        assert_int_equal(certs_pem_check(other, strlen(other)), -EBADMSG);

        assert_int_equal(certs_store_put(s, "x", with_key, strlen(with_key)), -EBADMSG);
        assert_int_equal(certs_store_put(s, "x", "junk", 4), -EBADMSG);
        assert_false(exists(path));
        assert_int_equal(certs_store_get(s, "x", &out, NULL), -ENOENT);
        assert_int_equal(certs_store_put(s, "x", texty, strlen(texty)), 0);
        assert_get(s, "x", texty);
}

static void test_preloaded_file(void **state)
{
        _cleanup_free_ char *pem = make_cert_pem("bootstrap"), *dir = NULL, *file = NULL;
        _cleanup_free_ char *cfg = NULL, *other = make_cert_pem("other");
        _cleanup_(certs_store_freep) CertsStore *s = NULL;

        assert_true(asprintf(&dir, "%s/my secrets", home) > 0);
        assert_int_equal(mkdir(dir, 0700), 0);
        assert_true(asprintf(&file, "%s/boot.pem", dir) > 0);
        write_file(file, pem);
        assert_true(asprintf(&cfg,
                             "[preloaded_certs]\n"
                             "bootstrap = \"file://%s/my%%20secrets/boot.pem\"\n"
                             "local = \"file://localhost%s/my%%20secrets/boot.pem\"\n",
                             home, home) > 0);
        s = store_with_config(cfg);

        assert_true(certs_store_is_preloaded(s, "bootstrap"));
        assert_false(certs_store_is_preloaded(s, "device-id"));
        assert_get(s, "bootstrap", pem);
        assert_get(s, "local", pem);

        /* Read-only: the operator's file stays as it is. */
        assert_int_equal(certs_store_put(s, "bootstrap", other, strlen(other)), -EROFS);
        assert_int_equal(certs_store_delete(s, "bootstrap"), -EROFS);
        assert_get(s, "bootstrap", pem);
        assert_true(exists(file));

        /* A missing preloaded file is a missing certificate. */
        assert_int_equal(unlink(file), 0);
        {
                char *out = NULL;

                assert_int_equal(certs_store_get(s, "bootstrap", &out, NULL), -ENOENT);
        }
}

static void test_preloaded_bundle(void **state)
{
        _cleanup_free_ char *a = make_cert_pem("a"), *b = make_cert_pem("b"), *fa = NULL;
        _cleanup_free_ char *cfg = NULL, *ab = NULL, *c = make_cert_pem("c"), *fz = NULL;
        _cleanup_(certs_store_freep) CertsStore *s = NULL;
        char *out = NULL;

        assert_true(asprintf(&fa, "%s/a.pem", home) > 0);
        write_file(fa, a);
        assert_true(asprintf(&cfg,
                             "[preloaded_certs]\n"
                             "ca-a = \"file://%s\"\n"
                             "trust-bundle = [\"ca-a\", \"missing\", \"ca-b\"]\n"
                             "outer = [\"trust-bundle\"]\n"
                             "zero = \"file://%s/zero.pem\"\n"
                             "empty = [\"missing\", \"also-missing\", \"zero\"]\n"
                             "loop = [\"loop2\"]\n"
                             "loop2 = [\"loop\"]\n",
                             fa, home) > 0);
        s = store_with_config(cfg);
        assert_true(asprintf(&fz, "%s/zero.pem", home) > 0);
        write_file(fz, "");
        assert_int_equal(certs_store_put(s, "ca-b", b, strlen(b)), 0);
        assert_true(asprintf(&ab, "%s%s", a, b) > 0);

        assert_get(s, "trust-bundle", ab);
        assert_get(s, "outer", ab);
        assert_int_equal(certs_store_get(s, "empty", &out, NULL), -ENOENT);
        /* An empty file is served as it is on its own, but adds nothing to a bundle. */
        assert_get(s, "zero", "");
        assert_int_equal(certs_store_get(s, "loop", &out, NULL), -ELOOP);
        assert_int_equal(certs_store_put(s, "trust-bundle", c, strlen(c)), -EROFS);
        assert_int_equal(certs_store_delete(s, "trust-bundle"), -EROFS);
}

static void test_preloaded_config(void **state)
{
        _cleanup_(certs_store_freep) CertsStore *s = NULL;
        static const char *const bad[] = {
                "[preloaded_certs]\nx = 1\n",
                "[preloaded_certs]\nx = [\"a\", 2]\n",
                "[preloaded_certs]\nx = [\"a\\nb\"]\n",
                "[preloaded_certs]\n\"a\\nb\" = \"file:///x\"\n",
                "preloaded_certs = 3\n",
        };
        char *out = NULL;

        s = store_with_config("[preloaded_certs]\nhsm = \"pkcs11:token=t;object=o\"\n"
                              "rel = \"file:relative\"\n");
        assert_true(certs_store_is_preloaded(s, "hsm"));
        assert_int_equal(certs_store_get(s, "hsm", &out, NULL), -EPROTONOSUPPORT);
        assert_int_equal(certs_store_get(s, "rel", &out, NULL), -EPROTONOSUPPORT);
        assert_int_equal(certs_store_put(s, "hsm", "x", 1), -EROFS);

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_toml_ TomlValue *root = NULL;
                ConfigError e = {};

                assert_int_equal(toml_parse(bad[i], strlen(bad[i]), &root, NULL), 0);
                assert_int_equal(
                        certs_store_set_preloaded(s, toml_table_get(root, "preloaded_certs"), &e),
                        -EINVAL);
                assert_true(e.line > 0);
                config_error_done(&e);
                /* The previous set is kept. */
                assert_true(certs_store_is_preloaded(s, "hsm"));
        }

        /* A reload replaces the set; NULL empties it. */
        assert_int_equal(certs_store_set_preloaded(s, NULL, NULL), 0);
        assert_false(certs_store_is_preloaded(s, "hsm"));
}

static void test_delete(void **state)
{
        _cleanup_free_ char *pem = make_cert_pem("d"), *path = expected_path("device-id");
        _cleanup_(certs_store_freep) CertsStore *s = store_with_config(NULL);
        char *out = NULL;

        assert_int_equal(certs_store_delete(s, "device-id"), 0); /* no certs dir at all */
        assert_int_equal(certs_store_put(s, "device-id", pem, strlen(pem)), 0);
        assert_true(exists(path));
        assert_int_equal(certs_store_delete(s, "device-id"), 1);
        assert_false(exists(path));
        assert_int_equal(certs_store_get(s, "device-id", &out, NULL), -ENOENT);
        assert_int_equal(certs_store_delete(s, "device-id"), 0);
}

static void test_list(void **state)
{
        _cleanup_free_ char *pem = make_cert_pem("l"), *fa = NULL, *cfg = NULL, *idx = NULL;
        _cleanup_free_ char *index_text = NULL, *path_b = expected_path("b");
        _cleanup_(certs_store_freep) CertsStore *s = NULL;
        _cleanup_strv_free_ char **ids = NULL;
        size_t n = 0;

        assert_true(asprintf(&fa, "%s/p.pem", home) > 0);
        write_file(fa, pem);
        assert_true(asprintf(&cfg,
                             "[preloaded_certs]\npre = \"file://%s\"\n"
                             "gone = \"file://%s/nothing\"\nbundle = [\"pre\", \"c\"]\n",
                             fa, home) > 0);
        s = store_with_config(cfg);
        assert_int_equal(certs_store_put(s, "c", pem, strlen(pem)), 0);
        assert_int_equal(certs_store_put(s, "a/x:1", pem, strlen(pem)), 0);
        assert_int_equal(certs_store_put(s, "b", pem, strlen(pem)), 0);
        assert_int_equal(certs_store_put(s, "b", pem, strlen(pem)), 0);

        assert_int_equal(certs_store_list(s, &ids, &n), 0);
        assert_int_equal(n, 5);
        assert_string_equal(ids[0], "a/x:1");
        assert_string_equal(ids[1], "b");
        assert_string_equal(ids[2], "bundle");
        assert_string_equal(ids[3], "c");
        assert_string_equal(ids[4], "pre");
        assert_null(ids[5]);
        ids = strv_free(ids);

        /* The index on disk: a header, then the ids in the order they were first written. */
        assert_true(asprintf(&idx, "%s/certs/index", home) > 0);
        index_text = read_file(idx);
        assert_non_null(strstr(index_text, "\nc\na/x:1\nb\n"));

        /* Another instance reads it; a file removed behind our back is not listed. */
        s = certs_store_free(s);
        assert_int_equal(unlink(path_b), 0);
        s = store_with_config(cfg);
        assert_int_equal(certs_store_list(s, &ids, &n), 0);
        assert_int_equal(n, 4);
        assert_string_equal(ids[1], "bundle");
        ids = strv_free(ids);

        assert_int_equal(certs_store_delete(s, "c"), 1);
        assert_int_equal(certs_store_list(s, &ids, &n), 0);
        assert_int_equal(n, 3); /* the bundle still has "pre" */
        assert_string_equal(ids[0], "a/x:1");
        assert_string_equal(ids[1], "bundle");
        assert_string_equal(ids[2], "pre");
}

/* The new content goes in by rename: a reader holding the old file keeps the old bytes whole, and
 * no temporary file is left behind. */
static void test_atomic_replace(void **state)
{
        _cleanup_free_ char *a = make_cert_pem("old"), *b = make_cert_pem("new");
        _cleanup_free_ char *path = expected_path("device-id"), *dir = NULL;
        _cleanup_(certs_store_freep) CertsStore *s = store_with_config(NULL);
        _cleanup_close_ int fd = -EBADF;
        _cleanup_closedir_ DIR *d = NULL;
        char buf[8192];
        ssize_t n;
        struct dirent *de;
        unsigned files = 0;

        assert_int_equal(certs_store_put(s, "device-id", a, strlen(a)), 0);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(certs_store_put(s, "device-id", b, strlen(b)), 0);

        n = pread(fd, buf, sizeof(buf) - 1, 0);
        assert_int_equal(n, (ssize_t)strlen(a));
        buf[n] = 0;
        assert_string_equal(buf, a);
        assert_get(s, "device-id", b);

        assert_true(asprintf(&dir, "%s/certs", home) > 0);
        d = opendir(dir);
        assert_non_null(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' || (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")))
                        files++;
        assert_int_equal(files, 2); /* the certificate and the index */
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_device_id_name),
                cmocka_unit_test(test_file_names),
                cmocka_unit_test_setup_teardown(test_id_validation, setup, teardown),
                cmocka_unit_test_setup_teardown(test_put_get, setup, teardown),
                cmocka_unit_test_setup_teardown(test_upstream_home, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pem_check, setup, teardown),
                cmocka_unit_test_setup_teardown(test_preloaded_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_preloaded_bundle, setup, teardown),
                cmocka_unit_test_setup_teardown(test_preloaded_config, setup, teardown),
                cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
                cmocka_unit_test_setup_teardown(test_list, setup, teardown),
                cmocka_unit_test_setup_teardown(test_atomic_replace, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
