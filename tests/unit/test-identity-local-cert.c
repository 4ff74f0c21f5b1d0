/* SPDX-License-Identifier: MIT */
/* What a local identity is made of (spec §4.9): the key, the CSR identityd sends to certd, the
 * expiration it answers with, each read back with OpenSSL's own parsers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "identity-local-cert.h"
#include "macro.h"
#include "openssl-util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(EXTENDED_KEY_USAGE *, EXTENDED_KEY_USAGE_free);

static X509_REQ *csr_of(EVP_PKEY *key, const char *module_id, const char *hostname,
                        const char *domain, bool server)
{
        _cleanup_free_ char *pem = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        X509_REQ *req;

        assert_int_equal(identity_local_csr(key, module_id, hostname, domain, server, &pem), 0);
        assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE REQUEST-----"));
        bio = BIO_new_mem_buf(pem, -1);
        req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
        assert_non_null(req);
        return req;
}

static char *common_name(X509_REQ *req)
{
        char cn[256];
        int n = X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req), NID_commonName, cn,
                                          sizeof(cn));

        assert_true(n > 0);
        /* The CN is the only entry. */
        assert_int_equal(X509_NAME_entry_count(X509_REQ_get_subject_name(req)), 1);
        return strdup(cn);
}

static const X509_EXTENSION *extension(const STACK_OF(X509_EXTENSION) *exts, int nid)
{
        int i = X509v3_get_ext_by_NID(exts, nid, -1);

        assert_true(i >= 0);
        /* Once only. */
        assert_true(X509v3_get_ext_by_NID(exts, nid, i) < 0);
        return X509v3_get_ext(exts, i);
}

static void check_extensions(X509_REQ *req, bool server)
{
        STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
        const X509_EXTENSION *bc_ext, *ku_ext, *eku_ext;
        _cleanup_(BASIC_CONSTRAINTS_freep) BASIC_CONSTRAINTS *bc = NULL;
        _cleanup_(ASN1_BIT_STRING_freep) ASN1_BIT_STRING *ku = NULL;
        _cleanup_(EXTENDED_KEY_USAGE_freep) EXTENDED_KEY_USAGE *eku = NULL;

        assert_non_null(exts);
        assert_int_equal(sk_X509_EXTENSION_num(exts), 3);
        bc_ext = extension(exts, NID_basic_constraints);
        ku_ext = extension(exts, NID_key_usage);
        eku_ext = extension(exts, NID_ext_key_usage);
        assert_int_equal(X509_EXTENSION_get_critical(bc_ext), 1);
        assert_int_equal(X509_EXTENSION_get_critical(ku_ext), 1);
        assert_int_equal(X509_EXTENSION_get_critical(eku_ext), 1);

        bc = X509V3_EXT_d2i((X509_EXTENSION *)bc_ext);
        assert_non_null(bc);
        assert_false(bc->ca);
        assert_null(bc->pathlen);

        ku = X509V3_EXT_d2i((X509_EXTENSION *)ku_ext);
        assert_non_null(ku);
        /* digitalSignature (0), nonRepudiation (1), keyEncipherment (2), nothing else. */
        for (int bit = 0; bit < 9; bit++)
                assert_int_equal(ASN1_BIT_STRING_get_bit(ku, bit), bit <= 2);

        eku = X509V3_EXT_d2i((X509_EXTENSION *)eku_ext);
        assert_non_null(eku);
        assert_int_equal(sk_ASN1_OBJECT_num(eku), server ? 2 : 1);
        assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)), NID_client_auth);
        if (server)
                assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 1)), NID_server_auth);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

static void test_key(void **state)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL, *back = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        char *pem = NULL;
        size_t len = 0;

        assert_int_equal(identity_local_key_new(&key), 0);
        assert_true(EVP_PKEY_is_a(key, "RSA"));
        assert_int_equal(EVP_PKEY_get_bits(key), 2048);

        assert_int_equal(identity_local_key_pem(key, &pem, &len), 0);
        assert_int_equal(strlen(pem), len);
        /* PKCS#8, not the traditional RSA form. */
        assert_true(startswith(pem, "-----BEGIN PRIVATE KEY-----\n"));
        assert_true(endswith(pem, "-----END PRIVATE KEY-----\n"));
        bio = BIO_new_mem_buf(pem, (int)len);
        back = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        assert_non_null(back);
        assert_int_equal(EVP_PKEY_eq(key, back), 1);
        erase_and_free(pem, len);
}

