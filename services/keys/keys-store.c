/* SPDX-License-Identifier: MIT */
#include <openssl/crypto.h>

#include "keys-crypto.h"
#include "keys-fs.h"
#include "keys-pkcs11.h"
#include "keys-store.h"
#include "log.h"
#include "macro.h"

#define ID_MAX 4096u

typedef struct PreloadedToken {
        struct PreloadedToken *next;
        char *id;
        Pkcs11Uri *uri;
} PreloadedToken;

/* An id preloaded at a file:// location: the filesystem backend serves it, and only it. */
typedef struct PreloadedFile {
        struct PreloadedFile *next;
        char *id;
} PreloadedFile;

static struct {
        Pkcs11Uri *base_slot;
        bool base_slot_invalid; /* configured, but not a valid URI: new keys cannot be made */
        PreloadedToken *preloaded;
        PreloadedFile *preloaded_files;
} store;

/* Where on a token an id may be. */
typedef struct TokenLocation {
        const Pkcs11Uri *slot;
        const char *label;
        bool only; /* preloaded there: the filesystem is not a location of this id */
} TokenLocation;

static const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *fs(void)
{
        return keys_fs_function_list();
}

static const PreloadedToken *preloaded_find(const char *id)
{
        for (const PreloadedToken *p = store.preloaded; p; p = p->next)
                if (streq(p->id, id))
                        return p;
        return NULL;
}

/* 1 with *ret set when the id may be on a token, 0 when only on the filesystem. */
static int token_location(const char *id, TokenLocation *ret)
{
        const PreloadedToken *p;

        if (!id || !*id || strlen(id) > ID_MAX)
                return -EINVAL;
        for (const PreloadedFile *f = store.preloaded_files; f; f = f->next)
                if (streq(f->id, id))
                        return 0;
        p = preloaded_find(id);
        if (p) {
                if (!keys_pkcs11_has_library()) {
                        log_error("Key %s is preloaded on a PKCS#11 token, but pkcs11_lib_path is "
                                  "not set.",
                                  KEY_ID(id));
                        return -EINVAL;
                }
                /* An invalid URI (p->uri NULL) is a location where nothing works. */
                *ret = (TokenLocation){
                        .slot = p->uri,
                        .label = p->uri && p->uri->object ? p->uri->object : id,
                        .only = true,
                };
                return 1;
        }
        if ((store.base_slot || store.base_slot_invalid) && keys_pkcs11_has_library()) {
                *ret = (TokenLocation){ .slot = store.base_slot, .label = id };
                return 1;
        }
        return 0;
}

/* The result of an operation tried on the token (r) and then on the filesystem (rc): the
 * filesystem's, unless it does not have the key either and the token failed for another reason
 * than not having it — then the token's failure is the one to report. */
static AZIOT_KEYS_RC token_then_fs(int r, AZIOT_KEYS_RC rc)
{
        if (rc != AZIOT_KEYS_RC_OK && r < 0 && r != -ENOENT)
                return keys_rc_from_errno(r);
        return rc;
}

/* Whether the token's answer r is final: the key was there (or the id lives only there), or the
 * operation failed for a reason that the filesystem cannot change. */
static bool token_final(const TokenLocation *l, int r)
{
        return r >= 0 || l->only || (r != -ENOENT && r != -ENXIO && r != -EACCES && r != -EIO);
}

/* The arguments of one operation, for run(). */
typedef struct Op {
        const char *id;
        unsigned mechanism; /* AZIOT_KEYS_SIGN_MECHANISM or AZIOT_KEYS_ENCRYPT_MECHANISM */
        AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE type;
        const void *parameters;
        const unsigned char *in;
        size_t in_len;
        const unsigned char *sig;
        size_t sig_len;
        unsigned char *out;
        size_t *out_len;
        int *ok;
} Op;

/* An operation on a key that may be on a token: on_token there first (when the id may be there),
 * then on_fs, as the locations of the id say. */
