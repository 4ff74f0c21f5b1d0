/* SPDX-License-Identifier: MIT */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "aziot-key.h"
#include "cert-renewal.h"
#include "certd.h"
#include "certs-enroll.h"
#include "certs-est.h"
#include "certs-object.h"
#include "certs-openssl.h"
#include "log.h"
#include "macro.h"
#include "openssl-util.h"

#define KEYS_BUS_NAME "org.aziot.Keys1"
#define KEYS_OBJECT_PATH "/org/aziot/Keys1"
#define KEYS_INTERFACE "org.aziot.Keys1"
#define KEYS_ERROR_NOT_FOUND "org.aziot.Keys1.Error.NotFound"
#define KEYD_TIMEOUT_USEC (30ull * 1000ull * 1000ull)
#define TEMP_KEY_SUFFIX "-temp"
#define MESSAGE_MAX 768

/* ---- fault injection ---- */

static void crash_point(const char *step)
{
        const char *at = getenv("AZIOT_CERTD_CRASH_AT");

        if (at && streq(at, step)) {
                log_warning("AZIOT_CERTD_CRASH_AT=%s: killing certd.", step);
                (void)raise(SIGKILL);
        }
}

/* ---- keyd, as certd itself ---- */

static int keyd_error(int r, const sd_bus_error *e, const char *what, const char *id,
                      char *message, size_t size)
{
        (void)snprintf(message, size, "keyd: %s %s: %s", what, id,
                       e && e->message ? e->message : strerror(-r));
        return r;
}

static int keyd_delete_key_pair(Manager *m, const char *id, char *message, size_t size)
{
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *handle;
        int r;

        r = sd_bus_call_method(m->bus, KEYS_BUS_NAME, KEYS_OBJECT_PATH, KEYS_INTERFACE,
                               "LoadKeyPair", &e, &reply, "sa{sv}", id, 0);
        if (r < 0 && sd_bus_error_has_name(&e, KEYS_ERROR_NOT_FOUND))
                return 0;
        if (r < 0)
                return keyd_error(r, &e, "loading the key pair", id, message, size);
        r = sd_bus_message_read(reply, "s", &handle);
        if (r < 0)
                return keyd_error(r, NULL, "loading the key pair", id, message, size);
        r = sd_bus_call_method(m->bus, KEYS_BUS_NAME, KEYS_OBJECT_PATH, KEYS_INTERFACE,
                               "DeleteKeyPair", &e, NULL, "sa{sv}", handle, 0);
        if (r < 0)
                return keyd_error(r, &e, "deleting the key pair", id, message, size);
        return 1;
}

static int keyd_create_key_pair(Manager *m, const char *id, char *message, size_t size)
{
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call_method(m->bus, KEYS_BUS_NAME, KEYS_OBJECT_PATH, KEYS_INTERFACE,
                               "CreateKeyPairIfNotExists", &e, NULL, "sasa{sv}", id, 3, "ec-p256",
                               "rsa-4096", "*", 0);
        if (r < 0)
                return keyd_error(r, &e, "creating the key pair", id, message, size);
        return 0;
}

static int keyd_move_key_pair(Manager *m, const char *from, const char *to, char *message,
                              size_t size)
{
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call_method(m->bus, KEYS_BUS_NAME, KEYS_OBJECT_PATH, KEYS_INTERFACE,
                               "MoveKeyPair", &e, NULL, "ssa{sv}", from, to, 0);
        if (r < 0)
                return keyd_error(r, &e, "moving the key pair", from, message, size);
        return 0;
}

static int load_key(const char *id, EVP_PKEY **ret, char *message, size_t size)
{
        _cleanup_free_ char *why = NULL;
        int r;

        r = aziot_key_evp_pkey(NULL, id, ret, &why);
        if (r < 0)
                (void)snprintf(message, size, "keyd: loading the key pair %s: %s", id,
                               why ? why : strerror(-r));
        return r;
}

