/* SPDX-License-Identifier: MIT */
/* Local issuance, checked with OpenSSL directly: signatures with X509_verify(), chains with an
 * X509_STORE, extensions decoded here. Keys and CSRs are made in the test. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certs-issue.h"
#include "x509-subject.h"
#include "certs-openssl.h"
#include "macro.h"

typedef struct Ext {
        const char *name; /* as in an openssl.cnf section */
        const char *value;
} Ext;

/* ---- helpers ---- */

static EVP_PKEY *key_ec(void)
{
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

        assert_non_null(k);
        return k;
}

static EVP_PKEY *key_rsa(void)
{
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);

        assert_non_null(k);
        return k;
}

static X509_EXTENSION *ext_new(const Ext *e)
{
        X509_EXTENSION *x = X509V3_EXT_conf(NULL, NULL, e->name, e->value);

        assert_non_null(x);
        return x;
}

/* A CSR for key's public key, signed by signer (the key itself unless a forgery is wanted). */
static char *make_csr(EVP_PKEY *key, EVP_PKEY *signer, const char *cn, const Ext *exts,
                      size_t n_exts)
{
        X509_REQ *req = X509_REQ_new();
        X509ExtensionStack *sk = sk_X509_EXTENSION_new_null();
        BIO *bio = BIO_new(BIO_s_mem());
        char *data = NULL, *pem;
        long len;

        assert_true(X509_REQ_set_version(req, X509_REQ_VERSION_1));
        assert_true(X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                                               (const unsigned char *)cn, -1, -1, 0));
        assert_true(X509_REQ_set_pubkey(req, key));
        for (size_t i = 0; i < n_exts; i++)
                assert_true(sk_X509_EXTENSION_push(sk, ext_new(&exts[i])));
        if (n_exts > 0)
                assert_true(X509_REQ_add_extensions(req, sk));
        assert_true(X509_REQ_sign(req, signer ?: key, EVP_sha256()) > 0);
        assert_true(PEM_write_bio_X509_REQ(bio, req));
        len = BIO_get_mem_data(bio, &data);
        pem = strndup(data, (size_t)len);
        sk_X509_EXTENSION_pop_free(sk, X509_EXTENSION_free);
        BIO_free(bio);
        X509_REQ_free(req);
        return pem;
}

static char *to_pem(X509 *x)
{
        BIO *bio = BIO_new(BIO_s_mem());
        char *data = NULL, *pem;
        long len;

        assert_true(PEM_write_bio_X509(bio, x));
        len = BIO_get_mem_data(bio, &data);
        pem = strndup(data, (size_t)len);
        BIO_free(bio);
        return pem;
}

/* A CA certificate built here without certs_issue() (and without a subjectKeyIdentifier), valid
 * from now + from_days to now + to_days. */
static char *make_ca_direct(EVP_PKEY *key, const char *cn, long from_days, long to_days)
{
        X509 *x = X509_new();
        X509_EXTENSION *bc;
        char *pem;

        assert_true(X509_set_version(x, X509_VERSION_3));
        assert_true(ASN1_INTEGER_set(X509_get_serialNumber(x), 7));
        assert_true(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                                               (const unsigned char *)cn, -1, -1, 0));
        assert_true(X509_set_issuer_name(x, X509_get_subject_name(x)));
        assert_non_null(X509_time_adj_ex(X509_getm_notBefore(x), (int)from_days, 0, NULL));
        assert_non_null(X509_time_adj_ex(X509_getm_notAfter(x), (int)to_days, 0, NULL));
        assert_true(X509_set_pubkey(x, key));
        bc = ext_new(&(Ext){"basicConstraints", "critical,CA:TRUE"});
        assert_true(X509_add_ext(x, bc, -1));
        X509_EXTENSION_free(bc);
        assert_true(X509_sign(x, key, EVP_sha256()) > 0);
        pem = to_pem(x);
        X509_free(x);
        return pem;
}

/* All certificates of a PEM string. */
static X509Stack *parse_all(const char *pem)
{
        BIO *bio = BIO_new_mem_buf(pem, -1);
        X509Stack *sk = sk_X509_new_null();
        X509 *x;

        while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
                assert_true(sk_X509_push(sk, x));
        ERR_clear_error();
        BIO_free(bio);
        assert_true(sk_X509_num(sk) > 0);
        return sk;
}

