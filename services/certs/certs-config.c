/* SPDX-License-Identifier: MIT */
#include "certs-config.h"
#include "certs-issue.h"
#include "certs-openssl.h"
#include "certs-preloaded.h"
#include "certs-store.h"
#include "log.h"
#include "macro.h"
#include "x509-subject.h"


void certs_issuance_done(CertsIssuance *i)
{
        X509_NAME_free(i->subject);
        *i = (CertsIssuance){};
}

static bool is_global_table(const char *key)
{
        return streq(key, "est") || streq(key, "local_ca");
}

static bool is_http_url(const char *url)
{
        return startswith(url, "https://") || startswith(url, "http://");
}

/* The auth keys of an EST table (cert_issuance.est or an est entry), checked. Returns 1 when the
 * table has any, 0 when none. */
static int read_est_auth(const TomlValue *t, const char *where, CertsEstAuth *ret,
                         ConfigError *ret_error)
{
        static const struct {
                const char *first, *second;
                size_t first_offset, second_offset;
        } pairs[] = {
                { "username", "password", offsetof(CertsEstAuth, username),
                  offsetof(CertsEstAuth, password) },
                { "identity_cert", "identity_pk", offsetof(CertsEstAuth, identity_cert),
                  offsetof(CertsEstAuth, identity_pk) },
                { "bootstrap_identity_cert", "bootstrap_identity_pk",
                  offsetof(CertsEstAuth, bootstrap_cert), offsetof(CertsEstAuth, bootstrap_pk) },
        };
        CertsEstAuth a = {};
        int r;

        for (size_t i = 0; i < ELEMENTSOF(pairs); i++) {
                const char **first = (const char **)((char *)&a + pairs[i].first_offset);
                const char **second = (const char **)((char *)&a + pairs[i].second_offset);

                r = config_get_string(t, pairs[i].first, first, ret_error);
                if (r < 0 && r != -ENOENT)
                        return r;
                r = config_get_string(t, pairs[i].second, second, ret_error);
                if (r < 0 && r != -ENOENT)
                        return r;
                if (!*first != !*second)
                        return config_error_at(ret_error, t, "%s: %s and %s go together", where,
                                               pairs[i].first, pairs[i].second);
                if (i > 0 && *first &&
                    (certs_id_validate(*first) < 0 || certs_id_validate(*second) < 0))
                        return config_error_at(ret_error, t, "%s: invalid id in %s or %s", where,
                                               pairs[i].first, pairs[i].second);
        }
        if (a.bootstrap_cert && !a.identity_cert)
                return config_error_at(ret_error, t,
                                       "%s: a bootstrap identity needs identity_cert and "
                                       "identity_pk",
                                       where);
        if (ret)
                *ret = a;
        return a.username || a.identity_cert;
}

