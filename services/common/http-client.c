/* SPDX-License-Identifier: MIT */
#include <limits.h>
#include <pthread.h>
#include <strings.h>
#include <sys/epoll.h>

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "http-client.h"
#include "log.h"
#include "macro.h"

/* One socket curl asked us to watch. */
typedef struct SocketWatch SocketWatch;
struct SocketWatch {
        HttpClient *client;
        sd_event_source *source;
        SocketWatch *prev, *next;
};

struct HttpClient {
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        HttpRequest *requests; /* pending, newest first */
        size_t n_requests;
        SocketWatch *watches;
        /* Set while finished requests are dispatched: tells the dispatcher that a callback freed
         * the client. */
        bool *freed;
};

struct HttpRequest {
        HttpClient *client;
        HttpRequest *prev, *next;
        CURL *easy;
        const char *method; /* one of the static method names */
        char *target;       /* scheme://host[:port]/path, without userinfo and query, for logs */
        struct curl_slist *headers;
        uint8_t *body; /* the request body: may hold credentials */
        size_t body_len;

        X509 *client_cert;
        STACK_OF(X509) *client_chain;
        EVP_PKEY *client_key;
        STACK_OF(X509) *trusted;

        HttpCallback callback;
        void *userdata;

        uint8_t *response;
        size_t response_len, response_allocated;
        bool response_too_big;
        bool out_of_memory;
        bool tls_alert_received; /* the peer sent a fatal TLS alert */
        int tls_setup_error;     /* set by on_ssl_ctx() when it failed */
        bool dispatching;        /* its callback runs: freed once it returns */

        char error_buffer[CURL_ERROR_SIZE];
        char message[CURL_ERROR_SIZE + 128];
};

static const char *const http_methods[] = { "GET", "POST", "PUT", "PATCH", "DELETE" };

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_init_result;
static int ssl_ctx_request_index = -1;

static void global_init(void)
{
        const curl_version_info_data *v;

        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                global_init_result = log_error_errno(EIO, "Failed to initialize libcurl.");
                return;
        }
        /* on_ssl_ctx() is handed an OpenSSL SSL_CTX: any other TLS backend would hand it
         * something else. */
        v = curl_version_info(CURLVERSION_NOW);
        if (!v || !v->ssl_version || !startswith(v->ssl_version, "OpenSSL/")) {
                global_init_result = log_error_errno(EOPNOTSUPP,
                                                     "libcurl does not use OpenSSL (%s).",
                                                     v && v->ssl_version ? v->ssl_version : "none");
                return;
        }
        ssl_ctx_request_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        if (ssl_ctx_request_index < 0)
                global_init_result = log_error_errno(ENOMEM, "Failed to allocate an SSL_CTX index.");
}

/* ---- sockets and timer: curl's multi interface on the sd-event loop */

static void socket_watch_free(SocketWatch *w)
{
        HttpClient *c = w->client;

        if (w->prev)
                w->prev->next = w->next;
        else
                c->watches = w->next;
        if (w->next)
                w->next->prev = w->prev;
        sd_event_source_disable_unref(w->source);
        free(w);
}

