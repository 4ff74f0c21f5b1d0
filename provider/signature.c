/* SPDX-License-Identifier: MIT */
/* Signatures: ECDSA and RSA (PKCS#1 v1.5, PSS, no padding).
 *
 * Every operation has a shadow: the same operation set up in the default provider (in the
 * provider's library context) on the key's EVP_PKEY. The shadow takes and answers every context
 * parameter (digest, padding, salt length, the AlgorithmIdentifier that X509_sign() asks for), so
 * those behave exactly as OpenSSL's own; it verifies, and it signs with ordinary keys. Only signing
 * with a keyd key is done here: the digest is computed in this process, encoded as the padding
 * asks, and sent to keyd (Sign "ECDSA" with the digest; Encrypt "RSA-PKCS1" with the DigestInfo;
 * Encrypt "RSA-NO-PADDING" with the EMSA-PSS encoding). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/rsa.h>

#include "keyd-client.h"
#include "provider.h"
#include "rsa-padding.h"

typedef struct SigCtx {
        AziotProvider *prov;
        AziotKeyType type;     /* ECDSA takes EC keys, RSA RSA keys */
        AziotKey *key;         /* kept alive by the EVP_PKEY_CTX that uses this context */
        int operation;         /* EVP_PKEY_OP_SIGN or EVP_PKEY_OP_VERIFY */
        bool digest_op;        /* EVP_DigestSign*() / EVP_DigestVerify*() */
        EVP_MD_CTX *shadow_md; /* digest operations: the shadow, owning shadow */
        EVP_PKEY_CTX *shadow;
        EVP_MD_CTX *hash; /* digest-signing with a keyd key: the digest, computed here */
} SigCtx;

static void sig_reset(SigCtx *ctx)
{
        if (ctx->shadow_md)
                EVP_MD_CTX_free(ctx->shadow_md); /* frees its EVP_PKEY_CTX too */
        else
                EVP_PKEY_CTX_free(ctx->shadow);
        EVP_MD_CTX_free(ctx->hash);
        ctx->shadow_md = NULL;
        ctx->shadow = NULL;
        ctx->hash = NULL;
}

static void sig_freectx(void *vctx)
{
        SigCtx *ctx = vctx;

        if (!ctx)
                return;
        sig_reset(ctx);
        free(ctx);
}

static void *sig_newctx(AziotProvider *prov, AziotKeyType type)
{
        SigCtx *ctx = calloc(1, sizeof(*ctx));

        if (!ctx) {
                aziot_raise(prov, AZIOT_KEY_R_INTERNAL, "out of memory");
                return NULL;
        }
        ctx->prov = prov;
        ctx->type = type;
        return ctx;
}

static void *ecdsa_newctx(void *provctx, const char *propq)
{
        return sig_newctx(provctx, AZIOT_KEY_EC);
}

static void *rsa_newctx(void *provctx, const char *propq)
{
        return sig_newctx(provctx, AZIOT_KEY_RSA);
}

static void *sig_dupctx(void *vctx)
{
        const SigCtx *src = vctx;
        SigCtx *dst = calloc(1, sizeof(*dst));

        if (!dst)
                return NULL;
        *dst = (SigCtx){
                .prov = src->prov,
                .type = src->type,
                .key = src->key,
                .operation = src->operation,
                .digest_op = src->digest_op,
        };
        if (src->shadow_md) {
                dst->shadow_md = EVP_MD_CTX_new();
                if (!dst->shadow_md || !EVP_MD_CTX_copy_ex(dst->shadow_md, src->shadow_md)) {
                        sig_freectx(dst);
                        return NULL;
                }
                dst->shadow = EVP_MD_CTX_get_pkey_ctx(dst->shadow_md);
        } else if (src->shadow) {
                dst->shadow = EVP_PKEY_CTX_dup(src->shadow);
                if (!dst->shadow) {
                        sig_freectx(dst);
                        return NULL;
                }
        }
        if (src->hash) {
                dst->hash = EVP_MD_CTX_new();
                if (!dst->hash || !EVP_MD_CTX_copy_ex(dst->hash, src->hash)) {
                        sig_freectx(dst);
                        return NULL;
                }
        }
        return dst;
}