static AZIOT_KEYS_RC run(const Op *op, int (*on_token)(const TokenLocation *l, const Op *op),
                         AZIOT_KEYS_RC (*on_fs)(const Op *op))
{
        TokenLocation l;
        int r;

        r = token_location(op->id, &l);
        if (r < 0)
                return keys_rc_from_errno(r);
        if (r > 0) {
                r = on_token(&l, op);
                if (token_final(&l, r))
                        return keys_rc_from_errno(r);
        }
        return token_then_fs(r, on_fs(op));
}

/* ---- parameters ---- */

/* Drops what id had as a location of the other kind: the last configured location wins. */
static void preloaded_forget(const char *id, bool token, bool file)
{
        for (PreloadedToken **p = &store.preloaded; token && *p; p = &(*p)->next)
                if (streq((*p)->id, id)) {
                        PreloadedToken *t = *p;
                        *p = t->next;
                        free(t->id);
                        pkcs11_uri_free(t->uri);
                        free(t);
                        break;
                }
        for (PreloadedFile **p = &store.preloaded_files; file && *p; p = &(*p)->next)
                if (streq((*p)->id, id)) {
                        PreloadedFile *f = *p;
                        *p = f->next;
                        free(f->id);
                        free(f);
                        break;
                }
}

static int set_base_slot(const char *value)
{
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *u = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        r = pkcs11_uri_parse(value ?: "", &u, &error);
        if (r == -ENOMEM)
                return r;
        pkcs11_uri_free(store.base_slot);
        store.base_slot = TAKE_PTR(u);
        /* Keys in files keep working: the base slot is where new keys cannot be made. */
        store.base_slot_invalid = r < 0;
        if (r < 0)
                log_error("pkcs11_base_slot is not a valid PKCS#11 URI: %s", error);
        return 0;
}

static int set_preloaded_token_key(const char *id, const char *value)
{
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *u = NULL;
        _cleanup_free_ char *error = NULL;
        PreloadedToken *p;
        int r;

        if (!*id || strlen(id) > ID_MAX) {
                log_error("Invalid id of a preloaded key.");
                return -EINVAL;
        }
        r = pkcs11_uri_parse(value, &u, &error);
        if (r == -ENOMEM)
                return r;
        /* The key is then unusable (every operation fails); the others are not affected. */
        if (r < 0)
                log_error("Preloaded key %s: not a valid PKCS#11 URI: %s", KEY_ID(id), error);
        preloaded_forget(id, /* token= */ false, /* file= */ true);
        for (p = store.preloaded; p; p = p->next)
                if (streq(p->id, id))
                        break;
        if (!p) {
                p = calloc(1, sizeof(*p));
                if (!p || !(p->id = strdup(id))) {
                        free(p);
                        return -ENOMEM;
                }
                p->next = store.preloaded;
                store.preloaded = p;
        }
        pkcs11_uri_free(p->uri);
        p->uri = TAKE_PTR(u);
        return 0;
}

static AZIOT_KEYS_RC set_preloaded_file_key(const char *id, const char *name, const char *value)
{
        PreloadedFile *f;
        AZIOT_KEYS_RC rc;

        rc = fs()->set_parameter(name, value);
        if (rc != AZIOT_KEYS_RC_OK)
                return rc;
        preloaded_forget(id, /* token= */ true, /* file= */ true);
        f = calloc(1, sizeof(*f));
        if (!f || !(f->id = strdup(id))) {
                free(f);
                return AZIOT_KEYS_RC_ERR_EXTERNAL;
        }
        f->next = store.preloaded_files;
        store.preloaded_files = f;
        return AZIOT_KEYS_RC_OK;
}

static AZIOT_KEYS_RC store_set_parameter(const char *name, const char *value)
{
        const char *id;
        int r;

        if (!name)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        if (streq(name, "pkcs11_lib_path"))
                r = keys_pkcs11_set_library(value);
        else if (streq(name, "pkcs11_base_slot"))
                r = set_base_slot(value);
        else if ((id = startswith(name, "preloaded_key:")) && value && pkcs11_uri_is(value))
                r = set_preloaded_token_key(id, value);
        else if (id)
                return set_preloaded_file_key(id, name, value);
        else
                return fs()->set_parameter(name, value);
        return keys_rc_from_errno(r);
}

/* ---- key pairs ---- */

