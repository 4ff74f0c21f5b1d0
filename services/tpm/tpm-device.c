/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "log.h"
#include "macro.h"
#include "tpm-device.h"

struct TpmDevice {
        TpmSettings settings;
        TSS2_TCTI_CONTEXT *tcti;
        ESYS_CONTEXT *esys;
        ESYS_TR ek, srk;
};

/* The EK's policy: PolicySecret(TPM_RH_ENDORSEMENT) (TCG EK Credential Profile, template L-1). */
static const uint8_t ek_policy[32] = {
        0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc,
        0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52,
        0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
};

static const TPMT_SYM_DEF_OBJECT aes128cfb = {
        .algorithm = TPM2_ALG_AES,
        .keyBits.aes = 128,
        .mode.aes = TPM2_ALG_CFB,
};

void tpm_buffer_done(TpmBuffer *b)
{
        free(b->data);
        *b = (TpmBuffer){};
}

static void settings_done(TpmSettings *s)
{
        if (s->endorsement_auth)
                explicit_bzero(s->endorsement_auth, strlen(s->endorsement_auth));
        if (s->owner_auth)
                explicit_bzero(s->owner_auth, strlen(s->owner_auth));
        free(s->tcti);
        free(s->endorsement_auth);
        free(s->owner_auth);
        *s = (TpmSettings){};
}

static int dup_or_null(const char *s, char **ret)
{
        *ret = s ? strdup(s) : NULL;
        return !s || *ret ? 0 : -ENOMEM;
}

int tpm_device_new(const TpmSettings *settings, TpmDevice **ret)
{
        TpmDevice *d = calloc(1, sizeof(*d));

        if (!d)
                return -ENOMEM;
        d->ek = d->srk = ESYS_TR_NONE;
        if (dup_or_null(settings->tcti, &d->settings.tcti) < 0 ||
            dup_or_null(settings->endorsement_auth, &d->settings.endorsement_auth) < 0 ||
            dup_or_null(settings->owner_auth, &d->settings.owner_auth) < 0) {
                tpm_device_free(d);
                return -ENOMEM;
        }
        *ret = d;
        return 0;
}

static void device_close(TpmDevice *d)
{
        if (d->esys)
                Esys_Finalize(&d->esys);
        if (d->tcti)
                Tss2_TctiLdr_Finalize(&d->tcti);
        d->esys = NULL;
        d->tcti = NULL;
        d->ek = d->srk = ESYS_TR_NONE;
}

void tpm_device_free(TpmDevice *d)
{
        if (!d)
                return;
        device_close(d);
        settings_done(&d->settings);
        free(d);
}

/* ---- errors ---- */

static bool rc_is_tcti(TSS2_RC rc)
{
        TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
        TSS2_RC base = rc & TSS2_RC_LAYER_MASK ? rc & 0xffff : 0;

        return layer == TSS2_TCTI_RC_LAYER ||
               ((layer == TSS2_ESAPI_RC_LAYER || layer == TSS2_SYS_RC_LAYER) &&
                (base == TSS2_BASE_RC_IO_ERROR || base == TSS2_BASE_RC_NO_CONNECTION ||
                 base == TSS2_BASE_RC_TRY_AGAIN));
}

/* The TPM's own response code, without handle/session/parameter numbers (format one) . */
static TSS2_RC rc_tpm_code(TSS2_RC rc)
{
        if (rc & TSS2_RC_LAYER_MASK)
                return 0;
        if (rc & TPM2_RC_FMT1)
                return (rc & 0x3f) | TPM2_RC_FMT1;
        return rc & 0xfff;
}

_printf_(5, 6) static int fail(TpmDevice *d, TSS2_RC rc, char *message, size_t size,
                              const char *format, ...)
{
        char step[256];
        va_list ap;
        TSS2_RC code = rc_tpm_code(rc);

        va_start(ap, format);
        (void)vsnprintf(step, sizeof(step), format, ap);
        va_end(ap);
        (void)snprintf(message, size, "%s: %s", step, Tss2_RC_Decode(rc));
        if (rc_is_tcti(rc)) {
                device_close(d);
                return -ENODEV;
        }
        switch (code) {
        case TPM2_RC_AUTH_FAIL:
        case TPM2_RC_BAD_AUTH:
        case TPM2_RC_LOCKOUT:
                return -EACCES;
        case TPM2_RC_INTEGRITY:
        case TPM2_RC_VALUE:
        case TPM2_RC_SIZE:
        case TPM2_RC_KEY:
        case TPM2_RC_HASH:
        case TPM2_RC_SYMMETRIC:
        case TPM2_RC_SCHEME:
        case TPM2_RC_ATTRIBUTES:
        case TPM2_RC_TYPE:
        case TPM2_RC_KDF:
        case TPM2_RC_POLICY_FAIL:
        case TPM2_RC_BINDING:
        case TPM2_RC_INSUFFICIENT:
        case TPM2_RC_HANDLE:
                return -EINVAL;
        default:
                return -EIO;
        }
}

