/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "cert-renewal.h"
#include "file-uri.h"
#include "macro.h"
#include "super-config.h"

/* Ids the translation generates (spec §7.3). */
#define DEVICE_ID "device-id"
#define LOCAL_CA "local-ca"
#define MASTER_ID "aziot_identityd_master_id"

static void *mfree(void *p)
{
        free(p);
        return NULL;
}

static bool str_in(const char *s, const char *const *list)
{
        for (; *list; list++)
                if (streq(s, *list))
                        return true;
        return false;
}
#define STR_IN_SET(s, ...) str_in((s), (const char *const[]){ __VA_ARGS__, NULL })

typedef struct Pair {
        char *key;
        char *value; /* a TOML value, already serialized */
} Pair;

typedef struct PairList {
        Pair *items;
        size_t n;
} PairList;

typedef struct StrList {
        char **items;
        size_t n;
} StrList;

/* A growing text: an open_memstream. */
typedef struct Text {
        FILE *f;
        char *buf;
        size_t len;
} Text;

typedef struct Ctx {
        char *error;
        size_t error_size;
        PairList keyd_preloaded, certd_preloaded;
        StrList aziotid_keys, aziotcs_keys, aziotid_certs;
        Text certd_global;  /* [cert_issuance.est], [cert_issuance.local_ca] */
        Text certd_percert; /* [cert_issuance.<id>] */
        Text identityd_prov;
        uint8_t *secret;
        size_t secret_len;
} Ctx;

static int fail(Ctx *c, const char *fmt, ...) _printf_(2, 3);
static int fail(Ctx *c, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->error, c->error_size, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static int text_open(Text *t)
{
        t->f = open_memstream(&t->buf, &t->len);
        return t->f ? 0 : -ENOMEM;
}

/* Closes the stream and hands the text on. */
static char *text_take(Text *t)
{
        if (t->f) {
                if (fclose(t->f) != 0) {
                        t->f = NULL;
                        return NULL;
                }
                t->f = NULL;
        }
        return TAKE_PTR(t->buf);
}

static void text_done(Text *t)
{
        if (t->f)
                fclose(t->f);
        t->f = NULL;
        t->buf = mfree(t->buf);
}

static void pairs_done(PairList *l)
{
        for (size_t i = 0; i < l->n; i++) {
                free(l->items[i].key);
                free(l->items[i].value);
        }
        l->items = mfree(l->items);
        l->n = 0;
}

static void strs_done(StrList *l)
{
        for (size_t i = 0; i < l->n; i++)
                free(l->items[i]);
        l->items = mfree(l->items);
        l->n = 0;
}

static bool strs_contains(const StrList *l, const char *s)
{
        for (size_t i = 0; i < l->n; i++)
                if (streq(l->items[i], s))
                        return true;
        return false;
}

static int strs_add(StrList *l, const char *s)
{
        if (strs_contains(l, s))
                return 0;
        char **n = reallocarray(l->items, l->n + 1, sizeof(char *));
        if (!n)
                return -ENOMEM;
        l->items = n;
        l->items[l->n] = strdup(s);
        if (!l->items[l->n])
                return -ENOMEM;
        l->n++;
        return 0;
}

/* Serializes s as a TOML basic string into a new buffer. */
static char *toml_quote(const char *s)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return NULL;
        toml_write_string(f, s);
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* Adds id = value (serialized) to a preloaded list; an id given twice is an error. */
static int preload(Ctx *c, PairList *l, const char *what, const char *id, char *value /* owned */)
{
        _cleanup_free_ char *v = value;
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < l->n; i++)
                if (streq(l->items[i].key, id))
                        return fail(c, "%s: the id '%s' is defined twice (it is generated from "
                                    "another setting as well)", what, id);
        Pair *n = reallocarray(l->items, l->n + 1, sizeof(Pair));
        if (!n)
                return -ENOMEM;
        l->items = n;
        l->items[l->n].key = strdup(id);
        if (!l->items[l->n].key)
                return -ENOMEM;
        l->items[l->n].value = TAKE_PTR(v);
        l->n++;
        return 0;
}

/* A certificate and its private key given by URI: preloaded in certd and in keyd under id. */
static int preload_pair(Ctx *c, const char *id, const char *cert_uri, const char *pk_uri)
{
        int r;

        r = preload(c, &c->certd_preloaded, "preloaded_certs", id, toml_quote(cert_uri));
        if (r < 0)
                return r;
        return preload(c, &c->keyd_preloaded, "preloaded_keys", id, toml_quote(pk_uri));
}

static void keyname(char *buf, size_t size, const char *path, const char *key)
{
        snprintf(buf, size, "%s%s%s", strempty(path), isempty(path) ? "" : ".", key);
}

/* Fetches key from table t (which may be NULL); *ret is NULL when absent and optional. */
static int get_typed(Ctx *c, const TomlValue *t, const char *path, const char *key, TomlType type,
                     bool required, const TomlValue **ret)
{
        char name[256];
        const TomlValue *v = t ? toml_table_get(t, key) : NULL;

        keyname(name, sizeof(name), path, key);
        *ret = NULL;
        if (!v) {
                if (required)
                        return fail(c, "%s: missing (required)", name);
                return 0;
        }
        if (v->type != type)
                return fail(c, "%s: expected %s, got %s", name, toml_type_with_article(type),
                            toml_type_with_article(v->type));
        *ret = v;
        return 0;
}

static int get_string(Ctx *c, const TomlValue *t, const char *path, const char *key, bool required,
                      const char **ret)
{
        const TomlValue *v;
        char name[256];
        int r;

        r = get_typed(c, t, path, key, TOML_STRING, required, &v);
        if (r < 0)
                return r;
        *ret = v ? v->string.data : NULL;
        if (v && (strlen(v->string.data) != v->string.len || v->string.len == 0)) {
                keyname(name, sizeof(name), path, key);
                return fail(c, "%s: must be a non-empty string without NUL characters", name);
        }
        return 0;
}

static int get_table(Ctx *c, const TomlValue *t, const char *path, const char *key, bool required,
                     const TomlValue **ret)
{
        return get_typed(c, t, path, key, TOML_TABLE, required, ret);
}

static int get_int(Ctx *c, const TomlValue *t, const char *path, const char *key, int64_t min,
                   int64_t max, bool *ret_present, int64_t *ret)
{
        const TomlValue *v;
        char name[256];
        int r;

        r = get_typed(c, t, path, key, TOML_INTEGER, /* required= */ false, &v);
        if (r < 0)
                return r;
        *ret_present = v != NULL;
        if (!v)
                return 0;
        if (v->integer < min || v->integer > max) {
                keyname(name, sizeof(name), path, key);
                return fail(c, "%s: %" PRId64 " is out of range (%" PRId64 "..%" PRId64 ")", name,
                            v->integer, min, max);
        }
        *ret = v->integer;
        return 0;
}

