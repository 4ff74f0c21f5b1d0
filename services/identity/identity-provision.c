/* SPDX-License-Identifier: MIT */
/* Provisioning (spec §4.6, §4.7): the device from the configuration (manual), from DPS, or from
 * the backup; then the module identities are reconciled. Unlike upstream, a failure never
 * removes the last good backup, and identityd does not exit: it serves what it has and answers
 * "device identity not found" when it has nothing. */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "aziot-key.h"
#include "identity-dps.h"
#include "identity-modules.h"
#include "identity-renew.h"
#include "identityd.h"
#include "log.h"
#include "macro.h"
#include "openssl-util.h"

#define MESSAGE_MAX 768

const char *identity_state_to_string(IdentityState s)
{
        static const char *const names[] = {
                [IDENTITY_STATE_UNPROVISIONED] = "unprovisioned",
                [IDENTITY_STATE_PROVISIONING] = "provisioning",
                [IDENTITY_STATE_PROVISIONED] = "provisioned",
                [IDENTITY_STATE_OFFLINE] = "offline",
                [IDENTITY_STATE_FAILED] = "failed",
        };

        return (size_t)s < ELEMENTSOF(names) ? names[s] : "failed";
}

/* ---- the device's keys and certificates ---- */

/* keyd's CreateDerivedKey(base, data): HMAC-SHA256(base key, data) as a handle. */
static int derive_key(Manager *m, const char *base, const char *data, char **ret, char *message,
                      size_t size)
{
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        const char *handle;
        int r;

        r = sd_bus_message_new_method_call(m->bus, &call, "org.aziot.Keys1", "/org/aziot/Keys1",
                                           "org.aziot.Keys1", "CreateDerivedKey");
        if (r >= 0)
                r = sd_bus_message_append(call, "s", base);
        if (r >= 0)
                r = sd_bus_message_append_array(call, 'y', data, strlen(data));
        if (r >= 0)
                r = sd_bus_message_append(call, "a{sv}", 0);
        if (r >= 0)
                r = sd_bus_call(m->bus, call, 0, &e, &reply);
        if (r >= 0)
                r = sd_bus_message_read(reply, "s", &handle);
        if (r < 0) {
                (void)snprintf(message, size, "Key client error\ncaused by: %s",
                               e.message ? e.message : strerror(-r));
                return r;
        }
        *ret = strdup(handle);
        return *ret ? 0 : -ENOMEM;
}

int identity_device_key_handle(Manager *m, char **ret, char *message, size_t size)
{
        const IdentityProvisioning *p = &m->config.provisioning;
        _cleanup_free_ char *group = NULL;
        int r;

        if (!p->group_enrollment)
                return identity_call_string(m, "keyd", "LoadKey", ret, message, size, "s",
                                            p->symmetric_key);
        /* The device key of an enrollment group, derived in keyd: the group key never leaves
         * it. */
        r = identity_call_string(m, "keyd", "LoadKey", &group, message, size, "s",
                                 p->symmetric_key);
        if (r < 0)
                return r;
        return derive_key(m, group, p->registration_id, ret, message, size);
}

int identity_pem_common_name(const char *pem, char **ret)
{
        _cleanup_(BIO_freep) BIO *bio = BIO_new_mem_buf(pem, -1);
        _cleanup_(X509_freep) X509 *x = NULL;
        char cn[256];
        int n;

        if (!bio)
                return -ENOMEM;
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        ERR_clear_error();
        if (!x)
                return -EBADMSG;
        n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
        if (n <= 0)
                return -ENOENT;
        *ret = strdup(cn);
        return *ret ? 0 : -ENOMEM;
}

int identity_registration_id(Manager *m, char **ret)
{
        const IdentityProvisioning *p = &m->config.provisioning;
        _cleanup_free_ char *pem = NULL;
        char message[MESSAGE_MAX], cn[256];
        int r;

        if (p->registration_id) {
                *ret = strdup(p->registration_id);
                return *ret ? 0 : -ENOMEM;
        }
        if (p->registration_name &&
            X509_NAME_get_text_by_NID(p->registration_name, NID_commonName, cn, sizeof(cn)) > 0) {
                *ret = strdup(cn);
                return *ret ? 0 : -ENOMEM;
        }
        if (!p->identity_cert)
                return -ENOENT;
        r = identity_call_string(m, "certd", "GetCertificate", &pem, message, sizeof(message),
                                 "s", p->identity_cert);
        if (r < 0)
                return r;
        return identity_pem_common_name(pem, ret);
}

/* The subject of a new identity certificate: manual, CN = device_id plus csr_subject's other
 * fields; DPS, registration_id's. */