static X509 *parse_first(const char *pem)
{
        X509Stack *sk = parse_all(pem);
        X509 *x = sk_X509_shift(sk);

        sk_X509_pop_free(sk, X509_free);
        return x;
}

/* A self-signed CA made by certs_issue() itself (the local CA of spec §3.4). */
static char *make_ca(EVP_PKEY *key, const char *cn)
{
        _cleanup_free_ char *csr = make_csr(key, NULL, cn, NULL, 0);
        CertsIssueOptions o = {.ca = true, .expiry_days = 365};
        char *pem = NULL;

        assert_int_equal(certs_issue(csr, strlen(csr), NULL, 0, key, &o, &pem, NULL), 0);
        return pem;
}

static int verify_chain(X509 *leaf, X509 *root)
{
        X509_STORE *store = X509_STORE_new();
        X509_STORE_CTX *ctx = X509_STORE_CTX_new();
        int r;

        assert_true(X509_STORE_add_cert(store, root));
        assert_true(X509_STORE_CTX_init(ctx, store, leaf, NULL));
        r = X509_verify_cert(ctx) == 1 ? 0 : X509_STORE_CTX_get_error(ctx);
        X509_STORE_CTX_free(ctx);
        X509_STORE_free(store);
        return r;
}

static long validity_seconds(X509 *x)
{
        int days = 0, secs = 0;

        assert_true(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)));
        return days * 86400L + secs;
}

static void sha1_of_key(X509 *x, unsigned char out[20])
{
        const ASN1_BIT_STRING *bits = X509_get0_pubkey_bitstr(x);
        size_t n = 0;

        assert_true(EVP_Q_digest(NULL, "SHA1", NULL, bits->data, (size_t)bits->length, out, &n));
        assert_int_equal(n, 20);
}

static char *issue_ok(const char *csr, const char *chain, EVP_PKEY *key, const CertsIssueOptions *o)
{
        char *pem = NULL;
        size_t len = 0;

        assert_int_equal(
                certs_issue(csr, strlen(csr), chain, chain ? strlen(chain) : 0, key, o, &pem, &len),
                0);
        assert_int_equal(len, strlen(pem));
        return pem;
}

/* ---- tests ---- */

static void test_issue_ec_and_rsa(void **state)
{
        EVP_PKEY *(*const gens[])(void) = {key_ec, key_rsa};

        for (size_t i = 0; i < ELEMENTSOF(gens); i++)
                for (size_t j = 0; j < ELEMENTSOF(gens); j++) {
                        EVP_PKEY *ca_key = gens[i](), *key = gens[j]();
                        char *ca = make_ca(ca_key, "local CA");
                        char *csr = make_csr(key, NULL, "device", NULL, 0);
                        char *pem = issue_ok(csr, ca, ca_key, NULL);
                        X509Stack *out = parse_all(pem);
                        X509 *leaf = sk_X509_value(out, 0), *root = parse_first(ca);
                        char buf[256];

                        /* The new certificate, then the issuer chain. */
                        assert_int_equal(sk_X509_num(out), 2);
                        assert_int_equal(X509_cmp(sk_X509_value(out, 1), root), 0);
                        assert_int_equal(X509_get_version(leaf), X509_VERSION_3);
                        assert_int_equal(X509_verify(leaf, ca_key), 1);
                        assert_int_equal(verify_chain(leaf, root), 0);
                        assert_int_equal(X509_verify(root, ca_key), 1);
                        assert_true(EVP_PKEY_eq(X509_get0_pubkey(leaf), key) == 1);
                        X509_NAME_oneline(X509_get_subject_name(leaf), buf, sizeof(buf));
                        assert_string_equal(buf, "/CN=device");
                        X509_NAME_oneline(X509_get_issuer_name(leaf), buf, sizeof(buf));
                        assert_string_equal(buf, "/CN=local CA");
                        assert_int_equal(X509_get_signature_nid(leaf),
                                         i == 0 ? NID_ecdsa_with_SHA256
                                                : NID_sha256WithRSAEncryption);

                        X509_free(root);
                        sk_X509_pop_free(out, X509_free);
                        free(pem);
                        free(csr);
                        free(ca);
                        EVP_PKEY_free(key);
                        EVP_PKEY_free(ca_key);
                }
}