static void client_dispatch_finished(HttpClient *c);

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        HttpClient *c = userdata;
        int action = 0, running = 0;
        CURLMcode mc;

        if (revents & (EPOLLIN | EPOLLHUP))
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & EPOLLERR)
                action |= CURL_CSELECT_ERR;

        mc = curl_multi_socket_action(c->multi, fd, action, &running);
        if (mc != CURLM_OK)
                log_warning("curl_multi_socket_action() failed: %s", curl_multi_strerror(mc));
        client_dispatch_finished(c);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        HttpClient *c = userdata;
        int running = 0;
        CURLMcode mc;

        mc = curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        if (mc != CURLM_OK)
                log_warning("curl_multi_socket_action() failed: %s", curl_multi_strerror(mc));
        client_dispatch_finished(c);
        return 0;
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userdata, void *socketp)
{
        HttpClient *c = userdata;
        SocketWatch *w = socketp;
        uint32_t events = 0;
        int r;

        if (what == CURL_POLL_REMOVE) {
                if (w)
                        socket_watch_free(w);
                return 0;
        }

        if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
                events |= EPOLLIN;
        if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
                events |= EPOLLOUT;

        if (w) {
                r = sd_event_source_set_io_events(w->source, events);
                if (r >= 0)
                        r = sd_event_source_set_enabled(w->source, SD_EVENT_ON);
                if (r < 0) {
                        log_warning_errno(r, "Failed to watch socket %d: %m", fd);
                        return -1;
                }
                return 0;
        }

        w = calloc(1, sizeof(*w));
        if (!w) {
                log_oom();
                return -1;
        }
        r = sd_event_add_io(c->event, &w->source, fd, events, on_io, c);
        if (r < 0) {
                free(w);
                log_warning_errno(r, "Failed to watch socket %d: %m", fd);
                return -1;
        }
        (void)sd_event_source_set_description(w->source, "http-client-io");
        w->client = c;
        w->next = c->watches;
        if (w->next)
                w->next->prev = w;
        c->watches = w;
        if (curl_multi_assign(c->multi, fd, w) != CURLM_OK) {
                socket_watch_free(w);
                return -1;
        }
        return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userdata)
{
        HttpClient *c = userdata;
        uint64_t usec;
        int r;

        if (timeout_ms < 0) {
                if (c->timer)
                        (void)sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
                return 0;
        }

        usec = (uint64_t)timeout_ms * 1000u;
        if (c->timer) {
                r = sd_event_source_set_time_relative(c->timer, usec);
                if (r >= 0)
                        r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
        } else {
                /* A fine accuracy: curl's deadlines are often "now". */
                r = sd_event_add_time_relative(c->event, &c->timer, CLOCK_MONOTONIC, usec,
                                               /* accuracy= */ 1000, on_timer, c);
                if (r >= 0)
                        (void)sd_event_source_set_description(c->timer, "http-client-timer");
        }
        if (r < 0) {
                log_warning_errno(r, "Failed to arm the HTTP client timer: %m");
                return -1;
        }
        return 0;
}

/* ---- requests */

static void free_secret_slist(struct curl_slist *l)
{
        for (struct curl_slist *i = l; i; i = i->next)
                explicit_bzero(i->data, strlen(i->data));
        curl_slist_free_all(l);
}

static void request_unlink(HttpRequest *req)
{
        HttpClient *c = req->client;

        if (req->prev)
                req->prev->next = req->next;
        else
                c->requests = req->next;
        if (req->next)
                req->next->prev = req->prev;
        req->prev = req->next = NULL;
        c->n_requests--;
}

/* Frees a request that is in no list and whose easy handle is in no multi handle. */
static HttpRequest *request_free(HttpRequest *req)
{
        if (!req)
                return NULL;
        curl_easy_cleanup(req->easy);
        free(req->target);
        free_secret_slist(req->headers);
        erase_and_free(req->body, req->body_len);
        X509_free(req->client_cert);
        sk_X509_pop_free(req->client_chain, X509_free);
        EVP_PKEY_free(req->client_key);
        sk_X509_pop_free(req->trusted, X509_free);
        erase_and_free(req->response, req->response_allocated);
        free(req);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpRequest *, request_free);

