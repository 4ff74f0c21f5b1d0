/* SPDX-License-Identifier: MIT */
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "keys-crypto.h"
#include "log.h"

static EVP_MAC *hmac_alg;
static EVP_CIPHER *aes_256_gcm;
/* For HMACs with keys that are not cached (derived keys): re-keyed on each use. */
static EVP_MAC_CTX *scratch_mac;

/* Never NULL, so that a zero-length key is a key and not "reuse the previous one". */
static const uint8_t empty_key[1];

static const char *const algorithm_names[_KEYS_ALGORITHM_MAX] = {
        [KEYS_ALGORITHM_EC_P256] = "ec-p256",
        [KEYS_ALGORITHM_RSA_2048] = "rsa-2048",
        [KEYS_ALGORITHM_RSA_4096] = "rsa-4096",
};

const char *keys_algorithm_to_string(KeysAlgorithm a)
{
        return a >= 0 && a < _KEYS_ALGORITHM_MAX ? algorithm_names[a] : NULL;
}

static void algorithms_add(KeysAlgorithm *list, int *n, KeysAlgorithm a)
{
        for (int i = 0; i < *n; i++)
                if (list[i] == a)
                        return;
        list[(*n)++] = a;
}

int keys_preferred_algorithms_parse(const char *s, KeysAlgorithm ret[_KEYS_ALGORITHM_MAX])
{
        int n = 0;

        if (!s)
                s = "*";

        while (*s) {
                size_t l = strcspn(s, ":");

                if (l == 1 && s[0] == '*') {
                        algorithms_add(ret, &n, KEYS_ALGORITHM_EC_P256);
                        algorithms_add(ret, &n, KEYS_ALGORITHM_RSA_2048);
                } else
                        for (KeysAlgorithm a = 0; a < _KEYS_ALGORITHM_MAX; a++)
                                if (strlen(algorithm_names[a]) == l &&
                                    strncmp(s, algorithm_names[a], l) == 0)
                                        algorithms_add(ret, &n, a);
                s += l;
                if (*s == ':')
                        s++;
        }

        return n > 0 ? n : -EINVAL;
}


int keys_crypto_init(void)
{
        if (!hmac_alg) {
                hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
                if (!hmac_alg)
                        return log_openssl_error("Fetching HMAC");
        }
        if (!aes_256_gcm) {
                aes_256_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
                if (!aes_256_gcm)
                        return log_openssl_error("Fetching AES-256-GCM");
        }
        if (!scratch_mac) {
                scratch_mac = EVP_MAC_CTX_new(hmac_alg);
                if (!scratch_mac)
                        return log_openssl_error("Allocating an HMAC context");
        }
        return 0;
}

void keys_crypto_done(void)
{
        EVP_MAC_CTX_free(scratch_mac);
        scratch_mac = NULL;
        EVP_MAC_free(hmac_alg);
        hmac_alg = NULL;
        EVP_CIPHER_free(aes_256_gcm);
        aes_256_gcm = NULL;
}

static int hmac_set_key(EVP_MAC_CTX *ctx, const uint8_t *key, size_t key_len)
{
        OSSL_PARAM params[] = {
                OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                OSSL_PARAM_construct_end(),
        };

        if (!EVP_MAC_init(ctx, key_len > 0 ? key : empty_key, key_len, params))
                return log_openssl_error("Initialising HMAC-SHA256");
        return 0;
}

static int hmac_finish(EVP_MAC_CTX *ctx, const void *data, size_t len, uint8_t out[KEYS_HMAC_SIZE])
{
        size_t outl = 0;

        if (len > 0 && !EVP_MAC_update(ctx, data, len))
                return log_openssl_error("HMAC-SHA256");
        if (!EVP_MAC_final(ctx, out, &outl, KEYS_HMAC_SIZE) || outl != KEYS_HMAC_SIZE)
                return log_openssl_error("HMAC-SHA256");
        return 0;
}

int keys_hmac_new(const uint8_t *key, size_t key_len, EVP_MAC_CTX **ret)
{
        _cleanup_(EVP_MAC_CTX_freep) EVP_MAC_CTX *ctx = NULL;
        int r;

        r = keys_crypto_init();
        if (r < 0)
                return r;
        ctx = EVP_MAC_CTX_new(hmac_alg);
        if (!ctx)
                return log_openssl_error("Allocating an HMAC context");
        r = hmac_set_key(ctx, key, key_len);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(ctx);
        return 0;
}

