/* SPDX-License-Identifier: MIT */
/* The HTTP contract of keyd.sock (spec §2.3, interfaces/keys.yaml), translated to org.aziot.Keys1
 * (dbus/org.aziot.Keys1.xml). Request bodies are decoded the way upstream's types are; every call
 * carries the client's socket as option "client-socket" so that keyd authorizes the client, not
 * the gateway. */
#include <errno.h>
#include <string.h>

#include "keys-routes.h"
#include "log.h"
#include "macro.h"

enum {
        V2020_09_01,
        V2021_05_01,
};

static const char *const keys_api_versions[] = {
        [V2020_09_01] = "2020-09-01",
        [V2021_05_01] = "2021-05-01",
};

/* 400 'parameter "<name>" has an invalid value' with its cause, logged as upstream logs it. */
static void reply_invalid_parameter(RouteCall *call, const char *name, const char *cause)
{
        Buffer message = {};

        buffer_appendf(&message, "parameter \"%s\" has an invalid value\ncaused by: %s", name,
                       cause);
        log_info("!!! parameter \"%s\" has an invalid value", name);
        log_info("!!! caused by: %s", cause);
        route_reply_error(call, 400, message.data ?: "a parameter has an invalid value");
        buffer_done(&message);
}

/* D-Bus strings cannot hold U+0000, which JSON and percent-encoding can: such an argument is
 * refused here with upstream's answer. An id fails there as a C string, with Rust's NulError for
 * cause; a handle fails to decode. Returns 1 when s has no NUL, 0 once answered. */
static int check_no_nul(RouteCall *call, const char *name, const char *s, size_t len)
{
        const char *nul = memchr(s, 0, len);
        char cause[80];

        if (!nul)
                return 1;
        if (streq(name, "handle")) {
                reply_invalid_parameter(call, name, "invalid handle");
                return 0;
        }
        snprintf(cause, sizeof(cause), "nul byte found in provided data at position: %zu",
                 (size_t)(nul - s));
        reply_invalid_parameter(call, name, cause);
        return 0;
}

/* --- Replies --- */

static int reply_string_member(RouteCall *call, sd_bus_message *reply, const char *member)
{
        JsonWriter w = {};
        const char *s;
        int r;

        r = sd_bus_message_read(reply, "s", &s);
        if (r < 0)
                return r;
        json_begin_object(&w);
        json_key(&w, member);
        json_string(&w, s, strlen(s));
        json_end_object(&w);
        route_reply(call, 200, &w);
        buffer_done(&w.out);
        return 0;
}

static int reply_bytes_member(RouteCall *call, sd_bus_message *reply, const char *member)
{
        JsonWriter w = {};
        const void *data;
        size_t n;
        int r;

        r = sd_bus_message_read_array(reply, 'y', &data, &n);
        if (r < 0)
                return r;
        json_begin_object(&w);
        json_key(&w, member);
        json_base64(&w, data, n);
        json_end_object(&w);
        route_reply(call, 200, &w);
        buffer_done(&w.out);
        return 0;
}

static int on_key_handle(RouteCall *call, sd_bus_message *reply)
{
        return reply_string_member(call, reply, "keyHandle");
}

static int on_no_content(RouteCall *call, sd_bus_message *reply)
{
        route_reply_no_content(call);
        return 0;
}

/* --- Calls --- */

/* Sends member(s, options) for the handle-only and id-only methods. */
static int call_with_string(RouteCall *call, const char *member, const char *s,
                            int (*on_reply)(RouteCall *, sd_bus_message *))
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = route_new_method_call(call, member, &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "s", s);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_reply);
        return r;
}

/* Appends a ':'- or ','-separated list as "as" (an empty string is one empty element). */
static int append_split(sd_bus_message *m, const char *s, char separator)
{
        int r;

        r = sd_bus_message_open_container(m, 'a', "s");
        for (const char *p = s; r >= 0;) {
                size_t n = strcspn(p, (char[]){ separator, 0 });
                _cleanup_free_ char *item = strndup(p, n);

                if (!item)
                        return -ENOMEM;
                r = sd_bus_message_append(m, "s", item);
                if (!p[n])
                        break;
                p += n + 1;
        }
        if (r < 0)
                return r;
        return sd_bus_message_close_container(m);
}