static size_t on_body(char *data, size_t size, size_t n, void *userdata)
{
        HttpRequest *req = userdata;
        size_t len = size * n;

        if (len > HTTP_CLIENT_BODY_MAX - req->response_len) {
                req->response_too_big = true;
                return CURL_WRITEFUNC_ERROR;
        }
        /* One byte more for the terminator. */
        if (req->response_len + len + 1 > req->response_allocated) {
                size_t want = MAX(req->response_allocated * 2, (size_t)16384);
                uint8_t *p;

                want = MAX(want, req->response_len + len + 1);
                want = MIN(want, (size_t)HTTP_CLIENT_BODY_MAX + 1);
                /* Not realloc(): the old buffer is wiped (a response may hold credentials). */
                p = malloc(want);
                if (!p) {
                        req->out_of_memory = true;
                        return CURL_WRITEFUNC_ERROR;
                }
                if (req->response_len > 0)
                        memcpy(p, req->response, req->response_len);
                erase_and_free(req->response, req->response_allocated);
                req->response = p;
                req->response_allocated = want;
        }
        memcpy(req->response + req->response_len, data, len);
        req->response_len += len;
        return len;
}

static void on_tls_info(const SSL *ssl, int where, int value)
{
        HttpRequest *req;

        if (!(where & SSL_CB_READ_ALERT) || (value >> 8) != SSL3_AL_FATAL)
                return;
        req = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ssl_ctx_request_index);
        if (req)
                req->tls_alert_received = true;
}

static CURLcode tls_setup_failed(HttpRequest *req, const char *what)
{
        unsigned long e = ERR_peek_last_error();
        char reason[256] = "";

        if (e != 0)
                ERR_error_string_n(e, reason, sizeof(reason));
        ERR_clear_error();
        (void)snprintf(req->message, sizeof(req->message), "%s failed%s%s", what,
                       e != 0 ? ": " : ".", reason);
        req->tls_setup_error = -EPROTO;
        return CURLE_SSL_CERTPROBLEM;
}

/* Called by curl for every TLS handshake of the request, on the SSL_CTX it is about to use. */
static CURLcode on_ssl_ctx(CURL *easy, void *ssl_ctx, void *userdata)
{
        HttpRequest *req = userdata;
        SSL_CTX *ctx = ssl_ctx;
        X509_STORE *store;

        if (SSL_CTX_set_ex_data(ctx, ssl_ctx_request_index, req) != 1)
                return tls_setup_failed(req, "SSL_CTX_set_ex_data()");
        SSL_CTX_set_info_callback(ctx, on_tls_info);

        if (SSL_CTX_set_default_verify_paths(ctx) != 1)
                return tls_setup_failed(req, "Loading the system trust store");
        store = SSL_CTX_get_cert_store(ctx);
        for (int i = 0; req->trusted && i < sk_X509_num(req->trusted); i++)
                if (X509_STORE_add_cert(store, sk_X509_value(req->trusted, i)) != 1)
                        return tls_setup_failed(req, "Adding a trusted certificate");

        if (!req->client_cert)
                return CURLE_OK;
        if (SSL_CTX_use_certificate(ctx, req->client_cert) != 1)
                return tls_setup_failed(req, "Using the client certificate");
        for (int i = 0; req->client_chain && i < sk_X509_num(req->client_chain); i++)
                if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(req->client_chain, i)) != 1)
                        return tls_setup_failed(req, "Adding a client chain certificate");
        /* Also checks that the key is the certificate's. */
        if (SSL_CTX_use_PrivateKey(ctx, req->client_key) != 1)
                return tls_setup_failed(req, "Using the client key");
        return CURLE_OK;
}

static bool curl_code_is_tls(CURLcode cc)
{
        switch (cc) {
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_ENGINE_NOTFOUND:
        case CURLE_SSL_ENGINE_SETFAILED:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_ENGINE_INITFAILED:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_SHUTDOWN_FAILED:
        case CURLE_SSL_CRL_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
        case CURLE_SSL_CLIENTCERT:
        case CURLE_USE_SSL_FAILED:
                return true;
        default:
                return false;
        }
}