int keys_hmac_with_ctx(EVP_MAC_CTX *ctx, const uint8_t *key, size_t key_len, const void *data,
                       size_t len, uint8_t out[KEYS_HMAC_SIZE])
{
        int r;

        /* A NULL key restarts the MAC with the key already set: this avoids rehashing the key
         * and allocating a context per call, which matters on the /sign hot path. Should a
         * provider refuse, set the key again. */
        if (!EVP_MAC_init(ctx, NULL, 0, NULL)) {
                ERR_clear_error();
                r = hmac_set_key(ctx, key, key_len);
                if (r < 0)
                        return r;
        }
        return hmac_finish(ctx, data, len, out);
}

int keys_hmac(const uint8_t *key, size_t key_len, const void *data, size_t len,
              uint8_t out[KEYS_HMAC_SIZE])
{
        int r;

        r = keys_crypto_init();
        if (r < 0)
                return r;
        r = hmac_set_key(scratch_mac, key, key_len);
        if (r < 0)
                return r;
        return hmac_finish(scratch_mac, data, len, out);
}

size_t keys_aead_ciphertext_size(size_t plaintext_len)
{
        return 1 + plaintext_len + KEYS_AEAD_TAG_SIZE;
}

int keys_aead_plaintext_size(const uint8_t *ciphertext, size_t len, size_t *ret)
{
        if (len < 1 + KEYS_AEAD_TAG_SIZE) {
                log_debug("AEAD ciphertext of %zu bytes is too short.", len);
                return -EINVAL;
        }
        if (ciphertext[0] != KEYS_AEAD_V1 && ciphertext[0] != KEYS_AEAD_V2) {
                log_debug("AEAD ciphertext has unknown version 0x%02x.", ciphertext[0]);
                return -EINVAL;
        }
        *ret = len - 1 - KEYS_AEAD_TAG_SIZE;
        return 0;
}

/* Sets up ctx for AES-256-GCM with the caller's IV (of any length the provider accepts) and feeds
 * the AAD. */
static int aead_start(EVP_CIPHER_CTX *ctx, bool encrypt, const uint8_t *key, size_t key_len,
                      const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p)
{
        size_t iv_len;
        int n, r;

        if (!p || (p->iv_len > 0 && !p->iv) || (p->aad_len > 0 && !p->aad) ||
            p->aad_len > INT_MAX) {
                log_debug("Invalid AEAD parameters.");
                return -EINVAL;
        }
        /* The provider reads the key length it expects from the pointer: never hand it less. */
        if (key_len != KEYS_AEAD_KEY_SIZE) {
                log_error("A %zu-byte key cannot be used with AES-256-GCM.", key_len);
                return -EIO;
        }
        r = keys_crypto_init();
        if (r < 0)
                return r;

        iv_len = p->iv_len;
        OSSL_PARAM params[] = {
                OSSL_PARAM_construct_size_t(OSSL_CIPHER_PARAM_AEAD_IVLEN, &iv_len),
                OSSL_PARAM_construct_end(),
        };
        if (!EVP_CipherInit_ex2(ctx, aes_256_gcm, NULL, NULL, encrypt, params) ||
            !EVP_CipherInit_ex2(ctx, NULL, key, p->iv, encrypt, NULL))
                return log_openssl_error("Setting up AES-256-GCM");
        if (p->aad_len > 0 && !EVP_CipherUpdate(ctx, NULL, &n, p->aad, (int)p->aad_len))
                return log_openssl_error("AES-256-GCM AAD");
        return 0;
}

