/* SPDX-License-Identifier: MIT */
/* aziotctl check and check-list (spec §7.2): the configuration, the services and the connectivity
 * of the device, each check giving ok, warning, ignored, skipped or error. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <netdb.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "aziotctl-check.h"
#include "aziotctl-util.h"
#include "aziotctl.h"
#include "build-config.h"
#include "certs-config.h"
#include "certs-store.h"
#include "config.h"
#include "file-uri.h"
#include "identity-config.h"
#include "keys-config.h"
#include "log.h"
#include "macro.h"
#include "openssl-util.h"
#include "tpm-config.h"

/* The user aziot-certd runs as (DESIGN.md §1). */
#define CERTS_USER "aziotcs"
#define EXPIRY_WARN_SEC (7 * 24 * 3600)
#define NTP_OFFSET_WARN_SEC 10.0

static const char *const result_names[] = {
        [CHECK_OK] = "ok",           [CHECK_WARNING] = "warning", [CHECK_IGNORED] = "ignored",
        [CHECK_SKIPPED] = "skipped", [CHECK_FATAL] = "fatal",     [CHECK_ERROR] = "error",
};

void check_result_done(CheckResult *r)
{
        for (size_t i = 0; i < r->n_details; i++)
                free(r->details[i]);
        *r = (CheckResult){};
}

void check_detail(CheckResult *r, const char *format, ...)
{
        va_list ap;
        char *s;

        if (r->n_details >= ELEMENTSOF(r->details))
                return;
        va_start(ap, format);
        if (vasprintf(&s, format, ap) >= 0)
                r->details[r->n_details++] = s;
        va_end(ap);
}

/* Raises the result to kind (errors beat warnings beat ok) and adds a detail. */
void check_set(CheckResult *r, CheckResultKind kind, const char *format, ...)
{
        va_list ap;
        char *s;

        if (kind == CHECK_ERROR || r->kind == CHECK_OK ||
            (kind == CHECK_WARNING && r->kind != CHECK_ERROR))
                r->kind = kind;
        if (!format || r->n_details >= ELEMENTSOF(r->details))
                return;
        va_start(ap, format);
        if (vasprintf(&s, format, ap) >= 0)
                r->details[r->n_details++] = s;
        va_end(ap);
}

/* ---- configuration ---- */

static int load_merged(const char *svc, TomlValue **ret, char *message, size_t size)
{
        _cleanup_free_ char *main_path = NULL, *dir = NULL;
        ConfigError e = {};
        int r;

        r = ctl_config_paths(svc, &main_path, &dir);
        if (r < 0) {
                snprintf(message, size, "%s", strerror(-r));
                return r;
        }
        r = config_load_files(main_path, dir, ret, &e);
        if (r < 0) {
                config_error_format(&e, message, size);
                config_error_done(&e);
        }
        return r;
}

/* The four daemons' configurations, each read with the daemon's own parser. parse() hands root to
 * that parser and stores what it returns in c; it may take root (setting *root to NULL). ok_offset
 * is where c says that the configuration could be read, for the checks that need it. */
typedef struct ServiceConfig {
        const char *name;
        int (*parse)(CheckContext *c, TomlValue **root, ConfigError *ret_error);
        size_t ok_offset;
        void (*then)(CheckContext *c, CheckResult *res); /* more checks on a good configuration */
} ServiceConfig;

static int parse_keyd(CheckContext *c, TomlValue **root, ConfigError *ret_error)
{
        /* The preloaded-key checks read [preloaded_keys] from the tree itself. */
        c->keyd_root = TAKE_PTR(*root);
        return keys_config_parse(c->keyd_root, &c->keys, ret_error);
}

static int parse_certd(CheckContext *c, TomlValue **root, ConfigError *ret_error)
{
        /* certs_config_parse() takes root, also on failure; c->certs keeps pointers into it. */
        return certs_config_parse(TAKE_PTR(*root), &c->certs, ret_error);
}

static int parse_tpmd(CheckContext *c, TomlValue **root, ConfigError *ret_error)
{
        return tpm_config_parse(*root, &c->tpm, ret_error);
}

static int parse_identityd(CheckContext *c, TomlValue **root, ConfigError *ret_error)
{
        return identity_config_parse(*root, &c->identity, ret_error);
}

/* What identityd recorded at its last reconciliation: the hub it provisioned to. */
static void read_identityd_prev_state(CheckContext *c, CheckResult *res)
{
        _cleanup_toml_ TomlValue *prev = NULL;
        _cleanup_free_ char *prev_path = NULL, *homedir = NULL;
        const TomlValue *device = NULL;
        const char *s;
        TomlError te = {};
        int r;

        homedir = ctl_path(c->identity.homedir);
        if (!homedir || asprintf(&prev_path, "%s/prev_state", homedir) < 0)
                return;
        r = toml_parse_file(prev_path, &prev, &te);
        if (r == -ENOENT)
                return;
        if (r < 0) {
                check_set(res, CHECK_WARNING, "previous identityd state %s is malformed: %u:%u: %s",
                          prev_path, te.line, te.column, te.message);
                return;
        }
        if (config_get_table(prev, "device", &device, NULL) >= 0 &&
            config_get_string(device, "hub_name", &s, NULL) >= 0)
                c->prev_hub = strdup(s);
}

enum { SVC_KEYD, SVC_CERTD, SVC_TPMD, SVC_IDENTITYD };

static const ServiceConfig service_configs[] = {
        [SVC_KEYD] = {"keyd", parse_keyd, offsetof(CheckContext, keys_ok), NULL},
        [SVC_CERTD] = {"certd", parse_certd, offsetof(CheckContext, certs_ok), NULL},
        [SVC_TPMD] = {"tpmd", parse_tpmd, offsetof(CheckContext, tpm_ok), NULL},
        [SVC_IDENTITYD] = {"identityd", parse_identityd, offsetof(CheckContext, identity_ok),
                           read_identityd_prev_state},
};

/* What a check needs: the configurations it reads (skipped when one could not be read). */
enum {
        NEEDS_KEYD = 1 << SVC_KEYD,
        NEEDS_CERTD = 1 << SVC_CERTD,
        NEEDS_TPMD = 1 << SVC_TPMD,
        NEEDS_IDENTITYD = 1 << SVC_IDENTITYD,
};

static bool *service_config_ok(CheckContext *c, const ServiceConfig *s)
{
        return (bool *)((char *)c + s->ok_offset);
}