static void test_self_signed(void **state)
{
        EVP_PKEY *key = key_ec(), *other = key_ec();
        _cleanup_free_ char *csr = make_csr(key, NULL, "self", NULL, 0), *pem = NULL;
        X509 *x;
        AUTHORITY_KEYID *akid;
        ASN1_OCTET_STRING *ski;
        X509Stack *all;
        char buf[128];

        pem = issue_ok(csr, NULL, key, NULL);
        all = parse_all(pem);
        assert_int_equal(sk_X509_num(all), 1); /* no chain */
        sk_X509_pop_free(all, X509_free);
        x = parse_first(pem);
        assert_int_equal(X509_verify(x, key), 1);
        X509_NAME_oneline(X509_get_issuer_name(x), buf, sizeof(buf));
        assert_string_equal(buf, "/CN=self");
        akid = X509_get_ext_d2i(x, NID_authority_key_identifier, NULL, NULL);
        ski = X509_get_ext_d2i(x, NID_subject_key_identifier, NULL, NULL);
        assert_non_null(akid);
        assert_non_null(ski);
        assert_int_equal(ASN1_OCTET_STRING_cmp(akid->keyid, ski), 0);
        AUTHORITY_KEYID_free(akid);
        ASN1_OCTET_STRING_free(ski);
        X509_free(x);

        /* Self-signing with a key that is not the CSR's. */
        {
                char *bad = NULL;

                assert_int_equal(certs_issue(csr, strlen(csr), NULL, 0, other, NULL, &bad, NULL),
                                 -EINVAL);
                assert_null(bad);
        }
        EVP_PKEY_free(other);
        EVP_PKEY_free(key);
}

static void test_serials(void **state)
{
        EVP_PKEY *ca_key = key_ec(), *key = key_ec();
        _cleanup_free_ char *ca = make_ca(ca_key, "CA"), *csr = make_csr(key, NULL, "s", NULL, 0);
        BIGNUM *seen[24] = {};
        int max_bits = 0;

        for (size_t i = 0; i < ELEMENTSOF(seen); i++) {
                _cleanup_free_ char *pem = issue_ok(csr, ca, ca_key, NULL);
                X509 *x = parse_first(pem);
                const ASN1_INTEGER *serial = X509_get0_serialNumber(x);

                assert_int_equal(ASN1_STRING_type(serial), V_ASN1_INTEGER); /* not negative */
                seen[i] = ASN1_INTEGER_to_BN(serial, NULL);
                assert_false(BN_is_zero(seen[i]));
                assert_false(BN_is_negative(seen[i]));
                assert_true(BN_num_bits(seen[i]) <= 128);
                max_bits = MAX(max_bits, BN_num_bits(seen[i]));
                for (size_t j = 0; j < i; j++)
                        assert_int_not_equal(BN_cmp(seen[i], seen[j]), 0);
                X509_free(x);
        }
        /* Random 128-bit numbers: one of 24 below 100 bits is a 2^-28-to-1 event. */
        assert_true(max_bits > 100);
        for (size_t i = 0; i < ELEMENTSOF(seen); i++)
                BN_free(seen[i]);
        EVP_PKEY_free(key);
        EVP_PKEY_free(ca_key);
}

static const Ext ca_request[] = {
        {"basicConstraints", "critical,CA:TRUE,pathlen:3"},
        {"nameConstraints", "permitted;DNS:.example.com"},
        {"keyUsage", "critical,digitalSignature,keyCertSign,cRLSign"},
        {"subjectAltName", "DNS:device.example.com"},
        {"extendedKeyUsage", "serverAuth,clientAuth"},
        {"subjectKeyIdentifier", "0102030405"},
};

/* A leaf whose CSR asks to be a CA gets CA:FALSE, no nameConstraints, no keyCertSign, and keeps
 * what a leaf may ask for. */
