/* SPDX-License-Identifier: MIT */
/* Key management for EC and RSA keys: keyd keys (a handle plus the public half that keyd reports)
 * and ordinary keys, which are forwarded whole to the default provider (see provider.h for why). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "keyd-client.h"
#include "provider.h"


static void *key_new(AziotProvider *prov, AziotKeyType type)
{
        AziotKey *key = calloc(1, sizeof(*key));

        if (!key) {
                aziot_raise(prov, AZIOT_KEY_R_INTERNAL, "out of memory");
                return NULL;
        }
        key->prov = prov;
        key->type = type;
        return key;
}

void aziot_key_free(AziotKey *key)
{
        if (!key)
                return;
        EVP_PKEY_free(key->pkey);
        if (key->handle)
                erase_and_free(key->handle, strlen(key->handle));
        free(key->name);
        free(key);
}

static void keymgmt_free(void *keydata)
{
        aziot_key_free(keydata);
}

/* The public half of an EC key from keyd's curve OID (DER) and compressed point. */
static EVP_PKEY *ec_public_key(AziotProvider *prov, const AziotKey *key)
{
        _cleanup_free_ uint8_t *oid = NULL, *point = NULL;
        _cleanup_(ASN1_OBJECT_freep) ASN1_OBJECT *obj = NULL;
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        const unsigned char *p;
        size_t oid_len = 0, point_len = 0;
        const char *group;
        EVP_PKEY *pkey = NULL;
        OSSL_PARAM params[3];

        if (!keyd_key_pair_parameter(prov, key->handle, key->name, "ec-curve-oid", &oid,
                                     &oid_len) ||
            !keyd_key_pair_parameter(prov, key->handle, key->name, "ec-point", &point, &point_len))
                return NULL;
        p = oid;
        obj = d2i_ASN1_OBJECT(NULL, &p, (long)oid_len);
        group = obj ? OBJ_nid2sn(OBJ_obj2nid(obj)) : NULL;
        if (!group) {
                aziot_raise(prov, AZIOT_KEY_R_UNSUPPORTED_KEY, "%s: unknown EC curve", key->name);
                return NULL;
        }
        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0);
        params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, point_len);
        params[2] = OSSL_PARAM_construct_end();
        ctx = EVP_PKEY_CTX_new_from_name(prov->libctx, "EC", NULL);
        if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
            EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
                aziot_raise(prov, AZIOT_KEY_R_BAD_REPLY, "%s: keyd's EC public key (%s) is invalid",
                            key->name, group);
                return NULL;
        }
        return pkey;
}

static EVP_PKEY *rsa_public_key(AziotProvider *prov, const AziotKey *key)
{
        _cleanup_free_ uint8_t *n_bytes = NULL, *e_bytes = NULL;
        _cleanup_(BN_freep) BIGNUM *n = NULL, *e = NULL;
        _cleanup_(OSSL_PARAM_BLD_freep) OSSL_PARAM_BLD *bld = NULL;
        _cleanup_(OSSL_PARAM_freep) OSSL_PARAM *params = NULL;
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        size_t n_len = 0, e_len = 0;
        EVP_PKEY *pkey = NULL;

        if (!keyd_key_pair_parameter(prov, key->handle, key->name, "rsa-modulus", &n_bytes,
                                     &n_len) ||
            !keyd_key_pair_parameter(prov, key->handle, key->name, "rsa-exponent", &e_bytes,
                                     &e_len))
                return NULL;
        n = BN_bin2bn(n_bytes, (int)n_len, NULL);
        e = BN_bin2bn(e_bytes, (int)e_len, NULL);
        bld = OSSL_PARAM_BLD_new();
        if (!n || !e || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
            !(params = OSSL_PARAM_BLD_to_param(bld))) {
                aziot_raise(prov, AZIOT_KEY_R_INTERNAL, "out of memory");
                return NULL;
        }
        ctx = EVP_PKEY_CTX_new_from_name(prov->libctx, "RSA", NULL);
        if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
            EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
                aziot_raise(prov, AZIOT_KEY_R_BAD_REPLY, "%s: keyd's RSA public key is invalid",
                            key->name);
                return NULL;
        }
        return pkey;
}