/* The errno of a failed request, its message in req->message. */
static int request_error(HttpRequest *req, CURLcode cc)
{
        const char *text = req->error_buffer[0] ? req->error_buffer : curl_easy_strerror(cc);
        long connect_code = 0, os_errno = 0;
        int r;

        if (req->tls_setup_error < 0)
                return req->tls_setup_error; /* message set by tls_setup_failed() */
        if (req->response_too_big || cc == CURLE_FILESIZE_EXCEEDED) {
                (void)snprintf(req->message, sizeof(req->message),
                               "The response body is larger than %u bytes.", HTTP_CLIENT_BODY_MAX);
                return -EFBIG;
        }
        if (req->out_of_memory || cc == CURLE_OUT_OF_MEMORY) {
                (void)snprintf(req->message, sizeof(req->message), "Out of memory.");
                return -ENOMEM;
        }

        (void)curl_easy_getinfo(req->easy, CURLINFO_HTTP_CONNECTCODE, &connect_code);
        (void)curl_easy_getinfo(req->easy, CURLINFO_OS_ERRNO, &os_errno);
        if (cc == CURLE_OPERATION_TIMEDOUT)
                r = -ETIMEDOUT;
        else if (connect_code != 0 && (connect_code < 200 || connect_code > 299))
                r = -ECONNREFUSED; /* the proxy refused the tunnel */
        else if (cc == CURLE_COULDNT_CONNECT)
                r = os_errno == EHOSTUNREACH || os_errno == ENETUNREACH ? -(int)os_errno
                                                                        : -ECONNREFUSED;
        else if (cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_COULDNT_RESOLVE_PROXY)
                r = -EHOSTUNREACH;
        else if (curl_code_is_tls(cc))
                r = -EPROTO;
        else if (req->tls_alert_received &&
                 (cc == CURLE_RECV_ERROR || cc == CURLE_SEND_ERROR || cc == CURLE_GOT_NOTHING))
                r = -EPROTO; /* e.g. a client certificate refused after a TLS 1.3 handshake */
        else
                r = -EIO;

        (void)snprintf(req->message, sizeof(req->message), "%s", text);
        return r;
}

static void request_finish(HttpRequest *req, CURLcode cc)
{
        HttpClient *c = req->client;
        HttpResponse response = {};
        char *content_type = NULL;
        curl_off_t retry_after = 0;
        int error = 0;

        request_unlink(req);
        /* Out of the multi handle before the callback, which may free the client. */
        (void)curl_multi_remove_handle(c->multi, req->easy);
        req->dispatching = true;

        if (cc == CURLE_OK) {
                (void)curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &response.status);
                (void)curl_easy_getinfo(req->easy, CURLINFO_CONTENT_TYPE, &content_type);
                response.content_type = content_type;
                if (curl_easy_getinfo(req->easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
                    retry_after > 0)
                        response.retry_after_sec = (uint64_t)retry_after;
                response.body = req->response ?: (const uint8_t *)"";
                response.body_len = req->response_len;
                if (req->response)
                        req->response[req->response_len] = 0;
                log_debug("HTTP %s %s: %ld (%zu bytes)", req->method, req->target, response.status,
                          response.body_len);
                req->callback(req, 0, NULL, &response, req->userdata);
        } else {
                error = request_error(req, cc);
                log_debug_errno(error, "HTTP %s %s failed: %s", req->method, req->target,
                                req->message);
                req->callback(req, error, req->message, NULL, req->userdata);
        }
        request_free(req);
}

static void client_dispatch_finished(HttpClient *c)
{
        bool freed = false;
        CURLMsg *msg;
        int left;

        c->freed = &freed;
        while ((msg = curl_multi_info_read(c->multi, &left))) {
                HttpRequest *req = NULL;
                CURLcode cc = msg->data.result;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                (void)curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&req);
                request_finish(req, cc);
                if (freed)
                        return;
        }
        c->freed = NULL;
}

/* ---- validation of a request spec */

static const char *method_lookup(const char *method)
{
        for (size_t i = 0; method && i < ELEMENTSOF(http_methods); i++)
                if (streq(method, http_methods[i]))
                        return http_methods[i];
        return NULL;
}

static void curl_url_cleanupp(CURLU **u)
{
        curl_url_cleanup(*u);
}

