/* SPDX-License-Identifier: MIT */
/* The bus surface of aziot-certd: the org.aziot.Certificates1 vtable and its handlers. Each handler
 * reads its arguments, validates them, authorizes (possibly asking polkit, in which case the call
 * is dispatched again when polkit answers, so nothing before that step changes state), acts through
 * the store, and replies. Error messages use upstream's wording where upstream has one: the gateway
 * passes them on to HTTP clients. */
#include <stddef.h>
#include <openssl/evp.h>

#include "aziot-key.h"
#include "bus-authorize.h"
#include "certd.h"
#include "certs-enroll.h"
#include "certs-issue.h"
#include "certs-object.h"
#include "certs-openssl.h"
#include "log.h"
#include "macro.h"

enum {
        OPTION_CLIENT_SOCKET = 1 << 0,
        OPTION_ISSUER = 1 << 1,
};

typedef struct CertsOptions {
        unsigned allowed, present; /* OPTION_ISSUER */
        int client_socket;         /* owned by the message; -EBADF when not passed */
        const char *issuer_cert_id, *issuer_key_handle;
} CertsOptions;

static int reply_invalid_parameter(sd_bus_error *error, const char *name, const char *cause)
{
        if (cause)
                return sd_bus_error_setf(error, CERTS_ERROR_INVALID_PARAMETER,
                                         "parameter \"%s\" has an invalid value\ncaused by: %s",
                                         name, cause);
        return sd_bus_error_setf(error, CERTS_ERROR_INVALID_PARAMETER,
                                 "parameter \"%s\" has an invalid value", name);
}

static int reply_failed(sd_bus_error *error, int r, const char *what)
{
        log_warning_errno(r, "%s failed: %m", what);
        return sd_bus_error_set(error, CERTS_ERROR_FAILED, "internal error");
}

static int read_option(sd_bus_message *m, const char *name, void *userdata, sd_bus_error *error)
{
        CertsOptions *o = userdata;
        int r;

        if (!streq(name, "issuer") || !(o->allowed & OPTION_ISSUER))
                return 0;
        r = sd_bus_message_enter_container(m, 'v', "(ss)");
        if (r < 0)
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                        "Option \"issuer\" must be of type (ss).");
        r = sd_bus_message_read(m, "(ss)", &o->issuer_cert_id, &o->issuer_key_handle);
        if (r < 0)
                return r;
        o->present |= OPTION_ISSUER;
        r = sd_bus_message_exit_container(m);
        return r < 0 ? r : 1;
}

/* Reads the trailing a{sv}; only the options in allowed are accepted. */
static int read_options(sd_bus_message *m, unsigned allowed, CertsOptions *ret, sd_bus_error *error)
{
        *ret = (CertsOptions){ .allowed = allowed };
        return bus_read_options(m, allowed & OPTION_CLIENT_SOCKET, &ret->client_socket,
                                read_option, ret, error);
}

static BusAuthContext auth_context(Manager *m)
{
        return (BusAuthContext){
                .gateway_uid = m->gateway_uid,
                .sender_uids = &m->sender_uids,
                .principals = &m->principals,
                .polkit_registry = &m->polkit_registry,
        };
}

/* Operations open to every caller still refuse a socket passed by a sender that may not delegate:
 * it must not look as if that were allowed. */
static int check_delegation(Manager *m, sd_bus_message *msg, const CertsOptions *o,
                            sd_bus_error *error)
{
        BusAuthContext ctx = auth_context(m);
        uid_t uid;
        int r;

        r = bus_check_delegation(&ctx, msg, NULL, o->client_socket, &uid);
        if (r == -EPERM)
                return sd_bus_error_setf(error, CERTS_ERROR_NOT_AUTHORIZED,
                                         "user %u may not act for another process", (unsigned)uid);
        return r;
}

static int reply_not_authorized(sd_bus_error *error, uid_t uid, const char *id)
{
        return sd_bus_error_setf(error, CERTS_ERROR_NOT_AUTHORIZED,
                                 "user %u is not authorized to modify the cert %s",
                                 (unsigned)uid, id);
}

/* Authorizes a change of id (and the use of the issuer certificate issuer_id, when not NULL):
 * root; else a principal whose globs match every id; else polkit org.aziot.certs.manage. Returns 1
 * when allowed, 0 when polkit was asked (the handler returns 1 and runs again with the answer),
 * negative with error set otherwise. */
