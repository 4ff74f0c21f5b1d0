/* SPDX-License-Identifier: MIT */
#pragma once

/* Outbound HTTP(S) for the daemons that talk to the cloud (certd's EST client, identityd's DPS and
 * IoT Hub calls): libcurl's multi interface driven by an sd-event loop, so that a request never
 * blocks the daemon (cloud-protocols.md §1).
 *
 * What every request does:
 *   - TLS through OpenSSL. The server is verified against OpenSSL's default verify paths (the
 *     system store) plus the certificates of HttpTls.trusted; the host name is checked (SAN, else
 *     CN). A client certificate is presented when HttpTls.client_cert is set, with
 *     HttpTls.client_key as its key: an EVP_PKEY of any provider, so a key held by keyd (the
 *     "aziot" provider) signs the handshake without ever leaving keyd.
 *   - Proxy: HTTPS_PROXY, else https_proxy, of the environment when the request starts, for
 *     every URL (as upstream; HTTP CONNECT, Basic proxy credentials from the URL's userinfo);
 *     NO_PROXY/no_proxy are honoured. No proxy when neither is set (curl's own lookup of other
 *     variables is disabled).
 *   - Headers sent: Host, those of the request, Content-Type only when the request names one;
 *     no User-Agent, no Accept, no Expect.
 *   - Never reuses a connection or a TLS session (each request may present another identity), and
 *     never follows redirects. Only http and https.
 *   - The response body is kept up to HTTP_CLIENT_BODY_MAX bytes (more: -EFBIG).
 *
 * Not thread-safe: one client per sd-event loop, used from its thread. */

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define HTTP_CLIENT_BODY_MAX (4u * 1024u * 1024u)
#define HTTP_CLIENT_DEFAULT_TIMEOUT_USEC (70ull * 1000ull * 1000ull)

typedef struct HttpClient HttpClient;
typedef struct HttpRequest HttpRequest;

typedef struct HttpTls {
        X509 *client_cert;            /* presented when not NULL */
        STACK_OF(X509) *client_chain; /* sent after client_cert (the rest of its chain); NULL: none */
        EVP_PKEY *client_key;         /* the key of client_cert; required with it */
        STACK_OF(X509) *trusted;      /* trusted besides the system store; NULL: none */
} HttpTls;

typedef struct HttpRequestSpec {
        const char *method;          /* "GET", "POST", "PUT", "PATCH", "DELETE" */
        const char *url;             /* http:// or https:// */
        const char *const *headers;  /* "Name: value", NULL-terminated; NULL: none */
        const void *body;            /* sent as is; NULL: no body */
        size_t body_len;
        const HttpTls *tls;          /* NULL: no client certificate, system store only */
        uint64_t timeout_usec;       /* the whole request; 0: HTTP_CLIENT_DEFAULT_TIMEOUT_USEC */
} HttpRequestSpec;

typedef struct HttpResponse {
        long status;
        const char *content_type; /* the Content-Type header's value; NULL when absent */
        uint64_t retry_after_sec; /* Retry-After in seconds (a date is turned into a delay); 0: none */
        const uint8_t *body;      /* NUL-terminated (not counted in body_len) */
        size_t body_len;
} HttpResponse;

/* Called once per request from the event loop, unless the request was cancelled. error is 0 and
 * response set when an HTTP response was received (whatever its status); else response is NULL,
 * error a negative errno and message (never NULL) says what happened in words fit for a log:
 *   -ECONNREFUSED, -EHOSTUNREACH, -ENETUNREACH  the server (or proxy) could not be reached
 *   -ETIMEDOUT      no complete response within the timeout
 *   -EPROTO         TLS failed (server not trusted, host name mismatch, client certificate refused
 *                   in the handshake, …)
 *   -EFBIG          the response body was over HTTP_CLIENT_BODY_MAX
 *   -ENOMEM, -EIO   anything else
 * Both the response and the message are valid during the call only. The request is freed after
 * the callback returns. */
typedef void (*HttpCallback)(HttpRequest *request, int error, const char *message,
                             const HttpResponse *response, void *userdata);

int http_client_new(sd_event *event, HttpClient **ret);

/* Cancels every pending request (without calling its callback) and frees the client. */
HttpClient *http_client_free(HttpClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpClient *, http_client_free);

/* Starts a request; everything in spec is copied (the X509 and EVP_PKEY objects are referenced),
 * so spec may go once this returns. *ret (ret may be NULL) identifies the request until its
 * callback has run or it is cancelled. Returns 0, -EINVAL (bad method or URL, a header that is not
 * "Name: value" or holds a control character, client_cert without client_key or the reverse),
 * -ENOMEM. */
int http_client_start(HttpClient *c, const HttpRequestSpec *spec, HttpCallback callback,
                      void *userdata, HttpRequest **ret);

/* Stops a pending request and frees it; its callback is not called. */
void http_request_cancel(HttpRequest *request);

/* Number of pending requests (to tell whether the daemon is idle). */
size_t http_client_pending(const HttpClient *c);
