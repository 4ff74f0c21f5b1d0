/* SPDX-License-Identifier: MIT */
/* What certd's EST client sends and accepts (cloud-protocols.md §5), checked with certificates and
 * PKCS#7 structures made here with OpenSSL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>

#include "base64.h"
#include "certs-est-wire.h"
#include "macro.h"
#include "openssl-util.h"

static X509 *make_cert(EVP_PKEY *key, const char *cn)
{
        X509 *x = X509_new();
        X509_NAME *name = X509_NAME_new();

        assert_non_null(x);
        assert_true(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                               (const unsigned char *)cn, -1, -1, 0));
        assert_true(X509_set_version(x, X509_VERSION_3));
        assert_true(ASN1_INTEGER_set(X509_get_serialNumber(x), 7));
        assert_true(X509_set_subject_name(x, name));
        assert_true(X509_set_issuer_name(x, name));
        assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
        assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
        assert_true(X509_set_pubkey(x, key));
        assert_true(X509_sign(x, key, EVP_sha256()) > 0);
        X509_NAME_free(name);
        return x;
}

/* A certs-only SignedData (RFC 7030 §4.1.3) of n certificates, as DER. */
static size_t certs_only(X509 **certs, int n, unsigned char **ret)
{
        PKCS7 *p7 = PKCS7_new();
        int len;

        assert_true(PKCS7_set_type(p7, NID_pkcs7_signed));
        assert_true(PKCS7_content_new(p7, NID_pkcs7_data));
        for (int i = 0; i < n; i++)
                assert_true(PKCS7_add_certificate(p7, certs[i]));
        *ret = NULL;
        len = i2d_PKCS7(p7, ret);
        assert_true(len > 0);
        PKCS7_free(p7);
        return (size_t)len;
}

typedef struct Fixture {
        EVP_PKEY *key;
        X509 *a, *b;
        unsigned char *der;
        size_t der_len;
        char *b64;
} Fixture;

static int setup(void **state)
{
        Fixture *f = calloc(1, sizeof(*f));
        X509 *both[2];

        f->key = EVP_EC_gen("P-256");
        assert_non_null(f->key);
        f->a = make_cert(f->key, "leaf");
        f->b = make_cert(f->key, "ca");
        both[0] = f->a;
        both[1] = f->b;
        f->der_len = certs_only(both, 2, &f->der);
        f->b64 = base64_encode_alloc(f->der, f->der_len);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        Fixture *f = *state;

        EVP_PKEY_free(f->key);
        X509_free(f->a);
        X509_free(f->b);
        OPENSSL_free(f->der);
        free(f->b64);
        free(f);
        return 0;
}

static int parse(const char *ct, const void *body, size_t len, X509Stack **certs,
                 const char **problem)
{
        return certs_est_parse_response(ct, body, len, certs, problem);
}

static void assert_two_certs(Fixture *f, const char *ct, const char *body)
{
        _cleanup_(sk_X509_pop_freep) X509Stack *certs = NULL;
        const char *problem = NULL;

        assert_int_equal(parse(ct, body, strlen(body), &certs, &problem), 0);
        assert_null(problem);
        assert_int_equal(sk_X509_num(certs), 2);
        assert_int_equal(X509_cmp(sk_X509_value(certs, 0), f->a), 0);
        assert_int_equal(X509_cmp(sk_X509_value(certs, 1), f->b), 0);
}

static void test_base64_forms(void **state)
{
        Fixture *f = *state;
        char *wrapped = malloc(strlen(f->b64) * 2 + 8);
        size_t n = 0;

        /* One line, then lines of 76 with CRLF, then stray spaces and tabs. */
        assert_two_certs(f, "application/pkcs7-mime", f->b64);
        for (size_t i = 0; f->b64[i]; i++) {
                wrapped[n++] = f->b64[i];
                if (i % 76 == 75) {
                        wrapped[n++] = '\r';
                        wrapped[n++] = '\n';
                }
        }
        wrapped[n++] = '\n';
        wrapped[n] = '\0';
        assert_two_certs(f, "application/pkcs7-mime; smime-type=certs-only", wrapped);
        n = 0;
        for (size_t i = 0; f->b64[i]; i++) {
                wrapped[n++] = f->b64[i];
                if (i % 5 == 0)
                        wrapped[n++] = i % 2 ? ' ' : '\t';
        }
        wrapped[n] = '\0';
        assert_two_certs(f, "Application/PKCS7-MIME;smime-type=certs-only", wrapped);
        free(wrapped);
}

static void test_pem_form(void **state)
{
        Fixture *f = *state;
        BIO *bio = BIO_new(BIO_s_mem());
        PKCS7 *p7;
        const unsigned char *p = f->der;
        char *pem = NULL;
        long len;

        p7 = d2i_PKCS7(NULL, &p, (long)f->der_len);
        assert_non_null(p7);
        assert_true(PEM_write_bio_PKCS7(bio, p7));
        assert_int_equal(BIO_write(bio, "", 1), 1);
        len = BIO_get_mem_data(bio, &pem);
        assert_true(len > 0);
        assert_two_certs(f, "application/pkcs7-mime", pem);
        PKCS7_free(p7);
        BIO_free(bio);
}