static void check_service_config(CheckContext *c, const ServiceConfig *s, CheckResult *res)
{
        _cleanup_toml_ TomlValue *root = NULL;
        char message[512];
        ConfigError e = {};

        if (load_merged(s->name, &root, message, sizeof(message)) < 0) {
                check_set(res, CHECK_ERROR, "%s configuration is malformed: %s", s->name, message);
                return;
        }
        if (s->parse(c, &root, &e) < 0) {
                check_set(res, CHECK_ERROR, "%s configuration is malformed: %s", s->name,
                          config_error_format(&e, message, sizeof(message)));
                config_error_done(&e);
                return;
        }
        *service_config_ok(c, s) = true;
        if (s->then)
                s->then(c, res);
}

static bool file_newer(const struct stat *a, const struct stat *b)
{
        return a->st_mtim.tv_sec > b->st_mtim.tv_sec ||
               (a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec > b->st_mtim.tv_nsec);
}

static void check_configs_up_to_date(CheckContext *c, CheckResult *res)
{
        static const char *const svcs[] = {"keyd", "certd", "tpmd", "identityd"};
        _cleanup_free_ char *super = ctl_path(SYSCONFDIR "/aziot/config.toml");
        struct stat st_super, st;

        (void)c;
        if (!super) {
                check_set(res, CHECK_ERROR, "out of memory");
                return;
        }
        if (stat(super, &st_super) < 0) {
                res->kind = CHECK_IGNORED;
                check_detail(res, "%s does not exist: the services are configured directly", super);
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(svcs); i++) {
                _cleanup_free_ char *rel = NULL, *path = NULL;

                if (asprintf(&rel, SYSCONFDIR "/aziot/%s/config.d/00-super.toml", svcs[i]) < 0 ||
                    !(path = ctl_path(rel))) {
                        check_set(res, CHECK_ERROR, "out of memory");
                        return;
                }
                if (stat(path, &st) < 0)
                        check_set(res, CHECK_WARNING,
                                  "%s does not exist. Did you run 'aziotctl config apply'?", path);
                else if (file_newer(&st_super, &st))
                        check_set(res, CHECK_WARNING,
                                  "%s was modified after %s. Did you run 'aziotctl config apply'?",
                                  super, path);
        }
}

/* ---- hostname ---- */

static bool is_ip_literal(const char *s)
{
        struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *ai = NULL;
        bool ok = getaddrinfo(s, NULL, &hints, &ai) == 0;

        if (ai)
                freeaddrinfo(ai);
        return ok;
}

static bool is_rfc1035(const char *s)
{
        const char *label = s;

        if (!*s)
                return false;
        for (;;) {
                size_t n = strcspn(label, ".");

                if (n == 0 || n > 63 || !((label[0] >= 'a' && label[0] <= 'z')) ||
                    label[n - 1] == '-')
                        return false;
                for (size_t i = 0; i < n; i++)
                        if (!((label[i] >= 'a' && label[i] <= 'z') ||
                              (label[i] >= '0' && label[i] <= '9') || label[i] == '-'))
                                return false;
                if (!label[n])
                        return true;
                label += n + 1;
        }
}

