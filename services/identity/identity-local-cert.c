/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "identity-local-cert.h"
#include "log.h"
#include "macro.h"
#include "openssl-util.h"
#include "x509-subject.h"

#define LOCAL_KEY_BITS 2048u

static void sk_X509_EXTENSION_free_all(STACK_OF(X509_EXTENSION) *s)
{
        sk_X509_EXTENSION_pop_free(s, X509_EXTENSION_free);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(STACK_OF(X509_EXTENSION) *, sk_X509_EXTENSION_free_all);

int identity_local_key_new(EVP_PKEY **ret)
{
        EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)LOCAL_KEY_BITS);

        if (!key)
                return log_openssl_error("Generating an RSA-2048 key");
        *ret = key;
        return 0;
}

static int push_extension(STACK_OF(X509_EXTENSION) *exts, int nid, const char *value)
{
        X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, NULL, nid, value);

        if (!ext)
                return log_openssl_error("Making a CSR extension");
        if (!sk_X509_EXTENSION_push(exts, ext)) {
                X509_EXTENSION_free(ext);
                return -ENOMEM;
        }
        return 0;
}

static int csr_extensions(X509_REQ *req, bool server)
{
        _cleanup_(sk_X509_EXTENSION_free_allp) STACK_OF(X509_EXTENSION) *exts =
                sk_X509_EXTENSION_new_null();
        int r;

        if (!exts)
                return -ENOMEM;
        r = push_extension(exts, NID_basic_constraints, "critical,CA:FALSE");
        if (r >= 0)
                r = push_extension(exts, NID_key_usage,
                                   "critical,digitalSignature,nonRepudiation,keyEncipherment");
        /* clientAuth always, even for servers: EST renewal needs it (as upstream). */
        if (r >= 0)
                r = push_extension(exts, NID_ext_key_usage,
                                   server ? "critical,clientAuth,serverAuth"
                                          : "critical,clientAuth");
        if (r < 0)
                return r;
        if (!X509_REQ_add_extensions(req, exts))
                return log_openssl_error("Adding the CSR extensions");
        return 0;
}

/* The contents of a memory BIO as a new string. */
static int bio_to_string(BIO *bio, char **ret, size_t *ret_len)
{
        char *data = NULL;
        long len = BIO_get_mem_data(bio, &data);
        char *s;

        if (len <= 0)
                return -EIO;
        s = malloc((size_t)len + 1);
        if (!s)
                return -ENOMEM;
        memcpy(s, data, (size_t)len);
        s[len] = '\0';
        *ret = s;
        if (ret_len)
                *ret_len = (size_t)len;
        return 0;
}

int identity_local_csr(EVP_PKEY *key, const char *module_id, const char *hostname,
                       const char *domain, bool server, char **ret)
{
        _cleanup_(X509_NAME_freep) X509_NAME *subject = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = X509_REQ_new();
        _cleanup_(BIO_freep) BIO *bio = BIO_new(BIO_s_mem());
        _cleanup_free_ char *cn = NULL;
        int r;

        if (!req || !bio || asprintf(&cn, "%s.%s.%s", module_id, hostname, domain) < 0)
                return -ENOMEM;
        r = x509_subject_new(cn, NULL, 0, &subject);
        if (r < 0)
                return r;
        if (!X509_REQ_set_version(req, X509_REQ_VERSION_1) ||
            !X509_REQ_set_subject_name(req, subject) || !X509_REQ_set_pubkey(req, key))
                return log_openssl_error("Making the CSR");
        r = csr_extensions(req, server);
        if (r < 0)
                return r;
        if (X509_REQ_sign(req, key, EVP_sha256()) <= 0)
                return log_openssl_error("Signing the CSR");
        if (!PEM_write_bio_X509_REQ(bio, req))
                return log_openssl_error("Writing the CSR");
        return bio_to_string(bio, ret, NULL);
}

int identity_local_key_pem(EVP_PKEY *key, char **ret, size_t *ret_len)
{
        /* A secure-memory BIO is wiped when it is freed. */
        _cleanup_(BIO_freep) BIO *bio = BIO_new(BIO_s_secmem());

        if (!bio)
                return -ENOMEM;
        if (!PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL))
                return log_openssl_error("Writing the private key");
        return bio_to_string(bio, ret, ret_len);
}

int identity_cert_expiration(const char *pem, char ret[static IDENTITY_EXPIRATION_MAX])
{
        _cleanup_(BIO_freep) BIO *bio = BIO_new_mem_buf(pem, -1);
        _cleanup_(X509_freep) X509 *x = NULL;
        struct tm tm = {};

        if (!bio)
                return -ENOMEM;
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (!x) {
                ERR_clear_error();
                return -EBADMSG;
        }
        if (!ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm)) {
                ERR_clear_error();
                return -EBADMSG;
        }
        if (strftime(ret, IDENTITY_EXPIRATION_MAX, "%Y-%m-%dT%H:%M:%S+00:00", &tm) == 0)
                return -EINVAL;
        return 0;
}