/* ---- opening ---- */

static int set_auth(TpmDevice *d, ESYS_TR hierarchy, const char *password, const char *which,
                    char *message, size_t size)
{
        TPM2B_AUTH auth = {};
        size_t n = password ? strlen(password) : 0;
        TSS2_RC rc;

        if (n > sizeof(auth.buffer)) {
                (void)snprintf(message, size, "the %s hierarchy password is longer than %zu bytes",
                               which, sizeof(auth.buffer));
                return -EINVAL;
        }
        auth.size = (UINT16)n;
        if (n)
                memcpy(auth.buffer, password, n);
        rc = Esys_TR_SetAuth(d->esys, hierarchy, &auth);
        explicit_bzero(&auth, sizeof(auth));
        if (rc != TSS2_RC_SUCCESS)
                return fail(d, rc, message, size, "setting the %s hierarchy password", which);
        return 0;
}

static int device_open(TpmDevice *d, char *message, size_t size)
{
        const char *conf = d->settings.tcti && *d->settings.tcti ? d->settings.tcti : NULL;
        TSS2_RC rc;
        int r;

        if (d->esys)
                return 0;
        rc = Tss2_TctiLdr_Initialize(conf, &d->tcti);
        if (rc != TSS2_RC_SUCCESS) {
                d->tcti = NULL;
                (void)snprintf(message, size, "opening the TPM (TCTI \"%s\"): %s",
                               conf ? conf : "default", Tss2_RC_Decode(rc));
                return -ENODEV;
        }
        rc = Esys_Initialize(&d->esys, d->tcti, NULL);
        if (rc != TSS2_RC_SUCCESS) {
                d->esys = NULL;
                (void)snprintf(message, size, "opening the TPM (TCTI \"%s\"): %s",
                               conf ? conf : "default", Tss2_RC_Decode(rc));
                device_close(d);
                return -ENODEV;
        }
        /* A TPM the platform has not started (a simulator): start it. */
        rc = Esys_Startup(d->esys, TPM2_SU_CLEAR);
        if (rc != TSS2_RC_SUCCESS && rc_tpm_code(rc) != TPM2_RC_INITIALIZE)
                return fail(d, rc, message, size, "starting the TPM");

        r = set_auth(d, ESYS_TR_RH_ENDORSEMENT, d->settings.endorsement_auth, "endorsement",
                     message, size);
        if (r >= 0)
                r = set_auth(d, ESYS_TR_RH_OWNER, d->settings.owner_auth, "owner", message,
                             size);
        if (r < 0)
                device_close(d);
        return r;
}

/* ---- the EK and the SRK ---- */

static TPM2B_PUBLIC rsa_template(bool ek)
{
        TPM2B_PUBLIC t = {
                .publicArea = {
                        .type = TPM2_ALG_RSA,
                        .nameAlg = TPM2_ALG_SHA256,
                        .objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                            TPMA_OBJECT_SENSITIVEDATAORIGIN |
                                            TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT,
                        .parameters.rsaDetail = {
                                .symmetric = aes128cfb,
                                .scheme = { .scheme = TPM2_ALG_NULL },
                                .keyBits = 2048,
                                .exponent = 0,
                        },
                        .unique.rsa = { .size = 256 },
                },
        };

        if (ek) {
                t.publicArea.objectAttributes |= TPMA_OBJECT_ADMINWITHPOLICY;
                t.publicArea.authPolicy.size = sizeof(ek_policy);
                memcpy(t.publicArea.authPolicy.buffer, ek_policy, sizeof(ek_policy));
        } else
                t.publicArea.objectAttributes |= TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA;
        return t;
}

