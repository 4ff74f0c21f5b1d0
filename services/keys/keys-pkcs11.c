/* SPDX-License-Identifier: MIT */
#include <dlfcn.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>

#include <p11-kit/pkcs11.h>

#include "keys-pkcs11.h"
#include "log.h"
#include "macro.h"

#define LABEL_MAX 4096u
#define SIGNATURE_MAX 1024u
#define ID_SIZE 16u
#define MAX_FOUND 8u

/* DER OBJECT IDENTIFIER 1.2.840.10045.3.1.7 (P-256). */
static const uint8_t p256_oid[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
static const uint8_t rsa_exponent[] = { 0x01, 0x00, 0x01 };
static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

/* A slot we talk to, as configured, and the session on it. */
typedef struct Session {
        struct Session *next;
        bool by_slot_id;
        CK_SLOT_ID slot_id; /* configured (by_slot_id) or found by token label */
        char *token;        /* configured token label, when not by slot id */
        char *pin;          /* wiped when freed */
        char *display;      /* the slot URI for messages */
        bool open;
        CK_SESSION_HANDLE handle;
        bool pin_rejected;
} Session;

static struct {
        pthread_mutex_t lock;
        char *path;
        void *dl;
        CK_FUNCTION_LIST_PTR f;
        bool initialized;
        Session *sessions;
        char *last_load_error; /* logged once, not on every call */
} p11 = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
};

#define ATTR(t, p, l) ((CK_ATTRIBUTE){ .type = (t), .pValue = (void *)(p), .ulValueLen = (l) })
#define ATTR_BOOL(t, v) ATTR((t), (v) ? &yes : &no, sizeof(CK_BBOOL))
#define ATTR_ULONG(t, v) ATTR((t), &(CK_ULONG){ (v) }, sizeof(CK_ULONG))

static const char *rv_name(CK_RV rv)
{
        switch (rv) {
        case CKR_OK: return "CKR_OK";
        case CKR_GENERAL_ERROR: return "CKR_GENERAL_ERROR";
        case CKR_ARGUMENTS_BAD: return "CKR_ARGUMENTS_BAD";
        case CKR_ATTRIBUTE_VALUE_INVALID: return "CKR_ATTRIBUTE_VALUE_INVALID";
        case CKR_ATTRIBUTE_TYPE_INVALID: return "CKR_ATTRIBUTE_TYPE_INVALID";
        case CKR_DATA_INVALID: return "CKR_DATA_INVALID";
        case CKR_DATA_LEN_RANGE: return "CKR_DATA_LEN_RANGE";
        case CKR_DEVICE_ERROR: return "CKR_DEVICE_ERROR";
        case CKR_DEVICE_MEMORY: return "CKR_DEVICE_MEMORY";
        case CKR_DEVICE_REMOVED: return "CKR_DEVICE_REMOVED";
        case CKR_ENCRYPTED_DATA_INVALID: return "CKR_ENCRYPTED_DATA_INVALID";
        case CKR_ENCRYPTED_DATA_LEN_RANGE: return "CKR_ENCRYPTED_DATA_LEN_RANGE";
        case CKR_FUNCTION_FAILED: return "CKR_FUNCTION_FAILED";
        case CKR_FUNCTION_NOT_SUPPORTED: return "CKR_FUNCTION_NOT_SUPPORTED";
        case CKR_KEY_HANDLE_INVALID: return "CKR_KEY_HANDLE_INVALID";
        case CKR_KEY_SIZE_RANGE: return "CKR_KEY_SIZE_RANGE";
        case CKR_KEY_TYPE_INCONSISTENT: return "CKR_KEY_TYPE_INCONSISTENT";
        case CKR_KEY_FUNCTION_NOT_PERMITTED: return "CKR_KEY_FUNCTION_NOT_PERMITTED";
        case CKR_MECHANISM_INVALID: return "CKR_MECHANISM_INVALID";
        case CKR_MECHANISM_PARAM_INVALID: return "CKR_MECHANISM_PARAM_INVALID";
        case CKR_OBJECT_HANDLE_INVALID: return "CKR_OBJECT_HANDLE_INVALID";
        case CKR_PIN_INCORRECT: return "CKR_PIN_INCORRECT";
        case CKR_PIN_INVALID: return "CKR_PIN_INVALID";
        case CKR_PIN_LEN_RANGE: return "CKR_PIN_LEN_RANGE";
        case CKR_PIN_EXPIRED: return "CKR_PIN_EXPIRED";
        case CKR_PIN_LOCKED: return "CKR_PIN_LOCKED";
        case CKR_SESSION_CLOSED: return "CKR_SESSION_CLOSED";
        case CKR_SESSION_HANDLE_INVALID: return "CKR_SESSION_HANDLE_INVALID";
        case CKR_SLOT_ID_INVALID: return "CKR_SLOT_ID_INVALID";
        case CKR_TEMPLATE_INCOMPLETE: return "CKR_TEMPLATE_INCOMPLETE";
        case CKR_TEMPLATE_INCONSISTENT: return "CKR_TEMPLATE_INCONSISTENT";
        case CKR_TOKEN_NOT_PRESENT: return "CKR_TOKEN_NOT_PRESENT";
        case CKR_TOKEN_NOT_RECOGNIZED: return "CKR_TOKEN_NOT_RECOGNIZED";
        case CKR_TOKEN_WRITE_PROTECTED: return "CKR_TOKEN_WRITE_PROTECTED";
        case CKR_USER_NOT_LOGGED_IN: return "CKR_USER_NOT_LOGGED_IN";
        case CKR_BUFFER_TOO_SMALL: return "CKR_BUFFER_TOO_SMALL";
        case CKR_CRYPTOKI_NOT_INITIALIZED: return "CKR_CRYPTOKI_NOT_INITIALIZED";
        default: return NULL;
        }
}

/* The name of rv for a message, or its number. */
static const char *rv_str(CK_RV rv, char buf[static 24])
{
        const char *n = rv_name(rv);

        if (n)
                return n;
        snprintf(buf, 24, "CKR 0x%lx", (unsigned long)rv);
        return buf;
}
#define RV(rv) rv_str((rv), (char[24]){})

