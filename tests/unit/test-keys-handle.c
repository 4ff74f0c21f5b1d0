/* SPDX-License-Identifier: MIT */
/* Key handles, checked against handles built here by hand following the format step by step. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "keys-store.h"
#include "keys-handle.h"
#include "base64.h"
#include "utf8.h"
#include "macro.h"

static uint8_t test_hvk[32];

/* The test's own validation key, MACed with OpenSSL directly. */
static int test_mac(void *userdata, const void *data, size_t len, uint8_t ret[32])
{
        const uint8_t *key = userdata;
        size_t n = 0;

        assert_non_null(
                EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, 32, data, len, ret, 32, &n));
        assert_int_equal(n, 32);
        return 0;
}

static int failing_mac(void *userdata, const void *data, size_t len, uint8_t ret[32])
{
        return -EIO;
}

static const KeysHandleSigner signer = {.mac = test_mac, .userdata = test_hvk};

/* ---- helpers ---- */

static char *b64(const void *data, size_t len)
{
        char *s = base64_encode_alloc(data, len);

        assert_non_null(s);
        return s;
}

/* A handle for sr_json exactly as given, MACed with key. */
static char *handle_for_json(const char *sr_json, const uint8_t key[32])
{
        _cleanup_free_ char *sr = b64(sr_json, strlen(sr_json)), *sig = NULL;
        uint8_t mac[32];
        char *h;

        assert_int_equal(test_mac((void *)key, sr_json, strlen(sr_json), mac), 0);
        sig = b64(mac, sizeof(mac));
        assert_true(asprintf(&h, "sr=%s&sig=%s", sr, sig) > 0);
        return h;
}

/* The sr JSON of a handle, decoded here. */
static char *sr_of(const char *handle)
{
        const char *start = strstr(handle, "sr="), *end;
        uint8_t *json = NULL;
        size_t len = 0;

        assert_non_null(start);
        start += 3;
        end = strchr(start, '&');
        assert_non_null(end);
        assert_int_equal(base64_decode_alloc(start, (size_t)(end - start), &json, &len), 0);
        assert_int_equal(strlen((char *)json), len);
        return (char *)json;
}

static KeysHandle *parse_ok(const char *handle)
{
        KeysHandle *h = NULL;

        assert_int_equal(keys_handle_parse(&signer, handle, &h), 0);
        assert_non_null(h);
        return h;
}

static void parse_fails(const char *handle, int expected)
{
        KeysHandle *h = NULL;

        assert_int_equal(keys_handle_parse(&signer, handle, &h), expected);
        assert_null(h);
}

/* ---- minting ---- */

static void test_mint_format(void **state)
{
        _cleanup_free_ char *handle = NULL, *other = NULL, *json = NULL, *sig_b64 = NULL,
                            *sr_b64 = NULL;
        static const char prefix[] = "{\"key_id\":{\"KeyPair\":\"device-id\"},\"nonce\":\"";
        _cleanup_free_ uint8_t *nonce = NULL;
        uint8_t mac[32];
        size_t nonce_len = 0;
        const char *amp;

        assert_int_equal(keys_handle_mint_key_pair(&signer, "device-id", &handle), 0);
        assert_true(startswith(handle, "sr="));
        amp = strchr(handle, '&');
        assert_non_null(amp);
        assert_true(startswith(amp, "&sig="));

        /* sr is base64 of the compact JSON, nonce = base64 of 64 random bytes... */
        json = sr_of(handle);
        assert_true(startswith(json, prefix));
        assert_true(endswith(json, "\"}"));
        assert_int_equal(strlen(json), strlen(prefix) + 88 + 2);
        assert_int_equal(base64_decode_alloc(json + strlen(prefix), 88, &nonce, &nonce_len), 0);
        assert_int_equal(nonce_len, 64);

        /* ...and sig is base64 of HMAC-SHA256(validation key, sr JSON). */
        assert_int_equal(test_mac(test_hvk, json, strlen(json), mac), 0);
        sig_b64 = b64(mac, sizeof(mac));
        assert_string_equal(amp + 5, sig_b64);
        sr_b64 = b64(json, strlen(json));
        assert_int_equal(strncmp(handle + 3, sr_b64, strlen(sr_b64)), 0);

        /* A fresh nonce every time. */
        assert_int_equal(keys_handle_mint_key_pair(&signer, "device-id", &other), 0);
        assert_string_not_equal(handle, other);
}