/* The object at a persistent handle: 1 found, 0 absent, negative on errors. */
static int persistent(TpmDevice *d, uint32_t handle, ESYS_TR *ret, char *message, size_t size)
{
        TPMS_CAPABILITY_DATA *cap = NULL;
        TPMI_YES_NO more = TPM2_NO;
        bool found = false;
        TSS2_RC rc;

        rc = Esys_GetCapability(d->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                TPM2_CAP_HANDLES, handle, 1, &more, &cap);
        if (rc != TSS2_RC_SUCCESS)
                return fail(d, rc, message, size, "listing persistent handles");
        found = cap->data.handles.count > 0 && cap->data.handles.handle[0] == handle;
        Esys_Free(cap);
        if (!found)
                return 0;
        rc = Esys_TR_FromTPMPublic(d->esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   ret);
        if (rc != TSS2_RC_SUCCESS)
                return fail(d, rc, message, size, "reading the object at 0x%08x", handle);
        return 1;
}

static int create_primary(TpmDevice *d, bool ek, ESYS_TR *ret, char *message, size_t size)
{
        TPM2B_PUBLIC template = rsa_template(ek);
        TPM2B_SENSITIVE_CREATE sensitive = {};
        TPM2B_DATA outside = {};
        TPML_PCR_SELECTION pcrs = {};
        TPM2B_PUBLIC *pub = NULL;
        TPM2B_CREATION_DATA *creation = NULL;
        TPM2B_DIGEST *hash = NULL;
        TPMT_TK_CREATION *ticket = NULL;
        ESYS_TR transient = ESYS_TR_NONE;
        uint32_t handle = ek ? TPM_EK_HANDLE : TPM_SRK_HANDLE;
        const char *what = ek ? "the endorsement key" : "the storage root key";
        TSS2_RC rc;

        rc = Esys_CreatePrimary(d->esys, ek ? ESYS_TR_RH_ENDORSEMENT : ESYS_TR_RH_OWNER,
                                ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive,
                                &template, &outside, &pcrs, &transient, &pub, &creation, &hash,
                                &ticket);
        Esys_Free(pub);
        Esys_Free(creation);
        Esys_Free(hash);
        Esys_Free(ticket);
        if (rc != TSS2_RC_SUCCESS)
                return fail(d, rc, message, size, "creating %s", what);
        rc = Esys_EvictControl(d->esys, ESYS_TR_RH_OWNER, transient, ESYS_TR_PASSWORD,
                               ESYS_TR_NONE, ESYS_TR_NONE, handle, ret);
        (void)Esys_FlushContext(d->esys, transient);
        if (rc != TSS2_RC_SUCCESS)
                return fail(d, rc, message, size, "persisting %s at 0x%08x", what, handle);
        log_info("Created %s and persisted it at 0x%08x.", what, handle);
        return 0;
}

static int ensure_primary(TpmDevice *d, bool ek, ESYS_TR *tr, char *message, size_t size)
{
        int r;

        if (*tr != ESYS_TR_NONE)
                return 0;
        r = persistent(d, ek ? TPM_EK_HANDLE : TPM_SRK_HANDLE, tr, message, size);
        if (r < 0)
                return r;
        if (r > 0)
                return 0;
        return create_primary(d, ek, tr, message, size);
}

static int ensure_keys(TpmDevice *d, char *message, size_t size)
{
        int r;

        r = device_open(d, message, size);
        if (r >= 0)
                r = ensure_primary(d, true, &d->ek, message, size);
        if (r >= 0)
                r = ensure_primary(d, false, &d->srk, message, size);
        return r;
}

static int read_public(TpmDevice *d, ESYS_TR tr, const char *what, TpmBuffer *ret, char *message,
                       size_t size)
{
        TPM2B_PUBLIC *pub = NULL;
        TPM2B_NAME *name = NULL, *qualified = NULL;
        uint8_t buf[sizeof(TPM2B_PUBLIC)];
        size_t offset = 0;
        TSS2_RC rc;

        rc = Esys_ReadPublic(d->esys, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, &name,
                             &qualified);
        Esys_Free(name);
        Esys_Free(qualified);
        if (rc != TSS2_RC_SUCCESS)
                return fail(d, rc, message, size, "reading %s", what);
        rc = Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, sizeof(buf), &offset);
        Esys_Free(pub);
        if (rc != TSS2_RC_SUCCESS)
                return fail(d, rc, message, size, "encoding %s", what);
        ret->data = malloc(offset);
        if (!ret->data)
                return -ENOMEM;
        memcpy(ret->data, buf, offset);
        ret->len = offset;
        return 0;
}