static int errno_from_rv(CK_RV rv)
{
        switch (rv) {
        case CKR_OK:
                return 0;
        case CKR_MECHANISM_INVALID:
        case CKR_FUNCTION_NOT_SUPPORTED:
        case CKR_KEY_TYPE_INCONSISTENT:
        case CKR_KEY_FUNCTION_NOT_PERMITTED:
                return -EOPNOTSUPP;
        case CKR_ARGUMENTS_BAD:
        case CKR_DATA_INVALID:
        case CKR_DATA_LEN_RANGE:
        case CKR_MECHANISM_PARAM_INVALID:
        case CKR_ATTRIBUTE_VALUE_INVALID:
        case CKR_KEY_SIZE_RANGE:
                return -EINVAL;
        case CKR_ENCRYPTED_DATA_INVALID:
        case CKR_ENCRYPTED_DATA_LEN_RANGE:
                return -EBADE;
        case CKR_BUFFER_TOO_SMALL:
                return -ENOBUFS;
        case CKR_PIN_INCORRECT:
        case CKR_PIN_INVALID:
        case CKR_PIN_LEN_RANGE:
        case CKR_PIN_EXPIRED:
        case CKR_PIN_LOCKED:
                return -EACCES;
        case CKR_TOKEN_NOT_PRESENT:
        case CKR_SLOT_ID_INVALID:
        case CKR_DEVICE_REMOVED:
                return -ENXIO;
        default:
                return -EIO;
        }
}

/* Errors after which the operation is retried once on a fresh session. */
static bool rv_session_lost(CK_RV rv)
{
        return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
               rv == CKR_USER_NOT_LOGGED_IN || rv == CKR_OBJECT_HANDLE_INVALID ||
               rv == CKR_KEY_HANDLE_INVALID;
}

/* … and those after which the module is initialized again first (the token went away). */
static bool rv_device_lost(CK_RV rv)
{
        return rv == CKR_DEVICE_REMOVED || rv == CKR_DEVICE_ERROR || rv == CKR_TOKEN_NOT_PRESENT ||
               rv == CKR_SLOT_ID_INVALID || rv == CKR_CRYPTOKI_NOT_INITIALIZED ||
               rv == CKR_TOKEN_NOT_RECOGNIZED || rv == CKR_GENERAL_ERROR;
}

/* ---- the module ---- */

static void load_error(const char *fmt, ...) _printf_(1, 2);
static void load_error(const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if (p11.last_load_error && streq(p11.last_load_error, msg)) {
                log_debug("%s", msg);
                return;
        }
        log_error("%s", msg);
        free(p11.last_load_error);
        p11.last_load_error = TAKE_PTR(msg);
}

static void sessions_forget(void)
{
        for (Session *s = p11.sessions; s; s = s->next)
                s->open = false;
}

static CK_RV module_initialize(void)
{
        CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK };
        CK_RV rv;

        rv = p11.f->C_Initialize(&args);
        if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED)
                rv = CKR_OK;
        p11.initialized = rv == CKR_OK;
        return rv;
}

static int module_load(void)
{
        CK_C_GetFunctionList get;
        CK_RV rv;

        if (p11.initialized)
                return 0;
        if (!p11.path) {
                load_error("PKCS#11 keys are configured but pkcs11_lib_path is not.");
                return -ENXIO;
        }
        if (!p11.dl) {
                p11.dl = dlopen(p11.path, RTLD_NOW | RTLD_LOCAL);
                if (!p11.dl) {
                        load_error("Cannot load the PKCS#11 library %s: %s", p11.path, dlerror());
                        return -ENXIO;
                }
                get = (CK_C_GetFunctionList)dlsym(p11.dl, "C_GetFunctionList");
                if (!get || get(&p11.f) != CKR_OK || !p11.f) {
                        load_error("%s is not a PKCS#11 library (no C_GetFunctionList).",
                                   p11.path);
                        dlclose(p11.dl);
                        p11.dl = NULL;
                        p11.f = NULL;
                        return -ENXIO;
                }
        }
        rv = module_initialize();
        if (rv != CKR_OK) {
                load_error("The PKCS#11 library %s failed to initialize: %s", p11.path, RV(rv));
                return -ENXIO;
        }
        free(p11.last_load_error);
        p11.last_load_error = NULL;
        log_debug("PKCS#11 library %s initialized.", p11.path);
        return 0;
}

/* After a device error: drop every session and start the module again, so that a token that
 * went away and came back (a restarted TPM, a replugged HSM) is found anew. */
static void module_restart(void)
{
        sessions_forget();
        if (p11.initialized)
                (void)p11.f->C_Finalize(NULL);
        p11.initialized = false;
        (void)module_load();
}

/* ---- sessions ---- */

static Session *session_free(Session *s)
{
        if (!s)
                return NULL;
        free(s->token);
        free(s->display);
        if (s->pin)
                erase_and_free(s->pin, strlen(s->pin));
        free(s);
        return NULL;
}

static int session_get(const Pkcs11Uri *slot, Session **ret)
{
        Session *s;

        for (s = p11.sessions; s; s = s->next)
                if (slot->has_slot_id ? s->by_slot_id && s->slot_id == slot->slot_id
                                      : !s->by_slot_id && streq(s->token, slot->token)) {
                        *ret = s;
                        return 0;
                }

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->by_slot_id = slot->has_slot_id;
        s->slot_id = slot->slot_id;
        s->token = slot->has_slot_id ? NULL : strdup(slot->token);
        s->pin = slot->pin ? strdup(slot->pin) : NULL;
        s->display = pkcs11_uri_to_display(slot);
        if ((!s->by_slot_id && !s->token) || (slot->pin && !s->pin) || !s->display) {
                session_free(s);
                return -ENOMEM;
        }
        s->next = p11.sessions;
        p11.sessions = s;
        *ret = s;
        return 0;
}

/* Token labels are 32 bytes padded with spaces. */
static bool token_label_matches(const CK_TOKEN_INFO *info, const char *label)
{
        size_t n = strlen(label), m = sizeof(info->label);

        while (m > 0 && info->label[m - 1] == ' ')
                m--;
        return n == m && memcmp(info->label, label, n) == 0;
}

