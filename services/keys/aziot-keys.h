/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * The key store ABI of aziot-keyd ("libaziot-keys"), versions 2.0.0.0 and 2.1.0.0.
 *
 * This header is ours, but the binary interface it describes is the one the upstream Keys Service
 * loads, so that a vendor library written for upstream (HSM, secure element) can later be loaded
 * in place of our filesystem backend, and so that our backend could be loaded by upstream's daemon.
 * Everything that reaches the ABI is therefore fixed: the names of the constants, their values, the
 * layout of the structs and the order of the function pointers in each function list. Do not
 * reorder, insert or "fix" anything here.
 *
 * Conventions shared by every function:
 *
 *  - Every function returns an AZIOT_KEYS_RC: AZIOT_KEYS_RC_OK, AZIOT_KEYS_RC_ERR_INVALID_PARAMETER
 *    (the caller's fault: bad argument, unknown key, unsuitable mechanism, buffer too small) or
 *    AZIOT_KEYS_RC_ERR_EXTERNAL (anything else: I/O, crypto library, token failures).
 *  - Key ids are NUL-terminated UTF-8 strings chosen by the caller. They are never interpreted as
 *    paths: the filesystem backend derives a fixed-form file name from them.
 *  - Output buffers follow the two-call convention. The caller passes the buffer and a pointer to
 *    its size. With a NULL buffer the function stores in *len the size the output needs (possibly
 *    an upper bound, e.g. for DER ECDSA signatures) and returns OK without producing the output.
 *    With a buffer that is too small it stores the size needed in *len and returns
 *    AZIOT_KEYS_RC_ERR_INVALID_PARAMETER. On success *len is the number of bytes written.
 *  - Input buffers (digest, plaintext, …) may be NULL only when their length is 0.
 *  - Calls are serialized by the caller: an implementation need not lock, but the caller must not
 *    call into the library from two threads at once.
 *  - Lengths are size_t, which is the same type as the uintptr_t of upstream's header on every
 *    Linux target.
 */

#include <stddef.h>
#include <stdint.h>

/* Return code of every function: one of the AZIOT_KEYS_RC_* constants. */
typedef unsigned int AZIOT_KEYS_RC;

/* Success. */
#define AZIOT_KEYS_RC_OK 0
/* A parameter has an invalid value: bad id or argument, unknown key, unsuitable mechanism,
 * output buffer too small. The Keys Service answers 400 for it. */
#define AZIOT_KEYS_RC_ERR_INVALID_PARAMETER 1
/* A failure outside the caller's control (I/O, crypto library, token). The Keys Service answers
 * 500 for it. */
#define AZIOT_KEYS_RC_ERR_EXTERNAL 2

/* Version of a function list, 0xMMmmppbb. */
typedef unsigned int AZIOT_KEYS_VERSION;

/* Version 2.0.0.0: no move and no delete. */
#define AZIOT_KEYS_VERSION_2_0_0_0 0x02000000u
/* Version 2.1.0.0: adds move_key_pair, delete_key_pair and delete_key. */
#define AZIOT_KEYS_VERSION_2_1_0_0 0x02010000u

/* Which public parameter get_key_pair_parameter() returns: one of the constants below. */
typedef unsigned int AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE;

/* The key algorithm, written as one AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM value: an unsigned int
 * in native byte order (4 bytes on Linux), i.e. the caller may read it with memcpy into an
 * unsigned int. This is how upstream's library encodes it and what its daemon expects. */
#define AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_ALGORITHM 1
/* The named curve of an EC key as a DER-encoded OBJECT IDENTIFIER (tag 06 included). */
#define AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_EC_CURVE_OID 2
/* The public point of an EC key, SEC1 compressed form (33 bytes for P-256). */
#define AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_EC_POINT 3
/* The modulus of an RSA key, big-endian, without leading zero bytes. */
#define AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_RSA_MODULUS 4
/* The public exponent of an RSA key, big-endian, without leading zero bytes. */
#define AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_RSA_EXPONENT 5

/* Value of the ALGORITHM parameter. */
typedef unsigned int AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM;

/* The key pair is an elliptic-curve key (P-256). */
#define AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC 1
/* The key pair is an RSA key. */
#define AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_RSA 2

/* What a symmetric key is for: a bit set of the constants below. The filesystem backend records
 * nothing about usage (a key file is raw bytes); HSM backends pick the key type from it. */
typedef unsigned int AZIOT_KEYS_KEY_USAGE;

/* Deriving other keys (HMAC-SHA256 key). */
#define AZIOT_KEYS_KEY_USAGE_DERIVE 0x01u
/* Encryption (AES-GCM key). Not combinable with DERIVE/SIGN on HSM backends. */
#define AZIOT_KEYS_KEY_USAGE_ENCRYPT 0x10u
/* Signing (HMAC-SHA256 key): the same bit as DERIVE. */
#define AZIOT_KEYS_KEY_USAGE_SIGN AZIOT_KEYS_KEY_USAGE_DERIVE

/* Mechanism of sign() / verify(): one of the constants below. */
typedef unsigned int AZIOT_KEYS_SIGN_MECHANISM;

/* ECDSA over a digest the caller computed, with an EC key pair. The signature is a DER
 * ECDSA-Sig-Value (SEQUENCE of r and s). parameters is ignored. */
#define AZIOT_KEYS_SIGN_MECHANISM_ECDSA 1
/* HMAC-SHA256 of the data with a symmetric key; the signature is 32 bytes. parameters is
 * ignored. */
#define AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256 2
/* Sign with a key derived from the symmetric key id: the derived key is
 * HMAC-SHA256(key, derivation_data), then the inner mechanism is applied with it. parameters
 * points to an AZIOT_KEYS_SIGN_DERIVED_PARAMETERS. */
#define AZIOT_KEYS_SIGN_MECHANISM_DERIVED 3

/* Parameters of AZIOT_KEYS_SIGN_MECHANISM_DERIVED. */
typedef struct {
        /* The data the key is derived with, and its length. */
        const unsigned char *derivation_data;
        size_t derivation_data_len;
        /* The mechanism used with the derived key (HMAC_SHA256 in practice). */
        AZIOT_KEYS_SIGN_MECHANISM mechanism;
        /* The parameters of that mechanism. */
        const void *parameters;
} AZIOT_KEYS_SIGN_DERIVED_PARAMETERS;

/* Mechanism of encrypt() / decrypt(): one of the constants below. */
typedef unsigned int AZIOT_KEYS_ENCRYPT_MECHANISM;

/* Authenticated encryption with a symmetric key. The ciphertext is opaque to the caller: the
 * filesystem backend writes 0x02 || AES-256-GCM ciphertext || 16-byte tag, and also decrypts the
 * legacy 0x01 || tag || ciphertext form. parameters points to an
 * AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS. */
#define AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD 1
/* RSA private-key operation with PKCS#1 v1.5 type 1 padding over caller-formatted data (typically
 * a DigestInfo): an RSA signature without hashing. encrypt() only; parameters is ignored. */
#define AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_PKCS1 2
/* Raw RSA private-key operation on a block exactly as long as the modulus (the caller padded it,
 * e.g. for PSS). encrypt() only; parameters is ignored. */
#define AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_NO_PADDING 3
/* Encrypt with a key derived from the symmetric key id (HMAC-SHA256(key, derivation_data)) and the
 * inner mechanism (AEAD). parameters points to an AZIOT_KEYS_ENCRYPT_DERIVED_PARAMETERS. */
#define AZIOT_KEYS_ENCRYPT_MECHANISM_DERIVED 4

/* Parameters of AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD. Both buffers are used verbatim; either may be
 * empty (but AES-GCM refuses an empty IV). */
typedef struct {
        const unsigned char *iv;
        size_t iv_len;
        const unsigned char *aad;
        size_t aad_len;
} AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS;

/* Parameters of AZIOT_KEYS_ENCRYPT_MECHANISM_DERIVED. */
typedef struct {
        /* The data the key is derived with, and its length. */
        const unsigned char *derivation_data;
        size_t derivation_data_len;
        /* The mechanism used with the derived key (AEAD in practice). */
        AZIOT_KEYS_ENCRYPT_MECHANISM mechanism;
        /* The parameters of that mechanism. */
        const void *parameters;
} AZIOT_KEYS_ENCRYPT_DERIVED_PARAMETERS;

/* What every function list starts with. Cast to the struct matching base.version. */
typedef struct {
        AZIOT_KEYS_VERSION version;
} AZIOT_KEYS_FUNCTION_LIST;

/*
 * The operations. Each function list below holds pointers of these types; they are documented
 * once here.
 */

/* Sets a configuration parameter; called before any other operation, once per configured value.
 * The strings may be freed by the caller afterwards. Names understood by the filesystem backend:
 *   "homedir_path"          the store root; keys live in <value>/keys/.
 *   "preloaded_key:<id>"    the location of key <id>, a file:///absolute/path URI; every operation
 *                           on <id> then uses that file (creating it there if asked to).
 *   "pkcs11_lib_path", "pkcs11_base_slot", and pkcs11: locations belong to the PKCS#11 backend.
 * Unknown names and malformed values: ERR_INVALID_PARAMETER. */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_SET_PARAMETER_FN)(const char *name, const char *value);

