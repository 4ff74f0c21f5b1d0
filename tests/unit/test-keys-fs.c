/* SPDX-License-Identifier: MIT */
/* The filesystem key store, checked against computations done here with OpenSSL directly (or the
 * openssl tool), never against the store itself. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "aziot-keys.h"
#include "keys-crypto.h"
#include "keys-store.h"
#include "macro.h"

#define OK AZIOT_KEYS_RC_OK
#define INVALID AZIOT_KEYS_RC_ERR_INVALID_PARAMETER
#define EXTERNAL AZIOT_KEYS_RC_ERR_EXTERNAL

static char home[PATH_MAX];
static const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *fl;

/* ---- helpers ---- */

static int setup(void **state)
{
        const AZIOT_KEYS_FUNCTION_LIST *base = NULL;

        strcpy(home, "/tmp/test-keys-fs-XXXXXX");
        assert_non_null(mkdtemp(home));
        assert_int_equal(aziot_keys_get_function_list(AZIOT_KEYS_VERSION_2_1_0_0, &base), OK);
        fl = (const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *)base;
        assert_int_equal(fl->set_parameter("homedir_path", home), OK);
        return 0;
}

static int teardown(void **state)
{
        char cmd[PATH_MAX + 16];

        keys_store_reset();
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
        assert_int_equal(system(cmd), 0);
        return 0;
}

static void sha256(const void *data, size_t len, uint8_t out[32])
{
        size_t n = 0;

        assert_true(EVP_Q_digest(NULL, "SHA256", NULL, data, len, out, &n));
        assert_int_equal(n, 32);
}

/* Where the store must keep id, computed from the spec: alphanumerics, '-', hex SHA-256. */
static char *expected_path(const char *id)
{
        uint8_t md[32];
        char *path, *p;

        sha256(id, strlen(id), md);
        path = malloc(strlen(home) + strlen(id) + 100);
        assert_non_null(path);
        p = path + sprintf(path, "%s/keys/", home);
        for (const char *s = id; *s; s++)
                if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                    (*s >= '0' && *s <= '9'))
                        *p++ = *s;
        *p++ = '-';
        for (int i = 0; i < 32; i++)
                p += sprintf(p, "%02x", md[i]);
        strcpy(p, ".key");
        return path;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
}

static uint8_t *read_bytes(const char *path, size_t *ret_len)
{
        FILE *f = fopen(path, "re");
        uint8_t *buf = malloc(1024 * 1024);
        size_t n;

        assert_non_null(f);
        assert_non_null(buf);
        n = fread(buf, 1, 1024 * 1024, f);
        fclose(f);
        *ret_len = n;
        return buf;
}

static void hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                        uint8_t out[32])
{
        size_t n = 0;

        assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, data, len, out,
                                  32, &n));
        assert_int_equal(n, 32);
}

static void sign_hmac(const char *id, const void *msg, size_t len, uint8_t out[32])
{
        size_t n = 32;

        assert_int_equal(
                fl->sign(id, AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL, msg, len, out, &n), OK);
        assert_int_equal(n, 32);
}

static void import(const char *id, const void *bytes, size_t len)
{
        assert_int_equal(fl->import_key(id, bytes, len, AZIOT_KEYS_KEY_USAGE_SIGN), OK);
}

/* ---- ABI ---- */

#define SLOT(type, field) ((offsetof(type, field) - offsetof(type, set_parameter)) / sizeof(void *))

static void test_function_list_layout(void **state)
{
        const AZIOT_KEYS_FUNCTION_LIST *base = NULL;
        const AZIOT_KEYS_FUNCTION_LIST_2_0_0_0 *v20;

        /* The order upstream's daemon and vendor libraries use; a change here breaks them. */
        assert_int_equal(SLOT(AZIOT_KEYS_FUNCTION_LIST_2_0_0_0, decrypt), 11);
        assert_int_equal(SLOT(AZIOT_KEYS_FUNCTION_LIST_2_0_0_0, create_key_if_not_exists), 4);
        assert_int_equal(SLOT(AZIOT_KEYS_FUNCTION_LIST_2_1_0_0, move_key_pair), 2);
        assert_int_equal(SLOT(AZIOT_KEYS_FUNCTION_LIST_2_1_0_0, delete_key_pair), 5);
        assert_int_equal(SLOT(AZIOT_KEYS_FUNCTION_LIST_2_1_0_0, delete_key), 9);
        assert_int_equal(SLOT(AZIOT_KEYS_FUNCTION_LIST_2_1_0_0, decrypt), 14);
        assert_int_equal(offsetof(AZIOT_KEYS_FUNCTION_LIST_2_1_0_0, set_parameter), sizeof(void *));
        assert_int_equal(AZIOT_KEYS_VERSION_2_1_0_0, 0x02010000);
        assert_int_equal(AZIOT_KEYS_VERSION_2_0_0_0, 0x02000000);

        assert_int_equal(fl->base.version, AZIOT_KEYS_VERSION_2_1_0_0);
        assert_int_equal(aziot_keys_get_function_list(AZIOT_KEYS_VERSION_2_0_0_0, &base), OK);
        assert_int_equal(base->version, AZIOT_KEYS_VERSION_2_0_0_0);
        v20 = (const AZIOT_KEYS_FUNCTION_LIST_2_0_0_0 *)base;
        assert_ptr_equal(v20->sign, fl->sign);
        assert_ptr_equal(v20->create_key_if_not_exists, fl->create_key_if_not_exists);
        assert_ptr_equal(v20->decrypt, fl->decrypt);

        assert_int_equal(aziot_keys_get_function_list(0x01000000, &base), INVALID);
        assert_int_equal(aziot_keys_get_function_list(AZIOT_KEYS_VERSION_2_1_0_0, NULL), INVALID);
}

/* ---- symmetric keys ---- */

