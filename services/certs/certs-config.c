/* SPDX-License-Identifier: MIT */
#include "certs-config.h"
#include "certs-issue.h"
#include "certs-openssl.h"
#include "certs-preloaded.h"
#include "macro.h"

#define MAX_SUBJECT_FIELDS 32

void certs_issuance_done(CertsIssuance *i)
{
        X509_NAME_free(i->subject);
        *i = (CertsIssuance){};
}

static bool is_global_table(const char *key)
{
        return streq(key, "est") || streq(key, "local_ca");
}

static int parse_issuance(const TomlValue *entry, const char *id, CertsIssuance *ret,
                          ConfigError *ret_error)
{
        _cleanup_(certs_issuance_done) CertsIssuance i = {};
        CertsSubjectField fields[MAX_SUBJECT_FIELDS];
        const TomlValue *subject = NULL;
        const char *method, *cn = NULL;
        size_t n = 0;
        int64_t days;
        int r;

        if (entry->type != TOML_TABLE)
                return config_error_at(ret_error, entry, "cert_issuance.%s must be a table", id);
        r = config_get_string(entry, "method", &method, ret_error);
        if (r == -ENOENT)
                return config_error_at(ret_error, entry, "cert_issuance.%s needs a method", id);
        if (r < 0)
                return r;
        if (streq(method, "self_signed"))
                i.method = CERTS_ISSUANCE_SELF_SIGNED;
        else if (streq(method, "local_ca"))
                i.method = CERTS_ISSUANCE_LOCAL_CA;
        else if (streq(method, "est"))
                i.method = CERTS_ISSUANCE_EST;
        else
                return config_error_at(ret_error, toml_table_get(entry, "method"),
                                       "unknown issuance method \"%s\"", method);

        r = config_get_integer(entry, "expiry_days", &days, ret_error);
        if (r >= 0) {
                if (days <= 0 || days > CERTS_ISSUE_EXPIRY_DAYS_MAX)
                        return config_error_at(ret_error, toml_table_get(entry, "expiry_days"),
                                               "expiry_days must be from 1 to %u",
                                               CERTS_ISSUE_EXPIRY_DAYS_MAX);
                i.expiry_days = (unsigned)days;
        } else if (r != -ENOENT)
                return r;

        r = config_get_string(entry, "common_name", &cn, ret_error);
        if (r < 0 && r != -ENOENT)
                return r;
        r = config_get_table(entry, "subject", &subject, ret_error);
        if (r < 0 && r != -ENOENT)
                return r;
        if (cn && subject)
                return config_error_at(ret_error, entry,
                                       "cert_issuance.%s: common_name and subject exclude each "
                                       "other",
                                       id);
        if (subject) {
                toml_table_foreach(e, subject)
                {
                        if (n == MAX_SUBJECT_FIELDS)
                                return config_error_at(ret_error, subject, "too many fields");
                        if (e->value->type != TOML_STRING ||
                            memchr(e->value->string.data, 0, e->value->string.len) ||
                            memchr(e->key, 0, e->key_len))
                                return config_error_at(ret_error, e->value,
                                                       "subject fields must be strings");
                        fields[n++] = (CertsSubjectField){ e->key, e->value->string.data };
                }
                if (n == 0)
                        return config_error_at(ret_error, subject, "the subject is empty");
        }
        if (cn || subject) {
                r = certs_subject_new(cn, subject ? fields : NULL, n, &i.subject);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return config_error_at(ret_error, subject ? subject : entry,
                                               "cert_issuance.%s: invalid subject", id);
        }

        *ret = i;
        i = (CertsIssuance){};
        return 0;
}

int certs_config_issuance(const CertsConfig *c, const char *id, CertsIssuance *ret,
                          ConfigError *ret_error)
{
        const TomlValue *entry;

        *ret = (CertsIssuance){};
        if (!c->cert_issuance || is_global_table(id))
                return 0;
        entry = toml_table_get(c->cert_issuance, id);
        if (!entry)
                return 0;
        return parse_issuance(entry, id, ret, ret_error);
}

int certs_config_local_ca(const CertsConfig *c, const char **ret_cert, const char **ret_pk)
{
        const TomlValue *t;

        if (!c->cert_issuance)
                return -ENOENT;
        t = toml_table_get(c->cert_issuance, "local_ca");
        if (!t || t->type != TOML_TABLE)
                return -ENOENT;
        if (config_get_string(t, "cert", ret_cert, NULL) < 0 ||
            config_get_string(t, "pk", ret_pk, NULL) < 0)
                return -ENOENT;
        return 0;
}

static int check_issuance(const TomlValue *table, ConfigError *ret_error)
{
        const TomlValue *local_ca;
        const char *s;
        int r;

        if (!table)
                return 0;
        local_ca = toml_table_get(table, "local_ca");
        if (local_ca) {
                if (local_ca->type != TOML_TABLE)
                        return config_error_at(ret_error, local_ca,
                                               "cert_issuance.local_ca must be a table");
                for (const char *const *k = (const char *const[]){ "cert", "pk", NULL }; *k; k++) {
                        r = config_get_string(local_ca, *k, &s, ret_error);
                        if (r == -ENOENT)
                                return config_error_at(ret_error, local_ca,
                                                       "cert_issuance.local_ca needs %s", *k);
                        if (r < 0)
                                return r;
                }
        }
        toml_table_foreach(e, table)
        {
                _cleanup_(certs_issuance_done) CertsIssuance i = {};

                if (memchr(e->key, 0, e->key_len) || is_global_table(e->key))
                        continue;
                r = parse_issuance(e->value, e->key, &i, ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

void certs_config_done(CertsConfig *c)
{
        principal_set_done(&c->principals);
        toml_value_free(c->root);
        *c = (CertsConfig){};
}

int certs_config_parse(TomlValue *root, CertsConfig *ret, ConfigError *ret_error)
{
        _cleanup_(certs_config_done) CertsConfig c = { .root = root };
        CertsPreloadedSet check = {};
        int r;

        c.homedir = CERTS_DEFAULT_HOMEDIR;
        r = config_get_string(root, "homedir_path", &c.homedir, ret_error);
        if (r == -ENOENT)
                c.homedir = CERTS_DEFAULT_HOMEDIR;
        else if (r < 0)
                return r;
        else if (c.homedir[0] != '/')
                return config_error_at(ret_error, toml_table_get(root, "homedir_path"),
                                       "homedir_path must be an absolute path");

        r = config_get_table(root, "preloaded_certs", &c.preloaded, ret_error);
        if (r == -ENOENT)
                c.preloaded = NULL;
        else if (r < 0)
                return r;
        /* Checked here, so that a bad table is reported with the rest of the configuration. */
        r = certs_preloaded_parse(c.preloaded, &check, ret_error);
        if (r < 0)
                return r;
        certs_preloaded_set_clear(&check);

        r = config_get_table(root, "cert_issuance", &c.cert_issuance, ret_error);
        if (r == -ENOENT)
                c.cert_issuance = NULL;
        else if (r < 0)
                return r;
        r = check_issuance(c.cert_issuance, ret_error);
        if (r < 0)
                return r;

        r = principal_set_from_config(root, "certs", &c.principals, ret_error);
        if (r < 0)
                return r;

        *ret = c;
        c = (CertsConfig){};
        return 0;
}

int certs_config_load(CertsConfig *ret, ConfigError *ret_error)
{
        TomlValue *root = NULL;
        int r;

        r = config_load("certd", &root, ret_error);
        if (r < 0)
                return r;
        return certs_config_parse(root, ret, ret_error);
}