static void check_hostname(CheckContext *c, CheckResult *res)
{
        char machine[256] = {};
        _cleanup_free_ char *config = NULL;
        const char *rest;

        config = strdup(c->identity.hostname ?: "");
        if (!config) {
                check_set(res, CHECK_ERROR, "out of memory");
                return;
        }
        for (char *p = config; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        if (is_ip_literal(config))
                return;
        if (gethostname(machine, sizeof(machine) - 1) < 0) {
                check_set(res, CHECK_ERROR, "cannot read the machine's hostname: %m");
                return;
        }
        for (char *p = machine; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        rest = startswith(config, machine);
        if (!rest || (rest[0] != '\0' && rest[0] != '.')) {
                check_set(res, CHECK_ERROR,
                          "configuration has hostname %s but device reports hostname %s. "
                          "Hostname in identityd configuration must either be identical to "
                          "the device hostname or be a fully-qualified domain name that "
                          "has the device hostname as the first component.",
                          c->identity.hostname, machine);
                return;
        }
        if (!is_rfc1035(config))
                check_set(res, CHECK_WARNING,
                          "configuration has hostname %s which does not comply with RFC 1035 "
                          "(labels of a-z, 0-9 and '-', starting with a letter, at most 63 "
                          "characters)",
                          c->identity.hostname);
        if (strlen(config) > 64)
                check_set(res, CHECK_WARNING,
                          "configuration has hostname %s which is longer than 64 characters: "
                          "it cannot be the common name of a certificate",
                          c->identity.hostname);
}

/* ---- versions and time ---- */

static void check_aziot_version(CheckContext *c, CheckResult *res)
{
        unsigned a_major, a_minor, e_major, e_minor;

        if (c->identity_ok && c->identity.provisioning.local_gateway_hostname) {
                res->kind = CHECK_SKIPPED;
                check_detail(res, "the device is nested behind a parent: not checked");
                return;
        }
        if (!c->expected_version) {
                res->kind = CHECK_SKIPPED;
                check_detail(res, "the latest version is published at "
                                  "https://aka.ms/azure-iotedge-latest-versions, which this build "
                                  "does not query; pass --expected-aziot-version");
                return;
        }
        if (sscanf(c->expected_version, "%u.%u", &e_major, &e_minor) != 2 ||
            sscanf(PACKAGE_VERSION, "%u.%u", &a_major, &a_minor) != 2) {
                check_set(res, CHECK_ERROR, "cannot compare version %s with %s",
                          c->expected_version, PACKAGE_VERSION);
                return;
        }
        if (a_major != e_major || a_minor != e_minor)
                check_set(res, CHECK_WARNING, "installed version is %s but %s is expected",
                          PACKAGE_VERSION, c->expected_version);
}

static void check_host_local_time(CheckContext *c, CheckResult *res)
{
        double offset;
        char message[256];
        int r;

        r = sntp_offset(c->ntp_server, 5, &offset, message, sizeof(message));
        if (r < 0) {
                check_set(res, CHECK_WARNING, "could not query NTP server %s: %s", c->ntp_server,
                          message);
                return;
        }
        if (offset >= NTP_OFFSET_WARN_SEC || offset <= -NTP_OFFSET_WARN_SEC)
                check_set(res, CHECK_WARNING,
                          "time on the device is out of sync with the NTP server %s by %.0f "
                          "seconds. Please see https://aka.ms/iotedge-ntp for more information.",
                          c->ntp_server, offset);
}

/* ---- certificates ---- */

static int certs_store(CheckContext *c, CertsStore **ret)
{
        _cleanup_free_ char *home = NULL;
        int r;

        if (!c->store) {
                home = ctl_path(c->certs.homedir);
                if (!home)
                        return -ENOMEM;
                r = certs_store_new(home, &c->store);
                if (r < 0)
                        return r;
                r = certs_store_set_preloaded(c->store, c->certs.preloaded, NULL);
                if (r < 0)
                        return r;
        }
        *ret = c->store;
        return 0;
}

static int load_cert(CheckContext *c, const char *id, X509 **ret)
{
        _cleanup_free_ char *pem = NULL;
        CertsStore *s;
        size_t len;
        int r;

        r = certs_store(c, &s);
        if (r < 0)
                return r;
        r = certs_store_get(s, id, &pem, &len);
        if (r < 0)
                return r;
        *ret = cert_from_pem(pem, len);
        return *ret ? 0 : -EBADMSG;
}

/* error: not yet valid or expired; warning: less than 7 days left. */
static void check_validity(CheckContext *c, CheckResult *res, X509 *x, const char *what)
{
        CertInfo ci;
        char t[40];

        if (cert_info(x, &ci) < 0) {
                check_set(res, CHECK_ERROR, "%s: cannot read its validity", what);
                return;
        }
        if (ci.not_before > c->now)
                check_set(res, CHECK_ERROR, "%s is not valid until %s", what,
                          format_time(ci.not_before, t, sizeof(t)));
        else if (ci.not_after <= c->now)
                check_set(res, CHECK_ERROR, "%s expired at %s", what,
                          format_time(ci.not_after, t, sizeof(t)));
        else if (ci.not_after - c->now < EXPIRY_WARN_SEC)
                check_set(res, CHECK_WARNING, "%s will expire soon (%s, in less than 7 days)", what,
                          format_time(ci.not_after, t, sizeof(t)));
}

static void check_cert_id_expiry(CheckContext *c, CheckResult *res, const char *id,
                                 const char *kind, bool may_be_missing)
{
        _cleanup_(X509_freep) X509 *x = NULL;
        char what[256];
        int r;

        snprintf(what, sizeof(what), "%s certificate %s", kind, id);
        r = load_cert(c, id, &x);
        if (r == -ENOENT && may_be_missing) {
                check_detail(res, "%s has not been issued yet", what);
                return;
        }
        if (r < 0) {
                check_set(res, CHECK_ERROR, "could not read %s: %s", what, strerror(-r));
                return;
        }
        check_validity(c, res, x, what);
}

static void check_identity_cert_expiry(CheckContext *c, CheckResult *res)
{
        const IdentityProvisioning *p = &c->identity.provisioning;
        CertsStore *s;

        if (certs_store(c, &s) < 0) {
                check_set(res, CHECK_ERROR, "cannot open certd's store");
                return;
        }
        if (p->source == IDENTITY_SOURCE_NONE || p->auth != IDENTITY_AUTH_X509 ||
            !p->identity_cert) {
                res->kind = CHECK_IGNORED;
                check_detail(res, "the device does not authenticate with an X.509 certificate");
                return;
        }
        check_cert_id_expiry(c, res, p->identity_cert, "device identity",
                             /* may_be_missing= */ !certs_store_is_preloaded(s, p->identity_cert));
}

typedef struct EstVisit {
        CheckContext *c;
        CheckResult *res;
        unsigned n;
} EstVisit;

static void visit_est_identity(const char *id, const CertsEstAuth *auth, void *userdata)
{
        EstVisit *v = userdata;

        v->n++;
        check_cert_id_expiry(v->c, v->res, id, "EST identity",
                             /* may_be_missing= */ auth->bootstrap_cert != NULL);
        if (auth->bootstrap_cert)
                check_cert_id_expiry(v->c, v->res, auth->bootstrap_cert, "EST bootstrap identity",
                                     /* may_be_missing= */ false);
}

static void check_est_cert_expiry(CheckContext *c, CheckResult *res)
{
        EstVisit v = {c, res, 0};
        CertsStore *s;

        if (certs_store(c, &s) < 0) {
                check_set(res, CHECK_ERROR, "cannot open certd's store");
                return;
        }
        certs_config_foreach_est_identity(&c->certs, visit_est_identity, &v);
        if (v.n == 0) {
                res->kind = CHECK_IGNORED;
                check_detail(res, "no EST identity certificate is configured");
        }
}

static void check_local_ca_expiry(CheckContext *c, CheckResult *res)
{
        const char *cert, *pk;
        CertsStore *s;

        if (certs_store(c, &s) < 0) {
                check_set(res, CHECK_ERROR, "cannot open certd's store");
                return;
        }
        if (certs_config_local_ca(&c->certs, &cert, &pk) < 0) {
                res->kind = CHECK_IGNORED;
                check_detail(res, "no local CA is configured");
                return;
        }
        check_cert_id_expiry(c, res, cert, "local CA",
                             /* may_be_missing= */ !certs_store_is_preloaded(s, cert));
}

/* Whether user could read path, judged by its mode bits (ACLs and the directories on the way are
 * not looked at). -ENOENT when there is no such user. */
static int user_can_read(const char *user, const char *path)
{
        struct passwd *pw = getpwnam(user);
        gid_t groups[64];
        int n = (int)ELEMENTSOF(groups);
        struct stat st;

        if (!pw)
                return -ENOENT;
        if (stat(path, &st) < 0)
                return -errno;
        if (pw->pw_uid == 0 || (st.st_mode & S_IROTH))
                return true;
        if (st.st_uid == pw->pw_uid)
                return !!(st.st_mode & S_IRUSR);
        if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0)
                n = 0;
        for (int i = 0; i < n; i++)
                if (groups[i] == st.st_gid)
                        return !!(st.st_mode & S_IRGRP);
        return false;
}

static void check_preloaded_file(CheckContext *c, CheckResult *res, const char *id, const char *uri)
{
        _cleanup_free_ char *path = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        unsigned n = 0;
        char what[512];
        int r;

        r = file_uri_to_path(uri, &path);
        if (r < 0) {
                check_set(res, CHECK_ERROR,
                          "preloaded certificate %s has URI %s: only file:// URIs of "
                          "absolute paths are supported",
                          id, uri);
                return;
        }
        bio = BIO_new_file(path, "r");
        if (!bio) {
                check_set(res, CHECK_ERROR, "preloaded certificate %s: cannot read %s: %m", id,
                          path);
                return;
        }
        if (user_can_read(CERTS_USER, path) == 0)
                check_set(res, CHECK_WARNING,
                          "preloaded certificate %s: %s is not readable by user %s, which "
                          "aziot-certd runs as",
                          id, path, CERTS_USER);
        for (;;) {
                _cleanup_(X509_freep) X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);

                if (!x)
                        break;
                snprintf(what, sizeof(what), "preloaded certificate %s (%s, #%u)", id, path, n);
                check_validity(c, res, x, what);
                n++;
        }
        if (n == 0)
                check_set(res, CHECK_ERROR, "preloaded certificate %s: %s holds no PEM certificate",
                          id, path);
}