AziotKey *aziot_key_from_keyd(AziotProvider *prov, char *handle, const char *name)
{
        _cleanup_(aziot_key_freep) AziotKey *key = key_new(prov, AZIOT_KEY_EC);
        _cleanup_free_ char *algorithm = NULL;

        if (!key) {
                erase_and_free(handle, strlen(handle));
                return NULL;
        }
        key->handle = handle;
        key->name = strdup(name);
        if (!key->name) {
                aziot_raise(prov, AZIOT_KEY_R_INTERNAL, "out of memory");
                return NULL;
        }
        if (!keyd_key_pair_algorithm(prov, key->handle, key->name, &algorithm))
                return NULL;
        if (streq(algorithm, "ECDSA"))
                key->type = AZIOT_KEY_EC;
        else if (streq(algorithm, "RSA"))
                key->type = AZIOT_KEY_RSA;
        else {
                aziot_raise(prov, AZIOT_KEY_R_UNSUPPORTED_KEY, "%s: algorithm \"%s\"", key->name,
                            algorithm);
                return NULL;
        }
        key->pkey =
                key->type == AZIOT_KEY_EC ? ec_public_key(prov, key) : rsa_public_key(prov, key);
        if (!key->pkey)
                return NULL;
        return TAKE_PTR(key);
}

static void *keymgmt_load(const void *reference, size_t reference_sz)
{
        AziotKey *key;

        if (!reference || reference_sz != sizeof(key))
                return NULL;
        /* The reference is the store's pointer to the key: take the key over, and tell the store
         * so by clearing its pointer. */
        key = *(AziotKey *const *)reference;
        *(AziotKey **)reference = NULL;
        return key;
}

static bool has_param(const EVP_PKEY *pkey, const char *name)
{
        const OSSL_PARAM *gettable = EVP_PKEY_gettable_params(pkey);
        OSSL_PARAM params[2] = {
                OSSL_PARAM_construct_octet_string(name, NULL, 0),
                OSSL_PARAM_construct_end(),
        };

        /* A size query: the parameter is there when the key reports a size for it. */
        if (!OSSL_PARAM_locate_const(gettable, name))
                return false;
        params[0].data_type = OSSL_PARAM_locate_const(gettable, name)->data_type;
        return EVP_PKEY_get_params(pkey, params) && OSSL_PARAM_modified(&params[0]) &&
               params[0].return_size > 0;
}

static int keymgmt_has(const void *keydata, int selection)
{
        const AziotKey *key = keydata;
        bool ec;

        if (!key)
                return 0;
        if ((selection & OSSL_KEYMGMT_SELECT_ALL) == 0)
                return 1;
        if (!key->pkey)
                return 0;
        ec = key->type == AZIOT_KEY_EC;
        /* A keyd key has its private half, in keyd. */
        if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && !aziot_key_in_keyd(key) &&
            !has_param(key->pkey, ec ? OSSL_PKEY_PARAM_PRIV_KEY : OSSL_PKEY_PARAM_RSA_D))
                return 0;
        if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) &&
            !has_param(key->pkey, ec ? OSSL_PKEY_PARAM_PUB_KEY : OSSL_PKEY_PARAM_RSA_N))
                return 0;
        if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) && ec &&
            !has_param(key->pkey, OSSL_PKEY_PARAM_GROUP_NAME))
                return 0;
        return 1;
}

static int keymgmt_match(const void *keydata1, const void *keydata2, int selection)
{
        const AziotKey *a = keydata1, *b = keydata2;

        if (!a || !b || !a->pkey || !b->pkey || a->type != b->type)
                return 0;
        if (selection & OSSL_KEYMGMT_SELECT_KEYPAIR)
                /* The public halves: a keyd key's private half is the one that goes with it. */
                return EVP_PKEY_eq(a->pkey, b->pkey) == 1;
        if (selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS)
                return EVP_PKEY_parameters_eq(a->pkey, b->pkey) == 1;
        return 1;
}

static int keymgmt_import(void *keydata, int selection, const OSSL_PARAM params[])
{
        AziotKey *key = keydata;
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        EVP_PKEY *pkey = NULL;

        if (!key || aziot_key_in_keyd(key))
                return 0;
        ctx = EVP_PKEY_CTX_new_from_name(key->prov->libctx, aziot_key_type_name(key->type), NULL);
        if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
            EVP_PKEY_fromdata(ctx, &pkey, selection, (OSSL_PARAM *)params) <= 0)
                return 0;
        EVP_PKEY_free(key->pkey);
        key->pkey = pkey;
        return 1;
}

static int keymgmt_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
        AziotKey *key = keydata;

        if (!key || !key->pkey)
                return 0;
        /* The private half of a keyd key never leaves keyd. Failing here, without an error, is
         * what tells OpenSSL to use this provider's own operations on the key. */
        if (aziot_key_in_keyd(key) && (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY))
                return 0;
        return EVP_PKEY_export(key->pkey, selection, cb, cbarg);
}

