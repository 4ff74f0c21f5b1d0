/* SPDX-License-Identifier: MIT */
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "certs-issue.h"
#include "certs-openssl.h"
#include "certs-store.h"
#include "log.h"

/* keyUsage bits (RFC 5280 §4.2.1.3). */
#define KU_BIT_DIGITAL_SIGNATURE 0
#define KU_BIT_KEY_CERT_SIGN 5
#define KU_BIT_CRL_SIGN 6

static int csr_parse(const char *pem, size_t len, X509_REQ **ret)
{
        _cleanup_(BIO_freep) BIO *bio = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        EVP_PKEY *pub;

        if (!pem || len == 0 || len > INT_MAX)
                return -EBADMSG;
        bio = BIO_new_mem_buf(pem, (int)len);
        if (!bio)
                return -ENOMEM;
        req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
        pub = req ? X509_REQ_get0_pubkey(req) : NULL;
        if (!pub) {
                ERR_clear_error();
                return log_debug_errno(EBADMSG, "The CSR is not a PEM certificate request.");
        }
        if (X509_REQ_verify(req, pub) != 1) {
                ERR_clear_error();
                return log_debug_errno(EBADMSG, "The CSR's signature does not verify.");
        }
        *ret = TAKE_PTR(req);
        return 0;
}

static int chain_parse(const char *pem, size_t len, X509Stack **ret)
{
        _cleanup_(sk_X509_pop_freep) X509Stack *chain = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        int n;

        n = certs_pem_check(pem, len);
        if (n < 0)
                return log_debug_errno(EINVAL, "The issuer chain is not PEM certificates.");
        bio = BIO_new_mem_buf(pem, (int)len);
        chain = sk_X509_new_null();
        if (!bio || !chain)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);

                if (!x)
                        return log_openssl_error("Reading the issuer chain");
                if (!sk_X509_push(chain, x)) {
                        X509_free(x);
                        return -ENOMEM;
                }
        }
        *ret = TAKE_PTR(chain);
        return 0;
}

static int serial_set(X509 *x)
{
        _cleanup_(BN_freep) BIGNUM *bn = NULL;
        unsigned char buf[CERTS_ISSUE_SERIAL_BYTES];

        /* Unsigned big-endian bytes: always positive; zero (2^-128) is drawn again. */
        do {
                if (RAND_bytes(buf, sizeof(buf)) != 1)
                        return log_openssl_error("Drawing a serial number");
                BN_free(bn);
                bn = BN_bin2bn(buf, sizeof(buf), NULL);
                if (!bn)
                        return -ENOMEM;
        } while (BN_is_zero(bn));

        if (!BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
                return log_openssl_error("Setting the serial number");
        return 0;
}

static int validity_set(X509 *x, unsigned days, const X509 *issuer)
{
        if (issuer && X509_cmp_current_time(X509_get0_notAfter(issuer)) <= 0)
                return log_debug_errno(EKEYEXPIRED, "The issuer certificate has expired.");

        if (!X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
            !X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL))
                return log_openssl_error("Setting the validity");

        if (issuer && ASN1_TIME_compare(X509_get0_notAfter(issuer), X509_get0_notAfter(x)) < 0 &&
            !X509_set1_notAfter(x, X509_get0_notAfter(issuer)))
                return log_openssl_error("Capping the validity");
        return 0;
}

/* RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING. */
static int key_id_of(const X509 *x, ASN1_OCTET_STRING **ret)
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        ASN1_OCTET_STRING *oct;

        if (!X509_pubkey_digest(x, EVP_sha1(), md, &md_len))
                return log_openssl_error("Hashing the public key");
        oct = ASN1_OCTET_STRING_new();
        if (!oct || !ASN1_OCTET_STRING_set(oct, md, (int)md_len)) {
                ASN1_OCTET_STRING_free(oct);
                return -ENOMEM;
        }
        *ret = oct;
        return 0;
}