static int session_find_slot(Session *s, CK_RV *rv)
{
        _cleanup_free_ CK_SLOT_ID *slots = NULL;
        CK_TOKEN_INFO info;
        CK_ULONG n = 0;

        if (s->by_slot_id) {
                *rv = p11.f->C_GetTokenInfo(s->slot_id, &info);
                if (*rv != CKR_OK) {
                        log_error("No usable token in PKCS#11 slot %s: %s", s->display, RV(*rv));
                        return errno_from_rv(*rv) == -EIO ? -ENXIO : errno_from_rv(*rv);
                }
                return 0;
        }

        *rv = p11.f->C_GetSlotList(CK_TRUE, NULL, &n);
        if (*rv == CKR_OK && n > 0) {
                slots = calloc(n, sizeof(CK_SLOT_ID));
                if (!slots)
                        return -ENOMEM;
                *rv = p11.f->C_GetSlotList(CK_TRUE, slots, &n);
        }
        if (*rv != CKR_OK) {
                log_error("Cannot list the PKCS#11 slots: %s", RV(*rv));
                return -ENXIO;
        }
        for (CK_ULONG i = 0; i < n; i++)
                if (p11.f->C_GetTokenInfo(slots[i], &info) == CKR_OK &&
                    token_label_matches(&info, s->token)) {
                        s->slot_id = slots[i];
                        return 0;
                }
        *rv = CKR_TOKEN_NOT_PRESENT;
        log_error("No PKCS#11 token matches %s.", s->display);
        return -ENXIO;
}

static int session_open(Session *s, CK_RV *rv)
{
        int r;

        if (s->open)
                return 0;
        if (s->pin_rejected) {
                log_error("PKCS#11 token %s: the configured PIN was rejected; not trying it again.",
                          s->display);
                return -EACCES;
        }
        r = session_find_slot(s, rv);
        if (r < 0)
                return r;
        *rv = p11.f->C_OpenSession(s->slot_id, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                                   &s->handle);
        if (*rv != CKR_OK) {
                log_error("Cannot open a session on PKCS#11 token %s: %s", s->display, RV(*rv));
                return errno_from_rv(*rv);
        }
        s->open = true;

        if (s->pin) {
                *rv = p11.f->C_Login(s->handle, CKU_USER, (CK_UTF8CHAR_PTR)s->pin,
                                     strlen(s->pin));
                if (*rv == CKR_USER_ALREADY_LOGGED_IN)
                        *rv = CKR_OK;
                if (*rv != CKR_OK) {
                        r = errno_from_rv(*rv);
                        if (r == -EACCES)
                                s->pin_rejected = true;
                        log_error("Cannot log in to PKCS#11 token %s: %s", s->display, RV(*rv));
                        (void)p11.f->C_CloseSession(s->handle);
                        s->open = false;
                        return r;
                }
        }
        log_debug("Opened a session on PKCS#11 token %s.", s->display);
        return 0;
}

static void session_close(Session *s)
{
        if (s->open)
                (void)p11.f->C_CloseSession(s->handle);
        s->open = false;
}

typedef int (*SessionFunc)(Session *s, void *userdata, CK_RV *rv);

/* Runs fn on a logged-in session of slot; when the token lost the session (or went away), once
 * more on a new one. fn returns 0 or a negative errno and sets *rv to the PKCS#11 result that
 * made it fail. */
static int with_session(const Pkcs11Uri *slot, SessionFunc fn, void *userdata)
{
        Session *s;
        int r;

        if (!slot) {
                /* A location whose URI was not valid (logged when it was configured). */
                log_debug("No valid PKCS#11 URI for this key: see the configuration error.");
                return -ENXIO;
        }
        pthread_mutex_lock(&p11.lock);
        r = module_load();
        if (r >= 0)
                r = session_get(slot, &s);
        for (unsigned attempt = 0; r >= 0; attempt++) {
                CK_RV rv = CKR_OK;

                r = session_open(s, &rv);
                if (r >= 0)
                        r = fn(s, userdata, &rv);
                if (r >= 0 || attempt > 0 || !(rv_session_lost(rv) || rv_device_lost(rv)))
                        break;
                log_info("PKCS#11 token %s: %s, starting over with a new session.", s->display,
                         RV(rv));
                if (rv_device_lost(rv))
                        module_restart();
                else
                        session_close(s);
                r = p11.initialized ? 0 : -ENXIO;
        }
        pthread_mutex_unlock(&p11.lock);
        return r;
}

/* ---- objects ---- */

static int fail(Session *s, const char *what, const char *label, CK_RV rv_in, CK_RV *rv)
{
        *rv = rv_in;
        if (rv_session_lost(rv_in) || rv_device_lost(rv_in))
                log_debug("PKCS#11 token %s: %s of %s: %s", s->display, what, KEY_ID(label),
                          RV(rv_in));
        else
                log_warning("PKCS#11 token %s: %s of %s failed: %s", s->display, what,
                            KEY_ID(label), RV(rv_in));
        return errno_from_rv(rv_in);
}

/* Up to MAX_FOUND objects of class cls labelled label. */
static int find_objects(Session *s, CK_OBJECT_CLASS cls, const char *label,
                        CK_OBJECT_HANDLE found[static MAX_FOUND], CK_ULONG *n, CK_RV *rv)
{
        CK_ATTRIBUTE t[] = {
                ATTR(CKA_CLASS, &cls, sizeof(cls)),
                ATTR(CKA_LABEL, label, strlen(label)),
        };
        CK_RV r1, r2;

        r1 = p11.f->C_FindObjectsInit(s->handle, t, ELEMENTSOF(t));
        if (r1 != CKR_OK)
                return fail(s, "looking up", label, r1, rv);
        r1 = p11.f->C_FindObjects(s->handle, found, MAX_FOUND, n);
        r2 = p11.f->C_FindObjectsFinal(s->handle);
        if (r1 != CKR_OK || r2 != CKR_OK)
                return fail(s, "looking up", label, r1 != CKR_OK ? r1 : r2, rv);
        return 0;
}

static int find_object(Session *s, CK_OBJECT_CLASS cls, const char *label, CK_OBJECT_HANDLE *ret,
                       CK_RV *rv)
{
        CK_OBJECT_HANDLE found[MAX_FOUND];
        CK_ULONG n = 0;
        int r;

        r = find_objects(s, cls, label, found, &n, rv);
        if (r < 0)
                return r;
        if (n == 0)
                return -ENOENT;
        if (n > 1)
                log_warning("PKCS#11 token %s holds several objects labelled %s; using the first.",
                            s->display, KEY_ID(label));
        *ret = found[0];
        return 0;
}

/* Destroys the objects of class cls labelled label, except keep (CK_INVALID_HANDLE: none). */
static int destroy_objects_but(Session *s, CK_OBJECT_CLASS cls, const char *label,
                               CK_OBJECT_HANDLE keep, CK_RV *rv)
{
        CK_OBJECT_HANDLE found[MAX_FOUND];
        CK_ULONG n = 0, destroyed;
        int r;

        do {
                r = find_objects(s, cls, label, found, &n, rv);
                if (r < 0)
                        return r;
                destroyed = 0;
                for (CK_ULONG i = 0; i < n; i++) {
                        CK_RV x;

                        if (found[i] == keep)
                                continue;
                        x = p11.f->C_DestroyObject(s->handle, found[i]);
                        if (x != CKR_OK && x != CKR_OBJECT_HANDLE_INVALID)
                                return fail(s, "deleting", label, x, rv);
                        destroyed++;
                }
        } while (destroyed > 0 && n == MAX_FOUND);
        return 0;
}