static AZIOT_KEYS_RC store_create_key_pair_if_not_exists(const char *id,
                                                         const char *preferred_algorithms)
{
        KeysAlgorithm algs[_KEYS_ALGORITHM_MAX];
        TokenLocation l;
        int r, n;

        r = token_location(id, &l);
        if (r <= 0)
                return r < 0 ? keys_rc_from_errno(r) : fs()->create_key_pair_if_not_exists(
                                                               id, preferred_algorithms);

        r = keys_pkcs11_key_pair_find(l.slot, l.label);
        if (r >= 0)
                return AZIOT_KEYS_RC_OK;
        /* Already in a later location? Then it exists. */
        if (!l.only && fs()->load_key_pair(id) == AZIOT_KEYS_RC_OK)
                return AZIOT_KEYS_RC_OK;
        if (r != -ENOENT)
                return keys_rc_from_errno(r);

        n = keys_preferred_algorithms_parse(preferred_algorithms, algs);
        if (n < 0) {
                log_warning("No supported algorithm in preferred algorithms \"%s\".",
                            strempty(preferred_algorithms));
                return keys_rc_from_errno(n);
        }
        /* Key pairs are created in the first location only. */
        return keys_rc_from_errno(keys_pkcs11_key_pair_create(l.slot, l.label, algs, (size_t)n));
}

static int token_load_key_pair(const TokenLocation *l, const Op *op)
{
        return keys_pkcs11_key_pair_find(l->slot, l->label);
}

static AZIOT_KEYS_RC fs_load_key_pair(const Op *op)
{
        return fs()->load_key_pair(op->id);
}

static AZIOT_KEYS_RC store_load_key_pair(const char *id)
{
        return run(&(Op){ .id = id }, token_load_key_pair, fs_load_key_pair);
}

static int token_get_key_pair_parameter(const TokenLocation *l, const Op *op)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        size_t len = 0;
        int r;

        r = keys_pkcs11_key_pair_public(l->slot, l->label, &pkey);
        if (r >= 0)
                r = keys_pkey_parameter(pkey, op->type, &data, &len);
        if (r >= 0)
                r = keys_output_bytes(op->out, op->out_len, data, len);
        return r;
}

static AZIOT_KEYS_RC fs_get_key_pair_parameter(const Op *op)
{
        return fs()->get_key_pair_parameter(op->id, op->type, op->out, op->out_len);
}

static AZIOT_KEYS_RC store_get_key_pair_parameter(const char *id,
                                                  AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE type,
                                                  unsigned char *value, size_t *value_len)
{
        if (!value_len)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        return run(&(Op){ .id = id, .type = type, .out = value, .out_len = value_len },
                   token_get_key_pair_parameter, fs_get_key_pair_parameter);
}

static AZIOT_KEYS_RC store_move_key_pair(const char *from, const char *to)
{
        TokenLocation lf, lt;
        AZIOT_KEYS_RC rc;
        int r, rt;

        r = token_location(from, &lf);
        rt = token_location(to, &lt);
        if (r < 0 || rt < 0)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        if (r > 0) {
                /* Within the token; a preloaded destination elsewhere is not ours to overwrite. */
                if (rt > 0 && lt.slot != lf.slot) {
                        log_error("Cannot move key pair %s to %s: they are on different tokens.",
                                  KEY_ID(from), KEY_ID(to));
                        return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
                }
                r = keys_pkcs11_key_pair_move(lf.slot, lf.label, rt > 0 ? lt.label : to);
                if (token_final(&lf, r))
                        return keys_rc_from_errno(r);
        }
        rc = token_then_fs(r, fs()->move_key_pair(from, to));
        /* The moved key must not be shadowed by an older one of the same name on the token. */
        if (rc == AZIOT_KEYS_RC_OK && rt > 0 && !lt.only && !streq(from, to))
                (void)keys_pkcs11_key_pair_delete(lt.slot, lt.label);
        return rc;
}

