/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "macro.h"

/* The DER DigestInfo of digest (which must be as long as md's output) for a PKCS#1 v1.5
 * signature. Returns 0 and a new buffer; -EINVAL for a digest without an OID, -ENOMEM. */
int rsa_digest_info(const EVP_MD *md, const uint8_t *digest, size_t digest_len, uint8_t **ret,
                    size_t *ret_len);

/* The salt length an OpenSSL salt length setting (RSA_PSS_SALTLEN_DIGEST, _AUTO, _MAX, or a
 * length) means when signing with an encoded message of em_len bytes and a hash of hlen bytes:
 * the value OpenSSL's own signer would use and put in the AlgorithmIdentifier. -EINVAL for an
 * unknown setting. */
int rsa_pss_salt_length(int saltlen, size_t em_len, size_t hlen);

/* Writes the k-byte input of the raw RSA private-key operation for an RSASSA-PSS signature of
 * the message hash mhash (EMSA-PSS, RFC 8017 §9.1.1) with a modulus of mod_bits bits, hash md,
 * MGF1 with mgf1 and a random salt. Returns 0, or -EINVAL when the lengths do not fit. */
int rsa_emsa_pss_encode(OSSL_LIB_CTX *libctx, uint8_t *out, size_t k, int mod_bits,
                        const EVP_MD *md, const EVP_MD *mgf1, const uint8_t *mhash, int saltlen);