/* Creates a key pair unless one exists for id. preferred_algorithms is a ':'-separated list of
 * "ec-p256", "rsa-2048", "rsa-4096" and "*" (= ec-p256 then rsa-2048), in order of preference;
 * unknown entries are ignored; NULL means "*". An existing key pair is left alone; an existing file
 * that does not parse as a private key is replaced. No usable algorithm: ERR_INVALID_PARAMETER. */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_CREATE_KEY_PAIR_IF_NOT_EXISTS_FN)(
        const char *id, const char *preferred_algorithms);

/* Checks that the key pair id exists and loads. Missing: ERR_INVALID_PARAMETER. */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_LOAD_KEY_PAIR_FN)(const char *id);

/* Reads a public parameter of key pair id (type is an AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_*) into
 * value, two-call convention. A parameter that does not apply to the key's algorithm, or an
 * unknown type: ERR_INVALID_PARAMETER. */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_GET_KEY_PAIR_PARAMETER_FN)(
        const char *id, AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE type, unsigned char *value,
        size_t *value_len);

/* Creates a random symmetric key (32 bytes on the filesystem) unless a non-empty one exists for
 * id. usage says what the key is for (AZIOT_KEYS_KEY_USAGE_*). */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_CREATE_KEY_IF_NOT_EXISTS_FN)(const char *id,
                                                                AZIOT_KEYS_KEY_USAGE usage);