static void test_create_key_file(void **state)
{
        _cleanup_free_ char *path = expected_path("device-id"), *keys = NULL;
        _cleanup_free_ uint8_t *first = NULL, *second = NULL;
        size_t n1 = 0, n2 = 0;
        struct stat st;

        assert_int_equal(fl->create_key_if_not_exists("device-id", AZIOT_KEYS_KEY_USAGE_SIGN), OK);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_int_equal(st.st_size, 32);
        assert_true(asprintf(&keys, "%s/keys", home) > 0);
        assert_int_equal(stat(keys, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0700);

        first = read_bytes(path, &n1);
        assert_int_equal(fl->create_key_if_not_exists("device-id", AZIOT_KEYS_KEY_USAGE_SIGN), OK);
        second = read_bytes(path, &n2);
        assert_int_equal(n2, 32);
        assert_memory_equal(first, second, 32);
        assert_int_equal(fl->load_key("device-id"), OK);
        assert_int_equal(fl->load_key("other"), INVALID);
}

static void test_empty_key_file(void **state)
{
        _cleanup_free_ char *path = expected_path("empty");
        uint8_t sig[32];
        size_t n = sizeof(sig);
        struct stat st;

        import("x", "x", 1); /* creates keys/ */
        write_bytes(path, "", 0);
        assert_int_equal(fl->load_key("empty"), INVALID);
        assert_int_equal(fl->sign("empty", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL,
                                  (const uint8_t *)"m", 1, sig, &n),
                         INVALID);
        assert_int_equal(fl->create_key_if_not_exists("empty", AZIOT_KEYS_KEY_USAGE_SIGN), OK);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_size, 32);
}

static void test_hmac_known_answer(void **state)
{
        /* RFC 4231, test case 2. */
        static const uint8_t expected[32] = {
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24,
                0x26, 0x08, 0x95, 0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27,
                0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43,
        };
        static const char msg[] = "what do ya want for nothing?";
        uint8_t sig[32], again[32];

        import("jefe", "Jefe", 4);
        sign_hmac("jefe", msg, strlen(msg), sig);
        assert_memory_equal(sig, expected, 32);
        /* The cached context must restart cleanly, not continue the previous MAC. */
        sign_hmac("jefe", msg, strlen(msg), again);
        assert_memory_equal(again, expected, 32);
}

static void test_hmac_import_overwrites(void **state)
{
        uint8_t key[48], sig[32], expected[32];

        assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
        import("k", key, 16);
        sign_hmac("k", "msg", 3, sig);
        hmac_sha256(key, 16, "msg", 3, expected);
        assert_memory_equal(sig, expected, 32);

        /* A cached key is dropped when the key is imported again. */
        import("k", key, sizeof(key));
        sign_hmac("k", "msg", 3, sig);
        hmac_sha256(key, sizeof(key), "msg", 3, expected);
        assert_memory_equal(sig, expected, 32);

        /* An empty message is a message. */
        sign_hmac("k", NULL, 0, sig);
        hmac_sha256(key, sizeof(key), "", 0, expected);
        assert_memory_equal(sig, expected, 32);
}

static void test_sign_buffer_sizes(void **state)
{
        uint8_t sig[64];
        size_t n;

        import("k", "key", 3);
        n = 0;
        assert_int_equal(fl->sign("k", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL,
                                  (const uint8_t *)"m", 1, NULL, &n),
                         OK);
        assert_int_equal(n, 32);
        n = 31;
        assert_int_equal(fl->sign("k", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL,
                                  (const uint8_t *)"m", 1, sig, &n),
                         INVALID);
        assert_int_equal(n, 32);
        n = sizeof(sig);
        assert_int_equal(fl->sign("k", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL,
                                  (const uint8_t *)"m", 1, sig, &n),
                         OK);
        assert_int_equal(n, 32);

        assert_int_equal(
                fl->sign("k", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL, NULL, 1, sig, &n),
                INVALID);
        assert_int_equal(fl->sign("k", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL,
                                  (const uint8_t *)"m", 1, sig, NULL),
                         INVALID);
        assert_int_equal(fl->sign("k", 99, NULL, (const uint8_t *)"m", 1, sig, &n), INVALID);
        assert_int_equal(fl->sign("missing", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL,
                                  (const uint8_t *)"m", 1, NULL, &n),
                         INVALID);
        /* ECDSA needs a key pair: the raw key is not one. */
        assert_int_equal(fl->sign("k", AZIOT_KEYS_SIGN_MECHANISM_ECDSA, NULL, (const uint8_t *)"m",
                                  1, sig, &n),
                         EXTERNAL);
}

static void test_hmac_verify(void **state)
{
        uint8_t key[32], sig[32];
        int ok = -1;

        assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
        import("k", key, sizeof(key));
        hmac_sha256(key, sizeof(key), "data", 4, sig);
        assert_int_equal(fl->verify("k", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL,
                                    (const uint8_t *)"data", 4, sig, sizeof(sig), &ok),
                         OK);
        assert_int_equal(ok, 1);
        sig[31] ^= 1;
        assert_int_equal(fl->verify("k", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL,
                                    (const uint8_t *)"data", 4, sig, sizeof(sig), &ok),
                         OK);
        assert_int_equal(ok, 0);
        sig[31] ^= 1;
        ok = -1;
        assert_int_equal(fl->verify("k", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL,
                                    (const uint8_t *)"data", 4, sig, 31, &ok),
                         OK);
        assert_int_equal(ok, 0);
        assert_int_equal(fl->verify("k", AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL,
                                    (const uint8_t *)"data", 4, sig, sizeof(sig), NULL),
                         INVALID);
}

