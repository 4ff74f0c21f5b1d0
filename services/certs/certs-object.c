/* SPDX-License-Identifier: MIT */
/* One bus object per certificate: /org/aziot/Certificates1/certificate/<id, sd_bus_path_encode()d>
 * with the non-secret properties of its (first) certificate. The objects are not kept: a fallback
 * vtable looks the id up in the store when a call arrives, and a node enumerator lists the store,
 * so what the bus shows is what GetCertificate and ListCertificates would answer. Properties are
 * read by anyone the bus lets through, as GetCertificate. */
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <time.h>

#include "certd.h"
#include "certs-object.h"
#include "log.h"
#include "macro.h"
#include "openssl-util.h"

#define CERT_PATH_PREFIX CERTS_OBJECT_PATH "/certificate"

/* The first certificate of the object at path; -ENOENT (or -ENXIO: not ours) when there is none. */
static int cert_load(Manager *m, const char *path, X509 **ret)
{
        _cleanup_free_ char *id = NULL, *pem = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        size_t len = 0;
        int r;

        r = sd_bus_path_decode(path, CERT_PATH_PREFIX, &id);
        if (r < 0)
                return r;
        if (r == 0 || certs_id_validate(id) < 0)
                return -ENXIO;
        r = certs_store_get(m->store, id, &pem, &len);
        if (r < 0)
                return r;
        bio = BIO_new_mem_buf(pem, (int)len);
        if (!bio)
                return -ENOMEM;
        *ret = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        return *ret ? 0 : -EBADMSG;
}

static int cert_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                     void **ret_found, sd_bus_error *error)
{
        _cleanup_free_ char *id = NULL, *pem = NULL;
        Manager *m = userdata;
        int r;

        r = sd_bus_path_decode(path, CERT_PATH_PREFIX, &id);
        if (r <= 0)
                return r == -ENOMEM ? r : 0;
        if (certs_id_validate(id) < 0)
                return 0;
        r = certs_store_get(m->store, id, &pem, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return 0;
        *ret_found = m;
        return 1;
}

static int cert_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***ret_nodes,
                          sd_bus_error *error)
{
        Manager *m = userdata;
        char **ids = NULL, **nodes = NULL;
        size_t n = 0;
        int r;

        r = certs_store_list(m->store, &ids, &n);
        if (r < 0)
                return r;
        nodes = calloc(n + 1, sizeof(char *));
        r = nodes ? 0 : -ENOMEM;
        for (size_t i = 0; i < n && r >= 0; i++)
                r = sd_bus_path_encode(CERT_PATH_PREFIX, ids[i], &nodes[i]);
        for (size_t i = 0; i < n; i++)
                free(ids[i]);
        free(ids);
        if (r < 0) {
                for (size_t i = 0; nodes && i < n; i++)
                        free(nodes[i]);
                free(nodes);
                return r;
        }
        *ret_nodes = nodes;
        return 0;
}

static int reply_cert_error(const char *path, int r, sd_bus_error *error)
{
        if (r == -ENOMEM)
                return r;
        if (r == -ENOENT || r == -ENXIO)
                return sd_bus_error_setf(error, SD_BUS_ERROR_UNKNOWN_OBJECT, "No such object %s",
                                         path);
        log_warning_errno(r, "Reading the certificate of %s failed: %m", path);
        return sd_bus_error_set(error, CERTS_ERROR_FAILED, "internal error");
}

static int property_get_id(sd_bus *bus, const char *path, const char *interface,
                           const char *property, sd_bus_message *reply, void *userdata,
                           sd_bus_error *error)
{
        _cleanup_free_ char *id = NULL;
        int r;

        r = sd_bus_path_decode(path, CERT_PATH_PREFIX, &id);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENXIO;
        return sd_bus_message_append(reply, "s", id);
}

static int append_name(sd_bus_message *reply, const X509_NAME *name)
{
        _cleanup_(BIO_freep) BIO *bio = BIO_new(BIO_s_mem());
        char *data = NULL;
        long len;

        if (!bio || X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) < 0 ||
            BIO_write(bio, "", 1) != 1)
                return -ENOMEM;
        len = BIO_get_mem_data(bio, &data);
        if (len <= 0)
                return -ENOMEM;
        return sd_bus_message_append(reply, "s", data);
}

static int append_time(sd_bus_message *reply, const ASN1_TIME *t)
{
        struct tm tm = {};
        time_t secs;

        if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
                return -EBADMSG;
        secs = timegm(&tm);
        if (secs < 0)
                return sd_bus_message_append(reply, "t", UINT64_C(0));
        return sd_bus_message_append(reply, "t", (uint64_t)secs * UINT64_C(1000000));
}

static int append_serial(sd_bus_message *reply, const ASN1_INTEGER *serial)
{
        _cleanup_(BN_freep) BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
        char *hex;
        int r;

        if (!bn)
                return -ENOMEM;
        hex = BN_bn2hex(bn);
        if (!hex)
                return -ENOMEM;
        r = sd_bus_message_append(reply, "s", hex);
        OPENSSL_free(hex);
        return r;
}