/* ---- certificates ---- */

static int chain_from_pem(const char *pem, size_t len, X509Stack **ret)
{
        _cleanup_(sk_X509_pop_freep) X509Stack *chain = sk_X509_new_null();
        _cleanup_(BIO_freep) BIO *bio = BIO_new_mem_buf(pem, (int)len);
        X509 *x;

        if (!chain || !bio)
                return -ENOMEM;
        while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
                if (!sk_X509_push(chain, x)) {
                        X509_free(x);
                        return -ENOMEM;
                }
        ERR_clear_error();
        if (sk_X509_num(chain) == 0)
                return -EBADMSG;
        *ret = TAKE_PTR(chain);
        return 0;
}

static int load_chain(Manager *m, const char *id, X509Stack **ret, char *message, size_t size)
{
        _cleanup_free_ char *pem = NULL;
        size_t len = 0;
        int r;

        r = certs_store_get(m->store, id, &pem, &len);
        if (r >= 0)
                r = chain_from_pem(pem, len, ret);
        if (r < 0)
                (void)snprintf(message, size, "the certificate %s cannot be read: %s", id,
                               r == -ENOENT ? "it does not exist" : strerror(-r));
        return r;
}

/* Whether cert is for key: their SubjectPublicKeyInfo are the same bytes. */
static bool cert_matches_key(X509 *cert, EVP_PKEY *key)
{
        _cleanup_free_ unsigned char *a = NULL, *b = NULL;
        int na, nb;

        na = i2d_PUBKEY(X509_get0_pubkey(cert), &a);
        nb = i2d_PUBKEY(key, &b);
        ERR_clear_error();
        return na > 0 && na == nb && memcmp(a, b, (size_t)na) == 0;
}

static bool cert_expired(X509 *cert)
{
        return X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0;
}

/* ---- settings, copied: the configuration may be reloaded while a task runs ---- */

typedef struct EstSettings {
        char *url, *username, *password;
        char *identity_cert, *identity_pk, *bootstrap_cert, *bootstrap_pk;
} EstSettings;

static void est_settings_done(EstSettings *s)
{
        if (s->password)
                explicit_bzero(s->password, strlen(s->password));
        free(s->url);
        free(s->username);
        free(s->password);
        free(s->identity_cert);
        free(s->identity_pk);
        free(s->bootstrap_cert);
        free(s->bootstrap_pk);
        *s = (EstSettings){};
}

