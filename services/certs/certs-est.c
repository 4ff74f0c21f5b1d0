/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509v3.h>

#include "base64.h"
#include "certs-est.h"
#include "log.h"
#include "macro.h"
#include "openssl-util.h"

#define CT_PKCS7 "application/pkcs7-mime"
#define BODY_SNIPPET_MAX 256u
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

typedef enum EstOp {
        EST_ENROLL,
        EST_CACERTS,
        _EST_OP_MAX,
} EstOp;

struct CertsEstJob {
        HttpClient *http;
        char *base_url; /* ends in "/" */
        char *authorization;
        char *csr_body;
        size_t csr_len;
        HttpTls tls;
        bool reenroll;
        HttpRequest *requests[_EST_OP_MAX];
        X509Stack *results[_EST_OP_MAX];
        CertsEstDone done;
        void *userdata;
};

static void job_free(CertsEstJob *job)
{
        if (!job)
                return;
        for (size_t i = 0; i < _EST_OP_MAX; i++) {
                if (job->requests[i])
                        http_request_cancel(job->requests[i]);
                sk_X509_pop_free(job->results[i], X509_free);
        }
        free(job->base_url);
        if (job->authorization)
                explicit_bzero(job->authorization, strlen(job->authorization));
        free(job->authorization);
        free(job->csr_body);
        sk_X509_pop_free(job->tls.client_chain, X509_free);
        X509_free(job->tls.client_cert);
        EVP_PKEY_free(job->tls.client_key);
        sk_X509_pop_free(job->tls.trusted, X509_free);
        free(job);
}

static void job_freep(CertsEstJob **job)
{
        job_free(*job);
}

void certs_est_job_cancel(CertsEstJob *job)
{
        job_free(job);
}

static const char *op_path(const CertsEstJob *job, EstOp op)
{
        if (op == EST_CACERTS)
                return "cacerts";
        return job->reenroll ? "simplereenroll" : "simpleenroll";
}

static void on_response(HttpRequest *request, int error, const char *message,
                        const HttpResponse *response, void *userdata);

static int start_op(CertsEstJob *job, EstOp op)
{
        _cleanup_free_ char *url = NULL;
        const char *headers[4];
        size_t n = 0;

        if (asprintf(&url, "%s%s", job->base_url, op_path(job, op)) < 0)
                return -ENOMEM;
        if (op == EST_ENROLL) {
                headers[n++] = "Content-Type: application/pkcs10";
                headers[n++] = "content-transfer-encoding: base64";
        }
        if (job->authorization)
                headers[n++] = job->authorization;
        headers[n] = NULL;
        return http_client_start(job->http,
                                 &(HttpRequestSpec){
                                         .method = op == EST_ENROLL ? "POST" : "GET",
                                         .url = url,
                                         .headers = headers,
                                         .body = op == EST_ENROLL ? job->csr_body : NULL,
                                         .body_len = op == EST_ENROLL ? job->csr_len : 0,
                                         .tls = &job->tls,
                                         .timeout_usec = CERTS_EST_TIMEOUT_USEC,
                                 },
                                 on_response, job, &job->requests[op]);
}

/* Ends the job: the callback runs, then the job is freed. */
static void job_finish(CertsEstJob *job, int error, const char *message)
{
        _cleanup_(job_freep) CertsEstJob *j = job;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        char *pem = NULL;
        long len = 0;

        for (size_t i = 0; i < _EST_OP_MAX; i++)
                if (j->requests[i]) {
                        http_request_cancel(j->requests[i]);
                        j->requests[i] = NULL;
                }
        if (error < 0) {
                j->done(error, message, NULL, 0, j->userdata);
                return;
        }
        bio = BIO_new(BIO_s_mem());
        if (!bio) {
                j->done(-ENOMEM, "out of memory", NULL, 0, j->userdata);
                return;
        }
        for (size_t i = 0; i < _EST_OP_MAX; i++)
                for (int k = 0; k < sk_X509_num(j->results[i]); k++)
                        if (!PEM_write_bio_X509(bio, sk_X509_value(j->results[i], k))) {
                                j->done(-ENOMEM, "out of memory", NULL, 0, j->userdata);
                                return;
                        }
        if (BIO_write(bio, "", 1) != 1) {
                j->done(-ENOMEM, "out of memory", NULL, 0, j->userdata);
                return;
        }
        len = BIO_get_mem_data(bio, &pem);
        j->done(0, NULL, pem, (size_t)len - 1, j->userdata);
}

/* Printable ASCII of a response body, for an error message. */
static void body_snippet(const HttpResponse *response, char *buf, size_t size)
{
        size_t n = 0;

        for (size_t i = 0; i < response->body_len && n + 1 < size; i++) {
                unsigned char c = response->body[i];

                buf[n++] = c >= 0x20 && c < 0x7f ? (char)c : ' ';
        }
        buf[n] = '\0';
}