/* A key URI: file:///… or pkcs11:… */
static int check_key_uri(Ctx *c, const char *name, const char *uri)
{
        if (startswith(uri, "pkcs11:"))
                return 0;
        _cleanup_free_ char *path = NULL;
        if (startswith(uri, "file:") && file_uri_to_path(uri, &path) >= 0)
                return 0;
        return fail(c, "%s: '%s' is not a valid file:// or pkcs11: URI", name, uri);
}

static int check_cert_uri(Ctx *c, const char *name, const char *uri)
{
        _cleanup_free_ char *path = NULL;
        if (startswith(uri, "file:") && file_uri_to_path(uri, &path) >= 0)
                return 0;
        return fail(c, "%s: '%s' is not a valid file:// URI", name, uri);
}

static int get_uri(Ctx *c, const TomlValue *t, const char *path, const char *key, bool required,
                   bool cert, const char **ret)
{
        char name[256];
        int r;

        r = get_string(c, t, path, key, required, ret);
        if (r < 0 || !*ret)
                return r;
        keyname(name, sizeof(name), path, key);
        return cert ? check_cert_uri(c, name, *ret) : check_key_uri(c, name, *ret);
}

/* base64 with or without padding, as upstream accepts; a key is never empty. */
static int decode_base64_key(const char *b64, uint8_t **ret, size_t *ret_len)
{
        size_t len = strlen(b64);
        _cleanup_free_ char *padded = malloc(len + 4); /* up to three '=' and the NUL */
        uint8_t *key = NULL;
        size_t key_len = 0;

        if (!padded)
                return -ENOMEM;
        memcpy(padded, b64, len);
        while (len % 4 != 0)
                padded[len++] = '=';
        padded[len] = 0;
        if (base64_decode_alloc(padded, len, &key, &key_len) < 0 || key_len == 0) {
                erase_and_free(key, key_len);
                return -EINVAL;
        }
        *ret = key;
        *ret_len = key_len;
        return 0;
}

static int decode_key(Ctx *c, const char *name, const char *b64)
{
        uint8_t *key;
        size_t key_len;
        int r;

        r = decode_base64_key(b64, &key, &key_len);
        if (r == -EINVAL)
                return fail(c, "%s: not a valid base64 key", name);
        if (r < 0)
                return r;
        erase_and_free(c->secret, c->secret_len);
        c->secret = key;
        c->secret_len = key_len;
        return 0;
}

/* device_id_pk / symmetric_key = { value = "<base64>" } | { uri = "…" } → keyd key device-id. */
static int symmetric_key(Ctx *c, const TomlValue *t, const char *path, const char *key)
{
        const TomlValue *v;
        const char *value, *uri;
        char name[256];
        int r;

        r = get_table(c, t, path, key, /* required= */ true, &v);
        if (r < 0)
                return r;
        keyname(name, sizeof(name), path, key);
        r = get_string(c, v, name, "value", false, &value);
        if (r < 0)
                return r;
        r = get_uri(c, v, name, "uri", false, /* cert= */ false, &uri);
        if (r < 0)
                return r;
        if (!!value == !!uri)
                return fail(c, "%s: give exactly one of 'value' (base64) or 'uri'", name);
        if (value) {
                char vname[300];
                snprintf(vname, sizeof(vname), "%s.value", name);
                r = decode_key(c, vname, value);
                if (r < 0)
                        return r;
                uri = "file://" SUPER_CONFIG_DEVICE_ID_SECRET;
        }
        r = preload(c, &c->keyd_preloaded, "preloaded_keys", DEVICE_ID, toml_quote(uri));
        if (r < 0)
                return r;
        return strs_add(&c->aziotid_keys, DEVICE_ID);
}

