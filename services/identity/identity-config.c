/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "file-uri.h"
#include "identity-config.h"
#include "log.h"
#include "macro.h"
#include "x509-subject.h"

static void provisioning_done(IdentityProvisioning *p)
{
        free(p->local_gateway_hostname);
        free(p->iothub_hostname);
        free(p->device_id);
        free(p->global_endpoint);
        free(p->scope_id);
        free(p->payload_path);
        free(p->registration_id);
        X509_NAME_free(p->registration_name);
        free(p->symmetric_key);
        free(p->identity_cert);
        free(p->identity_pk);
        X509_NAME_free(p->csr_subject);
        *p = (IdentityProvisioning){};
}

void identity_config_done(IdentityConfig *c)
{
        free(c->hostname);
        free(c->homedir);
        free(c->localid_domain);
        provisioning_done(&c->provisioning);
        for (size_t i = 0; i < c->n_principals; i++)
                free(c->principals[i].name);
        free(c->principals);
        *c = (IdentityConfig){};
}

/* A string member, copied; -ENOENT when absent (and not required). */
static int copy_string(const TomlValue *table, const char *key, bool required, const char *where,
                       char **ret, ConfigError *ret_error)
{
        const char *s;
        int r;

        r = config_get_string(table, key, &s, ret_error);
        if (r == -ENOENT) {
                if (required)
                        return config_error_at(ret_error, table, "%s needs \"%s\"", where, key);
                return -ENOENT;
        }
        if (r < 0)
                return r;
        if (memchr(s, 0, toml_table_get(table, key)->string.len))
                return config_error_at(ret_error, toml_table_get(table, key),
                                       "\"%s\" must not contain NUL", key);
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int optional_string(const TomlValue *table, const char *key, char **ret,
                           ConfigError *ret_error)
{
        int r = copy_string(table, key, false, NULL, ret, ret_error);

        return r == -ENOENT ? 0 : r;
}

static int parse_manual(const TomlValue *prov, IdentityProvisioning *p, ConfigError *ret_error)
{
        const TomlValue *auth = NULL, *subject;
        const char *method;
        int r;

        r = copy_string(prov, "iothub_hostname", true, "provisioning", &p->iothub_hostname,
                        ret_error);
        if (r >= 0)
                r = copy_string(prov, "device_id", true, "provisioning", &p->device_id,
                                ret_error);
        if (r < 0)
                return r;
        r = config_get_table(prov, "authentication", &auth, ret_error);
        if (r == -ENOENT)
                return config_error_at(ret_error, prov,
                                       "provisioning needs an [provisioning.authentication] table");
        if (r < 0)
                return r;
        r = config_get_string(auth, "method", &method, ret_error);
        if (r == -ENOENT)
                return config_error_at(ret_error, auth, "provisioning.authentication needs a method");
        if (r < 0)
                return r;
        if (streq(method, "sas")) {
                p->auth = IDENTITY_AUTH_SAS;
                return copy_string(auth, "device_id_pk", true, "provisioning.authentication",
                                   &p->symmetric_key, ret_error);
        }
        if (!streq(method, "x509"))
                return config_error_at(ret_error, toml_table_get(auth, "method"),
                                       "unknown authentication method \"%s\" (sas, x509)", method);
        p->auth = IDENTITY_AUTH_X509;
        r = copy_string(auth, "identity_cert", true, "provisioning.authentication",
                        &p->identity_cert, ret_error);
        if (r >= 0)
                r = copy_string(auth, "identity_pk", true, "provisioning.authentication",
                                &p->identity_pk, ret_error);
        if (r < 0)
                return r;
        subject = toml_table_get(auth, "csr_subject");
        if (subject)
                return x509_subject_from_toml(subject, "provisioning.authentication.csr_subject",
                                              &p->csr_subject, ret_error);
        return 0;
}

static int parse_payload(const TomlValue *prov, IdentityProvisioning *p, ConfigError *ret_error)
{
        const TomlValue *payload = NULL;
        const char *uri;
        int r;

        r = config_get_table(prov, "payload", &payload, ret_error);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        r = config_get_string(payload, "uri", &uri, ret_error);
        if (r == -ENOENT)
                return config_error_at(ret_error, payload, "provisioning.payload needs a uri");
        if (r < 0)
                return r;
        r = file_uri_to_path(uri, &p->payload_path);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return config_error_at(ret_error, toml_table_get(payload, "uri"),
                                       "provisioning.payload.uri must be a file:///absolute/path "
                                       "URI");
        return 0;
}

/* As a URL parser writes it back (upstream shows the endpoint so): scheme and host lower-cased,
 * the scheme's default port dropped, an empty path written "/". */
static int normalize_url(char **url)
{
        char *u = *url, *authority = strstr(u, "://"), *end, *port, *out;
        size_t scheme_len, host_len;
        bool https;

        if (!authority)
                return -EINVAL;
        scheme_len = (size_t)(authority - u);
        authority += 3;
        end = authority + strcspn(authority, "/?#");
        for (char *c = u; c < end; c++)
                if (*c >= 'A' && *c <= 'Z' && (c < authority || !strchr(authority, '@') ||
                                                c > strchr(authority, '@')))
                        *c = (char)(*c - 'A' + 'a');
        https = scheme_len == 5 && strncmp(u, "https", 5) == 0;
        port = memrchr(authority, ':', (size_t)(end - authority));
        host_len = (size_t)(end - authority);
        if (port && !memchr(port, ']', (size_t)(end - port)) &&
            ((https && end - port == 4 && strncmp(port, ":443", 4) == 0) ||
             (!https && end - port == 3 && strncmp(port, ":80", 3) == 0)))
                host_len = (size_t)(port - authority);
        if (asprintf(&out, "%.*s://%.*s%s%s", (int)scheme_len, u, (int)host_len, authority,
                     *end == '/' ? "" : "/", end) < 0)
                return -ENOMEM;
        free(*url);
        *url = out;
        return 0;
}

static int parse_dps(const TomlValue *prov, IdentityProvisioning *p, ConfigError *ret_error)
{
        const TomlValue *att = NULL, *reg, *renew;
        const char *method;
        int r;

        if (p->local_gateway_hostname)
                return config_error_at(ret_error, prov,
                                       "DPS provisioning is not supported in nested mode "
                                       "(local_gateway_hostname)");
        r = copy_string(prov, "global_endpoint", true, "provisioning", &p->global_endpoint,
                        ret_error);
        if (r >= 0 && strncasecmp(p->global_endpoint, "https://", 8) != 0 &&
            strncasecmp(p->global_endpoint, "http://", 7) != 0)
                return config_error_at(ret_error, toml_table_get(prov, "global_endpoint"),
                                       "provisioning.global_endpoint must be an https:// URL");
        if (r >= 0)
                r = normalize_url(&p->global_endpoint);
        if (r >= 0)
                r = copy_string(prov, "scope_id", true, "provisioning", &p->scope_id, ret_error);
        if (r >= 0)
                r = parse_payload(prov, p, ret_error);
        if (r < 0)
                return r;
        r = config_get_table(prov, "attestation", &att, ret_error);
        if (r == -ENOENT)
                return config_error_at(ret_error, prov,
                                       "provisioning needs a [provisioning.attestation] table");
        if (r < 0)
                return r;
        r = config_get_string(att, "method", &method, ret_error);
        if (r == -ENOENT)
                return config_error_at(ret_error, att, "provisioning.attestation needs a method");
        if (r < 0)
                return r;

        if (streq(method, "symmetric_key")) {
                const char *enrollment;

                p->auth = IDENTITY_AUTH_SYMMETRIC_KEY;
                r = copy_string(att, "registration_id", true, "provisioning.attestation",
                                &p->registration_id, ret_error);
                if (r >= 0)
                        r = copy_string(att, "symmetric_key", true, "provisioning.attestation",
                                        &p->symmetric_key, ret_error);
                if (r < 0)
                        return r;
                r = config_get_string(att, "enrollment", &enrollment, ret_error);
                if (r == -ENOENT)
                        return 0;
                if (r < 0)
                        return r;
                if (!streq(enrollment, "group") && !streq(enrollment, "individual"))
                        return config_error_at(ret_error, toml_table_get(att, "enrollment"),
                                               "enrollment must be \"individual\" or \"group\"");
                p->group_enrollment = streq(enrollment, "group");
                return 0;
        }
        if (streq(method, "tpm")) {
                p->auth = IDENTITY_AUTH_TPM;
                return copy_string(att, "registration_id", true, "provisioning.attestation",
                                   &p->registration_id, ret_error);
        }
        if (!streq(method, "x509"))
                return config_error_at(ret_error, toml_table_get(att, "method"),
                                       "unknown attestation method \"%s\" (symmetric_key, x509, "
                                       "tpm)",
                                       method);
        p->auth = IDENTITY_AUTH_X509;
        r = copy_string(att, "identity_cert", true, "provisioning.attestation", &p->identity_cert,
                        ret_error);
        if (r >= 0)
                r = copy_string(att, "identity_pk", true, "provisioning.attestation",
                                &p->identity_pk, ret_error);
        if (r < 0)
                return r;
        reg = toml_table_get(att, "registration_id");
        if (reg) {
                r = x509_subject_from_toml(reg, "provisioning.attestation.registration_id",
                                           &p->registration_name, ret_error);
                if (r < 0)
                        return r;
                if (reg->type == TOML_STRING) {
                        p->registration_id = strdup(reg->string.data);
                        if (!p->registration_id)
                                return -ENOMEM;
                }
        }
        renew = toml_table_get(att, "identity_auto_renew");
        if (renew) {
                p->auto_renew = true;
                return renewal_config_from_toml(renew,
                                                "provisioning.attestation.identity_auto_renew",
                                                &p->renewal, ret_error);
        }
        return 0;
}

static int parse_provisioning(const TomlValue *root, IdentityProvisioning *p,
                              ConfigError *ret_error)
{
        const TomlValue *prov = NULL;
        const char *source;
        int r;

        r = config_get_table(root, "provisioning", &prov, ret_error);
        if (r == -ENOENT)
                return config_error_at(ret_error, root, "a [provisioning] table is needed");
        if (r < 0)
                return r;
        r = optional_string(prov, "local_gateway_hostname", &p->local_gateway_hostname,
                            ret_error);
        if (r < 0)
                return r;
        r = config_get_string(prov, "source", &source, ret_error);
        if (r == -ENOENT)
                return config_error_at(ret_error, prov, "provisioning needs a source");
        if (r < 0)
                return r;
        if (streq(source, "manual")) {
                p->source = IDENTITY_SOURCE_MANUAL;
                return parse_manual(prov, p, ret_error);
        }
        if (streq(source, "dps")) {
                p->source = IDENTITY_SOURCE_DPS;
                return parse_dps(prov, p, ret_error);
        }
        if (streq(source, "none")) {
                p->source = IDENTITY_SOURCE_NONE;
                return 0;
        }
        return config_error_at(ret_error, toml_table_get(prov, "source"),
                               "unknown provisioning source \"%s\" (manual, dps, none)", source);
}

static int parse_idtypes(const TomlValue *list, unsigned *ret, ConfigError *ret_error)
{
        static const struct {
                const char *name;
                unsigned bit;
        } types[] = {
                { "device", IDENTITY_IDTYPE_DEVICE },
                { "module", IDENTITY_IDTYPE_MODULE },
                { "local", IDENTITY_IDTYPE_LOCAL },
        };
        unsigned bits = 0;

        if (list->type != TOML_ARRAY)
                return config_error_at(ret_error, list, "idtype must be an array");
        toml_array_foreach(item, list)
        {
                size_t i;

                if ((*item)->type != TOML_STRING)
                        return config_error_at(ret_error, *item, "idtype entries are strings");
                for (i = 0; i < ELEMENTSOF(types); i++)
                        if (streq((*item)->string.data, types[i].name))
                                break;
                if (i == ELEMENTSOF(types))
                        return config_error_at(ret_error, *item,
                                               "unknown idtype \"%s\" (device, module, local)",
                                               (*item)->string.data);
                bits |= types[i].bit;
        }
        *ret = bits;
        return 0;
}

static int parse_principal(const TomlValue *entry, IdentityPrincipal *ret, ConfigError *ret_error)
{
        IdentityPrincipal p = {};
        const TomlValue *idtype, *localid;
        int64_t uid;
        int r;

        if (entry->type != TOML_TABLE)
                return config_error_at(ret_error, entry, "[[principal]] entries are tables");
        r = config_get_integer(entry, "uid", &uid, ret_error);
        if (r == -ENOENT)
                return config_error_at(ret_error, entry, "a principal needs a uid");
        if (r < 0)
                return r;
        if (uid < 0 || uid >= (int64_t)UINT32_MAX)
                return config_error_at(ret_error, toml_table_get(entry, "uid"),
                                       "uid out of range");
        p.uid = (uid_t)uid;
        idtype = toml_table_get(entry, "idtype");
        if (idtype) {
                r = parse_idtypes(idtype, &p.idtypes, ret_error);
                if (r < 0)
                        return r;
                p.has_idtype = true;
        }
        localid = toml_table_get(entry, "localid");
        if (localid) {
                const char *type, *attributes;

                if (!(p.idtypes & IDENTITY_IDTYPE_LOCAL))
                        return config_error_at(ret_error, localid,
                                               "localid options need idtype \"local\"");
                if (localid->type != TOML_TABLE)
                        return config_error_at(ret_error, localid, "localid must be a table");
                r = config_get_string(localid, "type", &type, ret_error);
                if (r >= 0 && !streq(type, "x509"))
                        return config_error_at(ret_error, toml_table_get(localid, "type"),
                                               "localid type must be \"x509\"");
                if (r < 0 && r != -ENOENT)
                        return r;
                r = config_get_string(localid, "attributes", &attributes, ret_error);
                if (r >= 0) {
                        if (streq(attributes, "server"))
                                p.localid_server = true;
                        else if (!streq(attributes, "client"))
                                return config_error_at(ret_error,
                                                       toml_table_get(localid, "attributes"),
                                                       "localid attributes must be \"client\" or "
                                                       "\"server\"");
                } else if (r != -ENOENT)
                        return r;
        }
        r = copy_string(entry, "name", true, "principal", &p.name, ret_error);
        if (r < 0)
                return r;
        *ret = p;
        return 0;
}

/* Upstream's rules: the same uid twice, the later entry wins; only the first principal without
 * idtype is kept. Names must be unique. */
static int parse_principals(const TomlValue *root, IdentityConfig *c, ConfigError *ret_error)
{
        const TomlValue *list = toml_table_get(root, "principal");
        bool daemon_seen = false;
        int r;

        if (!list)
                return 0;
        if (list->type != TOML_ARRAY)
                return config_error_at(ret_error, list, "principal must be an array of tables");
        c->principals = calloc(list->array.n + 1, sizeof(IdentityPrincipal));
        if (!c->principals)
                return -ENOMEM;
        toml_array_foreach(item, list)
        {
                IdentityPrincipal p;

                r = parse_principal(*item, &p, ret_error);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < c->n_principals; i++)
                        if (streq(c->principals[i].name, p.name) &&
                            c->principals[i].uid != p.uid) {
                                free(p.name);
                                return config_error_at(ret_error, *item,
                                                       "principal name \"%s\" is used twice",
                                                       c->principals[i].name);
                        }
                if (!p.has_idtype) {
                        if (daemon_seen) {
                                log_warning("Ignoring the principal %s (uid %u): ensure there is "
                                            "only one principal without a type.",
                                            p.name, (unsigned)p.uid);
                                free(p.name);
                                continue;
                        }
                        daemon_seen = true;
                }
                for (size_t i = 0; i < c->n_principals; i++)
                        if (c->principals[i].uid == p.uid) {
                                free(c->principals[i].name);
                                memmove(c->principals + i, c->principals + i + 1,
                                        (c->n_principals - i - 1) * sizeof(IdentityPrincipal));
                                c->n_principals--;
                                break;
                        }
                c->principals[c->n_principals++] = p;
        }
        return 0;
}