/* issuer NULL: self-signed, AKI = SKI. */
static int key_ids_set(X509 *x, X509 *issuer)
{
        _cleanup_(ASN1_OCTET_STRING_freep) ASN1_OCTET_STRING *ski = NULL;
        _cleanup_(AUTHORITY_KEYID_freep) AUTHORITY_KEYID *akid = NULL;
        const ASN1_OCTET_STRING *issuer_ski;
        int r;

        r = key_id_of(x, &ski);
        if (r < 0)
                return r;
        if (X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, /* crit= */ 0,
                              X509V3_ADD_REPLACE) != 1)
                return log_openssl_error("Adding the subject key identifier");

        akid = AUTHORITY_KEYID_new();
        if (!akid)
                return -ENOMEM;
        issuer_ski = issuer ? X509_get0_subject_key_id(issuer) : ski;
        if (issuer_ski)
                akid->keyid = ASN1_OCTET_STRING_dup(issuer_ski);
        else
                r = key_id_of(issuer, &akid->keyid);
        if (r < 0)
                return r;
        if (!akid->keyid)
                return -ENOMEM;
        if (X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, /* crit= */ 0,
                              X509V3_ADD_REPLACE) != 1)
                return log_openssl_error("Adding the authority key identifier");
        return 0;
}

/* keyUsage: the CSR's (requested may be NULL) with the CA bits set or cleared. */
static int key_usage_add(X509 *x, const X509_EXTENSION *requested, bool ca)
{
        _cleanup_(ASN1_BIT_STRING_freep) ASN1_BIT_STRING *ku = NULL;
        int critical = 1;
        bool any = false;

        if (requested) {
                ku = X509V3_EXT_d2i((X509_EXTENSION *)requested);
                if (!ku) {
                        ERR_clear_error();
                        return log_debug_errno(EBADMSG, "The CSR's keyUsage does not parse.");
                }
                critical = X509_EXTENSION_get_critical(requested);
        } else {
                if (!ca)
                        return 0;
                ku = ASN1_BIT_STRING_new();
                if (!ku || !ASN1_BIT_STRING_set_bit(ku, KU_BIT_DIGITAL_SIGNATURE, 1))
                        return -ENOMEM;
        }
        if (!ASN1_BIT_STRING_set_bit(ku, KU_BIT_KEY_CERT_SIGN, ca) ||
            !ASN1_BIT_STRING_set_bit(ku, KU_BIT_CRL_SIGN, ca))
                return -ENOMEM;

        for (int i = 0; i < 9; i++)
                any = any || ASN1_BIT_STRING_get_bit(ku, i);
        if (!any)
                return 0;
        if (X509_add1_ext_i2d(x, NID_key_usage, ku, critical, X509V3_ADD_DEFAULT) != 1)
                return log_openssl_error("Adding keyUsage");
        return 0;
}

static int basic_constraints_add(X509 *x, const X509_EXTENSION *requested, bool ca)
{
        _cleanup_(BASIC_CONSTRAINTS_freep) BASIC_CONSTRAINTS *bc = NULL;

        if (ca && requested) {
                bc = X509V3_EXT_d2i((X509_EXTENSION *)requested);
                if (!bc) {
                        ERR_clear_error();
                        return log_debug_errno(EBADMSG,
                                               "The CSR's basicConstraints does not parse.");
                }
                /* Only the pathLen of a CA request is kept. */
                if (!bc->ca) {
                        ASN1_INTEGER_free(bc->pathlen);
                        bc->pathlen = NULL;
                }
        } else {
                bc = BASIC_CONSTRAINTS_new();
                if (!bc)
                        return -ENOMEM;
        }
        bc->ca = ca ? 0xff : 0;
        if (X509_add1_ext_i2d(x, NID_basic_constraints, bc, /* crit= */ 1, X509V3_ADD_DEFAULT) != 1)
                return log_openssl_error("Adding basicConstraints");
        return 0;
}

static int extensions_copy(X509 *x, const X509_REQ *req, bool ca)
{
        _cleanup_(sk_X509_EXTENSION_pop_freep) X509ExtensionStack *exts = NULL;
        const X509_EXTENSION *bc = NULL, *ku = NULL;
        int n, r;

        /* NULL is both "none" and "does not parse": tell them apart by the attribute. */
        exts = X509_REQ_get_extensions((X509_REQ *)req);
        ERR_clear_error();
        if (!exts && (X509_REQ_get_attr_by_NID(req, NID_ext_req, -1) >= 0 ||
                      X509_REQ_get_attr_by_NID(req, NID_ms_ext_req, -1) >= 0))
                return log_debug_errno(EBADMSG, "The CSR's extensions do not parse.");
        n = exts ? sk_X509_EXTENSION_num(exts) : 0;

        for (int i = 0; i < n; i++) {
                X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);
                const ASN1_OBJECT *obj = X509_EXTENSION_get_object(ext);

                for (int j = 0; j < i; j++)
                        if (OBJ_cmp(obj, X509_EXTENSION_get_object(
                                                 sk_X509_EXTENSION_value(exts, j))) == 0)
                                return log_debug_errno(EBADMSG, "The CSR repeats an extension.");

                switch (OBJ_obj2nid(obj)) {
                case NID_subject_key_identifier:
                case NID_authority_key_identifier:
                        break; /* computed */
                case NID_basic_constraints:
                        bc = ext;
                        break;
                case NID_key_usage:
                        ku = ext;
                        break;
                case NID_name_constraints:
                        if (ca && !X509_add_ext(x, ext, -1))
                                return log_openssl_error("Copying nameConstraints");
                        break;
                default:
                        if (!X509_add_ext(x, ext, -1))
                                return log_openssl_error("Copying a CSR extension");
                }
        }

        r = basic_constraints_add(x, bc, ca);
        if (r < 0)
                return r;
        return key_usage_add(x, ku, ca);
}