int keys_aead_encrypt(const uint8_t *key, size_t key_len,
                      const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p, const uint8_t *in, size_t len,
                      uint8_t *out)
{
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
        int n = 0, m = 0, r;

        if (len > INT_MAX - 32)
                return -EINVAL;
        ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
                return log_openssl_error("Allocating a cipher context");
        r = aead_start(ctx, /* encrypt= */ true, key, key_len, p);
        if (r < 0)
                return r;

        out[0] = KEYS_AEAD_V2;
        if (len > 0 && !EVP_EncryptUpdate(ctx, out + 1, &n, in, (int)len))
                return log_openssl_error("AES-256-GCM encryption");
        if (!EVP_EncryptFinal_ex(ctx, out + 1 + n, &m) || (size_t)n + (size_t)m != len)
                return log_openssl_error("AES-256-GCM encryption");

        OSSL_PARAM params[] = {
                OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, out + 1 + len,
                                                  KEYS_AEAD_TAG_SIZE),
                OSSL_PARAM_construct_end(),
        };
        if (!EVP_CIPHER_CTX_get_params(ctx, params))
                return log_openssl_error("Reading the AES-256-GCM tag");
        return 0;
}

static int aead_decrypt_split(EVP_CIPHER_CTX *ctx, const uint8_t *in, size_t len, uint8_t *out,
                              size_t *ret_len)
{
        const uint8_t *tag, *body;
        size_t body_len = len - 1 - KEYS_AEAD_TAG_SIZE;
        int n = 0, m = 0;

        if (in[0] == KEYS_AEAD_V1) {
                tag = in + 1;
                body = in + 1 + KEYS_AEAD_TAG_SIZE;
        } else {
                body = in + 1;
                tag = in + 1 + body_len;
        }

        OSSL_PARAM params[] = {
                OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, (void *)tag,
                                                  KEYS_AEAD_TAG_SIZE),
                OSSL_PARAM_construct_end(),
        };
        if (body_len > 0 && !EVP_DecryptUpdate(ctx, out, &n, body, (int)body_len))
                return log_openssl_error("AES-256-GCM decryption");
        if (!EVP_CIPHER_CTX_set_params(ctx, params))
                return log_openssl_error("Setting the AES-256-GCM tag");
        if (EVP_DecryptFinal_ex(ctx, out + n, &m) <= 0) {
                ERR_clear_error();
                log_warning("AEAD ciphertext failed authentication.");
                return -EBADE;
        }
        *ret_len = (size_t)n + (size_t)m;
        return 0;
}

int keys_aead_decrypt(const uint8_t *key, size_t key_len,
                      const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p, const uint8_t *in, size_t len,
                      uint8_t *out, size_t *ret_len)
{
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
        size_t plain_len;
        int r;

        r = keys_aead_plaintext_size(in, len, &plain_len);
        if (r < 0)
                return r;
        if (len > INT_MAX)
                return -EINVAL;
        ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
                return log_openssl_error("Allocating a cipher context");
        r = aead_start(ctx, /* encrypt= */ false, key, key_len, p);
        if (r < 0)
                return r;
        r = aead_decrypt_split(ctx, in, len, out, ret_len);
        if (r < 0)
                /* Never leave unauthenticated plaintext behind. */
                OPENSSL_cleanse(out, plain_len);
        return r;
}

int keys_pkey_generate(KeysAlgorithm a, EVP_PKEY **ret)
{
        EVP_PKEY *pkey;

        switch (a) {
        case KEYS_ALGORITHM_EC_P256:
                pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
                break;
        case KEYS_ALGORITHM_RSA_2048:
                pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
                break;
        case KEYS_ALGORITHM_RSA_4096:
                pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
                break;
        default:
                return -EINVAL;
        }
        if (!pkey)
                return log_openssl_error("Generating a key pair");
        *ret = pkey;
        return 0;
}

int keys_pkey_to_pem(EVP_PKEY *pkey, char **ret, size_t *ret_len)
{
        _cleanup_(BIO_freep) BIO *bio = NULL;
        char *data, *copy;
        long len;

        /* A secure-memory BIO wipes its buffer when freed. */
        bio = BIO_new(BIO_s_secmem());
        if (!bio)
                return log_openssl_error("Allocating a BIO");
        if (!PEM_write_bio_PKCS8PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL))
                return log_openssl_error("Encoding the private key");
        len = BIO_get_mem_data(bio, &data);
        if (len <= 0)
                return log_openssl_error("Encoding the private key");
        copy = malloc((size_t)len);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, data, (size_t)len);
        *ret = copy;
        *ret_len = (size_t)len;
        return 0;
}

static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
        /* A key store that is not interactive: an encrypted key is simply unusable. */
        return -1;
}