static void curl_freep(char **p)
{
        curl_free(*p);
}

/* Checks that url is an absolute http or https URL with a host; returns its loggable part. */
static int url_check(const char *url, char **ret_target)
{
        _cleanup_(curl_url_cleanupp) CURLU *u = NULL;
        _cleanup_(curl_freep) char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
        CURLUcode uc;
        char *target;

        if (!url)
                return -EINVAL;
        u = curl_url();
        if (!u)
                return -ENOMEM;
        uc = curl_url_set(u, CURLUPART_URL, url, 0);
        if (uc == CURLUE_OUT_OF_MEMORY)
                return -ENOMEM;
        if (uc != CURLUE_OK)
                return -EINVAL;
        if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            (!streq(scheme, "http") && !streq(scheme, "https")))
                return -EINVAL;
        if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || isempty(host))
                return -EINVAL;
        (void)curl_url_get(u, CURLUPART_PORT, &port, 0);
        (void)curl_url_get(u, CURLUPART_PATH, &path, 0);

        if (asprintf(&target, "%s://%s%s%s%s", scheme, host, port ? ":" : "", strempty(port),
                     strempty(path)) < 0)
                return -ENOMEM;
        *ret_target = target;
        return 0;
}

/* "Name: value" with a token for a name and no control character but tab. */
static bool header_is_valid(const char *h)
{
        const char *colon = strchr(h, ':');

        if (!colon || colon == h)
                return false;
        for (const char *p = h; p < colon; p++)
                if (!strchr("!#$%&'*+-.^_`|~", *p) && !(*p >= '0' && *p <= '9') &&
                    !(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z'))
                        return false;
        for (const char *p = colon; *p; p++)
                if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
                        return false;
        return true;
}

static bool header_has_name(const char *h, const char *name)
{
        size_t l = strlen(name);

        return strncasecmp(h, name, l) == 0 && h[l] == ':';
}

static bool headers_have(const char *const *headers, const char *name)
{
        for (const char *const *h = headers; h && *h; h++)
                if (header_has_name(*h, name))
                        return true;
        return false;
}

static int slist_add(struct curl_slist **l, const char *s)
{
        struct curl_slist *n = curl_slist_append(*l, s);

        if (!n)
                return -ENOMEM;
        *l = n;
        return 0;
}

/* The header list handed to curl: the request's, and empty ones that stop curl from adding its
 * own Accept, Expect and (for a body) Content-Type. */
static int request_build_headers(HttpRequest *req, const char *const *headers)
{
        static const char *const suppressed[] = { "Accept", "Expect", "Content-Type" };
        int r;

        for (const char *const *h = headers; h && *h; h++) {
                const char *value = strchr(*h, ':') + 1;
                _cleanup_free_ char *empty = NULL;

                value += strspn(value, " \t");
                if (*value) {
                        r = slist_add(&req->headers, *h);
                        if (r < 0)
                                return r;
                        continue;
                }
                /* curl drops "Name:" (it means "do not send"); "Name;" sends it empty. */
                empty = strndup(*h, strchr(*h, ':') - *h + 1);
                if (!empty)
                        return -ENOMEM;
                empty[strlen(empty) - 1] = ';';
                r = slist_add(&req->headers, empty);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < ELEMENTSOF(suppressed); i++) {
                char buf[32];

                if (headers_have(headers, suppressed[i]))
                        continue;
                (void)snprintf(buf, sizeof(buf), "%s:", suppressed[i]);
                r = slist_add(&req->headers, buf);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int request_copy_tls(HttpRequest *req, const HttpTls *tls)
{
        if (!tls)
                return 0;
        if (tls->client_cert) {
                if (X509_up_ref(tls->client_cert) != 1)
                        return -ENOMEM;
                req->client_cert = tls->client_cert;
                if (EVP_PKEY_up_ref(tls->client_key) != 1)
                        return -ENOMEM;
                req->client_key = tls->client_key;
                if (tls->client_chain) {
                        req->client_chain = X509_chain_up_ref(tls->client_chain);
                        if (!req->client_chain)
                                return -ENOMEM;
                }
        }
        if (tls->trusted) {
                req->trusted = X509_chain_up_ref(tls->trusted);
                if (!req->trusted)
                        return -ENOMEM;
        }
        return 0;
}

/* ---- curl options */

static int curl_code_to_errno(CURLcode cc)
{
        return cc == CURLE_OK ? 0 : cc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
}

static int request_set_fixed_options(HttpRequest *req, uint64_t timeout_usec)
{
        const struct {
                CURLoption option;
                long value;
        } options[] = {
                { CURLOPT_NOSIGNAL, 1 },
                { CURLOPT_FORBID_REUSE, 1 },
                { CURLOPT_FRESH_CONNECT, 1 },
                { CURLOPT_SSL_SESSIONID_CACHE, 0 },
                /* A cached trust store would be shared by requests with other trusted certs. */
                { CURLOPT_CA_CACHE_TIMEOUT, 0 },
                { CURLOPT_FOLLOWLOCATION, 0 },
                { CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1 },
                { CURLOPT_SSL_VERIFYPEER, 1 },
                { CURLOPT_SSL_VERIFYHOST, 2 },
                /* Every request through the proxy is tunnelled, and the request's headers
                 * (Authorization) are never sent to the proxy. */
                { CURLOPT_HTTPPROXYTUNNEL, 1 },
                { CURLOPT_HEADEROPT, CURLHEADER_SEPARATE },
                { CURLOPT_TIMEOUT_MS, (long)MIN((timeout_usec + 999) / 1000, (uint64_t)LONG_MAX) },
        };
        CURLcode cc = CURLE_OK;

        for (size_t i = 0; cc == CURLE_OK && i < ELEMENTSOF(options); i++)
                cc = curl_easy_setopt(req->easy, options[i].option, options[i].value);
        /* Refuses a response announcing a longer body early; on_body() enforces it. */
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_MAXFILESIZE_LARGE,
                                      (curl_off_t)HTTP_CLIENT_BODY_MAX);
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_PROTOCOLS_STR, "http,https");
        /* The trust store is OpenSSL's default verify paths, set up by on_ssl_ctx(). */
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_CAINFO, NULL);
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_CAPATH, NULL);
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_SSL_CTX_DATA, req);
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_WRITEFUNCTION, on_body);
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_WRITEDATA, req);
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, req->error_buffer);
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_PRIVATE, req);
        return curl_code_to_errno(cc);
}