static int parse_issuance(const TomlValue *entry, const char *id, CertsIssuance *ret,
                          ConfigError *ret_error)
{
        _cleanup_(certs_issuance_done) CertsIssuance i = {};
        const TomlValue *subject = NULL;
        const char *method, *cn = NULL;
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

        if (i.method == CERTS_ISSUANCE_EST) {
                const char *url;

                r = config_get_string(entry, "url", &url, ret_error);
                if (r >= 0 && !is_http_url(url))
                        return config_error_at(ret_error, toml_table_get(entry, "url"),
                                               "cert_issuance.%s.url must be an http:// or "
                                               "https:// URL",
                                               id);
                if (r < 0 && r != -ENOENT)
                        return r;
                r = read_est_auth(entry, id, NULL, ret_error);
                if (r < 0)
                        return r;
        }

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
        subject = toml_table_get(entry, "subject");
        if (cn && subject)
                return config_error_at(ret_error, entry,
                                       "cert_issuance.%s: common_name and subject exclude each "
                                       "other",
                                       id);
        if (subject && subject->type != TOML_TABLE)
                return config_error_at(ret_error, subject, "cert_issuance.%s.subject must be a table",
                                       id);
        if (subject || cn) {
                char what[256];

                (void)snprintf(what, sizeof(what), "cert_issuance.%s.%s", id,
                               subject ? "subject" : "common_name");
                r = x509_subject_from_toml(subject ? subject : toml_table_get(entry, "common_name"),
                                           what, &i.subject, ret_error);
                if (r < 0)
                        return r;
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

static const char *est_url(const CertsConfig *c, const char *id)
{
        const TomlValue *entry, *urls;
        const char *url;

        entry = c->cert_issuance && !is_global_table(id) ? toml_table_get(c->cert_issuance, id)
                                                         : NULL;
        if (entry && entry->type == TOML_TABLE && config_get_string(entry, "url", &url, NULL) >= 0)
                return url;
        if (!c->est || config_get_table(c->est, "urls", &urls, NULL) < 0)
                return NULL;
        if (config_get_string(urls, id, &url, NULL) >= 0 ||
            config_get_string(urls, "default", &url, NULL) >= 0)
                return url;
        return NULL;
}

int certs_config_est(const CertsConfig *c, const char *id, const char **ret_url,
                     CertsEstAuth *ret_auth, const char **ret_problem)
{
        const TomlValue *entry;

        *ret_url = est_url(c, id);
        if (!*ret_url) {
                *ret_problem = "EST URL is not configured";
                return -ENOENT;
        }
        entry = c->cert_issuance && !is_global_table(id) ? toml_table_get(c->cert_issuance, id)
                                                         : NULL;
        /* Checked at load: these only fail for a table without auth. */
        if (entry && entry->type == TOML_TABLE && read_est_auth(entry, id, ret_auth, NULL) > 0)
                return 0;
        if (c->est && read_est_auth(c->est, "cert_issuance.est", ret_auth, NULL) > 0)
                return 0;
        *ret_problem = "EST authentication is not configured";
        return -ENOENT;
}

void certs_config_foreach_est_identity(const CertsConfig *c, CertsEstIdentityFunc f,
                                       void *userdata)
{
        CertsEstAuth a;

        if (c->est && read_est_auth(c->est, "cert_issuance.est", &a, NULL) > 0 &&
            a.identity_cert)
                f(a.identity_cert, &a, userdata);
        if (!c->cert_issuance)
                return;
        toml_table_foreach(e, c->cert_issuance)
        {
                CertsEstAuth global = {};
                const char *method;

                if (is_global_table(e->key) || e->value->type != TOML_TABLE ||
                    config_get_string(e->value, "method", &method, NULL) < 0 ||
                    !streq(method, "est") || read_est_auth(e->value, e->key, &a, NULL) <= 0 ||
                    !a.identity_cert)
                        continue;
                /* Once per identity: the first block that names it wins. */
                if (certs_config_est_identity(c, a.identity_cert, &global) >= 0 &&
                    global.identity_pk != a.identity_pk)
                        continue;
                f(a.identity_cert, &a, userdata);
        }
}

int certs_config_est_identity(const CertsConfig *c, const char *identity_cert,
                              CertsEstAuth *ret)
{
        CertsEstAuth a;

        if (c->est && read_est_auth(c->est, "cert_issuance.est", &a, NULL) > 0 &&
            a.identity_cert && streq(a.identity_cert, identity_cert)) {
                *ret = a;
                return 0;
        }
        if (!c->cert_issuance)
                return -ENOENT;
        toml_table_foreach(e, c->cert_issuance)
        {
                const char *method;

                if (is_global_table(e->key) || e->value->type != TOML_TABLE ||
                    config_get_string(e->value, "method", &method, NULL) < 0 ||
                    !streq(method, "est") || read_est_auth(e->value, e->key, &a, NULL) <= 0 ||
                    !a.identity_cert || !streq(a.identity_cert, identity_cert))
                        continue;
                *ret = a;
                return 0;
        }
        return -ENOENT;
}

int certs_config_est_trusted(const CertsConfig *c, const char ***ret_ids)
{
        const TomlValue *list = NULL;
        const char **ids;
        size_t n = 0;

        if (c->est)
                (void)config_get_array(c->est, "trusted_certs", &list, NULL);
        ids = calloc((list ? list->array.n : 0) + 1, sizeof(char *));
        if (!ids)
                return -ENOMEM;
        for (size_t i = 0; list && i < list->array.n; i++)
                ids[n++] = list->array.items[i]->string.data;
        *ret_ids = ids;
        return 0;
}

RenewalConfig certs_config_est_renewal(const CertsConfig *c)
{
        return c->est_renewal;
}

static int check_est(const TomlValue *est, ConfigError *ret_error)
{
        const TomlValue *urls = NULL, *trusted = NULL, *renew = NULL;
        RenewalConfig ignored;
        int r;

        if (est->type != TOML_TABLE)
                return config_error_at(ret_error, est, "cert_issuance.est must be a table");
        r = config_get_table(est, "urls", &urls, ret_error);
        if (r < 0 && r != -ENOENT)
                return r;
        if (urls)
                toml_table_foreach(e, urls)
                {
                        if (e->value->type != TOML_STRING ||
                            !is_http_url(e->value->string.data))
                                return config_error_at(ret_error, e->value,
                                                       "cert_issuance.est.urls.%s must be an "
                                                       "http:// or https:// URL",
                                                       e->key);
                        if (startswith(e->value->string.data, "http://"))
                                log_warning("cert_issuance.est.urls.%s is plain HTTP: EST "
                                            "credentials and certificates travel in the clear.",
                                            e->key);
                }
        r = config_get_array(est, "trusted_certs", &trusted, ret_error);
        if (r < 0 && r != -ENOENT)
                return r;
        for (size_t i = 0; trusted && i < trusted->array.n; i++) {
                const TomlValue *v = trusted->array.items[i];

                if (v->type != TOML_STRING || memchr(v->string.data, 0, v->string.len) ||
                    certs_id_validate(v->string.data) < 0)
                        return config_error_at(ret_error, v,
                                               "cert_issuance.est.trusted_certs must be "
                                               "certificate ids");
        }
        r = read_est_auth(est, "cert_issuance.est", NULL, ret_error);
        if (r < 0)
                return r;
        r = config_get_table(est, "identity_auto_renew", &renew, ret_error);
        if (r < 0 && r != -ENOENT)
                return r;
        return renewal_config_from_toml(renew, "cert_issuance.est.identity_auto_renew", &ignored,
                                        ret_error);
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
        if (toml_table_get(table, "est")) {
                r = check_est(toml_table_get(table, "est"), ret_error);
                if (r < 0)
                        return r;
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
        r = config_get_max_requests(root, &c.max_requests, ret_error);
        if (r < 0)
                return r;

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
        c.est = c.cert_issuance ? toml_table_get(c.cert_issuance, "est") : NULL;
        r = renewal_config_from_toml(c.est ? toml_table_get(c.est, "identity_auto_renew") : NULL,
                                     "cert_issuance.est.identity_auto_renew", &c.est_renewal,
                                     ret_error);
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