static void test_ca_request_filtered(void **state)
{
        EVP_PKEY *ca_key = key_ec(), *key = key_ec(), *key2 = key_ec();
        _cleanup_free_ char *ca = make_ca(ca_key, "CA");
        _cleanup_free_ char *csr =
                make_csr(key, NULL, "sneaky", ca_request, ELEMENTSOF(ca_request));
        _cleanup_free_ char *pem = issue_ok(csr, ca, ca_key, NULL), *sub = NULL, *csr2 = NULL;
        X509 *leaf = parse_first(pem), *root = parse_first(ca), *grandchild;
        BASIC_CONSTRAINTS *bc;
        ASN1_BIT_STRING *ku;
        GENERAL_NAMES *san;
        EXTENDED_KEY_USAGE *eku;
        ASN1_OCTET_STRING *ski;
        unsigned char md[20];
        int crit = -1;
        X509_STORE *store = X509_STORE_new();
        X509_STORE_CTX *ctx = X509_STORE_CTX_new();
        X509Stack *untrusted = sk_X509_new_null();

        bc = X509_get_ext_d2i(leaf, NID_basic_constraints, &crit, NULL);
        assert_non_null(bc);
        assert_int_equal(bc->ca, 0);
        assert_null(bc->pathlen);
        assert_int_equal(crit, 1);
        BASIC_CONSTRAINTS_free(bc);
        assert_int_equal(X509_get_ext_by_NID(leaf, NID_name_constraints, -1), -1);
        assert_int_equal(X509_check_ca(leaf), 0);

        ku = X509_get_ext_d2i(leaf, NID_key_usage, &crit, NULL);
        assert_non_null(ku);
        assert_true(ASN1_BIT_STRING_get_bit(ku, 0));
        assert_false(ASN1_BIT_STRING_get_bit(ku, 5));
        assert_false(ASN1_BIT_STRING_get_bit(ku, 6));
        assert_int_equal(crit, 1);
        ASN1_BIT_STRING_free(ku);

        san = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
        assert_non_null(san);
        assert_int_equal(sk_GENERAL_NAME_num(san), 1);
        GENERAL_NAMES_free(san);
        eku = X509_get_ext_d2i(leaf, NID_ext_key_usage, NULL, NULL);
        assert_non_null(eku);
        assert_int_equal(sk_ASN1_OBJECT_num(eku), 2);
        EXTENDED_KEY_USAGE_free(eku);

        /* The requested SKI is replaced by the hash of the key. */
        ski = X509_get_ext_d2i(leaf, NID_subject_key_identifier, NULL, NULL);
        sha1_of_key(leaf, md);
        assert_int_equal(ski->length, 20);
        assert_memory_equal(ski->data, md, 20);
        ASN1_OCTET_STRING_free(ski);
        assert_int_equal(verify_chain(leaf, root), 0);

        /* And the leaf cannot act as a CA: a certificate it signs does not chain. */
        csr2 = make_csr(key2, NULL, "grandchild", NULL, 0);
        sub = issue_ok(csr2, pem, key, NULL);
        grandchild = parse_first(sub);
        assert_int_equal(X509_verify(grandchild, key), 1);
        assert_true(X509_STORE_add_cert(store, root));
        assert_true(sk_X509_push(untrusted, leaf));
        assert_true(X509_STORE_CTX_init(ctx, store, grandchild, untrusted));
        assert_int_not_equal(X509_verify_cert(ctx), 1);
        assert_int_equal(X509_STORE_CTX_get_error(ctx), X509_V_ERR_INVALID_CA);

        X509_STORE_CTX_free(ctx);
        X509_STORE_free(store);
        sk_X509_free(untrusted);
        X509_free(grandchild);
        X509_free(leaf);
        X509_free(root);
        EVP_PKEY_free(key2);
        EVP_PKEY_free(key);
        EVP_PKEY_free(ca_key);
}