static int dup_or_null(const char *s, char **ret)
{
        *ret = NULL;
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int est_settings_set(EstSettings *s, const char *url, const CertsEstAuth *a)
{
        if (dup_or_null(url, &s->url) < 0 || dup_or_null(a->username, &s->username) < 0 ||
            dup_or_null(a->password, &s->password) < 0 ||
            dup_or_null(a->identity_cert, &s->identity_cert) < 0 ||
            dup_or_null(a->identity_pk, &s->identity_pk) < 0 ||
            dup_or_null(a->bootstrap_cert, &s->bootstrap_cert) < 0 ||
            dup_or_null(a->bootstrap_pk, &s->bootstrap_pk) < 0) {
                est_settings_done(s);
                return -ENOMEM;
        }
        return 0;
}

/* ---- tasks ---- */

typedef enum TaskKind {
        TASK_ISSUE,
        TASK_RENEW,
} TaskKind;

struct EnrollTask {
        Manager *m;
        EnrollTask *next;
        TaskKind kind;
        char *id;            /* the certificate made */
        EstSettings est;
        CertsEstJob *job;
        EVP_PKEY *new_key;   /* the key of the CSR we made (bootstrap, renewal) */
        /* TASK_ISSUE */
        sd_bus_message *call;
        X509_REQ *csr;
        X509_NAME *subject;  /* override for a bootstrap CSR; NULL: the caller's */
        bool identity_checked;
        int identity_error;  /* outcome of the renewal waited for */
        /* TASK_RENEW */
        bool rotate;
        char *new_key_id;    /* "<identity_pk>-temp", or identity_pk without rotation */
};

static void task_free(EnrollTask *t)
{
        if (!t)
                return;
        if (t->job)
                certs_est_job_cancel(t->job);
        renewal_engine_cancel_waits(t->m->renewal, t);
        est_settings_done(&t->est);
        EVP_PKEY_free(t->new_key);
        sd_bus_message_unref(t->call);
        X509_REQ_free(t->csr);
        X509_NAME_free(t->subject);
        free(t->new_key_id);
        free(t->id);
        free(t);
}

static void queue_run(Manager *m);
static void task_start(EnrollTask *t);

static void queue_push(Manager *m, EnrollTask *t, bool front)
{
        if (front) {
                t->next = m->tasks;
                m->tasks = t;
                return;
        }
        t->next = NULL;
        EnrollTask **p = &m->tasks;
        while (*p)
                p = &(*p)->next;
        *p = t;
}

static void queue_run(Manager *m)
{
        while (!m->running && m->tasks) {
                EnrollTask *t = m->tasks;

                m->tasks = t->next;
                t->next = NULL;
                m->running = t;
                task_start(t);
        }
}

/* The running task t is over (it was answered or reported). */
static void task_end(EnrollTask *t)
{
        Manager *m = t->m;

        if (m->running == t)
                m->running = NULL;
        task_free(t);
        queue_run(m);
}

static void task_fail(EnrollTask *t, int r, const char *message)
{
        if (t->kind == TASK_ISSUE) {
                log_warning("EST issuance of %s failed: %s", t->id, message);
                (void)sd_bus_reply_method_errorf(t->call, CERTS_ERROR_FAILED, "%s", message);
        } else
                renewal_engine_finished(t->m->renewal, t->id, r, false, message);
        task_end(t);
}

static int enroll(EnrollTask *t, X509_REQ *csr, const char *client_cert, const char *client_pk,
                  bool reenroll, CertsEstDone done, char *message, size_t size)
{
        _cleanup_(sk_X509_pop_freep) X509Stack *chain = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        int r;

        if (client_cert) {
                r = load_chain(t->m, client_cert, &chain, message, size);
                if (r < 0)
                        return r;
                r = load_key(client_pk, &key, message, size);
                if (r < 0)
                        return r;
                if (!cert_matches_key(sk_X509_value(chain, 0), key)) {
                        (void)snprintf(message, size,
                                       "the certificate %s is not for the key pair %s",
                                       client_cert, client_pk);
                        return -EINVAL;
                }
        }
        log_info("Enrolling %s at %s%s%s.", t->id, t->est.url,
                 client_cert ? " as " : "", strempty(client_cert));
        r = certs_est_enroll(t->m->http,
                             &(CertsEstRequest){
                                     .url = t->est.url,
                                     .username = t->est.username,
                                     .password = t->est.password,
                                     .client_chain = chain,
                                     .client_key = key,
                                     .trusted = t->m->est_trusted,
                                     .reenroll = reenroll,
                             },
                             csr, done, t, &t->job);
        if (r < 0)
                (void)snprintf(message, size, "starting the EST request: %s", strerror(-r));
        return r;
}

/* The first certificate of pem must be for the key of the CSR we sent. */
static int check_issued_for(const char *pem, size_t len, EVP_PKEY *key, char *message,
                            size_t size)
{
        _cleanup_(sk_X509_pop_freep) X509Stack *chain = NULL;
        int r;

        r = chain_from_pem(pem, len, &chain);
        if (r < 0 || !cert_matches_key(sk_X509_value(chain, 0), key)) {
                (void)snprintf(message, size,
                               "the EST server returned a certificate for another key");
                return -EBADMSG;
        }
        return 0;
}

static int store_put(Manager *m, const char *id, const char *pem, size_t len, char *message,
                     size_t size)
{
        bool existed = certs_object_exists(m, id);
        int r;

        r = certs_store_put(m->store, id, pem, len);
        if (r < 0) {
                (void)snprintf(message, size, "storing the certificate %s: %s", id,
                               strerror(-r));
                return r;
        }
        certs_object_emit_stored(m, id, existed);
        return 0;
}

/* -- issuance -- */

static void on_issued(int error, const char *msg, const char *pem, size_t len, void *userdata)
{
        EnrollTask *t = userdata;
        char message[MESSAGE_MAX];
        int r;

        t->job = NULL;
        if (error < 0) {
                task_fail(t, error, msg);
                return;
        }
        r = store_put(t->m, t->id, pem, len, message, sizeof(message));
        if (r < 0) {
                task_fail(t, r, message);
                return;
        }
        log_info("Issued the certificate %s by EST.", t->id);
        (void)sd_bus_reply_method_return(t->call, "s", pem);
        task_end(t);
}

static void issue_enroll(EnrollTask *t)
{
        char message[MESSAGE_MAX];
        int r;

        r = enroll(t, t->csr, t->est.identity_cert, t->est.identity_pk, false, on_issued, message,
                   sizeof(message));
        if (r < 0)
                task_fail(t, r, message);
}

static void on_bootstrapped(int error, const char *msg, const char *pem, size_t len,
                            void *userdata)
{
        EnrollTask *t = userdata;
        RenewalConfig renewal = certs_config_est_renewal(&t->m->config);
        char message[MESSAGE_MAX];
        int r;

        t->job = NULL;
        if (error < 0) {
                (void)snprintf(message, sizeof(message),
                               "enrolling the EST identity %s with the bootstrap identity: %s",
                               t->est.identity_cert, msg);
                task_fail(t, error, message);
                return;
        }
        r = check_issued_for(pem, len, t->new_key, message, sizeof(message));
        if (r >= 0)
                r = store_put(t->m, t->est.identity_cert, pem, len, message, sizeof(message));
        if (r < 0) {
                task_fail(t, r, message);
                return;
        }
        log_info("Got the EST identity certificate %s with the bootstrap identity.",
                 t->est.identity_cert);
        r = renewal_engine_add(t->m->renewal, t->est.identity_cert, &renewal);
        if (r < 0)
                log_warning_errno(r, "Failed to track %s for renewal: %m", t->est.identity_cert);
        issue_enroll(t);
}

static void issue_bootstrap(EnrollTask *t)
{
        _cleanup_(X509_REQ_freep) X509_REQ *csr = NULL;
        char message[MESSAGE_MAX];
        int r;

        if (!t->est.bootstrap_cert) {
                (void)snprintf(message, sizeof(message),
                               "there is no EST identity certificate %s and no bootstrap identity "
                               "to enroll one (bootstrap_identity_cert)",
                               t->est.identity_cert);
                task_fail(t, -ENOENT, message);
                return;
        }
        /* A stale key pair of the id may be left from an earlier attempt. */
        r = keyd_delete_key_pair(t->m, t->est.identity_pk, message, sizeof(message));
        if (r >= 0)
                r = keyd_create_key_pair(t->m, t->est.identity_pk, message, sizeof(message));
        if (r >= 0)
                r = load_key(t->est.identity_pk, &t->new_key, message, sizeof(message));
        if (r >= 0) {
                r = certs_est_identity_csr(t->subject ? t->subject
                                                      : X509_REQ_get_subject_name(t->csr),
                                           t->new_key, &csr);
                if (r < 0)
                        (void)snprintf(message, sizeof(message),
                                       "making the EST identity CSR: %s", strerror(-r));
        }
        if (r >= 0)
                r = enroll(t, csr, t->est.bootstrap_cert, t->est.bootstrap_pk, false,
                           on_bootstrapped, message, sizeof(message));
        if (r < 0)
                task_fail(t, r, message);
}

static void on_identity_ready(void *userdata, int error)
{
        EnrollTask *t = userdata;

        /* Back to the front of the queue; it goes on when it is its turn. */
        t->identity_error = error;
        queue_push(t->m, t, true);
        queue_run(t->m);
}

static void issue_start(EnrollTask *t)
{
        Manager *m = t->m;
        _cleanup_(sk_X509_pop_freep) X509Stack *identity = NULL;
        RenewalConfig renewal = certs_config_est_renewal(&m->config);
        char message[MESSAGE_MAX];
        int r;

        if (!t->est.identity_cert) {
                issue_enroll(t);
                return;
        }
        r = load_chain(m, t->est.identity_cert, &identity, message, sizeof(message));
        if (r == -ENOENT) {
                issue_bootstrap(t);
                return;
        }
        if (r < 0) {
                task_fail(t, r, message);
                return;
        }
        if (!t->identity_checked) {
                t->identity_checked = true;
                if (!renewal_engine_tracks(m->renewal, t->est.identity_cert))
                        (void)renewal_engine_add(m->renewal, t->est.identity_cert, &renewal);
                r = renewal_engine_renew_now(m->renewal, t->est.identity_cert,
                                             on_identity_ready, t);
                if (r == 0) {
                        /* Parked until the renewal is over; the renewal itself is a task. */
                        if (m->running == t)
                                m->running = NULL;
                        queue_run(m);
                        return;
                }
        }
        if (t->identity_error < 0) {
                if (cert_expired(sk_X509_value(identity, 0))) {
                        (void)snprintf(message, sizeof(message),
                                       "the EST identity certificate %s has expired and could not "
                                       "be renewed",
                                       t->est.identity_cert);
                        task_fail(t, t->identity_error, message);
                        return;
                }
                log_warning("Renewing the EST identity %s failed; enrolling %s with the current "
                            "one, which is still valid.",
                            t->est.identity_cert, t->id);
        }
        issue_enroll(t);
}

/* -- renewal of an EST identity -- */

static void on_renewed(int error, const char *msg, const char *pem, size_t len, void *userdata)
{
        EnrollTask *t = userdata;
        Manager *m = t->m;
        char message[MESSAGE_MAX];
        int r;

        t->job = NULL;
        if (error < 0) {
                task_fail(t, error, msg);
                return;
        }
        r = check_issued_for(pem, len, t->new_key, message, sizeof(message));
        if (r < 0) {
                task_fail(t, r, message);
                return;
        }

        /* The commit (certs-enroll.h): pending copy, key, certificate. */
        r = certs_store_put_pending(m->store, t->id, pem, len);
        if (r < 0) {
                (void)snprintf(message, sizeof(message), "saving the renewed certificate: %s",
                               strerror(-r));
                task_fail(t, r, message);
                return;
        }
        crash_point("renewal-pending-written");
        if (t->rotate) {
                r = keyd_move_key_pair(m, t->new_key_id, t->est.identity_pk, message,
                                       sizeof(message));
                if (r < 0) {
                        /* The old key and certificate are still in place. */
                        (void)certs_store_drop_pending(m->store, t->id);
                        task_fail(t, r, message);
                        return;
                }
        }
        crash_point("renewal-key-moved");
        r = store_put(m, t->id, pem, len, message, sizeof(message));
        if (r < 0) {
                /* The pending copy stays: it is committed at the next start or reload. */
                task_fail(t, r, message);
                return;
        }
        (void)certs_store_drop_pending(m->store, t->id);
        certs_object_emit_renewed(m, t->id);
        renewal_engine_finished(m->renewal, t->id, 0, false, NULL);
        task_end(t);
}

static void renew_start(EnrollTask *t)
{
        Manager *m = t->m;
        _cleanup_(sk_X509_pop_freep) X509Stack *current = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *csr = NULL;
        char message[MESSAGE_MAX];
        bool expired;
        int r;

        r = load_chain(m, t->id, &current, message, sizeof(message));
        if (r < 0) {
                task_fail(t, r, message);
                return;
        }
        expired = cert_expired(sk_X509_value(current, 0));
        if (expired && !t->est.bootstrap_cert) {
                task_fail(t, -EKEYEXPIRED,
                          "the EST identity certificate has expired and no bootstrap identity is "
                          "configured to get a new one");
                return;
        }
        if (t->rotate) {
                if (asprintf(&t->new_key_id, "%s" TEMP_KEY_SUFFIX, t->est.identity_pk) < 0) {
                        t->new_key_id = NULL;
                        task_fail(t, -ENOMEM, "out of memory");
                        return;
                }
                r = keyd_delete_key_pair(m, t->new_key_id, message, sizeof(message));
                if (r >= 0)
                        r = keyd_create_key_pair(m, t->new_key_id, message, sizeof(message));
        } else {
                t->new_key_id = strdup(t->est.identity_pk);
                r = t->new_key_id ? 0 : -ENOMEM;
        }
        if (r >= 0)
                r = load_key(t->new_key_id, &t->new_key, message, sizeof(message));
        if (r >= 0) {
                r = certs_est_identity_csr(X509_get_subject_name(sk_X509_value(current, 0)),
                                           t->new_key, &csr);
                if (r < 0)
                        (void)snprintf(message, sizeof(message),
                                       "making the renewal CSR: %s", strerror(-r));
        }
        if (r >= 0)
                r = expired ? enroll(t, csr, t->est.bootstrap_cert, t->est.bootstrap_pk, false,
                                     on_renewed, message, sizeof(message))
                            : enroll(t, csr, t->id, t->est.identity_pk, true, on_renewed,
                                     message, sizeof(message));
        if (r < 0)
                task_fail(t, r, message);
}

static void task_start(EnrollTask *t)
{
        if (t->kind == TASK_ISSUE)
                issue_start(t);
        else
                renew_start(t);
}

/* RenewalOps.renew: a task at the end of the queue. */
static int renew(RenewalEngine *e, const char *id, const RenewalConfig *config, void *userdata)
{
        Manager *m = userdata;
        EnrollTask *t;
        CertsEstAuth auth = {};
        const char *url, *problem;

        if (certs_config_est_identity(&m->config, id, &auth) < 0) {
                renewal_engine_finished(e, id, -ENOENT, true,
                                        "the configuration does not name it any more");
                return 0;
        }
        /* The identity's own URL; its authentication is that of the block naming it. */
        (void)certs_config_est(&m->config, id, &url, &(CertsEstAuth){}, &problem);
        if (!url) {
                renewal_engine_finished(e, id, -ENOENT, false, "EST URL is not configured");
                return 0;
        }
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        *t = (EnrollTask){ .m = m, .kind = TASK_RENEW, .rotate = config->rotate_key };
        t->id = strdup(id);
        if (!t->id || est_settings_set(&t->est, url, &auth) < 0) {
                task_free(t);
                return -ENOMEM;
        }
        queue_push(m, t, false);
        queue_run(m);
        return 0;
}

static int read_cert(const char *id, RenewalCertInfo *ret, void *userdata)
{
        Manager *m = userdata;
        _cleanup_free_ char *pem = NULL;
        _cleanup_(sk_X509_pop_freep) X509Stack *chain = NULL;
        struct tm nb = {}, na = {};
        time_t b, a;
        size_t len = 0;
        int r;

        r = certs_store_get(m->store, id, &pem, &len);
        if (r < 0)
                return r;
        r = chain_from_pem(pem, len, &chain);
        if (r < 0)
                return r;
        if (ASN1_TIME_to_tm(X509_get0_notBefore(sk_X509_value(chain, 0)), &nb) != 1 ||
            ASN1_TIME_to_tm(X509_get0_notAfter(sk_X509_value(chain, 0)), &na) != 1)
                return -EBADMSG;
        b = timegm(&nb);
        a = timegm(&na);
        *ret = (RenewalCertInfo){
                .not_before = b > 0 ? (uint64_t)b * RENEWAL_USEC_PER_SEC : 0,
                .not_after = a > 0 ? (uint64_t)a * RENEWAL_USEC_PER_SEC : 0,
        };
        if (!EVP_Digest(pem, len, ret->digest, NULL, EVP_sha256(), NULL))
                return -ENOMEM;
        return 0;
}

static void renewal_changed(const char *id, void *userdata)
{
        certs_object_emit_renewal_state(userdata, id);
}

int certs_enroll_init(Manager *m)
{
        static const RenewalOps ops = {
                .read = read_cert,
                .renew = renew,
                .changed = renewal_changed,
        };
        int r;

        r = http_client_new(m->event, &m->http);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the HTTP client: %m");
        r = renewal_engine_new(m->event, &ops, m, &m->renewal);
        if (r < 0)
                return log_oom();
        return 0;
}

void certs_enroll_done(Manager *m)
{
        while (m->tasks) {
                EnrollTask *t = m->tasks;

                m->tasks = t->next;
                if (t->call)
                        (void)sd_bus_reply_method_errorf(t->call, CERTS_ERROR_FAILED,
                                                         "certd is stopping");
                task_free(t);
        }
        if (m->running) {
                if (m->running->call)
                        (void)sd_bus_reply_method_errorf(m->running->call, CERTS_ERROR_FAILED,
                                                         "certd is stopping");
                task_free(m->running);
                m->running = NULL;
        }
        m->renewal = renewal_engine_free(m->renewal);
        m->http = http_client_free(m->http);
        sk_X509_pop_free(m->est_trusted, X509_free);
        m->est_trusted = NULL;
}

int certs_enroll_prepare(Manager *m, const CertsConfig *c, ConfigError *ret_error)
{
        _cleanup_(sk_X509_pop_freep) X509Stack *trusted = sk_X509_new_null();
        _cleanup_free_ const char **ids = NULL;
        int r;

        if (!trusted)
                return -ENOMEM;
        r = certs_config_est_trusted(c, &ids);
        if (r < 0)
                return r;
        for (const char **id = ids; *id; id++) {
                _cleanup_(sk_X509_pop_freep) X509Stack *chain = NULL;
                char message[sizeof(ret_error->message) / 2];

                r = load_chain(m, *id, &chain, message, sizeof(message));
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        ret_error->line = ret_error->column = 0;
                        (void)snprintf(ret_error->message, sizeof(ret_error->message),
                                       "cert_issuance.est.trusted_certs: %s", message);
                        return r;
                }
                while (sk_X509_num(chain) > 0)
                        if (!sk_X509_push(trusted, sk_X509_shift(chain)))
                                return -ENOMEM;
        }
        sk_X509_pop_free(m->est_trusted, X509_free);
        m->est_trusted = TAKE_PTR(trusted);
        return 0;
}

