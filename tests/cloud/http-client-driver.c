/* SPDX-License-Identifier: MIT */

/* http-client-driver: runs requests through services/common/http-client.c on one sd-event loop and
 * prints one JSON line per request whose callback ran:
 *   {"index": I, "url": U, "status": S, "content_type": T|null, "body": BASE64, "error": null,
 *    "errno": 0, "message": null, "pending": P, "elapsed_ms": MS}
 * or, for a failed request, "error": "ETIMEDOUT" (the errno name), "errno": 110 and "message".
 * "pending" is http_client_pending() during the callback. A request that http_client_start()
 * refuses prints {"index": I, "url": U, "start_error": "EINVAL", "errno": 22}.
 *
 * Usage: http-client-driver [--sequential] [--free-after-first] [OPTIONS] URL [[OPTIONS] URL]...
 * Options apply to the URLs after them, until --next resets them:
 *   --method M            GET (default), POST, PUT, PATCH, DELETE, or anything to test refusal
 *   --header "N: V"       repeatable
 *   --body-file F         the body; without it, no body
 *   --client-cert F       PEM: the first certificate of F
 *   --client-key F        PEM private key
 *   --chain F             PEM: every certificate of F, sent after the client certificate
 *   --trust F             PEM: every certificate of F is trusted; repeatable
 *   --timeout-ms N        the request's timeout (default: the client's)
 *   --concurrent N        starts N copies of the request (default 1)
 *   --cancel-after-ms N   cancels the request N ms after it starts
 * --sequential starts each request when the one before has finished (else all start at once);
 * --free-after-first frees the client in the first callback, with the other requests pending.
 *
 * Exit status: 0 when every request has finished or been cancelled; 2 for bad usage or files. */

#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <systemd/sd-event.h>

#include "base64.h"
#include "http-client.h"
#include "macro.h"
#include "openssl-util.h"

typedef struct Options {
        const char *method;
        char **headers; /* NULL-terminated */
        size_t n_headers;
        uint8_t *body;
        size_t body_len;
        bool has_body;
        X509 *client_cert;
        STACK_OF(X509) *chain;
        EVP_PKEY *client_key;
        STACK_OF(X509) *trusted;
        uint64_t timeout_usec;
        unsigned concurrent;
        int64_t cancel_after_ms; /* -1: never */
} Options;

typedef struct Driver Driver;

typedef struct Job {
        Driver *driver;
        unsigned index;
        const char *url;
        const Options *options;
        HttpRequest *request;
        sd_event_source *cancel_timer;
        uint64_t started_usec;
        bool started, done;
} Job;

struct Driver {
        sd_event *event;
        HttpClient *client;
        Options **options; /* every group, to be freed */
        size_t n_options;
        Job *jobs;
        size_t n_jobs;
        bool sequential;
        bool free_after_first;
        bool freed;
};

static uint64_t now_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static Options *options_free(Options *o)
{
        if (!o)
                return NULL;
        strv_free(o->headers);
        free(o->body);
        X509_free(o->client_cert);
        sk_X509_pop_free(o->chain, X509_free);
        EVP_PKEY_free(o->client_key);
        sk_X509_pop_free(o->trusted, X509_free);
        free(o);
        return NULL;
}

static Options *options_new(void)
{
        Options *o = calloc(1, sizeof(*o));

        if (!o)
                return NULL;
        o->method = "GET";
        o->concurrent = 1;
        o->cancel_after_ms = -1;
        o->headers = calloc(1, sizeof(char *));
        if (!o->headers)
                return options_free(o);
        return o;
}

static Options *options_copy(const Options *from)
{
        Options *o = options_new();

        if (!o)
                return NULL;
        o->method = from->method;
        for (size_t i = 0; i < from->n_headers; i++) {
                char **l = realloc(o->headers, (o->n_headers + 2) * sizeof(char *));

                if (!l)
                        return options_free(o);
                o->headers = l;
                l[o->n_headers] = strdup(from->headers[i]);
                l[o->n_headers + 1] = NULL;
                if (!l[o->n_headers])
                        return options_free(o);
                o->n_headers++;
        }
        if (from->has_body) {
                o->body = malloc(from->body_len + 1);
                if (!o->body)
                        return options_free(o);
                memcpy(o->body, from->body, from->body_len);
                o->body_len = from->body_len;
                o->has_body = true;
        }
        if (from->client_cert && X509_up_ref(from->client_cert))
                o->client_cert = from->client_cert;
        if (from->client_key && EVP_PKEY_up_ref(from->client_key))
                o->client_key = from->client_key;
        if (from->chain)
                o->chain = X509_chain_up_ref(from->chain);
        if (from->trusted)
                o->trusted = X509_chain_up_ref(from->trusted);
        o->timeout_usec = from->timeout_usec;
        o->concurrent = from->concurrent;
        o->cancel_after_ms = from->cancel_after_ms;
        return o;
}