static int keymgmt_get_params(void *keydata, OSSL_PARAM params[])
{
        AziotKey *key = keydata;

        if (!key || !key->pkey)
                return 0;
        return EVP_PKEY_get_params(key->pkey, params);
}

static int keymgmt_set_params(void *keydata, const OSSL_PARAM params[])
{
        AziotKey *key = keydata;

        if (!key || !key->pkey)
                return 0;
        if (aziot_key_in_keyd(key)) {
                if (!params || !params[0].key)
                        return 1;
                aziot_raise(key->prov, AZIOT_KEY_R_NOT_SUPPORTED, "%s: setting \"%s\"", key->name,
                            params[0].key);
                return 0;
        }
        return EVP_PKEY_set_params(key->pkey, (OSSL_PARAM *)params);
}

static int keymgmt_validate(const void *keydata, int selection, int checktype)
{
        const AziotKey *key = keydata;
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;

        if (!key || !key->pkey)
                return 0;
        ctx = EVP_PKEY_CTX_new_from_pkey(key->prov->libctx, key->pkey, NULL);
        if (!ctx)
                return 0;
        /* keyd checked its private half when it made or imported the key. */
        if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && !aziot_key_in_keyd(key))
                return (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY)
                               ? EVP_PKEY_check(ctx) == 1
                               : EVP_PKEY_private_check(ctx) == 1;
        if (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY)
                return EVP_PKEY_public_check(ctx) == 1;
        if (selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS)
                return EVP_PKEY_param_check(ctx) == 1;
        return 1;
}

static void *keymgmt_dup(const void *keydata, int selection)
{
        const AziotKey *key = keydata;
        _cleanup_(aziot_key_freep) AziotKey *copy = NULL;

        if (!key)
                return NULL;
        copy = key_new(key->prov, key->type);
        if (!copy)
                return NULL;
        if (aziot_key_in_keyd(key)) {
                /* keyd keys never change: the copy shares the public half. */
                copy->handle = strdup(key->handle);
                copy->name = strdup(key->name);
                if (!copy->handle || !copy->name || !EVP_PKEY_up_ref(key->pkey))
                        return NULL;
                copy->pkey = key->pkey;
        } else if (key->pkey) {
                copy->pkey = EVP_PKEY_dup(key->pkey);
                if (!copy->pkey)
                        return NULL;
        }
        return TAKE_PTR(copy);
}

/* Key generation, for ordinary keys (ECDHE shares, keys an application makes): done by the default
 * provider with the parameters collected here, in the order they came. */
#define GEN_PARAMS_MAX 8

typedef struct GenCtx {
        AziotProvider *prov;
        AziotKeyType type;
        int selection;
        EVP_PKEY *template;
        OSSL_PARAM *params[GEN_PARAMS_MAX];
        size_t n_params;
} GenCtx;

static void keymgmt_gen_cleanup(void *genctx)
{
        GenCtx *gen = genctx;

        if (!gen)
                return;
        EVP_PKEY_free(gen->template);
        for (size_t i = 0; i < gen->n_params; i++)
                OSSL_PARAM_free(gen->params[i]);
        free(gen);
}

static int keymgmt_gen_set_params(void *genctx, const OSSL_PARAM params[])
{
        GenCtx *gen = genctx;

        if (!params || !params[0].key)
                return 1;
        if (gen->n_params >= GEN_PARAMS_MAX)
                return 0;
        gen->params[gen->n_params] = OSSL_PARAM_dup(params);
        if (!gen->params[gen->n_params])
                return 0;
        gen->n_params++;
        return 1;
}

static void *gen_init(AziotProvider *prov, AziotKeyType type, int selection,
                      const OSSL_PARAM params[])
{
        GenCtx *gen = calloc(1, sizeof(*gen));

        if (!gen)
                return NULL;
        gen->prov = prov;
        gen->type = type;
        gen->selection = selection;
        if (!keymgmt_gen_set_params(gen, params)) {
                keymgmt_gen_cleanup(gen);
                return NULL;
        }
        return gen;
}

static int keymgmt_gen_set_template(void *genctx, void *templ)
{
        GenCtx *gen = genctx;
        AziotKey *key = templ;

        if (!key || !key->pkey || key->type != gen->type || !EVP_PKEY_up_ref(key->pkey))
                return 0;
        EVP_PKEY_free(gen->template);
        gen->template = key->pkey;
        return 1;
}

