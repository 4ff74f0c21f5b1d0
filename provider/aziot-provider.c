/* SPDX-License-Identifier: MIT */
/* The entry point of the "aziot" provider: what it offers, its errors, its context. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>

#include <openssl/core_names.h>
#include <openssl/provider.h>

#include "build-config.h"
#include "keyd-client.h"
#include "provider.h"

#define PROPERTIES "provider=" AZIOT_KEY_PROVIDER_NAME

const char *aziot_key_type_name(AziotKeyType type)
{
        return type == AZIOT_KEY_RSA ? "RSA" : "EC";
}

void aziot_raise_internal(const AziotProvider *prov, int reason, const char *file, int line,
                          const char *func, const char *fmt, ...)
{
        va_list ap;

        if (!prov || !prov->core_new_error || !prov->core_set_error_debug || !prov->core_vset_error)
                return;
        prov->core_new_error(prov->core);
        prov->core_set_error_debug(prov->core, file, line, func);
        va_start(ap, fmt);
        prov->core_vset_error(prov->core, (uint32_t)reason, fmt, ap);
        va_end(ap);
}

/* The names are OpenSSL's own (EVP_PKEY_is_a(pkey, "EC") must hold, or TLS does not take the
 * key); the property tells this provider's apart. */
static const OSSL_ALGORITHM keymgmts[] = {
        {"EC:id-ecPublicKey:1.2.840.10045.2.1", PROPERTIES, aziot_ec_keymgmt_functions,
         "EC keys, private halves held by aziot-keyd"},
        {"RSA:rsaEncryption:1.2.840.113549.1.1.1", PROPERTIES, aziot_rsa_keymgmt_functions,
         "RSA keys, private halves held by aziot-keyd"},
        {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM signatures[] = {
        {"ECDSA", PROPERTIES, aziot_ecdsa_signature_functions, "ECDSA through aziot-keyd"},
        {"RSA:rsaEncryption:1.2.840.113549.1.1.1", PROPERTIES, aziot_rsa_signature_functions,
         "RSA signatures (PKCS#1 v1.5, PSS) through aziot-keyd"},
        {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM stores[] = {
        {AZIOT_KEY_URI_SCHEME, PROPERTIES, aziot_store_functions,
         "aziot-key:pair/<key pair id> and aziot-key:handle/<key handle>"},
        {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM *provider_query_operation(void *provctx, int operation_id,
                                                      int *no_store)
{
        *no_store = 0;
        switch (operation_id) {
        case OSSL_OP_KEYMGMT:
                return keymgmts;
        case OSSL_OP_SIGNATURE:
                return signatures;
        case OSSL_OP_STORE:
                return stores;
        default:
                return NULL;
        }
}

static const OSSL_PARAM *provider_gettable_params(void *provctx)
{
        static const OSSL_PARAM gettable[] = {
                OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, NULL, 0),
                OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_VERSION, NULL, 0),
                OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_BUILDINFO, NULL, 0),
                OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, NULL),
                OSSL_PARAM_END,
        };

        return gettable;
}

static int provider_get_params(void *provctx, OSSL_PARAM params[])
{
        OSSL_PARAM *p;

        p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
        if (p && !OSSL_PARAM_set_utf8_ptr(p, "aziot: private keys held by aziot-keyd"))
                return 0;
        p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION);
        if (p && !OSSL_PARAM_set_utf8_ptr(p, PACKAGE_VERSION))
                return 0;
        p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO);
        if (p && !OSSL_PARAM_set_utf8_ptr(p, "aziot-dbus " PACKAGE_VERSION))
                return 0;
        p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
        if (p && !OSSL_PARAM_set_int(p, 1))
                return 0;
        return 1;
}

static const OSSL_ITEM *provider_get_reason_strings(void *provctx)
{
        static OSSL_ITEM reasons[AZIOT_KEY_R_INTERNAL + 1];

        /* Filled on every call with the same values: no race can leave it half written. */
        for (int i = AZIOT_KEY_R_KEYD_UNREACHABLE; i <= AZIOT_KEY_R_INTERNAL; i++)
                reasons[i - 1] = (OSSL_ITEM){(unsigned)i, (void *)aziot_key_reason_to_string(i)};
        reasons[AZIOT_KEY_R_INTERNAL] = (OSSL_ITEM){0, NULL};
        return reasons;
}

typedef struct CapabilityFilter {
        OSSL_CALLBACK *cb;
        void *arg;
} CapabilityFilter;