static void test_csr_client(void **state)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL, *pub = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_free_ char *cn = NULL;

        assert_int_equal(identity_local_key_new(&key), 0);
        req = csr_of(key, "mod1", "my-device", "example.com", false);
        cn = common_name(req);
        assert_string_equal(cn, "mod1.my-device.example.com");
        assert_int_equal(X509_REQ_get_version(req), X509_REQ_VERSION_1);
        /* Signed by the key, with SHA-256, for that key. */
        assert_int_equal(X509_REQ_get_signature_nid(req), NID_sha256WithRSAEncryption);
        assert_int_equal(X509_REQ_verify(req, key), 1);
        pub = X509_REQ_get_pubkey(req);
        assert_int_equal(EVP_PKEY_eq(pub, key), 1);
        check_extensions(req, false);
}

static void test_csr_server(void **state)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;

        assert_int_equal(identity_local_key_new(&key), 0);
        req = csr_of(key, "web", "host", "example.org", true);
        check_extensions(req, true);
}

static void test_csr_long_cn(void **state)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL, *utf8 = NULL;
        _cleanup_free_ char *cn = NULL, *cn8 = NULL;
        char module_id[81];

        memset(module_id, 'm', sizeof(module_id) - 1);
        module_id[sizeof(module_id) - 1] = '\0';
        assert_int_equal(identity_local_key_new(&key), 0);
        req = csr_of(key, module_id, "host", "example.com", false);
        cn = common_name(req);
        assert_int_equal(strlen(cn), 64);
        assert_memory_equal(cn, module_id, 64);

        /* Characters, not bytes: 63 "m" and a two-byte "é" are 64 characters. */
        memcpy(module_id + 63, "\xc3\xa9.", 4);
        utf8 = csr_of(key, module_id, "h", "d", false);
        cn8 = common_name(utf8);
        assert_int_equal(strlen(cn8), 65);
        assert_string_equal(cn8 + 63, "\xc3\xa9");
}

/* A self-signed certificate valid until not_after (ASN.1 time text). */
static char *cert_until(EVP_PKEY *key, const char *not_after)
{
        _cleanup_(X509_freep) X509 *x = X509_new();
        _cleanup_(BIO_freep) BIO *bio = BIO_new(BIO_s_mem());
        char *data, *pem;
        long len;

        assert_non_null(x);
        assert_true(X509_set_version(x, X509_VERSION_3));
        assert_true(ASN1_INTEGER_set(X509_get_serialNumber(x), 1));
        assert_true(X509_gmtime_adj(X509_getm_notBefore(x), 0) != NULL);
        assert_true(ASN1_TIME_set_string(X509_getm_notAfter(x), not_after));
        assert_true(X509_set_pubkey(x, key));
        assert_true(X509_sign(x, key, EVP_sha256()) > 0);
        assert_true(PEM_write_bio_X509(bio, x));
        len = BIO_get_mem_data(bio, &data);
        pem = strndup(data, (size_t)len);
        assert_non_null(pem);
        return pem;
}

static void test_expiration(void **state)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_free_ char *utc = NULL, *generalized = NULL, *chain = NULL;
        char out[IDENTITY_EXPIRATION_MAX];

        assert_int_equal(identity_local_key_new(&key), 0);
        utc = cert_until(key, "250101000000Z");
        assert_int_equal(identity_cert_expiration(utc, out), 0);
        assert_string_equal(out, "2025-01-01T00:00:00+00:00");

        generalized = cert_until(key, "20510203040506Z");
        assert_int_equal(identity_cert_expiration(generalized, out), 0);
        assert_string_equal(out, "2051-02-03T04:05:06+00:00");

        /* A chain: the leaf's, which comes first. */
        assert_true(asprintf(&chain, "%s%s", generalized, utc) > 0);
        assert_int_equal(identity_cert_expiration(chain, out), 0);
        assert_string_equal(out, "2051-02-03T04:05:06+00:00");

        assert_int_equal(identity_cert_expiration("", out), -EBADMSG);
        assert_int_equal(identity_cert_expiration("-----BEGIN CERTIFICATE-----\nAAAA\n"
                                                  "-----END CERTIFICATE-----\n",
                                                  out),
                         -EBADMSG);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_key),
                cmocka_unit_test(test_csr_client),
                cmocka_unit_test(test_csr_server),
                cmocka_unit_test(test_csr_long_cn),
                cmocka_unit_test(test_expiration),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