static int property_get_cert(sd_bus *bus, const char *path, const char *interface,
                             const char *property, sd_bus_message *reply, void *userdata,
                             sd_bus_error *error)
{
        _cleanup_(X509_freep) X509 *cert = NULL;
        Manager *m = userdata;
        int r;

        r = cert_load(m, path, &cert);
        if (r < 0)
                return reply_cert_error(path, r, error);
        if (streq(property, "Subject"))
                r = append_name(reply, X509_get_subject_name(cert));
        else if (streq(property, "Issuer"))
                r = append_name(reply, X509_get_issuer_name(cert));
        else if (streq(property, "NotBefore"))
                r = append_time(reply, X509_get0_notBefore(cert));
        else if (streq(property, "NotAfter"))
                r = append_time(reply, X509_get0_notAfter(cert));
        else
                r = append_serial(reply, X509_get0_serialNumber(cert));
        if (r < 0 && r != -ENOMEM)
                return reply_cert_error(path, r, error);
        return r;
}

/* What the renewal engine says of the id: "none" when it does not track it. */
static int property_get_renewal(sd_bus *bus, const char *path, const char *interface,
                                const char *property, sd_bus_message *reply, void *userdata,
                                sd_bus_error *error)
{
        _cleanup_free_ char *id = NULL;
        Manager *m = userdata;
        RenewalState state;
        uint64_t next = 0;
        int r;

        r = sd_bus_path_decode(path, CERT_PATH_PREFIX, &id);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENXIO;
        state = renewal_engine_state(m->renewal, id, &next);
        if (streq(property, "RenewalState"))
                return sd_bus_message_append(reply, "s", renewal_state_to_string(state));
        return sd_bus_message_append(reply, "t", next);
}

static const sd_bus_vtable cert_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "s", property_get_id, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Subject", "s", property_get_cert, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("Issuer", "s", property_get_cert, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("NotBefore", "t", property_get_cert, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("NotAfter", "t", property_get_cert, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("Serial", "s", property_get_cert, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("RenewalState", "s", property_get_renewal, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("NextRenewal", "t", property_get_renewal, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END,
};

int certs_object_register(Manager *m)
{
        int r;

        r = sd_bus_add_fallback_vtable(m->bus, &m->cert_vtable_slot, CERT_PATH_PREFIX,
                                       CERTS_CERT_INTERFACE, cert_vtable, cert_find, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register %s: %m", CERT_PATH_PREFIX);
        r = sd_bus_add_node_enumerator(m->bus, &m->cert_enumerator_slot, CERT_PATH_PREFIX,
                                       cert_enumerate, m);
        if (r < 0)
                return log_error_errno(r, "Failed to enumerate %s: %m", CERT_PATH_PREFIX);
        r = sd_bus_add_object_manager(m->bus, &m->object_manager_slot, CERTS_OBJECT_PATH);
        if (r < 0)
                return log_error_errno(r, "Failed to add the object manager: %m");
        return 0;
}

void certs_object_emit_stored(Manager *m, const char *id, bool existed)
{
        _cleanup_free_ char *path = NULL;
        int r;

        r = sd_bus_path_encode(CERT_PATH_PREFIX, id, &path);
        if (r >= 0)
                r = existed ? sd_bus_emit_properties_changed(m->bus, path, CERTS_CERT_INTERFACE,
                                                             "Subject", "Issuer", "NotBefore",
                                                             "NotAfter", "Serial", NULL)
                            : sd_bus_emit_interfaces_added(m->bus, path, CERTS_CERT_INTERFACE,
                                                           NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to announce the certificate %s: %m", id);
}

void certs_object_emit_renewal_state(Manager *m, const char *id)
{
        _cleanup_free_ char *path = NULL;
        int r;

        if (!m->bus)
                return;
        r = sd_bus_path_encode(CERT_PATH_PREFIX, id, &path);
        if (r >= 0)
                r = sd_bus_emit_properties_changed(m->bus, path, CERTS_CERT_INTERFACE,
                                                   "RenewalState", "NextRenewal", NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to announce the renewal state of %s: %m", id);
}

void certs_object_emit_renewed(Manager *m, const char *id)
{
        int r;

        if (!m->bus)
                return;
        r = sd_bus_emit_signal(m->bus, CERTS_OBJECT_PATH, CERTS_INTERFACE, "CertificateRenewed",
                               "s", id);
        if (r < 0)
                log_debug_errno(r, "Failed to announce the renewal of %s: %m", id);
}

void certs_object_emit_removed(Manager *m, const char *id)
{
        _cleanup_free_ char *path = NULL;
        int r;

        r = sd_bus_path_encode(CERT_PATH_PREFIX, id, &path);
        if (r >= 0)
                r = sd_bus_emit_interfaces_removed(m->bus, path, CERTS_CERT_INTERFACE, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to announce the removal of %s: %m", id);
}

bool certs_object_exists(Manager *m, const char *id)
{
        _cleanup_free_ char *pem = NULL;

        return certs_store_get(m->store, id, &pem, NULL) >= 0;
}