static const char *getenv_nonempty(const char *upper, const char *lower)
{
        const char *e = getenv(upper);

        if (isempty(e))
                e = getenv(lower);
        return strempty(e);
}

static int request_set_options(HttpRequest *req, const char *url, uint64_t timeout_usec)
{
        CURLcode cc;
        int r;

        r = request_set_fixed_options(req, timeout_usec);
        if (r < 0)
                return r;

        /* "" disables curl's own look-up of the proxy variables. */
        cc = curl_easy_setopt(req->easy, CURLOPT_PROXY, getenv_nonempty("HTTPS_PROXY", "https_proxy"));
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_NOPROXY,
                                      getenv_nonempty("NO_PROXY", "no_proxy"));
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_URL, url);
        if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_HTTPHEADER, req->headers);

        /* A body for any method; POST, PUT and PATCH without one send "Content-Length: 0". */
        if (cc == CURLE_OK && (req->body || !(streq(req->method, "GET") || streq(req->method, "DELETE")))) {
                cc = curl_easy_setopt(req->easy, CURLOPT_POST, 1L);
                if (cc == CURLE_OK)
                        cc = curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                                              (curl_off_t)req->body_len);
                if (cc == CURLE_OK)
                        cc = curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS,
                                              req->body ? (const char *)req->body : "");
        } else if (cc == CURLE_OK)
                cc = curl_easy_setopt(req->easy, CURLOPT_HTTPGET, 1L);
        if (cc == CURLE_OK && !streq(req->method, "GET"))
                cc = curl_easy_setopt(req->easy, CURLOPT_CUSTOMREQUEST, req->method);
        return curl_code_to_errno(cc);
}