static int destroy_objects(Session *s, CK_OBJECT_CLASS cls, const char *label, CK_RV *rv)
{
        return destroy_objects_but(s, cls, label, CK_INVALID_HANDLE, rv);
}

static int get_ulong(Session *s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type, CK_ULONG *ret,
                     CK_RV *rv)
{
        CK_ATTRIBUTE a = ATTR(type, ret, sizeof(*ret));

        *rv = p11.f->C_GetAttributeValue(s->handle, o, &a, 1);
        return *rv == CKR_OK ? 0 : errno_from_rv(*rv);
}

/* A variable-length attribute, freshly allocated. */
static int get_bytes(Session *s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type, uint8_t **ret,
                     size_t *ret_len, CK_RV *rv)
{
        CK_ATTRIBUTE a = ATTR(type, NULL, 0);
        _cleanup_free_ uint8_t *buf = NULL;

        *rv = p11.f->C_GetAttributeValue(s->handle, o, &a, 1);
        if (*rv != CKR_OK)
                return errno_from_rv(*rv);
        if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > 64 * 1024)
                return -EBADMSG;
        buf = malloc(a.ulValueLen + 1);
        if (!buf)
                return -ENOMEM;
        a.pValue = buf;
        *rv = p11.f->C_GetAttributeValue(s->handle, o, &a, 1);
        if (*rv != CKR_OK)
                return errno_from_rv(*rv);
        *ret = TAKE_PTR(buf);
        *ret_len = a.ulValueLen;
        return 0;
}

static int check_label(const char *label)
{
        if (!label || !*label || strlen(label) > LABEL_MAX)
                return -EINVAL;
        return 0;
}

/* ---- key pairs ---- */

typedef struct KeyPairCall {
        const char *label;
        const char *to;
        const KeysAlgorithm *algs;
        size_t n_algs;
        EVP_PKEY *pkey;
        KeysPkcs11PrivateOp op;
        const uint8_t *in;
        size_t len;
        uint8_t *out;
        size_t *out_len;
} KeyPairCall;

static int do_key_pair_find(Session *s, void *userdata, CK_RV *rv)
{
        KeyPairCall *c = userdata;
        CK_OBJECT_HANDLE o;

        return find_object(s, CKO_PRIVATE_KEY, c->label, &o, rv);
}

int keys_pkcs11_key_pair_find(const Pkcs11Uri *slot, const char *label)
{
        KeyPairCall c = { .label = label };

        if (check_label(label) < 0)
                return -EINVAL;
        return with_session(slot, do_key_pair_find, &c);
}

