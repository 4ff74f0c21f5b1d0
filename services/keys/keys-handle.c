/* SPDX-License-Identifier: MIT */
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "keys-handle.h"
#include "base64.h"
#include "utf8.h"
#include "log.h"

static const char *const error_strings[_KEYS_HANDLE_ERR_MAX] = {
        [KEYS_HANDLE_ERR_INVALID] = "invalid handle",
        [KEYS_HANDLE_ERR_NESTED_DERIVED] =
                "nested derived keys are not supported, import the outer derived key first",
        [KEYS_HANDLE_ERR_RESERVED_ID] = "the key " KEYS_HANDLE_VALIDATION_KEY_ID " is reserved",
        [KEYS_HANDLE_ERR_NOT_KEY] = "handle is not for a key",
        [KEYS_HANDLE_ERR_NOT_KEY_PAIR] = "handle is not for a key pair",
        [KEYS_HANDLE_ERR_NOT_DERIVED] = "handle is not for a derived key",
};

const char *keys_handle_error_to_string(KeysHandleError e)
{
        return e > 0 && e < _KEYS_HANDLE_ERR_MAX ? error_strings[e] : NULL;
}

KeysHandle *keys_handle_free(KeysHandle *h)
{
        if (!h)
                return NULL;
        free(h->id);
        free(h->base_handle);
        free(h->derivation_data);
        free(h);
        return NULL;
}

int keys_handle_require(const KeysHandle *h, KeysHandleKind kind)
{
        if (h->kind == kind)
                return 0;
        switch (kind) {
        case KEYS_HANDLE_KEY:
                return KEYS_HANDLE_ERR_NOT_KEY;
        case KEYS_HANDLE_KEY_PAIR:
                return KEYS_HANDLE_ERR_NOT_KEY_PAIR;
        default:
                return KEYS_HANDLE_ERR_NOT_DERIVED;
        }
}

/* ---- the signer over a libaziot-keys function list ---- */

static int aziot_keys_mac(void *userdata, const void *data, size_t len,
                          uint8_t ret_mac[KEYS_HANDLE_MAC_SIZE])
{
        const KeysHandleAziotKeys *ak = userdata;
        size_t n = KEYS_HANDLE_MAC_SIZE;
        AZIOT_KEYS_RC rc;

        rc = ak->sign(KEYS_HANDLE_VALIDATION_KEY_ID, AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL,
                      data, len, ret_mac, &n);
        if (rc == AZIOT_KEYS_RC_ERR_INVALID_PARAMETER) {
                /* Most likely the key does not exist yet (first start, or removed): make it, as
                 * upstream does on first use. Handles minted with a lost key stay invalid. */
                rc = ak->create_key_if_not_exists(KEYS_HANDLE_VALIDATION_KEY_ID,
                                                  AZIOT_KEYS_KEY_USAGE_SIGN);
                n = KEYS_HANDLE_MAC_SIZE;
                if (rc == AZIOT_KEYS_RC_OK)
                        rc = ak->sign(KEYS_HANDLE_VALIDATION_KEY_ID,
                                      AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256, NULL, data, len,
                                      ret_mac, &n);
        }
        if (rc != AZIOT_KEYS_RC_OK || n != KEYS_HANDLE_MAC_SIZE)
                return log_error_errno(EIO, "Failed to MAC a key handle with %s (error %u).",
                                       KEYS_HANDLE_VALIDATION_KEY_ID, rc);
        return 0;
}

void keys_handle_signer_from_aziot_keys(KeysHandleSigner *ret, const KeysHandleAziotKeys *ak)
{
        *ret = (KeysHandleSigner){
                .mac = aziot_keys_mac,
                .userdata = (void *)ak,
        };
}

/* ---- writing sr_json, exactly as serde_json writes it ---- */

typedef struct Buf {
        char *data;
        size_t len, allocated;
} Buf;

static void buf_done(Buf *b)
{
        free(b->data);
        *b = (Buf){};
}

static int buf_put(Buf *b, const void *p, size_t n)
{
        if (b->len + n + 1 > b->allocated) {
                size_t na = MAX(b->allocated * 2, b->len + n + 64);
                char *nd = realloc(b->data, na);

                if (!nd)
                        return -ENOMEM;
                b->data = nd;
                b->allocated = na;
        }
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = 0;
        return 0;
}

static int buf_puts(Buf *b, const char *s)
{
        return buf_put(b, s, strlen(s));
}

