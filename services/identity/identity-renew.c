/* SPDX-License-Identifier: MIT */
/* Renewal of the device identity certificate of DPS X.509 provisioning (spec §4.10), with
 * [provisioning.attestation.identity_auto_renew]: a new key "<identity_pk>-temp" (rsa-2048, when
 * rotate_key), a CSR with the old subject, a certificate for it from certd (issued as
 * "<identity_cert>-temp", which is deleted after), a DPS registration with the new certificate,
 * and only then the new certificate and key put in place.
 *
 * Putting them in place is crash-safe: the new certificate is first kept in
 * <homedir>/renewed_identity.pem, then imported as identity_cert, then the key is moved; at start
 * a copy left there is finished (imported, the temporary key moved) when its key is the one in
 * place or the temporary one, and dropped otherwise. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "atomic-file.h"
#include "aziot-key.h"
#include "cert-renewal.h"
#include "identity-dps.h"
#include "identity-renew.h"
#include "identityd.h"
#include "log.h"
#include "macro.h"
#include "openssl-util.h"

#define MESSAGE_MAX 768
#define PENDING "renewed_identity.pem"
#define TEMP_SUFFIX "-temp"

static int first_cert(const char *pem, X509 **ret)
{
        _cleanup_(BIO_freep) BIO *bio = BIO_new_mem_buf(pem, -1);

        if (!bio)
                return -ENOMEM;
        *ret = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        ERR_clear_error();
        return *ret ? 0 : -EBADMSG;
}

static uint64_t asn1_usec(const ASN1_TIME *t)
{
        struct tm tm = {};
        time_t secs;

        if (ASN1_TIME_to_tm(t, &tm) != 1)
                return 0;
        secs = timegm(&tm);
        return secs > 0 ? (uint64_t)secs * RENEWAL_USEC_PER_SEC : 0;
}

static int read_cert(const char *id, RenewalCertInfo *ret, void *userdata)
{
        Manager *m = userdata;
        _cleanup_free_ char *pem = NULL;
        _cleanup_(X509_freep) X509 *x = NULL;
        char message[MESSAGE_MAX];
        int r;

        r = identity_call_string(m, "certd", "GetCertificate", &pem, message, sizeof(message),
                                 "s", id);
        if (r < 0)
                return r;
        r = first_cert(pem, &x);
        if (r < 0)
                return r;
        *ret = (RenewalCertInfo){ .not_before = asn1_usec(X509_get0_notBefore(x)),
                                  .not_after = asn1_usec(X509_get0_notAfter(x)) };
        return EVP_Digest(pem, strlen(pem), ret->digest, NULL, EVP_sha256(), NULL) ? 0 : -ENOMEM;
}

/* Whether cert is for key: their SubjectPublicKeyInfo are the same bytes. */
static bool cert_matches_key(X509 *cert, EVP_PKEY *key)
{
        _cleanup_free_ unsigned char *a = NULL, *b = NULL;
        int na = i2d_PUBKEY(X509_get0_pubkey(cert), &a), nb = i2d_PUBKEY(key, &b);

        ERR_clear_error();
        return na > 0 && na == nb && memcmp(a, b, (size_t)na) == 0;
}

static bool key_matches(const char *key_id, X509 *cert)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_free_ char *why = NULL;

        return aziot_key_evp_pkey(NULL, key_id, &key, &why) >= 0 && cert_matches_key(cert, key);
}

static char *pending_path(Manager *m)
{
        char *p = NULL;

        return asprintf(&p, "%s/" PENDING, m->config.homedir) < 0 ? NULL : p;
}

