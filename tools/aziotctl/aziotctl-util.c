/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "aziotctl-paths.h"
#include "aziotctl-util.h"
#include "aziotctl.h"
#include "build-config.h"
#include "config.h"
#include "macro.h"
#include "openssl-util.h"

const char *ctl_root(void)
{
        const char *r = getenv("AZIOTCTL_ROOT");

        return isempty(r) || streq(r, "/") ? NULL : r;
}

char *ctl_path(const char *path)
{
        const char *root = ctl_root(), *rest;

        if (!root || path[0] != '/')
                return strdup(path);
        /* Paths written in a configuration under the root may already name it. */
        rest = startswith(path, root);
        if (rest && (rest[0] == '/' || rest[0] == '\0'))
                return strdup(path);
        return aziotctl_path(path);
}

/* Keeps a path that came from the daemons' own environment override, else moves it under the root.
 */
static int rooted(const char *svc, const char *suffix, char **path)
{
        char var[64];
        char *p;

        snprintf(var, sizeof(var), "AZIOT_%s_CONFIG%s", svc, suffix);
        for (char *c = var; *c; c++)
                *c = (char)toupper((unsigned char)*c);
        if (!isempty(getenv(var)))
                return 0;
        p = ctl_path(*path);
        if (!p)
                return -ENOMEM;
        free(*path);
        *path = p;
        return 0;
}

int ctl_config_paths(const char *svc, char **ret_main, char **ret_dir)
{
        _cleanup_free_ char *main_path = NULL, *dir = NULL;
        int r;

        r = config_paths(svc, &main_path, &dir);
        if (r < 0)
                return r;
        r = rooted(svc, "", &main_path);
        if (r < 0)
                return r;
        r = rooted(svc, "_DIR", &dir);
        if (r < 0)
                return r;
        *ret_main = TAKE_PTR(main_path);
        *ret_dir = TAKE_PTR(dir);
        return 0;
}

char *ctl_socket_path(const char *name)
{
        const char *dir = getenv("AZIOT_SOCKET_DIR");
        _cleanup_free_ char *base = NULL;
        char *p;

        if (isempty(dir)) {
                base = ctl_path(SOCKET_DIR);
                if (!base)
                        return NULL;
                dir = base;
        }
        if (asprintf(&p, "%s/%s", dir, name) < 0)
                return NULL;
        return p;
}

int ctl_parse_output(const char *s, bool stream_ok, CtlOutput *ret)
{
        if (streq(s, "text"))
                *ret = CTL_OUTPUT_TEXT;
        else if (streq(s, "json"))
                *ret = CTL_OUTPUT_JSON;
        else if (stream_ok && streq(s, "json-stream"))
                *ret = CTL_OUTPUT_JSON_STREAM;
        else {
                fprintf(stderr, "aziotctl: --output must be %s\n",
                        stream_ok ? "text, json or json-stream" : "text or json");
                return -EINVAL;
        }
        return 0;
}

int ctl_bus_open(sd_bus **ret)
{
        int r = sd_bus_open_system(ret);

        if (r < 0)
                fprintf(stderr, "aziotctl: cannot connect to the system bus: %s\n", strerror(-r));
        return r;
}

bool ctl_bus_error_is_denied(const sd_bus_error *error)
{
        return error && error->name &&
               (endswith(error->name, ".Error.NotAuthorized") ||
                streq(error->name, SD_BUS_ERROR_ACCESS_DENIED) ||
                streq(error->name, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED));
}

int ctl_bus_error(const char *what, const sd_bus_error *error, int r)
{
        const char *message = error && error->message ? error->message : strerror(r < 0 ? -r : r);

        if (ctl_bus_error_is_denied(error))
                fprintf(stderr, "aziotctl: %s: access denied: %s\n", what, message);
        else if (error && error->name)
                fprintf(stderr, "aziotctl: %s: %s (%s)\n", what, message, error->name);
        else
                fprintf(stderr, "aziotctl: %s: %s\n", what, message);
        return AZIOTCTL_EXIT_FAILURE;
}

static int asn1_time_to_time_t(const ASN1_TIME *a, time_t *ret)
{
        struct tm tm = {};

        if (!a || ASN1_TIME_to_tm(a, &tm) != 1)
                return -EINVAL;
        *ret = timegm(&tm);
        return 0;
}

static void name_to_string(const X509_NAME *name, char *buf, size_t size)
{
        _cleanup_(BIO_freep) BIO *bio = BIO_new(BIO_s_mem());
        char *data;
        long n;

        buf[0] = '\0';
        if (!bio || X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) < 0)
                return;
        n = BIO_get_mem_data(bio, &data);
        snprintf(buf, size, "%.*s", (int)MIN(n, (long)size - 1), data);
}

int cert_info(X509 *x, CertInfo *ret)
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        _cleanup_(BN_freep) BIGNUM *serial = NULL;
        char *hex;
        int r;

        *ret = (CertInfo){};
        name_to_string(X509_get_subject_name(x), ret->subject, sizeof(ret->subject));
        name_to_string(X509_get_issuer_name(x), ret->issuer, sizeof(ret->issuer));
        r = asn1_time_to_time_t(X509_get0_notBefore(x), &ret->not_before);
        if (r < 0)
                return r;
        r = asn1_time_to_time_t(X509_get0_notAfter(x), &ret->not_after);
        if (r < 0)
                return r;
        serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        if (serial) {
                hex = BN_bn2hex(serial);
                if (hex)
                        snprintf(ret->serial, sizeof(ret->serial), "%s", hex);
                OPENSSL_free(hex);
        }
        if (X509_digest(x, EVP_sha256(), md, &md_len) != 1)
                return -EIO;
        for (unsigned i = 0; i < md_len && 3 * i + 3 <= sizeof(ret->fingerprint); i++)
                snprintf(ret->fingerprint + 3 * i, 4, i + 1 < md_len ? "%02X:" : "%02X", md[i]);
        return 0;
}

X509 *cert_from_pem(const char *pem, size_t len)
{
        _cleanup_(BIO_freep) BIO *bio = BIO_new_mem_buf(pem, (int)len);

        if (!bio)
                return NULL;
        return PEM_read_bio_X509(bio, NULL, NULL, NULL);
}

const char *format_time(time_t t, char *buf, size_t size)
{
        struct tm tm;

        if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                snprintf(buf, size, "%lld", (long long)t);
        return buf;
}