/* Signing with a keyd key: this provider's own work; everything else is the shadow's. */
static bool signs_in_keyd(const SigCtx *ctx)
{
        return ctx->operation == EVP_PKEY_OP_SIGN && aziot_key_in_keyd(ctx->key);
}

/* The shadow's digest name ("" when none is set). */
static void shadow_digest_name(const SigCtx *ctx, const char *param, char *buf, size_t size)
{
        OSSL_PARAM params[2] = {
                OSSL_PARAM_construct_utf8_string(param, buf, size),
                OSSL_PARAM_construct_end(),
        };

        buf[0] = '\0';
        if (!EVP_PKEY_CTX_get_params(ctx->shadow, params) || !OSSL_PARAM_modified(&params[0]))
                buf[0] = '\0';
}

static int sig_init(SigCtx *ctx, void *keydata, int operation, bool digest_op, const char *mdname,
                    const OSSL_PARAM params[])
{
        AziotKey *key = keydata ?: ctx->key;
        int r;

        if (!key || !key->pkey || key->type != ctx->type) {
                aziot_raise(ctx->prov, AZIOT_KEY_R_UNSUPPORTED_KEY, "%s key for a %s signature",
                            key ? aziot_key_type_name(key->type) : "no",
                            ctx->type == AZIOT_KEY_EC ? "ECDSA" : "RSA");
                return 0;
        }
        sig_reset(ctx);
        ctx->key = key;
        ctx->operation = operation;
        ctx->digest_op = digest_op;

        if (digest_op) {
                ctx->shadow_md = EVP_MD_CTX_new();
                if (!ctx->shadow_md)
                        return 0;
                r = operation == EVP_PKEY_OP_SIGN
                            ? EVP_DigestSignInit_ex(ctx->shadow_md, &ctx->shadow, mdname,
                                                    ctx->prov->libctx, NULL, key->pkey, params)
                            : EVP_DigestVerifyInit_ex(ctx->shadow_md, &ctx->shadow, mdname,
                                                      ctx->prov->libctx, NULL, key->pkey, params);
        } else {
                ctx->shadow = EVP_PKEY_CTX_new_from_pkey(ctx->prov->libctx, key->pkey, NULL);
                if (!ctx->shadow)
                        return 0;
                r = operation == EVP_PKEY_OP_SIGN ? EVP_PKEY_sign_init_ex(ctx->shadow, params)
                                                  : EVP_PKEY_verify_init_ex(ctx->shadow, params);
        }
        if (r <= 0)
                return 0;

        if (digest_op && signs_in_keyd(ctx)) {
                _cleanup_(EVP_MD_freep) EVP_MD *md = NULL;
                char name[64];

                if (!mdname) {
                        shadow_digest_name(ctx, OSSL_SIGNATURE_PARAM_DIGEST, name, sizeof(name));
                        mdname = name;
                }
                md = EVP_MD_fetch(ctx->prov->libctx, mdname, NULL);
                ctx->hash = EVP_MD_CTX_new();
                if (!md || !ctx->hash || !EVP_DigestInit_ex2(ctx->hash, md, NULL)) {
                        aziot_raise(ctx->prov, AZIOT_KEY_R_NOT_SUPPORTED, "%s: digest \"%s\"",
                                    key->name, mdname);
                        return 0;
                }
        }
        return 1;
}

static int sig_sign_init(void *vctx, void *keydata, const OSSL_PARAM params[])
{
        return sig_init(vctx, keydata, EVP_PKEY_OP_SIGN, false, NULL, params);
}