static void test_derived(void **state)
{
        static const char data[] = "module1:gen1:primary";
        uint8_t base[32], derived[32], expected[32], sig[32], want[32];
        AZIOT_KEYS_SIGN_DERIVED_PARAMETERS p = {
                .derivation_data = (const uint8_t *)data,
                .derivation_data_len = strlen(data),
                .mechanism = AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256,
        };
        size_t n = 0;
        int ok = -1;

        assert_int_equal(RAND_bytes(base, sizeof(base)), 1);
        import("master", base, sizeof(base));
        hmac_sha256(base, sizeof(base), data, strlen(data), expected);

        assert_int_equal(
                fl->derive_key("master", p.derivation_data, p.derivation_data_len, NULL, &n), OK);
        assert_int_equal(n, 32);
        n = 16;
        assert_int_equal(
                fl->derive_key("master", p.derivation_data, p.derivation_data_len, derived, &n),
                INVALID);
        n = sizeof(derived);
        assert_int_equal(
                fl->derive_key("master", p.derivation_data, p.derivation_data_len, derived, &n),
                OK);
        assert_memory_equal(derived, expected, 32);

        n = sizeof(sig);
        assert_int_equal(fl->sign("master", AZIOT_KEYS_SIGN_MECHANISM_DERIVED, &p,
                                  (const uint8_t *)"sas", 3, sig, &n),
                         OK);
        hmac_sha256(expected, 32, "sas", 3, want);
        assert_memory_equal(sig, want, 32);
        assert_int_equal(fl->verify("master", AZIOT_KEYS_SIGN_MECHANISM_DERIVED, &p,
                                    (const uint8_t *)"sas", 3, sig, 32, &ok),
                         OK);
        assert_int_equal(ok, 1);

        p.mechanism = AZIOT_KEYS_SIGN_MECHANISM_ECDSA;
        assert_int_equal(fl->sign("master", AZIOT_KEYS_SIGN_MECHANISM_DERIVED, &p,
                                  (const uint8_t *)"sas", 3, sig, &n),
                         INVALID);
        assert_int_equal(fl->sign("master", AZIOT_KEYS_SIGN_MECHANISM_DERIVED, NULL,
                                  (const uint8_t *)"sas", 3, sig, &n),
                         INVALID);
        assert_int_equal(fl->derive_key("missing", p.derivation_data, 1, derived, &n), INVALID);
}

/* ---- AEAD ---- */

/* AES-256-GCM done here with the ctrl interface, independently of the store's code. */
static int gcm(bool enc, const uint8_t *key, const uint8_t *iv, size_t iv_len, const uint8_t *aad,
               size_t aad_len, const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[16])
{
        EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        int n = 0, m = 0, r;

        assert_non_null(ctx);
        assert_true(EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc));
        assert_true(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)iv_len, NULL));
        assert_true(EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, enc));
        if (aad_len)
                assert_true(EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len));
        if (len)
                assert_true(EVP_CipherUpdate(ctx, out, &n, in, (int)len));
        if (!enc)
                assert_true(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag));
        r = EVP_CipherFinal_ex(ctx, out + n, &m);
        if (enc && r)
                assert_true(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag));
        EVP_CIPHER_CTX_free(ctx);
        return r;
}

static void test_aead_v2(void **state)
{
        static const char plain[] = "the quick brown fox";
        const size_t plen = strlen(plain);
        uint8_t key[32], iv[16], aad[5] = "extra", ct[64], back[64];
        AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS p = {iv, 12, aad, sizeof(aad)};
        size_t n = 0;

        assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
        assert_int_equal(RAND_bytes(iv, sizeof(iv)), 1);
        import("enc", key, sizeof(key));

        assert_int_equal(fl->encrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p,
                                     (const uint8_t *)plain, plen, NULL, &n),
                         OK);
        assert_int_equal(n, 1 + plen + 16);
        n = plen;
        assert_int_equal(fl->encrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p,
                                     (const uint8_t *)plain, plen, ct, &n),
                         INVALID);
        assert_int_equal(n, 1 + plen + 16);

        for (size_t iv_len = 12; iv_len <= 16; iv_len += 4) {
                p.iv_len = iv_len;
                n = sizeof(ct);
                assert_int_equal(fl->encrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p,
                                             (const uint8_t *)plain, plen, ct, &n),
                                 OK);
                assert_int_equal(n, 1 + plen + 16);
                assert_int_equal(ct[0], 0x02);
                assert_true(gcm(false, key, iv, iv_len, aad, sizeof(aad), ct + 1, plen, back,
                                ct + 1 + plen));
                assert_memory_equal(back, plain, plen);

                memset(back, 0, sizeof(back));
                n = sizeof(back);
                assert_int_equal(fl->decrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p, ct,
                                             1 + plen + 16, back, &n),
                                 OK);
                assert_int_equal(n, plen);
                assert_memory_equal(back, plain, plen);
        }
}

static void test_aead_v1(void **state)
{
        static const char plain[] = "legacy iot edge secret";
        const size_t plen = strlen(plain);
        uint8_t key[32], iv[16], ct[64], back[64];
        AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS p = {iv, sizeof(iv), (const uint8_t *)"", 0};
        size_t n = sizeof(back);

        assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
        assert_int_equal(RAND_bytes(iv, sizeof(iv)), 1);
        import("enc", key, sizeof(key));

        /* 0x01 || tag || ciphertext, built by hand. */
        ct[0] = 0x01;
        assert_true(gcm(true, key, iv, sizeof(iv), NULL, 0, (const uint8_t *)plain, plen, ct + 17,
                        ct + 1));
        assert_int_equal(fl->decrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p, ct,
                                     1 + 16 + plen, back, &n),
                         OK);
        assert_int_equal(n, plen);
        assert_memory_equal(back, plain, plen);
}

static void test_aead_rejects(void **state)
{
        uint8_t key[32], iv[12] = {1}, ct[64], back[64], zero[64] = {};
        AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS p = {iv, sizeof(iv), NULL, 0};
        size_t n = sizeof(ct);

        assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
        import("enc", key, sizeof(key));
        assert_int_equal(fl->encrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p,
                                     (const uint8_t *)"0123456789", 10, ct, &n),
                         OK);
        assert_int_equal(n, 27);

        /* Tag mismatch: an external error, and nothing unauthenticated left in the buffer. */
        ct[5] ^= 0x40;
        memset(back, 0, sizeof(back));
        n = sizeof(back);
        assert_int_equal(
                fl->decrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p, ct, 27, back, &n),
                EXTERNAL);
        assert_memory_equal(back, zero, 10);
        ct[5] ^= 0x40;

        /* Too short, unknown version, buffer too small. */
        n = sizeof(back);
        assert_int_equal(
                fl->decrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p, ct, 16, back, &n),
                INVALID);
        ct[0] = 0x03;
        assert_int_equal(
                fl->decrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p, ct, 27, back, &n),
                INVALID);
        ct[0] = 0x02;
        n = 9;
        assert_int_equal(
                fl->decrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p, ct, 27, back, &n),
                INVALID);
        assert_int_equal(n, 10);
        n = sizeof(back);
        assert_int_equal(
                fl->decrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, NULL, ct, 27, back, &n),
                INVALID);
        assert_int_equal(
                fl->decrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_PKCS1, &p, ct, 27, back, &n),
                INVALID);

        /* A key that is not 32 bytes cannot be an AES-256 key. */
        import("short", key, 16);
        n = sizeof(ct);
        assert_int_equal(fl->encrypt("short", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p,
                                     (const uint8_t *)"x", 1, ct, &n),
                         EXTERNAL);
        /* Nor is an empty IV accepted by AES-GCM. */
        p.iv_len = 0;
        n = sizeof(ct);
        assert_int_equal(fl->encrypt("enc", AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD, &p,
                                     (const uint8_t *)"x", 1, ct, &n),
                         EXTERNAL);
}