static void check_certs_preloaded(CheckContext *c, CheckResult *res)
{
        const TomlValue *t = c->certs.preloaded;

        if (!t)
                return;
        toml_table_foreach (entry, t) {
                if (entry->value->type == TOML_STRING) {
                        check_preloaded_file(c, res, entry->key, entry->value->string.data);
                        continue;
                }
                toml_array_foreach (item, entry->value) {
                        if ((*item)->type != TOML_STRING ||
                            !toml_table_get(t, (*item)->string.data))
                                check_set(res, CHECK_ERROR,
                                          "preloaded certificate %s names %s, which is not a "
                                          "preloaded certificate",
                                          entry->key,
                                          (*item)->type == TOML_STRING ? (*item)->string.data
                                                                       : "a non-string");
                }
        }
}

static void check_est_https(CheckContext *c, CheckResult *res)
{
        const TomlValue *issuance = c->certs.cert_issuance, *urls = NULL;
        const char *url;

        if (!issuance)
                return;
        if (c->certs.est && config_get_table(c->certs.est, "urls", &urls, NULL) >= 0)
                toml_table_foreach (entry, urls)
                        if (entry->value->type == TOML_STRING &&
                            startswith(entry->value->string.data, "http://"))
                                check_set(res, CHECK_WARNING,
                                          "EST server URL cert_issuance.est.urls.%s (%s) does "
                                          "not use HTTPS",
                                          entry->key, entry->value->string.data);
        toml_table_foreach (entry, issuance) {
                if (entry->value->type != TOML_TABLE ||
                    config_get_string(entry->value, "url", &url, NULL) < 0)
                        continue;
                if (startswith(url, "http://"))
                        check_set(res, CHECK_WARNING,
                                  "EST server URL cert_issuance.%s.url (%s) does not use HTTPS",
                                  entry->key, url);
        }
}

static void check_certs_match_keys(CheckContext *c, CheckResult *res)
{
        const TomlValue *keys = NULL;
        unsigned compared = 0;

        (void)config_get_table(c->keyd_root, "preloaded_keys", &keys, NULL);
        if (!keys || !c->certs.preloaded)
                return;
        toml_table_foreach (entry, keys) {
                _cleanup_(X509_freep) X509 *x = NULL;
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
                _cleanup_(BIO_freep) BIO *bio = NULL;
                _cleanup_free_ char *path = NULL;
                EVP_PKEY *pub;
                int r;

                if (!toml_table_get(c->certs.preloaded, entry->key) ||
                    entry->value->type != TOML_STRING)
                        continue;
                if (file_uri_to_path(entry->value->string.data, &path) < 0) {
                        check_detail(res, "key %s is not a file: not compared", entry->key);
                        continue;
                }
                r = load_cert(c, entry->key, &x);
                if (r < 0) {
                        check_set(res, CHECK_ERROR, "could not read certificate %s: %s", entry->key,
                                  strerror(-r));
                        continue;
                }
                bio = BIO_new_file(path, "r");
                pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
                if (!pkey) {
                        check_set(res, CHECK_ERROR, "could not read private key %s from %s",
                                  entry->key, path);
                        continue;
                }
                pub = X509_get0_pubkey(x);
                compared++;
                if (!pub || EVP_PKEY_eq(pub, pkey) != 1)
                        check_set(res, CHECK_ERROR,
                                  "certificate %s does not match the private key %s", entry->key,
                                  entry->key);
        }
        if (compared == 0 && res->kind == CHECK_OK)
                check_detail(res, "no preloaded certificate has a preloaded key of the same id");
}

/* ---- services ---- */

static int bus(CheckContext *c, sd_bus **ret)
{
        int r;

        if (!c->bus) {
                r = sd_bus_open_system(&c->bus);
                if (r < 0)
                        return r;
        }
        *ret = c->bus;
        return 0;
}

static int name_state(sd_bus *b, const char *name, bool *ret_owned, bool *ret_activatable)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL, *reply2 = NULL;
        _cleanup_strv_free_ char **names = NULL;
        int owned = 0, r;

        r = sd_bus_call_method(b, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", "NameHasOwner", &error, &reply, "s", name);
        if (r >= 0)
                r = sd_bus_message_read(reply, "b", &owned);
        if (r < 0)
                return r;
        r = sd_bus_call_method(b, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", "ListActivatableNames", &error, &reply2,
                               NULL);
        if (r >= 0)
                r = sd_bus_message_read_strv(reply2, &names);
        if (r < 0)
                return r;
        *ret_owned = owned;
        *ret_activatable = false;
        for (char **n = names; n && *n; n++)
                if (streq(*n, name))
                        *ret_activatable = true;
        return 0;
}

static void check_running(CheckContext *c, CheckResult *res, const char *svc, const char *bus_name)
{
        _cleanup_free_ char *sock = NULL;
        bool owned = false, activatable = false;
        char message[256];
        sd_bus *b;
        int r;

        r = bus(c, &b);
        if (r < 0) {
                check_set(res, CHECK_ERROR, "cannot connect to the system bus: %s", strerror(-r));
                return;
        }
        r = name_state(b, bus_name, &owned, &activatable);
        if (r < 0) {
                check_set(res, CHECK_ERROR, "cannot ask the bus about %s: %s", bus_name,
                          strerror(-r));
                return;
        }
        if (!owned && !activatable) {
                check_set(res, CHECK_ERROR,
                          "%s is neither running nor D-Bus activatable (aziot-%s)", bus_name, svc);
                return;
        }
        check_detail(res, "%s is %s", bus_name, owned ? "running" : "D-Bus activatable");

        snprintf(message, sizeof(message), "%s.sock", svc);
        sock = ctl_socket_path(message);
        if (!sock) {
                check_set(res, CHECK_ERROR, "out of memory");
                return;
        }
        if (unix_socket_answers(sock, message, sizeof(message)) < 0)
                check_set(res, CHECK_WARNING,
                          "could not connect to %s: %s (clients of the HTTP API cannot reach "
                          "aziot-%s; is aziot-gatewayd running?)",
                          sock, message, svc);
}

static void check_keyd_running(CheckContext *c, CheckResult *res)
{
        check_running(c, res, "keyd", "org.aziot.Keys1");
}