static int sig_verify_init(void *vctx, void *keydata, const OSSL_PARAM params[])
{
        return sig_init(vctx, keydata, EVP_PKEY_OP_VERIFY, false, NULL, params);
}

static int sig_digest_sign_init(void *vctx, const char *mdname, void *keydata,
                                const OSSL_PARAM params[])
{
        return sig_init(vctx, keydata, EVP_PKEY_OP_SIGN, true, mdname, params);
}

static int sig_digest_verify_init(void *vctx, const char *mdname, void *keydata,
                                  const OSSL_PARAM params[])
{
        return sig_init(vctx, keydata, EVP_PKEY_OP_VERIFY, true, mdname, params);
}

static int shadow_int(const SigCtx *ctx, const char *name, int fallback)
{
        int value = fallback;
        OSSL_PARAM params[2] = {
                OSSL_PARAM_construct_int(name, &value),
                OSSL_PARAM_construct_end(),
        };

        if (!EVP_PKEY_CTX_get_params(ctx->shadow, params) || !OSSL_PARAM_modified(&params[0]))
                return fallback;
        return value;
}

static EVP_MD *fetch_digest(const SigCtx *ctx, const char *name)
{
        return isempty(name) ? NULL : EVP_MD_fetch(ctx->prov->libctx, name, NULL);
}

/* The input of keyd's RSA private-key operation for a signature of digest (or of raw data when
 * md is NULL), as the shadow's padding mode says; and the keyd algorithm for it. */
static int rsa_keyd_input(SigCtx *ctx, const EVP_MD *md, const uint8_t *tbs, size_t tbslen,
                          uint8_t **ret, size_t *ret_len, const char **ret_algorithm)
{
        AziotKey *key = ctx->key;
        int pad = shadow_int(ctx, OSSL_SIGNATURE_PARAM_PAD_MODE, RSA_PKCS1_PADDING);
        size_t k = (size_t)EVP_PKEY_get_size(key->pkey);
        uint8_t *out = NULL;
        int r;

        switch (pad) {
        case RSA_PKCS1_PADDING:
                *ret_algorithm = "RSA-PKCS1";
                if (md && !EVP_MD_is_a(md, "MD5-SHA1")) {
                        r = rsa_digest_info(md, tbs, tbslen, ret, ret_len);
                        if (r < 0) {
                                aziot_raise(ctx->prov, AZIOT_KEY_R_NOT_SUPPORTED,
                                            "%s: PKCS#1 v1.5 with digest %s of %zu bytes",
                                            key->name, EVP_MD_get0_name(md), tbslen);
                                return 0;
                        }
                        return 1;
                }
                break; /* the caller formatted the data */
        case RSA_PKCS1_PSS_PADDING: {
                _cleanup_(EVP_MD_freep) EVP_MD *mgf1 = NULL;
                char mgf1_name[64];

                *ret_algorithm = "RSA-NO-PADDING";
                shadow_digest_name(ctx, OSSL_SIGNATURE_PARAM_MGF1_DIGEST, mgf1_name,
                                   sizeof(mgf1_name));
                mgf1 = fetch_digest(ctx, mgf1_name);
                out = malloc(k);
                if (!md || tbslen != (size_t)EVP_MD_get_size(md) || !out) {
                        free(out);
                        aziot_raise(ctx->prov, AZIOT_KEY_R_NOT_SUPPORTED, "%s: PSS needs a digest",
                                    key->name);
                        return 0;
                }
                r = rsa_emsa_pss_encode(
                        ctx->prov->libctx, out, k, EVP_PKEY_get_bits(key->pkey), md, mgf1 ?: md,
                        tbs,
                        shadow_int(ctx, OSSL_SIGNATURE_PARAM_PSS_SALTLEN, RSA_PSS_SALTLEN_AUTO));
                if (r < 0) {
                        free(out);
                        aziot_raise(ctx->prov, AZIOT_KEY_R_NOT_SUPPORTED,
                                    "%s: PSS encoding with these lengths", key->name);
                        return 0;
                }
                *ret = out;
                *ret_len = k;
                return 1;
        }
        case RSA_NO_PADDING:
                *ret_algorithm = "RSA-NO-PADDING";
                if (tbslen != k) {
                        aziot_raise(ctx->prov, AZIOT_KEY_R_NOT_SUPPORTED,
                                    "%s: unpadded input of %zu bytes for a %zu-byte modulus",
                                    key->name, tbslen, k);
                        return 0;
                }
                break;
        default:
                aziot_raise(ctx->prov, AZIOT_KEY_R_NOT_SUPPORTED, "%s: RSA padding mode %d",
                            key->name, pad);
                return 0;
        }
        out = malloc(tbslen ? tbslen : 1);
        if (!out)
                return 0;
        memcpy(out, tbs, tbslen);
        *ret = out;
        *ret_len = tbslen;
        return 1;
}