static int authorize(Manager *m, sd_bus_message *msg, const CertsOptions *o, const char *id,
                     const char *issuer_id, sd_bus_error *error)
{
        const char *details[] = { "cert_id", id, issuer_id ? "issuer_cert_id" : NULL, issuer_id,
                                  NULL };
        const char *ids[] = { id, issuer_id, NULL };
        BusAuthContext ctx = auth_context(m);
        const char *denied = NULL;
        uid_t uid = UID_INVALID;
        int r;

        r = bus_authorize(&ctx, msg, NULL, o->client_socket, ids, NULL, "org.aziot.certs.manage",
                          details, &uid, &denied);
        switch (r) {
        case -EPERM:
                return sd_bus_error_setf(error, CERTS_ERROR_NOT_AUTHORIZED,
                                         "user %u may not act for another process", (unsigned)uid);
        case -ENOTSOCK:
                return reply_invalid_parameter(error, "client-socket",
                                               "not a connected Unix socket");
        case -EACCES:
                return reply_not_authorized(error, uid, denied);
        default:
                return r;
        }
}

/* Checks an id argument (before authorization, so that nothing is asked about garbage). */
static int check_id(const char *name, const char *id, sd_bus_error *error)
{
        _cleanup_free_ char *file = NULL;
        int r;

        r = certs_file_name(id, &file);
        if (r == -ENOMEM)
                return r;
        if (r == -ENAMETOOLONG)
                return reply_invalid_parameter(error, name, "too long");
        if (r < 0)
                return reply_invalid_parameter(error, name, NULL);
        return 0;
}

/* Maps a store error of a write (put or delete) onto a bus error. */
static int reply_store_write_error(sd_bus_error *error, int r, const char *what)
{
        switch (r) {
        case -ENOMEM:
                return r;
        case -EROFS:
                return reply_invalid_parameter(error, "id", "the certificate is preloaded");
        case -EBADMSG:
                return reply_invalid_parameter(error, "pem", "not PEM certificates");
        case -EFBIG:
                return reply_invalid_parameter(error, "pem", "too large");
        case -EINVAL:
        case -ENAMETOOLONG:
                return reply_invalid_parameter(error, "id", NULL);
        default:
                return reply_failed(error, r, what);
        }
}

static int reply_not_found(sd_bus_error *error)
{
        return sd_bus_error_set(error, CERTS_ERROR_NOT_FOUND,
                                "parameter \"id\" has an invalid value\ncaused by: not found");
}

/* Loads a keyd key for signing: the key pair key_pair_id, or, when handle is set, the key of that
 * handle (an explicit issuer: the caller proves it may use the key by holding its handle, as
 * upstream's privateKeyHandle). Failures are replied, naming param when it is the caller's. */
static int load_issuer_key(const char *key_pair_id, const char *handle, const char *param,
                           EVP_PKEY **ret, sd_bus_error *error)
{
        _cleanup_free_ char *why = NULL;
        int r;

        r = handle ? aziot_key_evp_pkey_from_handle(NULL, handle, ret, &why)
                   : aziot_key_evp_pkey(NULL, key_pair_id, ret, &why);
        if (r == -ENOENT && param)
                return reply_invalid_parameter(error, param, "not found");
        if ((r == -EBADMSG || r == -EINVAL) && param)
                return reply_invalid_parameter(error, param, "invalid handle");
        if (r < 0) {
                /* Never the handle itself: it is a bearer token. */
                log_warning("Loading the issuer key %s failed: %s",
                            handle ? "(given by its handle)" : key_pair_id, why ? why : "?");
                return sd_bus_error_set(error, CERTS_ERROR_FAILED, "internal error");
        }
        return 0;
}