static int forward_ec_group(const OSSL_PARAM params[], void *arg)
{
        const CapabilityFilter *filter = arg;
        const OSSL_PARAM *p = OSSL_PARAM_locate_const(params, OSSL_CAPABILITY_TLS_GROUP_ALG);
        const char *algorithm = NULL;

        if (!p || !OSSL_PARAM_get_utf8_string_ptr(p, &algorithm) || !streq(algorithm, "EC"))
                return 1;
        return filter->cb(params, filter->arg);
}

/* libssl uses a TLS group only when the key management that a fetch of its algorithm returns
 * comes from the provider that announced the group. That fetch of "EC" may return ours: so the
 * default provider's EC groups are announced here too, or TLS would lose P-256, P-384 and P-521
 * (and with them ECDSA server certificates in TLS 1.2) in any process that loads this provider. */
static int provider_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb,
                                     void *arg)
{
        AziotProvider *prov = provctx;
        CapabilityFilter filter = {cb, arg};

        if (!streq(capability, "TLS-GROUP"))
                return 0;
        return OSSL_PROVIDER_get_capabilities(prov->default_provider, capability, forward_ec_group,
                                              &filter);
}

static void provider_teardown(void *provctx)
{
        AziotProvider *prov = provctx;

        if (!prov)
                return;
        keyd_client_free(prov->keyd);
        for (int t = 0; t < _AZIOT_KEY_TYPE_MAX; t++) {
                EVP_KEYMGMT_free(prov->keymgmt[t]);
                EVP_SIGNATURE_free(prov->signature[t]);
        }
        OSSL_PROVIDER_unload(prov->default_provider);
        OSSL_LIB_CTX_free(prov->libctx);
        free(prov);
}

static const OSSL_DISPATCH provider_functions[] = {
        {OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))provider_teardown},
        {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))provider_gettable_params},
        {OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))provider_get_params},
        {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))provider_query_operation},
        {OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))provider_get_reason_strings},
        {OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))provider_get_capabilities},
        {0, NULL},
};

/* The default provider's parameter lists that our keymgmt hands on as its own. */
static int load_parameter_lists(AziotProvider *prov)
{
        static const char *const signature_names[_AZIOT_KEY_TYPE_MAX] = {
                [AZIOT_KEY_EC] = "ECDSA",
                [AZIOT_KEY_RSA] = "RSA",
        };

        for (int t = 0; t < _AZIOT_KEY_TYPE_MAX; t++) {
                _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *gen = NULL, *import = NULL;
                const char *name = aziot_key_type_name(t);

                prov->keymgmt[t] = EVP_KEYMGMT_fetch(prov->libctx, name, NULL);
                prov->signature[t] = EVP_SIGNATURE_fetch(prov->libctx, signature_names[t], NULL);
                gen = EVP_PKEY_CTX_new_from_name(prov->libctx, name, NULL);
                import = EVP_PKEY_CTX_new_from_name(prov->libctx, name, NULL);
                if (!prov->keymgmt[t] || !prov->signature[t] || !gen || !import ||
                    EVP_PKEY_keygen_init(gen) <= 0)
                        return 0;
                prov->gen_settable[t] = EVP_PKEY_CTX_settable_params(gen);
                if (!aziot_import_types[t])
                        aziot_import_types[t] =
                                EVP_PKEY_fromdata_settable(import, EVP_PKEY_KEYPAIR);
        }
        return 1;
}

/* The module's one exported symbol. */
__attribute__((visibility("default"))) int OSSL_provider_init(const OSSL_CORE_HANDLE *handle,
                                                              const OSSL_DISPATCH *in,
                                                              const OSSL_DISPATCH **out,
                                                              void **provctx);

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
{
        AziotProvider *prov = calloc(1, sizeof(*prov));

        if (!prov)
                return 0;
        prov->core = handle;
        for (; in && in->function_id != 0; in++)
                switch (in->function_id) {
                case OSSL_FUNC_CORE_NEW_ERROR:
                        prov->core_new_error = OSSL_FUNC_core_new_error(in);
                        break;
                case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
                        prov->core_set_error_debug = OSSL_FUNC_core_set_error_debug(in);
                        break;
                case OSSL_FUNC_CORE_VSET_ERROR:
                        prov->core_vset_error = OSSL_FUNC_core_vset_error(in);
                        break;
                default:
                        break;
                }

        /* A library context of our own with the default provider only: the public halves of keyd
         * keys and the ordinary keys live there, whatever the application loaded. */
        prov->libctx = OSSL_LIB_CTX_new();
        if (prov->libctx)
                prov->default_provider = OSSL_PROVIDER_load(prov->libctx, "default");
        if (!prov->default_provider || !load_parameter_lists(prov) ||
            keyd_client_new(&prov->keyd) < 0) {
                provider_teardown(prov);
                return 0;
        }

        *out = provider_functions;
        *provctx = prov;
        return 1;
}
