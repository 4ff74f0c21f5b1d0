/* SPDX-License-Identifier: MIT */
/* The store loader of aziot-key: URIs (services/common/aziot-key.h): one object, the key pair. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/store.h>

#include "keyd-client.h"
#include "provider.h"

typedef struct StoreCtx {
        AziotProvider *prov;
        AziotKeyUriKind kind;
        char *value; /* the key pair id, or the handle */
        int expect;  /* OSSL_STORE_INFO_* the caller wants, 0 for anything */
        bool eof;
} StoreCtx;

static int store_close(void *loaderctx)
{
        StoreCtx *ctx = loaderctx;

        if (!ctx)
                return 1;
        if (ctx->value)
                erase_and_free(ctx->value, strlen(ctx->value));
        free(ctx);
        return 1;
}

static void *store_open(void *provctx, const char *uri)
{
        AziotProvider *prov = provctx;
        StoreCtx *ctx;
        const char *problem = NULL;
        int r;

        ctx = calloc(1, sizeof(*ctx));
        if (!ctx) {
                aziot_raise(prov, AZIOT_KEY_R_INTERNAL, "out of memory");
                return NULL;
        }
        ctx->prov = prov;
        r = aziot_key_uri_parse(uri, &ctx->kind, &ctx->value, &problem);
        if (r < 0) {
                /* Not the URI itself: it may hold a key handle, which is a secret. */
                aziot_raise(prov, r == -ENOMEM ? AZIOT_KEY_R_INTERNAL : AZIOT_KEY_R_BAD_URI,
                            "%s (expected " AZIOT_KEY_URI_SCHEME
                            ":pair/<key pair id> or " AZIOT_KEY_URI_SCHEME ":handle/<key handle>)",
                            r == -ENOMEM ? "out of memory" : problem);
                store_close(ctx);
                return NULL;
        }
        return ctx;
}

static const OSSL_PARAM *store_settable_ctx_params(void *provctx)
{
        static const OSSL_PARAM settable[] = {
                OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL),
                OSSL_PARAM_END,
        };

        return settable;
}

static int store_set_ctx_params(void *loaderctx, const OSSL_PARAM params[])
{
        StoreCtx *ctx = loaderctx;
        const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT);

        if (p && !OSSL_PARAM_get_int(p, &ctx->expect))
                return 0;
        return 1;
}

static int store_load(void *loaderctx, OSSL_CALLBACK *object_cb, void *object_cbarg,
                      OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
        StoreCtx *ctx = loaderctx;
        _cleanup_(aziot_key_freep) AziotKey *key = NULL;
        _cleanup_free_ char *name = NULL;
        char *handle = NULL;
        int object_type = OSSL_OBJECT_PKEY;
        OSSL_PARAM params[4];

        ctx->eof = true;
        /* Only a key is here. */
        if (ctx->expect != 0 && ctx->expect != OSSL_STORE_INFO_PKEY &&
            ctx->expect != OSSL_STORE_INFO_PUBKEY)
                return 0;

        if (ctx->kind == AZIOT_KEY_URI_PAIR) {
                if (asprintf(&name, "key pair \"%s\"", ctx->value) < 0) {
                        name = NULL;
                        aziot_raise(ctx->prov, AZIOT_KEY_R_INTERNAL, "out of memory");
                        return 0;
                }
                if (!keyd_load_key_pair(ctx->prov, ctx->value, &handle))
                        return 0;
        } else {
                name = strdup("the key pair of a key handle");
                handle = strdup(ctx->value);
                if (!name || !handle) {
                        free(handle);
                        aziot_raise(ctx->prov, AZIOT_KEY_R_INTERNAL, "out of memory");
                        return 0;
                }
        }
        key = aziot_key_from_keyd(ctx->prov, handle, name);
        if (!key)
                return 0;

        /* The key goes by reference: the keymgmt's load() takes it over and clears the pointer. */
        params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &object_type);
        params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE,
                                                     (char *)aziot_key_type_name(key->type), 0);
        params[2] =
                OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &key, sizeof(key));
        params[3] = OSSL_PARAM_construct_end();
        return object_cb(params, object_cbarg);
}

static int store_eof(void *loaderctx)
{
        StoreCtx *ctx = loaderctx;

        return ctx->eof;
}

const OSSL_DISPATCH aziot_store_functions[] = {
        {OSSL_FUNC_STORE_OPEN, (void (*)(void))store_open},
        {OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))store_settable_ctx_params},
        {OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))store_set_ctx_params},
        {OSSL_FUNC_STORE_LOAD, (void (*)(void))store_load},
        {OSSL_FUNC_STORE_EOF, (void (*)(void))store_eof},
        {OSSL_FUNC_STORE_CLOSE, (void (*)(void))store_close},
        {0, NULL},
};