/* Signs digest (tbs) with the keyd key; md is the digest algorithm, when known. */
static int sign_in_keyd(SigCtx *ctx, const EVP_MD *md, unsigned char *sig, size_t *siglen,
                        size_t sigsize, const uint8_t *tbs, size_t tbslen)
{
        AziotKey *key = ctx->key;
        _cleanup_free_ uint8_t *input = NULL, *out = NULL;
        size_t max = (size_t)EVP_PKEY_get_size(key->pkey), input_len = 0, out_len = 0;
        const char *algorithm = "ECDSA";
        bool rsa = key->type == AZIOT_KEY_RSA;

        if (!sig) {
                *siglen = max;
                return 1;
        }
        if (rsa && !rsa_keyd_input(ctx, md, tbs, tbslen, &input, &input_len, &algorithm))
                return 0;
        if (!keyd_private_operation(ctx->prov, key->handle, key->name, /* sign= */ !rsa, algorithm,
                                    rsa ? input : tbs, rsa ? input_len : tbslen, &out, &out_len))
                return 0;
        if (out_len > sigsize || (rsa && out_len != max)) {
                aziot_raise(ctx->prov, AZIOT_KEY_R_BAD_REPLY,
                            "%s: a signature of %zu bytes from keyd (expected %s%zu)", key->name,
                            out_len, rsa ? "" : "at most ", rsa ? max : sigsize);
                return 0;
        }
        memcpy(sig, out, out_len);
        *siglen = out_len;
        return 1;
}

static int sig_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                    const unsigned char *tbs, size_t tbslen)
{
        SigCtx *ctx = vctx;

        if (signs_in_keyd(ctx)) {
                _cleanup_(EVP_MD_freep) EVP_MD *md = NULL;
                char mdname[64];

                shadow_digest_name(ctx, OSSL_SIGNATURE_PARAM_DIGEST, mdname, sizeof(mdname));
                md = fetch_digest(ctx, mdname);
                return sign_in_keyd(ctx, md, sig, siglen, sigsize, tbs, tbslen);
        }
        *siglen = sigsize;
        return EVP_PKEY_sign(ctx->shadow, sig, siglen, tbs, tbslen) > 0;
}

static int sig_verify(void *vctx, const unsigned char *sig, size_t siglen, const unsigned char *tbs,
                      size_t tbslen)
{
        SigCtx *ctx = vctx;

        return EVP_PKEY_verify(ctx->shadow, sig, siglen, tbs, tbslen) == 1;
}

static int sig_digest_sign_update(void *vctx, const unsigned char *data, size_t len)
{
        SigCtx *ctx = vctx;

        if (ctx->hash)
                return EVP_DigestUpdate(ctx->hash, data, len);
        return EVP_DigestSignUpdate(ctx->shadow_md, data, len);
}