static void *keymgmt_gen(void *genctx, OSSL_CALLBACK *cb, void *cbarg)
{
        GenCtx *gen = genctx;
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        _cleanup_(aziot_key_freep) AziotKey *key = NULL;
        bool keypair = gen->selection & OSSL_KEYMGMT_SELECT_KEYPAIR;

        ctx = gen->template ? EVP_PKEY_CTX_new_from_pkey(gen->prov->libctx, gen->template, NULL)
                            : EVP_PKEY_CTX_new_from_name(gen->prov->libctx,
                                                         aziot_key_type_name(gen->type), NULL);
        if (!ctx || (keypair ? EVP_PKEY_keygen_init(ctx) : EVP_PKEY_paramgen_init(ctx)) <= 0)
                return NULL;
        for (size_t i = 0; i < gen->n_params; i++)
                if (EVP_PKEY_CTX_set_params(ctx, gen->params[i]) <= 0)
                        return NULL;
        key = key_new(gen->prov, gen->type);
        if (!key || EVP_PKEY_generate(ctx, &key->pkey) <= 0)
                return NULL;
        return TAKE_PTR(key);
}

static const char *ec_query_operation_name(int operation_id)
{
        return operation_id == OSSL_OP_KEYEXCH ? "ECDH" : "ECDSA";
}

static const char *rsa_query_operation_name(int operation_id)
{
        return "RSA";
}

/* The entry points that depend on the key type, one pair each. */
#define DEFINE_TYPED_KEYMGMT(prefix, type)                                                         \
        static void *prefix##_new(void *provctx)                                                   \
        {                                                                                          \
                return key_new(provctx, type);                                                     \
        }                                                                                          \
        static void *prefix##_gen_init(void *provctx, int selection, const OSSL_PARAM params[])    \
        {                                                                                          \
                return gen_init(provctx, type, selection, params);                                 \
        }                                                                                          \
        static const OSSL_PARAM *prefix##_gen_settable_params(void *genctx, void *provctx)         \
        {                                                                                          \
                return ((AziotProvider *)provctx)->gen_settable[type];                             \
        }                                                                                          \
        static const OSSL_PARAM *prefix##_gettable_params(void *provctx)                           \
        {                                                                                          \
                return EVP_KEYMGMT_gettable_params(((AziotProvider *)provctx)->keymgmt[type]);     \
        }                                                                                          \
        static const OSSL_PARAM *prefix##_settable_params(void *provctx)                           \
        {                                                                                          \
                return EVP_KEYMGMT_settable_params(((AziotProvider *)provctx)->keymgmt[type]);     \
        }                                                                                          \
        static const OSSL_PARAM *prefix##_eximport_types(int selection)                            \
        {                                                                                          \
                return aziot_import_types[type];                                                   \
        }                                                                                          \
        const OSSL_DISPATCH aziot_##prefix##_keymgmt_functions[] = {                               \
                {OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))prefix##_new},                             \
                {OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))keymgmt_free},                            \
                {OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))keymgmt_load},                            \
                {OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))keymgmt_has},                              \
                {OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))keymgmt_match},                          \
                {OSSL_FUNC_KEYMGMT_VALIDATE, (void (*)(void))keymgmt_validate},                    \
                {OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))keymgmt_import},                        \
                {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))prefix##_eximport_types},         \
                {OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))keymgmt_export},                        \
                {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))prefix##_eximport_types},         \
                {OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))keymgmt_get_params},                \
                {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))prefix##_gettable_params},     \
                {OSSL_FUNC_KEYMGMT_SET_PARAMS, (void (*)(void))keymgmt_set_params},                \
                {OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS, (void (*)(void))prefix##_settable_params},     \
                {OSSL_FUNC_KEYMGMT_DUP, (void (*)(void))keymgmt_dup},                              \
                {OSSL_FUNC_KEYMGMT_GEN_INIT, (void (*)(void))prefix##_gen_init},                   \
                {OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE, (void (*)(void))keymgmt_gen_set_template},    \
                {OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS, (void (*)(void))keymgmt_gen_set_params},        \
                {OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS,                                            \
                 (void (*)(void))prefix##_gen_settable_params},                                    \
                {OSSL_FUNC_KEYMGMT_GEN, (void (*)(void))keymgmt_gen},                              \
                {OSSL_FUNC_KEYMGMT_GEN_CLEANUP, (void (*)(void))keymgmt_gen_cleanup},              \
                {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME,                                           \
                 (void (*)(void))prefix##_query_operation_name},                                   \
                {0, NULL},                                                                         \
        }

/* import_types/export_types get no provider context: the lists are set when the provider starts
 * (the default provider's own, which live as long as the process). */
const OSSL_PARAM *aziot_import_types[_AZIOT_KEY_TYPE_MAX];

DEFINE_TYPED_KEYMGMT(ec, AZIOT_KEY_EC);
DEFINE_TYPED_KEYMGMT(rsa, AZIOT_KEY_RSA);