static AZIOT_KEYS_RC store_delete_key_pair(const char *id)
{
        TokenLocation l;
        int r;

        r = token_location(id, &l);
        if (r < 0)
                return keys_rc_from_errno(r);
        if (r > 0) {
                r = keys_pkcs11_key_pair_delete(l.slot, l.label);
                if (l.only || (r < 0 && r != -ENOENT))
                        return keys_rc_from_errno(r == -ENOENT ? 0 : r);
        }
        return fs()->delete_key_pair(id);
}

/* ---- symmetric keys ---- */

static AZIOT_KEYS_RC store_create_key_if_not_exists(const char *id, AZIOT_KEYS_KEY_USAGE usage)
{
        TokenLocation l;
        int r;

        r = token_location(id, &l);
        if (r <= 0)
                return r < 0 ? keys_rc_from_errno(r) : fs()->create_key_if_not_exists(id, usage);

        r = keys_pkcs11_secret_find(l.slot, l.label);
        if (r >= 0)
                return AZIOT_KEYS_RC_OK;
        if (!l.only && fs()->load_key(id) == AZIOT_KEYS_RC_OK)
                return AZIOT_KEYS_RC_OK;
        if (r != -ENOENT)
                return keys_rc_from_errno(r);

        r = keys_pkcs11_secret_create(l.slot, l.label, usage);
        if (r == -EOPNOTSUPP && !l.only)
                /* The token cannot make such keys: the next location, as upstream. */
                return fs()->create_key_if_not_exists(id, usage);
        return keys_rc_from_errno(r);
}

static int token_load_key(const TokenLocation *l, const Op *op)
{
        return keys_pkcs11_secret_find(l->slot, l->label);
}

static AZIOT_KEYS_RC fs_load_key(const Op *op)
{
        return fs()->load_key(op->id);
}

static AZIOT_KEYS_RC store_load_key(const char *id)
{
        return run(&(Op){ .id = id }, token_load_key, fs_load_key);
}

static AZIOT_KEYS_RC store_import_key(const char *id, const uint8_t *bytes, size_t bytes_len,
                                      AZIOT_KEYS_KEY_USAGE usage)
{
        TokenLocation l;
        int r;

        r = token_location(id, &l);
        if (r <= 0)
                return r < 0 ? keys_rc_from_errno(r)
                             : fs()->import_key(id, bytes, bytes_len, usage);
        r = keys_pkcs11_secret_import(l.slot, l.label, usage, bytes, bytes_len);
        if (r == -EOPNOTSUPP && !l.only)
                return fs()->import_key(id, bytes, bytes_len, usage);
        return keys_rc_from_errno(r);
}

static AZIOT_KEYS_RC store_delete_key(const char *id)
{
        TokenLocation l;
        int r;

        r = token_location(id, &l);
        if (r < 0)
                return keys_rc_from_errno(r);
        if (r > 0) {
                r = keys_pkcs11_secret_delete(l.slot, l.label);
                if (l.only || (r < 0 && r != -ENOENT))
                        return keys_rc_from_errno(r == -ENOENT ? 0 : r);
        }
        return fs()->delete_key(id);
}

/* HMAC-SHA256(key id, data) on the token: 0, -ENOENT (not there), or another error. */
static int token_hmac(const TokenLocation *l, const unsigned char *data, size_t len,
                      uint8_t out[KEYS_HMAC_SIZE])
{
        if (!data && len > 0)
                return -EINVAL;
        return keys_pkcs11_hmac(l->slot, l->label, data, len, out);
}

static int token_derive_key(const TokenLocation *l, const Op *op)
{
        uint8_t derived[KEYS_HMAC_SIZE];
        int r;

        r = token_hmac(l, op->in, op->in_len, derived);
        if (r >= 0)
                r = keys_output_bytes(op->out, op->out_len, derived, sizeof(derived));
        OPENSSL_cleanse(derived, sizeof(derived));
        return r;
}

static AZIOT_KEYS_RC fs_derive_key(const Op *op)
{
        return fs()->derive_key(op->id, op->in, op->in_len, op->out, op->out_len);
}

static AZIOT_KEYS_RC store_derive_key(const char *base_id, const unsigned char *derivation_data,
                                      size_t derivation_data_len, unsigned char *derived_key,
                                      size_t *derived_key_len)
{
        if (!derived_key_len)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        return run(&(Op){ .id = base_id, .in = derivation_data, .in_len = derivation_data_len,
                          .out = derived_key, .out_len = derived_key_len },
                   token_derive_key, fs_derive_key);
}