/* ---- the API */

int http_client_new(sd_event *event, HttpClient **ret)
{
        _cleanup_(http_client_freep) HttpClient *c = NULL;
        CURLMcode mc;

        if (!event || !ret)
                return -EINVAL;
        (void)pthread_once(&global_once, global_init);
        if (global_init_result < 0)
                return global_init_result;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(event);
        c->multi = curl_multi_init();
        if (!c->multi)
                return -ENOMEM;
        mc = curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
        if (mc == CURLM_OK)
                mc = curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
        if (mc == CURLM_OK)
                mc = curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
        if (mc == CURLM_OK)
                mc = curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
        if (mc != CURLM_OK)
                return mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO;

        *ret = TAKE_PTR(c);
        return 0;
}

HttpClient *http_client_free(HttpClient *c)
{
        if (!c)
                return NULL;
        if (c->freed)
                *c->freed = true;
        while (c->requests)
                http_request_cancel(c->requests);
        /* Closing the remaining connections removes their watches. */
        curl_multi_cleanup(c->multi);
        while (c->watches)
                socket_watch_free(c->watches);
        sd_event_source_disable_unref(c->timer);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

int http_client_start(HttpClient *c, const HttpRequestSpec *spec, HttpCallback callback,
                      void *userdata, HttpRequest **ret)
{
        _cleanup_(request_freep) HttpRequest *req = NULL;
        const char *method;
        int r;

        if (!c || !spec || !callback)
                return -EINVAL;
        method = method_lookup(spec->method);
        if (!method)
                return -EINVAL;
        for (const char *const *h = spec->headers; h && *h; h++)
                if (!header_is_valid(*h))
                        return -EINVAL;
        if (spec->tls && (!spec->tls->client_cert != !spec->tls->client_key))
                return -EINVAL;
        if (!spec->body && spec->body_len > 0)
                return -EINVAL;

        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        req->client = c;
        req->method = method;
        req->callback = callback;
        req->userdata = userdata;
        r = url_check(spec->url, &req->target);
        if (r < 0)
                return r;
        if (spec->body) {
                /* One byte more: curl is handed a non-NULL pointer even for an empty body. */
                req->body = malloc(spec->body_len + 1);
                if (!req->body)
                        return -ENOMEM;
                memcpy(req->body, spec->body, spec->body_len);
                req->body_len = spec->body_len;
        }
        r = request_copy_tls(req, spec->tls);
        if (r < 0)
                return r;
        r = request_build_headers(req, spec->headers);
        if (r < 0)
                return r;

        req->easy = curl_easy_init();
        if (!req->easy)
                return -ENOMEM;
        r = request_set_options(req, spec->url,
                                spec->timeout_usec ?: HTTP_CLIENT_DEFAULT_TIMEOUT_USEC);
        if (r < 0)
                return r;
        if (curl_multi_add_handle(c->multi, req->easy) != CURLM_OK)
                return -ENOMEM;

        req->next = c->requests;
        if (req->next)
                req->next->prev = req;
        c->requests = req;
        c->n_requests++;
        log_trace("HTTP %s %s started", req->method, req->target);

        if (ret)
                *ret = req;
        TAKE_PTR(req);
        return 0;
}

void http_request_cancel(HttpRequest *req)
{
        if (!req || req->dispatching)
                return; /* a request whose callback runs is freed when it returns */
        request_unlink(req);
        (void)curl_multi_remove_handle(req->client->multi, req->easy);
        log_trace("HTTP %s %s cancelled", req->method, req->target);
        request_free(req);
}

size_t http_client_pending(const HttpClient *c)
{
        return c ? c->n_requests : 0;
}