static int identity_subject(Manager *m, X509_NAME **ret)
{
        const IdentityProvisioning *p = &m->config.provisioning;
        _cleanup_(X509_NAME_freep) X509_NAME *name = X509_NAME_new();
        const X509_NAME *extra = p->source == IDENTITY_SOURCE_MANUAL ? p->csr_subject
                                                                     : p->registration_name;
        const char *cn = p->source == IDENTITY_SOURCE_MANUAL ? p->device_id : p->registration_id;

        if (!name)
                return -ENOMEM;
        if (!cn && !extra)
                return -ENOENT;
        if (cn && !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                              (const unsigned char *)cn, -1, -1, 0))
                return -EINVAL;
        for (int i = 0; extra && i < X509_NAME_entry_count(extra); i++) {
                X509_NAME_ENTRY *e = X509_NAME_get_entry(extra, i);

                if (cn && OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)) == NID_commonName)
                        continue;
                if (!X509_NAME_add_entry(name, e, -1, 0))
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(name);
        return 0;
}

/* The identity certificate, asked of certd when it has none (spec §4.6: a new rsa-2048 key pair
 * identity_pk in keyd, a CSR, certd's cert_issuance for identity_cert). */
static int ensure_identity_cert(Manager *m, char **ret_pem, char *message, size_t size)
{
        const IdentityProvisioning *p = &m->config.provisioning;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_(X509_NAME_freep) X509_NAME *subject = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        _cleanup_free_ char *handle = NULL, *why = NULL;
        char *data;
        long len;
        int r;

        r = identity_call_string(m, "certd", "GetCertificate", ret_pem, message, size, "s",
                                 p->identity_cert);
        if (r != -ENOENT)
                return r;
        r = identity_subject(m, &subject);
        if (r < 0) {
                (void)snprintf(message, size,
                               "there is no identity certificate %s and no registration id to "
                               "ask for one",
                               p->identity_cert);
                return r;
        }
        log_info("Asking certd for the identity certificate %s.", p->identity_cert);
        if (identity_call_string(m, "keyd", "LoadKeyPair", &handle, message, size, "s",
                                 p->identity_pk) >= 0)
                (void)identity_call_string(m, "keyd", "DeleteKeyPair", NULL, message, size, "s",
                                           handle);
        r = identity_call_string(m, "keyd", "CreateKeyPairIfNotExists", NULL, message, size,
                                 "sas", p->identity_pk, 2, "rsa-2048", "*");
        if (r < 0)
                return r;
        r = aziot_key_evp_pkey(NULL, p->identity_pk, &key, &why);
        if (r < 0) {
                (void)snprintf(message, size, "Key client error\ncaused by: %s",
                               why ? why : strerror(-r));
                return r;
        }
        req = X509_REQ_new();
        bio = BIO_new(BIO_s_mem());
        if (!req || !bio || !X509_REQ_set_version(req, X509_REQ_VERSION_1) ||
            !X509_REQ_set_subject_name(req, subject) || !X509_REQ_set_pubkey(req, key) ||
            X509_REQ_sign(req, key, EVP_sha256()) <= 0 || !PEM_write_bio_X509_REQ(bio, req) ||
            BIO_write(bio, "", 1) != 1) {
                ERR_clear_error();
                (void)snprintf(message, size, "cannot make the identity certificate's CSR");
                return -EIO;
        }
        len = BIO_get_mem_data(bio, &data);
        if (len <= 0)
                return -ENOMEM;
        return identity_call_string(m, "certd", "CreateCertificate", ret_pem, message, size,
                                    "ss", p->identity_cert, data);
}

static int chain_from_pem(const char *pem, STACK_OF(X509) **ret)
{
        _cleanup_(BIO_freep) BIO *bio = BIO_new_mem_buf(pem, -1);
        STACK_OF(X509) *chain = sk_X509_new_null();
        X509 *x;

        if (!bio || !chain) {
                sk_X509_free(chain);
                return -ENOMEM;
        }
        while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
                if (!sk_X509_push(chain, x)) {
                        X509_free(x);
                        sk_X509_pop_free(chain, X509_free);
                        return -ENOMEM;
                }
        ERR_clear_error();
        if (sk_X509_num(chain) == 0) {
                sk_X509_free(chain);
                return -EBADMSG;
        }
        *ret = chain;
        return 0;
}