/* Checks that the symmetric key id exists. Missing or empty: ERR_INVALID_PARAMETER. */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_LOAD_KEY_FN)(const char *id);

/* Stores bytes as the symmetric key id, replacing any existing key. Any length is accepted. */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_IMPORT_KEY_FN)(const char *id, const uint8_t *bytes,
                                                  size_t bytes_len, AZIOT_KEYS_KEY_USAGE usage);

/* Computes the key derived from symmetric key base_id with derivation_data, i.e.
 * HMAC-SHA256(base key, derivation_data), 32 bytes, two-call convention. Nothing is stored. The
 * same derivation is used by the DERIVED sign and encrypt mechanisms. */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_DERIVE_KEY_FN)(const char *base_id,
                                                  const unsigned char *derivation_data,
                                                  size_t derivation_data_len,
                                                  unsigned char *derived_key,
                                                  size_t *derived_key_len);

/* Signs digest (for HMAC: the message) with key or key pair id using mechanism
 * (AZIOT_KEYS_SIGN_MECHANISM_*) and its parameters, two-call convention on signature. A mechanism
 * that does not suit the key: ERR_INVALID_PARAMETER. */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_SIGN_FN)(const char *id, AZIOT_KEYS_SIGN_MECHANISM mechanism,
                                            const void *parameters, const unsigned char *digest,
                                            size_t digest_len, unsigned char *signature,
                                            size_t *signature_len);

/* Checks signature over digest as sign() would have made it. On OK, *ok is non-zero when the
 * signature is valid and 0 when it is not; a malformed signature is simply not valid. HMAC
 * signatures are compared in constant time. Backends need not support ECDSA (ours does). */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_VERIFY_FN)(const char *id, AZIOT_KEYS_SIGN_MECHANISM mechanism,
                                              const void *parameters, const unsigned char *digest,
                                              size_t digest_len, const unsigned char *signature,
                                              size_t signature_len, int *ok);

/* Encrypts plaintext with key or key pair id using mechanism (AZIOT_KEYS_ENCRYPT_MECHANISM_*),
 * two-call convention on ciphertext. */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_ENCRYPT_FN)(const char *id,
                                               AZIOT_KEYS_ENCRYPT_MECHANISM mechanism,
                                               const void *parameters,
                                               const unsigned char *plaintext, size_t plaintext_len,
                                               unsigned char *ciphertext, size_t *ciphertext_len);