static CK_RV generate_key_pair(Session *s, const char *label, KeysAlgorithm a)
{
        CK_MECHANISM ec = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
        CK_MECHANISM rsa = { CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
        CK_OBJECT_HANDLE pub, priv;
        uint8_t id[ID_SIZE];
        CK_ULONG bits = a == KEYS_ALGORITHM_RSA_4096 ? 4096 : 2048;

        if (RAND_bytes(id, sizeof(id)) != 1)
                return CKR_FUNCTION_FAILED;

        CK_ATTRIBUTE pub_ec[] = {
                ATTR_BOOL(CKA_TOKEN, true),       ATTR_BOOL(CKA_PRIVATE, false),
                ATTR_BOOL(CKA_VERIFY, true),      ATTR(CKA_EC_PARAMS, p256_oid, sizeof(p256_oid)),
                ATTR(CKA_LABEL, label, strlen(label)), ATTR(CKA_ID, id, sizeof(id)),
        };
        CK_ATTRIBUTE pub_rsa[] = {
                ATTR_BOOL(CKA_TOKEN, true),
                ATTR_BOOL(CKA_PRIVATE, false),
                ATTR_BOOL(CKA_VERIFY, true),
                ATTR_BOOL(CKA_ENCRYPT, true),
                ATTR(CKA_MODULUS_BITS, &bits, sizeof(bits)),
                ATTR(CKA_PUBLIC_EXPONENT, rsa_exponent, sizeof(rsa_exponent)),
                ATTR(CKA_LABEL, label, strlen(label)),
                ATTR(CKA_ID, id, sizeof(id)),
        };
        CK_ATTRIBUTE priv_t[] = {
                ATTR_BOOL(CKA_TOKEN, true),       ATTR_BOOL(CKA_PRIVATE, true),
                ATTR_BOOL(CKA_SENSITIVE, true),   ATTR_BOOL(CKA_EXTRACTABLE, false),
                ATTR_BOOL(CKA_SIGN, true),        ATTR(CKA_LABEL, label, strlen(label)),
                ATTR(CKA_ID, id, sizeof(id)),
        };

        if (a == KEYS_ALGORITHM_EC_P256)
                return p11.f->C_GenerateKeyPair(s->handle, &ec, pub_ec, ELEMENTSOF(pub_ec), priv_t,
                                                ELEMENTSOF(priv_t), &pub, &priv);
        return p11.f->C_GenerateKeyPair(s->handle, &rsa, pub_rsa, ELEMENTSOF(pub_rsa), priv_t,
                                        ELEMENTSOF(priv_t), &pub, &priv);
}

static int do_key_pair_create(Session *s, void *userdata, CK_RV *rv)
{
        KeyPairCall *c = userdata;
        CK_RV x = CKR_MECHANISM_INVALID;
        CK_OBJECT_HANDLE o;
        int r;

        /* Looked up again here, on the session that generates: after a session or the module
         * was started over, what the token holds may look different than it did before. */
        r = find_object(s, CKO_PRIVATE_KEY, c->label, &o, rv);
        if (r >= 0 || r != -ENOENT)
                return r;

        /* A public half without its private half is a failed generation: start clean. */
        r = destroy_objects(s, CKO_PUBLIC_KEY, c->label, rv);
        if (r < 0)
                return r;
        for (size_t i = 0; i < c->n_algs; i++) {
                x = generate_key_pair(s, c->label, c->algs[i]);
                if (x == CKR_OK) {
                        log_info("Created %s key pair %s on PKCS#11 token %s.",
                                 keys_algorithm_to_string(c->algs[i]), KEY_ID(c->label),
                                 s->display);
                        return 0;
                }
                if (rv_session_lost(x) || rv_device_lost(x))
                        break;
                log_info("PKCS#11 token %s cannot generate a %s key pair (%s)%s", s->display,
                         keys_algorithm_to_string(c->algs[i]), RV(x),
                         i + 1 < c->n_algs ? ", trying the next preferred algorithm." : ".");
        }
        return fail(s, "generating", c->label, x, rv);
}

int keys_pkcs11_key_pair_create(const Pkcs11Uri *slot, const char *label,
                                const KeysAlgorithm *algs, size_t n_algs)
{
        KeyPairCall c = { .label = label, .algs = algs, .n_algs = n_algs };

        if (check_label(label) < 0 || n_algs == 0)
                return -EINVAL;
        return with_session(slot, do_key_pair_create, &c);
}

static int public_from_object(Session *s, CK_OBJECT_HANDLE o, EVP_PKEY **ret, CK_RV *rv)
{
        _cleanup_free_ uint8_t *a = NULL, *b = NULL;
        size_t a_len = 0, b_len = 0;
        CK_ULONG type;
        int r;

        r = get_ulong(s, o, CKA_KEY_TYPE, &type, rv);
        if (r < 0)
                return r;
        if (type == CKK_EC) {
                r = get_bytes(s, o, CKA_EC_PARAMS, &a, &a_len, rv);
                if (r >= 0)
                        r = get_bytes(s, o, CKA_EC_POINT, &b, &b_len, rv);
                if (r >= 0)
                        r = keys_pkey_from_ec_point(a, a_len, b, b_len, ret);
                return r;
        }
        if (type == CKK_RSA) {
                r = get_bytes(s, o, CKA_MODULUS, &a, &a_len, rv);
                if (r >= 0)
                        r = get_bytes(s, o, CKA_PUBLIC_EXPONENT, &b, &b_len, rv);
                if (r >= 0)
                        r = keys_pkey_from_rsa(a, a_len, b, b_len, ret);
                return r;
        }
        return -EOPNOTSUPP;
}

static int do_key_pair_public(Session *s, void *userdata, CK_RV *rv)
{
        KeyPairCall *c = userdata;
        CK_OBJECT_HANDLE o;
        int r;

        r = find_object(s, CKO_PUBLIC_KEY, c->label, &o, rv);
        if (r >= 0) {
                r = public_from_object(s, o, &c->pkey, rv);
                if (r >= 0 || rv_session_lost(*rv) || rv_device_lost(*rv))
                        return r;
        } else if (r != -ENOENT)
                return r;

        /* No (usable) public object: an RSA private key carries its modulus and exponent. */
        r = find_object(s, CKO_PRIVATE_KEY, c->label, &o, rv);
        if (r < 0)
                return r;
        r = public_from_object(s, o, &c->pkey, rv);
        if (r < 0 && r != -ENOMEM && !rv_session_lost(*rv) && !rv_device_lost(*rv)) {
                log_error("PKCS#11 token %s: no public key for key pair %s.", s->display,
                          KEY_ID(c->label));
                return -EIO;
        }
        return r;
}

int keys_pkcs11_key_pair_public(const Pkcs11Uri *slot, const char *label, EVP_PKEY **ret)
{
        KeyPairCall c = { .label = label };
        int r;

        if (check_label(label) < 0)
                return -EINVAL;
        r = with_session(slot, do_key_pair_public, &c);
        if (r < 0)
                return r;
        *ret = c.pkey;
        return 0;
}

static int do_private_op(Session *s, void *userdata, CK_RV *rv)
{
        KeyPairCall *c = userdata;
        CK_MECHANISM mech = { 0, NULL, 0 };
        CK_OBJECT_HANDLE o;
        CK_ULONG type, want, n;
        uint8_t buf[SIGNATURE_MAX];
        CK_RV x;
        int r;

        r = find_object(s, CKO_PRIVATE_KEY, c->label, &o, rv);
        if (r < 0)
                return r;
        r = get_ulong(s, o, CKA_KEY_TYPE, &type, rv);
        if (r < 0)
                return fail(s, "reading", c->label, *rv, rv);
        want = c->op == KEYS_PKCS11_ECDSA ? CKK_EC : CKK_RSA;
        if (type != want) {
                log_debug("Key pair %s is not an %s key.", KEY_ID(c->label),
                          want == CKK_EC ? "EC" : "RSA");
                return -EOPNOTSUPP;
        }
        mech.mechanism = c->op == KEYS_PKCS11_ECDSA  ? CKM_ECDSA
                         : c->op == KEYS_PKCS11_RSA_PKCS ? CKM_RSA_PKCS
                                                         : CKM_RSA_X_509;

        x = p11.f->C_SignInit(s->handle, &mech, o);
        if (x != CKR_OK)
                return fail(s, "signing with", c->label, x, rv);
        n = sizeof(buf);
        x = p11.f->C_Sign(s->handle, (CK_BYTE_PTR)(c->len > 0 ? c->in : buf), c->len, buf, &n);
        if (x != CKR_OK)
                return fail(s, "signing with", c->label, x, rv);

        if (c->op == KEYS_PKCS11_ECDSA) {
                r = keys_ecdsa_raw_to_der(buf, n, c->out, c->out_len);
                OPENSSL_cleanse(buf, sizeof(buf));
                return r;
        }
        if (n > *c->out_len)
                return -ENOBUFS;
        memcpy(c->out, buf, n);
        *c->out_len = n;
        return 0;
}

int keys_pkcs11_private_op(const Pkcs11Uri *slot, const char *label, KeysPkcs11PrivateOp op,
                           const uint8_t *in, size_t len, uint8_t *out, size_t *out_len)
{
        KeyPairCall c = {
                .label = label, .op = op, .in = in, .len = len, .out = out, .out_len = out_len,
        };

        if (check_label(label) < 0 || (!in && len > 0) || !out || !out_len)
                return -EINVAL;
        return with_session(slot, do_private_op, &c);
}

static int do_key_pair_delete(Session *s, void *userdata, CK_RV *rv)
{
        KeyPairCall *c = userdata;
        int r;

        r = destroy_objects(s, CKO_PRIVATE_KEY, c->label, rv);
        if (r >= 0)
                r = destroy_objects(s, CKO_PUBLIC_KEY, c->label, rv);
        return r;
}

int keys_pkcs11_key_pair_delete(const Pkcs11Uri *slot, const char *label)
{
        KeyPairCall c = { .label = label };

        if (check_label(label) < 0)
                return -EINVAL;
        return with_session(slot, do_key_pair_delete, &c);
}

static int relabel(Session *s, CK_OBJECT_CLASS cls, const char *from, const char *to, CK_RV *rv)
{
        CK_OBJECT_HANDLE found[MAX_FOUND];
        CK_ATTRIBUTE a = ATTR(CKA_LABEL, to, strlen(to));
        CK_ULONG n = 0;
        int r;

        r = find_objects(s, cls, from, found, &n, rv);
        if (r < 0)
                return r;
        for (CK_ULONG i = 0; i < n; i++) {
                CK_RV x = p11.f->C_SetAttributeValue(s->handle, found[i], &a, 1);
                if (x != CKR_OK)
                        return fail(s, "renaming", from, x, rv);
        }
        return (int)n;
}

static int do_key_pair_move(Session *s, void *userdata, CK_RV *rv)
{
        KeyPairCall *c = userdata;
        CK_OBJECT_HANDLE o;
        int r;

        r = find_object(s, CKO_PRIVATE_KEY, c->label, &o, rv);
        if (r < 0)
                return r;
        r = destroy_objects(s, CKO_PRIVATE_KEY, c->to, rv);
        if (r >= 0)
                r = destroy_objects(s, CKO_PUBLIC_KEY, c->to, rv);
        if (r >= 0)
                r = relabel(s, CKO_PUBLIC_KEY, c->label, c->to, rv);
        if (r >= 0)
                r = relabel(s, CKO_PRIVATE_KEY, c->label, c->to, rv);
        if (r >= 0)
                log_info("Moved key pair %s to %s on PKCS#11 token %s.", KEY_ID(c->label),
                         KEY_ID(c->to), s->display);
        return r < 0 ? r : 0;
}

int keys_pkcs11_key_pair_move(const Pkcs11Uri *slot, const char *from, const char *to)
{
        KeyPairCall c = { .label = from, .to = to };

        if (check_label(from) < 0 || check_label(to) < 0)
                return -EINVAL;
        if (streq(from, to))
                return keys_pkcs11_key_pair_find(slot, from);
        return with_session(slot, do_key_pair_move, &c);
}

/* ---- symmetric keys ---- */

typedef struct SecretCall {
        const char *label;
        AZIOT_KEYS_KEY_USAGE usage;
        const uint8_t *in;
        size_t len;
        uint8_t *out;
        size_t *out_len;
        const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *aead;
        bool encrypt;
} SecretCall;

static int find_secret(Session *s, const char *label, CK_OBJECT_HANDLE *ret, CK_ULONG *ret_type,
                       CK_RV *rv)
{
        int r;

        r = find_object(s, CKO_SECRET_KEY, label, ret, rv);
        if (r < 0)
                return r;
        if (ret_type) {
                r = get_ulong(s, *ret, CKA_KEY_TYPE, ret_type, rv);
                if (r < 0)
                        return fail(s, "reading", label, *rv, rv);
        }
        return 0;
}

static int do_secret_find(Session *s, void *userdata, CK_RV *rv)
{
        SecretCall *c = userdata;
        CK_OBJECT_HANDLE o;

        return find_secret(s, c->label, &o, NULL, rv);
}

int keys_pkcs11_secret_find(const Pkcs11Uri *slot, const char *label)
{
        SecretCall c = { .label = label };

        if (check_label(label) < 0)
                return -EINVAL;
        return with_session(slot, do_secret_find, &c);
}

static int usage_key_type(AZIOT_KEYS_KEY_USAGE usage, CK_KEY_TYPE *ret)
{
        if (usage == AZIOT_KEYS_KEY_USAGE_ENCRYPT)
                *ret = CKK_AES;
        else if (usage == AZIOT_KEYS_KEY_USAGE_SIGN)
                *ret = CKK_GENERIC_SECRET;
        else {
                log_error("PKCS#11 keys have one usage, sign/derive or encrypt, not 0x%x.", usage);
                return -EINVAL;
        }
        return 0;
}

/* Whether the token can use key for AES-GCM: upstream's test before keeping an AES key. */
static bool aes_gcm_works(Session *s, CK_OBJECT_HANDLE key)
{
        uint8_t iv[12] = {}, in[1] = {}, out[1 + 16];
        CK_GCM_PARAMS gcm = {
                .pIv = iv, .ulIvLen = sizeof(iv), .ulIvBits = sizeof(iv) * 8, .ulTagBits = 128,
        };
        CK_MECHANISM mech = { CKM_AES_GCM, &gcm, sizeof(gcm) };
        CK_ULONG n = sizeof(out);

        return p11.f->C_EncryptInit(s->handle, &mech, key) == CKR_OK &&
               p11.f->C_Encrypt(s->handle, in, sizeof(in), out, &n) == CKR_OK;
}

static int do_secret_create(Session *s, void *userdata, CK_RV *rv)
{
        SecretCall *c = userdata;
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE type;
        CK_OBJECT_HANDLE o;
        bool aes;
        CK_RV x = CKR_OK;
        int r;

        r = usage_key_type(c->usage, &type);
        if (r < 0)
                return r;
        aes = type == CKK_AES;

        /* As for key pairs: an existing key is kept, whatever session found it. */
        r = find_secret(s, c->label, &o, NULL, rv);
        if (r >= 0 || r != -ENOENT)
                return r;

        /* 32-byte keys; an AES token without AES-256 gets AES-128. */
        for (CK_ULONG len = 32; len >= 16; len -= 16) {
                CK_MECHANISM mech = { aes ? CKM_AES_KEY_GEN : CKM_GENERIC_SECRET_KEY_GEN, NULL, 0 };
                CK_ATTRIBUTE t[] = {
                        ATTR(CKA_CLASS, &cls, sizeof(cls)),
                        ATTR(CKA_KEY_TYPE, &type, sizeof(type)),
                        ATTR(CKA_VALUE_LEN, &len, sizeof(len)),
                        ATTR_BOOL(CKA_TOKEN, true),
                        ATTR_BOOL(CKA_PRIVATE, true),
                        ATTR_BOOL(CKA_SENSITIVE, true),
                        ATTR_BOOL(CKA_EXTRACTABLE, false),
                        ATTR_BOOL(aes ? CKA_ENCRYPT : CKA_SIGN, true),
                        ATTR_BOOL(aes ? CKA_DECRYPT : CKA_VERIFY, true),
                        ATTR(CKA_LABEL, c->label, strlen(c->label)),
                };

                x = p11.f->C_GenerateKey(s->handle, &mech, t, ELEMENTSOF(t), &o);
                if (x == CKR_OK || !aes ||
                    (x != CKR_ATTRIBUTE_VALUE_INVALID && x != CKR_TEMPLATE_INCONSISTENT &&
                     x != CKR_KEY_SIZE_RANGE))
                        break;
        }
        if (x == CKR_MECHANISM_INVALID || x == CKR_FUNCTION_NOT_SUPPORTED) {
                log_info("PKCS#11 token %s cannot generate %s keys; key %s goes elsewhere.",
                         s->display, aes ? "AES" : "HMAC", KEY_ID(c->label));
                return -EOPNOTSUPP;
        }
        if (x != CKR_OK)
                return fail(s, "generating", c->label, x, rv);

        if (aes && !aes_gcm_works(s, o)) {
                (void)p11.f->C_DestroyObject(s->handle, o);
                log_info("PKCS#11 token %s cannot use AES-GCM; key %s goes elsewhere.", s->display,
                         KEY_ID(c->label));
                return -EOPNOTSUPP;
        }
        log_info("Created %s key %s on PKCS#11 token %s.", aes ? "AES" : "HMAC", KEY_ID(c->label),
                 s->display);
        return 0;
}

int keys_pkcs11_secret_create(const Pkcs11Uri *slot, const char *label, AZIOT_KEYS_KEY_USAGE usage)
{
        SecretCall c = { .label = label, .usage = usage };

        if (check_label(label) < 0)
                return -EINVAL;
        return with_session(slot, do_secret_create, &c);
}

/* Whether the token can HMAC with key (SoftHSM2 refuses HMAC keys shorter than 32 bytes). */
static bool hmac_works(Session *s, CK_OBJECT_HANDLE key)
{
        CK_MECHANISM mech = { CKM_SHA256_HMAC, NULL, 0 };
        uint8_t in[1] = {}, out[KEYS_HMAC_SIZE];
        CK_ULONG n = sizeof(out);

        return p11.f->C_SignInit(s->handle, &mech, key) == CKR_OK &&
               p11.f->C_Sign(s->handle, in, sizeof(in), out, &n) == CKR_OK;
}

static int do_secret_import(Session *s, void *userdata, CK_RV *rv)
{
        SecretCall *c = userdata;
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_OBJECT_HANDLE o;
        CK_KEY_TYPE type;
        bool aes;
        CK_RV x;
        int r;

        r = usage_key_type(c->usage, &type);
        if (r < 0)
                return r;
        aes = type == CKK_AES;
        if (aes && c->len != 16 && c->len != 24 && c->len != 32) {
                log_error("An AES key is 16, 24 or 32 bytes long, not %zu.", c->len);
                return -EINVAL;
        }
        if (c->len == 0) {
                log_error("An empty key cannot be stored on a PKCS#11 token.");
                return -EINVAL;
        }

        CK_ATTRIBUTE t[] = {
                ATTR(CKA_CLASS, &cls, sizeof(cls)),
                ATTR(CKA_KEY_TYPE, &type, sizeof(type)),
                ATTR(CKA_VALUE, c->in, c->len),
                ATTR_BOOL(CKA_TOKEN, true),
                ATTR_BOOL(CKA_PRIVATE, true),
                ATTR_BOOL(CKA_SENSITIVE, true),
                ATTR_BOOL(CKA_EXTRACTABLE, false),
                ATTR_BOOL(aes ? CKA_ENCRYPT : CKA_SIGN, true),
                ATTR_BOOL(aes ? CKA_DECRYPT : CKA_VERIFY, true),
                ATTR(CKA_LABEL, c->label, strlen(c->label)),
        };

        /* The new key first, then the old ones go: a crash in between leaves the old key, or
         * both (the lookup then warns and takes one), never none. */
        x = p11.f->C_CreateObject(s->handle, t, ELEMENTSOF(t), &o);
        if (x != CKR_OK && (rv_session_lost(x) || rv_device_lost(x)))
                return fail(s, "importing", c->label, x, rv);
        if (x != CKR_OK || (!aes && !hmac_works(s, o))) {
                /* This token cannot hold (or cannot use) this key: as upstream, it goes to the
                 * next location, and an older key of that name must not shadow it there. */
                if (x == CKR_OK)
                        (void)p11.f->C_DestroyObject(s->handle, o);
                log_info("PKCS#11 token %s cannot take key %s (%s); it goes elsewhere.",
                         s->display, KEY_ID(c->label),
                         x != CKR_OK ? RV(x) : "HMAC-SHA256 refuses its length");
                r = destroy_objects(s, CKO_SECRET_KEY, c->label, rv);
                return r < 0 ? r : -EOPNOTSUPP;
        }
        r = destroy_objects_but(s, CKO_SECRET_KEY, c->label, o, rv);
        if (r < 0)
                return r;
        log_info("Imported key %s to PKCS#11 token %s.", KEY_ID(c->label), s->display);
        return 0;
}

int keys_pkcs11_secret_import(const Pkcs11Uri *slot, const char *label, AZIOT_KEYS_KEY_USAGE usage,
                              const uint8_t *bytes, size_t len)
{
        SecretCall c = { .label = label, .usage = usage, .in = bytes, .len = len };

        if (check_label(label) < 0 || (!bytes && len > 0))
                return -EINVAL;
        return with_session(slot, do_secret_import, &c);
}

static int do_secret_delete(Session *s, void *userdata, CK_RV *rv)
{
        SecretCall *c = userdata;

        return destroy_objects(s, CKO_SECRET_KEY, c->label, rv);
}

int keys_pkcs11_secret_delete(const Pkcs11Uri *slot, const char *label)
{
        SecretCall c = { .label = label };

        if (check_label(label) < 0)
                return -EINVAL;
        return with_session(slot, do_secret_delete, &c);
}

static int do_hmac(Session *s, void *userdata, CK_RV *rv)
{
        SecretCall *c = userdata;
        CK_MECHANISM mech = { CKM_SHA256_HMAC, NULL, 0 };
        CK_OBJECT_HANDLE o;
        CK_ULONG type, n = KEYS_HMAC_SIZE;
        CK_RV x;
        int r;

        r = find_secret(s, c->label, &o, &type, rv);
        if (r < 0)
                return r;
        if (type == CKK_AES) {
                log_debug("Key %s is an AES key, it cannot sign.", KEY_ID(c->label));
                return -EOPNOTSUPP;
        }
        x = p11.f->C_SignInit(s->handle, &mech, o);
        if (x == CKR_OK)
                x = p11.f->C_Sign(s->handle, (CK_BYTE_PTR)(c->len > 0 ? c->in : c->out), c->len,
                                  c->out, &n);
        if (x != CKR_OK)
                return fail(s, "signing with", c->label, x, rv);
        return n == KEYS_HMAC_SIZE ? 0 : -EIO;
}

int keys_pkcs11_hmac(const Pkcs11Uri *slot, const char *label, const uint8_t *data, size_t len,
                     uint8_t out[KEYS_HMAC_SIZE])
{
        SecretCall c = { .label = label, .in = data, .len = len, .out = out };

        if (check_label(label) < 0 || (!data && len > 0))
                return -EINVAL;
        return with_session(slot, do_hmac, &c);
}

static int do_aead(Session *s, void *userdata, CK_RV *rv)
{
        SecretCall *c = userdata;
        const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p = c->aead;
        CK_GCM_PARAMS gcm = {
                .pIv = (CK_BYTE_PTR)p->iv,
                .ulIvLen = p->iv_len,
                .ulIvBits = p->iv_len * 8,
                .pAAD = (CK_BYTE_PTR)p->aad,
                .ulAADLen = p->aad_len,
                .ulTagBits = KEYS_AEAD_TAG_SIZE * 8,
        };
        CK_MECHANISM mech = { CKM_AES_GCM, &gcm, sizeof(gcm) };
        CK_OBJECT_HANDLE o;
        CK_ULONG type, n;
        uint8_t *plain;
        CK_RV x;
        int r;

        r = find_secret(s, c->label, &o, &type, rv);
        if (r < 0)
                return r;
        if (type != CKK_AES) {
                log_debug("Key %s is not an AES key, it cannot encrypt.", KEY_ID(c->label));
                return -EOPNOTSUPP;
        }

        if (c->encrypt) {
                n = c->len + KEYS_AEAD_TAG_SIZE;
                c->out[0] = KEYS_AEAD_V2;
                x = p11.f->C_EncryptInit(s->handle, &mech, o);
                if (x == CKR_OK)
                        x = p11.f->C_Encrypt(s->handle, (CK_BYTE_PTR)c->in, c->len, c->out + 1, &n);
                if (x == CKR_OK && n != c->len + KEYS_AEAD_TAG_SIZE)
                        x = CKR_FUNCTION_FAILED;
                if (x != CKR_OK)
                        return fail(s, "encrypting with", c->label, x, rv);
                return 0;
        }

        /* Some tokens want room for the tag in the output too: decrypt into a buffer as long as
         * the input, which is wiped afterwards. */
        plain = malloc(c->len);
        if (!plain)
                return -ENOMEM;
        n = c->len;
        x = p11.f->C_DecryptInit(s->handle, &mech, o);
        if (x == CKR_OK)
                x = p11.f->C_Decrypt(s->handle, (CK_BYTE_PTR)c->in + 1, c->len - 1, plain, &n);
        if (x == CKR_OK && n > *c->out_len)
                x = CKR_BUFFER_TOO_SMALL;
        if (x == CKR_OK) {
                memcpy(c->out, plain, n);
                *c->out_len = n;
        }
        OPENSSL_cleanse(plain, c->len);
        free(plain);
        if (x == CKR_ENCRYPTED_DATA_INVALID || x == CKR_ENCRYPTED_DATA_LEN_RANGE) {
                log_debug("Ciphertext for key %s does not authenticate.", KEY_ID(c->label));
                return -EBADE;
        }
        if (x != CKR_OK)
                return fail(s, "decrypting with", c->label, x, rv);
        return 0;
}

static int aead_check(const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p)
{
        if (!p || (!p->iv && p->iv_len > 0) || (!p->aad && p->aad_len > 0) || p->iv_len == 0)
                return -EINVAL;
        return 0;
}

int keys_pkcs11_aead_encrypt(const Pkcs11Uri *slot, const char *label,
                             const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p, const uint8_t *in,
                             size_t len, uint8_t *out)
{
        SecretCall c = {
                .label = label, .aead = p, .in = in, .len = len, .out = out, .encrypt = true,
        };

        if (check_label(label) < 0 || aead_check(p) < 0 || (!in && len > 0) || !out)
                return -EINVAL;
        return with_session(slot, do_aead, &c);
}

int keys_pkcs11_aead_decrypt(const Pkcs11Uri *slot, const char *label,
                             const AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS *p, const uint8_t *in,
                             size_t len, uint8_t *out, size_t *out_len)
{
        SecretCall c = { .label = label, .aead = p, .in = in, .len = len, .out = out,
                         .out_len = out_len };

        if (check_label(label) < 0 || aead_check(p) < 0 || !in || !out_len)
                return -EINVAL;
        if (len < 1 + KEYS_AEAD_TAG_SIZE || in[0] != KEYS_AEAD_V2) {
                log_debug("Not a v2 ciphertext (the only version PKCS#11 keys produce).");
                return -EINVAL;
        }
        return with_session(slot, do_aead, &c);
}

/* ---- configuration ---- */

int keys_pkcs11_set_library(const char *path)
{
        char *copy;

        if (isempty(path) || path[0] != '/') {
                log_error("pkcs11_lib_path must be an absolute path.");
                return -EINVAL;
        }
        copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        pthread_mutex_lock(&p11.lock);
        free(p11.path);
        p11.path = copy;
        pthread_mutex_unlock(&p11.lock);
        return 0;
}

bool keys_pkcs11_has_library(void)
{
        bool b;

        pthread_mutex_lock(&p11.lock);
        b = p11.path;
        pthread_mutex_unlock(&p11.lock);
        return b;
}

static int do_nothing(Session *s, void *userdata, CK_RV *rv)
{
        return 0;
}

int keys_pkcs11_check_slot(const Pkcs11Uri *slot)
{
        return with_session(slot, do_nothing, NULL);
}

void keys_pkcs11_reset(void)
{
        pthread_mutex_lock(&p11.lock);
        for (Session *s = p11.sessions; s; s = s->next)
                if (p11.initialized)
                        session_close(s);
        while (p11.sessions) {
                Session *s = p11.sessions;
                p11.sessions = s->next;
                session_free(s);
        }
        if (p11.initialized)
                (void)p11.f->C_Finalize(NULL);
        p11.initialized = false;
        if (p11.dl)
                dlclose(p11.dl);
        p11.dl = NULL;
        p11.f = NULL;
        free(p11.path);
        p11.path = NULL;
        free(p11.last_load_error);
        p11.last_load_error = NULL;
        pthread_mutex_unlock(&p11.lock);
}