/* serde_json's escaping: '"' and '\' escaped, the C0 controls with a short form (\b \t \n \f \r)
 * use it, the others are \u00xx (lower-case hex); everything else, UTF-8 included, is raw. */
static int json_put_string(Buf *b, const char *s)
{
        static const char hex[] = "0123456789abcdef";
        int r = buf_put(b, "\"", 1);

        for (const uint8_t *p = (const uint8_t *)s; r >= 0 && *p; p++) {
                char esc[7] = {'\\', 0};

                switch (*p) {
                case '"':
                case '\\':
                        esc[1] = (char)*p;
                        break;
                case '\b':
                        esc[1] = 'b';
                        break;
                case '\t':
                        esc[1] = 't';
                        break;
                case '\n':
                        esc[1] = 'n';
                        break;
                case '\f':
                        esc[1] = 'f';
                        break;
                case '\r':
                        esc[1] = 'r';
                        break;
                default:
                        if (*p >= 0x20) {
                                r = buf_put(b, p, 1);
                                continue;
                        }
                        memcpy(esc + 1, "u00", 3);
                        esc[4] = hex[*p >> 4];
                        esc[5] = hex[*p & 0xf];
                }
                r = buf_puts(b, esc);
        }
        return r < 0 ? r : buf_put(b, "\"", 1);
}

static int json_put_bytes(Buf *b, const uint8_t *data, size_t len)
{
        int r = buf_put(b, "[", 1);

        for (size_t i = 0; r >= 0 && i < len; i++) {
                char num[8];

                snprintf(num, sizeof(num), i > 0 ? ",%u" : "%u", data[i]);
                r = buf_puts(b, num);
        }
        return r < 0 ? r : buf_put(b, "]", 1);
}

/* {"key_id":<KeyId>,"nonce":"<base64 of 64 random bytes>"}; for Derived, id is the base handle. */
static int sr_json_build(KeysHandleKind kind, const char *id, const uint8_t *data, size_t len,
                         Buf *b)
{
        uint8_t nonce[KEYS_HANDLE_NONCE_SIZE];
        _cleanup_free_ char *nonce_b64 = NULL;
        int r;

        if (RAND_bytes(nonce, sizeof(nonce)) != 1)
                return log_error_errno(EIO, "Failed to generate a handle nonce.");
        nonce_b64 = base64_encode_alloc(nonce, sizeof(nonce));
        if (!nonce_b64)
                return -ENOMEM;

        r = buf_puts(b, kind == KEYS_HANDLE_KEY_PAIR ? "{\"key_id\":{\"KeyPair\":"
                        : kind == KEYS_HANDLE_KEY    ? "{\"key_id\":{\"Key\":"
                                                     : "{\"key_id\":{\"Derived\":[");
        if (r >= 0)
                r = json_put_string(b, id);
        if (r >= 0 && kind == KEYS_HANDLE_DERIVED) {
                r = buf_put(b, ",", 1);
                if (r >= 0)
                        r = json_put_bytes(b, data, len);
                if (r >= 0)
                        r = buf_put(b, "]", 1);
        }
        if (r >= 0)
                r = buf_puts(b, "},\"nonce\":\"");
        if (r >= 0)
                r = buf_puts(b, nonce_b64);
        if (r >= 0)
                r = buf_puts(b, "\"}");
        return r;
}

static int handle_mint(const KeysHandleSigner *s, KeysHandleKind kind, const char *id,
                       const uint8_t *data, size_t len, char **ret)
{
        _cleanup_free_ char *sr_b64 = NULL, *sig_b64 = NULL;
        uint8_t mac[KEYS_HANDLE_MAC_SIZE];
        Buf sr = {};
        int r;

        r = sr_json_build(kind, id, data, len, &sr);
        if (r >= 0)
                r = s->mac(s->userdata, sr.data, sr.len, mac);
        if (r >= 0) {
                sr_b64 = base64_encode_alloc(sr.data, sr.len);
                sig_b64 = base64_encode_alloc(mac, sizeof(mac));
        }
        buf_done(&sr);
        if (r < 0)
                return r;
        if (!sr_b64 || !sig_b64 || asprintf(ret, "sr=%s&sig=%s", sr_b64, sig_b64) < 0)
                return -ENOMEM;
        return 0;
}