int keys_pkey_from_pem(const void *pem, size_t len, EVP_PKEY **ret)
{
        _cleanup_(BIO_freep) BIO *bio = NULL;
        EVP_PKEY *pkey;

        if (len > INT_MAX)
                return -EBADMSG;
        bio = BIO_new_mem_buf(pem, (int)len);
        if (!bio)
                return log_openssl_error("Allocating a BIO");
        pkey = PEM_read_bio_PrivateKey_ex(bio, NULL, no_passphrase, NULL, NULL, NULL);
        if (!pkey) {
                ERR_clear_error();
                return -EBADMSG;
        }
        *ret = pkey;
        return 0;
}

int keys_pkey_algorithm(EVP_PKEY *pkey)
{
        if (EVP_PKEY_is_a(pkey, "EC"))
                return AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC;
        if (EVP_PKEY_is_a(pkey, "RSA"))
                return AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_RSA;
        return -EOPNOTSUPP;
}

static int bytes_dup(const void *p, size_t len, uint8_t **ret, size_t *ret_len)
{
        uint8_t *copy = malloc(len > 0 ? len : 1);

        if (!copy)
                return -ENOMEM;
        memcpy(copy, p, len);
        *ret = copy;
        *ret_len = len;
        return 0;
}

static int ec_curve_oid(EVP_PKEY *pkey, uint8_t **ret, size_t *ret_len)
{
        char name[80];
        unsigned char der[64], *p = der;
        int nid, len;

        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name),
                                            NULL)) {
                ERR_clear_error();
                log_debug("EC key has no named curve.");
                return -EOPNOTSUPP;
        }
        nid = OBJ_txt2nid(name);
        if (nid == NID_undef)
                nid = EC_curve_nist2nid(name);
        if (nid == NID_undef)
                return log_openssl_error("Looking up the EC curve");
        len = i2d_ASN1_OBJECT(OBJ_nid2obj(nid), NULL);
        if (len <= 0 || (size_t)len > sizeof(der) || i2d_ASN1_OBJECT(OBJ_nid2obj(nid), &p) != len)
                return log_openssl_error("Encoding the EC curve OID");
        return bytes_dup(der, (size_t)len, ret, ret_len);
}

static int ec_point_compressed(EVP_PKEY *pkey, uint8_t **ret, size_t *ret_len)
{
        uint8_t point[256], out[129];
        size_t len = 0, coord;

        if (!EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
                                             sizeof(point), &len) ||
            len < 1)
                return log_openssl_error("Reading the EC public point");

        /* Already compressed (02/03 || X)? */
        if ((point[0] == 0x02 || point[0] == 0x03) && len <= sizeof(out))
                return bytes_dup(point, len, ret, ret_len);
        /* Uncompressed (04 || X || Y) or hybrid (06/07 || X || Y): keep X, and the parity of Y. */
        if ((point[0] != 0x04 && point[0] != 0x06 && point[0] != 0x07) || len % 2 == 0)
                return log_openssl_error("Decoding the EC public point");
        coord = (len - 1) / 2;
        out[0] = 0x02 | (point[len - 1] & 1);
        memcpy(out + 1, point + 1, coord);
        return bytes_dup(out, 1 + coord, ret, ret_len);
}

static int rsa_bignum(EVP_PKEY *pkey, const char *name, uint8_t **ret, size_t *ret_len)
{
        _cleanup_(BN_freep) BIGNUM *bn = NULL;
        uint8_t *buf;
        int len;

        if (!EVP_PKEY_get_bn_param(pkey, name, &bn))
                return log_openssl_error("Reading an RSA parameter");
        len = BN_num_bytes(bn);
        buf = malloc(len > 0 ? (size_t)len : 1);
        if (!buf)
                return -ENOMEM;
        if (BN_bn2bin(bn, buf) != len) {
                free(buf);
                return log_openssl_error("Encoding an RSA parameter");
        }
        *ret = buf;
        *ret_len = (size_t)len;
        return 0;
}