static int pem_append(BIO *bio, X509 *x)
{
        if (!PEM_write_bio_X509(bio, x))
                return log_openssl_error("Encoding a certificate");
        return 0;
}

static int output_pem(X509 *x, X509Stack *chain, char **ret_pem, size_t *ret_len)
{
        _cleanup_(BIO_freep) BIO *bio = BIO_new(BIO_s_mem());
        char *data = NULL, *copy;
        long len;
        int r;

        if (!bio)
                return -ENOMEM;
        r = pem_append(bio, x);
        for (int i = 0; r >= 0 && chain && i < sk_X509_num(chain); i++)
                r = pem_append(bio, sk_X509_value(chain, i));
        if (r < 0)
                return r;
        len = BIO_get_mem_data(bio, &data);
        if (len <= 0)
                return -EIO;
        copy = strndup(data, (size_t)len);
        if (!copy)
                return -ENOMEM;
        *ret_pem = copy;
        if (ret_len)
                *ret_len = (size_t)len;
        return 0;
}

int certs_issue(const char *csr_pem, size_t csr_len, const char *issuer_chain_pem,
                size_t issuer_len, EVP_PKEY *issuer_key, const CertsIssueOptions *opts,
                char **ret_pem, size_t *ret_len)
{
        static const CertsIssueOptions defaults = {};
        _cleanup_(sk_X509_pop_freep) X509Stack *chain = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_(X509_freep) X509 *x = NULL;
        const X509_NAME *subject;
        X509 *issuer = NULL;
        unsigned days;
        int r;

        if (!opts)
                opts = &defaults;
        days = opts->expiry_days ?: CERTS_ISSUE_DEFAULT_EXPIRY_DAYS;
        if (!issuer_key || !ret_pem || days > CERTS_ISSUE_EXPIRY_DAYS_MAX ||
            (!issuer_chain_pem && issuer_len > 0))
                return -EINVAL;

        r = csr_parse(csr_pem, csr_len, &req);
        if (r < 0)
                return r;
        if (issuer_chain_pem) {
                r = chain_parse(issuer_chain_pem, issuer_len, &chain);
                if (r < 0)
                        return r;
                issuer = sk_X509_value(chain, 0);
        }
        subject = opts->subject ?: X509_REQ_get_subject_name(req);

        x = X509_new();
        if (!x)
                return -ENOMEM;
        if (!X509_set_version(x, X509_VERSION_3) || !X509_set_subject_name(x, subject) ||
            !X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subject) ||
            !X509_set_pubkey(x, X509_REQ_get0_pubkey(req)))
                return log_openssl_error("Building the certificate");

        r = serial_set(x);
        if (r >= 0)
                r = validity_set(x, days, issuer);
        if (r >= 0)
                r = extensions_copy(x, req, opts->ca);
        if (r >= 0)
                r = key_ids_set(x, issuer);
        if (r < 0)
                return r;

        if (X509_sign(x, issuer_key, EVP_sha256()) <= 0)
                return log_openssl_error("Signing the certificate");
        /* The key may live in keyd and cannot be compared: check what it signed instead. */
        if (X509_verify(x, issuer ? X509_get0_pubkey(issuer) : X509_REQ_get0_pubkey(req)) != 1) {
                ERR_clear_error();
                return log_debug_errno(EINVAL, "The issuer key does not belong to the %s.",
                                       issuer ? "issuer certificate" : "CSR");
        }

        return output_pem(x, chain, ret_pem, ret_len);
}
