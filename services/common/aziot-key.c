/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/store.h>

#include "aziot-key.h"
#include "macro.h"
#include "openssl-util.h"

static const char *const reason_strings[] = {
        [AZIOT_KEY_R_KEYD_UNREACHABLE] = "keyd is not reachable",
        [AZIOT_KEY_R_NOT_AUTHORIZED] = "keyd refused: not authorized to use the key",
        [AZIOT_KEY_R_BUS_DENIED] = "the bus refused the call to keyd (only root, group aziotks and "
                                   "the gateway user may call it)",
        [AZIOT_KEY_R_KEY_NOT_FOUND] = "keyd has no such key",
        [AZIOT_KEY_R_KEYD_REJECTED] = "keyd rejected the request",
        [AZIOT_KEY_R_KEYD_FAILED] = "keyd failed",
        [AZIOT_KEY_R_BAD_URI] = "malformed aziot-key URI",
        [AZIOT_KEY_R_UNSUPPORTED_KEY] = "unsupported key",
        [AZIOT_KEY_R_NOT_SUPPORTED] = "operation not supported with a key held by keyd",
        [AZIOT_KEY_R_BAD_REPLY] = "unexpected reply from keyd",
        [AZIOT_KEY_R_INTERNAL] = "internal error",
};

const char *aziot_key_reason_to_string(int reason)
{
        if (reason <= 0 || (size_t)reason >= ELEMENTSOF(reason_strings))
                return NULL;
        return reason_strings[reason];
}

/* RFC 3986 unreserved characters: never escaped by aziot_key_uri_format(). */
static bool is_unreserved(unsigned char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               strchr("-._~", c);
}

/* What may appear unescaped in the id or handle part: unreserved, sub-delims, ":", "@", "/". */
static bool is_plain(unsigned char c)
{
        return c != '\0' && (is_unreserved(c) || strchr("!$&'()*+,;=:@/", c));
}

int aziot_key_uri_parse(const char *uri, AziotKeyUriKind *ret_kind, char **ret_value,
                        const char **ret_problem)
{
        static const struct {
                const char *prefix;
                AziotKeyUriKind kind;
        } kinds[] = {
                {"pair/", AZIOT_KEY_URI_PAIR},
                {"handle/", AZIOT_KEY_URI_HANDLE},
        };
        const char *problem = NULL, *rest = NULL;
        AziotKeyUriKind kind = AZIOT_KEY_URI_PAIR;
        _cleanup_free_ char *value = NULL;
        size_t n = 0;

        if (!uri || strncasecmp(uri, AZIOT_KEY_URI_SCHEME ":", STRLEN(AZIOT_KEY_URI_SCHEME ":")))
                problem = "not an aziot-key: URI";
        else {
                const char *path = uri + STRLEN(AZIOT_KEY_URI_SCHEME ":");

                for (size_t i = 0; i < ELEMENTSOF(kinds) && !rest; i++) {
                        rest = startswith(path, kinds[i].prefix);
                        kind = kinds[i].kind;
                }
                if (!rest)
                        problem = "expected aziot-key:pair/<key pair id> or "
                                  "aziot-key:handle/<key handle>";
                else if (!*rest)
                        problem = kind == AZIOT_KEY_URI_PAIR ? "empty key pair id"
                                                             : "empty key handle";
        }
        if (problem) {
                if (ret_problem)
                        *ret_problem = problem;
                return -EINVAL;
        }

        value = malloc(strlen(rest) + 1);
        if (!value)
                return -ENOMEM;
        for (const char *p = rest; *p && !problem; p++) {
                unsigned char c = (unsigned char)*p;

                if (c == '%') {
                        int hi = unhexchar(p[1]), lo = hi < 0 ? -1 : unhexchar(p[2]);

                        if (hi < 0 || lo < 0)
                                problem = "a \"%\" not followed by two hexadecimal digits";
                        else if (hi == 0 && lo == 0)
                                problem = "an encoded NUL byte (%00)";
                        else {
                                value[n++] = (char)(hi << 4 | lo);
                                p += 2;
                        }
                } else if (is_plain(c))
                        value[n++] = (char)c;
                else
                        problem = "a character that must be percent-encoded";
        }
        if (problem) {
                if (ret_problem)
                        *ret_problem = problem;
                return -EINVAL;
        }
        value[n] = '\0';

        *ret_kind = kind;
        *ret_value = TAKE_PTR(value);
        return 0;
}

int aziot_key_uri_format(AziotKeyUriKind kind, const char *value, char **ret)
{
        const char *prefix = kind == AZIOT_KEY_URI_HANDLE ? AZIOT_KEY_URI_SCHEME ":handle/"
                                                          : AZIOT_KEY_URI_SCHEME ":pair/";
        char *uri, *q;

        if (isempty(value))
                return -EINVAL;
        uri = malloc(strlen(prefix) + 3 * strlen(value) + 1);
        if (!uri)
                return -ENOMEM;
        q = stpcpy(uri, prefix);
        for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
                if (is_unreserved(*p))
                        *q++ = (char)*p;
                else
                        q += sprintf(q, "%%%02X", *p);
        }
        *q = '\0';
        *ret = uri;
        return 0;
}