int identity_device_credentials(Manager *m, IdentityCredentials *ret, char *message,
                                size_t size)
{
        const IdentityProvisioning *p = &m->config.provisioning;
        IdentityCredentials c = {};
        _cleanup_free_ char *pem = NULL, *why = NULL;
        int r;

        switch (p->auth) {
        case IDENTITY_AUTH_TPM:
                c.signer = (IdentitySigner){ .kind = IDENTITY_SIGNER_TPMD, .bus = m->bus };
                break;
        case IDENTITY_AUTH_X509:
                r = ensure_identity_cert(m, &pem, message, size);
                if (r < 0)
                        return r;
                r = chain_from_pem(pem, &c.client_chain);
                if (r < 0) {
                        (void)snprintf(message, size, "the identity certificate %s is not PEM",
                                       p->identity_cert);
                        return r;
                }
                r = aziot_key_evp_pkey(NULL, p->identity_pk, &c.client_key, &why);
                if (r < 0) {
                        identity_credentials_done(&c);
                        (void)snprintf(message, size, "Key client error\ncaused by: %s",
                                       why ? why : strerror(-r));
                        return r;
                }
                break;
        default:
                c.signer = (IdentitySigner){ .kind = IDENTITY_SIGNER_KEYD, .bus = m->bus };
                r = identity_device_key_handle(m, &c.signer.key_handle, message, size);
                if (r < 0)
                        return r;
                break;
        }
        *ret = c;
        return 0;
}

/* ---- provisioning ---- */

typedef void (*ProvisionDone)(Manager *m, int error, const char *message, void *userdata);

typedef struct Provisioning {
        Manager *m;
        struct Provisioning *next; /* in m->provisionings */
        bool use_backup, dps_again;
        ProvisionDone done;
        void *userdata;
} Provisioning;

static void on_reprovisioned_cb(Manager *m, int error, const char *message, void *userdata);

static void provisioning_unlink(Provisioning *p)
{
        for (Provisioning **q = &p->m->provisionings; *q; q = &(*q)->next)
                if (*q == p) {
                        *q = p->next;
                        break;
                }
}

void identity_provisionings_free(Manager *m)
{
        while (m->provisionings) {
                Provisioning *p = m->provisionings;

                m->provisionings = p->next;
                /* A call still waiting hears that identityd stops. */
                if (p->done == on_reprovisioned_cb)
                        sd_bus_message_unref(p->userdata);
                free(p);
        }
}

int identity_adopt_device(Manager *m, const IdentityDevice *d, char *message, size_t size)
{
        IdentityDevice copy = {};
        int r;

        r = identity_device_copy(d, &copy);
        if (r < 0)
                return r;
        r = identity_device_save(m->config.homedir, &copy);
        if (r < 0) {
                (void)snprintf(message, size, "saving the device backup: %s", strerror(-r));
                identity_device_done(&copy);
                return r;
        }
        identity_device_done(&m->device);
        m->device = copy;
        log_info("Provisioned: device %s in %s%s%s.", m->device.device_id, m->device.hub_name,
                 m->device.local_gateway_hostname ? " through " : "",
                 strempty(m->device.local_gateway_hostname));
        identity_set_state(m, IDENTITY_STATE_PROVISIONED);
        return 0;
}

static void provisioned(Manager *m, Provisioning *p, int error, const char *message);

static void on_reconciled(Manager *m, int error, const char *message, bool network,
                          void *userdata)
{
        Provisioning *p = userdata;
        char text[MESSAGE_MAX];
        int r;

        if (error >= 0 || m->config.provisioning.source != IDENTITY_SOURCE_DPS || p->dps_again) {
                if (error < 0 && network) {
                        log_warning("Using the offline backup: %s", message);
                        identity_set_state(m, IDENTITY_STATE_OFFLINE);
                        error = 0;
                }
                provisioned(m, p, error, message);
                return;
        }
        if (network) {
                log_warning("Using the offline backup: %s", message);
                identity_set_state(m, IDENTITY_STATE_OFFLINE);
                provisioned(m, p, 0, NULL);
                return;
        }
        /* IoT Hub refused the device it was given: register with DPS again (spec §4.7). */
        log_warning("IoT Hub refused the device (%s); registering with DPS again.", message);
        p->dps_again = true;
        p->use_backup = false;
        r = identity_provision_start(m, false, p->done, p->userdata);
        if (r < 0) {
                (void)snprintf(text, sizeof(text), "cannot register with DPS: %s", strerror(-r));
                provisioned(m, p, r, text);
                return;
        }
        provisioning_unlink(p);
        free(p);
}

static void provisioned(Manager *m, Provisioning *p, int error, const char *message)
{
        ProvisionDone done = p->done;
        void *userdata = p->userdata;

        provisioning_unlink(p);
        free(p);
        done(m, error, message, userdata);
}

/* The caller hears of it; the device in use and its backup stay (upstream forgets both, and
 * then crash-loops while DPS is out of reach). */
