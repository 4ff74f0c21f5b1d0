/* SPDX-License-Identifier: MIT */
/*
 * A libaziot-keys for the tests of aziot_keys_library (tests/bus/test_keys_library.py), written
 * from services/keys/aziot-keys.h alone, as a vendor would write one: nothing of keyd's own store
 * is used, so what a test sees can only have come through the ABI.
 *
 * Symmetric keys live in memory (a keyd restart forgets them); key pairs and encryption are not
 * supported and answer ERR_INVALID_PARAMETER, so a test can tell this library's answer reaching the
 * client. The only parameter is "test_log_path": a file to which every call appends a line
 * "<function> <id>", the proof that this library, and not the built-in store, served a call.
 *
 * TEST_AZIOT_KEYS_VERSION=2.0 in the environment makes aziot_keys_get_function_list() offer
 * function list 2.0.0.0 only (no move, no delete); otherwise both lists are offered.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "aziot-keys.h"

#define HMAC_SIZE 32
#define NEW_KEY_SIZE 32

typedef struct Key {
        struct Key *next;
        char *id;
        unsigned char *bytes;
        size_t len;
} Key;

static Key *keys;
static char *log_path;

static void key_free(Key *k)
{
        if (!k)
                return;
        if (k->bytes)
                OPENSSL_cleanse(k->bytes, k->len);
        free(k->bytes);
        free(k->id);
        free(k);
}

/* Appends "<function> <id>" to the log; a log that cannot be written is not the caller's
 * business, the test notices the missing line. */
static void log_call(const char *function, const char *id)
{
        int fd;

        if (!log_path)
                return;
        fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0)
                return;
        (void)dprintf(fd, "%s %s\n", function, id ?: "(null)");
        (void)close(fd);
}

static Key **key_find_slot(const char *id)
{
        Key **k;

        for (k = &keys; *k; k = &(*k)->next)
                if (strcmp((*k)->id, id) == 0)
                        break;
        return k;
}

/* A key that can be used: present and not empty (as load_key() defines it). */
static const Key *key_find_usable(const char *id)
{
        const Key *k = *key_find_slot(id);

        return k && k->len > 0 ? k : NULL;
}

/* Stores a copy of bytes as key id, replacing any key of that id. */
static AZIOT_KEYS_RC key_store(const char *id, const unsigned char *bytes, size_t len)
{
        Key **slot = key_find_slot(id), *k;

        k = calloc(1, sizeof(*k));
        if (!k)
                return AZIOT_KEYS_RC_ERR_EXTERNAL;
        k->id = strdup(id);
        k->bytes = malloc(len > 0 ? len : 1);
        if (!k->id || !k->bytes) {
                key_free(k);
                return AZIOT_KEYS_RC_ERR_EXTERNAL;
        }
        if (len > 0)
                memcpy(k->bytes, bytes, len);
        k->len = len;

        if (*slot) {
                k->next = (*slot)->next;
                key_free(*slot);
        } else
                k->next = NULL;
        *slot = k;
        return AZIOT_KEYS_RC_OK;
}

static AZIOT_KEYS_RC hmac_sha256(const unsigned char *key, size_t key_len,
                                 const unsigned char *data, size_t data_len,
                                 unsigned char ret[HMAC_SIZE])
{
        static const unsigned char empty[1];
        size_t n = 0;

        if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, data ?: empty, data_len,
                       ret, HMAC_SIZE, &n) ||
            n != HMAC_SIZE)
                return AZIOT_KEYS_RC_ERR_EXTERNAL;
        return AZIOT_KEYS_RC_OK;
}

/* The two-call convention for an output of exactly size bytes: size goes to *len; a NULL buffer is
 * OK (nothing to write), a short one ERR_INVALID_PARAMETER. *ret_write says whether to write. */
static AZIOT_KEYS_RC output_size(unsigned char *buf, size_t *len, size_t size, bool *ret_write)
{
        size_t have = *len;

        *len = size;
        *ret_write = false;
        if (!buf)
                return AZIOT_KEYS_RC_OK;
        if (have < size)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        *ret_write = true;
        return AZIOT_KEYS_RC_OK;
}