static int mint_for_id(const KeysHandleSigner *s, KeysHandleKind kind, const char *id, char **ret)
{
        if (!id || !utf8_is_valid(id, strlen(id)))
                return KEYS_HANDLE_ERR_INVALID;
        if (streq(id, KEYS_HANDLE_VALIDATION_KEY_ID))
                return KEYS_HANDLE_ERR_RESERVED_ID;
        return handle_mint(s, kind, id, NULL, 0, ret);
}

int keys_handle_mint_key_pair(const KeysHandleSigner *s, const char *id, char **ret)
{
        return mint_for_id(s, KEYS_HANDLE_KEY_PAIR, id, ret);
}

int keys_handle_mint_key(const KeysHandleSigner *s, const char *id, char **ret)
{
        return mint_for_id(s, KEYS_HANDLE_KEY, id, ret);
}

int keys_handle_mint_derived(const KeysHandleSigner *s, const char *base_handle,
                             const uint8_t *derivation_data, size_t derivation_data_len, char **ret)
{
        _cleanup_(keys_handle_freep) KeysHandle *base = NULL;
        int r;

        if (!derivation_data && derivation_data_len > 0)
                return -EINVAL;
        r = keys_handle_parse(s, base_handle, &base);
        if (r != 0)
                return r;
        if (base->kind == KEYS_HANDLE_DERIVED)
                return KEYS_HANDLE_ERR_NESTED_DERIVED;
        return handle_mint(s, KEYS_HANDLE_DERIVED, base_handle, derivation_data,
                           derivation_data_len, ret);
}

/* ---- reading sr_json: exactly the shapes above, with serde_json's input rules ---- */

typedef struct Json {
        const char *p, *end;
} Json;

static void json_skip_ws(Json *j)
{
        while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
                j->p++;
}

static bool json_accept(Json *j, char c)
{
        json_skip_ws(j);
        if (j->p < j->end && *j->p == c) {
                j->p++;
                return true;
        }
        return false;
}

static int json_hex4(Json *j, uint32_t *ret)
{
        uint32_t v = 0;

        if (j->end - j->p < 4)
                return -EINVAL;
        for (int i = 0; i < 4; i++) {
                char c = *j->p++;
                int d = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;

                if (d < 0)
                        return -EINVAL;
                v = v << 4 | (uint32_t)d;
        }
        *ret = v;
        return 0;
}

/* A \u escape (after the "\u"), surrogate pairs combined; lone surrogates are errors. */
static int json_unicode_escape(Json *j, Buf *out)
{
        uint32_t c, low;
        char u[4];
        size_t n;

        if (json_hex4(j, &c) < 0)
                return -EINVAL;
        if (c >= 0xdc00 && c <= 0xdfff)
                return -EINVAL;
        if (c >= 0xd800 && c <= 0xdbff) {
                if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                        return -EINVAL;
                j->p += 2;
                if (json_hex4(j, &low) < 0 || low < 0xdc00 || low > 0xdfff)
                        return -EINVAL;
                c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
        }
        if (c < 0x80)
                u[0] = (char)c, n = 1;
        else if (c < 0x800)
                u[0] = (char)(0xc0 | c >> 6), u[1] = (char)(0x80 | (c & 0x3f)), n = 2;
        else if (c < 0x10000)
                u[0] = (char)(0xe0 | c >> 12), u[1] = (char)(0x80 | ((c >> 6) & 0x3f)),
                u[2] = (char)(0x80 | (c & 0x3f)), n = 3;
        else
                u[0] = (char)(0xf0 | c >> 18), u[1] = (char)(0x80 | ((c >> 12) & 0x3f)),
                u[2] = (char)(0x80 | ((c >> 6) & 0x3f)), u[3] = (char)(0x80 | (c & 0x3f)), n = 4;
        return buf_put(out, u, n);
}

static int json_escape(Json *j, Buf *out)
{
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *k;

        if (j->p >= j->end)
                return -EINVAL;
        if (*j->p == 'u') {
                j->p++;
                return json_unicode_escape(j, out);
        }
        k = strchr(from, *j->p);
        if (!k || !*k)
                return -EINVAL;
        j->p++;
        return buf_put(out, &to[k - from], 1);
}