static void test_mint_key_json(void **state)
{
        _cleanup_free_ char *handle = NULL, *json = NULL;

        assert_int_equal(keys_handle_mint_key(&signer, "aziot_identityd_master_id", &handle), 0);
        json = sr_of(handle);
        assert_true(startswith(json, "{\"key_id\":{\"Key\":\"aziot_identityd_master_id\"},"
                                     "\"nonce\":\""));
}

static void test_escaping(void **state)
{
        /* What serde_json writes for each character class. */
        static const char id[] = "a\"b\\c\nd\te\x01"
                                 "f\x1f/\x7f\xc3\xa9\b\f\r";
        static const char escaped[] = "{\"key_id\":{\"Key\":\"a\\\"b\\\\c\\nd\\te\\u0001f\\u001f/"
                                      "\x7f\xc3\xa9\\b\\f\\r\"},";
        _cleanup_(keys_handle_freep) KeysHandle *h = NULL;
        _cleanup_free_ char *handle = NULL, *json = NULL;

        assert_int_equal(keys_handle_mint_key(&signer, id, &handle), 0);
        json = sr_of(handle);
        assert_true(startswith(json, escaped));
        h = parse_ok(handle);
        assert_int_equal(h->kind, KEYS_HANDLE_KEY);
        assert_string_equal(h->id, id);

        assert_int_equal(keys_handle_mint_key(&signer, "\xff", &handle), KEYS_HANDLE_ERR_INVALID);
}

/* ---- parsing ---- */

static void test_round_trip(void **state)
{
        _cleanup_(keys_handle_freep) KeysHandle *h1 = NULL, *h2 = NULL;
        _cleanup_free_ char *kp = NULL, *k = NULL;

        assert_int_equal(keys_handle_mint_key_pair(&signer, "aziot-edged-ca", &kp), 0);
        assert_int_equal(keys_handle_mint_key(&signer, "device-id", &k), 0);
        h1 = parse_ok(kp);
        assert_int_equal(h1->kind, KEYS_HANDLE_KEY_PAIR);
        assert_string_equal(h1->id, "aziot-edged-ca");
        assert_null(h1->derivation_data);
        h2 = parse_ok(k);
        assert_int_equal(h2->kind, KEYS_HANDLE_KEY);
        assert_string_equal(h2->id, "device-id");

        assert_int_equal(keys_handle_require(h1, KEYS_HANDLE_KEY_PAIR), 0);
        assert_int_equal(keys_handle_require(h1, KEYS_HANDLE_KEY), KEYS_HANDLE_ERR_NOT_KEY);
        assert_int_equal(keys_handle_require(h2, KEYS_HANDLE_KEY_PAIR),
                         KEYS_HANDLE_ERR_NOT_KEY_PAIR);
        assert_int_equal(keys_handle_require(h2, KEYS_HANDLE_DERIVED), KEYS_HANDLE_ERR_NOT_DERIVED);
        assert_string_equal(keys_handle_error_to_string(KEYS_HANDLE_ERR_INVALID), "invalid handle");
        assert_string_equal(keys_handle_error_to_string(KEYS_HANDLE_ERR_NOT_KEY),
                            "handle is not for a key");
        assert_string_equal(keys_handle_error_to_string(KEYS_HANDLE_ERR_NOT_DERIVED),
                            "handle is not for a derived key");
        assert_null(keys_handle_error_to_string(0));
}

/* Built by hand, as upstream's daemon would have: whitespace and member order as serde_json
 * accepts them, \u escapes including a surrogate pair. */
static void test_hand_built(void **state)
{
        static const char json[] = " {\n\t\"nonce\" : \"bm9uY2U=\" ,\r\n \"key_id\" : { \"Key\" : "
                                   "\"my\\u0041key\\ud83d\\ude00\\/\" } } \n";
        _cleanup_(keys_handle_freep) KeysHandle *h = NULL;
        _cleanup_free_ char *handle = handle_for_json(json, test_hvk);

        h = parse_ok(handle);
        assert_int_equal(h->kind, KEYS_HANDLE_KEY);
        assert_string_equal(h->id, "myAkey\xf0\x9f\x98\x80/");
}