static int check(const TomlValue *root, const IdentityConfig *c, ConfigError *ret_error)
{
        for (size_t i = 0; i < c->n_principals; i++) {
                const IdentityPrincipal *p = &c->principals[i];

                if ((p->idtypes & IDENTITY_IDTYPE_LOCAL) && !c->localid_domain)
                        return config_error_at(ret_error, root,
                                               "principal %s has idtype \"local\", which needs "
                                               "[localid] domain",
                                               p->name);
                if ((p->idtypes & (IDENTITY_IDTYPE_MODULE | IDENTITY_IDTYPE_DEVICE)) &&
                    c->provisioning.source == IDENTITY_SOURCE_NONE)
                        return config_error_at(ret_error, root,
                                               "principal %s has idtype \"module\" or \"device\", "
                                               "which needs a provisioning source other than "
                                               "\"none\"",
                                               p->name);
        }
        return 0;
}

int identity_config_parse(const TomlValue *root, IdentityConfig *ret, ConfigError *ret_error)
{
        _cleanup_(identity_config_done) IdentityConfig c = {
                .cloud_timeout_sec = IDENTITY_CLOUD_TIMEOUT_MIN,
                .cloud_retries = 1,
        };
        const TomlValue *localid = NULL;
        int64_t v;
        int r;

        r = copy_string(root, "hostname", true, "the configuration", &c.hostname, ret_error);
        if (r >= 0)
                r = copy_string(root, "homedir", true, "the configuration", &c.homedir, ret_error);
        if (r < 0)
                return r;
        if (c.homedir[0] != '/')
                return config_error_at(ret_error, toml_table_get(root, "homedir"),
                                       "homedir must be an absolute path");
        r = config_get_bool(root, "prefer_module_identity_cache",
                            &c.prefer_module_identity_cache, ret_error);
        if (r < 0 && r != -ENOENT)
                return r;
        r = config_get_max_requests(root, &c.max_requests, ret_error);
        if (r < 0)
                return r;
        r = config_get_integer(root, "cloud_timeout_sec", &v, ret_error);
        if (r >= 0) {
                if (v < IDENTITY_CLOUD_TIMEOUT_MIN || v > 24 * 3600)
                        return config_error_at(ret_error, toml_table_get(root, "cloud_timeout_sec"),
                                               "cloud_timeout_sec must be from %u to 86400",
                                               IDENTITY_CLOUD_TIMEOUT_MIN);
                c.cloud_timeout_sec = (unsigned)v;
        } else if (r != -ENOENT)
                return r;
        r = config_get_integer(root, "cloud_retries", &v, ret_error);
        if (r >= 0) {
                if (v < 0 || v > 100)
                        return config_error_at(ret_error, toml_table_get(root, "cloud_retries"),
                                               "cloud_retries must be from 0 to 100");
                c.cloud_retries = (unsigned)v;
        } else if (r != -ENOENT)
                return r;
        r = config_get_table(root, "localid", &localid, ret_error);
        if (r >= 0) {
                r = copy_string(localid, "domain", true, "localid", &c.localid_domain, ret_error);
                if (r < 0)
                        return r;
        } else if (r != -ENOENT)
                return r;

        r = parse_provisioning(root, &c.provisioning, ret_error);
        if (r < 0)
                return r;
        r = parse_principals(root, &c, ret_error);
        if (r < 0)
                return r;
        r = check(root, &c, ret_error);
        if (r < 0)
                return r;
        *ret = c;
        c = (IdentityConfig){};
        return 0;
}