/* ---- sign / verify ---- */

/* The HMAC a token key makes of data: its own, or that of the key derived from it (the derived
 * key is computed by the token, then used here). */
static int token_mac(const TokenLocation *l, AZIOT_KEYS_SIGN_MECHANISM mechanism,
                     const void *parameters, const unsigned char *data, size_t len,
                     uint8_t out[KEYS_HMAC_SIZE])
{
        const AZIOT_KEYS_SIGN_DERIVED_PARAMETERS *p = parameters;
        uint8_t derived[KEYS_HMAC_SIZE];
        int r;

        if (mechanism == AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256)
                return token_hmac(l, data, len, out);
        if (!p || (!p->derivation_data && p->derivation_data_len > 0) ||
            p->mechanism != AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256) {
                log_debug("Invalid derived-key signing parameters.");
                return -EINVAL;
        }
        r = token_hmac(l, p->derivation_data, p->derivation_data_len, derived);
        if (r >= 0)
                r = keys_hmac(derived, sizeof(derived), data, len, out);
        OPENSSL_cleanse(derived, sizeof(derived));
        return r;
}

static int token_sign(const TokenLocation *l, const Op *op)
{
        AZIOT_KEYS_SIGN_MECHANISM mechanism = op->mechanism;
        const void *parameters = op->parameters;
        const unsigned char *digest = op->in;
        size_t digest_len = op->in_len, *signature_len = op->out_len;
        unsigned char *signature = op->out;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
        uint8_t mac[KEYS_HMAC_SIZE], buf[256];
        size_t max, n = sizeof(buf);
        int r;

        switch (mechanism) {
        case AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256:
        case AZIOT_KEYS_SIGN_MECHANISM_DERIVED:
                r = token_mac(l, mechanism, parameters, digest, digest_len, mac);
                if (r >= 0)
                        r = keys_output_bytes(signature, signature_len, mac, sizeof(mac));
                OPENSSL_cleanse(mac, sizeof(mac));
                return r;
        case AZIOT_KEYS_SIGN_MECHANISM_ECDSA:
                if (signature) {
                        /* The token checks the key type; the public key is not needed. */
                        r = keys_pkcs11_private_op(l->slot, l->label, KEYS_PKCS11_ECDSA, digest,
                                                   digest_len, buf, &n);
                        if (r < 0)
                                return r;
                        return keys_output_bytes(signature, signature_len, buf, n);
                }
                r = keys_pkcs11_key_pair_public(l->slot, l->label, &pkey);
                if (r < 0)
                        return r;
                if (keys_pkey_algorithm(pkey) != AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC)
                        return -EOPNOTSUPP;
                max = keys_pkey_max_output_size(pkey);
                if (max == 0 || max > sizeof(buf))
                        return -EOPNOTSUPP;
                *signature_len = max; /* DER signatures vary: the upper bound */
                return 0;
        default:
                log_debug("Unknown signing mechanism %u.", mechanism);
                return -EINVAL;
        }
}

static AZIOT_KEYS_RC fs_sign(const Op *op)
{
        return fs()->sign(op->id, op->mechanism, op->parameters, op->in, op->in_len, op->out,
                          op->out_len);
}