static void check_certd_running(CheckContext *c, CheckResult *res)
{
        check_running(c, res, "certd", "org.aziot.Certificates1");
}

static void check_identityd_running(CheckContext *c, CheckResult *res)
{
        check_running(c, res, "identityd", "org.aziot.Identity1");
}

static void check_tpmd_running(CheckContext *c, CheckResult *res)
{
        if (c->identity.provisioning.source != IDENTITY_SOURCE_DPS ||
            c->identity.provisioning.auth != IDENTITY_AUTH_TPM) {
                res->kind = CHECK_IGNORED;
                check_detail(res, "the device is not provisioned with a TPM");
                return;
        }
        check_running(c, res, "tpmd", "org.aziot.Tpm1");
}

static int bus_call_id(sd_bus *b, const char *dest, const char *path, const char *method,
                       const char *id, sd_bus_error *error, sd_bus_message **reply)
{
        return sd_bus_call_method(b, dest, path, dest, method, error, reply, "sa{sv}", id, 0);
}

static void check_certs_read(CheckContext *c, CheckResult *res)
{
        sd_bus *b;
        int r;

        if (!c->certs.preloaded)
                return;
        r = bus(c, &b);
        if (r < 0) {
                check_set(res, CHECK_ERROR, "cannot connect to the system bus: %s", strerror(-r));
                return;
        }
        toml_table_foreach (entry, c->certs.preloaded) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;

                r = bus_call_id(b, "org.aziot.Certificates1", "/org/aziot/Certificates1",
                                "GetCertificate", entry->key, &error, &reply);
                if (r < 0)
                        check_set(res, CHECK_ERROR, "could not read certificate %s from certd: %s",
                                  entry->key, error.message ?: strerror(-r));
        }
}

static void check_key_pair(CheckResult *res, sd_bus *b, const char *id, const char *handle)
{
        static const unsigned char p256_oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                                 0xce, 0x3d, 0x03, 0x01, 0x07};
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL, *reply2 = NULL;
        const char *algorithm;
        const void *data;
        size_t n;
        int r;

        r = sd_bus_call_method(b, "org.aziot.Keys1", "/org/aziot/Keys1", "org.aziot.Keys1",
                               "GetKeyPairPublicParameter", &error, &reply, "ssa{sv}", handle,
                               "algorithm", 0);
        if (r >= 0)
                r = sd_bus_message_read(reply, "v", "s", &algorithm);
        if (r < 0) {
                check_set(res, CHECK_ERROR, "key pair %s: cannot read its algorithm: %s", id,
                          error.message ?: strerror(-r));
                return;
        }
        r = sd_bus_call_method(b, "org.aziot.Keys1", "/org/aziot/Keys1", "org.aziot.Keys1",
                               "GetKeyPairPublicParameter", &error, &reply2, "ssa{sv}", handle,
                               streq(algorithm, "RSA") ? "rsa-modulus" : "ec-curve-oid", 0);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply2, 'v', "ay");
        if (r >= 0)
                r = sd_bus_message_read_array(reply2, 'y', &data, &n);
        if (r < 0) {
                check_set(res, CHECK_ERROR, "key pair %s: cannot read its parameters: %s", id,
                          error.message ?: strerror(-r));
                return;
        }
        if (streq(algorithm, "RSA")) {
                const unsigned char *p = data;

                while (n > 0 && *p == 0) {
                        p++;
                        n--;
                }
                if (n * 8 < 2048)
                        check_set(res, CHECK_WARNING,
                                  "key pair %s is an RSA key of %zu bits: use at least 2048", id,
                                  n * 8);
        } else if (n != sizeof(p256_oid) || memcmp(data, p256_oid, n) != 0)
                check_set(res, CHECK_WARNING,
                          "key pair %s is an EC key on another curve than P-256", id);
}

static void check_key_pairs_read(CheckContext *c, CheckResult *res)
{
        const TomlValue *keys = NULL;
        sd_bus *b;
        int r;

        (void)config_get_table(c->keyd_root, "preloaded_keys", &keys, NULL);
        if (!keys)
                return;
        r = bus(c, &b);
        if (r < 0) {
                check_set(res, CHECK_ERROR, "cannot connect to the system bus: %s", strerror(-r));
                return;
        }
        toml_table_foreach (entry, keys) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_error_free) sd_bus_error error2 = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL, *reply2 = NULL;
                const char *handle;

                r = bus_call_id(b, "org.aziot.Keys1", "/org/aziot/Keys1", "LoadKeyPair", entry->key,
                                &error, &reply);
                if (r >= 0 && sd_bus_message_read(reply, "s", &handle) >= 0) {
                        check_key_pair(res, b, entry->key, handle);
                        continue;
                }
                /* A preloaded symmetric key (a SAS device key) is no key pair. */
                if (bus_call_id(b, "org.aziot.Keys1", "/org/aziot/Keys1", "LoadKey", entry->key,
                                &error2, &reply2) >= 0) {
                        check_detail(res, "%s is a symmetric key", entry->key);
                        continue;
                }
                check_set(res, CHECK_ERROR, "could not load key pair %s from keyd: %s", entry->key,
                          error.message ?: strerror(-r));
        }
}

/* ---- connectivity ---- */

static void check_connect(CheckContext *c, CheckResult *res, const char *host,
                          unsigned default_port, const char *proxy)
{
        char message[512];
        int r;

        r = tls_probe(host, default_port, proxy, c->identity.cloud_timeout_sec, message,
                      sizeof(message));
        if (r < 0)
                check_set(res, CHECK_ERROR, "could not connect to %s: %s", host, message);
        else
                check_detail(res, "TLS handshake with %s succeeded", host);
}

static const char *hub_host(CheckContext *c, CheckResult *res)
{
        const IdentityProvisioning *p = &c->identity.provisioning;

        if (c->iothub_hostname)
                return c->iothub_hostname;
        if (p->local_gateway_hostname)
                return p->local_gateway_hostname;
        if (p->source == IDENTITY_SOURCE_MANUAL)
                return p->iothub_hostname;
        if (p->source == IDENTITY_SOURCE_DPS && c->prev_hub)
                return c->prev_hub;
        if (p->source == IDENTITY_SOURCE_NONE) {
                res->kind = CHECK_IGNORED;
                check_detail(res, "the device is not provisioned (provisioning source \"none\")");
        } else
                check_set(res, CHECK_WARNING,
                          "the IoT Hub is not known until the device is provisioned with DPS; "
                          "pass --iothub-hostname");
        return NULL;
}