/* --- POST /key, DELETE /key --- */

static int check_usage(const char *s, size_t len, char *message, size_t size)
{
        static const char *const usages[] = { "derive", "encrypt", "sign" };

        for (const char *p = s; p <= s + len;) {
                size_t n = strcspn(p, ",");
                bool known = false;

                for (size_t i = 0; i < ELEMENTSOF(usages); i++)
                        known = known || (strlen(usages[i]) == n && memcmp(usages[i], p, n) == 0);
                if (!known) {
                        snprintf(message, size,
                                 "unknown variant `%.*s`, expected one of `derive`, `encrypt`, "
                                 "`sign`",
                                 (int)MIN(n, (size_t)128), p);
                        return -EINVAL;
                }
                p += n + 1;
        }
        return 0;
}

static const JsonField create_key_fields[] = {
        { "keyId", JSON_FIELD_STRING },
        { "usage", JSON_FIELD_STRING, .check = check_usage },
        { "keyBytes", JSON_FIELD_BYTES, .optional = true },
};

static int handle_create_key(RouteCall *call)
{
        _cleanup_route_body_ RouteBody d = ROUTE_BODY(create_key_fields);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const JsonFieldValue *id = &d.values[0], *usage = &d.values[1], *bytes = &d.values[2];
        int r;

        r = route_body_decode(call, &d);
        if (r <= 0)
                return r;
        if (!check_no_nul(call, "id", id->data, id->len))
                return 0;

        /* With key bytes it is an import, which always overwrites; else create-if-not-exists. */
        r = route_new_method_call(call, bytes->present ? "ImportKey" : "CreateKeyIfNotExists", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "s", id->data);
        if (r >= 0 && bytes->present)
                r = sd_bus_message_append_array(m, 'y', bytes->data, bytes->len);
        if (r >= 0)
                r = append_split(m, usage->data, ',');
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_key_handle);
        return r;
}

static const JsonField handle_fields[] = {
        { "keyHandle", JSON_FIELD_STRING },
};

static int handle_delete(RouteCall *call, const char *member)
{
        _cleanup_route_body_ RouteBody d = ROUTE_BODY(handle_fields);
        int r;

        r = route_body_decode(call, &d);
        if (r <= 0)
                return r;
        if (!check_no_nul(call, "handle", d.values[0].data, d.values[0].len))
                return 0;
        return call_with_string(call, member, d.values[0].data, on_no_content);
}

static int handle_delete_key(RouteCall *call)
{
        return handle_delete(call, "DeleteKey");
}

/* --- POST /keypair, DELETE /keypair --- */

static const JsonField create_key_pair_fields[] = {
        { "keyId", JSON_FIELD_STRING },
        { "preferredAlgorithms", JSON_FIELD_STRING, .optional = true },
};

static int handle_create_key_pair(RouteCall *call)
{
        _cleanup_route_body_ RouteBody d = ROUTE_BODY(create_key_pair_fields);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const JsonFieldValue *id = &d.values[0], *algorithms = &d.values[1];
        int r;

        r = route_body_decode(call, &d);
        if (r <= 0)
                return r;
        if (!check_no_nul(call, "id", id->data, id->len))
                return 0;

        r = route_new_method_call(call, "CreateKeyPairIfNotExists", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "s", id->data);
        /* Absent: the empty list, keyd's default. Present: split on ':' as given (keyd drops
         * names it does not know, and an empty result is its error to report). */
        if (r >= 0)
                r = algorithms->present ? append_split(m, algorithms->data, ':')
                                        : sd_bus_message_append(m, "as", 0);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_key_handle);
        return r;
}

static int handle_delete_key_pair(RouteCall *call)
{
        return handle_delete(call, "DeleteKeyPair");
}

/* --- GET /key/{id}, GET /keypair/{id}, POST /keypair/{id} --- */

static int handle_load(RouteCall *call, const char *member)
{
        const char *id = call->params[0];

        if (!check_no_nul(call, "id", id, call->param_lens[0]))
                return 0;
        return call_with_string(call, member, id, on_key_handle);
}