static AZIOT_KEYS_RC store_sign(const char *id, AZIOT_KEYS_SIGN_MECHANISM mechanism,
                                const void *parameters, const unsigned char *digest,
                                size_t digest_len, unsigned char *signature, size_t *signature_len)
{
        if (!signature_len || (!digest && digest_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        return run(&(Op){ .id = id, .mechanism = mechanism, .parameters = parameters,
                          .in = digest, .in_len = digest_len, .out = signature,
                          .out_len = signature_len },
                   token_sign, fs_sign);
}

static int token_verify(const TokenLocation *l, const Op *op)
{
        AZIOT_KEYS_SIGN_MECHANISM mechanism = op->mechanism;
        const void *parameters = op->parameters;
        const unsigned char *digest = op->in, *signature = op->sig;
        size_t digest_len = op->in_len, signature_len = op->sig_len;
        int *ok = op->ok;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
        uint8_t mac[KEYS_HMAC_SIZE];
        int r;

        switch (mechanism) {
        case AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256:
        case AZIOT_KEYS_SIGN_MECHANISM_DERIVED:
                r = token_mac(l, mechanism, parameters, digest, digest_len, mac);
                if (r >= 0)
                        *ok = signature_len == sizeof(mac) &&
                              CRYPTO_memcmp(mac, signature, sizeof(mac)) == 0;
                OPENSSL_cleanse(mac, sizeof(mac));
                return r;
        case AZIOT_KEYS_SIGN_MECHANISM_ECDSA:
                r = keys_pkcs11_key_pair_public(l->slot, l->label, &pkey);
                if (r >= 0)
                        r = keys_ecdsa_verify(pkey, digest, digest_len, signature, signature_len);
                if (r >= 0)
                        *ok = r;
                return r < 0 ? r : 0;
        default:
                log_debug("Unknown signing mechanism %u.", mechanism);
                return -EINVAL;
        }
}

static AZIOT_KEYS_RC fs_verify(const Op *op)
{
        return fs()->verify(op->id, op->mechanism, op->parameters, op->in, op->in_len, op->sig,
                            op->sig_len, op->ok);
}

static AZIOT_KEYS_RC store_verify(const char *id, AZIOT_KEYS_SIGN_MECHANISM mechanism,
                                  const void *parameters, const unsigned char *digest,
                                  size_t digest_len, const unsigned char *signature,
                                  size_t signature_len, int *ok)
{
        if (!ok || (!digest && digest_len > 0) || (!signature && signature_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        return run(&(Op){ .id = id, .mechanism = mechanism, .parameters = parameters,
                          .in = digest, .in_len = digest_len, .sig = signature,
                          .sig_len = signature_len, .ok = ok },
                   token_verify, fs_verify);
}

/* ---- encrypt / decrypt ---- */

/* For DERIVED: the derived key (computed by the token) and the AEAD parameters. */
static int token_derived_aead(const TokenLocation *l, const void *parameters,
                              uint8_t derived[KEYS_HMAC_SIZE],
                              const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS **ret)
{
        const AZIOT_KEYS_ENCRYPT_DERIVED_PARAMETERS *d = parameters;

        if (!d || d->mechanism != AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD || !d->parameters) {
                log_debug("Derived keys encrypt with AEAD only.");
                return -EINVAL;
        }
        *ret = d->parameters;
        return token_hmac(l, d->derivation_data, d->derivation_data_len, derived);
}

static int token_encrypt(const TokenLocation *l, const Op *op)
{
        AZIOT_KEYS_ENCRYPT_MECHANISM mechanism = op->mechanism;
        const void *parameters = op->parameters;
        const unsigned char *in = op->in;
        size_t len = op->in_len, *out_len = op->out_len;
        unsigned char *out = op->out;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
        const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p;
        uint8_t derived[KEYS_HMAC_SIZE];
        size_t capacity = *out_len, max;
        int r;

        switch (mechanism) {
        case AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD:
                r = keys_pkcs11_secret_find(l->slot, l->label);
                if (r < 0)
                        return r;
                *out_len = keys_aead_ciphertext_size(len);
                if (!out)
                        return 0;
                if (capacity < *out_len)
                        return -ENOBUFS;
                return keys_pkcs11_aead_encrypt(l->slot, l->label, parameters, in, len, out);
        case AZIOT_KEYS_ENCRYPT_MECHANISM_DERIVED:
                r = token_derived_aead(l, parameters, derived, &p);
                if (r >= 0) {
                        *out_len = keys_aead_ciphertext_size(len);
                        if (out && capacity < *out_len)
                                r = -ENOBUFS;
                        else if (out)
                                r = keys_aead_encrypt(derived, sizeof(derived), p, in, len, out);
                }
                OPENSSL_cleanse(derived, sizeof(derived));
                return r;
        case AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_PKCS1:
        case AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_NO_PADDING:
                r = keys_pkcs11_key_pair_public(l->slot, l->label, &pkey);
                if (r < 0)
                        return r;
                if (keys_pkey_algorithm(pkey) != AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_RSA)
                        return -EOPNOTSUPP;
                max = keys_pkey_max_output_size(pkey);
                /* Checked here: some tokens do not fail cleanly on a block of the wrong size
                 * (SoftHSM2 exits the process). PKCS#1 v1.5 padding takes 11 bytes. */
                if (mechanism == AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_NO_PADDING ? len != max
                                                                             : len + 11 > max) {
                        log_debug("%zu bytes cannot be signed raw with an RSA key of %zu bytes.",
                                  len, max);
                        return -EBADMSG;
                }
                *out_len = max;
                if (!out)
                        return 0;
                if (capacity < max)
                        return -ENOBUFS;
                *out_len = capacity;
                return keys_pkcs11_private_op(l->slot, l->label,
                                              mechanism == AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_PKCS1
                                                      ? KEYS_PKCS11_RSA_PKCS
                                                      : KEYS_PKCS11_RSA_X509,
                                              in, len, out, out_len);
        default:
                log_debug("Unknown encryption mechanism %u.", mechanism);
                return -EINVAL;
        }
}

static AZIOT_KEYS_RC fs_encrypt(const Op *op)
{
        return fs()->encrypt(op->id, op->mechanism, op->parameters, op->in, op->in_len, op->out,
                             op->out_len);
}

static AZIOT_KEYS_RC store_encrypt(const char *id, AZIOT_KEYS_ENCRYPT_MECHANISM mechanism,
                                   const void *parameters, const unsigned char *plaintext,
                                   size_t plaintext_len, unsigned char *ciphertext,
                                   size_t *ciphertext_len)
{
        if (!ciphertext_len || (!plaintext && plaintext_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        return run(&(Op){ .id = id, .mechanism = mechanism, .parameters = parameters,
                          .in = plaintext, .in_len = plaintext_len, .out = ciphertext,
                          .out_len = ciphertext_len },
                   token_encrypt, fs_encrypt);
}

static int token_decrypt(const TokenLocation *l, const Op *op)
{
        AZIOT_KEYS_ENCRYPT_MECHANISM mechanism = op->mechanism;
        const void *parameters = op->parameters;
        const unsigned char *in = op->in;
        size_t len = op->in_len, *out_len = op->out_len;
        unsigned char *out = op->out;
        const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p;
        uint8_t derived[KEYS_HMAC_SIZE];
        size_t capacity = *out_len, plain_len = 0;
        int r;

        if (mechanism != AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD &&
            mechanism != AZIOT_KEYS_ENCRYPT_MECHANISM_DERIVED) {
                log_debug("Decryption mechanism %u is not supported.", mechanism);
                return -EINVAL;
        }
        if (mechanism == AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD) {
                r = keys_pkcs11_secret_find(l->slot, l->label);
                if (r < 0)
                        return r;
        }
        r = keys_aead_plaintext_size(in, len, &plain_len);
        if (r < 0)
                return r;
        *out_len = plain_len;
        if (!out)
                return 0;
        if (capacity < plain_len)
                return -ENOBUFS;
        if (mechanism == AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD)
                return keys_pkcs11_aead_decrypt(l->slot, l->label, parameters, in, len, out,
                                                out_len);

        r = token_derived_aead(l, parameters, derived, &p);
        if (r >= 0)
                r = keys_aead_decrypt(derived, sizeof(derived), p, in, len, out, out_len);
        OPENSSL_cleanse(derived, sizeof(derived));
        return r;
}

static AZIOT_KEYS_RC fs_decrypt(const Op *op)
{
        return fs()->decrypt(op->id, op->mechanism, op->parameters, op->in, op->in_len, op->out,
                             op->out_len);
}

static AZIOT_KEYS_RC store_decrypt(const char *id, AZIOT_KEYS_ENCRYPT_MECHANISM mechanism,
                                   const void *parameters, const unsigned char *ciphertext,
                                   size_t ciphertext_len, unsigned char *plaintext,
                                   size_t *plaintext_len)
{
        if (!plaintext_len || (!ciphertext && ciphertext_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        return run(&(Op){ .id = id, .mechanism = mechanism, .parameters = parameters,
                          .in = ciphertext, .in_len = ciphertext_len, .out = plaintext,
                          .out_len = plaintext_len },
                   token_decrypt, fs_decrypt);
}

/* ---- the function lists ---- */

static const AZIOT_KEYS_FUNCTION_LIST_2_0_0_0 function_list_2_0 = {
        .base = { .version = AZIOT_KEYS_VERSION_2_0_0_0 },
        .set_parameter = store_set_parameter,
        .create_key_pair_if_not_exists = store_create_key_pair_if_not_exists,
        .load_key_pair = store_load_key_pair,
        .get_key_pair_parameter = store_get_key_pair_parameter,
        .create_key_if_not_exists = store_create_key_if_not_exists,
        .load_key = store_load_key,
        .import_key = store_import_key,
        .derive_key = store_derive_key,
        .sign = store_sign,
        .verify = store_verify,
        .encrypt = store_encrypt,
        .decrypt = store_decrypt,
};

static const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 function_list_2_1 = {
        .base = { .version = AZIOT_KEYS_VERSION_2_1_0_0 },
        .set_parameter = store_set_parameter,
        .create_key_pair_if_not_exists = store_create_key_pair_if_not_exists,
        .move_key_pair = store_move_key_pair,
        .load_key_pair = store_load_key_pair,
        .get_key_pair_parameter = store_get_key_pair_parameter,
        .delete_key_pair = store_delete_key_pair,
        .create_key_if_not_exists = store_create_key_if_not_exists,
        .load_key = store_load_key,
        .import_key = store_import_key,
        .delete_key = store_delete_key,
        .derive_key = store_derive_key,
        .sign = store_sign,
        .verify = store_verify,
        .encrypt = store_encrypt,
        .decrypt = store_decrypt,
};

const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 *keys_store_function_list(void)
{
        return &function_list_2_1;
}

AZIOT_KEYS_RC aziot_keys_get_function_list(AZIOT_KEYS_VERSION version,
                                           const AZIOT_KEYS_FUNCTION_LIST **pfunction_list)
{
        if (!pfunction_list)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        if (keys_crypto_init() < 0)
                return AZIOT_KEYS_RC_ERR_EXTERNAL;

        switch (version) {
        case AZIOT_KEYS_VERSION_2_1_0_0:
                *pfunction_list = &function_list_2_1.base;
                return AZIOT_KEYS_RC_OK;
        case AZIOT_KEYS_VERSION_2_0_0_0:
                *pfunction_list = &function_list_2_0.base;
                return AZIOT_KEYS_RC_OK;
        default:
                log_error("Key store function list version 0x%08x is not supported.", version);
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        }
}

void keys_store_start(void)
{
        _cleanup_free_ char *display = NULL;

        if (!store.base_slot && !store.base_slot_invalid)
                return;
        if (!keys_pkcs11_has_library()) {
                log_warning("pkcs11_base_slot is set but pkcs11_lib_path is not: new keys go to "
                            "the filesystem.");
                return;
        }
        if (store.base_slot_invalid) {
                log_error("pkcs11_base_slot is not valid (see above): new keys cannot be made; "
                          "keys on the filesystem keep working.");
                return;
        }
        display = pkcs11_uri_to_display(store.base_slot);
        if (keys_pkcs11_check_slot(store.base_slot) < 0)
                log_error("PKCS#11 base slot %s is not usable (see above); keys on the "
                          "filesystem keep working.",
                          display ?: "(the base slot)");
        else
                log_info("New keys are created on PKCS#11 token %s.", display ?: "(the base slot)");
}

void keys_store_reset(void)
{
        while (store.preloaded) {
                PreloadedToken *p = store.preloaded;

                store.preloaded = p->next;
                free(p->id);
                pkcs11_uri_free(p->uri);
                free(p);
        }
        while (store.preloaded_files)
                preloaded_forget(store.preloaded_files->id, false, true);
        store.base_slot = pkcs11_uri_free(store.base_slot);
        store.base_slot_invalid = false;
        keys_pkcs11_reset();
        keys_fs_reset();
}