int identity_config_load(IdentityConfig *ret, ConfigError *ret_error)
{
        _cleanup_toml_ TomlValue *root = NULL;
        int r;

        r = config_load("identityd", &root, ret_error);
        if (r < 0)
                return r;
        return identity_config_parse(root, ret, ret_error);
}

IdentityCaller identity_config_classify(const IdentityConfig *c, uid_t uid)
{
        for (size_t i = 0; i < c->n_principals; i++)
                if (c->principals[i].uid == uid)
                        return (IdentityCaller){
                                c->principals[i].has_idtype ? IDENTITY_CALLER_HOST
                                                            : IDENTITY_CALLER_DAEMON,
                                &c->principals[i],
                        };
        if (uid == 0)
                return (IdentityCaller){ IDENTITY_CALLER_ROOT, NULL };
        return (IdentityCaller){ IDENTITY_CALLER_UNKNOWN, NULL };
}

bool identity_caller_allowed(const IdentityCaller *caller, IdentityOperation op,
                             const char *module_id)
{
        if (op == IDENTITY_OP_TRUST_BUNDLE)
                return true;
        switch (caller->kind) {
        case IDENTITY_CALLER_ROOT:
        case IDENTITY_CALLER_DAEMON:
                return true;
        case IDENTITY_CALLER_HOST:
                if (op == IDENTITY_OP_GET_DEVICE)
                        return caller->principal->idtypes & IDENTITY_IDTYPE_DEVICE;
                if (op == IDENTITY_OP_GET_MODULE)
                        return module_id && streq(caller->principal->name, module_id) &&
                               (caller->principal->idtypes &
                                (IDENTITY_IDTYPE_MODULE | IDENTITY_IDTYPE_LOCAL));
                return false;
        default:
                return false;
        }
}

int identity_config_hub_modules(const IdentityConfig *c, const char ***ret)
{
        const char **names = calloc(c->n_principals + 1, sizeof(char *));
        size_t n = 0;

        if (!names)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_principals; i++)
                if (c->principals[i].idtypes & IDENTITY_IDTYPE_MODULE)
                        names[n++] = c->principals[i].name;
        *ret = names;
        return 0;
}

const IdentityPrincipal *identity_config_local_principal(const IdentityConfig *c,
                                                         const char *module_id)
{
        for (size_t i = 0; i < c->n_principals; i++)
                if ((c->principals[i].idtypes & IDENTITY_IDTYPE_LOCAL) &&
                    streq(c->principals[i].name, module_id))
                        return &c->principals[i];
        return NULL;
}