static int handle_load_key(RouteCall *call)
{
        return handle_load(call, "LoadKey");
}

static int handle_load_key_pair(RouteCall *call)
{
        return handle_load(call, "LoadKeyPair");
}

static const JsonField move_fields[] = {
        { "from", JSON_FIELD_STRING },
};

/* POST /key/{id} and POST /keypair/{id}: only key pairs move, checked after the body as upstream
 * does. */
static int handle_move(RouteCall *call, const char *type)
{
        _cleanup_route_body_ RouteBody d = ROUTE_BODY(move_fields);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const char *to = call->params[0];
        const JsonFieldValue *from = &d.values[0];
        Buffer message = {};
        int r;

        r = route_body_decode(call, &d);
        if (r <= 0)
                return r;
        if (from->len == call->param_lens[0] && memcmp(from->data, to, from->len) == 0) {
                route_reply_error(call, 400, "source and destination for move are identical");
                return 0;
        }
        if (!streq(type, "keypair")) {
                buffer_append_str(&message, "invalid type ");
                rust_debug_quote(&message, type, strlen(type));
                route_reply_error(call, 400, message.data ?: "invalid type");
                buffer_done(&message);
                return 0;
        }
        /* Upstream names the two ids "from" and "to" here. */
        if (!check_no_nul(call, "from", from->data, from->len) ||
            !check_no_nul(call, "to", to, call->param_lens[0]))
                return 0;

        r = route_new_method_call(call, "MoveKeyPair", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", from->data, to);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_no_content);
        return r;
}

static int handle_move_key(RouteCall *call)
{
        return handle_move(call, "key");
}

static int handle_move_key_pair(RouteCall *call)
{
        return handle_move(call, "keypair");
}

/* --- POST /parameters/{name} --- */

/* "algorithm" comes back as a string, the other parameters as bytes (then base64). */
static int on_parameter(RouteCall *call, sd_bus_message *reply)
{
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(reply, &type, &contents);
        if (r < 0)
                return r;
        if (type != 'v' || !contents)
                return -EBADMSG;
        r = sd_bus_message_enter_container(reply, 'v', contents);
        if (r < 0)
                return r;
        if (streq(contents, "s"))
                return reply_string_member(call, reply, "value");
        if (streq(contents, "ay"))
                return reply_bytes_member(call, reply, "value");
        return -EBADMSG;
}

static int handle_get_parameter(RouteCall *call)
{
        _cleanup_route_body_ RouteBody d = ROUTE_BODY(handle_fields);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const char *name = call->params[0];
        int r;

        r = route_body_decode(call, &d);
        if (r <= 0)
                return r;
        if (!check_no_nul(call, "handle", d.values[0].data, d.values[0].len))
                return 0;
        /* A name holding U+0000 is no parameter upstream knows (400 "a parameter has an invalid
         * value", after the handle is checked): keyd is asked for one it does not know either. */
        if (memchr(name, 0, call->param_lens[0]))
                name = "";

        r = route_new_method_call(call, "GetKeyPairPublicParameter", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", d.values[0].data, name);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_parameter);
        return r;
}

/* --- POST /sign, /encrypt, /decrypt --- */

static int on_signature(RouteCall *call, sd_bus_message *reply)
{
        return reply_bytes_member(call, reply, "signature");
}

static int on_ciphertext(RouteCall *call, sd_bus_message *reply)
{
        return reply_bytes_member(call, reply, "ciphertext");
}

static int on_plaintext(RouteCall *call, sd_bus_message *reply)
{
        return reply_bytes_member(call, reply, "plaintext");
}

static const JsonField ecdsa_fields[] = {
        { "digest", JSON_FIELD_BYTES },
};

static const JsonField hmac_fields[] = {
        { "message", JSON_FIELD_BYTES },
};

static const JsonVariant sign_variants[] = {
        { "ECDSA", "struct variant Parameters::Ecdsa", ecdsa_fields, ELEMENTSOF(ecdsa_fields) },
        { "HMAC-SHA256", "struct variant Parameters::HmacSha256", hmac_fields,
          ELEMENTSOF(hmac_fields) },
};

static const JsonField sign_fields[] = {
        { "keyHandle", JSON_FIELD_STRING },
        { "algorithm", JSON_FIELD_FLATTEN },
        { "parameters", JSON_FIELD_FLATTEN },
};

/* Reads the flattened algorithm/parameters pair of d into params. Returns the variant, or -1
 * once answered (422). */
static int decode_algorithm(RouteCall *call, const RouteBody *d, const JsonVariant *variants,
                            size_t n, JsonFieldValue *params)
{
        JsonError error;
        int v;

        v = json_read_flattened_enum("algorithm", &d->values[1], "parameters", &d->values[2],
                                     variants, n, d->end_line, d->end_column, params, &error);
        if (v == -EINVAL) {
                route_reply_json_error(call, &error);
                return -1;
        }
        return v;
}

static int handle_sign(RouteCall *call)
{
        _cleanup_route_body_ RouteBody d = ROUTE_BODY(sign_fields);
        _cleanup_route_body_ RouteBody p = ROUTE_BODY(ecdsa_fields); /* both variants have one field */
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int v, r;

        r = route_body_decode(call, &d);
        if (r <= 0)
                return r;
        v = decode_algorithm(call, &d, sign_variants, ELEMENTSOF(sign_variants), p.values);
        if (v < -1)
                return v;
        if (v < 0)
                return 0;
        if (!check_no_nul(call, "handle", d.values[0].data, d.values[0].len))
                return 0;

        r = route_new_method_call(call, "Sign", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", d.values[0].data, sign_variants[v].name);
        if (r >= 0)
                r = sd_bus_message_append_array(m, 'y', p.values[0].data, p.values[0].len);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_signature);
        return r;
}

static const JsonField aead_fields[] = {
        { "iv", JSON_FIELD_BYTES },
        { "aad", JSON_FIELD_BYTES },
};

static const JsonVariant cipher_variants[] = {
        { "AEAD", "struct variant Parameters::Aead", aead_fields, ELEMENTSOF(aead_fields) },
        { "RSA-PKCS1", "unit variant Parameters::RsaPkcs1", NULL, 0 },
        { "RSA-NO-PADDING", "unit variant Parameters::RsaNoPadding", NULL, 0 },
};

static const JsonField encrypt_fields[] = {
        { "keyHandle", JSON_FIELD_STRING },
        { "algorithm", JSON_FIELD_FLATTEN },
        { "parameters", JSON_FIELD_FLATTEN },
        { "plaintext", JSON_FIELD_BYTES },
};

static const JsonField decrypt_fields[] = {
        { "keyHandle", JSON_FIELD_STRING },
        { "algorithm", JSON_FIELD_FLATTEN },
        { "parameters", JSON_FIELD_FLATTEN },
        { "ciphertext", JSON_FIELD_BYTES },
};

static int append_bytes_option(sd_bus_message *m, const char *name, const JsonFieldValue *v)
{
        int r;

        r = sd_bus_message_open_container(m, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", name);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'v', "ay");
        if (r >= 0)
                r = sd_bus_message_append_array(m, 'y', v->data, v->len);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

/* Encrypt and Decrypt: (handle, algorithm, data, options with iv and aad for AEAD). */
static int handle_cipher(RouteCall *call, RouteBody *d, const char *member,
                         int (*on_reply)(RouteCall *, sd_bus_message *))
{
        _cleanup_route_body_ RouteBody p = ROUTE_BODY(aead_fields);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const JsonFieldValue *data = &d->values[3];
        int v, r;

        r = route_body_decode(call, d);
        if (r <= 0)
                return r;
        v = decode_algorithm(call, d, cipher_variants, ELEMENTSOF(cipher_variants), p.values);
        if (v < -1)
                return v;
        if (v < 0)
                return 0;
        if (!check_no_nul(call, "handle", d->values[0].data, d->values[0].len))
                return 0;

        r = route_new_method_call(call, member, &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", d->values[0].data, cipher_variants[v].name);
        if (r >= 0)
                r = sd_bus_message_append_array(m, 'y', data->data, data->len);
        if (r >= 0)
                r = route_open_options(call, m);
        if (r >= 0 && cipher_variants[v].fields) {
                r = append_bytes_option(m, "iv", &p.values[0]);
                if (r >= 0)
                        r = append_bytes_option(m, "aad", &p.values[1]);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = route_send(call, m, on_reply);
        return r;
}

static int handle_encrypt(RouteCall *call)
{
        _cleanup_route_body_ RouteBody d = ROUTE_BODY(encrypt_fields);

        return handle_cipher(call, &d, "Encrypt", on_ciphertext);
}

static int handle_decrypt(RouteCall *call)
{
        _cleanup_route_body_ RouteBody d = ROUTE_BODY(decrypt_fields);

        return handle_cipher(call, &d, "Decrypt", on_plaintext);
}

/* --- POST /derivedkey, POST /derivedkey/export --- */

static const JsonField derive_fields[] = {
        { "baseKeyHandle", JSON_FIELD_STRING },
        { "derivationData", JSON_FIELD_BYTES },
};

static int handle_create_derived_key(RouteCall *call)
{
        _cleanup_route_body_ RouteBody d = ROUTE_BODY(derive_fields);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = route_body_decode(call, &d);
        if (r <= 0)
                return r;
        if (!check_no_nul(call, "handle", d.values[0].data, d.values[0].len))
                return 0;

        r = route_new_method_call(call, "CreateDerivedKey", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "s", d.values[0].data);
        if (r >= 0)
                r = sd_bus_message_append_array(m, 'y', d.values[1].data, d.values[1].len);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_key_handle);
        return r;
}

static int on_exported_key(RouteCall *call, sd_bus_message *reply)
{
        return reply_bytes_member(call, reply, "key");
}

static int handle_export_derived_key(RouteCall *call)
{
        _cleanup_route_body_ RouteBody d = ROUTE_BODY(handle_fields);
        int r;

        r = route_body_decode(call, &d);
        if (r <= 0)
                return r;
        if (!check_no_nul(call, "handle", d.values[0].data, d.values[0].len))
                return 0;
        return call_with_string(call, "ExportDerivedKey", d.values[0].data, on_exported_key);
}

/* --- The tables --- */

#define ALL V2020_09_01, V2021_05_01

/* Every route accepts both api-versions, as upstream registers them all from 2020-09-01 on. */
static const Route keys_routes[] = {
        { HTTP_POST, "/derivedkey", ALL, handle_create_derived_key },
        { HTTP_POST, "/key", ALL, handle_create_key },
        { HTTP_DELETE, "/key", ALL, handle_delete_key },
        { HTTP_POST, "/keypair", ALL, handle_create_key_pair },
        { HTTP_DELETE, "/keypair", ALL, handle_delete_key_pair },
        { HTTP_POST, "/decrypt", ALL, handle_decrypt },
        { HTTP_POST, "/encrypt", ALL, handle_encrypt },
        { HTTP_POST, "/derivedkey/export", ALL, handle_export_derived_key },
        { HTTP_POST, "/parameters/*", ALL, handle_get_parameter },
        { HTTP_GET, "/key/*", ALL, handle_load_key },
        { HTTP_POST, "/key/*", ALL, handle_move_key },
        { HTTP_GET, "/keypair/*", ALL, handle_load_key_pair },
        { HTTP_POST, "/keypair/*", ALL, handle_move_key_pair },
        { HTTP_POST, "/sign", ALL, handle_sign },
};

/* keyd puts upstream's texts in its error messages. */
static const RouteError keys_errors[] = {
        { "org.aziot.Keys1.Error.InvalidParameter", 400, NULL },
        { "org.aziot.Keys1.Error.NotFound", 400, "a parameter has an invalid value" },
        { "org.aziot.Keys1.Error.NotAuthorized", 401, NULL },
};

const Service keys_service = {
        .name = "keyd",
        .bus_name = "org.aziot.Keys1",
        .object_path = "/org/aziot/Keys1",
        .interface = "org.aziot.Keys1",
        .api_versions = keys_api_versions,
        .n_api_versions = ELEMENTSOF(keys_api_versions),
        .routes = keys_routes,
        .n_routes = ELEMENTSOF(keys_routes),
        .errors = keys_errors,
        .n_errors = ELEMENTSOF(keys_errors),
};