static void test_malformed_json(void **state)
{
        static const char *const bad[] = {
                "{\"key_id\":{\"Secret\":\"x\"},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Key\":\"x\"}}",
                "{\"nonce\":\"n\"}",
                "{\"key_id\":{\"Key\":\"x\"},\"nonce\":\"n\",\"extra\":1}",
                "{\"key_id\":{\"Key\":\"x\"},\"key_id\":{\"Key\":\"y\"},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Key\":\"x\"},\"nonce\":\"n\"} x",
                "{\"key_id\":{\"Key\":\"x\",\"Key\":\"y\"},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Key\":\"\\ud83d\"},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Key\":\"\\ude00\"},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Key\":\"a\\u0000b\"},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Key\":\"a\tb\"},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Key\":\"a\\xb\"},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Key\":1},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Key\":\"x\"},\"nonce\":7}",
                "{\"key_id\":\"Key\",\"nonce\":\"n\"}",
                "{\"key_id\":{\"Derived\":[\"h\",[256]]},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Derived\":[\"h\",[01]]},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Derived\":[\"h\",[1,]]},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Derived\":[\"h\",[-1]]},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Derived\":[\"h\",[1.0]]},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Derived\":[\"h\"]},\"nonce\":\"n\"}",
                "{\"key_id\":{\"Key\":\"x\"},\"nonce\":\"n\"",
                "{\"key_id\":{\"Key\":\"x\"},\"nonce\":\"n",
                "[]",
                "",
                NULL,
        };

        for (size_t i = 0; bad[i]; i++) {
                _cleanup_free_ char *handle = handle_for_json(bad[i], test_hvk);

                parse_fails(handle, KEYS_HANDLE_ERR_INVALID);
        }
}

static void test_forged(void **state)
{
        _cleanup_free_ char *handle = NULL, *forged = NULL, *other_key = NULL, *swapped = NULL;
        uint8_t other[32];
        char *sig;

        assert_int_equal(keys_handle_mint_key(&signer, "k", &handle), 0);

        /* One symbol of the signature changed. */
        forged = strdup(handle);
        sig = strstr(forged, "&sig=") + 5;
        sig[3] = sig[3] == 'A' ? 'B' : 'A';
        parse_fails(forged, KEYS_HANDLE_ERR_INVALID);

        /* The same JSON MACed with another key. */
        assert_int_equal(RAND_bytes(other, sizeof(other)), 1);
        {
                _cleanup_free_ char *json = sr_of(handle);
                other_key = handle_for_json(json, other);
        }
        parse_fails(other_key, KEYS_HANDLE_ERR_INVALID);

        /* The id changed under a valid signature. */
        {
                _cleanup_free_ char *json = sr_of(handle), *sr = NULL;

                json[strlen("{\"key_id\":{\"Key\":\"")] = 'm';
                sr = b64(json, strlen(json));
                assert_true(asprintf(&swapped, "sr=%s%s", sr, strstr(handle, "&sig=")) > 0);
        }
        parse_fails(swapped, KEYS_HANDLE_ERR_INVALID);

        /* Whatever the failure, the MAC was compared: a signer error is an internal error. */
        {
                KeysHandleSigner broken = {.mac = failing_mac};
                KeysHandle *h = NULL;

                assert_int_equal(keys_handle_parse(&broken, handle, &h), -EIO);
                assert_null(h);
        }
}

