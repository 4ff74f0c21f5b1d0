/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>

#include "base64.h"
#include "certs-est-wire.h"
#include "log.h"
#include "macro.h"
#include "openssl-util.h"

#define CT_PKCS7 "application/pkcs7-mime"
#define CSR_LINE 64u

static void PKCS7_freep(PKCS7 **p)
{
        PKCS7_free(*p);
}
static bool content_type_ok(const char *ct)
{
        size_t n = STRLEN(CT_PKCS7);

        if (!ct || strncasecmp(ct, CT_PKCS7, n) != 0)
                return false;
        ct += n;
        while (*ct == ' ' || *ct == '\t')
                ct++;
        return *ct == '\0' || *ct == ';';
}

/* Base64 with any whitespace: decoded strictly once the whitespace is gone. */
static int decode_base64_loose(const uint8_t *body, size_t len, uint8_t **ret, size_t *ret_len)
{
        _cleanup_free_ char *text = malloc(len + 1);
        size_t n = 0;
        int r;

        if (!text)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++)
                if (!isspace(body[i]))
                        text[n++] = (char)body[i];
        text[n] = '\0';
        if (n == 0)
                return -EBADMSG;
        r = base64_decode_alloc(text, n, ret, ret_len);
        if (r == -ENOMEM)
                return r;
        return r < 0 ? -EBADMSG : 0;
}

int certs_est_parse_response(const char *content_type, const uint8_t *body, size_t len,
                             X509Stack **ret, const char **ret_problem)
{
        _cleanup_(PKCS7_freep) PKCS7 *p7 = NULL;
        _cleanup_(sk_X509_pop_freep) X509Stack *certs = NULL;
        _cleanup_free_ uint8_t *der = NULL;
        const unsigned char *p;
        STACK_OF(X509) *in;
        size_t der_len = 0;
        int r;

        *ret_problem = NULL;
        if (!content_type) {
                *ret_problem = "the response has no Content-Type";
                return -EBADMSG;
        }
        if (!content_type_ok(content_type)) {
                *ret_problem = "the response is not application/pkcs7-mime";
                return -EBADMSG;
        }
        if (len > 0 && memmem(body, len, "-----BEGIN PKCS7-----", 21)) {
                _cleanup_(BIO_freep) BIO *bio = BIO_new_mem_buf(body, (int)len);

                if (!bio)
                        return -ENOMEM;
                p7 = PEM_read_bio_PKCS7(bio, NULL, NULL, NULL);
        } else {
                r = decode_base64_loose(body, len, &der, &der_len);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        *ret_problem = "the response is neither PEM nor base64";
                        ERR_clear_error();
                        return -EBADMSG;
                }
                p = der;
                p7 = d2i_PKCS7(NULL, &p, (long)der_len);
                if (p7 && p != der + der_len) {
                        PKCS7_free(TAKE_PTR(p7));
                }
        }
        ERR_clear_error();
        if (!p7) {
                *ret_problem = "the response is not a PKCS#7 structure";
                return -EBADMSG;
        }
        if (!PKCS7_type_is_signed(p7) || !p7->d.sign) {
                *ret_problem = "the response is not a PKCS#7 SignedData";
                return -EBADMSG;
        }
        in = p7->d.sign->cert;
        certs = sk_X509_new_null();
        if (!certs)
                return -ENOMEM;
        for (int i = 0; in && i < sk_X509_num(in); i++) {
                X509 *x = sk_X509_value(in, i);

                if (!X509_up_ref(x))
                        return -ENOMEM;
                if (!sk_X509_push(certs, x)) {
                        X509_free(x);
                        return -ENOMEM;
                }
        }
        *ret = TAKE_PTR(certs);
        return 0;
}

int certs_est_csr_body(X509_REQ *csr, char **ret, size_t *ret_len)
{
        _cleanup_free_ unsigned char *der = NULL;
        _cleanup_free_ char *b64 = NULL, *out = NULL;
        size_t b64_len, n = 0;
        int der_len;

        der_len = i2d_X509_REQ(csr, &der);
        if (der_len <= 0)
                return log_openssl_error("Encoding a CSR");
        b64 = base64_encode_alloc(der, (size_t)der_len);
        if (!b64)
                return -ENOMEM;
        b64_len = strlen(b64);
        out = malloc(b64_len + b64_len / CSR_LINE + 2);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < b64_len; i += CSR_LINE) {
                size_t k = MIN(CSR_LINE, b64_len - i);

                memcpy(out + n, b64 + i, k);
                n += k;
                out[n++] = '\n';
        }
        out[n] = '\0';
        *ret = TAKE_PTR(out);
        *ret_len = n;
        return 0;
}

int certs_est_identity_csr(const X509_NAME *subject, EVP_PKEY *key, X509_REQ **ret)
{
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_(sk_X509_EXTENSION_pop_freep) X509ExtensionStack *exts = NULL;
        X509_EXTENSION *eku;

        req = X509_REQ_new();
        exts = sk_X509_EXTENSION_new_null();
        if (!req || !exts)
                return -ENOMEM;
        if (!X509_REQ_set_version(req, X509_REQ_VERSION_1) ||
            !X509_REQ_set_subject_name(req, subject) || !X509_REQ_set_pubkey(req, key))
                return log_openssl_error("Building an EST identity CSR");
        eku = X509V3_EXT_conf_nid(NULL, NULL, NID_ext_key_usage, "clientAuth");
        if (!eku || !sk_X509_EXTENSION_push(exts, eku)) {
                X509_EXTENSION_free(eku);
                return log_openssl_error("Building an EST identity CSR");
        }
        if (!X509_REQ_add_extensions(req, exts) || X509_REQ_sign(req, key, EVP_sha256()) <= 0)
                return log_openssl_error("Signing an EST identity CSR");
        *ret = TAKE_PTR(req);
        return 0;
}