/* Decrypts what encrypt() produced (AEAD and DERIVED only), two-call convention on plaintext. A
 * malformed ciphertext (unknown version byte, too short) is ERR_INVALID_PARAMETER; a ciphertext
 * that fails authentication is ERR_EXTERNAL. */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_DECRYPT_FN)(const char *id,
                                               AZIOT_KEYS_ENCRYPT_MECHANISM mechanism,
                                               const void *parameters,
                                               const unsigned char *ciphertext,
                                               size_t ciphertext_len, unsigned char *plaintext,
                                               size_t *plaintext_len);

/* Renames key pair from to to, replacing any key pair to already had. (2.1.0.0) */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_MOVE_KEY_PAIR_FN)(const char *from, const char *to);

/* Deletes key pair id; a missing key pair is not an error. (2.1.0.0) */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_DELETE_KEY_PAIR_FN)(const char *id);

/* Deletes symmetric key id; a missing key is not an error. (2.1.0.0) */
typedef AZIOT_KEYS_RC (*AZIOT_KEYS_DELETE_KEY_FN)(const char *id);

/* Function list of version 2.0.0.0 (base.version == AZIOT_KEYS_VERSION_2_0_0_0). */
typedef struct {
        AZIOT_KEYS_FUNCTION_LIST base;
        AZIOT_KEYS_SET_PARAMETER_FN set_parameter;
        AZIOT_KEYS_CREATE_KEY_PAIR_IF_NOT_EXISTS_FN create_key_pair_if_not_exists;
        AZIOT_KEYS_LOAD_KEY_PAIR_FN load_key_pair;
        AZIOT_KEYS_GET_KEY_PAIR_PARAMETER_FN get_key_pair_parameter;
        AZIOT_KEYS_CREATE_KEY_IF_NOT_EXISTS_FN create_key_if_not_exists;
        AZIOT_KEYS_LOAD_KEY_FN load_key;
        AZIOT_KEYS_IMPORT_KEY_FN import_key;
        AZIOT_KEYS_DERIVE_KEY_FN derive_key;
        AZIOT_KEYS_SIGN_FN sign;
        AZIOT_KEYS_VERIFY_FN verify;
        AZIOT_KEYS_ENCRYPT_FN encrypt;
        AZIOT_KEYS_DECRYPT_FN decrypt;
} AZIOT_KEYS_FUNCTION_LIST_2_0_0_0;

/* Function list of version 2.1.0.0 (base.version == AZIOT_KEYS_VERSION_2_1_0_0). Note that the
 * three new operations sit next to their relatives, not at the end: this list is not an extension
 * of the 2.0.0.0 one and must never be read through it. */
typedef struct {
        AZIOT_KEYS_FUNCTION_LIST base;
        AZIOT_KEYS_SET_PARAMETER_FN set_parameter;
        AZIOT_KEYS_CREATE_KEY_PAIR_IF_NOT_EXISTS_FN create_key_pair_if_not_exists;
        AZIOT_KEYS_MOVE_KEY_PAIR_FN move_key_pair;
        AZIOT_KEYS_LOAD_KEY_PAIR_FN load_key_pair;
        AZIOT_KEYS_GET_KEY_PAIR_PARAMETER_FN get_key_pair_parameter;
        AZIOT_KEYS_DELETE_KEY_PAIR_FN delete_key_pair;
        AZIOT_KEYS_CREATE_KEY_IF_NOT_EXISTS_FN create_key_if_not_exists;
        AZIOT_KEYS_LOAD_KEY_FN load_key;
        AZIOT_KEYS_IMPORT_KEY_FN import_key;
        AZIOT_KEYS_DELETE_KEY_FN delete_key;
        AZIOT_KEYS_DERIVE_KEY_FN derive_key;
        AZIOT_KEYS_SIGN_FN sign;
        AZIOT_KEYS_VERIFY_FN verify;
        AZIOT_KEYS_ENCRYPT_FN encrypt;
        AZIOT_KEYS_DECRYPT_FN decrypt;
} AZIOT_KEYS_FUNCTION_LIST_2_1_0_0;

/* The library's only entry point. Stores in *pfunction_list a pointer to the function list of the
 * requested version (static, never to be freed or written); the caller casts it according to
 * (*pfunction_list)->version. The Keys Service asks for 2.1.0.0 first and falls back to 2.0.0.0.
 * Unknown version or NULL pfunction_list: ERR_INVALID_PARAMETER. May be called any number of
 * times. */
AZIOT_KEYS_RC aziot_keys_get_function_list(AZIOT_KEYS_VERSION version,
                                           const AZIOT_KEYS_FUNCTION_LIST **pfunction_list);