/* The local CA certificate is a CA: it keeps the requested pathLen and nameConstraints. */
static void test_ca_issue(void **state)
{
        static const Ext leaf_ku[] = {{"keyUsage", "keyCertSign"}};
        EVP_PKEY *key = key_ec(), *leaf_key = key_ec();
        _cleanup_free_ char *csr = make_csr(key, NULL, "ca", ca_request, ELEMENTSOF(ca_request));
        _cleanup_free_ char *plain = make_ca(key, "plain"), *pem = NULL, *lcsr = NULL;
        _cleanup_free_ char *lpem = NULL;
        CertsIssueOptions o = {.ca = true};
        X509 *x, *p, *leaf;
        BASIC_CONSTRAINTS *bc;
        ASN1_BIT_STRING *ku;
        int crit = -1;

        pem = issue_ok(csr, NULL, key, &o);
        x = parse_first(pem);
        bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
        assert_true(bc->ca);
        assert_int_equal(crit, 1);
        assert_int_equal(ASN1_INTEGER_get(bc->pathlen), 3);
        BASIC_CONSTRAINTS_free(bc);
        assert_int_not_equal(X509_get_ext_by_NID(x, NID_name_constraints, -1), -1);
        assert_int_not_equal(X509_check_ca(x), 0);

        /* Without any request: CA:TRUE, digitalSignature + keyCertSign + cRLSign, critical. */
        p = parse_first(plain);
        bc = X509_get_ext_d2i(p, NID_basic_constraints, &crit, NULL);
        assert_true(bc->ca);
        assert_null(bc->pathlen);
        BASIC_CONSTRAINTS_free(bc);
        ku = X509_get_ext_d2i(p, NID_key_usage, &crit, NULL);
        assert_non_null(ku);
        assert_int_equal(crit, 1);
        assert_true(ASN1_BIT_STRING_get_bit(ku, 0));
        assert_true(ASN1_BIT_STRING_get_bit(ku, 5));
        assert_true(ASN1_BIT_STRING_get_bit(ku, 6));
        ASN1_BIT_STRING_free(ku);

        /* A leaf asking only for keyCertSign gets no keyUsage at all. */
        lcsr = make_csr(leaf_key, NULL, "leaf", leaf_ku, ELEMENTSOF(leaf_ku));
        lpem = issue_ok(lcsr, plain, key, NULL);
        leaf = parse_first(lpem);
        assert_int_equal(X509_get_ext_by_NID(leaf, NID_key_usage, -1), -1);

        X509_free(leaf);
        X509_free(p);
        X509_free(x);
        EVP_PKEY_free(leaf_key);
        EVP_PKEY_free(key);
}

static void test_validity(void **state)
{
        EVP_PKEY *ca_key = key_rsa(), *key = key_ec();
        _cleanup_free_ char *ca = make_ca_direct(ca_key, "short CA", 0, 10);
        _cleanup_free_ char *old = make_ca_direct(ca_key, "old CA", -3, -1);
        _cleanup_free_ char *csr = make_csr(key, NULL, "v", NULL, 0), *a = NULL, *b = NULL;
        _cleanup_free_ char *c = NULL, *d = NULL;
        X509 *xa, *xb, *xc, *xd, *root = parse_first(ca);
        char *out = NULL;

        a = issue_ok(csr, NULL, key, NULL);
        xa = parse_first(a);
        assert_int_equal(validity_seconds(xa), 30 * 86400L);
        assert_true(X509_cmp_current_time(X509_get0_notBefore(xa)) <= 0);

        b = issue_ok(csr, ca, ca_key, &(CertsIssueOptions){.expiry_days = 5});
        xb = parse_first(b);
        assert_int_equal(validity_seconds(xb), 5 * 86400L);

        /* 30 days asked, the issuer ends in 10: capped to the issuer's notAfter. */
        c = issue_ok(csr, ca, ca_key, NULL);
        xc = parse_first(c);
        assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(xc), X509_get0_notAfter(root)), 0);
        assert_int_equal(verify_chain(xc, root), 0);

        d = issue_ok(csr, NULL, key, &(CertsIssueOptions){.expiry_days = 3650});
        xd = parse_first(d);
        assert_int_equal(validity_seconds(xd), 3650 * 86400L);

        assert_int_equal(certs_issue(csr, strlen(csr), NULL, 0, key,
                                     &(CertsIssueOptions){.expiry_days = 1000000}, &out, NULL),
                         -EINVAL);
        assert_int_equal(certs_issue(csr, strlen(csr), old, strlen(old), ca_key, NULL, &out, NULL),
                         -EKEYEXPIRED);
        assert_null(out);

        X509_free(xa);
        X509_free(xb);
        X509_free(xc);
        X509_free(xd);
        X509_free(root);
        EVP_PKEY_free(key);
        EVP_PKEY_free(ca_key);
}

