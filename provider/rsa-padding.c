/* SPDX-License-Identifier: MIT */
/* The RSA signature encodings the provider makes itself, since keyd only does the private-key
 * operation: the DigestInfo of PKCS#1 v1.5 (RFC 8017 §9.2) and EMSA-PSS (RFC 8017 §9.1.1). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "rsa-padding.h"

int rsa_digest_info(const EVP_MD *md, const uint8_t *digest, size_t digest_len, uint8_t **ret,
                    size_t *ret_len)
{
        const ASN1_OBJECT *oid = OBJ_nid2obj(EVP_MD_get_type(md));
        size_t oid_len, algid_len, len;
        uint8_t *out, *p;

        if (!oid || OBJ_length(oid) == 0 || digest_len != (size_t)EVP_MD_get_size(md))
                return -EINVAL;
        /* SEQUENCE { SEQUENCE { OID, NULL }, OCTET STRING digest }, all short-form lengths. */
        oid_len = OBJ_length(oid);
        algid_len = 2 + oid_len + 2;
        len = 2 + (2 + algid_len) + (2 + digest_len);
        if (oid_len > 127 || len - 2 > 127)
                return -EINVAL;
        out = malloc(len);
        if (!out)
                return -ENOMEM;
        p = out;
        *p++ = 0x30;
        *p++ = (uint8_t)(len - 2);
        *p++ = 0x30;
        *p++ = (uint8_t)(algid_len);
        *p++ = 0x06;
        *p++ = (uint8_t)oid_len;
        memcpy(p, OBJ_get0_data(oid), oid_len);
        p += oid_len;
        *p++ = 0x05;
        *p++ = 0x00;
        *p++ = 0x04;
        *p++ = (uint8_t)digest_len;
        memcpy(p, digest, digest_len);
        *ret = out;
        *ret_len = len;
        return 0;
}

/* MGF1 (RFC 8017 §B.2.1): XORs the mask of seed into out[0..len). */
static int mgf1_xor(const EVP_MD *md, const uint8_t *seed, size_t seed_len, uint8_t *out,
                    size_t len)
{
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        uint8_t block[EVP_MAX_MD_SIZE];
        size_t hlen = (size_t)EVP_MD_get_size(md);
        int r = 0;

        if (!ctx)
                return -ENOMEM;
        for (uint32_t counter = 0; r == 0 && len > 0; counter++) {
                uint8_t c[4] = {counter >> 24, counter >> 16, counter >> 8, counter};
                size_t n = MIN(len, hlen);

                if (!EVP_DigestInit_ex2(ctx, md, NULL) || !EVP_DigestUpdate(ctx, seed, seed_len) ||
                    !EVP_DigestUpdate(ctx, c, sizeof(c)) || !EVP_DigestFinal_ex(ctx, block, NULL))
                        r = -EIO;
                for (size_t i = 0; r == 0 && i < n; i++)
                        out[i] ^= block[i];
                out += n;
                len -= n;
        }
        EVP_MD_CTX_free(ctx);
        return r;
}

int rsa_pss_salt_length(int saltlen, size_t em_len, size_t hlen)
{
        size_t max = em_len >= hlen + 2 ? em_len - hlen - 2 : 0;

        switch (saltlen) {
        case RSA_PSS_SALTLEN_DIGEST:
                return (int)hlen;
        case RSA_PSS_SALTLEN_AUTO: /* for signing, as OpenSSL does: the maximum */
        case RSA_PSS_SALTLEN_MAX:
                return (int)max;
        case -4: /* RSA_PSS_SALTLEN_AUTO_DIGEST_MAX (OpenSSL 3.1) */
                return (int)MIN(hlen, max);
        default:
                return saltlen >= 0 ? saltlen : -EINVAL;
        }
}

int rsa_emsa_pss_encode(OSSL_LIB_CTX *libctx, uint8_t *out, size_t k, int mod_bits,
                        const EVP_MD *md, const EVP_MD *mgf1, const uint8_t *mhash, int saltlen)
{
        static const uint8_t zeros[8] = {0};
        size_t hlen = (size_t)EVP_MD_get_size(md), em_bits, em_len, db_len, slen;
        uint8_t *em, *h;
        EVP_MD_CTX *ctx;
        int s, r = 0;

        if (mod_bits < 2 || k != (size_t)(mod_bits + 7) / 8)
                return -EINVAL;
        em_bits = (size_t)mod_bits - 1;
        em_len = (em_bits + 7) / 8;
        s = rsa_pss_salt_length(saltlen, em_len, hlen);
        if (s < 0)
                return -EINVAL;
        slen = (size_t)s;
        if (em_len < hlen + slen + 2)
                return -EINVAL;

        /* The encoded message is emLen bytes; the RSA input, k bytes, leads with a zero byte when
         * the modulus has one bit more than a multiple of 8. */
        memset(out, 0, k);
        em = out + (k - em_len);
        db_len = em_len - hlen - 1;
        h = em + db_len;

        /* DB = PS || 0x01 || salt, salt written in place; H = Hash(0^8 || mHash || salt). */
        em[db_len - slen - 1] = 0x01;
        if (slen > 0 && RAND_bytes_ex(libctx, em + db_len - slen, slen, 0) != 1)
                return -EIO;
        ctx = EVP_MD_CTX_new();
        if (!ctx)
                return -ENOMEM;
        if (!EVP_DigestInit_ex2(ctx, md, NULL) || !EVP_DigestUpdate(ctx, zeros, sizeof(zeros)) ||
            !EVP_DigestUpdate(ctx, mhash, hlen) ||
            !EVP_DigestUpdate(ctx, em + db_len - slen, slen) || !EVP_DigestFinal_ex(ctx, h, NULL))
                r = -EIO;
        EVP_MD_CTX_free(ctx);
        if (r < 0)
                return r;

        /* maskedDB = DB xor MGF(H), its leftmost 8·emLen − emBits bits cleared; EM ends 0xbc. */
        r = mgf1_xor(mgf1, h, hlen, em, db_len);
        if (r < 0)
                return r;
        em[0] &= (uint8_t)(0xff >> (8 * em_len - em_bits));
        em[em_len - 1] = 0xbc;
        return 0;
}