static int reason_to_errno(int reason)
{
        switch (reason) {
        case AZIOT_KEY_R_KEYD_UNREACHABLE:
                return -EHOSTUNREACH;
        case AZIOT_KEY_R_NOT_AUTHORIZED:
        case AZIOT_KEY_R_BUS_DENIED:
                return -EACCES;
        case AZIOT_KEY_R_KEY_NOT_FOUND:
                return -ENOENT;
        case AZIOT_KEY_R_BAD_URI:
                return -EINVAL;
        case AZIOT_KEY_R_KEYD_REJECTED:
                return -EBADMSG;
        default:
                return -EIO;
        }
}

/* Empties the error queue; returns the errno of the provider's first error (the cause; later
 * entries are OpenSSL's own follow-ups) and, when ret_message is not NULL, a message saying why. */
static int consume_errors(int fallback, const char *fallback_message, char **ret_message)
{
        _cleanup_free_ char *message = NULL;
        const char *data = NULL;
        unsigned long e;
        int flags = 0, r = fallback;
        bool found = false;
        char text[256];

        while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
                const char *lib = ERR_lib_error_string(e);
                const char *reason = ERR_reason_error_string(e);

                if (found)
                        continue;
                if (!streq_ptr(lib, AZIOT_KEY_PROVIDER_NAME) && message)
                        continue; /* keep the first message until the provider's own */
                if (streq_ptr(lib, AZIOT_KEY_PROVIDER_NAME)) {
                        found = true;
                        r = reason_to_errno(ERR_GET_REASON(e));
                }
                if (!reason) {
                        ERR_error_string_n(e, text, sizeof(text));
                        reason = text;
                }
                message = mfree_str(message);
                if (asprintf(&message, "%s%s%s", reason,
                             (flags & ERR_TXT_STRING) && !isempty(data) ? ": " : "",
                             (flags & ERR_TXT_STRING) && data ? data : "") < 0)
                        message = NULL;
        }
        if (ret_message)
                *ret_message = message ? TAKE_PTR(message) : strdup(fallback_message);
        return r;
}


/* The provider as loaded into the default library context, for aziot_key_provider_unload(). */
static OSSL_PROVIDER *default_provider;

void aziot_key_provider_unload(void)
{
        if (default_provider)
                (void)OSSL_PROVIDER_unload(default_provider);
        default_provider = NULL;
}

static int evp_pkey_of(OSSL_LIB_CTX *libctx, AziotKeyUriKind kind, const char *value,
                       EVP_PKEY **ret, char **ret_message)
{
        _cleanup_(OSSL_STORE_closep) OSSL_STORE_CTX *store = NULL;
        _cleanup_free_ char *uri = NULL;
        EVP_PKEY *pkey = NULL;
        int r;

        if (ret_message)
                *ret_message = NULL;
        r = aziot_key_uri_format(kind, value, &uri);
        if (r < 0) {
                if (ret_message)
                        *ret_message = strdup(r == -EINVAL ? "empty key pair id or handle"
                                                           : "out of memory");
                return r;
        }

        ERR_clear_error();
        /* Loaded once per library context, kept until aziot_key_provider_unload() (default
         * context) or the context goes: keys made by it may live as long as the process.
         * retain_fallbacks keeps the default provider when nothing else was loaded. */
        if (!OSSL_PROVIDER_available(libctx, AZIOT_KEY_PROVIDER_NAME)) {
                OSSL_PROVIDER *p = OSSL_PROVIDER_try_load(libctx, AZIOT_KEY_PROVIDER_NAME,
                                                          /* retain_fallbacks= */ 1);

                if (!p)
                        return consume_errors(-ENOPKG,
                                              "cannot load the OpenSSL provider \"aziot\"",
                                              ret_message);
                if (!libctx && !default_provider)
                        default_provider = p;
        }

        store = OSSL_STORE_open_ex(uri, libctx, "?provider=" AZIOT_KEY_PROVIDER_NAME, NULL, NULL,
                                   NULL, NULL, NULL);
        if (!store)
                return consume_errors(-EIO, "cannot open the key", ret_message);
        (void)OSSL_STORE_expect(store, OSSL_STORE_INFO_PKEY);
        while (!pkey && !OSSL_STORE_eof(store)) {
                _cleanup_(OSSL_STORE_INFO_freep) OSSL_STORE_INFO *info = OSSL_STORE_load(store);

                if (!info)
                        break;
                if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
                        pkey = OSSL_STORE_INFO_get1_PKEY(info);
        }
        if (!pkey)
                return consume_errors(-EIO, "keyd returned no key", ret_message);

        ERR_clear_error();
        *ret = pkey;
        return 0;
}

int aziot_key_evp_pkey(OSSL_LIB_CTX *libctx, const char *key_pair_id, EVP_PKEY **ret,
                       char **ret_message)
{
        return evp_pkey_of(libctx, AZIOT_KEY_URI_PAIR, key_pair_id, ret, ret_message);
}

int aziot_key_evp_pkey_from_handle(OSSL_LIB_CTX *libctx, const char *handle, EVP_PKEY **ret,
                                   char **ret_message)
{
        return evp_pkey_of(libctx, AZIOT_KEY_URI_HANDLE, handle, ret, ret_message);
}