static void on_response(HttpRequest *request, int error, const char *message,
                        const HttpResponse *response, void *userdata)
{
        CertsEstJob *job = userdata;
        char text[512], snippet[BODY_SNIPPET_MAX + 1];
        const char *problem = NULL;
        EstOp op = request == job->requests[EST_ENROLL] ? EST_ENROLL : EST_CACERTS;
        int r;

        job->requests[op] = NULL; /* freed by the client after this call */
        if (error < 0) {
                (void)snprintf(text, sizeof(text), "EST server %s%s: %s", job->base_url,
                               op_path(job, op), message);
                job_finish(job, error, text);
                return;
        }
        if (op == EST_ENROLL && job->reenroll &&
            (response->status == 404 || response->status == 405 || response->status == 501)) {
                log_info("%s%s answered %ld: enrolling at %ssimpleenroll instead.",
                         job->base_url, op_path(job, op), response->status, job->base_url);
                job->reenroll = false;
                r = start_op(job, EST_ENROLL);
                if (r < 0)
                        job_finish(job, r, "out of memory");
                return;
        }
        if (response->status != 200) {
                body_snippet(response, snippet, sizeof(snippet));
                (void)snprintf(text, sizeof(text),
                               "EST endpoint did not return successful response: %ld %s (%s%s)",
                               response->status, snippet, job->base_url, op_path(job, op));
                job_finish(job, -EPROTO, text);
                return;
        }
        r = certs_est_parse_response(response->content_type, response->body, response->body_len,
                                     &job->results[op], &problem);
        if (r < 0) {
                (void)snprintf(text, sizeof(text), "EST %s response: %s",
                               op_path(job, op), problem ? problem : "out of memory");
                job_finish(job, r, text);
                return;
        }
        if (op == EST_ENROLL && sk_X509_num(job->results[op]) == 0) {
                (void)snprintf(text, sizeof(text), "EST %s response holds no certificate",
                               op_path(job, op));
                job_finish(job, -EBADMSG, text);
                return;
        }
        if (!job->requests[EST_ENROLL] && !job->requests[EST_CACERTS])
                job_finish(job, 0, NULL);
}

static int copy_stack(X509Stack *in, X509Stack **ret)
{
        *ret = NULL;
        if (!in)
                return 0;
        *ret = X509_chain_up_ref(in);
        return *ret ? 0 : -ENOMEM;
}

int certs_est_enroll(HttpClient *http, const CertsEstRequest *req, X509_REQ *csr,
                     CertsEstDone done, void *userdata, CertsEstJob **ret)
{
        _cleanup_(job_freep) CertsEstJob *job = NULL;
        int r;

        job = calloc(1, sizeof(*job));
        if (!job)
                return -ENOMEM;
        job->http = http;
        job->done = done;
        job->userdata = userdata;
        job->reenroll = req->reenroll;
        if (asprintf(&job->base_url, "%s%s", req->url, endswith(req->url, "/") ? "" : "/") < 0) {
                job->base_url = NULL;
                return -ENOMEM;
        }
        if (req->username) {
                _cleanup_free_ char *plain = NULL, *b64 = NULL;

                if (asprintf(&plain, "%s:%s", req->username, strempty(req->password)) < 0)
                        return -ENOMEM;
                b64 = base64_encode_alloc(plain, strlen(plain));
                explicit_bzero(plain, strlen(plain));
                if (!b64)
                        return -ENOMEM;
                r = asprintf(&job->authorization, "Authorization: Basic %s", b64);
                explicit_bzero(b64, strlen(b64));
                if (r < 0) {
                        job->authorization = NULL;
                        return -ENOMEM;
                }
        }
        if (req->client_chain && sk_X509_num(req->client_chain) > 0) {
                if (!req->client_key)
                        return -EINVAL;
                job->tls.client_cert = sk_X509_value(req->client_chain, 0);
                if (!X509_up_ref(job->tls.client_cert)) {
                        job->tls.client_cert = NULL;
                        return -ENOMEM;
                }
                job->tls.client_chain = sk_X509_new_null();
                if (!job->tls.client_chain)
                        return -ENOMEM;
                for (int i = 1; i < sk_X509_num(req->client_chain); i++) {
                        X509 *x = sk_X509_value(req->client_chain, i);

                        if (!X509_up_ref(x))
                                return -ENOMEM;
                        if (!sk_X509_push(job->tls.client_chain, x)) {
                                X509_free(x);
                                return -ENOMEM;
                        }
                }
                if (!EVP_PKEY_up_ref(req->client_key))
                        return -ENOMEM;
                job->tls.client_key = req->client_key;
        }
        r = copy_stack(req->trusted, &job->tls.trusted);
        if (r < 0)
                return r;
        r = certs_est_csr_body(csr, &job->csr_body, &job->csr_len);
        if (r < 0)
                return r;

        for (EstOp op = 0; op < _EST_OP_MAX; op++) {
                r = start_op(job, op);
                if (r < 0)
                        return r;
        }
        if (ret)
                *ret = job;
        job = NULL;
        return 0;
}