static void test_refused(void **state)
{
        Fixture *f = *state;
        _cleanup_(sk_X509_pop_freep) X509Stack *certs = NULL;
        const char *problem = NULL;
        char *junk;

        /* Content-Type: missing, another type, a longer name that only starts alike. */
        assert_int_equal(parse(NULL, f->b64, strlen(f->b64), &certs, &problem), -EBADMSG);
        assert_string_equal(problem, "the response has no Content-Type");
        assert_int_equal(parse("text/plain", f->b64, strlen(f->b64), &certs, &problem), -EBADMSG);
        assert_string_equal(problem, "the response is not application/pkcs7-mime");
        assert_int_equal(parse("application/pkcs7-mimex", f->b64, strlen(f->b64), &certs,
                               &problem),
                         -EBADMSG);
        assert_int_equal(parse("application/pkcs10", f->b64, strlen(f->b64), &certs, &problem),
                         -EBADMSG);

        /* Not base64, empty, base64 of something else, DER with bytes after it. */
        assert_int_equal(parse("application/pkcs7-mime", "@@@@", 4, &certs, &problem), -EBADMSG);
        assert_string_equal(problem, "the response is neither PEM nor base64");
        assert_int_equal(parse("application/pkcs7-mime", "", 0, &certs, &problem), -EBADMSG);
        assert_int_equal(parse("application/pkcs7-mime", " \n", 2, &certs, &problem), -EBADMSG);
        assert_int_equal(parse("application/pkcs7-mime", "aGVsbG8=", 8, &certs, &problem),
                         -EBADMSG);
        assert_string_equal(problem, "the response is not a PKCS#7 structure");
        junk = malloc(f->der_len + 3);
        memcpy(junk, f->der, f->der_len);
        memcpy(junk + f->der_len, "xyz", 3);
        {
                _cleanup_free_ char *b64 = base64_encode_alloc(junk, f->der_len + 3);

                assert_int_equal(parse("application/pkcs7-mime", b64, strlen(b64), &certs,
                                       &problem),
                                 -EBADMSG);
        }
        free(junk);
        assert_null(certs);
}

static void test_not_signed_data_and_empty(void **state)
{
        _cleanup_(sk_X509_pop_freep) X509Stack *certs = NULL;
        const char *problem = NULL;
        PKCS7 *p7 = PKCS7_new();
        unsigned char *der = NULL;
        char *b64;
        int len;

        /* A PKCS#7 "data", not SignedData. */
        assert_true(PKCS7_set_type(p7, NID_pkcs7_data));
        len = i2d_PKCS7(p7, &der);
        assert_true(len > 0);
        b64 = base64_encode_alloc(der, (size_t)len);
        assert_int_equal(parse("application/pkcs7-mime", b64, strlen(b64), &certs, &problem),
                         -EBADMSG);
        assert_string_equal(problem, "the response is not a PKCS#7 SignedData");
        free(b64);
        OPENSSL_free(der);
        PKCS7_free(p7);

        /* SignedData without certificates: no certificates, no error (the caller decides). */
        len = (int)certs_only(NULL, 0, &der);
        b64 = base64_encode_alloc(der, (size_t)len);
        assert_int_equal(parse("application/pkcs7-mime", b64, strlen(b64), &certs, &problem), 0);
        assert_int_equal(sk_X509_num(certs), 0);
        free(b64);
        OPENSSL_free(der);
}

static void test_csr_body_and_identity_csr(void **state)
{
        Fixture *f = *state;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL, *back = NULL;
        _cleanup_free_ char *body = NULL;
        _cleanup_free_ uint8_t *der = NULL;
        _cleanup_free_ char *joined = NULL;
        STACK_OF(X509_EXTENSION) *exts;
        EXTENDED_KEY_USAGE *eku;
        const unsigned char *p;
        size_t len = 0, der_len = 0, n = 0, line = 0;

        assert_int_equal(certs_est_identity_csr(X509_get_subject_name(f->a), f->key, &req), 0);
        assert_int_equal(X509_REQ_get_version(req), X509_REQ_VERSION_1);
        assert_int_equal(X509_NAME_cmp(X509_REQ_get_subject_name(req),
                                       X509_get_subject_name(f->a)),
                         0);
        assert_int_equal(X509_REQ_verify(req, f->key), 1);
        assert_int_equal(X509_REQ_get_signature_nid(req), NID_ecdsa_with_SHA256);
        exts = X509_REQ_get_extensions(req);
        assert_int_equal(sk_X509_EXTENSION_num(exts), 1);
        eku = X509V3_EXT_d2i(sk_X509_EXTENSION_value(exts, 0));
        assert_non_null(eku);
        assert_int_equal(sk_ASN1_OBJECT_num(eku), 1);
        assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)), NID_client_auth);
        EXTENDED_KEY_USAGE_free(eku);
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);

        /* 64 characters a line, every line ending in "\n", the last one too. */
        assert_int_equal(certs_est_csr_body(req, &body, &len), 0);
        assert_int_equal(strlen(body), len);
        assert_true(len > 65);
        assert_int_equal(body[len - 1], '\n');
        joined = malloc(len);
        for (size_t i = 0; i < len; i++) {
                if (body[i] == '\n') {
                        assert_true(line == 64 || i == len - 1);
                        assert_true(line > 0);
                        line = 0;
                        continue;
                }
                joined[n++] = body[i];
                line++;
        }
        assert_int_equal(base64_decode_alloc(joined, n, &der, &der_len), 0);
        p = der;
        back = d2i_X509_REQ(NULL, &p, (long)der_len);
        assert_non_null(back);
        assert_int_equal(X509_REQ_verify(back, f->key), 1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_base64_forms),
                cmocka_unit_test(test_pem_form),
                cmocka_unit_test(test_refused),
                cmocka_unit_test(test_not_signed_data_and_empty),
                cmocka_unit_test(test_csr_body_and_identity_csr),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