static void test_aead_derived(void **state)
{
        static const char data[] = "derive me";
        uint8_t base[32], derived[32], iv[12] = {7}, ct[64], back[64];
        AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS aead = {iv, sizeof(iv), (const uint8_t *)"a", 1};
        AZIOT_KEYS_ENCRYPT_DERIVED_PARAMETERS p = {
                .derivation_data = (const uint8_t *)data,
                .derivation_data_len = strlen(data),
                .mechanism = AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD,
                .parameters = &aead,
        };
        size_t n = sizeof(ct);

        assert_int_equal(RAND_bytes(base, sizeof(base)), 1);
        import("base", base, sizeof(base));
        hmac_sha256(base, sizeof(base), data, strlen(data), derived);

        assert_int_equal(fl->encrypt("base", AZIOT_KEYS_ENCRYPT_MECHANISM_DERIVED, &p,
                                     (const uint8_t *)"hello", 5, ct, &n),
                         OK);
        assert_int_equal(n, 22);
        assert_true(gcm(false, derived, iv, sizeof(iv), (const uint8_t *)"a", 1, ct + 1, 5, back,
                        ct + 6));
        assert_memory_equal(back, "hello", 5);
        n = sizeof(back);
        assert_int_equal(
                fl->decrypt("base", AZIOT_KEYS_ENCRYPT_MECHANISM_DERIVED, &p, ct, 22, back, &n),
                OK);
        assert_int_equal(n, 5);
        p.mechanism = AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_PKCS1;
        assert_int_equal(fl->encrypt("base", AZIOT_KEYS_ENCRYPT_MECHANISM_DERIVED, &p,
                                     (const uint8_t *)"hello", 5, ct, &n),
                         INVALID);
}

/* ---- key pairs ---- */

static uint8_t *get_param(const char *id, AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE type, size_t *len)
{
        uint8_t *buf;

        *len = 0;
        assert_int_equal(fl->get_key_pair_parameter(id, type, NULL, len), OK);
        buf = malloc(*len);
        assert_non_null(buf);
        assert_int_equal(fl->get_key_pair_parameter(id, type, buf, len), OK);
        return buf;
}

static unsigned get_algorithm(const char *id)
{
        _cleanup_free_ uint8_t *v = NULL;
        unsigned alg;
        size_t n;

        v = get_param(id, AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_ALGORITHM, &n);
        assert_int_equal(n, sizeof(unsigned));
        memcpy(&alg, v, sizeof(alg));
        return alg;
}

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
        OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
        EVP_PKEY *pkey = NULL;

        assert_non_null(ctx);
        assert_non_null(params);
        assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
        assert_int_equal(EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params), 1);
        OSSL_PARAM_free(params);
        OSSL_PARAM_BLD_free(bld);
        EVP_PKEY_CTX_free(ctx);
        return pkey;
}

/* The public key as a client rebuilds it from the exported curve OID and compressed point. */
static EVP_PKEY *ec_public_key(const char *id)
{
        static const uint8_t p256_oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                           0xce, 0x3d, 0x03, 0x01, 0x07};
        _cleanup_free_ uint8_t *oid = NULL, *point = NULL;
        const unsigned char *p;
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        ASN1_OBJECT *obj;
        size_t oid_len, point_len;

        assert_int_equal(get_algorithm(id), AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC);
        oid = get_param(id, AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_EC_CURVE_OID, &oid_len);
        assert_int_equal(oid_len, sizeof(p256_oid));
        assert_memory_equal(oid, p256_oid, sizeof(p256_oid));
        point = get_param(id, AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_EC_POINT, &point_len);
        assert_int_equal(point_len, 33);
        assert_true(point[0] == 0x02 || point[0] == 0x03);

        p = oid;
        obj = d2i_ASN1_OBJECT(NULL, &p, (long)oid_len);
        assert_non_null(obj);
        assert_non_null(bld);
        assert_true(OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                                    OBJ_nid2sn(OBJ_obj2nid(obj)), 0));
        assert_true(
                OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, point_len));
        ASN1_OBJECT_free(obj);
        return pkey_from_params("EC", bld);
}

static EVP_PKEY *rsa_public_key(const char *id, size_t *ret_modulus_len)
{
        _cleanup_free_ uint8_t *n = NULL, *e = NULL;
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        BIGNUM *bn_n, *bn_e;
        size_t n_len, e_len;
        EVP_PKEY *pkey;

        assert_int_equal(get_algorithm(id), AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_RSA);
        n = get_param(id, AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_RSA_MODULUS, &n_len);
        e = get_param(id, AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_RSA_EXPONENT, &e_len);
        assert_int_equal(e_len, 3);
        assert_memory_equal(e, "\x01\x00\x01", 3);
        assert_true(n[0] != 0);
        bn_n = BN_bin2bn(n, (int)n_len, NULL);
        bn_e = BN_bin2bn(e, (int)e_len, NULL);
        assert_true(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n));
        assert_true(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e));
        pkey = pkey_from_params("RSA", bld);
        BN_free(bn_n);
        BN_free(bn_e);
        *ret_modulus_len = n_len;
        return pkey;
}