static void test_truncated_and_garbled(void **state)
{
        _cleanup_free_ char *handle = NULL, *copy = NULL, *reordered = NULL, *extra = NULL;
        size_t len;
        char *sig, *p;

        assert_int_equal(keys_handle_mint_key(&signer, "device-id", &handle), 0);
        len = strlen(handle);
        copy = malloc(len + 1);
        assert_non_null(copy);

        /* Every proper prefix is invalid. */
        for (size_t i = 0; i < len; i++) {
                memcpy(copy, handle, i);
                copy[i] = 0;
                parse_fails(copy, KEYS_HANDLE_ERR_INVALID);
        }

        /* Not standard base64: URL-safe alphabet, padding dropped, whitespace, non-canonical. */
        strcpy(copy, handle);
        sig = strstr(copy, "&sig=") + 5;
        assert_true(endswith(sig, "="));
        copy[len - 1] = 0;
        parse_fails(copy, KEYS_HANDLE_ERR_INVALID);
        strcpy(copy, handle);
        sig[0] = '-';
        parse_fails(copy, KEYS_HANDLE_ERR_INVALID);
        strcpy(copy, handle);
        sig[4] = ' ';
        parse_fails(copy, KEYS_HANDLE_ERR_INVALID);
        /* 32 bytes end in "X=" where X carries two unused bits: setting one keeps the bytes but
         * is not canonical. */
        strcpy(copy, handle);
        p = copy + len - 2;
        assert_true(*p != 'z' && *p != '9' && *p != '/' && *p != '+');
        (*p)++;
        parse_fails(copy, KEYS_HANDLE_ERR_INVALID);

        /* Parameters in the other order, and unknown parameters, are fine (as upstream). */
        assert_true(asprintf(&reordered, "%s&%.*s", strstr(handle, "&sig=") + 1,
                             (int)(strstr(handle, "&sig=") - handle), handle) > 0);
        keys_handle_free(parse_ok(reordered));
        assert_true(asprintf(&extra, "se=1&%s&x", handle) > 0);
        keys_handle_free(parse_ok(extra));

        parse_fails("", KEYS_HANDLE_ERR_INVALID);
        parse_fails("sr=&sig=", KEYS_HANDLE_ERR_INVALID);
        parse_fails(NULL, KEYS_HANDLE_ERR_INVALID);
}

/* ---- derived handles ---- */

static void test_derived(void **state)
{
        static const uint8_t data[] = {1, 2, 3, 0, 255};
        _cleanup_free_ char *base = NULL, *derived = NULL, *json = NULL, *expected = NULL,
                            *pair = NULL, *empty = NULL, *empty_json = NULL;
        _cleanup_(keys_handle_freep) KeysHandle *h = NULL, *hp = NULL, *he = NULL;

        assert_int_equal(keys_handle_mint_key(&signer, "aziot_identityd_master_id", &base), 0);
        assert_int_equal(keys_handle_mint_derived(&signer, base, data, sizeof(data), &derived), 0);

        json = sr_of(derived);
        assert_true(asprintf(&expected, "{\"key_id\":{\"Derived\":[\"%s\",[1,2,3,0,255]]},", base) >
                    0);
        assert_true(startswith(json, expected));

        h = parse_ok(derived);
        assert_int_equal(h->kind, KEYS_HANDLE_DERIVED);
        assert_int_equal(h->base_kind, KEYS_HANDLE_KEY);
        assert_string_equal(h->id, "aziot_identityd_master_id");
        assert_string_equal(h->base_handle, base);
        assert_int_equal(h->derivation_data_len, sizeof(data));
        assert_memory_equal(h->derivation_data, data, sizeof(data));
        assert_int_equal(keys_handle_require(h, KEYS_HANDLE_DERIVED), 0);
        assert_int_equal(keys_handle_require(h, KEYS_HANDLE_KEY), KEYS_HANDLE_ERR_NOT_KEY);

        /* A key pair base is accepted (every later use fails in the store). */
        assert_int_equal(keys_handle_mint_key_pair(&signer, "kp", &pair), 0);
        {
                _cleanup_free_ char *d = NULL;

                assert_int_equal(keys_handle_mint_derived(&signer, pair, data, 1, &d), 0);
                hp = parse_ok(d);
                assert_int_equal(hp->base_kind, KEYS_HANDLE_KEY_PAIR);
                assert_string_equal(hp->id, "kp");
        }

        /* Empty derivation data is "[]". */
        assert_int_equal(keys_handle_mint_derived(&signer, base, NULL, 0, &empty), 0);
        empty_json = sr_of(empty);
        assert_non_null(strstr(empty_json, "\",[]]}"));
        he = parse_ok(empty);
        assert_int_equal(he->derivation_data_len, 0);
}

