/* SPDX-License-Identifier: MIT */
#pragma once

/* The certd configuration (/etc/aziot/certd/config.toml + config.d), as far as certd reads it:
 *   homedir_path       the store's home (default /var/lib/aziot/certd)
 *   [cert_issuance]    local_ca = { cert, pk }; est = { urls, trusted_certs, auth,
 *                      identity_auto_renew }; per-id options: method ("self_signed", "local_ca",
 *                      "est"), expiry_days, common_name or subject, and for "est" url and auth.
 *                      Its ids are adopted into the store's index. Hot-reloaded.
 *   [preloaded_certs]  id → "file:///…" or [ids] (certs-preloaded.h; hot-reloaded)
 *   [[principal]]      uid + "certs" globs (hot-reloaded)
 *   max_requests       published as the MaxRequests property, which the gateway enforces on
 *                      certd.sock (read at start: not reloaded) */

#include <stdbool.h>

#include <openssl/x509.h>

#include "cert-renewal.h"
#include "config.h"
#include "principal.h"
#include "toml.h"

#define CERTS_DEFAULT_HOMEDIR "/var/lib/aziot/certd"

typedef struct CertsConfig {
        TomlValue *root;                /* the merged configuration, owned */
        const char *homedir;            /* in root, or CERTS_DEFAULT_HOMEDIR */
        const TomlValue *preloaded;     /* [preloaded_certs] in root, NULL when absent */
        const TomlValue *cert_issuance; /* [cert_issuance] in root, NULL when absent */
        const TomlValue *est;           /* [cert_issuance.est], NULL when absent */
        RenewalConfig est_renewal;      /* [cert_issuance.est.identity_auto_renew] */
        PrincipalSet principals;
        uint32_t max_requests;
} CertsConfig;

typedef enum CertsIssuanceMethod {
        CERTS_ISSUANCE_NONE, /* no options for the id */
        CERTS_ISSUANCE_SELF_SIGNED,
        CERTS_ISSUANCE_LOCAL_CA,
        CERTS_ISSUANCE_EST,
} CertsIssuanceMethod;

/* cert_issuance.<id>, resolved. */
typedef struct CertsIssuance {
        CertsIssuanceMethod method;
        unsigned expiry_days; /* 0: the default */
        X509_NAME *subject;   /* NULL: the CSR's */
} CertsIssuance;

void certs_issuance_done(CertsIssuance *i);

/* The options of id (method CERTS_ISSUANCE_NONE when there are none). -EINVAL with *ret_error
 * filled for a malformed entry (certs_config_parse() checks every entry up front). */
int certs_config_issuance(const CertsConfig *c, const char *id, CertsIssuance *ret,
                          ConfigError *ret_error);

/* [cert_issuance.local_ca]: the certificate id and key pair id of the local CA; -ENOENT when not
 * configured. */
int certs_config_local_ca(const CertsConfig *c, const char **ret_cert, const char **ret_pk);

/* EST authentication (spec §3.5): HTTP Basic and/or a TLS client certificate. The strings point
 * into the configuration. */
typedef struct CertsEstAuth {
        const char *username, *password;          /* both or neither */
        const char *identity_cert, *identity_pk;  /* both or neither: the EST identity */
        const char *bootstrap_cert, *bootstrap_pk; /* both or neither; needs the identity */
} CertsEstAuth;

static inline bool certs_est_auth_basic(const CertsEstAuth *a)
{
        return a->username;
}

static inline bool certs_est_auth_x509(const CertsEstAuth *a)
{
        return a->identity_cert;
}

/* How to enroll id at an EST server: the URL (cert_issuance.<id>.url, else
 * cert_issuance.est.urls.<id>, else cert_issuance.est.urls.default) and the authentication
 * (cert_issuance.<id>'s when it has any auth key, else cert_issuance.est's). -ENOENT with
 * *ret_problem set ("EST URL is not configured", "EST authentication is not configured"). */
int certs_config_est(const CertsConfig *c, const char *id, const char **ret_url,
                     CertsEstAuth *ret_auth, const char **ret_problem);

/* The EST identity certificates the configuration names (cert_issuance.est's and every est
 * entry's identity_cert), each once, with the auth block that names it; for each, calls
 * f(identity cert id, auth, userdata). */
typedef void (*CertsEstIdentityFunc)(const char *id, const CertsEstAuth *auth, void *userdata);
void certs_config_foreach_est_identity(const CertsConfig *c, CertsEstIdentityFunc f,
                                       void *userdata);

/* The auth block that names identity_cert as its EST identity; -ENOENT when none does. */
int certs_config_est_identity(const CertsConfig *c, const char *identity_cert,
                              CertsEstAuth *ret);

/* [cert_issuance.est] trusted_certs (certificate ids; NULL-terminated array of pointers into the
 * configuration, freed with free()) and identity_auto_renew. */
int certs_config_est_trusted(const CertsConfig *c, const char ***ret_ids);
RenewalConfig certs_config_est_renewal(const CertsConfig *c);

/* Takes ownership of root (also on failure). */
int certs_config_parse(TomlValue *root, CertsConfig *ret, ConfigError *ret_error);
int certs_config_load(CertsConfig *ret, ConfigError *ret_error);
void certs_config_done(CertsConfig *c);