static void check_iothub_amqp(CheckContext *c, CheckResult *res)
{
        const char *h = hub_host(c, res);

        if (h)
                check_connect(c, res, h, 5671, NULL);
}

static void check_iothub_https(CheckContext *c, CheckResult *res)
{
        const char *h = hub_host(c, res);

        if (h)
                check_connect(c, res, h, 443, c->proxy_uri);
}

static void check_iothub_mqtt(CheckContext *c, CheckResult *res)
{
        const char *h = hub_host(c, res);

        if (h)
                check_connect(c, res, h, 8883, NULL);
}

static void check_dps_endpoint(CheckContext *c, CheckResult *res)
{
        _cleanup_free_ char *host = NULL;
        const char *ep = c->identity.provisioning.global_endpoint, *p;

        if (c->identity.provisioning.source != IDENTITY_SOURCE_DPS) {
                res->kind = CHECK_IGNORED;
                check_detail(res, "the device is not provisioned with DPS");
                return;
        }
        p = startswith(ep, "https://");
        if (!p) {
                check_set(res, CHECK_ERROR, "DPS endpoint %s is not an https:// URL", ep);
                return;
        }
        host = strndup(p, strcspn(p, "/?#"));
        if (!host) {
                check_set(res, CHECK_ERROR, "out of memory");
                return;
        }
        check_connect(c, res, host, 443, c->proxy_uri);
}

/* ---- the table ---- */

typedef struct Check {
        const char *id, *description;
        unsigned section; /* 0: configuration, 1: connectivity */
        unsigned needs;
        void (*run)(CheckContext *c, CheckResult *res);
        const ServiceConfig *config; /* instead of run: reads this configuration */
} Check;

static const char *const section_names[] = {"Configuration checks", "Connectivity checks"};

static const Check checks[] = {
        {"keyd-config-well-formed", "keyd configuration is well-formed", 0, 0, NULL,
         &service_configs[SVC_KEYD]},
        {"certd-config-well-formed", "certd configuration is well-formed", 0, 0, NULL,
         &service_configs[SVC_CERTD]},
        {"tpmd-config-well-formed", "tpmd configuration is well-formed", 0, 0, NULL,
         &service_configs[SVC_TPMD]},
        {"identityd-config-well-formed", "identityd configuration is well-formed", 0, 0, NULL,
         &service_configs[SVC_IDENTITYD]},
        {"configs-up-to-date", "daemon configurations up-to-date with config.toml", 0, 0,
         check_configs_up_to_date},
        {"hostname", "identityd config toml file specifies a valid hostname", 0, NEEDS_IDENTITYD,
         check_hostname},
        {"aziot-version", "aziot-identity-service package is up-to-date", 0, 0,
         check_aziot_version},
        {"host-local-time", "host time is close to reference time", 0, 0, check_host_local_time},
        {"identity-certificate-expiry", "production readiness: identity certificates expiry", 0,
         NEEDS_IDENTITYD | NEEDS_CERTD, check_identity_cert_expiry},
        {"est-identity-and-bootstrap-certificate-expiry",
         "production readiness: EST identity and bootstrap certificates expiry", 0, NEEDS_CERTD,
         check_est_cert_expiry},
        {"local-ca-certificate-expiry", "production readiness: Local CA certificates expiry", 0,
         NEEDS_CERTD, check_local_ca_expiry},
        {"certs-preloaded", "preloaded certificates are valid", 0, NEEDS_CERTD,
         check_certs_preloaded},
        {"keyd-running", "keyd is running", 0, 0, check_keyd_running},
        {"certd-running", "certd is running", 0, 0, check_certd_running},
        {"tpmd-running", "tpmd is running", 0, NEEDS_IDENTITYD, check_tpmd_running},
        {"identityd-running", "identityd is running", 0, 0, check_identityd_running},
        {"certs-read", "read all preloaded certificates from the Certificates Service", 0,
         NEEDS_CERTD, check_certs_read},
        {"key-pairs-read", "read all preloaded key pairs from the Keys Service", 0, NEEDS_KEYD,
         check_key_pairs_read},
        {"est-server-https", "check all EST server URLs utilize HTTPS", 0, NEEDS_CERTD,
         check_est_https},
        {"certs-match-private-keys",
         "ensure all preloaded certificates match preloaded private keys with the same ID", 0,
         NEEDS_KEYD | NEEDS_CERTD, check_certs_match_keys},
        {"host-connect-dps-endpoint",
         "host can connect to and perform TLS handshake with DPS endpoint", 1, NEEDS_IDENTITYD,
         check_dps_endpoint},
        {"host-connect-iothub-amqp",
         "host can connect to and perform TLS handshake with iothub AMQP port", 1, NEEDS_IDENTITYD,
         check_iothub_amqp},
        {"host-connect-iothub-https",
         "host can connect to and perform TLS handshake with iothub HTTPS / WebSockets port", 1,
         NEEDS_IDENTITYD, check_iothub_https},
        {"host-connect-iothub-mqtt",
         "host can connect to and perform TLS handshake with iothub MQTT port", 1, NEEDS_IDENTITYD,
         check_iothub_mqtt},
};

static const char *missing_config(CheckContext *c, unsigned needs)
{
        for (size_t i = 0; i < ELEMENTSOF(service_configs); i++)
                if ((needs & (1u << i)) && !*service_config_ok(c, &service_configs[i]))
                        return service_configs[i].name;
        return NULL;
}

static bool id_listed(const char *list, const char *id)
{
        size_t n = strlen(id);

        for (const char *p = list; p && *p;) {
                size_t l;

                p += strspn(p, " \t,");
                l = strcspn(p, " \t,");
                if (l == n && strncmp(p, id, n) == 0)
                        return true;
                p += l;
        }
        return false;
}

/* ---- output ---- */

static void print_details_json(FILE *f, const CheckResult *r)
{
        fputs(", \"details\": [", f);
        for (size_t i = 0; i < r->n_details; i++) {
                if (i > 0)
                        fputs(", ", f);
                json_write_string(f, r->details[i]);
        }
        fputs("]", f);
}

/* A failure's details go in the result, a success's in additional_info (print_check_json). */
static void print_result_json(FILE *f, const CheckResult *r)
{
        fprintf(f, "{\"result\": \"%s\"", result_names[r->kind]);
        if (r->n_details > 0 && r->kind != CHECK_OK)
                print_details_json(f, r);
        fputs("}", f);
}

static void print_check_json(FILE *f, const Check *ch, const CheckResult *r)
{
        fputs("{\"result\": ", f);
        print_result_json(f, r);
        fputs(", \"additional_info\": {\"description\": ", f);
        json_write_string(f, ch->description);
        if (r->kind == CHECK_OK && r->n_details > 0)
                print_details_json(f, r);
        fputs("}}", f);
}