static int read_file(const char *path, uint8_t **ret, size_t *ret_len)
{
        _cleanup_fclose_ FILE *f = fopen(path, "rbe");
        _cleanup_free_ uint8_t *data = NULL;
        size_t len = 0, allocated = 0;

        if (!f)
                return -errno;
        for (;;) {
                size_t n;

                if (len == allocated) {
                        size_t want = allocated ? allocated * 2 : 65536;
                        uint8_t *q = realloc(data, want);

                        if (!q)
                                return -ENOMEM;
                        data = q;
                        allocated = want;
                }
                n = fread(data + len, 1, allocated - len, f);
                len += n;
                if (n == 0) {
                        if (ferror(f))
                                return -EIO;
                        break;
                }
        }
        *ret = TAKE_PTR(data);
        *ret_len = len;
        return 0;
}

/* Every certificate of a PEM file, appended to *stack. */
static int load_certs(const char *path, STACK_OF(X509) **stack)
{
        _cleanup_(BIO_freep) BIO *bio = BIO_new_file(path, "r");
        size_t n = 0;
        X509 *x;

        if (!bio)
                return log_openssl_error(path);
        if (!*stack) {
                *stack = sk_X509_new_null();
                if (!*stack)
                        return -ENOMEM;
        }
        while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
                if (!sk_X509_push(*stack, x)) {
                        X509_free(x);
                        return -ENOMEM;
                }
                n++;
        }
        ERR_clear_error(); /* the end of the file */
        if (n == 0) {
                fprintf(stderr, "No certificate in %s\n", path);
                return -EINVAL;
        }
        return 0;
}

static int load_key(const char *path, EVP_PKEY **ret)
{
        _cleanup_(BIO_freep) BIO *bio = BIO_new_file(path, "r");
        EVP_PKEY *k;

        if (!bio)
                return log_openssl_error(path);
        k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        if (!k)
                return log_openssl_error(path);
        EVP_PKEY_free(*ret);
        *ret = k;
        return 0;
}

static void print_json_string(FILE *f, const char *s)
{
        if (!s) {
                fputs("null", f);
                return;
        }
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                if (*p == '"' || *p == '\\')
                        fprintf(f, "\\%c", *p);
                else if (*p < 0x20 || *p >= 0x7f)
                        fprintf(f, "\\u%04x", *p);
                else
                        fputc(*p, f);
        }
        fputc('"', f);
}

static const char *errno_name(int error)
{
        return strerrorname_np(error < 0 ? -error : error) ?: "?";
}

static void driver_maybe_exit(Driver *d)
{
        for (size_t i = 0; i < d->n_jobs; i++)
                if (!d->jobs[i].done)
                        return;
        (void)sd_event_exit(d->event, 0);
}

static void driver_start_jobs(Driver *d);

static void job_done(Job *job)
{
        job->done = true;
        job->request = NULL;
        job->cancel_timer = sd_event_source_disable_unref(job->cancel_timer);
        driver_start_jobs(job->driver);
        driver_maybe_exit(job->driver);
}