static int method_create_certificate(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(certs_issuance_done) CertsIssuance issuance = {};
        _cleanup_free_ char *chain = NULL, *pem = NULL;
        Manager *m = userdata;
        const char *id, *csr, *issuer_cert = NULL, *issuer_key = NULL, *ca_cert, *ca_key;
        size_t chain_len = 0, pem_len = 0;
        CertsIssueOptions opts = {};
        bool existed;
        ConfigError err = {};
        CertsOptions o;
        int r;

        r = sd_bus_message_read(msg, "ss", &id, &csr);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET | OPTION_ISSUER, &o, error);
        if (r < 0)
                return r;
        r = check_id("id", id, error);
        if (r < 0)
                return r;
        if (o.present & OPTION_ISSUER) {
                r = check_id("issuer.certId", o.issuer_cert_id, error);
                if (r < 0)
                        return r;
                if (isempty(o.issuer_key_handle))
                        return reply_invalid_parameter(error, "issuer.privateKeyHandle", NULL);
        }
        /* Checked when the configuration was loaded: cannot fail but for memory. */
        r = certs_config_issuance(&m->config, id, &issuance, &err);
        config_error_done(&err);
        if (r < 0)
                return reply_failed(error, r, "Reading the issuance options");
        if (!(o.present & OPTION_ISSUER)) {
                if (issuance.method == CERTS_ISSUANCE_NONE)
                        return sd_bus_error_set(error, CERTS_ERROR_FAILED,
                                                "issuer is required for locally-issued certs");
        }

        /* An explicit issuer is the caller's choice: the caller must be allowed its certificate
         * too. A configured one is the operator's. */
        r = authorize(m, msg, &o, id, (o.present & OPTION_ISSUER) ? o.issuer_cert_id : NULL,
                      error);
        if (r <= 0)
                return r < 0 ? r : 1;

        if (!(o.present & OPTION_ISSUER) && issuance.method == CERTS_ISSUANCE_EST)
                return certs_enroll_issue(m, msg, id, csr, issuance.subject, error);

        opts = (CertsIssueOptions){ .subject = issuance.subject,
                                    .expiry_days = issuance.expiry_days };
        if (o.present & OPTION_ISSUER) {
                issuer_cert = o.issuer_cert_id;
        } else if (issuance.method == CERTS_ISSUANCE_LOCAL_CA) {
                if (certs_config_local_ca(&m->config, &ca_cert, &ca_key) < 0)
                        return sd_bus_error_set(error, CERTS_ERROR_FAILED,
                                                "cert_issuance.local_ca is not configured");
                issuer_cert = ca_cert;
                issuer_key = ca_key;
        } else {
                /* self_signed: the key pair of the certificate's id. Only the local CA's own
                 * certificate is made a CA (DESIGN §5: no CA:TRUE unless the configuration says
                 * so). */
                opts.ca = certs_config_local_ca(&m->config, &ca_cert, &ca_key) >= 0 &&
                          streq(ca_cert, id);
        }

        if (issuer_cert) {
                r = certs_store_get(m->store, issuer_cert, &chain, &chain_len);
                if (r == -ENOENT && (o.present & OPTION_ISSUER))
                        return reply_invalid_parameter(error, "issuer.certId", "not found");
                if (r == -ENOENT)
                        return sd_bus_error_set(error, CERTS_ERROR_FAILED,
                                                "the local CA certificate does not exist");
                if (r < 0)
                        return reply_failed(error, r, "Reading the issuer certificate");
                r = (o.present & OPTION_ISSUER)
                            ? load_issuer_key(NULL, o.issuer_key_handle,
                                              "issuer.privateKeyHandle", &key, error)
                            : load_issuer_key(issuer_key, NULL, NULL, &key, error);
        } else
                r = load_issuer_key(id, NULL, NULL, &key, error);
        if (r < 0)
                return r;

        r = certs_issue(csr, strlen(csr), chain, chain_len, key, &opts, &pem, &pem_len);
        switch (r) {
        case 0:
                break;
        case -ENOMEM:
                return r;
        case -EBADMSG:
                return reply_invalid_parameter(error, "csr", NULL);
        case -EINVAL:
                if (!issuer_cert)
                        return reply_invalid_parameter(
                                error, "csr", "the key pair of the id does not match the CSR");
                if (!(o.present & OPTION_ISSUER))
                        return reply_failed(error, r, "Issuing with the local CA");
                return reply_invalid_parameter(error, "issuer",
                                               "the key pair does not match the certificate");
        case -EKEYEXPIRED:
                if (!(o.present & OPTION_ISSUER))
                        return reply_failed(error, r, "Issuing with the local CA");
                return reply_invalid_parameter(error, "issuer", "the issuer has expired");
        default:
                return reply_failed(error, r, "Issuing a certificate");
        }

        existed = certs_object_exists(m, id);
        r = certs_store_put(m->store, id, pem, pem_len);
        if (r < 0)
                return reply_store_write_error(error, r, "Storing a certificate");
        certs_object_emit_stored(m, id, existed);
        log_info("Issued the certificate %s (%s%s).", id, issuer_cert ? "issuer " : "self-signed",
                 strempty(issuer_cert));
        return sd_bus_reply_method_return(msg, "s", pem);
}