static void test_derived_rejects(void **state)
{
        static const uint8_t data[] = {9};
        _cleanup_free_ char *base = NULL, *derived = NULL, *nested = NULL, *by_hand = NULL,
                            *json = NULL, *forged_base = NULL, *forged = NULL;
        KeysHandle *h = NULL;

        assert_int_equal(keys_handle_mint_key(&signer, "master", &base), 0);
        assert_int_equal(keys_handle_mint_derived(&signer, base, data, 1, &derived), 0);

        /* Minting over a derived base is refused... */
        assert_int_equal(keys_handle_mint_derived(&signer, derived, data, 1, &nested),
                         KEYS_HANDLE_ERR_NESTED_DERIVED);
        assert_null(nested);
        assert_string_equal(keys_handle_error_to_string(KEYS_HANDLE_ERR_NESTED_DERIVED),
                            "nested derived keys are not supported, import the outer derived "
                            "key first");

        /* ...and so is a validly signed one that an older version could have minted. */
        assert_true(asprintf(&json, "{\"key_id\":{\"Derived\":[\"%s\",[7]]},\"nonce\":\"n\"}",
                             derived) > 0);
        by_hand = handle_for_json(json, test_hvk);
        parse_fails(by_hand, KEYS_HANDLE_ERR_NESTED_DERIVED);

        /* A derived handle whose base does not verify. */
        forged_base = strdup(base);
        forged_base[strlen(forged_base) - 3] ^= 1;
        free(json);
        assert_true(asprintf(&json, "{\"key_id\":{\"Derived\":[\"%s\",[7]]},\"nonce\":\"n\"}",
                             forged_base) > 0);
        forged = handle_for_json(json, test_hvk);
        parse_fails(forged, KEYS_HANDLE_ERR_INVALID);
        assert_int_equal(keys_handle_mint_derived(&signer, forged_base, data, 1, &nested),
                         KEYS_HANDLE_ERR_INVALID);
        assert_int_equal(keys_handle_parse(&signer, derived, &h), 0);
        keys_handle_free(h);
}

static void test_reserved_id(void **state)
{
        _cleanup_free_ char *handle = NULL, *by_hand = NULL;

        assert_int_equal(keys_handle_mint_key(&signer, KEYS_HANDLE_VALIDATION_KEY_ID, &handle),
                         KEYS_HANDLE_ERR_RESERVED_ID);
        assert_null(handle);
        by_hand = handle_for_json(
                "{\"key_id\":{\"Key\":\"handle-validation-key\"},\"nonce\":\"n\"}", test_hvk);
        parse_fails(by_hand, KEYS_HANDLE_ERR_RESERVED_ID);
}

/* ---- the signer over the filesystem store ---- */