static void provisioning_failed(Manager *m, Provisioning *p, int error, const char *message)
{
        identity_set_state(m, m->device.device_id ? IDENTITY_STATE_PROVISIONED
                                                  : IDENTITY_STATE_FAILED);
        provisioned(m, p, error, message);
}

static void reconcile(Manager *m, Provisioning *p)
{
        char text[MESSAGE_MAX];
        int r;

        if (m->state != IDENTITY_STATE_PROVISIONED || !m->modules) {
                provisioned(m, p, 0, NULL);
                return;
        }
        r = identity_modules_reconcile(m, on_reconciled, p);
        if (r < 0) {
                (void)snprintf(text, sizeof(text), "cannot reconcile module identities: %s",
                               strerror(-r));
                provisioned(m, p, r, text);
        }
}

static void on_dps(Manager *m, int error, const char *message, bool network,
                   const IdentityDevice *device, void *userdata)
{
        Provisioning *p = userdata;
        char text[MESSAGE_MAX];
        int r;

        if (error < 0) {
                provisioning_failed(m, p, error, message);
                return;
        }
        r = identity_adopt_device(m, device, text, sizeof(text));
        if (r < 0) {
                provisioning_failed(m, p, r, text);
                return;
        }
        reconcile(m, p);
}

int identity_provision_start(Manager *m, bool use_backup,
                             void (*done)(Manager *, int, const char *, void *), void *userdata)
{
        const IdentityProvisioning *c = &m->config.provisioning;
        Provisioning *p = calloc(1, sizeof(*p));
        IdentityDevice d = {};
        char text[MESSAGE_MAX];
        int r;

        if (!p)
                return -ENOMEM;
        *p = (Provisioning){ .m = m, .next = m->provisionings, .use_backup = use_backup,
                             .done = done, .userdata = userdata };
        m->provisionings = p;
        switch (c->source) {
        case IDENTITY_SOURCE_NONE:
                identity_device_done(&m->device);
                identity_set_state(m, IDENTITY_STATE_UNPROVISIONED);
                provisioned(m, p, 0, NULL);
                return 0;
        case IDENTITY_SOURCE_MANUAL:
                r = identity_adopt_device(m,
                          &(IdentityDevice){ c->iothub_hostname, c->local_gateway_hostname,
                                             c->device_id },
                          text, sizeof(text));
                if (r < 0) {
                        provisioning_failed(m, p, r, text);
                        return 0;
                }
                reconcile(m, p);
                return 0;
        default:
                break;
        }
        if (use_backup && identity_device_load(m->config.homedir, &d) >= 0) {
                log_info("Using the device backup (device %s in %s) without asking DPS.",
                         d.device_id, d.hub_name);
                identity_device_done(&m->device);
                m->device = d;
                identity_set_state(m, IDENTITY_STATE_PROVISIONED);
                reconcile(m, p);
                return 0;
        }
        if (m->state != IDENTITY_STATE_PROVISIONED && m->state != IDENTITY_STATE_OFFLINE)
                identity_set_state(m, IDENTITY_STATE_PROVISIONING);
        r = identity_dps_register(m, on_dps, p);
        if (r == -EBUSY) /* the running registration decides the state */
                provisioned(m, p, r,
                            "DPS client error\ncaused by: a registration is already running");
        else if (r < 0) {
                (void)snprintf(text, sizeof(text), "DPS client error\ncaused by: %s",
                               strerror(-r));
                provisioning_failed(m, p, r, text);
        }
        return 0;
}

/* ---- ReprovisionDevice ---- */

static void on_reprovisioned_cb(Manager *m, int error, const char *message, void *userdata)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = userdata;

        if (error < 0) {
                log_warning("Reprovisioning failed: %s", message ? message : "?");
                (void)sd_bus_reply_method_errorf(msg,
                                                 error == -ENOMEM ? IDENTITY_ERROR_FAILED
                                                                  : IDENTITY_ERROR_CLOUD,
                                                 "%s", message ? message : "internal error");
                return;
        }
        identity_renew_track(m);
        (void)sd_bus_reply_method_return(msg, "");
}

int identity_reprovision(Manager *m, sd_bus_message *msg, sd_bus_error *error)
{
        int r;

        if (m->config.provisioning.source == IDENTITY_SOURCE_NONE)
                return sd_bus_error_set(error, IDENTITY_ERROR_NOT_FOUND,
                                        "device identity not found");
        sd_bus_message_ref(msg);
        r = identity_provision_start(m, /* use_backup= */ false, on_reprovisioned_cb, msg);
        if (r < 0) {
                sd_bus_message_unref(msg);
                return r;
        }
        return 1;
}
