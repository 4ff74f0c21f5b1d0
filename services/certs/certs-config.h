/* SPDX-License-Identifier: MIT */
#pragma once

/* The certd configuration (/etc/aziot/certd/config.toml + config.d), as far as certd reads it:
 *   homedir_path       the store's home (default /var/lib/aziot/certd)
 *   [cert_issuance]    local_ca = { cert, pk } and per-id options: method ("self_signed",
 *                      "local_ca"; "est" is accepted but not served yet), expiry_days, common_name
 *                      or subject; the [cert_issuance.est] table is not read yet. Its ids are
 *                      adopted into the store's index. Hot-reloaded.
 *   [preloaded_certs]  id → "file:///…" or [ids] (certs-preloaded.h; hot-reloaded)
 *   [[principal]]      uid + "certs" globs (hot-reloaded) */

#include <openssl/x509.h>

#include "config.h"
#include "principal.h"
#include "toml.h"

#define CERTS_DEFAULT_HOMEDIR "/var/lib/aziot/certd"

typedef struct CertsConfig {
        TomlValue *root;                /* the merged configuration, owned */
        const char *homedir;            /* in root, or CERTS_DEFAULT_HOMEDIR */
        const TomlValue *preloaded;     /* [preloaded_certs] in root, NULL when absent */
        const TomlValue *cert_issuance; /* [cert_issuance] in root, NULL when absent */
        PrincipalSet principals;
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

/* Takes ownership of root (also on failure). */
int certs_config_parse(TomlValue *root, CertsConfig *ret, ConfigError *ret_error);
int certs_config_load(CertsConfig *ret, ConfigError *ret_error);
void certs_config_done(CertsConfig *c);