/* Finishes or drops a renewal of id interrupted between its steps (certs-enroll.h). */
static void recover_pending(Manager *m, const char *id, const CertsEstAuth *auth)
{
        _cleanup_free_ char *pem = NULL, *temp = NULL;
        _cleanup_(sk_X509_pop_freep) X509Stack *chain = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL, *temp_key = NULL;
        char message[MESSAGE_MAX];
        size_t len = 0;
        int r;

        r = certs_store_get_pending(m->store, id, &pem, &len);
        if (r == -ENOENT)
                return;
        if (r < 0 || chain_from_pem(pem, len, &chain) < 0) {
                log_warning("The pending renewed certificate of %s cannot be read; dropping it.",
                            id);
                (void)certs_store_drop_pending(m->store, id);
                return;
        }
        if (load_key(auth->identity_pk, &key, message, sizeof(message)) < 0) {
                log_warning("Cannot finish the interrupted renewal of %s yet: %s", id, message);
                return;
        }
        if (!cert_matches_key(sk_X509_value(chain, 0), key)) {
                if (asprintf(&temp, "%s" TEMP_KEY_SUFFIX, auth->identity_pk) < 0)
                        return (void)log_oom();
                if (load_key(temp, &temp_key, message, sizeof(message)) < 0 ||
                    !cert_matches_key(sk_X509_value(chain, 0), temp_key)) {
                        log_info("The renewal of %s was interrupted before its key was replaced; "
                                 "the current certificate stays.",
                                 id);
                        (void)certs_store_drop_pending(m->store, id);
                        return;
                }
                r = keyd_move_key_pair(m, temp, auth->identity_pk, message, sizeof(message));
                if (r < 0) {
                        log_warning("Cannot finish the interrupted renewal of %s yet: %s", id,
                                    message);
                        return;
                }
        }
        r = store_put(m, id, pem, len, message, sizeof(message));
        if (r < 0) {
                log_warning("Cannot finish the interrupted renewal of %s yet: %s", id, message);
                return;
        }
        (void)certs_store_drop_pending(m->store, id);
        log_info("Finished the interrupted renewal of %s.", id);
        certs_object_emit_renewed(m, id);
}