int tpm_device_keys(TpmDevice *d, TpmBuffer *ret_ek, TpmBuffer *ret_srk, char *message,
                    size_t size)
{
        TpmBuffer ek = {}, srk = {};
        int r;

        r = ensure_keys(d, message, size);
        if (r >= 0)
                r = read_public(d, d->ek, "the endorsement key", &ek, message, size);
        if (r >= 0)
                r = read_public(d, d->srk, "the storage root key", &srk, message, size);
        if (r < 0) {
                tpm_buffer_done(&ek);
                tpm_buffer_done(&srk);
                return r;
        }
        *ret_ek = ek;
        *ret_srk = srk;
        return 0;
}

/* ---- the authentication key ---- */

typedef struct AuthBlob {
        TPM2B_ID_OBJECT credential;
        TPM2B_ENCRYPTED_SECRET secret;
        TPM2B_PRIVATE duplicate;
        TPM2B_ENCRYPTED_SECRET seed;
        TPM2B_PUBLIC public;
} AuthBlob;

static int blob_parse(const uint8_t *blob, size_t len, AuthBlob *ret, char *message, size_t size)
{
        size_t offset = 0;
        const char *part = "the credential blob";
        TSS2_RC rc;

        *ret = (AuthBlob){};
        rc = Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(blob, len, &offset, &ret->credential);
        if (rc == TSS2_RC_SUCCESS) {
                part = "the encrypted secret";
                rc = Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(blob, len, &offset, &ret->secret);
        }
        if (rc == TSS2_RC_SUCCESS) {
                part = "the duplicate";
                rc = Tss2_MU_TPM2B_PRIVATE_Unmarshal(blob, len, &offset, &ret->duplicate);
        }
        if (rc == TSS2_RC_SUCCESS) {
                part = "the encrypted seed";
                rc = Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(blob, len, &offset, &ret->seed);
        }
        if (rc == TSS2_RC_SUCCESS) {
                part = "the public area";
                rc = Tss2_MU_TPM2B_PUBLIC_Unmarshal(blob, len, &offset, &ret->public);
        }
        if (rc != TSS2_RC_SUCCESS) {
                (void)snprintf(message, size,
                               "malformed authentication key: %s is truncated or invalid", part);
                return -EBADMSG;
        }
        if (offset != len) {
                (void)snprintf(message, size,
                               "malformed authentication key: %zu bytes after the public area",
                               len - offset);
                return -EBADMSG;
        }
        if (ret->public.publicArea.type != TPM2_ALG_KEYEDHASH) {
                (void)snprintf(message, size,
                               "malformed authentication key: not a keyed-hash (HMAC) key");
                return -EBADMSG;
        }
        return 0;
}

int tpm_auth_blob_check(const uint8_t *blob, size_t len, char *message, size_t size)
{
        AuthBlob b;
        int r = blob_parse(blob, len, &b, message, size);

        explicit_bzero(&b, sizeof(b));
        return r;
}

/* A seed that does not decrypt with the EK or SRK (a blob made for another TPM, or corrupted)
 * makes some TPMs (swtpm among them) answer TPM_RC_FAILURE to ActivateCredential and Import,
 * though the TPM goes on working: in these two steps that is the blob's fault. */
static int blob_refused(int r, TSS2_RC rc)
{
        return r == -EIO && rc_tpm_code(rc) == TPM2_RC_FAILURE ? -EINVAL : r;
}