/* A key, bare when TOML allows it, else quoted. */
static void write_key(FILE *f, const char *key)
{
        bool bare = *key;
        for (const char *p = key; *p; p++)
                bare = bare && (strchr("-_", *p) || (*p >= 'a' && *p <= 'z') ||
                                (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'));
        if (bare)
                fputs(key, f);
        else
                toml_write_string(f, key);
}

static void write_kv(FILE *f, const char *key, const char *value)
{
        write_key(f, key);
        fputs(" = ", f);
        toml_write_string(f, value);
        fputc('\n', f);
}

static int cmp_entries(const void *a, const void *b)
{
        const TomlEntry *const *x = a, *const *y = b;
        return strcmp((*x)->key, (*y)->key);
}

/* Writes a table of strings (a subject DN) as [header], keys sorted as upstream's BTreeMap does. */
static int write_string_table(Ctx *c, FILE *f, const char *header, const TomlValue *t,
                              const char *name)
{
        size_t n = toml_table_size(t);
        _cleanup_free_ const TomlEntry **sorted = calloc(n ?: 1, sizeof(TomlEntry *));
        size_t i = 0;

        if (!sorted)
                return -ENOMEM;
        if (n == 0)
                return fail(c, "%s: must not be empty", name);
        toml_table_foreach(e, t) {
                if (e->value->type != TOML_STRING || e->value->string.len == 0)
                        return fail(c, "%s.%s: expected a non-empty string", name, e->key);
                sorted[i++] = e;
        }
        qsort(sorted, n, sizeof(TomlEntry *), cmp_entries);
        fprintf(f, "\n[%s]\n", header);
        for (i = 0; i < n; i++) {
                write_kv(f, sorted[i]->key, sorted[i]->value->string.data);
        }
        return 0;
}


/* EST authentication settings shared by [cert_issuance.est.auth] and per-cert options:
 * username/password, identity_cert+identity_pk, bootstrap_identity_cert+bootstrap_identity_pk.
 * Preloads what is given under the ids est-id[-<suffix>] / est-bootstrap-id[-<suffix>] and writes
 * the certd keys to f. */
static int est_auth(Ctx *c, FILE *f, const TomlValue *t, const char *path, const char *suffix,
                    bool side_effects)
{
        const char *user, *pass, *id_cert, *id_pk, *bs_cert, *bs_pk;
        char name[256], est_id[128], bs_id[128], est_temp[160];
        int r;

        if ((r = get_string(c, t, path, "username", false, &user)) < 0 ||
            (r = get_string(c, t, path, "password", false, &pass)) < 0 ||
            (r = get_uri(c, t, path, "identity_cert", false, true, &id_cert)) < 0 ||
            (r = get_uri(c, t, path, "identity_pk", false, false, &id_pk)) < 0 ||
            (r = get_uri(c, t, path, "bootstrap_identity_cert", false, true, &bs_cert)) < 0 ||
            (r = get_uri(c, t, path, "bootstrap_identity_pk", false, false, &bs_pk)) < 0)
                return r;
        if (!!id_cert != !!id_pk) {
                keyname(name, sizeof(name), path, id_cert ? "identity_pk" : "identity_cert");
                return fail(c, "%s: missing (identity_cert and identity_pk go together)", name);
        }
        if (!!bs_cert != !!bs_pk) {
                keyname(name, sizeof(name), path,
                        bs_cert ? "bootstrap_identity_pk" : "bootstrap_identity_cert");
                return fail(c, "%s: missing (bootstrap_identity_cert and bootstrap_identity_pk go "
                            "together)", name);
        }
        snprintf(est_id, sizeof(est_id), "est-id%s%s", suffix ? "-" : "", strempty(suffix));
        snprintf(bs_id, sizeof(bs_id), "est-bootstrap-id%s%s", suffix ? "-" : "",
                 strempty(suffix));
        snprintf(est_temp, sizeof(est_temp), "%s-temp", est_id);

        if (user)
                write_kv(f, "username", user);
        if (pass)
                write_kv(f, "password", pass);
        if (id_cert || bs_cert) {
                write_kv(f, "identity_cert", est_id);
                write_kv(f, "identity_pk", est_id);
        }
        if (bs_cert) {
                write_kv(f, "bootstrap_identity_cert", bs_id);
                write_kv(f, "bootstrap_identity_pk", bs_id);
        }
        if (!side_effects)
                return 0;
        if (bs_cert) {
                if ((r = preload_pair(c, bs_id, bs_cert, bs_pk)) < 0 ||
                    (r = strs_add(&c->aziotcs_keys, bs_id)) < 0)
                        return r;
        }
        if (id_cert) {
                r = preload_pair(c, est_id, id_cert, id_pk);
                if (r < 0)
                        return r;
        }
        /* certd renews the EST identity it was issued through the bootstrap identity, under a
         * temporary key first. */
        if (bs_cert && (r = strs_add(&c->aziotcs_keys, est_temp)) < 0)
                return r;
        if ((id_cert || bs_cert) && (r = strs_add(&c->aziotcs_keys, est_id)) < 0)
                return r;
        return 0;
}

/* Issuance options of a certificate the services create (identity_cert / local_ca.cert tables) →
 * [cert_issuance.<cert_id>]. EST auth ids are named after base_id, so that device-id and
 * device-id-temp share them. */
static int cert_issuance_options(Ctx *c, const TomlValue *t, const char *path, const char *cert_id,
                                 const char *base_id, bool side_effects)
{
        const TomlValue *subject;
        const char *method, *cn, *url;
        bool has_expiry;
        int64_t expiry = 0;
        char name[256], header[256];
        FILE *f = c->certd_percert.f;
        int r;

        if ((r = get_string(c, t, path, "method", true, &method)) < 0 ||
            (r = get_string(c, t, path, "common_name", false, &cn)) < 0 ||
            (r = get_table(c, t, path, "subject", false, &subject)) < 0 ||
            (r = get_int(c, t, path, "expiry_days", 1, INT32_MAX, &has_expiry, &expiry)) < 0 ||
            (r = get_string(c, t, path, "url", false, &url)) < 0)
                return r;
        if (!STR_IN_SET(method, "est", "local_ca", "self_signed")) {
                keyname(name, sizeof(name), path, "method");
                return fail(c, "%s: '%s' is not one of \"est\", \"local_ca\", \"self_signed\"",
                            name, method);
        }
        if (cn && subject) {
                keyname(name, sizeof(name), path, "subject");
                return fail(c, "%s: give either common_name or subject, not both", name);
        }
        if (!streq(method, "est"))
                for (const char *const *k = (const char *const[]){ "url", "username", "password",
                                                                  "identity_cert", "identity_pk",
                                                                  "bootstrap_identity_cert",
                                                                  "bootstrap_identity_pk", NULL };
                     *k; k++) {
                        if (toml_table_get(t, *k)) {
                                keyname(name, sizeof(name), path, *k);
                                return fail(c, "%s: only valid with method = \"est\"", name);
                        }
                }
        /* auto_renew is read by the caller; anything else must be a known option. */
        toml_table_foreach(e, t)
                if (!STR_IN_SET(e->key, "method", "common_name", "subject", "expiry_days", "url",
                                "username", "password", "identity_cert", "identity_pk",
                                "bootstrap_identity_cert", "bootstrap_identity_pk", "auto_renew")) {
                        keyname(name, sizeof(name), path, e->key);
                        return fail(c, "%s: unknown key", name);
                }

        fprintf(f, "\n[cert_issuance.%s]\n", cert_id);
        write_kv(f, "method", method);
        if (cn)
                write_kv(f, "common_name", cn);
        if (has_expiry)
                fprintf(f, "expiry_days = %" PRId64 "\n", expiry);
        if (url)
                write_kv(f, "url", url);
        if (streq(method, "est")) {
                r = est_auth(c, f, t, path, base_id, side_effects);
                if (r < 0)
                        return r;
        }
        if (subject) {
                snprintf(header, sizeof(header), "cert_issuance.%s.subject", cert_id);
                keyname(name, sizeof(name), path, "subject");
                r = write_string_table(c, f, header, subject, name);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int auto_renew_table(Ctx *c, const TomlValue *t, const char *path, bool *ret_rotate)
{
        const TomlValue *rotate;
        const char *threshold, *retry;
        int r;

        if ((r = get_typed(c, t, path, "rotate_key", TOML_BOOL, true, &rotate)) < 0 ||
            (r = get_string(c, t, path, "threshold", true, &threshold)) < 0 ||
            (r = get_string(c, t, path, "retry", true, &retry)) < 0)
                return r;
        RenewalPolicy policy;
        char name[256];
        if (renewal_policy_parse(threshold, &policy) < 0) {
                keyname(name, sizeof(name), path, "threshold");
                return fail(c, "%s: '%s' is not a share of the lifetime (\"80%%\") or a time "
                            "(\"90min\", \"2day\")", name, threshold);
        }
        if (renewal_policy_parse(retry, &policy) < 0) {
                keyname(name, sizeof(name), path, "retry");
                return fail(c, "%s: '%s' is not a share of the lifetime (\"4%%\") or a time "
                            "(\"5min\", \"1day\")", name, retry);
        }
        *ret_rotate = rotate->boolean;
        return 0;
}

static void write_auto_renew(FILE *f, const char *header, const TomlValue *t)
{
        fprintf(f, "\n[%s]\n", header);
        fprintf(f, "rotate_key = %s\n",
                toml_table_get(t, "rotate_key")->boolean ? "true" : "false");
        write_kv(f, "threshold", toml_table_get(t, "threshold")->string.data);
        write_kv(f, "retry", toml_table_get(t, "retry")->string.data);
}

/* The X.509 device identity (manual x509 authentication or DPS x509 attestation): either preloaded
 * files (identity_cert + identity_pk URIs) or a [identity_cert] table of issuance options. Writes
 * identity_cert/identity_pk to the identityd stream; *ret_issued is the issuance table, if any. */
static int x509_identity(Ctx *c, const TomlValue *t, const char *path, bool dps,
                         const TomlValue **ret_issued)
{
        FILE *f = c->identityd_prov.f;
        const TomlValue *cert = toml_table_get(t, "identity_cert");
        const char *cert_uri, *pk_uri;
        const TomlValue *auto_renew = NULL;
        char name[256];
        bool rotate = false;
        int r;

        keyname(name, sizeof(name), path, "identity_cert");
        *ret_issued = NULL;
        if (!cert)
                return fail(c, "%s: missing (required)", name);
        if (cert->type == TOML_TABLE) {
                if (toml_table_get(t, "identity_pk")) {
                        keyname(name, sizeof(name), path, "identity_pk");
                        return fail(c, "%s: not allowed when identity_cert is issued (the key is "
                                    "created by the Keys service)", name);
                }
                r = get_table(c, cert, name, "auto_renew", false, &auto_renew);
                if (r < 0)
                        return r;
                if (auto_renew) {
                        char arname[300];
                        snprintf(arname, sizeof(arname), "%s.auto_renew", name);
                        r = auto_renew_table(c, auto_renew, arname, &rotate);
                        if (r < 0)
                                return r;
                        if (!dps) /* upstream renews only DPS identities */
                                auto_renew = NULL;
                }
                r = cert_issuance_options(c, cert, name, DEVICE_ID, DEVICE_ID, true);
                if (r < 0)
                        return r;
                if (auto_renew) {
                        r = cert_issuance_options(c, cert, name, DEVICE_ID "-temp", DEVICE_ID,
                                                  false);
                        if (r < 0)
                                return r;
                        r = strs_add(&c->aziotid_certs, DEVICE_ID "-temp");
                        if (r < 0)
                                return r;
                }
                if ((r = strs_add(&c->aziotid_certs, DEVICE_ID)) < 0 ||
                    (r = strs_add(&c->aziotid_keys, DEVICE_ID)) < 0)
                        return r;
                if (rotate && auto_renew && (r = strs_add(&c->aziotid_keys, DEVICE_ID "-temp")) < 0)
                        return r;
                *ret_issued = cert;
        } else {
                if ((r = get_uri(c, t, path, "identity_cert", true, true, &cert_uri)) < 0 ||
                    (r = get_uri(c, t, path, "identity_pk", true, false, &pk_uri)) < 0)
                        return r;
                if ((r = preload_pair(c, DEVICE_ID, cert_uri, pk_uri)) < 0 ||
                    (r = strs_add(&c->aziotid_keys, DEVICE_ID)) < 0)
                        return r;
        }
        write_kv(f, "identity_cert", DEVICE_ID);
        write_kv(f, "identity_pk", DEVICE_ID);
        return 0;
}

void connection_string_done(ConnectionString *cs)
{
        free(cs->hub);
        free(cs->device);
        erase_and_free(cs->key, cs->key_len);
        *cs = (ConnectionString){};
}

int connection_string_parse(const char *text, ConnectionString *ret, char *error,
                            size_t error_size)
{
        _cleanup_free_ char *copy = strdup(text);
        _cleanup_(connection_string_done) ConnectionString cs = {};
        const char *hub = NULL, *device = NULL, *key = NULL;
        char *saveptr = NULL;
        int r;

        if (!copy)
                return -ENOMEM;
        for (char *part = strtok_r(copy, ";", &saveptr); part;
             part = strtok_r(NULL, ";", &saveptr)) {
                char *eq = strchr(part, '=');
                if (!eq) {
                        snprintf(error, error_size, "'%s' is not KEY=VALUE", part);
                        return -EINVAL;
                }
                *eq = 0;
                if (streq(part, "HostName"))
                        hub = eq + 1;
                else if (streq(part, "DeviceId"))
                        device = eq + 1;
                else if (streq(part, "SharedAccessKey"))
                        key = eq + 1;
        }
        if (isempty(hub) || isempty(device) || isempty(key)) {
                snprintf(error, error_size, "%s is missing",
                         isempty(hub)      ? "HostName" :
                         isempty(device)   ? "DeviceId" :
                                             "SharedAccessKey");
                return -EINVAL;
        }
        r = decode_base64_key(key, &cs.key, &cs.key_len);
        if (r == -EINVAL)
                snprintf(error, error_size, "SharedAccessKey: not a valid base64 key");
        if (r < 0)
                return r;
        cs.hub = strdup(hub);
        cs.device = strdup(device);
        if (!cs.hub || !cs.device)
                return -ENOMEM;
        *ret = cs;
        cs = (ConnectionString){};
        return 0;
}

static int manual_provisioning(Ctx *c, const TomlValue *p)
{
        FILE *f = c->identityd_prov.f;
        const char *cs, *hub, *device, *method;
        const TomlValue *auth, *issued = NULL;
        int r;

        if ((r = get_string(c, p, "provisioning", "connection_string", false, &cs)) < 0 ||
            (r = get_string(c, p, "provisioning", "iothub_hostname", false, &hub)) < 0 ||
            (r = get_string(c, p, "provisioning", "device_id", false, &device)) < 0 ||
            (r = get_table(c, p, "provisioning", "authentication", false, &auth)) < 0)
                return r;
        if (cs) {
                if (hub || device || auth)
                        return fail(c, "provisioning.connection_string: not allowed together with "
                                    "iothub_hostname, device_id or [provisioning.authentication]");
                _cleanup_(connection_string_done) ConnectionString parsed = {};
                char message[256];

                r = connection_string_parse(cs, &parsed, message, sizeof(message));
                if (r == -EINVAL)
                        return fail(c, "provisioning.connection_string: %s", message);
                if (r < 0)
                        return r;
                /* the device key, which apply writes to SUPER_CONFIG_DEVICE_ID_SECRET */
                erase_and_free(c->secret, c->secret_len);
                c->secret = TAKE_PTR(parsed.key);
                c->secret_len = parsed.key_len;
                r = preload(c, &c->keyd_preloaded, "preloaded_keys", DEVICE_ID,
                            toml_quote("file://" SUPER_CONFIG_DEVICE_ID_SECRET));
                if (r < 0 || (r = strs_add(&c->aziotid_keys, DEVICE_ID)) < 0)
                        return r;
                write_kv(f, "iothub_hostname", parsed.hub);
                write_kv(f, "device_id", parsed.device);
                fprintf(f, "\n[provisioning.authentication]\n");
                write_kv(f, "method", "sas");
                write_kv(f, "device_id_pk", DEVICE_ID);
                return 0;
        }
        if (!hub)
                return fail(c, "provisioning.iothub_hostname: missing (required with source = "
                            "\"manual\" unless connection_string is given)");
        if (!device)
                return fail(c, "provisioning.device_id: missing (required with source = "
                            "\"manual\" unless connection_string is given)");
        if (!auth)
                return fail(c, "provisioning.authentication: missing (required with source = "
                            "\"manual\" unless connection_string is given)");
        r = get_string(c, auth, "provisioning.authentication", "method", true, &method);
        if (r < 0)
                return r;
        write_kv(f, "iothub_hostname", hub);
        write_kv(f, "device_id", device);
        fprintf(f, "\n[provisioning.authentication]\n");
        write_kv(f, "method", method);
        if (streq(method, "sas")) {
                r = symmetric_key(c, auth, "provisioning.authentication", "device_id_pk");
                if (r < 0)
                        return r;
                write_kv(f, "device_id_pk", DEVICE_ID);
                return 0;
        }
        if (!streq(method, "x509"))
                return fail(c, "provisioning.authentication.method: '%s' is not \"sas\" or "
                            "\"x509\"", method);
        r = x509_identity(c, auth, "provisioning.authentication", /* dps= */ false, &issued);
        if (r < 0)
                return r;
        if (issued) {
                /* The CSR's subject; identityd forces CN to the device id. */
                const TomlValue *subject = toml_table_get(issued, "subject");
                const TomlValue *cn = toml_table_get(issued, "common_name");
                if (subject)
                        return write_string_table(c, f, "provisioning.authentication.csr_subject",
                                                  subject,
                                                  "provisioning.authentication.identity_cert."
                                                  "subject");
                if (cn)
                        write_kv(f, "csr_subject", cn->string.data);
        }
        return 0;
}

static int dps_provisioning(Ctx *c, const TomlValue *p)
{
        FILE *f = c->identityd_prov.f;
        const char *endpoint, *scope, *method, *reg_id, *payload_uri = NULL;
        const TomlValue *att, *payload, *issued = NULL;
        const char *ap = "provisioning.attestation";
        int r;

        if ((r = get_string(c, p, "provisioning", "global_endpoint", true, &endpoint)) < 0 ||
            (r = get_string(c, p, "provisioning", "id_scope", true, &scope)) < 0 ||
            (r = get_table(c, p, "provisioning", "payload", false, &payload)) < 0 ||
            (r = get_table(c, p, "provisioning", "attestation", true, &att)) < 0 ||
            (r = get_string(c, att, ap, "method", true, &method)) < 0 ||
            (r = get_string(c, att, ap, "registration_id", false, &reg_id)) < 0)
                return r;
        if (!startswith(endpoint, "https://") && !startswith(endpoint, "http://"))
                return fail(c, "provisioning.global_endpoint: '%s' is not an http(s) URL",
                            endpoint);
        if (payload &&
            (r = get_uri(c, payload, "provisioning.payload", "uri", true, true, &payload_uri)) < 0)
                return r;
        write_kv(f, "global_endpoint", endpoint);
        write_kv(f, "scope_id", scope);
        if (payload_uri) {
                fprintf(f, "payload = { uri = ");
                toml_write_string(f, payload_uri);
                fprintf(f, " }\n");
        }
        fprintf(f, "\n[provisioning.attestation]\n");
        write_kv(f, "method", method);
        if (streq(method, "symmetric_key")) {
                if (!reg_id)
                        return fail(c, "provisioning.attestation.registration_id: missing "
                                    "(required)");
                write_kv(f, "registration_id", reg_id);
                r = symmetric_key(c, att, ap, "symmetric_key");
                if (r < 0)
                        return r;
                write_kv(f, "symmetric_key", DEVICE_ID);
                return 0;
        }
        if (streq(method, "tpm")) {
                if (!reg_id)
                        return fail(c, "provisioning.attestation.registration_id: missing "
                                    "(required)");
                write_kv(f, "registration_id", reg_id);
                return 0;
        }
        if (!streq(method, "x509"))
                return fail(c, "provisioning.attestation.method: '%s' is not \"symmetric_key\", "
                            "\"x509\" or \"tpm\"", method);

        /* registration_id goes before the identity keys unless it becomes a table. */
        const TomlValue *cert = toml_table_get(att, "identity_cert");
        const TomlValue *subject = cert && cert->type == TOML_TABLE ?
                                           toml_table_get(cert, "subject") :
                                           NULL;
        const TomlValue *cn = cert && cert->type == TOML_TABLE ?
                                      toml_table_get(cert, "common_name") :
                                      NULL;
        if (!subject) {
                if (reg_id)
                        write_kv(f, "registration_id", reg_id);
                else if (cn && cn->type == TOML_STRING)
                        write_kv(f, "registration_id", cn->string.data);
        }
        r = x509_identity(c, att, ap, /* dps= */ true, &issued);
        if (r < 0)
                return r;
        if (issued && subject) {
                r = write_string_table(c, f, "provisioning.attestation.registration_id", subject,
                                       "provisioning.attestation.identity_cert.subject");
                if (r < 0)
                        return r;
        }
        const TomlValue *auto_renew = issued ? toml_table_get(issued, "auto_renew") : NULL;
        if (auto_renew)
                write_auto_renew(f, "provisioning.attestation.identity_auto_renew", auto_renew);
        return 0;
}

static int provisioning(Ctx *c, const TomlValue *root)
{
        const TomlValue *p;
        const char *source, *parent, *gateway;
        int r;

        if ((r = get_string(c, root, NULL, "parent_hostname", false, &parent)) < 0 ||
            (r = get_string(c, root, NULL, "local_gateway_hostname", false, &gateway)) < 0 ||
            (r = get_table(c, root, NULL, "provisioning", true, &p)) < 0 ||
            (r = get_string(c, p, "provisioning", "source", true, &source)) < 0)
                return r;
        if (parent && gateway)
                return fail(c, "parent_hostname: give either parent_hostname or "
                            "local_gateway_hostname, not both");
        parent = parent ?: gateway;

        fprintf(c->identityd_prov.f, "\n[provisioning]\n");
        write_kv(c->identityd_prov.f, "source", source);
        if (streq(source, "dps")) {
                if (parent)
                        return fail(c, "%s: DPS provisioning is not supported in nested mode "
                                    "(remove the parent hostname or provision manually)",
                                    toml_table_get(root, "parent_hostname") ?
                                            "parent_hostname" :
                                            "local_gateway_hostname");
                return dps_provisioning(c, p);
        }
        if (parent)
                write_kv(c->identityd_prov.f, "local_gateway_hostname", parent);
        if (streq(source, "manual"))
                return manual_provisioning(c, p);
        if (streq(source, "none"))
                return 0;
        return fail(c, "provisioning.source: '%s' is not \"manual\", \"dps\" or \"none\"", source);
}

static int cert_issuance_est(Ctx *c, const TomlValue *est)
{
        const TomlValue *trusted, *auth, *renew, *urls;
        const char *ep = "cert_issuance.est";
        FILE *f = c->certd_global.f;
        int r;

        if ((r = get_typed(c, est, ep, "trusted_certs", TOML_ARRAY, false, &trusted)) < 0 ||
            (r = get_table(c, est, ep, "auth", false, &auth)) < 0 ||
            (r = get_table(c, est, ep, "identity_auto_renew", false, &renew)) < 0 ||
            (r = get_table(c, est, ep, "urls", false, &urls)) < 0)
                return r;
        fprintf(f, "\n[cert_issuance.est]\n");
        if (trusted) {
                fprintf(f, "trusted_certs = [");
                size_t i = 0;
                toml_array_foreach(item, trusted) {
                        char id[64], name[64];
                        snprintf(name, sizeof(name), "cert_issuance.est.trusted_certs[%zu]",
                                 i);
                        if ((*item)->type != TOML_STRING)
                                return fail(c, "%s: expected a string", name);
                        r = check_cert_uri(c, name, (*item)->string.data);
                        if (r < 0)
                                return r;
                        snprintf(id, sizeof(id), "est-server-ca-%zu", ++i);
                        r = preload(c, &c->certd_preloaded, "preloaded_certs", id,
                                    toml_quote((*item)->string.data));
                        if (r < 0)
                                return r;
                        fprintf(f, "%s", i > 1 ? ", " : "");
                        toml_write_string(f, id);
                }
                fprintf(f, "]\n");
        }
        if (auth) {
                r = est_auth(c, f, auth, "cert_issuance.est.auth", NULL, true);
                if (r < 0)
                        return r;
        }
        if (renew) {
                bool rotate;
                r = auto_renew_table(c, renew, "cert_issuance.est.identity_auto_renew",
                                     &rotate);
                if (r < 0)
                        return r;
                write_auto_renew(f, "cert_issuance.est.identity_auto_renew", renew);
        }
        fprintf(f, "\n[cert_issuance.est.urls]\n");
        if (urls)
                toml_table_foreach(e, urls) {
                        if (e->value->type != TOML_STRING || e->value->string.len == 0)
                                return fail(c, "cert_issuance.est.urls.%s: expected a "
                                            "non-empty string", e->key);
                        if (!startswith(e->value->string.data, "https://") &&
                            !startswith(e->value->string.data, "http://"))
                                return fail(c, "cert_issuance.est.urls.%s: '%s' is not an "
                                            "http(s) URL", e->key, e->value->string.data);
                        write_kv(f, e->key, e->value->string.data);
                }
        return 0;
}

static int cert_issuance_local_ca(Ctx *c, const TomlValue *lca)
{
        FILE *f = c->certd_global.f;
        const TomlValue *v;
        int r;

        const char *lp = "cert_issuance.local_ca";
        const char *cert_uri, *pk_uri;
        v = toml_table_get(lca, "cert");
        if (v && v->type == TOML_TABLE) {
                if (toml_table_get(lca, "pk"))
                        return fail(c, "cert_issuance.local_ca.pk: not allowed when the "
                                    "local CA certificate is issued");
                r = cert_issuance_options(c, v, "cert_issuance.local_ca.cert", LOCAL_CA,
                                          LOCAL_CA, true);
                if (r < 0)
                        return r;
        } else {
                if ((r = get_uri(c, lca, lp, "cert", true, true, &cert_uri)) < 0 ||
                    (r = get_uri(c, lca, lp, "pk", true, false, &pk_uri)) < 0)
                        return r;
                r = preload_pair(c, LOCAL_CA, cert_uri, pk_uri);
                if (r < 0)
                        return r;
        }
        if ((r = strs_add(&c->aziotcs_keys, LOCAL_CA)) < 0)
                return r;
        fprintf(f, "\n[cert_issuance.local_ca]\n");
        write_kv(f, "cert", LOCAL_CA);
        write_kv(f, "pk", LOCAL_CA);
        return 0;
}

static int cert_issuance(Ctx *c, const TomlValue *root)
{
        const TomlValue *ci, *est, *lca;
        int r;

        if ((r = get_table(c, root, NULL, "cert_issuance", false, &ci)) < 0 || !ci)
                return r;
        toml_table_foreach(e, ci)
                if (!STR_IN_SET(e->key, "est", "local_ca"))
                        return fail(c, "cert_issuance.%s: unknown key (expected est or local_ca)",
                                    e->key);
        if ((r = get_table(c, ci, "cert_issuance", "est", false, &est)) < 0 ||
            (r = get_table(c, ci, "cert_issuance", "local_ca", false, &lca)) < 0)
                return r;
        if (est && (r = cert_issuance_est(c, est)) < 0)
                return r;
        if (lca && (r = cert_issuance_local_ca(c, lca)) < 0)
                return r;
        return 0;
}

static int user_preloaded(Ctx *c, const TomlValue *root)
{
        const TomlValue *keys, *certs;
        char name[256];
        int r;

        if ((r = get_table(c, root, NULL, "preloaded_keys", false, &keys)) < 0 ||
            (r = get_table(c, root, NULL, "preloaded_certs", false, &certs)) < 0)
                return r;
        if (keys)
                toml_table_foreach(e, keys) {
                        snprintf(name, sizeof(name), "preloaded_keys.%s", e->key);
                        if (e->value->type != TOML_STRING)
                                return fail(c, "%s: expected a string (a URI)", name);
                        r = check_key_uri(c, name, e->value->string.data);
                        if (r < 0)
                                return r;
                        r = preload(c, &c->keyd_preloaded, "preloaded_keys", e->key,
                                    toml_quote(e->value->string.data));
                        if (r < 0)
                                return r;
                }
        if (certs)
                toml_table_foreach(e, certs) {
                        snprintf(name, sizeof(name), "preloaded_certs.%s", e->key);
                        if (e->value->type == TOML_STRING) {
                                r = check_cert_uri(c, name, e->value->string.data);
                                if (r < 0)
                                        return r;
                                r = preload(c, &c->certd_preloaded, "preloaded_certs", e->key,
                                            toml_quote(e->value->string.data));
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        if (e->value->type != TOML_ARRAY)
                                return fail(c, "%s: expected a URI or an array of certificate ids",
                                            name);
                        char *buf = NULL;
                        size_t len = 0;
                        FILE *f = open_memstream(&buf, &len);
                        if (!f)
                                return -ENOMEM;
                        fputc('[', f);
                        size_t i = 0;
                        toml_array_foreach(item, e->value) {
                                if ((*item)->type != TOML_STRING || (*item)->string.len == 0) {
                                        fclose(f);
                                        free(buf);
                                        return fail(c, "%s[%zu]: expected a certificate id", name,
                                                    i);
                                }
                                fprintf(f, "%s", i++ ? ", " : "");
                                toml_write_string(f, (*item)->string.data);
                        }
                        fputc(']', f);
                        if (fclose(f) != 0) {
                                free(buf);
                                return -ENOMEM;
                        }
                        r = preload(c, &c->certd_preloaded, "preloaded_certs", e->key, buf);
                        if (r < 0)
                                return r;
                }
        return 0;
}

static void write_strs(FILE *f, const StrList *l)
{
        fputc('[', f);
        for (size_t i = 0; i < l->n; i++) {
                fprintf(f, "%s", i ? ", " : "");
                toml_write_string(f, l->items[i]);
        }
        fprintf(f, "]\n");
}

/* Written even when empty, as upstream does. */
static void write_pairs(FILE *f, const char *header, const PairList *l)
{
        fprintf(f, "\n[%s]\n", header);
        for (size_t i = 0; i < l->n; i++) {
                write_key(f, l->items[i].key);
                fprintf(f, " = %s\n", l->items[i].value);
        }
}

typedef struct MaxRequests {
        bool set;
        int64_t keyd, certd, identityd, tpmd;
} MaxRequests;

static int max_requests(Ctx *c, const TomlValue *root, MaxRequests *m)
{
        const TomlValue *t;
        bool present;
        int r;

        r = get_table(c, root, NULL, "aziot_max_requests", false, &t);
        if (r < 0 || !t)
                return r;
        m->set = true;
        const struct {
                const char *name;
                int64_t *v;
        } fields[] = { { "keyd", &m->keyd },
                       { "certd", &m->certd },
                       { "identityd", &m->identityd },
                       { "tpmd", &m->tpmd } };
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                r = get_int(c, t, "aziot_max_requests", fields[i].name, 1, INT32_MAX, &present,
                            fields[i].v);
                if (r < 0)
                        return r;
                if (!present)
                        return fail(c, "aziot_max_requests.%s: missing (all of keyd, certd, "
                                    "identityd and tpmd are required)", fields[i].name);
        }
        return 0;
}

static int tpm_section(Ctx *c, const TomlValue *root, const MaxRequests *m, char **ret)
{
        _cleanup_(text_done) Text t = {};
        const TomlValue *tpm, *ha;
        const TomlValue *tcti;
        const char *endorsement, *owner;
        bool has_index;
        int64_t index = 0;
        int r;

        if ((r = get_table(c, root, NULL, "tpm", false, &tpm)) < 0 || (r = text_open(&t)) < 0)
                return r;
        /* tcti = "" asks the TCTI loader for its default */
        if ((r = get_typed(c, tpm, "tpm", "tcti", TOML_STRING, false, &tcti)) < 0 ||
            (r = get_int(c, tpm, "tpm", "auth_key_index", 0, 0x7FFFFF, &has_index, &index)) < 0 ||
            (r = get_table(c, tpm, "tpm", "hierarchy_authorization", false, &ha)) < 0)
                return r;
        /* an empty string is a valid password */
        endorsement = owner = NULL;
        if (ha) {
                const TomlValue *v;
                if ((r = get_typed(c, ha, "tpm.hierarchy_authorization", "endorsement",
                                   TOML_STRING, false, &v)) < 0)
                        return r;
                endorsement = v ? v->string.data : NULL;
                if ((r = get_typed(c, ha, "tpm.hierarchy_authorization", "owner", TOML_STRING,
                                   false, &v)) < 0)
                        return r;
                owner = v ? v->string.data : NULL;
        }
        if (m->set)
                fprintf(t.f, "max_requests = %" PRId64 "\n", m->tpmd);
        if (tcti)
                write_kv(t.f, "tcti", tcti->string.data);
        if (has_index)
                fprintf(t.f, "auth_key_index = %" PRId64 "\n", index);
        if (ha) {
                fprintf(t.f, "\n[hierarchy_authorization]\n");
                if (endorsement)
                        write_kv(t.f, "endorsement", endorsement);
                if (owner)
                        write_kv(t.f, "owner", owner);
        }
        *ret = text_take(&t);
        return *ret ? 0 : -ENOMEM;
}

static int keyd_text(Ctx *c, const TomlValue *root, const SuperConfigInput *in,
                     const MaxRequests *m, char **ret)
{
        _cleanup_(text_done) Text t = {};
        const TomlValue *ak;
        int r;

        if ((r = get_table(c, root, NULL, "aziot_keys", false, &ak)) < 0 || (r = text_open(&t)) < 0)
                return r;
        if (m->set)
                fprintf(t.f, "max_requests = %" PRId64 "\n\n", m->keyd);
        fprintf(t.f, "[aziot_keys]\n");
        write_kv(t.f, "homedir_path", "/var/lib/aziot/keyd");
        if (ak)
                toml_table_foreach(e, ak) {
                        if (e->value->type != TOML_STRING)
                                return fail(c, "aziot_keys.%s: expected a string", e->key);
                        if (streq(e->key, "homedir_path"))
                                continue; /* forced, as upstream does */
                        write_kv(t.f, e->key, e->value->string.data);
                }
        write_pairs(t.f, "preloaded_keys", &c->keyd_preloaded);
        fprintf(t.f, "\n[[principal]]\nuid = %u\nkeys = ", (unsigned)in->aziotid_uid);
        write_strs(t.f, &c->aziotid_keys);
        if (c->aziotcs_keys.n > 0) {
                fprintf(t.f, "\n[[principal]]\nuid = %u\nkeys = ", (unsigned)in->aziotcs_uid);
                write_strs(t.f, &c->aziotcs_keys);
        }
        *ret = text_take(&t);
        return *ret ? 0 : -ENOMEM;
}

static int certd_text(Ctx *c, const SuperConfigInput *in, const MaxRequests *m, char **ret)
{
        _cleanup_(text_done) Text t = {};
        _cleanup_free_ char *global = text_take(&c->certd_global);
        _cleanup_free_ char *percert = text_take(&c->certd_percert);
        int r;

        if (!global || !percert)
                return -ENOMEM;
        if ((r = text_open(&t)) < 0)
                return r;
        write_kv(t.f, "homedir_path", "/var/lib/aziot/certd");
        if (m->set)
                fprintf(t.f, "max_requests = %" PRId64 "\n", m->certd);
        if (isempty(global) && isempty(percert))
                fprintf(t.f, "\n[cert_issuance]\n"); /* as upstream writes it */
        fputs(global, t.f);
        fputs(percert, t.f);
        write_pairs(t.f, "preloaded_certs", &c->certd_preloaded);
        if (c->aziotid_certs.n > 0) {
                fprintf(t.f, "\n[[principal]]\nuid = %u\ncerts = ", (unsigned)in->aziotid_uid);
                write_strs(t.f, &c->aziotid_certs);
        }
        *ret = text_take(&t);
        return *ret ? 0 : -ENOMEM;
}

/* identityd's own top-level settings, then [provisioning] (already translated) and [localid]. */
static int identityd_text(Ctx *c, const TomlValue *root, const SuperConfigInput *in,
                          const MaxRequests *m, char **ret)
{
        _cleanup_(text_done) Text t = {};
        _cleanup_free_ char *prov = text_take(&c->identityd_prov);
        const char *hostname, *domain;
        const TomlValue *localid, *prefer;
        bool has_timeout, has_retries;
        int64_t timeout = 0, retries = 0;
        int r;

        if (!prov)
                return -ENOMEM;
        if ((r = text_open(&t)) < 0 ||
            (r = get_string(c, root, NULL, "hostname", false, &hostname)) < 0 ||
            (r = get_int(c, root, NULL, "cloud_timeout_sec", 70, INT32_MAX, &has_timeout,
                         &timeout)) < 0 ||
            (r = get_int(c, root, NULL, "cloud_retries", 0, INT32_MAX, &has_retries, &retries)) <
                    0 ||
            (r = get_typed(c, root, NULL, "prefer_module_identity_cache", TOML_BOOL, false,
                           &prefer)) < 0 ||
            (r = get_table(c, root, NULL, "localid", false, &localid)) < 0 ||
            (r = get_string(c, localid, "localid", "domain", !!localid, &domain)) < 0)
                return r;
        hostname = hostname ?: in->default_hostname;
        if (isempty(hostname))
                return fail(c, "hostname: missing, and the machine's hostname is unknown");

        write_kv(t.f, "hostname", hostname);
        write_kv(t.f, "homedir", "/var/lib/aziot/identityd");
        fprintf(t.f, "prefer_module_identity_cache = %s\n",
                prefer && prefer->boolean ? "true" : "false");
        if (has_timeout)
                fprintf(t.f, "cloud_timeout_sec = %" PRId64 "\n", timeout);
        if (has_retries)
                fprintf(t.f, "cloud_retries = %" PRId64 "\n", retries);
        if (m->set)
                fprintf(t.f, "max_requests = %" PRId64 "\n", m->identityd);
        fputs(prov, t.f);
        if (localid) {
                fprintf(t.f, "\n[localid]\n");
                write_kv(t.f, "domain", domain);
        }
        *ret = text_take(&t);
        return *ret ? 0 : -ENOMEM;
}

static int translate(Ctx *c, const TomlValue *root, const SuperConfigInput *in,
                     SuperConfigOutput *out)
{
        _cleanup_free_ char *keyd = NULL, *certd = NULL, *identityd = NULL, *tpmd = NULL;
        MaxRequests m = {};
        int r;

        if ((r = text_open(&c->certd_global)) < 0 || (r = text_open(&c->certd_percert)) < 0 ||
            (r = text_open(&c->identityd_prov)) < 0 || (r = max_requests(c, root, &m)) < 0 ||
            (r = strs_add(&c->aziotid_keys, MASTER_ID)) < 0)
                return r;
        /* Provisioning and issuance first: they decide the preloaded ids and the principals. */
        if ((r = provisioning(c, root)) < 0 || (r = cert_issuance(c, root)) < 0 ||
            (r = user_preloaded(c, root)) < 0 ||
            (r = identityd_text(c, root, in, &m, &identityd)) < 0 ||
            (r = keyd_text(c, root, in, &m, &keyd)) < 0 ||
            (r = certd_text(c, in, &m, &certd)) < 0 ||
            (r = tpm_section(c, root, &m, &tpmd)) < 0)
                return r;

        out->keyd = TAKE_PTR(keyd);
        out->certd = TAKE_PTR(certd);
        out->identityd = TAKE_PTR(identityd);
        out->tpmd = TAKE_PTR(tpmd);
        out->device_id_key = TAKE_PTR(c->secret);
        out->device_id_key_len = c->secret_len;
        c->secret_len = 0;
        return 0;
}

void super_config_output_done(SuperConfigOutput *out)
{
        out->keyd = mfree(out->keyd);
        out->certd = mfree(out->certd);
        out->identityd = mfree(out->identityd);
        out->tpmd = mfree(out->tpmd);
        erase_and_free(out->device_id_key, out->device_id_key_len);
        out->device_id_key = NULL;
        out->device_id_key_len = 0;
}

int super_config_translate(const TomlValue *root, const SuperConfigInput *in,
                           SuperConfigOutput *out, char *error, size_t error_size)
{
        Ctx c = { .error = error, .error_size = error_size };
        int r;

        error[0] = 0;
        r = translate(&c, root, in, out);
        pairs_done(&c.keyd_preloaded);
        pairs_done(&c.certd_preloaded);
        strs_done(&c.aziotid_keys);
        strs_done(&c.aziotcs_keys);
        strs_done(&c.aziotid_certs);
        text_done(&c.certd_global);
        text_done(&c.certd_percert);
        text_done(&c.identityd_prov);
        erase_and_free(c.secret, c.secret_len);
        if (r == -ENOMEM && !error[0])
                snprintf(error, error_size, "out of memory");
        return r;
}