static void print_additional_info(FILE *f)
{
        _cleanup_fclose_ FILE *os = NULL;
        _cleanup_free_ char *line = NULL, *os_path = ctl_path("/etc/os-release");
        char now[40], id[128] = "", version[128] = "";
        struct utsname u = {};
        size_t size = 0;

        os = os_path ? fopen(os_path, "re") : NULL;
        while (os && getline(&line, &size, os) > 0) {
                line[strcspn(line, "\n")] = '\0';
                if (startswith(line, "ID="))
                        snprintf(id, sizeof(id), "%s", line + 3);
                else if (startswith(line, "VERSION_ID="))
                        snprintf(version, sizeof(version), "%s", line + 11);
        }
        for (char *s = id; *s; s++)
                if (*s == '"')
                        memmove(s, s + 1, strlen(s));
        for (char *s = version; *s; s++)
                if (*s == '"')
                        memmove(s, s + 1, strlen(s));
        (void)uname(&u);
        fputs("{\"now\": ", f);
        json_write_string(f, format_time(time(NULL), now, sizeof(now)));
        fputs(", \"os\": {\"id\": ", f);
        json_write_string(f, id[0] ? id : NULL);
        fputs(", \"version_id\": ", f);
        json_write_string(f, version[0] ? version : NULL);
        fputs("}, \"system_info\": {\"arch\": ", f);
        json_write_string(f, u.machine);
        fputs(", \"kernel\": ", f);
        json_write_string(f, u.release);
        fputs("}, \"aziot_version\": ", f);
        json_write_string(f, PACKAGE_VERSION);
        fputs("}", f);
}

static void print_text(const Check *ch, const CheckResult *r, bool verbose)
{
        static const char *const marks[] = {
                [CHECK_OK] = "\u2713", [CHECK_WARNING] = "\u203c", [CHECK_IGNORED] = "-",
                [CHECK_SKIPPED] = "-", [CHECK_FATAL] = "\u00d7",   [CHECK_ERROR] = "\u00d7",
        };
        static const char *const labels[] = {
                [CHECK_OK] = "OK",           [CHECK_WARNING] = "Warning",
                [CHECK_IGNORED] = "ignored", [CHECK_SKIPPED] = "skipped",
                [CHECK_FATAL] = "Error",     [CHECK_ERROR] = "Error",
        };
        bool details = r->kind == CHECK_WARNING || r->kind == CHECK_ERROR ||
                       r->kind == CHECK_FATAL || verbose;

        if ((r->kind == CHECK_IGNORED || r->kind == CHECK_SKIPPED) && !verbose)
                return;
        printf("%s %s - %s\n", marks[r->kind], ch->description, labels[r->kind]);
        for (size_t i = 0; details && i < r->n_details; i++)
                printf("    %s\n", r->details[i]);
}

static void context_done(CheckContext *c)
{
        toml_value_free(c->keyd_root);
        if (c->keys_ok)
                keys_config_done(&c->keys);
        if (c->certs_ok)
                certs_config_done(&c->certs);
        if (c->tpm_ok)
                tpm_config_done(&c->tpm);
        if (c->identity_ok)
                identity_config_done(&c->identity);
        certs_store_free(c->store);
        sd_bus_flush_close_unref(c->bus);
        free(c->prev_hub);
}

static const char *check_usage =
        "Usage: aziotctl check [--dont-run \"<id> …\"] [-o|--output text|json|json-stream]\n"
        "                      [--warnings-as-errors] [--ntp-server HOST:PORT] [-v|--verbose]\n"
        "                      [--iothub-hostname HOST] [--proxy-uri URI]\n"
        "                      [--expected-aziot-version VERSION]\n"
        "\n"
        "Checks the configuration, the services and the connectivity of the device.\n"
        "'aziotctl check-list' lists the checks. Exit status: 0 when no check failed, 1 when one\n"
        "did (or warned, with --warnings-as-errors), 2 for bad usage.\n";