/* The inner wrapping key DPS protected for this EK and SRK. */
static int activate(TpmDevice *d, const AuthBlob *b, TPM2B_DIGEST **ret, char *message,
                    size_t size)
{
        TPMT_SYM_DEF none = { .algorithm = TPM2_ALG_NULL };
        TPM2B_NONCE nonce = {};
        TPM2B_DIGEST cp_hash = {};
        TPM2B_NONCE policy_ref = {};
        TPM2B_TIMEOUT *timeout = NULL;
        TPMT_TK_AUTH *ticket = NULL;
        ESYS_TR session = ESYS_TR_NONE;
        TSS2_RC rc;
        int r = 0;

        rc = Esys_StartAuthSession(d->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   ESYS_TR_NONE, ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &none,
                                   TPM2_ALG_SHA256, &session);
        if (rc != TSS2_RC_SUCCESS)
                return fail(d, rc, message, size, "starting a policy session");
        rc = Esys_PolicySecret(d->esys, ESYS_TR_RH_ENDORSEMENT, session, ESYS_TR_PASSWORD,
                               ESYS_TR_NONE, ESYS_TR_NONE, &nonce, &cp_hash, &policy_ref, 0,
                               &timeout, &ticket);
        Esys_Free(timeout);
        Esys_Free(ticket);
        if (rc != TSS2_RC_SUCCESS)
                r = fail(d, rc, message, size, "authorizing the endorsement key");
        if (r >= 0) {
                rc = Esys_ActivateCredential(d->esys, d->srk, d->ek, ESYS_TR_PASSWORD, session,
                                             ESYS_TR_NONE, &b->credential, &b->secret, ret);
                if (rc != TSS2_RC_SUCCESS)
                        r = blob_refused(fail(d, rc, message, size,
                                              "activating the credential (a blob for another "
                                              "EK or SRK?)"),
                                         rc);
        }
        if (session != ESYS_TR_NONE && d->esys)
                (void)Esys_FlushContext(d->esys, session);
        return r;
}

int tpm_device_import_auth_key(TpmDevice *d, uint32_t index, const uint8_t *blob, size_t len,
                               char *message, size_t size)
{
        uint32_t handle = TPM_AUTH_KEY_BASE + index;
        AuthBlob b;
        TPM2B_DIGEST *inner = NULL;
        TPM2B_DATA key = {};
        TPM2B_PRIVATE *private = NULL;
        ESYS_TR loaded = ESYS_TR_NONE, old = ESYS_TR_NONE, persisted = ESYS_TR_NONE;
        TSS2_RC rc;
        int r;

        if (index > TPM_AUTH_KEY_INDEX_MAX) {
                (void)snprintf(message, size, "auth_key_index 0x%x is over 0x%x", index,
                               TPM_AUTH_KEY_INDEX_MAX);
                return -EINVAL;
        }
        r = blob_parse(blob, len, &b, message, size);
        if (r < 0)
                return r;
        r = ensure_keys(d, message, size);
        if (r >= 0)
                r = activate(d, &b, &inner, message, size);
        if (r >= 0) {
                if (inner->size > sizeof(key.buffer)) {
                        (void)snprintf(message, size, "the activated credential is too long");
                        r = -EINVAL;
                } else {
                        key.size = inner->size;
                        memcpy(key.buffer, inner->buffer, inner->size);
                }
        }
        if (r >= 0) {
                rc = Esys_Import(d->esys, d->srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                 &key, &b.public, &b.duplicate, &b.seed, &aes128cfb, &private);
                if (rc != TSS2_RC_SUCCESS)
                        r = blob_refused(fail(d, rc, message, size,
                                              "importing the authentication key"),
                                         rc);
        }
        if (r >= 0) {
                rc = Esys_Load(d->esys, d->srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                               private, &b.public, &loaded);
                if (rc != TSS2_RC_SUCCESS)
                        r = fail(d, rc, message, size, "loading the authentication key");
        }
        /* The new key is in the TPM: only now does the old one go. */
        if (r >= 0) {
                r = persistent(d, handle, &old, message, size);
                if (r > 0) {
                        rc = Esys_EvictControl(d->esys, ESYS_TR_RH_OWNER, old, ESYS_TR_PASSWORD,
                                               ESYS_TR_NONE, ESYS_TR_NONE, handle, &persisted);
                        if (rc != TSS2_RC_SUCCESS)
                                r = fail(d, rc, message, size,
                                         "removing the previous authentication key at 0x%08x",
                                         handle);
                        /* ESYS keeps the evicted object's metadata under the handle, which the
                         * new key is about to take: forget it. */
                        if (d->esys)
                                (void)Esys_TR_Close(d->esys, &old);
                        old = ESYS_TR_NONE;
                }
        }
        if (r >= 0) {
                rc = Esys_EvictControl(d->esys, ESYS_TR_RH_OWNER, loaded, ESYS_TR_PASSWORD,
                                       ESYS_TR_NONE, ESYS_TR_NONE, handle, &persisted);
                if (rc != TSS2_RC_SUCCESS)
                        r = fail(d, rc, message, size,
                                 "persisting the authentication key at 0x%08x", handle);
                else
                        r = 0;
        }
        if (loaded != ESYS_TR_NONE && d->esys)
                (void)Esys_FlushContext(d->esys, loaded);
        if (persisted != ESYS_TR_NONE && d->esys)
                (void)Esys_TR_Close(d->esys, &persisted);
        if (old != ESYS_TR_NONE && d->esys)
                (void)Esys_TR_Close(d->esys, &old);
        if (inner)
                explicit_bzero(inner, sizeof(*inner));
        Esys_Free(inner);
        Esys_Free(private);
        explicit_bzero(&key, sizeof(key));
        explicit_bzero(&b, sizeof(b));
        if (r >= 0)
                log_info("Imported the authentication key at 0x%08x.", handle);
        return r;
}