static int sig_digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
        SigCtx *ctx = vctx;
        uint8_t digest[EVP_MAX_MD_SIZE];
        unsigned digest_len = 0;

        if (!ctx->hash) {
                *siglen = sigsize;
                return EVP_DigestSignFinal(ctx->shadow_md, sig, siglen);
        }
        /* A size query must leave the digest as it is: more data may follow. */
        if (sig && !EVP_DigestFinal_ex(ctx->hash, digest, &digest_len))
                return 0;
        return sign_in_keyd(ctx, EVP_MD_CTX_get0_md(ctx->hash), sig, siglen, sigsize, digest,
                            digest_len);
}

static int sig_digest_verify_update(void *vctx, const unsigned char *data, size_t len)
{
        SigCtx *ctx = vctx;

        return EVP_DigestVerifyUpdate(ctx->shadow_md, data, len);
}

static int sig_digest_verify_final(void *vctx, const unsigned char *sig, size_t siglen)
{
        SigCtx *ctx = vctx;

        return EVP_DigestVerifyFinal(ctx->shadow_md, sig, siglen) == 1;
}

static int sig_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
        SigCtx *ctx = vctx;

        return ctx->shadow && EVP_PKEY_CTX_get_params(ctx->shadow, params);
}

static int sig_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
        SigCtx *ctx = vctx;

        if (!params || !params[0].key)
                return 1;
        return ctx->shadow && EVP_PKEY_CTX_set_params(ctx->shadow, (OSSL_PARAM *)params);
}

static const OSSL_PARAM *ecdsa_gettable_ctx_params(void *vctx, void *provctx)
{
        return EVP_SIGNATURE_gettable_ctx_params(
                ((AziotProvider *)provctx)->signature[AZIOT_KEY_EC]);
}

static const OSSL_PARAM *ecdsa_settable_ctx_params(void *vctx, void *provctx)
{
        return EVP_SIGNATURE_settable_ctx_params(
                ((AziotProvider *)provctx)->signature[AZIOT_KEY_EC]);
}

static const OSSL_PARAM *rsa_gettable_ctx_params(void *vctx, void *provctx)
{
        return EVP_SIGNATURE_gettable_ctx_params(
                ((AziotProvider *)provctx)->signature[AZIOT_KEY_RSA]);
}

static const OSSL_PARAM *rsa_settable_ctx_params(void *vctx, void *provctx)
{
        return EVP_SIGNATURE_settable_ctx_params(
                ((AziotProvider *)provctx)->signature[AZIOT_KEY_RSA]);
}

#define SIGNATURE_COMMON_FUNCTIONS                                                                 \
        {OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))sig_freectx},                                \
                {OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))sig_dupctx},                          \
                {OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void))sig_sign_init},                    \
                {OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void))sig_sign},                              \
                {OSSL_FUNC_SIGNATURE_VERIFY_INIT, (void (*)(void))sig_verify_init},                \
                {OSSL_FUNC_SIGNATURE_VERIFY, (void (*)(void))sig_verify},                          \
                {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))sig_digest_sign_init},      \
                {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))sig_digest_sign_update},  \
                {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))sig_digest_sign_final},    \
                {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))sig_digest_verify_init},  \
                {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE,                                         \
                 (void (*)(void))sig_digest_verify_update},                                        \
                {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL,                                          \
                 (void (*)(void))sig_digest_verify_final},                                         \
                {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))sig_get_ctx_params},          \
        {                                                                                          \
                OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))sig_set_ctx_params             \
        }

const OSSL_DISPATCH aziot_ecdsa_signature_functions[] = {
        {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))ecdsa_newctx},
        SIGNATURE_COMMON_FUNCTIONS,
        {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))ecdsa_gettable_ctx_params},
        {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))ecdsa_settable_ctx_params},
        {0, NULL},
};

const OSSL_DISPATCH aziot_rsa_signature_functions[] = {
        {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))rsa_newctx},
        SIGNATURE_COMMON_FUNCTIONS,
        {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))rsa_gettable_ctx_params},
        {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))rsa_settable_ctx_params},
        {0, NULL},
};