static void ecdsa_sign_and_check(const char *id, EVP_PKEY *pub)
{
        uint8_t digest[32], sig[128];
        size_t n = 0;
        EVP_PKEY_CTX *ctx;
        int ok = -1;

        sha256("to be signed", 12, digest);
        assert_int_equal(fl->sign(id, AZIOT_KEYS_SIGN_MECHANISM_ECDSA, NULL, digest, 32, NULL, &n),
                         OK);
        assert_int_equal(n, 72);
        n = sizeof(sig);
        assert_int_equal(fl->sign(id, AZIOT_KEYS_SIGN_MECHANISM_ECDSA, NULL, digest, 32, sig, &n),
                         OK);
        assert_true(n >= 8 && n <= 72);
        assert_int_equal(sig[0], 0x30); /* DER SEQUENCE */

        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
        assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
        assert_int_equal(EVP_PKEY_verify(ctx, sig, n, digest, 32), 1);
        EVP_PKEY_CTX_free(ctx);

        assert_int_equal(
                fl->verify(id, AZIOT_KEYS_SIGN_MECHANISM_ECDSA, NULL, digest, 32, sig, n, &ok), OK);
        assert_int_equal(ok, 1);
        digest[0] ^= 1;
        assert_int_equal(
                fl->verify(id, AZIOT_KEYS_SIGN_MECHANISM_ECDSA, NULL, digest, 32, sig, n, &ok), OK);
        assert_int_equal(ok, 0);
        assert_int_equal(fl->verify(id, AZIOT_KEYS_SIGN_MECHANISM_ECDSA, NULL, digest, 32,
                                    (const uint8_t *)"junk", 4, &ok),
                         OK);
        assert_int_equal(ok, 0);
}

static void test_key_pair_ec(void **state)
{
        _cleanup_free_ char *path = expected_path("device-id-ec");
        _cleanup_free_ uint8_t *pem = NULL, *again = NULL;
        size_t len = 0, len2 = 0, n = 8;
        uint8_t buf[8];
        EVP_PKEY *pub;

        assert_int_equal(fl->load_key_pair("device-id-ec"), INVALID);
        assert_int_equal(fl->create_key_pair_if_not_exists("device-id-ec", NULL), OK);
        pem = read_bytes(path, &len);
        assert_true(len > 30);
        assert_memory_equal(pem, "-----BEGIN PRIVATE KEY-----\n", 28);
        assert_int_equal(fl->create_key_pair_if_not_exists("device-id-ec", "rsa-2048"), OK);
        again = read_bytes(path, &len2);
        assert_int_equal(len, len2);
        assert_memory_equal(pem, again, len);
        assert_int_equal(fl->load_key_pair("device-id-ec"), OK);

        pub = ec_public_key("device-id-ec");
        ecdsa_sign_and_check("device-id-ec", pub);
        EVP_PKEY_free(pub);

        assert_int_equal(fl->get_key_pair_parameter("device-id-ec",
                                                    AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_RSA_MODULUS,
                                                    NULL, &n),
                         INVALID);
        assert_int_equal(fl->get_key_pair_parameter("device-id-ec", 42, NULL, &n), INVALID);
        n = 8;
        assert_int_equal(fl->get_key_pair_parameter("device-id-ec",
                                                    AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_EC_POINT,
                                                    buf, &n),
                         INVALID);
        assert_int_equal(n, 33);
        n = sizeof(buf);
        assert_int_equal(fl->encrypt("device-id-ec", AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_PKCS1, NULL,
                                     (const uint8_t *)"x", 1, buf, &n),
                         INVALID);
}

static void run_openssl(const char *fmt, ...) _printf_(1, 2);
static void run_openssl(const char *fmt, ...)
{
        char cmd[2 * PATH_MAX + 256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        assert_int_equal(system(cmd), 0);
}

static void rsa_check(const char *id, const char *key_file)
{
        /* A SHA-256 DigestInfo, as the OpenSSL engine/provider would pass for a PKCS#1 v1.5
         * signature. */
        static const uint8_t prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                         0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
        _cleanup_free_ char *in_path = NULL, *out_path = NULL;
        _cleanup_free_ uint8_t *tool_sig = NULL;
        uint8_t info[sizeof(prefix) + 32], sig[1024], rec[1024], block[1024];
        size_t n = 0, mod_len = 0, rec_len, tool_len = 0;
        EVP_PKEY *pub = rsa_public_key(id, &mod_len);
        EVP_PKEY_CTX *ctx;

        memcpy(info, prefix, sizeof(prefix));
        sha256("message", 7, info + sizeof(prefix));
        assert_int_equal(fl->encrypt(id, AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_PKCS1, NULL, info,
                                     sizeof(info), NULL, &n),
                         OK);
        assert_int_equal(n, mod_len);
        n = sizeof(sig);
        assert_int_equal(fl->encrypt(id, AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_PKCS1, NULL, info,
                                     sizeof(info), sig, &n),
                         OK);
        assert_int_equal(n, mod_len);

        /* Recovering with the exported public key gives the input back... */
        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
        assert_int_equal(EVP_PKEY_verify_recover_init(ctx), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING), 1);
        rec_len = sizeof(rec);
        assert_int_equal(EVP_PKEY_verify_recover(ctx, rec, &rec_len, sig, n), 1);
        assert_int_equal(rec_len, sizeof(info));
        assert_memory_equal(rec, info, sizeof(info));
        EVP_PKEY_CTX_free(ctx);

        /* ...and PKCS#1 v1.5 being deterministic, it is byte for byte what the openssl tool
         * makes of the same input without a digest. */
        assert_true(asprintf(&in_path, "%s/info.bin", home) > 0);
        assert_true(asprintf(&out_path, "%s/info.sig", home) > 0);
        write_bytes(in_path, info, sizeof(info));
        run_openssl("openssl pkeyutl -sign -inkey '%s' -in '%s' -out '%s' "
                    "-pkeyopt rsa_padding_mode:pkcs1",
                    key_file, in_path, out_path);
        tool_sig = read_bytes(out_path, &tool_len);
        assert_int_equal(tool_len, n);
        assert_memory_equal(tool_sig, sig, n);

        /* Raw: a full-length block below the modulus. */
        assert_int_equal(RAND_bytes(block, (int)mod_len), 1);
        block[0] = 0;
        n = sizeof(sig);
        assert_int_equal(fl->encrypt(id, AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_NO_PADDING, NULL, block,
                                     mod_len, sig, &n),
                         OK);
        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
        assert_int_equal(EVP_PKEY_verify_recover_init(ctx), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_NO_PADDING), 1);
        rec_len = sizeof(rec);
        assert_int_equal(EVP_PKEY_verify_recover(ctx, rec, &rec_len, sig, n), 1);
        assert_int_equal(rec_len, mod_len);
        assert_memory_equal(rec, block, mod_len);
        EVP_PKEY_CTX_free(ctx);
        EVP_PKEY_free(pub);

        /* Not a full block: the RSA operation fails. ECDSA on RSA: wrong mechanism. */
        n = sizeof(sig);
        assert_int_equal(fl->encrypt(id, AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_NO_PADDING, NULL, block,
                                     mod_len - 1, sig, &n),
                         EXTERNAL);
        n = sizeof(sig);
        assert_int_equal(fl->sign(id, AZIOT_KEYS_SIGN_MECHANISM_ECDSA, NULL, info, 32, sig, &n),
                         INVALID);
}

