/* SPDX-License-Identifier: MIT */
#pragma once

/* The cryptography of the key store, on bytes and EVP_PKEYs only (no files, no ids): HMAC, the
 * AEAD ciphertext format, key pair generation, PEM, public parameters, ECDSA and RSA private-key
 * operations. Functions return 0 or a negative errno: -EINVAL for input the caller got wrong,
 * -EOPNOTSUPP for an operation that does not suit the key, -ENOBUFS for an output buffer too small,
 * -EBADMSG for an unparsable key file, -EBADE for a ciphertext that fails authentication, -EIO for
 * an OpenSSL failure (logged). Not thread-safe: the store serializes calls. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>

#include "aziot-keys.h"
#include "macro.h"
#include "openssl-util.h"


#define KEYS_HMAC_SIZE 32u
#define KEYS_AEAD_TAG_SIZE 16u
#define KEYS_AEAD_KEY_SIZE 32u
#define KEYS_AEAD_V1 0x01u
#define KEYS_AEAD_V2 0x02u

/* Key pair algorithms, in the order of the preferred_algorithms syntax. */
typedef enum KeysAlgorithm {
        KEYS_ALGORITHM_EC_P256,
        KEYS_ALGORITHM_RSA_2048,
        KEYS_ALGORITHM_RSA_4096,
        _KEYS_ALGORITHM_MAX,
} KeysAlgorithm;

/* Parses a ':'-separated preferred_algorithms list ("ec-p256", "rsa-2048", "rsa-4096", "*" =
 * ec-p256:rsa-2048; unknown entries ignored, duplicates dropped; NULL = "*") into ret, in order.
 * Returns the number of algorithms, or -EINVAL when none is left. */
int keys_preferred_algorithms_parse(const char *s, KeysAlgorithm ret[_KEYS_ALGORITHM_MAX]);
const char *keys_algorithm_to_string(KeysAlgorithm a);

/* Fetches the algorithms used on hot paths; idempotent. keys_crypto_done() releases them. */
int keys_crypto_init(void);
void keys_crypto_done(void);


/* An HMAC-SHA256 context keyed with key, kept per cached key and reused for every MAC. */
int keys_hmac_new(const uint8_t *key, size_t key_len, EVP_MAC_CTX **ret);
/* HMAC-SHA256 of data with the context's key (re-initialised, no allocation). key is only used if
 * the provider cannot re-initialise a context. */
int keys_hmac_with_ctx(EVP_MAC_CTX *ctx, const uint8_t *key, size_t key_len, const void *data,
                       size_t len, uint8_t out[KEYS_HMAC_SIZE]);
/* HMAC-SHA256 with an ad-hoc key (derived keys). */
int keys_hmac(const uint8_t *key, size_t key_len, const void *data, size_t len,
              uint8_t out[KEYS_HMAC_SIZE]);

/* The AEAD ciphertext format: v2 = 0x02 || AES-256-GCM(plaintext) || tag, v1 (decrypt only) =
 * 0x01 || tag || ciphertext. */
size_t keys_aead_ciphertext_size(size_t plaintext_len);
/* Size of the plaintext in ciphertext, or -EINVAL when it is too short or of unknown version. */
int keys_aead_plaintext_size(const uint8_t *ciphertext, size_t len, size_t *ret);
/* out must hold keys_aead_ciphertext_size(len) bytes. A key that is not 32 bytes long: -EIO. */
int keys_aead_encrypt(const uint8_t *key, size_t key_len,
                      const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p, const uint8_t *in, size_t len,
                      uint8_t *out);
/* out must hold the plaintext size; on failure it is wiped. */
int keys_aead_decrypt(const uint8_t *key, size_t key_len,
                      const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p, const uint8_t *in, size_t len,
                      uint8_t *out, size_t *ret_len);

/* Key pairs. */
int keys_pkey_generate(KeysAlgorithm a, EVP_PKEY **ret);
/* Unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY"). The caller wipes and frees *ret. */
int keys_pkey_to_pem(EVP_PKEY *pkey, char **ret, size_t *ret_len);
/* Parses a PEM private key (PKCS#8 or traditional, never prompting for a passphrase). Not a
 * private key: -EBADMSG. */
int keys_pkey_from_pem(const void *pem, size_t len, EVP_PKEY **ret);
/* AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC or _RSA, or -EOPNOTSUPP. */
int keys_pkey_algorithm(EVP_PKEY *pkey);
/* A public parameter (AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_*) in its ABI encoding, freshly
 * allocated. Not applicable or unknown type: -EOPNOTSUPP. */
int keys_pkey_parameter(EVP_PKEY *pkey, AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE type, uint8_t **ret,
                        size_t *ret_len);
/* The largest signature / private-key output of the key. */
size_t keys_pkey_max_output_size(EVP_PKEY *pkey);
/* DER ECDSA signature of digest; *sig_len is the capacity on input (at least the max output). */
int keys_ecdsa_sign(EVP_PKEY *pkey, const uint8_t *digest, size_t len, uint8_t *sig,
                    size_t *sig_len);
/* 1 valid, 0 not valid (including malformed signatures). */
int keys_ecdsa_verify(EVP_PKEY *pkey, const uint8_t *digest, size_t len, const uint8_t *sig,
                      size_t sig_len);
/* A public key from the attributes a PKCS#11 token gives: the DER OBJECT IDENTIFIER of a named
 * curve (CKA_EC_PARAMS) and the point (CKA_EC_POINT: a DER OCTET STRING around the SEC1 encoding,
 * or the bare encoding as some tokens give it); or an RSA modulus and exponent (big-endian).
 * Malformed or unsupported: -EBADMSG. */
int keys_pkey_from_ec_point(const uint8_t *curve_oid, size_t curve_oid_len, const uint8_t *point,
                            size_t point_len, EVP_PKEY **ret);
int keys_pkey_from_rsa(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len,
                       EVP_PKEY **ret);
/* Converts an ECDSA signature given as r || s (two halves of equal length, as PKCS#11 CKM_ECDSA
 * returns it) into DER; *der_len is the capacity on input. */
int keys_ecdsa_raw_to_der(const uint8_t *raw, size_t raw_len, uint8_t *der, size_t *der_len);

/* The return code of the ABI for an internal result: 0 is OK; the errors a caller causes (-EINVAL,
 * -ENOENT, -ENODATA, -EOPNOTSUPP, -ENOBUFS, -ENAMETOOLONG) are ERR_INVALID_PARAMETER; everything
 * else is ERR_EXTERNAL. */
AZIOT_KEYS_RC keys_rc_from_errno(int r);
/* The ABI's two-call output convention: *out_len becomes len; data is copied when out is not NULL
 * and *out_len (on input) is large enough, else -ENOBUFS. */
int keys_output_bytes(unsigned char *out, size_t *out_len, const void *data, size_t len);

/* An id as it may appear in a log line: ids are chosen by callers and may be 4 KiB of anything,
 * so only printable ASCII, and not too much of it. */
#define KEYS_ID_LOG_MAX 80u
const char *keys_id_for_log(const char *id, char buf[static KEYS_ID_LOG_MAX]);
#define KEY_ID(id) keys_id_for_log((id), (char[KEYS_ID_LOG_MAX]){})

/* RSA private-key operation with RSA_PKCS1_PADDING (type 1) or RSA_NO_PADDING; *out_len is the
 * capacity on input (at least the modulus size). */
int keys_rsa_private(EVP_PKEY *pkey, int padding, const uint8_t *in, size_t len, uint8_t *out,
                     size_t *out_len);