static void test_subject_override(void **state)
{
        static const SubjectField fields[] = {
                {"ST", "Antarctica"}, {"CN", "my-device"}, {"L", "AQ"}};
        EVP_PKEY *ca_key = key_ec(), *key = key_ec();
        _cleanup_free_ char *ca = make_ca(ca_key, "CA"), *csr = make_csr(key, NULL, "csr", NULL, 0);
        _cleanup_free_ char *pem = NULL, *long_cn = calloc(1, 200);
        X509_NAME *name = NULL, *cn = NULL;
        X509 *x;
        char buf[256];

        assert_int_equal(x509_subject_new(NULL, fields, ELEMENTSOF(fields), &name), 0);
        X509_NAME_oneline(name, buf, sizeof(buf));
        assert_string_equal(buf, "/CN=my-device/L=AQ/ST=Antarctica"); /* sorted by field name */

        pem = issue_ok(csr, ca, ca_key, &(CertsIssueOptions){.subject = name});
        x = parse_first(pem);
        assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), name), 0);
        X509_NAME_oneline(X509_get_issuer_name(x), buf, sizeof(buf));
        assert_string_equal(buf, "/CN=CA");
        X509_free(x);

        /* common_name: truncated to 64 characters (here two-byte ones). */
        for (int i = 0; i < 70; i++)
                strcat(long_cn, "\xc3\xa9");
        assert_int_equal(x509_subject_new(long_cn, NULL, 0, &cn), 0);
        {
                const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(cn, 0));
                unsigned char *utf8 = NULL;

                assert_int_equal(ASN1_STRING_to_UTF8(&utf8, s), 128);
                OPENSSL_free(utf8);
        }

        assert_int_equal(x509_subject_new(NULL, (SubjectField[]){{"NOPE", "x"}}, 1, &cn),
                         -EINVAL);
        assert_int_equal(x509_subject_new(NULL, NULL, 0, &cn), -EINVAL);
        assert_int_equal(x509_subject_new("a", fields, 1, &cn), -EINVAL);

        X509_NAME_free(cn);
        X509_NAME_free(name);
        EVP_PKEY_free(key);
        EVP_PKEY_free(ca_key);
}

static void test_bad_input(void **state)
{
        static const Ext twice[] = {{"subjectAltName", "DNS:a"}, {"subjectAltName", "DNS:b"}};
        EVP_PKEY *ca_key = key_ec(), *key = key_ec(), *forger = key_ec();
        _cleanup_free_ char *ca = make_ca(ca_key, "CA");
        _cleanup_free_ char *forged = make_csr(key, forger, "forged", NULL, 0);
        _cleanup_free_ char *dup = make_csr(key, NULL, "dup", twice, ELEMENTSOF(twice));
        _cleanup_free_ char *good = make_csr(key, NULL, "good", NULL, 0), *flipped = strdup(good);
        char *out = NULL;
        char *b64;

        assert_int_equal(
                certs_issue(forged, strlen(forged), ca, strlen(ca), ca_key, NULL, &out, NULL),
                -EBADMSG);
        assert_int_equal(certs_issue(dup, strlen(dup), ca, strlen(ca), ca_key, NULL, &out, NULL),
                         -EBADMSG);
        assert_int_equal(certs_issue("junk", 4, ca, strlen(ca), ca_key, NULL, &out, NULL),
                         -EBADMSG);
        assert_int_equal(certs_issue(ca, strlen(ca), ca, strlen(ca), ca_key, NULL, &out, NULL),
                         -EBADMSG);

        /* One base64 character of the body changed: the signature no longer covers it. */
        b64 = strstr(flipped, "-----\n") + 6 + 40;
        *b64 = *b64 == 'A' ? 'B' : 'A';
        assert_int_equal(
                certs_issue(flipped, strlen(flipped), ca, strlen(ca), ca_key, NULL, &out, NULL),
                -EBADMSG);

        /* An extensionRequest attribute that is not a SEQUENCE of extensions. */
        {
                X509_REQ *req = X509_REQ_new();
                BIO *bio = BIO_new(BIO_s_mem());
                char *data = NULL, *pem;
                long len;

                assert_true(X509_REQ_set_pubkey(req, key));
                assert_true(X509_REQ_add1_attr_by_NID(req, NID_ext_req, MBSTRING_ASC,
                                                      (const unsigned char *)"x", -1));
                assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
                assert_true(PEM_write_bio_X509_REQ(bio, req));
                len = BIO_get_mem_data(bio, &data);
                pem = strndup(data, (size_t)len);
                assert_int_equal(
                        certs_issue(pem, strlen(pem), ca, strlen(ca), ca_key, NULL, &out, NULL),
                        -EBADMSG);
                free(pem);
                BIO_free(bio);
                X509_REQ_free(req);
        }

        /* A bad issuer chain, a key that is not the issuer's. */
        assert_int_equal(certs_issue(good, strlen(good), "junk", 4, ca_key, NULL, &out, NULL),
                         -EINVAL);
        assert_int_equal(certs_issue(good, strlen(good), ca, strlen(ca), forger, NULL, &out, NULL),
                         -EINVAL);
        assert_int_equal(certs_issue(good, strlen(good), ca, strlen(ca), NULL, NULL, &out, NULL),
                         -EINVAL);
        assert_null(out);

        EVP_PKEY_free(forger);
        EVP_PKEY_free(key);
        EVP_PKEY_free(ca_key);
}