static int method_import_certificate(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *id, *pem;
        CertsOptions o;
        bool existed;
        int r;

        r = sd_bus_message_read(msg, "ss", &id, &pem);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = check_id("id", id, error);
        if (r < 0)
                return r;
        /* Checked before authorization too: nothing is asked for a write that cannot happen. */
        r = certs_pem_check(pem, strlen(pem));
        if (r < 0)
                return reply_store_write_error(error, r, "Checking a certificate");
        r = authorize(m, msg, &o, id, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        existed = certs_object_exists(m, id);
        r = certs_store_put(m->store, id, pem, strlen(pem));
        if (r < 0)
                return reply_store_write_error(error, r, "Storing a certificate");
        certs_object_emit_stored(m, id, existed);
        log_info("Imported the certificate %s.", id);
        return sd_bus_reply_method_return(msg, "");
}

static int method_get_certificate(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        _cleanup_free_ char *pem = NULL;
        Manager *m = userdata;
        const char *id;
        CertsOptions o;
        int r;

        r = sd_bus_message_read(msg, "s", &id);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = check_delegation(m, msg, &o, error);
        if (r < 0)
                return r;
        r = check_id("id", id, error);
        if (r < 0)
                return r;

        r = certs_store_get(m->store, id, &pem, NULL);
        if (r == -ENOENT)
                return reply_not_found(error);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return reply_failed(error, r, "Reading a certificate");
        return sd_bus_reply_method_return(msg, "s", pem);
}

static int method_delete_certificate(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *id;
        CertsOptions o;
        int r;

        r = sd_bus_message_read(msg, "s", &id);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = check_id("id", id, error);
        if (r < 0)
                return r;
        if (certs_store_is_preloaded(m->store, id))
                return reply_store_write_error(error, -EROFS, "Deleting a certificate");
        r = authorize(m, msg, &o, id, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = certs_store_delete(m->store, id);
        if (r < 0)
                return reply_store_write_error(error, r, "Deleting a certificate");
        if (r > 0) {
                certs_object_emit_removed(m, id);
                log_info("Deleted the certificate %s.", id);
        }
        return sd_bus_reply_method_return(msg, "");
}

static int method_list_certificates(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        char **ids = NULL;
        CertsOptions o;
        int r;

        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = check_delegation(m, msg, &o, error);
        if (r < 0)
                return r;

        r = certs_store_list(m->store, &ids, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return reply_failed(error, r, "Listing certificates");
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_append_strv(reply, ids);
        for (char **p = ids; *p; p++)
                free(*p);
        free(ids);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static const sd_bus_vtable certs_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("MaxRequests", "u", NULL, offsetof(Manager, max_requests),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("CreateCertificate",
                                SD_BUS_ARGS("s", cert_id, "s", csr, "a{sv}", options),
                                SD_BUS_RESULT("s", pem), method_create_certificate,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ImportCertificate",
                                SD_BUS_ARGS("s", cert_id, "s", pem, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_import_certificate,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetCertificate", SD_BUS_ARGS("s", cert_id, "a{sv}", options),
                                SD_BUS_RESULT("s", pem), method_get_certificate,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeleteCertificate", SD_BUS_ARGS("s", cert_id, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_delete_certificate,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListCertificates", SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("as", cert_ids), method_list_certificates,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("CertificateRenewed", SD_BUS_ARGS("s", cert_id), 0),
        SD_BUS_VTABLE_END,
};

int certs_dbus_register(Manager *m)
{
        int r;

        r = sd_bus_add_object_vtable(m->bus, &m->object_slot, CERTS_OBJECT_PATH, CERTS_INTERFACE,
                                     certs_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register %s: %m", CERTS_OBJECT_PATH);
        return 0;
}