static void on_response(HttpRequest *request, int error, const char *message,
                        const HttpResponse *response, void *userdata)
{
        Job *job = userdata;
        Driver *d = job->driver;
        _cleanup_free_ char *body = NULL;
        FILE *f = stdout;

        fprintf(f, "{\"index\": %u, \"url\": ", job->index);
        print_json_string(f, job->url);
        if (response) {
                body = base64_encode_alloc(response->body, response->body_len);
                if (!body)
                        abort();
                fprintf(f, ", \"status\": %ld, \"content_type\": ", response->status);
                print_json_string(f, response->content_type);
                fprintf(f, ", \"body\": \"%s\", \"body_terminated\": %s", body,
                        response->body[response->body_len] == 0 ? "true" : "false");
                fprintf(f, ", \"error\": null, \"errno\": 0, \"message\": ");
                print_json_string(f, message);
        } else {
                fprintf(f, ", \"status\": null, \"content_type\": null, \"body\": null");
                fprintf(f, ", \"error\": \"%s\", \"errno\": %d, \"message\": ", errno_name(error),
                        -error);
                print_json_string(f, message);
        }
        fprintf(f, ", \"pending\": %zu, \"elapsed_ms\": %" PRIu64 "}\n",
                http_client_pending(d->client), (now_usec() - job->started_usec) / 1000u);
        fflush(f);

        if (d->free_after_first) {
                d->client = http_client_free(d->client);
                d->freed = true;
                (void)sd_event_exit(d->event, 0);
                return;
        }
        job_done(job);
}

static int on_cancel_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        Job *job = userdata;

        if (job->request) {
                http_request_cancel(job->request);
                fprintf(stderr, "request %u cancelled\n", job->index);
        }
        job_done(job);
        return 0;
}

static void job_start(Job *job)
{
        Driver *d = job->driver;
        const Options *o = job->options;
        HttpTls tls = {
                .client_cert = o->client_cert,
                .client_chain = o->chain,
                .client_key = o->client_key,
                .trusted = o->trusted,
        };
        HttpRequestSpec spec = {
                .method = o->method,
                .url = job->url,
                .headers = (const char *const *)o->headers,
                .body = o->has_body ? o->body : NULL,
                .body_len = o->body_len,
                .tls = &tls,
                .timeout_usec = o->timeout_usec,
        };
        int r;

        job->started = true;
        job->started_usec = now_usec();
        r = http_client_start(d->client, &spec, on_response, job, &job->request);
        if (r < 0) {
                printf("{\"index\": %u, \"url\": ", job->index);
                print_json_string(stdout, job->url);
                printf(", \"start_error\": \"%s\", \"errno\": %d}\n", errno_name(r), -r);
                fflush(stdout);
                job->done = true;
                return;
        }
        if (o->cancel_after_ms >= 0) {
                r = sd_event_add_time_relative(d->event, &job->cancel_timer, CLOCK_MONOTONIC,
                                               (uint64_t)o->cancel_after_ms * 1000u, 1000,
                                               on_cancel_timer, job);
                if (r < 0) {
                        fprintf(stderr, "Failed to add a timer: %s\n", strerror(-r));
                        exit(EXIT_FAILURE);
                }
        }
}

static void driver_start_jobs(Driver *d)
{
        for (size_t i = 0; i < d->n_jobs; i++) {
                Job *job = &d->jobs[i];

                if (job->started && !job->done && d->sequential)
                        return;
                if (job->started)
                        continue;
                job_start(job);
                if (d->sequential && !job->done)
                        return;
        }
}

static int parse_uint(const char *s, uint64_t *ret)
{
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *end || s[0] == '-')
                return -EINVAL;
        *ret = v;
        return 0;
}

static int add_jobs(Driver *d, Options *o, const char *url)
{
        Options *copy = options_copy(o);
        Options **l;
        Job *jobs;

        if (!copy)
                return -ENOMEM;
        l = realloc(d->options, (d->n_options + 1) * sizeof(*l));
        if (!l) {
                options_free(copy);
                return -ENOMEM;
        }
        d->options = l;
        l[d->n_options++] = copy;
        jobs = realloc(d->jobs, (d->n_jobs + copy->concurrent) * sizeof(*jobs));
        if (!jobs)
                return -ENOMEM;
        d->jobs = jobs;
        for (unsigned i = 0; i < copy->concurrent; i++) {
                d->jobs[d->n_jobs] = (Job){ .index = d->n_jobs, .url = url, .options = copy };
                d->n_jobs++;
        }
        return 0;
}