static void test_key_pair_rsa(void **state)
{
        _cleanup_free_ char *path = expected_path("rsa-key");
        _cleanup_free_ uint8_t *pem = NULL;
        size_t len = 0;

        assert_int_equal(fl->create_key_pair_if_not_exists("rsa-key", "bogus:rsa-2048:ec-p256"),
                         OK);
        pem = read_bytes(path, &len);
        assert_memory_equal(pem, "-----BEGIN PRIVATE KEY-----\n", 28);
        rsa_check("rsa-key", path);
}

/* Key files written by someone else (upstream, an admin with openssl) are used as they are. */
static void test_key_pair_from_openssl(void **state)
{
        _cleanup_free_ char *ec_path = expected_path("tool-ec"),
                            *rsa_path = expected_path("tool-rsa");
        EVP_PKEY *pub;
        FILE *f;

        import("x", "x", 1); /* creates keys/ */
        run_openssl("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
                    "-pkeyopt ec_param_enc:named_curve -out '%s' 2>/dev/null",
                    ec_path);
        run_openssl("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out '%s' "
                    "2>/dev/null",
                    rsa_path);
        assert_int_equal(fl->load_key_pair("tool-ec"), OK);
        assert_int_equal(fl->create_key_pair_if_not_exists("tool-ec", NULL), OK);

        /* Check with the public key from the file itself, too. */
        f = fopen(ec_path, "re");
        assert_non_null(f);
        pub = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        assert_non_null(pub);
        ecdsa_sign_and_check("tool-ec", pub);
        EVP_PKEY_free(pub);
        pub = ec_public_key("tool-ec");
        ecdsa_sign_and_check("tool-ec", pub);
        EVP_PKEY_free(pub);

        rsa_check("tool-rsa", rsa_path);
}

static void test_key_pair_unparsable(void **state)
{
        _cleanup_free_ char *path = expected_path("broken");
        _cleanup_free_ uint8_t *pem = NULL;
        size_t len = 0, n = 0;

        import("broken", "not a key", 9);
        assert_int_equal(fl->load_key_pair("broken"), EXTERNAL);
        /* A symmetric key's file is not a key pair either. */
        assert_int_equal(fl->get_key_pair_parameter(
                                 "broken", AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_ALGORITHM, NULL, &n),
                         EXTERNAL);
        assert_int_equal(fl->create_key_pair_if_not_exists("broken", "ec-p256"), OK);
        pem = read_bytes(path, &len);
        assert_memory_equal(pem, "-----BEGIN PRIVATE KEY-----\n", 28);
        assert_int_equal(get_algorithm("broken"), AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC);
}

static void test_preferred_algorithms(void **state)
{
        KeysAlgorithm a[_KEYS_ALGORITHM_MAX];

        assert_int_equal(keys_preferred_algorithms_parse(NULL, a), 2);
        assert_int_equal(a[0], KEYS_ALGORITHM_EC_P256);
        assert_int_equal(a[1], KEYS_ALGORITHM_RSA_2048);
        assert_int_equal(keys_preferred_algorithms_parse("*", a), 2);
        assert_int_equal(a[0], KEYS_ALGORITHM_EC_P256);
        assert_int_equal(keys_preferred_algorithms_parse("rsa-4096:ec-p256:rsa-4096", a), 2);
        assert_int_equal(a[0], KEYS_ALGORITHM_RSA_4096);
        assert_int_equal(a[1], KEYS_ALGORITHM_EC_P256);
        assert_int_equal(keys_preferred_algorithms_parse("x::rsa-2048:*", a), 2);
        assert_int_equal(a[0], KEYS_ALGORITHM_RSA_2048);
        assert_int_equal(a[1], KEYS_ALGORITHM_EC_P256);
        assert_int_equal(keys_preferred_algorithms_parse("", a), -EINVAL);
        assert_int_equal(keys_preferred_algorithms_parse("ec-p384:rsa", a), -EINVAL);
        assert_int_equal(keys_preferred_algorithms_parse("EC-P256", a), -EINVAL);

        assert_int_equal(fl->create_key_pair_if_not_exists("p", "ed25519"), INVALID);
        assert_int_equal(fl->load_key_pair("p"), INVALID);
}

static void test_move_and_delete(void **state)
{
        _cleanup_free_ char *a_path = expected_path("a"), *b_path = expected_path("b");
        _cleanup_free_ uint8_t *before = NULL, *after = NULL;
        size_t l1 = 0, l2 = 0;
        struct stat st;

        assert_int_equal(fl->create_key_pair_if_not_exists("a", "ec-p256"), OK);
        assert_int_equal(fl->create_key_pair_if_not_exists("b", "ec-p256"), OK);
        assert_int_equal(fl->load_key_pair("b"), OK); /* cached now */
        before = read_bytes(a_path, &l1);

        assert_int_equal(fl->move_key_pair("a", "b"), OK);
        assert_int_equal(stat(a_path, &st), -1);
        after = read_bytes(b_path, &l2);
        assert_int_equal(l1, l2);
        assert_memory_equal(before, after, l1);
        assert_int_equal(fl->load_key_pair("a"), INVALID);
        assert_int_equal(fl->load_key_pair("b"), OK);
        assert_int_equal(fl->move_key_pair("a", "b"), INVALID);
        assert_int_equal(fl->move_key_pair("b", "b"), OK);

        assert_int_equal(fl->delete_key_pair("b"), OK);
        assert_int_equal(stat(b_path, &st), -1);
        assert_int_equal(fl->load_key_pair("b"), INVALID);
        assert_int_equal(fl->delete_key_pair("b"), OK);

        import("s", "secret", 6);
        assert_int_equal(fl->load_key("s"), OK);
        assert_int_equal(fl->delete_key("s"), OK);
        assert_int_equal(fl->load_key("s"), INVALID);
        assert_int_equal(fl->delete_key("s"), OK);
        assert_int_equal(fl->delete_key(NULL), INVALID);
}