/* HMAC-SHA256 of data with key id under mechanism HMAC_SHA256 or DERIVED(HMAC_SHA256). */
static AZIOT_KEYS_RC mac_with(const char *id, AZIOT_KEYS_SIGN_MECHANISM mechanism,
                              const void *parameters, const unsigned char *data, size_t data_len,
                              unsigned char ret[HMAC_SIZE])
{
        const AZIOT_KEYS_SIGN_DERIVED_PARAMETERS *derived = parameters;
        unsigned char derived_key[HMAC_SIZE];
        const Key *k;
        AZIOT_KEYS_RC rc;

        if (!id || (!data && data_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        k = key_find_usable(id);
        if (!k)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;

        switch (mechanism) {
        case AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256:
                return hmac_sha256(k->bytes, k->len, data, data_len, ret);

        case AZIOT_KEYS_SIGN_MECHANISM_DERIVED:
                if (!derived || derived->mechanism != AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256 ||
                    (!derived->derivation_data && derived->derivation_data_len > 0))
                        return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
                rc = hmac_sha256(k->bytes, k->len, derived->derivation_data,
                                 derived->derivation_data_len, derived_key);
                if (rc == AZIOT_KEYS_RC_OK)
                        rc = hmac_sha256(derived_key, sizeof(derived_key), data, data_len, ret);
                OPENSSL_cleanse(derived_key, sizeof(derived_key));
                return rc;

        default: /* ECDSA needs a key pair, which this library does not have */
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        }
}

/* ---- the operations ---- */

static AZIOT_KEYS_RC set_parameter(const char *name, const char *value)
{
        char *copy;

        if (!name || !value || strcmp(name, "test_log_path") != 0 || value[0] != '/')
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        copy = strdup(value);
        if (!copy)
                return AZIOT_KEYS_RC_ERR_EXTERNAL;
        free(log_path);
        log_path = copy;
        log_call("set_parameter", name);
        return AZIOT_KEYS_RC_OK;
}

static AZIOT_KEYS_RC create_key_pair_if_not_exists(const char *id, const char *preferred_algorithms)
{
        log_call("create_key_pair_if_not_exists", id);
        return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
}

static AZIOT_KEYS_RC move_key_pair(const char *from, const char *to)
{
        log_call("move_key_pair", from);
        return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
}

static AZIOT_KEYS_RC load_key_pair(const char *id)
{
        log_call("load_key_pair", id);
        return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
}

static AZIOT_KEYS_RC get_key_pair_parameter(const char *id, AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE type,
                                            unsigned char *value, size_t *value_len)
{
        log_call("get_key_pair_parameter", id);
        return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
}

static AZIOT_KEYS_RC delete_key_pair(const char *id)
{
        log_call("delete_key_pair", id);
        return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
}

static AZIOT_KEYS_RC create_key_if_not_exists(const char *id, AZIOT_KEYS_KEY_USAGE usage)
{
        unsigned char bytes[NEW_KEY_SIZE];
        AZIOT_KEYS_RC rc;

        log_call("create_key_if_not_exists", id);
        if (!id)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        if (key_find_usable(id))
                return AZIOT_KEYS_RC_OK;
        if (RAND_bytes(bytes, sizeof(bytes)) != 1)
                return AZIOT_KEYS_RC_ERR_EXTERNAL;
        rc = key_store(id, bytes, sizeof(bytes));
        OPENSSL_cleanse(bytes, sizeof(bytes));
        return rc;
}

static AZIOT_KEYS_RC load_key(const char *id)
{
        log_call("load_key", id);
        if (!id || !key_find_usable(id))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        return AZIOT_KEYS_RC_OK;
}

static AZIOT_KEYS_RC import_key(const char *id, const uint8_t *bytes, size_t bytes_len,
                                AZIOT_KEYS_KEY_USAGE usage)
{
        log_call("import_key", id);
        if (!id || (!bytes && bytes_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        return key_store(id, bytes, bytes_len);
}

static AZIOT_KEYS_RC delete_key(const char *id)
{
        Key **slot, *k;

        log_call("delete_key", id);
        if (!id)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        slot = key_find_slot(id);
        k = *slot;
        if (k) {
                *slot = k->next;
                key_free(k);
        }
        return AZIOT_KEYS_RC_OK;
}

static AZIOT_KEYS_RC derive_key(const char *base_id, const unsigned char *derivation_data,
                                size_t derivation_data_len, unsigned char *derived_key,
                                size_t *derived_key_len)
{
        const Key *k;
        bool write;
        AZIOT_KEYS_RC rc;

        log_call("derive_key", base_id);
        if (!base_id || !derived_key_len || (!derivation_data && derivation_data_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        k = key_find_usable(base_id);
        if (!k)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        rc = output_size(derived_key, derived_key_len, HMAC_SIZE, &write);
        if (rc != AZIOT_KEYS_RC_OK || !write)
                return rc;
        return hmac_sha256(k->bytes, k->len, derivation_data, derivation_data_len, derived_key);
}

static AZIOT_KEYS_RC sign(const char *id, AZIOT_KEYS_SIGN_MECHANISM mechanism,
                          const void *parameters, const unsigned char *digest, size_t digest_len,
                          unsigned char *signature, size_t *signature_len)
{
        unsigned char mac[HMAC_SIZE];
        bool write;
        AZIOT_KEYS_RC rc;

        log_call("sign", id);
        if (!signature_len)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        /* The mechanism and key are checked before the size is answered: asking for the size of
         * an impossible signature is an error, not a promise of 32 bytes. */
        rc = mac_with(id, mechanism, parameters, digest, digest_len, mac);
        if (rc == AZIOT_KEYS_RC_OK)
                rc = output_size(signature, signature_len, HMAC_SIZE, &write);
        if (rc == AZIOT_KEYS_RC_OK && write)
                memcpy(signature, mac, HMAC_SIZE);
        OPENSSL_cleanse(mac, sizeof(mac));
        return rc;
}

static AZIOT_KEYS_RC verify(const char *id, AZIOT_KEYS_SIGN_MECHANISM mechanism,
                            const void *parameters, const unsigned char *digest, size_t digest_len,
                            const unsigned char *signature, size_t signature_len, int *ok)
{
        unsigned char mac[HMAC_SIZE];
        AZIOT_KEYS_RC rc;

        log_call("verify", id);
        if (!ok || (!signature && signature_len > 0))
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        rc = mac_with(id, mechanism, parameters, digest, digest_len, mac);
        if (rc == AZIOT_KEYS_RC_OK)
                *ok = signature_len == HMAC_SIZE && CRYPTO_memcmp(mac, signature, HMAC_SIZE) == 0;
        OPENSSL_cleanse(mac, sizeof(mac));
        return rc;
}

static AZIOT_KEYS_RC encrypt_unsupported(const char *id, AZIOT_KEYS_ENCRYPT_MECHANISM mechanism,
                                         const void *parameters, const unsigned char *plaintext,
                                         size_t plaintext_len, unsigned char *ciphertext,
                                         size_t *ciphertext_len)
{
        log_call("encrypt", id);
        return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
}

static AZIOT_KEYS_RC decrypt_unsupported(const char *id, AZIOT_KEYS_ENCRYPT_MECHANISM mechanism,
                                         const void *parameters, const unsigned char *ciphertext,
                                         size_t ciphertext_len, unsigned char *plaintext,
                                         size_t *plaintext_len)
{
        log_call("decrypt", id);
        return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
}

/* ---- the entry point ---- */

static const AZIOT_KEYS_FUNCTION_LIST_2_0_0_0 list_2_0_0_0 = {
        .base = { .version = AZIOT_KEYS_VERSION_2_0_0_0 },
        .set_parameter = set_parameter,
        .create_key_pair_if_not_exists = create_key_pair_if_not_exists,
        .load_key_pair = load_key_pair,
        .get_key_pair_parameter = get_key_pair_parameter,
        .create_key_if_not_exists = create_key_if_not_exists,
        .load_key = load_key,
        .import_key = import_key,
        .derive_key = derive_key,
        .sign = sign,
        .verify = verify,
        .encrypt = encrypt_unsupported,
        .decrypt = decrypt_unsupported,
};

static const AZIOT_KEYS_FUNCTION_LIST_2_1_0_0 list_2_1_0_0 = {
        .base = { .version = AZIOT_KEYS_VERSION_2_1_0_0 },
        .set_parameter = set_parameter,
        .create_key_pair_if_not_exists = create_key_pair_if_not_exists,
        .move_key_pair = move_key_pair,
        .load_key_pair = load_key_pair,
        .get_key_pair_parameter = get_key_pair_parameter,
        .delete_key_pair = delete_key_pair,
        .create_key_if_not_exists = create_key_if_not_exists,
        .load_key = load_key,
        .import_key = import_key,
        .delete_key = delete_key,
        .derive_key = derive_key,
        .sign = sign,
        .verify = verify,
        .encrypt = encrypt_unsupported,
        .decrypt = decrypt_unsupported,
};

AZIOT_KEYS_RC aziot_keys_get_function_list(AZIOT_KEYS_VERSION version,
                                           const AZIOT_KEYS_FUNCTION_LIST **pfunction_list)
{
        const char *offered = getenv("TEST_AZIOT_KEYS_VERSION");
        bool only_2_0 = offered && strcmp(offered, "2.0") == 0;

        if (!pfunction_list)
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        if (version == AZIOT_KEYS_VERSION_2_0_0_0)
                *pfunction_list = &list_2_0_0_0.base;
        else if (version == AZIOT_KEYS_VERSION_2_1_0_0 && !only_2_0)
                *pfunction_list = &list_2_1_0_0.base;
        else
                return AZIOT_KEYS_RC_ERR_INVALID_PARAMETER;
        return AZIOT_KEYS_RC_OK;
}

/* keyd dlclose()s the library when it exits: the keys are wiped and freed then, which also keeps
 * leak checkers quiet in the sanitizer builds. */
static void __attribute__((destructor)) test_aziot_keys_done(void)
{
        while (keys) {
                Key *k = keys;

                keys = k->next;
                key_free(k);
        }
        free(log_path);
        log_path = NULL;
}