int keys_pkey_parameter(EVP_PKEY *pkey, AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE type, uint8_t **ret,
                        size_t *ret_len)
{
        int alg = keys_pkey_algorithm(pkey);
        AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM value;

        if (alg < 0)
                return alg;

        switch (type) {
        case AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_ALGORITHM:
                value = (AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM)alg;
                return bytes_dup(&value, sizeof(value), ret, ret_len);
        case AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_EC_CURVE_OID:
                if (alg != AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC)
                        return -EOPNOTSUPP;
                return ec_curve_oid(pkey, ret, ret_len);
        case AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_EC_POINT:
                if (alg != AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC)
                        return -EOPNOTSUPP;
                return ec_point_compressed(pkey, ret, ret_len);
        case AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_RSA_MODULUS:
                if (alg != AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_RSA)
                        return -EOPNOTSUPP;
                return rsa_bignum(pkey, OSSL_PKEY_PARAM_RSA_N, ret, ret_len);
        case AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_RSA_EXPONENT:
                if (alg != AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_RSA)
                        return -EOPNOTSUPP;
                return rsa_bignum(pkey, OSSL_PKEY_PARAM_RSA_E, ret, ret_len);
        default:
                return -EOPNOTSUPP;
        }
}

size_t keys_pkey_max_output_size(EVP_PKEY *pkey)
{
        int size = EVP_PKEY_get_size(pkey);

        return size > 0 ? (size_t)size : 0;
}

int keys_ecdsa_sign(EVP_PKEY *pkey, const uint8_t *digest, size_t len, uint8_t *sig,
                    size_t *sig_len)
{
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;

        if (keys_pkey_algorithm(pkey) != AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC)
                return -EOPNOTSUPP;
        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        /* Without a signature digest the input is taken as the digest itself. */
        if (!ctx || EVP_PKEY_sign_init(ctx) <= 0 ||
            EVP_PKEY_sign(ctx, sig, sig_len, len > 0 ? digest : empty_key, len) <= 0)
                return log_openssl_error("ECDSA signing");
        return 0;
}

int keys_ecdsa_verify(EVP_PKEY *pkey, const uint8_t *digest, size_t len, const uint8_t *sig,
                      size_t sig_len)
{
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        int r;

        if (keys_pkey_algorithm(pkey) != AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC)
                return -EOPNOTSUPP;
        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        if (!ctx || EVP_PKEY_verify_init(ctx) <= 0)
                return log_openssl_error("ECDSA verification");
        r = EVP_PKEY_verify(ctx, sig_len > 0 ? sig : empty_key, sig_len,
                            len > 0 ? digest : empty_key, len);
        /* 0 is a wrong signature, < 0 mostly a malformed one: neither is valid. */
        ERR_clear_error();
        return r == 1;
}

int keys_rsa_private(EVP_PKEY *pkey, int padding, const uint8_t *in, size_t len, uint8_t *out,
                     size_t *out_len)
{
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;

        if (keys_pkey_algorithm(pkey) != AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_RSA)
                return -EOPNOTSUPP;
        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        /* A signature operation without a signature digest pads (or not) and exponentiates the
         * input as it is: what RSA_private_encrypt() did. */
        if (!ctx || EVP_PKEY_sign_init(ctx) <= 0 || EVP_PKEY_CTX_set_rsa_padding(ctx, padding) <= 0)
                return log_openssl_error("Setting up the RSA private-key operation");
        if (EVP_PKEY_sign(ctx, out, out_len, len > 0 ? in : empty_key, len) <= 0)
                return log_openssl_error("RSA private-key operation");
        return 0;
}

int keys_pkey_from_ec_point(const uint8_t *curve_oid, size_t curve_oid_len, const uint8_t *point,
                            size_t point_len, EVP_PKEY **ret)
{
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        ASN1_OBJECT *obj = NULL;
        ASN1_OCTET_STRING *os = NULL;
        const unsigned char *p = curve_oid;
        const char *group;
        EVP_PKEY *pkey = NULL;
        int nid;

        if (!d2i_ASN1_OBJECT(&obj, &p, (long)curve_oid_len) || p != curve_oid + curve_oid_len) {
                ASN1_OBJECT_free(obj);
                ERR_clear_error();
                return -EBADMSG;
        }
        nid = OBJ_obj2nid(obj);
        ASN1_OBJECT_free(obj);
        group = nid == NID_X9_62_prime256v1 ? "prime256v1" : NULL;
        if (!group)
                return -EBADMSG;

        /* CKA_EC_POINT is a DER OCTET STRING; a bare SEC1 point starts with 0x04 (or 02/03). */
        p = point;
        if (point_len > 2 && point[0] == 0x04 &&
            (os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)point_len)) && p == point + point_len) {
                point = ASN1_STRING_get0_data(os);
                point_len = (size_t)ASN1_STRING_length(os);
        }
        ERR_clear_error();

        OSSL_PARAM params[] = {
                OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0),
                OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)point,
                                                  point_len),
                OSSL_PARAM_construct_end(),
        };
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
            EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
                ASN1_OCTET_STRING_free(os);
                ERR_clear_error();
                return -EBADMSG;
        }
        ASN1_OCTET_STRING_free(os);
        *ret = pkey;
        return 0;
}