/* A string, unescaped into a NUL-terminated buffer. The input was checked to be UTF-8. */
static int json_string(Json *j, Buf *out)
{
        int r = buf_put(out, "", 0);

        if (r < 0 || !json_accept(j, '"'))
                return r < 0 ? r : -EINVAL;
        while (j->p < j->end && *j->p != '"') {
                uint8_t c = (uint8_t)*j->p++;

                if (c < 0x20)
                        return -EINVAL;
                r = c == '\\' ? json_escape(j, out) : buf_put(out, &c, 1);
                if (r < 0)
                        return r;
        }
        if (j->p >= j->end)
                return -EINVAL;
        j->p++;
        return 0;
}

/* A string that becomes a C string: an embedded NUL cannot be an id. */
static int json_c_string(Json *j, char **ret)
{
        Buf b = {};
        int r;

        r = json_string(j, &b);
        if (r >= 0 && strlen(b.data) != b.len)
                r = -EINVAL;
        if (r < 0) {
                buf_done(&b);
                return r;
        }
        *ret = b.data;
        return 0;
}

/* An unsigned integer of 0..255 in JSON syntax (no sign, fraction, exponent, leading zeros). */
static int json_byte(Json *j, uint8_t *ret)
{
        unsigned v = 0;
        const char *start;

        json_skip_ws(j);
        start = j->p;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9' && j->p - start < 4)
                v = v * 10 + (unsigned)(*j->p++ - '0');
        if (j->p == start || v > 255 || (*start == '0' && j->p - start > 1))
                return -EINVAL;
        if (j->p < j->end &&
            (*j->p == '.' || *j->p == 'e' || *j->p == 'E' || (*j->p >= '0' && *j->p <= '9')))
                return -EINVAL;
        *ret = (uint8_t)v;
        return 0;
}

static int json_byte_array(Json *j, KeysHandle *h)
{
        Buf b = {};
        int r = buf_put(&b, "", 0);

        if (r >= 0 && !json_accept(j, '['))
                r = -EINVAL;
        if (r >= 0 && !json_accept(j, ']'))
                for (;;) {
                        uint8_t v;

                        r = json_byte(j, &v);
                        if (r >= 0)
                                r = buf_put(&b, &v, 1);
                        if (r < 0 || json_accept(j, ']'))
                                break;
                        if (!json_accept(j, ',')) {
                                r = -EINVAL;
                                break;
                        }
                }
        if (r < 0) {
                buf_done(&b);
                return r;
        }
        h->derivation_data = (uint8_t *)b.data;
        h->derivation_data_len = b.len;
        return 0;
}

/* {"KeyPair":"id"} | {"Key":"id"} | {"Derived":["handle",[bytes]]} */
static int json_key_id(Json *j, KeysHandle *h)
{
        _cleanup_free_ char *tag = NULL;
        int r;

        if (!json_accept(j, '{'))
                return -EINVAL;
        r = json_c_string(j, &tag);
        if (r < 0 || !json_accept(j, ':'))
                return r < 0 ? r : -EINVAL;

        if (streq(tag, "KeyPair") || streq(tag, "Key")) {
                h->kind = streq(tag, "Key") ? KEYS_HANDLE_KEY : KEYS_HANDLE_KEY_PAIR;
                r = json_c_string(j, &h->id);
        } else if (streq(tag, "Derived")) {
                h->kind = KEYS_HANDLE_DERIVED;
                if (!json_accept(j, '['))
                        return -EINVAL;
                r = json_c_string(j, &h->base_handle);
                if (r >= 0 && !json_accept(j, ','))
                        r = -EINVAL;
                if (r >= 0)
                        r = json_byte_array(j, h);
                if (r >= 0 && !json_accept(j, ']'))
                        r = -EINVAL;
        } else
                r = -EINVAL;
        if (r >= 0 && !json_accept(j, '}'))
                r = -EINVAL;
        return r;
}

/* {"key_id":…,"nonce":"…"} in either order, each exactly once, nothing else. */
static int json_sr(const char *s, size_t len, KeysHandle *h)
{
        Json j = {.p = s, .end = s + len};
        bool have_key_id = false, have_nonce = false;
        int r;

        if (!json_accept(&j, '{'))
                return -EINVAL;
        do {
                _cleanup_free_ char *name = NULL;
                Buf nonce = {};

                r = json_c_string(&j, &name);
                if (r < 0 || !json_accept(&j, ':'))
                        return r < 0 ? r : -EINVAL;
                if (streq(name, "key_id") && !have_key_id) {
                        have_key_id = true;
                        r = json_key_id(&j, h);
                } else if (streq(name, "nonce") && !have_nonce) {
                        have_nonce = true;
                        r = json_string(&j, &nonce);
                        buf_done(&nonce);
                } else
                        r = -EINVAL;
                if (r < 0)
                        return r;
        } while (json_accept(&j, ','));

        if (!json_accept(&j, '}') || !have_key_id || !have_nonce)
                return -EINVAL;
        json_skip_ws(&j);
        return j.p == j.end ? 0 : -EINVAL;
}

