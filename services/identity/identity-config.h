/* SPDX-License-Identifier: MIT */
#pragma once

/* The identityd configuration (/etc/aziot/identityd/config.toml + config.d), read as upstream reads
 * it (spec §4.5, §4.6, §4.9, §4.12):
 *
 *   hostname, homedir                       required
 *   prefer_module_identity_cache = false
 *   cloud_timeout_sec = 70                  at least 70
 *   cloud_retries = 1
 *   max_requests = 10                       published as the MaxRequests property, which the
 *                                           gateway enforces on identityd.sock (not reloaded)
 *   [provisioning]                          source = "manual" | "dps" | "none", and its table
 *   [localid] domain = "…"
 *   [[principal]] uid, name, idtype = ["device", "module", "local"], localid = {type, attributes}
 *   [endpoints]                             accepted and ignored (everything is on the bus here)
 *
 * and one key of ours: [provisioning.attestation] enrollment = "group" (default "individual")
 * for a DPS symmetric key that is an enrollment group's key, from which keyd derives the device's
 * key (cloud-protocols.md §2.4) — upstream needs the derived key itself in the configuration.
 *
 * and checks it as upstream does: principal names unique; idtype "local" needs [localid];
 * localid options need idtype "local"; idtypes "module" and "device" need a provisioning source
 * other than "none"; DPS is refused with local_gateway_hostname. Unlike upstream, every error names
 * the file, line and column. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/x509.h>

#include "cert-renewal.h"
#include "config.h"

#define IDENTITY_CLOUD_TIMEOUT_MIN 70u
#define IDENTITY_MASTER_KEY_ID "aziot_identityd_master_id"

typedef enum IdentitySource {
        IDENTITY_SOURCE_NONE,
        IDENTITY_SOURCE_MANUAL,
        IDENTITY_SOURCE_DPS,
} IdentitySource;

typedef enum IdentityAuth {
        IDENTITY_AUTH_SAS,           /* manual */
        IDENTITY_AUTH_X509,          /* manual or dps */
        IDENTITY_AUTH_SYMMETRIC_KEY, /* dps */
        IDENTITY_AUTH_TPM,           /* dps */
} IdentityAuth;

typedef struct IdentityProvisioning {
        IdentitySource source;
        IdentityAuth auth;
        char *local_gateway_hostname; /* NULL: not nested */
        /* manual */
        char *iothub_hostname, *device_id;
        /* dps */
        char *global_endpoint, *scope_id;
        char *payload_path;           /* payload = { uri = "file:///…" }; NULL: none */
        char *registration_id;        /* symmetric_key, tpm; x509 as a string */
        X509_NAME *registration_name; /* x509 as a table (or the string as CN); NULL: none */
        /* keys and certificates */
        char *symmetric_key;          /* keyd key id: manual device_id_pk, dps symmetric_key */
        bool group_enrollment;        /* dps symmetric_key is an enrollment group's key (ours:
                                       * enrollment = "group"): the device key is derived in
                                       * keyd as HMAC-SHA256(group key, registration id) */
        char *identity_cert, *identity_pk;
        X509_NAME *csr_subject;       /* manual x509 csr_subject (CN = device_id forced) */
        bool auto_renew;              /* dps x509 identity_auto_renew present */
        RenewalConfig renewal;
} IdentityProvisioning;

enum {
        IDENTITY_IDTYPE_DEVICE = 1 << 0,
        IDENTITY_IDTYPE_MODULE = 1 << 1,
        IDENTITY_IDTYPE_LOCAL = 1 << 2,
};

typedef struct IdentityPrincipal {
        uid_t uid;
        char *name;
        unsigned idtypes;   /* IDENTITY_IDTYPE_*; 0 with has_idtype false: a daemon */
        bool has_idtype;
        bool localid_server; /* localid attributes = "server" */
} IdentityPrincipal;

typedef struct IdentityConfig {
        char *hostname, *homedir;
        bool prefer_module_identity_cache;
        unsigned cloud_timeout_sec, cloud_retries;
        uint32_t max_requests;
        char *localid_domain; /* NULL: no [localid] */
        IdentityProvisioning provisioning;
        IdentityPrincipal *principals; /* as they stand after upstream's rules (see classify) */
        size_t n_principals;
} IdentityConfig;

void identity_config_done(IdentityConfig *c);
int identity_config_parse(const TomlValue *root, IdentityConfig *ret, ConfigError *ret_error);
int identity_config_load(IdentityConfig *ret, ConfigError *ret_error);

/* Who a caller is (spec §4.5). */
typedef enum IdentityCallerKind {
        IDENTITY_CALLER_ROOT,    /* uid 0, no principal */
        IDENTITY_CALLER_DAEMON,  /* the principal without idtype */
        IDENTITY_CALLER_HOST,    /* a principal with idtype */
        IDENTITY_CALLER_UNKNOWN,
} IdentityCallerKind;

typedef struct IdentityCaller {
        IdentityCallerKind kind;
        const IdentityPrincipal *principal; /* DAEMON and HOST */
} IdentityCaller;

IdentityCaller identity_config_classify(const IdentityConfig *c, uid_t uid);

typedef enum IdentityOperation {
        IDENTITY_OP_GET_DEVICE,
        IDENTITY_OP_GET_MODULE,
        IDENTITY_OP_MANAGE, /* list all, create, update, delete modules; reprovision */
        IDENTITY_OP_TRUST_BUNDLE,
} IdentityOperation;

/* The table of spec §4.5. module_id: for IDENTITY_OP_GET_MODULE. */
bool identity_caller_allowed(const IdentityCaller *caller, IdentityOperation op,
                             const char *module_id);

/* The names of the principals with idtype "module": the module identities to keep in IoT Hub.
 * NULL-terminated, pointing into c; free the array only. */
int identity_config_hub_modules(const IdentityConfig *c, const char ***ret);

/* The principal for a local identity of module_id (idtype "local"), NULL when none. */
const IdentityPrincipal *identity_config_local_principal(const IdentityConfig *c,
                                                         const char *module_id);