static void track_identity(const char *id, const CertsEstAuth *auth, void *userdata)
{
        Manager *m = userdata;
        RenewalConfig renewal = certs_config_est_renewal(&m->config);
        int r;

        /* Written by upstream's certd, it is not in the index yet. */
        r = certs_store_adopt(m->store, id);
        if (r < 0)
                log_warning_errno(r, "Failed to index the certificate %s: %m", id);
        /* A pending copy only exists between two steps of one synchronous commit: whatever is
         * found here was left by a crash or a failed write. */
        recover_pending(m, id, auth);
        r = renewal_engine_add(m->renewal, id, &renewal);
        if (r == -ENOENT) {
                log_debug("The EST identity certificate %s does not exist yet.", id);
                return;
        }
        if (r < 0)
                log_warning_errno(r, "Cannot track the EST identity certificate %s: %m", id);
}

void certs_enroll_apply(Manager *m)
{
        renewal_engine_mark(m->renewal);
        certs_config_foreach_est_identity(&m->config, track_identity, m);
        renewal_engine_sweep(m->renewal);
}

int certs_enroll_issue(Manager *m, sd_bus_message *msg, const char *id, const char *csr,
                       const X509_NAME *subject, sd_bus_error *error)
{
        _cleanup_(BIO_freep) BIO *bio = NULL;
        EnrollTask *t;
        CertsEstAuth auth = {};
        const char *url, *problem;
        int r;

        r = certs_config_est(&m->config, id, &url, &auth, &problem);
        if (r < 0)
                return sd_bus_error_set(error, CERTS_ERROR_FAILED, problem);

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        *t = (EnrollTask){ .m = m, .kind = TASK_ISSUE, .call = sd_bus_message_ref(msg) };
        t->id = strdup(id);
        bio = BIO_new_mem_buf(csr, -1);
        if (!t->id || !bio || est_settings_set(&t->est, url, &auth) < 0 ||
            (subject && !(t->subject = X509_NAME_dup(subject)))) {
                task_free(t);
                return -ENOMEM;
        }
        t->csr = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
        if (!t->csr || X509_REQ_verify(t->csr, X509_REQ_get0_pubkey(t->csr)) != 1) {
                ERR_clear_error();
                task_free(t);
                return sd_bus_error_set(error, CERTS_ERROR_INVALID_PARAMETER,
                                        "parameter \"csr\" has an invalid value");
        }
        queue_push(m, t, false);
        queue_run(m);
        return 1;
}

bool certs_enroll_busy(Manager *m)
{
        return m->running || m->tasks || renewal_engine_size(m->renewal) > 0 ||
               (m->http && http_client_pending(m->http) > 0);
}
