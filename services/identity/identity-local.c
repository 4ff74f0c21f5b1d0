/* SPDX-License-Identifier: MIT */
/* Local identities (spec §4.9): an X.509 identity issued on every call, never cached. Principals
 * with idtype "local" get theirs with GetModuleIdentity (their localid attributes decide client
 * or server); managers make one for any other module id with CreateModuleIdentity. certd issues
 * the certificate for the id, as its cert_issuance.<module id> says. */
#include <stdio.h>
#include <string.h>

#include "identity-local-cert.h"
#include "identityd.h"
#include "log.h"
#include "macro.h"
#include "openssl-util.h"

#define MESSAGE_MAX 768

typedef struct Secret {
        char *data;
        size_t len;
} Secret;

static void secret_done(Secret *s)
{
        erase_and_free(s->data, s->len);
        *s = (Secret){};
}

static int reply_internal_error(sd_bus_error *error, int r, const char *why)
{
        if (r == -ENOMEM)
                return r;
        log_error("Cannot issue a local identity: %s", why);
        return sd_bus_error_set(error, IDENTITY_ERROR_FAILED, "internal error");
}

static int reply_local_identity(sd_bus_message *msg, const char *module_id, const char *key_pem,
                                const char *cert_pem, const char *expiration)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        /* The private key is in it: wiped when the message is freed. */
        r = sd_bus_message_sensitive(reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r >= 0)
                r = identity_append_entry(reply, "type", "local");
        if (r >= 0)
                r = identity_append_entry(reply, "moduleId", module_id);
        if (r >= 0)
                r = identity_append_entry(reply, "privateKey", key_pem);
        if (r >= 0)
                r = identity_append_entry(reply, "certificate", cert_pem);
        if (r >= 0)
                r = identity_append_entry(reply, "expiration", expiration);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* A new key, a certificate for it from certd, the answer. */
static int issue(Manager *m, sd_bus_message *msg, const char *module_id, bool server,
                 sd_bus_error *error)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(secret_done) Secret key_pem = {};
        _cleanup_free_ char *csr = NULL, *cert = NULL;
        char message[MESSAGE_MAX], expiration[IDENTITY_EXPIRATION_MAX];
        int r;

        if (!m->config.localid_domain)
                return reply_internal_error(error, -EINVAL,
                                            "bad settings: no local id settings specified");
        r = identity_local_key_new(&key);
        if (r >= 0)
                r = identity_local_csr(key, module_id, m->config.hostname,
                                       m->config.localid_domain, server, &csr);
        if (r < 0)
                return reply_internal_error(error, r, "could not create certificate request");
        r = identity_call_string(m, "certd", "CreateCertificate", &cert, message, sizeof(message),
                                 "ss", module_id, csr);
        if (r < 0)
                return reply_internal_error(error, r, message);
        r = identity_cert_expiration(cert, expiration);
        if (r < 0)
                return reply_internal_error(error, r, "certd's certificate does not parse");
        r = identity_local_key_pem(key, &key_pem.data, &key_pem.len);
        if (r < 0)
                return reply_internal_error(error, r, "could not write the private key");
        r = reply_local_identity(msg, module_id, key_pem.data, cert, expiration);
        if (r < 0)
                return r;
        log_info("Issued a local identity for %s (%s), valid until %s.", module_id,
                 server ? "server" : "client", expiration);
        return 1;
}

int identity_local_get(Manager *m, sd_bus_message *msg, const char *module_id,
                       sd_bus_error *error)
{
        const IdentityPrincipal *p = identity_config_local_principal(&m->config, module_id);

        /* Only the modules the configuration names have one. */
        if (!p)
                return sd_bus_error_setf(error, IDENTITY_ERROR_INVALID_PARAMETER,
                                         "parameter \"moduleId\" has an invalid value\n"
                                         "caused by: local identity for %s doesn't exist",
                                         module_id);
        return issue(m, msg, module_id, p->localid_server, error);
}

/* The "attributes" option of CreateModuleIdentity: "client" (the default) or "server". */
static int read_attributes(sd_bus_message *msg, bool *ret_server, sd_bus_error *error)
{
        const char *name, *value;
        int r;

        *ret_server = false;
        r = sd_bus_message_rewind(msg, /* complete= */ true);
        if (r >= 0)
                r = sd_bus_message_skip(msg, "ss");
        if (r >= 0)
                r = sd_bus_message_enter_container(msg, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(msg, 'e', "sv")) > 0) {
                r = sd_bus_message_read(msg, "s", &name);
                if (r < 0)
                        return r;
                if (!streq(name, "attributes")) {
                        r = sd_bus_message_skip(msg, "v");
                } else {
                        r = sd_bus_message_read(msg, "v", "s", &value);
                        if (r < 0)
                                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                                        "Option \"attributes\" must be of type "
                                                        "s.");
                        if (!streq(value, "client") && !streq(value, "server"))
                                return sd_bus_error_setf(error, IDENTITY_ERROR_INVALID_PARAMETER,
                                                         "parameter \"attributes\" has an invalid "
                                                         "value\ncaused by: unknown variant `%s`, "
                                                         "expected `client` or `server`",
                                                         value);
                        *ret_server = streq(value, "server");
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(msg);
                if (r < 0)
                        return r;
        }
        return r;
}

int identity_local_create(Manager *m, sd_bus_message *msg, const char *module_id,
                          sd_bus_error *error)
{
        bool server;
        int r;

        /* A configured local principal gets its identity from GetModuleIdentity only. */
        if (identity_config_local_principal(&m->config, module_id))
                return sd_bus_error_setf(error, IDENTITY_ERROR_INVALID_PARAMETER,
                                         "parameter \"moduleId\" has an invalid value\n"
                                         "caused by: local identity for %s already exists",
                                         module_id);
        r = read_attributes(msg, &server, error);
        if (r < 0)
                return r;
        return issue(m, msg, module_id, server, error);
}