static void drop_pending(Manager *m)
{
        _cleanup_free_ char *path = pending_path(m);

        if (path && unlink(path) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Failed to remove %s: %m", path);
}

/* Imports pem as the identity certificate and moves the temporary key over the key, the pending
 * copy being the proof of what is in flight. */
static int commit(Manager *m, const char *pem, bool move_key, char *message, size_t size)
{
        const IdentityProvisioning *p = &m->config.provisioning;
        _cleanup_free_ char *temp = NULL;
        int r;

        r = identity_call_string(m, "certd", "ImportCertificate", NULL, message, size, "ss",
                                 p->identity_cert, pem);
        if (r < 0)
                return r;
        if (move_key) {
                if (asprintf(&temp, "%s" TEMP_SUFFIX, p->identity_pk) < 0)
                        return -ENOMEM;
                r = identity_call_string(m, "keyd", "MoveKeyPair", NULL, message, size, "ss", temp,
                                         p->identity_pk);
                if (r < 0)
                        return r;
        }
        drop_pending(m);
        return 0;
}

void identity_renew_recover(Manager *m)
{
        const IdentityProvisioning *p = &m->config.provisioning;
        _cleanup_free_ char *path = pending_path(m), *pem = NULL, *temp = NULL;
        _cleanup_(X509_freep) X509 *x = NULL;
        char message[MESSAGE_MAX];
        int r;

        if (!path || read_file_full(path, 1024 * 1024, &pem, NULL) < 0)
                return;
        if (p->source != IDENTITY_SOURCE_DPS || p->auth != IDENTITY_AUTH_X509 ||
            first_cert(pem, &x) < 0) {
                drop_pending(m);
                return;
        }
        if (asprintf(&temp, "%s" TEMP_SUFFIX, p->identity_pk) < 0)
                return;
        if (key_matches(p->identity_pk, x))
                r = commit(m, pem, false, message, sizeof(message));
        else if (key_matches(temp, x))
                r = commit(m, pem, true, message, sizeof(message));
        else {
                log_info("The identity certificate's renewal was interrupted before it was "
                         "registered; the current one stays.");
                drop_pending(m);
                return;
        }
        if (r < 0)
                log_warning("Cannot finish the interrupted renewal of the identity certificate: "
                            "%s",
                            message);
        else
                log_info("Finished the interrupted renewal of the identity certificate.");
}

/* ---- a renewal ---- */

typedef struct Renewal {
        Manager *m;
        char *pem;  /* the new chain */
        bool rotate;
} Renewal;

static void renewal_free(Renewal *rn)
{
        if (!rn)
                return;
        free(rn->pem);
        free(rn);
}

static void finished(Renewal *rn, int error, const char *message)
{
        Manager *m = rn->m;

        renewal_free(rn);
        renewal_engine_finished(m->renewal, m->config.provisioning.identity_cert, error, false,
                                message);
}

static void on_registered(Manager *m, int error, const char *message, bool network,
                          const IdentityDevice *device, void *userdata)
{
        Renewal *rn = userdata;
        _cleanup_free_ char *path = NULL;
        char text[MESSAGE_MAX];
        int r;

        if (error < 0) {
                finished(rn, error, message);
                return;
        }
        /* DPS knows the new certificate: put it in place, crash-safe. */
        path = pending_path(m);
        r = path ? write_file_atomic(path, rn->pem, strlen(rn->pem), 0600) : -ENOMEM;
        if (r >= 0)
                r = commit(m, rn->pem, rn->rotate, text, sizeof(text));
        else
                (void)snprintf(text, sizeof(text), "keeping the renewed certificate: %s",
                               strerror(-r));
        if (r < 0) {
                finished(rn, r, text);
                return;
        }
        r = identity_adopt_device(m, device, text, sizeof(text));
        if (r < 0)
                log_warning("%s", text);
        log_info("Renewed the identity certificate %s and registered it with DPS.",
                 m->config.provisioning.identity_cert);
        finished(rn, 0, NULL);
}

/* RenewalOps.renew. */
static int renew(RenewalEngine *e, const char *id, const RenewalConfig *config, void *userdata)
{
        Manager *m = userdata;
        const IdentityProvisioning *p = &m->config.provisioning;
        _cleanup_free_ char *temp_key = NULL, *temp_cert = NULL, *old_pem = NULL, *handle = NULL,
                            *why = NULL, *new_pem = NULL;
        _cleanup_(X509_freep) X509 *old = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        IdentityCredentials creds = {};
        char message[MESSAGE_MAX];
        Renewal *rn;
        char *data;
        int r;

        if (asprintf(&temp_key, "%s" TEMP_SUFFIX, p->identity_pk) < 0 ||
            asprintf(&temp_cert, "%s" TEMP_SUFFIX, p->identity_cert) < 0)
                return -ENOMEM;
        r = identity_call_string(m, "certd", "GetCertificate", &old_pem, message,
                                 sizeof(message), "s", id);
        if (r >= 0)
                r = first_cert(old_pem, &old);
        if (r < 0) {
                renewal_engine_finished(e, id, r, false, "the identity certificate is gone");
                return 0;
        }
        /* The key of the new certificate: a new one, or the same (rotate_key = false). */
        if (config->rotate_key) {
                if (identity_call_string(m, "keyd", "LoadKeyPair", &handle, message,
                                         sizeof(message), "s", temp_key) >= 0)
                        (void)identity_call_string(m, "keyd", "DeleteKeyPair", NULL, message,
                                                   sizeof(message), "s", handle);
                r = identity_call_string(m, "keyd", "CreateKeyPairIfNotExists", NULL, message,
                                         sizeof(message), "sas", temp_key, 2, "rsa-2048", "*");
        }
        if (r >= 0) {
                r = aziot_key_evp_pkey(NULL, config->rotate_key ? temp_key : p->identity_pk,
                                       &creds.client_key, &why);
                if (r < 0)
                        (void)snprintf(message, sizeof(message), "Key client error\ncaused by: %s",
                                       why ? why : strerror(-r));
        }
        if (r >= 0) {
                req = X509_REQ_new();
                bio = BIO_new(BIO_s_mem());
                if (!req || !bio || !X509_REQ_set_version(req, X509_REQ_VERSION_1) ||
                    !X509_REQ_set_subject_name(req, X509_get_subject_name(old)) ||
                    !X509_REQ_set_pubkey(req, creds.client_key) ||
                    X509_REQ_sign(req, creds.client_key, EVP_sha256()) <= 0 ||
                    !PEM_write_bio_X509_REQ(bio, req) || BIO_write(bio, "", 1) != 1) {
                        ERR_clear_error();
                        (void)snprintf(message, sizeof(message), "cannot make the renewal CSR");
                        r = -EIO;
                }
        }
        if (r >= 0 && BIO_get_mem_data(bio, &data) > 0)
                r = identity_call_string(m, "certd", "CreateCertificate", &new_pem, message,
                                         sizeof(message), "ss", temp_cert, data);
        if (r >= 0) {
                (void)identity_call_string(m, "certd", "DeleteCertificate", NULL, message,
                                           sizeof(message), "s", temp_cert);
                creds.client_chain = sk_X509_new_null();
                _cleanup_(BIO_freep) BIO *in = BIO_new_mem_buf(new_pem, -1);
                X509 *x;

                while (in && creds.client_chain &&
                       (x = PEM_read_bio_X509(in, NULL, NULL, NULL)))
                        if (!sk_X509_push(creds.client_chain, x))
                                X509_free(x);
                ERR_clear_error();
                if (!creds.client_chain || sk_X509_num(creds.client_chain) == 0) {
                        (void)snprintf(message, sizeof(message),
                                       "certd returned no certificate");
                        r = -EBADMSG;
                }
        }
        if (r < 0) {
                identity_credentials_done(&creds);
                renewal_engine_finished(e, id, r, false, message);
                return 0;
        }

        rn = calloc(1, sizeof(*rn));
        if (!rn) {
                identity_credentials_done(&creds);
                return -ENOMEM;
        }
        *rn = (Renewal){ .m = m, .pem = TAKE_PTR(new_pem), .rotate = config->rotate_key };
        r = identity_dps_register_with(m, &creds, on_registered, rn);
        identity_credentials_done(&creds);
        if (r < 0) {
                (void)snprintf(message, sizeof(message), "DPS client error\ncaused by: %s",
                               r == -EBUSY ? "a registration is already running" : strerror(-r));
                finished(rn, r, message);
        }
        return 0;
}

static void changed(const char *id, void *userdata)
{
}

int identity_renew_init(Manager *m)
{
        static const RenewalOps ops = { .read = read_cert, .renew = renew, .changed = changed };

        return renewal_engine_new(m->event, &ops, m, &m->renewal);
}

void identity_renew_track(Manager *m)
{
        const IdentityProvisioning *p = &m->config.provisioning;
        int r;

        if (p->source != IDENTITY_SOURCE_DPS || p->auth != IDENTITY_AUTH_X509 || !p->auto_renew) {
                if (p->identity_cert)
                        renewal_engine_remove(m->renewal, p->identity_cert);
                return;
        }
        r = renewal_engine_add(m->renewal, p->identity_cert, &p->renewal);
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Cannot track the identity certificate for renewal: %m");
}