int aziotctl_check(int argc, char **argv)
{
        enum {
                ARG_DONT_RUN = 0x100,
                ARG_WARNINGS_AS_ERRORS,
                ARG_NTP_SERVER,
                ARG_IOTHUB_HOSTNAME,
                ARG_PROXY_URI,
                ARG_EXPECTED_VERSION,
        };
        static const struct option options[] = {
                {"help", no_argument, NULL, 'h'},
                {"dont-run", required_argument, NULL, ARG_DONT_RUN},
                {"output", required_argument, NULL, 'o'},
                {"warnings-as-errors", no_argument, NULL, ARG_WARNINGS_AS_ERRORS},
                {"ntp-server", required_argument, NULL, ARG_NTP_SERVER},
                {"verbose", no_argument, NULL, 'v'},
                {"iothub-hostname", required_argument, NULL, ARG_IOTHUB_HOSTNAME},
                {"proxy-uri", required_argument, NULL, ARG_PROXY_URI},
                {"expected-aziot-version", required_argument, NULL, ARG_EXPECTED_VERSION},
                {},
        };
        CheckContext c = {.ntp_server = "pool.ntp.org:123", .now = time(NULL)};
        CtlOutput output = CTL_OUTPUT_TEXT;
        bool warnings_as_errors = false;
        const char *dont_run = NULL;
        unsigned counts[_CHECK_RESULT_MAX] = {};
        int section = -1, opt;

        optind = 0;
        while ((opt = getopt_long(argc, argv, "ho:v", options, NULL)) >= 0)
                switch (opt) {
                case 'h':
                        printf("%s", check_usage);
                        return AZIOTCTL_EXIT_OK;
                case ARG_DONT_RUN:
                        dont_run = optarg;
                        break;
                case 'o':
                        if (ctl_parse_output(optarg, /* stream_ok= */ true, &output) < 0)
                                return AZIOTCTL_EXIT_USAGE;
                        break;
                case ARG_WARNINGS_AS_ERRORS:
                        warnings_as_errors = true;
                        break;
                case ARG_NTP_SERVER:
                        c.ntp_server = optarg;
                        break;
                case 'v':
                        c.verbose = true;
                        break;
                case ARG_IOTHUB_HOSTNAME:
                        c.iothub_hostname = optarg;
                        break;
                case ARG_PROXY_URI:
                        c.proxy_uri = optarg;
                        break;
                case ARG_EXPECTED_VERSION:
                        c.expected_version = optarg;
                        break;
                default:
                        fprintf(stderr, "%s", check_usage);
                        return AZIOTCTL_EXIT_USAGE;
                }
        if (optind < argc) {
                fprintf(stderr, "%s", check_usage);
                return AZIOTCTL_EXIT_USAGE;
        }
        /* The loaders log what they find wrong; the checks report it. */
        if (!c.verbose)
                log_set_max_level(LOG_CRIT);

        if (output == CTL_OUTPUT_JSON) {
                fputs("{\"additional_info\": ", stdout);
                print_additional_info(stdout);
                fputs(", \"checks\": {", stdout);
        } else if (output == CTL_OUTPUT_JSON_STREAM) {
                fputs("{\"kind\": \"additional_info\", \"additional_info\": ", stdout);
                print_additional_info(stdout);
                fputs("}\n", stdout);
        }
        for (size_t i = 0; i < ELEMENTSOF(checks); i++) {
                const Check *ch = &checks[i];
                CheckResult r = {};
                const char *missing;

                if ((int)ch->section != section) {
                        section = (int)ch->section;
                        if (output == CTL_OUTPUT_TEXT) {
                                char title[128];
                                size_t n = (size_t)snprintf(title, sizeof(title),
                                                            "%s (aziot-identity-service)",
                                                            section_names[section]);

                                printf("%s%s\n", section > 0 ? "\n" : "", title);
                                for (size_t k = 0; k < n; k++)
                                        putchar('-');
                                putchar('\n');
                        } else if (output == CTL_OUTPUT_JSON_STREAM)
                                printf("{\"kind\": \"section\", \"name\": \"%s\"}\n",
                                       section_names[section]);
                }
                missing = missing_config(&c, ch->needs);
                if (id_listed(dont_run, ch->id)) {
                        r.kind = CHECK_IGNORED;
                        check_detail(&r, "not run (--dont-run)");
                } else if (missing) {
                        r.kind = CHECK_SKIPPED;
                        check_detail(&r, "skipped: the %s configuration could not be read",
                                     missing);
                } else if (ch->config)
                        check_service_config(&c, ch->config, &r);
                else
                        ch->run(&c, &r);
                counts[r.kind]++;

                if (output == CTL_OUTPUT_TEXT)
                        print_text(ch, &r, c.verbose);
                else if (output == CTL_OUTPUT_JSON) {
                        fputs(i > 0 ? ", " : "", stdout);
                        json_write_string(stdout, ch->id);
                        fputs(": ", stdout);
                        print_check_json(stdout, ch, &r);
                } else {
                        fputs("{\"kind\": \"check\", \"id\": ", stdout);
                        json_write_string(stdout, ch->id);
                        fputs(", \"description\": ", stdout);
                        json_write_string(stdout, ch->description);
                        fputs(", \"result\": ", stdout);
                        print_result_json(stdout, &r);
                        fputs("}\n", stdout);
                }
                fflush(stdout);
                check_result_done(&r);
        }
        if (output == CTL_OUTPUT_JSON)
                fputs("}}\n", stdout);
        else if (output == CTL_OUTPUT_TEXT) {
                putchar('\n');
                printf("%u check(s) succeeded.\n", counts[CHECK_OK]);
                if (counts[CHECK_WARNING])
                        printf("%u check(s) raised warnings.%s\n", counts[CHECK_WARNING],
                               c.verbose ? "" : " Re-run with --verbose for more details.");
                if (counts[CHECK_ERROR] + counts[CHECK_FATAL])
                        printf("%u check(s) raised errors.%s\n",
                               counts[CHECK_ERROR] + counts[CHECK_FATAL],
                               c.verbose ? "" : " Re-run with --verbose for more details.");
                if (counts[CHECK_SKIPPED])
                        printf("%u check(s) were skipped due to errors from other checks.%s\n",
                               counts[CHECK_SKIPPED],
                               c.verbose ? "" : " Re-run with --verbose for more details.");
        }
        context_done(&c);
        if (counts[CHECK_ERROR] + counts[CHECK_FATAL] > 0 ||
            (warnings_as_errors && counts[CHECK_WARNING] > 0))
                return AZIOTCTL_EXIT_FAILURE;
        return AZIOTCTL_EXIT_OK;
}

int aziotctl_check_list(int argc, char **argv)
{
        static const struct option options[] = {
                {"help", no_argument, NULL, 'h'},
                {"output", required_argument, NULL, 'o'},
                {},
        };
        CtlOutput output = CTL_OUTPUT_TEXT;
        int opt;

        optind = 0;
        while ((opt = getopt_long(argc, argv, "ho:", options, NULL)) >= 0)
                switch (opt) {
                case 'h':
                        printf("Usage: aziotctl check-list [-o|--output text|json]\n");
                        return AZIOTCTL_EXIT_OK;
                case 'o':
                        if (ctl_parse_output(optarg, /* stream_ok= */ false, &output) < 0)
                                return AZIOTCTL_EXIT_USAGE;
                        break;
                default:
                        fprintf(stderr, "Usage: aziotctl check-list [-o|--output text|json]\n");
                        return AZIOTCTL_EXIT_USAGE;
                }
        if (optind < argc) {
                fprintf(stderr, "Usage: aziotctl check-list [-o|--output text|json]\n");
                return AZIOTCTL_EXIT_USAGE;
        }
        if (output == CTL_OUTPUT_JSON) {
                /* {"checks": {"<section>": [{"id": …, "description": …}, …], …}} */
                fputs("{\"checks\": {", stdout);
                for (size_t s = 0; s < ELEMENTSOF(section_names); s++) {
                        bool first = true;

                        printf("%s\"%s\": [", s > 0 ? ", " : "", section_names[s]);
                        for (size_t i = 0; i < ELEMENTSOF(checks); i++) {
                                if (checks[i].section != s)
                                        continue;
                                fputs(first ? "{\"id\": " : ", {\"id\": ", stdout);
                                json_write_string(stdout, checks[i].id);
                                fputs(", \"description\": ", stdout);
                                json_write_string(stdout, checks[i].description);
                                fputs("}", stdout);
                                first = false;
                        }
                        fputs("]", stdout);
                }
                fputs("}}\n", stdout);
                return AZIOTCTL_EXIT_OK;
        }
        for (size_t s = 0; s < ELEMENTSOF(section_names); s++) {
                printf("%s%s\n", s > 0 ? "\n" : "", section_names[s]);
                for (size_t i = 0; i < ELEMENTSOF(checks); i++)
                        if (checks[i].section == s)
                                printf("  %-46s %s\n", checks[i].id, checks[i].description);
        }
        return AZIOTCTL_EXIT_OK;
}