/* ---- verification ---- */

/* Finds the values of the sr= and sig= parameters (the last of each, other parameters ignored). */
static int handle_split(const char *handle, const char **sr, size_t *sr_len, const char **sig,
                        size_t *sig_len)
{
        *sr = *sig = NULL;
        for (const char *p = handle;;) {
                size_t l = strcspn(p, "&");

                if (l >= 3 && strncmp(p, "sr=", 3) == 0)
                        *sr = p + 3, *sr_len = l - 3;
                else if (l >= 4 && strncmp(p, "sig=", 4) == 0)
                        *sig = p + 4, *sig_len = l - 4;
                if (!p[l])
                        break;
                p += l + 1;
        }
        return *sr && *sig ? 0 : KEYS_HANDLE_ERR_INVALID;
}

/* Decodes and authenticates the sr bytes of handle. */
static int handle_authenticate(const KeysHandleSigner *s, const char *handle, uint8_t **ret_sr,
                               size_t *ret_sr_len)
{
        _cleanup_free_ uint8_t *sr = NULL, *sig = NULL;
        const char *sr_b64, *sig_b64;
        size_t sr_b64_len = 0, sig_b64_len = 0, sr_len = 0, sig_len = 0;
        uint8_t mac[KEYS_HANDLE_MAC_SIZE];
        int r;

        if (!handle || strnlen(handle, KEYS_HANDLE_MAX_LENGTH + 1) > KEYS_HANDLE_MAX_LENGTH)
                return KEYS_HANDLE_ERR_INVALID;
        r = handle_split(handle, &sr_b64, &sr_b64_len, &sig_b64, &sig_b64_len);
        if (r != 0)
                return r;
        r = base64_decode_alloc(sr_b64, sr_b64_len, &sr, &sr_len);
        if (r >= 0)
                r = base64_decode_alloc(sig_b64, sig_b64_len, &sig, &sig_len);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || sig_len != KEYS_HANDLE_MAC_SIZE || !utf8_is_valid((char *)sr, sr_len))
                return KEYS_HANDLE_ERR_INVALID;

        r = s->mac(s->userdata, sr, sr_len, mac);
        if (r < 0)
                return r;
        if (CRYPTO_memcmp(mac, sig, sizeof(mac)) != 0) {
                log_debug("Key handle with a wrong MAC.");
                return KEYS_HANDLE_ERR_INVALID;
        }
        *ret_sr = TAKE_PTR(sr);
        *ret_sr_len = sr_len;
        return 0;
}

/* depth 0: the handle given; depth 1: the base of a Derived handle, which must not be Derived. */
static int handle_parse(const KeysHandleSigner *s, const char *handle, unsigned depth,
                        KeysHandle **ret)
{
        _cleanup_(keys_handle_freep) KeysHandle *h = NULL, *base = NULL;
        _cleanup_free_ uint8_t *sr = NULL;
        size_t sr_len = 0;
        int r;

        r = handle_authenticate(s, handle, &sr, &sr_len);
        if (r != 0)
                return r;
        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        r = json_sr((const char *)sr, sr_len, h);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                log_debug("Authentic key handle with malformed content.");
                return KEYS_HANDLE_ERR_INVALID;
        }

        if (h->kind == KEYS_HANDLE_DERIVED) {
                if (depth > 0)
                        return KEYS_HANDLE_ERR_NESTED_DERIVED;
                r = handle_parse(s, h->base_handle, depth + 1, &base);
                if (r != 0)
                        return r;
                h->base_kind = base->kind;
                h->id = TAKE_PTR(base->id);
        } else if (streq(h->id, KEYS_HANDLE_VALIDATION_KEY_ID))
                return KEYS_HANDLE_ERR_RESERVED_ID;

        *ret = TAKE_PTR(h);
        return 0;
}

int keys_handle_parse(const KeysHandleSigner *s, const char *handle, KeysHandle **ret)
{
        return handle_parse(s, handle, 0, ret);
}