int tpm_device_hmac(TpmDevice *d, uint32_t index, const uint8_t *data, size_t len,
                    uint8_t ret_digest[32], char *message, size_t size)
{
        uint32_t handle = TPM_AUTH_KEY_BASE + index;
        TPM2B_DIGEST *out = NULL;
        ESYS_TR key = ESYS_TR_NONE;
        TSS2_RC rc;
        int r;

        r = device_open(d, message, size);
        if (r >= 0)
                r = persistent(d, handle, &key, message, size);
        if (r == 0) {
                (void)snprintf(message, size,
                               "there is no authentication key at 0x%08x (import one first)",
                               handle);
                return -ENOENT;
        }
        if (r < 0)
                return r;

        if (len <= TPM2_MAX_DIGEST_BUFFER) {
                TPM2B_MAX_BUFFER buf = { .size = (UINT16)len };

                if (len)
                        memcpy(buf.buffer, data, len);
                rc = Esys_HMAC(d->esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buf,
                               TPM2_ALG_SHA256, &out);
                if (rc != TSS2_RC_SUCCESS)
                        r = fail(d, rc, message, size, "HMAC with the authentication key");
        } else {
                TPM2B_AUTH auth = {};
                TPMT_TK_HASHCHECK *validation = NULL;
                ESYS_TR seq = ESYS_TR_NONE;
                size_t done = 0;

                rc = Esys_HMAC_Start(d->esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                     &auth, TPM2_ALG_SHA256, &seq);
                if (rc != TSS2_RC_SUCCESS)
                        r = fail(d, rc, message, size, "HMAC with the authentication key");
                while (r >= 0 && len - done > TPM2_MAX_DIGEST_BUFFER) {
                        TPM2B_MAX_BUFFER buf = { .size = TPM2_MAX_DIGEST_BUFFER };

                        memcpy(buf.buffer, data + done, TPM2_MAX_DIGEST_BUFFER);
                        rc = Esys_SequenceUpdate(d->esys, seq, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                                 ESYS_TR_NONE, &buf);
                        if (rc != TSS2_RC_SUCCESS)
                                r = fail(d, rc, message, size, "HMAC with the authentication key");
                        done += TPM2_MAX_DIGEST_BUFFER;
                }
                if (r >= 0) {
                        TPM2B_MAX_BUFFER buf = { .size = (UINT16)(len - done) };

                        memcpy(buf.buffer, data + done, len - done);
                        rc = Esys_SequenceComplete(d->esys, seq, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                                   ESYS_TR_NONE, &buf, TPM2_RH_NULL, &out,
                                                   &validation);
                        Esys_Free(validation);
                        if (rc != TSS2_RC_SUCCESS)
                                r = fail(d, rc, message, size, "HMAC with the authentication key");
                        else
                                seq = ESYS_TR_NONE;
                }
                if (seq != ESYS_TR_NONE && d->esys)
                        (void)Esys_FlushContext(d->esys, seq);
        }
        if (r >= 0 && out->size != 32) {
                (void)snprintf(message, size, "the TPM returned a %u-byte HMAC", out->size);
                r = -EIO;
        }
        if (r >= 0)
                memcpy(ret_digest, out->buffer, 32);
        Esys_Free(out);
        if (key != ESYS_TR_NONE && d->esys)
                (void)Esys_TR_Close(d->esys, &key);
        return r;
}
