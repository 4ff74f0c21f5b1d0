/* SPDX-License-Identifier: MIT */
#pragma once

/* The TPM operations of aziot-tpmd (spec §5), on tpm2-tss ESYS through the TCTI loader. Every call
 * blocks on the TPM: tpmd makes them on its TPM thread only (tpm-worker.h).
 *
 *   - The endorsement key (EK, 0x81010001, endorsement hierarchy) and the storage root key (SRK,
 *     0x81000001, owner hierarchy) are read from their persistent handles, or created from the TCG
 *     templates (RSA-2048, AES-128-CFB; the EK with the standard PolicySecret(endorsement) policy,
 *     the SRK with userWithAuth and noDA) and persisted when absent. Their public areas are given
 *     as marshalled TPM2B_PUBLIC, size prefix included: what DPS takes as endorsementKey and
 *     storageRootKey.
 *   - The DPS authentication key is imported from DPS's blob (TPM2B_ID_OBJECT ‖
 *     TPM2B_ENCRYPTED_SECRET ‖ TPM2B_PRIVATE ‖ TPM2B_ENCRYPTED_SECRET ‖ TPM2B_PUBLIC):
 *     ActivateCredential(SRK, EK under a PolicySecret(endorsement) session) gives the inner wrapping
 *     key, Import under the SRK (AES-128-CFB), Load, and EvictControl to 0x81000000 + index,
 *     replacing the key there.
 *   - HMAC-SHA256 with that key.
 *
 * Errors: a negative errno and, in the caller's buffer, a message naming the step and the TPM's
 * response code in words (never a password or key material):
 *   -ENODEV      the TPM cannot be reached (TCTI); the device is closed and reopened next time
 *   -EBADMSG     a malformed blob
 *   -EACCES      a hierarchy password the TPM refuses
 *   -ENOENT      no authentication key at the index
 *   -EINVAL      the TPM refused the blob (wrong EK or SRK, corrupted data) or other arguments
 *   -EIO         other TPM failures
 *   -ENOMEM */

#include <stddef.h>
#include <stdint.h>

#define TPM_EK_HANDLE 0x81010001u
#define TPM_SRK_HANDLE 0x81000001u
#define TPM_AUTH_KEY_BASE 0x81000000u
#define TPM_AUTH_KEY_INDEX_MAX 0x7fffffu
#define TPM_AUTH_KEY_INDEX_DEFAULT 0x100u
#define TPM_MESSAGE_MAX 512u
#define TPM_BLOB_MAX 8192u

typedef struct TpmDevice TpmDevice;

typedef struct TpmSettings {
        char *tcti;             /* TCTI loader string; NULL or "": the loader's default */
        char *endorsement_auth; /* hierarchy passwords; NULL: empty */
        char *owner_auth;
} TpmSettings;

typedef struct TpmBuffer {
        uint8_t *data;
        size_t len;
} TpmBuffer;

void tpm_buffer_done(TpmBuffer *b);

/* A device for settings (copied); nothing is opened until the first operation. */
int tpm_device_new(const TpmSettings *settings, TpmDevice **ret);
void tpm_device_free(TpmDevice *d);

/* Opens the TPM when it is not open, then reads or creates the EK and SRK. */
int tpm_device_keys(TpmDevice *d, TpmBuffer *ret_ek, TpmBuffer *ret_srk, char *message,
                    size_t size);

int tpm_device_import_auth_key(TpmDevice *d, uint32_t index, const uint8_t *blob, size_t len,
                               char *message, size_t size);

int tpm_device_hmac(TpmDevice *d, uint32_t index, const uint8_t *data, size_t len,
                    uint8_t ret_digest[32], char *message, size_t size);

/* Splits a DPS authentication key blob into its five parts, checking that nothing is left over
 * (no TPM needed; for the tests). Returns 0 or -EBADMSG with message set. */
int tpm_auth_blob_check(const uint8_t *blob, size_t len, char *message, size_t size);