static void test_signer_over_store(void **state)
{
        char home[] = "/tmp/test-keys-handle-XXXXXX", cmd[64];
        const AZIOT_KEYS_FUNCTION_LIST *base = NULL;
        const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *fl;
        _cleanup_free_ char *path = NULL, *handle = NULL, *handle2 = NULL, *json = NULL,
                            *sig = NULL;
        KeysHandleAziotKeys ak;
        KeysHandleSigner s;
        uint8_t key[64], md[32], mac[32];
        KeysHandle *h = NULL;
        size_t n = 0;
        FILE *f;
        char *p;

        assert_non_null(mkdtemp(home));
        assert_int_equal(aziot_keys_get_function_list(AZIOT_KEYS_VERSION_2_1_0_0, &base), 0);
        fl = (const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *)base;
        assert_int_equal(fl->set_parameter("homedir_path", home), 0);
        ak = (KeysHandleAziotKeys){fl->create_key_if_not_exists, fl->sign};
        keys_handle_signer_from_aziot_keys(&s, &ak);

        /* The validation key is created on first use, where upstream keeps it. */
        assert_int_equal(keys_handle_mint_key(&s, "device-id", &handle), 0);
        assert_true(EVP_Q_digest(NULL, "SHA256", NULL, KEYS_HANDLE_VALIDATION_KEY_ID,
                                 strlen(KEYS_HANDLE_VALIDATION_KEY_ID), md, &n));
        path = malloc(strlen(home) + 100);
        p = path + sprintf(path, "%s/keys/handlevalidationkey-", home);
        for (int i = 0; i < 32; i++)
                p += sprintf(p, "%02x", md[i]);
        strcpy(p, ".key");
        f = fopen(path, "re");
        assert_non_null(f);
        assert_int_equal(fread(key, 1, sizeof(key), f), 32);
        fclose(f);

        /* The MAC is HMAC-SHA256 with the bytes of that file. */
        json = sr_of(handle);
        assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, 32, (uint8_t *)json,
                                  strlen(json), mac, 32, &n));
        sig = b64(mac, 32);
        assert_string_equal(strstr(handle, "&sig=") + 5, sig);
        assert_int_equal(keys_handle_parse(&s, handle, &h), 0);
        keys_handle_free(h);
        h = NULL;

        /* A lost validation key is recreated, and what it signed is no longer valid. */
        assert_int_equal(unlink(path), 0);
        assert_int_equal(keys_handle_mint_key(&s, "device-id", &handle2), 0);
        assert_int_equal(keys_handle_parse(&s, handle, &h), KEYS_HANDLE_ERR_INVALID);
        assert_int_equal(keys_handle_parse(&s, handle2, &h), 0);
        keys_handle_free(h);

        keys_store_reset();
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
        assert_int_equal(system(cmd), 0);
}

/* ---- the helpers underneath ---- */

static void test_base64(void **state)
{
        static const char *const vectors[][2] = {
                {"", ""},
                {"f", "Zg=="},
                {"fo", "Zm8="},
                {"foo", "Zm9v"},
                {"foob", "Zm9vYg=="},
                {"fooba", "Zm9vYmE="},
                {"foobar", "Zm9vYmFy"},
        };
        static const char *const bad[] = {"Zg=",      "Zg",   "Zh==",     "Zm9=", "Zm9v\n",
                                          "Z===",     "====", "Zm9v====", "Zm-v", "Zm_v",
                                          "Zg==Zg==", "=Zg=", NULL};

        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                _cleanup_free_ char *enc = b64(vectors[i][0], strlen(vectors[i][0]));
                _cleanup_free_ uint8_t *dec = NULL;
                size_t n = 99;

                assert_string_equal(enc, vectors[i][1]);
                assert_int_equal(base64_decode_alloc(enc, strlen(enc), &dec, &n), 0);
                assert_int_equal(n, strlen(vectors[i][0]));
                assert_memory_equal(dec, vectors[i][0], n);
        }
        for (size_t i = 0; bad[i]; i++) {
                uint8_t *dec = NULL;
                size_t n = 0;

                assert_int_equal(base64_decode_alloc(bad[i], strlen(bad[i]), &dec, &n), -EINVAL);
                assert_null(dec);
        }
}

static void test_utf8(void **state)
{
        assert_true(utf8_is_valid("", 0));
        assert_true(utf8_is_valid("plain", 5));
        assert_true(utf8_is_valid("\xe2\x82\xac\xf0\x9f\x98\x80", 7));
        assert_false(utf8_is_valid("\xc0\xaf", 2));         /* overlong */
        assert_false(utf8_is_valid("\xed\xa0\x80", 3));     /* surrogate */
        assert_false(utf8_is_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
        assert_false(utf8_is_valid("\xe2\x82", 2));         /* truncated */
        assert_false(utf8_is_valid("\x80", 1));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_mint_format), cmocka_unit_test(test_mint_key_json),
                cmocka_unit_test(test_escaping),    cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_hand_built),  cmocka_unit_test(test_malformed_json),
                cmocka_unit_test(test_forged),      cmocka_unit_test(test_truncated_and_garbled),
                cmocka_unit_test(test_derived),     cmocka_unit_test(test_derived_rejects),
                cmocka_unit_test(test_reserved_id), cmocka_unit_test(test_signer_over_store),
                cmocka_unit_test(test_base64),      cmocka_unit_test(test_utf8),
        };

        assert_int_equal(RAND_bytes(test_hvk, sizeof(test_hvk)), 1);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