/* AKI = the issuer's SKI; for an issuer without one, the hash of its key; SKI = hash of the key. */
static void test_key_identifiers(void **state)
{
        EVP_PKEY *ca_key = key_ec(), *key = key_rsa();
        _cleanup_free_ char *ca = make_ca(ca_key, "CA"), *bare = make_ca_direct(ca_key, "B", 0, 9);
        _cleanup_free_ char *csr = make_csr(key, NULL, "k", NULL, 0), *a = NULL, *b = NULL;
        X509 *xa, *xb, *root = parse_first(ca), *broot = parse_first(bare);
        AUTHORITY_KEYID *akid;
        ASN1_OCTET_STRING *ski;
        unsigned char md[20];

        a = issue_ok(csr, ca, ca_key, NULL);
        xa = parse_first(a);
        ski = X509_get_ext_d2i(xa, NID_subject_key_identifier, NULL, NULL);
        sha1_of_key(xa, md);
        assert_non_null(ski);
        assert_memory_equal(ski->data, md, 20);
        ASN1_OCTET_STRING_free(ski);
        akid = X509_get_ext_d2i(xa, NID_authority_key_identifier, NULL, NULL);
        assert_non_null(akid);
        assert_int_equal(ASN1_OCTET_STRING_cmp(akid->keyid, X509_get0_subject_key_id(root)), 0);
        assert_int_equal(X509_check_akid(root, akid), X509_V_OK);
        AUTHORITY_KEYID_free(akid);

        assert_null(X509_get0_subject_key_id(broot));
        b = issue_ok(csr, bare, ca_key, NULL);
        xb = parse_first(b);
        akid = X509_get_ext_d2i(xb, NID_authority_key_identifier, NULL, NULL);
        sha1_of_key(broot, md);
        assert_int_equal(akid->keyid->length, 20);
        assert_memory_equal(akid->keyid->data, md, 20);
        AUTHORITY_KEYID_free(akid);
        assert_int_equal(verify_chain(xb, broot), 0);

        X509_free(xa);
        X509_free(xb);
        X509_free(root);
        X509_free(broot);
        EVP_PKEY_free(key);
        EVP_PKEY_free(ca_key);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_issue_ec_and_rsa), cmocka_unit_test(test_self_signed),
                cmocka_unit_test(test_serials),          cmocka_unit_test(test_ca_request_filtered),
                cmocka_unit_test(test_ca_issue),         cmocka_unit_test(test_validity),
                cmocka_unit_test(test_subject_override), cmocka_unit_test(test_bad_input),
                cmocka_unit_test(test_key_identifiers),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