/* ---- the cache follows the disk ---- */

static void replace_file(const char *path, const void *data, size_t len, time_t mtime)
{
        _cleanup_free_ char *tmp = NULL;
        struct timespec ts[2] = {{mtime, 0}, {mtime, 0}};

        assert_true(asprintf(&tmp, "%s.new", path) > 0);
        write_bytes(tmp, data, len);
        assert_int_equal(utimensat(AT_FDCWD, tmp, ts, 0), 0);
        assert_int_equal(rename(tmp, path), 0);
}

static void test_cache_follows_file(void **state)
{
        _cleanup_free_ char *path = expected_path("cached");
        uint8_t k1[32], k2[32], sig[32], want[32];
        struct timespec ts[2] = {{1000000, 0}, {1000000, 0}};
        FILE *f;

        assert_int_equal(RAND_bytes(k1, sizeof(k1)), 1);
        assert_int_equal(RAND_bytes(k2, sizeof(k2)), 1);
        import("cached", k1, sizeof(k1));
        sign_hmac("cached", "m", 1, sig);
        hmac_sha256(k1, 32, "m", 1, want);
        assert_memory_equal(sig, want, 32);

        /* Replaced behind our back (new inode, other mtime): the next MAC uses the new key. */
        replace_file(path, k2, sizeof(k2), 2000000);
        sign_hmac("cached", "m", 1, sig);
        hmac_sha256(k2, 32, "m", 1, want);
        assert_memory_equal(sig, want, 32);

        /* Rewritten in place, same size, same inode: the mtime tells. */
        f = fopen(path, "r+e");
        assert_non_null(f);
        assert_int_equal(fwrite(k1, 1, sizeof(k1), f), sizeof(k1));
        assert_int_equal(fclose(f), 0);
        assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
        sign_hmac("cached", "m", 1, sig);
        hmac_sha256(k1, 32, "m", 1, want);
        assert_memory_equal(sig, want, 32);

        /* Again within the same second: the nanoseconds tell. */
        f = fopen(path, "r+e");
        assert_non_null(f);
        assert_int_equal(fwrite(k2, 1, sizeof(k2), f), sizeof(k2));
        assert_int_equal(fclose(f), 0);
        ts[0].tv_nsec = ts[1].tv_nsec = 1;
        assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
        sign_hmac("cached", "m", 1, sig);
        hmac_sha256(k2, 32, "m", 1, want);
        assert_memory_equal(sig, want, 32);

        /* Removed: gone. */
        assert_int_equal(unlink(path), 0);
        assert_int_equal(fl->load_key("cached"), INVALID);
}

/* ---- where files go ---- */

