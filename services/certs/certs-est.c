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

#define BODY_SNIPPET_MAX 256u

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