static int parse_option(Options **o, int c, const char *arg)
{
        uint64_t v;
        int r;

        switch (c) {
        case 'm':
                (*o)->method = arg;
                return 0;
        case 'H': {
                char **l = realloc((*o)->headers, ((*o)->n_headers + 2) * sizeof(char *));

                if (!l)
                        return -ENOMEM;
                (*o)->headers = l;
                l[(*o)->n_headers] = strdup(arg);
                l[(*o)->n_headers + 1] = NULL;
                if (!l[(*o)->n_headers])
                        return -ENOMEM;
                (*o)->n_headers++;
                return 0;
        }
        case 'b':
                free((*o)->body);
                (*o)->body = NULL;
                r = read_file(arg, &(*o)->body, &(*o)->body_len);
                if (r < 0)
                        fprintf(stderr, "%s: %s\n", arg, strerror(-r));
                (*o)->has_body = r >= 0;
                return r;
        case 'c': {
                STACK_OF(X509) *s = NULL;

                r = load_certs(arg, &s);
                if (r >= 0) {
                        X509_free((*o)->client_cert);
                        (*o)->client_cert = sk_X509_shift(s);
                }
                sk_X509_pop_free(s, X509_free);
                return r;
        }
        case 'k':
                return load_key(arg, &(*o)->client_key);
        case 'C':
                return load_certs(arg, &(*o)->chain);
        case 't':
                return load_certs(arg, &(*o)->trusted);
        case 'T':
                r = parse_uint(arg, &v);
                (*o)->timeout_usec = v * 1000u;
                return r;
        case 'n':
                r = parse_uint(arg, &v);
                if (r >= 0 && (v == 0 || v > 1000))
                        r = -EINVAL;
                (*o)->concurrent = (unsigned)v;
                return r;
        case 'x':
                r = parse_uint(arg, &v);
                (*o)->cancel_after_ms = (int64_t)v;
                return r;
        case 'N':
                options_free(*o);
                *o = options_new();
                return *o ? 0 : -ENOMEM;
        default:
                return -EINVAL;
        }
}

static int parse_argv(Driver *d, int argc, char *argv[])
{
        static const struct option longopts[] = {
                { "sequential", no_argument, NULL, 's' },
                { "free-after-first", no_argument, NULL, 'F' },
                { "method", required_argument, NULL, 'm' },
                { "header", required_argument, NULL, 'H' },
                { "body-file", required_argument, NULL, 'b' },
                { "client-cert", required_argument, NULL, 'c' },
                { "client-key", required_argument, NULL, 'k' },
                { "chain", required_argument, NULL, 'C' },
                { "trust", required_argument, NULL, 't' },
                { "timeout-ms", required_argument, NULL, 'T' },
                { "concurrent", required_argument, NULL, 'n' },
                { "cancel-after-ms", required_argument, NULL, 'x' },
                { "next", no_argument, NULL, 'N' },
                {},
        };
        Options *o = options_new();
        int c, r = 0;

        if (!o)
                return -ENOMEM;
        /* "-": URLs come in order with the options, as code 1. */
        while (r >= 0 && (c = getopt_long(argc, argv, "-", longopts, NULL)) >= 0) {
                if (c == 's')
                        d->sequential = true;
                else if (c == 'F')
                        d->free_after_first = true;
                else if (c == 1)
                        r = add_jobs(d, o, optarg);
                else
                        r = parse_option(&o, c, optarg);
        }
        options_free(o);
        if (r < 0)
                return r;
        if (d->n_jobs == 0) {
                fprintf(stderr, "No URL.\n");
                return -EINVAL;
        }
        return 0;
}

int main(int argc, char *argv[])
{
        Driver d = {};
        int r;

        r = parse_argv(&d, argc, argv);
        if (r < 0) {
                fprintf(stderr, "Bad arguments: %s\n", strerror(-r));
                return 2;
        }
        r = sd_event_default(&d.event);
        if (r >= 0)
                r = http_client_new(d.event, &d.client);
        if (r < 0) {
                fprintf(stderr, "Failed to set up: %s\n", strerror(-r));
                return 2;
        }
        for (size_t i = 0; i < d.n_jobs; i++)
                d.jobs[i].driver = &d;

        driver_start_jobs(&d);
        driver_maybe_exit(&d);
        r = sd_event_loop(d.event);
        if (r < 0)
                fprintf(stderr, "Event loop failed: %s\n", strerror(-r));

        http_client_free(d.client);
        for (size_t i = 0; i < d.n_jobs; i++)
                sd_event_source_disable_unref(d.jobs[i].cancel_timer);
        sd_event_unref(d.event);
        for (size_t i = 0; i < d.n_options; i++)
                options_free(d.options[i]);
        free(d.options);
        free(d.jobs);
        return r < 0 ? 1 : 0;
}