static size_t count_entries(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        size_t n = 0;

        assert_non_null(d);
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

static void test_ids_stay_inside(void **state)
{
        static const char *const ids[] = {
                "../../etc/passwd",  "a/b",        "/abs/olute", "..", "./.",
                "\xc3\xa9t\xc3\xa9", "with space", NULL};
        _cleanup_free_ char *keys = NULL, *long_id = NULL, *alnum_id = NULL;
        struct stat st;
        size_t i;

        long_id = malloc(4097);
        assert_non_null(long_id);
        for (i = 0; i < 4096; i++)
                long_id[i] = "../"[i % 3];
        long_id[4096] = 0;

        for (i = 0; ids[i]; i++) {
                _cleanup_free_ char *path = expected_path(ids[i]);

                assert_int_equal(fl->create_key_if_not_exists(ids[i], AZIOT_KEYS_KEY_USAGE_SIGN),
                                 OK);
                assert_int_equal(stat(path, &st), 0);
        }
        assert_int_equal(fl->create_key_if_not_exists(long_id, AZIOT_KEYS_KEY_USAGE_SIGN), OK);
        {
                _cleanup_free_ char *path = expected_path(long_id);
                assert_int_equal(stat(path, &st), 0);
        }
        assert_true(asprintf(&keys, "%s/keys", home) > 0);
        assert_int_equal(count_entries(keys), i + 1);
        assert_int_equal(count_entries(home), 1);

        /* Too long, empty, not UTF-8, too long for a file name. */
        long_id = realloc(long_id, 4098);
        strcat(long_id, "x");
        assert_int_equal(fl->create_key_if_not_exists(long_id, AZIOT_KEYS_KEY_USAGE_SIGN), INVALID);
        assert_int_equal(fl->create_key_if_not_exists("", AZIOT_KEYS_KEY_USAGE_SIGN), INVALID);
        assert_int_equal(fl->create_key_if_not_exists("\xff\xfe", AZIOT_KEYS_KEY_USAGE_SIGN),
                         INVALID);
        assert_int_equal(fl->create_key_if_not_exists(NULL, AZIOT_KEYS_KEY_USAGE_SIGN), INVALID);
        alnum_id = malloc(301);
        assert_non_null(alnum_id);
        memset(alnum_id, 'a', 300);
        alnum_id[300] = 0;
        assert_int_equal(fl->create_key_if_not_exists(alnum_id, AZIOT_KEYS_KEY_USAGE_SIGN),
                         INVALID);
        assert_int_equal(count_entries(keys), i + 1);
        assert_int_equal(count_entries(home), 1);
}

/* ---- configuration ---- */

static void test_preloaded(void **state)
{
        _cleanup_free_ char *dir = NULL, *file = NULL, *uri = NULL, *created = NULL,
                            *created_uri = NULL, *keys = NULL;
        uint8_t key[32], sig[32], want[32];
        struct stat st;

        assert_true(asprintf(&dir, "%s/pre loaded", home) > 0);
        assert_int_equal(mkdir(dir, 0700), 0);
        assert_true(asprintf(&file, "%s/device id.key", dir) > 0);
        assert_true(asprintf(&uri, "file://%s/pre%%20loaded/device%%20id.key", home) > 0);
        assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
        write_bytes(file, key, sizeof(key));

        assert_int_equal(fl->set_parameter("preloaded_key:device-id", uri), OK);
        sign_hmac("device-id", "msg", 3, sig);
        hmac_sha256(key, sizeof(key), "msg", 3, want);
        assert_memory_equal(sig, want, 32);

        /* Created where configured, not in keys/. */
        assert_true(asprintf(&created, "%s/new.key", dir) > 0);
        assert_true(asprintf(&created_uri, "file://localhost%s", created) > 0);
        assert_int_equal(fl->set_parameter("preloaded_key:new", created_uri), OK);
        assert_int_equal(fl->create_key_if_not_exists("new", AZIOT_KEYS_KEY_USAGE_SIGN), OK);
        assert_int_equal(stat(created, &st), 0);
        assert_int_equal(st.st_size, 32);
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_true(asprintf(&keys, "%s/keys", home) > 0);
        assert_true(stat(keys, &st) < 0 || count_entries(keys) == 0);
        assert_int_equal(fl->delete_key("new"), OK);
        assert_int_equal(stat(created, &st), -1);

        /* A PKCS#11 location needs the module: without pkcs11_lib_path the key is unusable. */
        assert_int_equal(fl->set_parameter("preloaded_key:p", "pkcs11:token=t;object=o"), OK);
        assert_int_equal(fl->load_key("p"), INVALID);
        /* A bad PKCS#11 URI does not stop the store: that location is unusable (and logged). */
        assert_int_equal(fl->set_parameter("preloaded_key:p", "pkcs11:object=o"), OK);
        assert_int_equal(fl->load_key("p"), INVALID);
        assert_int_equal(fl->set_parameter("preloaded_key:p", "pkcs11:token=%zz"), OK);
        assert_int_equal(fl->load_key("p"), INVALID);
        assert_int_equal(fl->set_parameter("preloaded_key:p", "http://x/y"), INVALID);
        assert_int_equal(fl->set_parameter("preloaded_key:p", "file://host/x"), INVALID);
        assert_int_equal(fl->set_parameter("preloaded_key:p", "file://relative"), INVALID);
        assert_int_equal(fl->set_parameter("preloaded_key:p", "file:///a%00b"), INVALID);
        assert_int_equal(fl->set_parameter("preloaded_key:p", "file:///a%zz"), INVALID);
        assert_int_equal(fl->set_parameter("preloaded_key:p", NULL), INVALID);
        assert_int_equal(fl->set_parameter("preloaded_key:", "file:///x"), INVALID);
        assert_int_equal(fl->set_parameter("pkcs11_lib_path", "relative/x.so"), INVALID);
        assert_int_equal(fl->set_parameter("pkcs11_lib_path", ""), INVALID);
        assert_int_equal(fl->set_parameter("pkcs11_base_slot", "pkcs11:slot-id=x"), OK);
        assert_int_equal(fl->set_parameter("pkcs11_base_slot", "slot-id=0"), OK);
        /* With a module, an invalid base slot is where new keys cannot be made (not the
         * filesystem instead), and the preloaded key with the bad URI fails. */
        assert_int_equal(fl->set_parameter("pkcs11_lib_path", "/nonexistent/pkcs11.so"), OK);
        assert_int_equal(fl->create_key_if_not_exists("k-new", AZIOT_KEYS_KEY_USAGE_SIGN),
                         EXTERNAL);
        assert_int_equal(fl->load_key("p"), EXTERNAL);
        assert_true(stat(keys, &st) < 0 || count_entries(keys) == 0);
        assert_int_equal(fl->set_parameter("pkcs11_base_slot", "pkcs11:slot-id=0"), OK);
        assert_int_equal(fl->set_parameter("something", "x"), INVALID);
        assert_int_equal(fl->set_parameter(NULL, "x"), INVALID);
        assert_int_equal(fl->set_parameter("homedir_path", ""), INVALID);
}

static void test_no_location(void **state)
{
        keys_store_reset();
        assert_int_equal(fl->create_key_if_not_exists("k", AZIOT_KEYS_KEY_USAGE_SIGN), INVALID);
        assert_int_equal(fl->create_key_pair_if_not_exists("k", NULL), INVALID);
        assert_int_equal(fl->set_parameter("homedir_path", home), OK);
        assert_int_equal(fl->create_key_if_not_exists("k", AZIOT_KEYS_KEY_USAGE_SIGN), OK);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_function_list_layout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_key_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_empty_key_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hmac_known_answer, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hmac_import_overwrites, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sign_buffer_sizes, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hmac_verify, setup, teardown),
                cmocka_unit_test_setup_teardown(test_derived, setup, teardown),
                cmocka_unit_test_setup_teardown(test_aead_v2, setup, teardown),
                cmocka_unit_test_setup_teardown(test_aead_v1, setup, teardown),
                cmocka_unit_test_setup_teardown(test_aead_rejects, setup, teardown),
                cmocka_unit_test_setup_teardown(test_aead_derived, setup, teardown),
                cmocka_unit_test_setup_teardown(test_key_pair_ec, setup, teardown),
                cmocka_unit_test_setup_teardown(test_key_pair_rsa, setup, teardown),
                cmocka_unit_test_setup_teardown(test_key_pair_from_openssl, setup, teardown),
                cmocka_unit_test_setup_teardown(test_key_pair_unparsable, setup, teardown),
                cmocka_unit_test_setup_teardown(test_preferred_algorithms, setup, teardown),
                cmocka_unit_test_setup_teardown(test_move_and_delete, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cache_follows_file, setup, teardown),
                cmocka_unit_test_setup_teardown(test_ids_stay_inside, setup, teardown),
                cmocka_unit_test_setup_teardown(test_preloaded, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_location, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