int keys_pkey_from_rsa(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len,
                       EVP_PKEY **ret)
{
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        _cleanup_(BN_freep) BIGNUM *bn_n = NULL, *bn_e = NULL;
        _cleanup_(OSSL_PARAM_BLD_freep) OSSL_PARAM_BLD *bld = NULL;
        _cleanup_(OSSL_PARAM_freep) OSSL_PARAM *params = NULL;
        EVP_PKEY *pkey = NULL;

        if (n_len == 0 || e_len == 0 || n_len > INT_MAX || e_len > INT_MAX)
                return -EBADMSG;
        bn_n = BN_bin2bn(n, (int)n_len, NULL);
        bn_e = BN_bin2bn(e, (int)e_len, NULL);
        bld = OSSL_PARAM_BLD_new();
        if (bn_n && bn_e && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
                params = OSSL_PARAM_BLD_to_param(bld);
        if (params)
                ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
            EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
                ERR_clear_error();
                return -EBADMSG;
        }
        ERR_clear_error();
        *ret = pkey;
        return 0;
}

int keys_ecdsa_raw_to_der(const uint8_t *raw, size_t raw_len, uint8_t *der, size_t *der_len)
{
        ECDSA_SIG *sig;
        BIGNUM *r, *s;
        unsigned char *p = der;
        int len;

        if (raw_len == 0 || raw_len % 2 != 0 || raw_len > 2 * 66)
                return -EBADMSG;
        r = BN_bin2bn(raw, (int)(raw_len / 2), NULL);
        s = BN_bin2bn(raw + raw_len / 2, (int)(raw_len / 2), NULL);
        sig = ECDSA_SIG_new();
        if (!r || !s || !sig || !ECDSA_SIG_set0(sig, r, s)) {
                BN_free(r);
                BN_free(s);
                ECDSA_SIG_free(sig);
                return log_openssl_error("Encoding an ECDSA signature");
        }
        len = i2d_ECDSA_SIG(sig, NULL);
        if (len <= 0 || (size_t)len > *der_len) {
                ECDSA_SIG_free(sig);
                return len <= 0 ? log_openssl_error("Encoding an ECDSA signature") : -ENOBUFS;
        }
        len = i2d_ECDSA_SIG(sig, &p);
        ECDSA_SIG_free(sig);
        if (len <= 0)
                return log_openssl_error("Encoding an ECDSA signature");
        *der_len = (size_t)len;
        return 0;
}

const char *keys_id_for_log(const char *id, char buf[static KEYS_ID_LOG_MAX])
{
        size_t n = 0;

        for (const char *s = id ? id : "(null)"; *s; s++) {
                if (n == KEYS_ID_LOG_MAX - 4) {
                        memcpy(buf + n, "...", 3);
                        n += 3;
                        break;
                }
                buf[n++] = *s >= 0x20 && *s < 0x7f ? *s : '?';
        }
        buf[n] = 0;
        return buf;
}

AZIOT_KEYS_RC keys_rc_from_errno(int r)
{
        switch (r) {
        case 0:
                return AZIOT_KEYS_RC_OK;
        case -EINVAL:
        case -ENOENT:
        case -ENODATA:
        case -EOPNOTSUPP:
        case -ENOBUFS:
        case -ENAMETOOLONG:
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        default:
                return AZIOT_KEYS_RC_ERR_EXTERNAL;
        }
}

int keys_output_bytes(unsigned char *out, size_t *out_len, const void *data, size_t len)
{
        size_t capacity = *out_len;

        *out_len = len;
        if (!out)
                return 0;
        if (capacity < len)
                return -ENOBUFS;
        memcpy(out, data, len);
        return 0;
}
