/* SPDX-License-Identifier: MIT */
/* The bus surface of aziot-keyd: the org.aziot.Keys1 vtable and its handlers. Each handler reads its
 * arguments, validates them, authorizes (possibly asking polkit, in which case the call is dispatched
 * again when polkit answers, so nothing before that step changes state), acts through the key store,
 * and replies. Error messages use upstream's wording: the gateway passes them on to HTTP clients. */
#include "bus-authorize.h"
#include "keyd.h"
#include "keys-handle.h"
#include "keys-private.h"
#include "log.h"
#include "macro.h"

enum {
        OPTION_CLIENT_SOCKET = 1 << 0,
        OPTION_IV = 1 << 1,
        OPTION_AAD = 1 << 2,
};

typedef struct KeysOptions {
        unsigned allowed, present; /* OPTION_IV, OPTION_AAD */
        int client_socket;         /* owned by the message; -EBADF when not passed */
        const void *iv, *aad;
        size_t iv_len, aad_len;
} KeysOptions;

static int reply_invalid_parameter(sd_bus_error *error, const char *name, const char *cause)
{
        if (cause)
                return sd_bus_error_setf(error, KEYS_ERROR_INVALID_PARAMETER,
                                         "parameter \"%s\" has an invalid value\ncaused by: %s",
                                         name, cause);
        return sd_bus_error_setf(error, KEYS_ERROR_INVALID_PARAMETER,
                                 "parameter \"%s\" has an invalid value", name);
}

/* Maps a store return code onto a bus error. ERR_INVALID_PARAMETER covers "no such key", which the
 * caller turns into NotFound where that is what it means. */
static int reply_store_error(sd_bus_error *error, AZIOT_KEYS_RC rc, const char *what)
{
        if (rc == AZIOT_KEYS_RC_ERR_INVALID_PARAMETER)
                return sd_bus_error_set(error, KEYS_ERROR_INVALID_PARAMETER,
                                        "a parameter has an invalid value");
        log_warning("%s failed in the key store (%u).", what, rc);
        return sd_bus_error_set(error, KEYS_ERROR_FAILED, "internal error");
}

static int read_byte_variant(sd_bus_message *m, const char *name, const void **ret, size_t *ret_len,
                             sd_bus_error *error)
{
        int r = sd_bus_message_enter_container(m, 'v', "ay");

        if (r < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Option \"%s\" must be of type ay.", name);
        r = sd_bus_message_read_array(m, 'y', ret, ret_len);
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int read_option(sd_bus_message *m, const char *name, void *userdata, sd_bus_error *error)
{
        KeysOptions *o = userdata;
        int r;

        if (streq(name, "iv") && (o->allowed & OPTION_IV)) {
                o->present |= OPTION_IV;
                r = read_byte_variant(m, name, &o->iv, &o->iv_len, error);
        } else if (streq(name, "aad") && (o->allowed & OPTION_AAD)) {
                o->present |= OPTION_AAD;
                r = read_byte_variant(m, name, &o->aad, &o->aad_len, error);
        } else
                return 0;
        return r < 0 ? r : 1;
}

/* Reads the trailing a{sv}; only the options in allowed are accepted. */
static int read_options(sd_bus_message *m, unsigned allowed, KeysOptions *ret, sd_bus_error *error)
{
        *ret = (KeysOptions){ .allowed = allowed };
        return bus_read_options(m, allowed & OPTION_CLIENT_SOCKET, &ret->client_socket,
                                read_option, ret, error);
}

static BusAuthContext auth_context(Manager *m)
{
        return (BusAuthContext){
                .gateway_uid = m->gateway_uid,
                .sender_uids = &m->sender_uids,
                .principals = &m->principals,
                .polkit_registry = &m->polkit_registry,
        };
}

/* Handle operations need no authorization, but a socket passed by a sender that may not delegate is
 * refused all the same: it must not look as if that were allowed. */
/* The process at the other end of the private connection msg came in on, NULL for the bus. */
static const PeerCred *connection_peer(Manager *m, sd_bus_message *msg)
{
        PrivateConnection *c = private_connection_of(m, msg);

        return c ? private_connection_opener(c) : NULL;
}

static int check_delegation(Manager *m, sd_bus_message *msg, const KeysOptions *o,
                            sd_bus_error *error)
{
        BusAuthContext ctx = auth_context(m);
        uid_t uid;
        int r;

        r = bus_check_delegation(&ctx, msg, connection_peer(m, msg), o->client_socket, &uid);
        if (r == -EPERM)
                return sd_bus_error_setf(error, KEYS_ERROR_NOT_AUTHORIZED,
                                         "user %u may not act for another process", (unsigned)uid);
        return r;
}

static int reply_not_authorized(sd_bus_error *error, uid_t uid, const char *id)
{
        return sd_bus_error_setf(error, KEYS_ERROR_NOT_AUTHORIZED,
                                 "user %u is not authorized to access the key %s", (unsigned)uid, id);
}

/* Authorizes the caller for id (and to, for a move). The handle-validation key stays out of reach
 * even of root: with it, handles to any key can be forged. Returns 1 when allowed, 0 when polkit was
 * asked (the handler returns 1 and runs again with the answer), negative with error set otherwise. */
static int authorize(Manager *m, sd_bus_message *msg, const KeysOptions *o, const char *action,
                     const char *id, const char *to, sd_bus_error *error)
{
        const char *details[] = { "key_id", id, to ? "key_id_to" : NULL, to, NULL };
        const char *ids[] = { id, to, NULL };
        BusAuthContext ctx = auth_context(m);
        const char *denied = NULL;
        uid_t uid = UID_INVALID;
        int r;

        r = bus_authorize(&ctx, msg, connection_peer(m, msg), o->client_socket, ids,
                          KEYS_HANDLE_VALIDATION_KEY_ID, action, details, &uid, &denied);
        switch (r) {
        case -EPERM:
                return sd_bus_error_setf(error, KEYS_ERROR_NOT_AUTHORIZED,
                                         "user %u may not act for another process", (unsigned)uid);
        case -ENOTSOCK:
                return reply_invalid_parameter(error, "client-socket",
                                               "not a connected Unix socket");
        case -EACCES:
                return reply_not_authorized(error, uid, denied);
        default:
                return r;
        }
}

static int parse_usage(sd_bus_message *m, AZIOT_KEYS_KEY_USAGE *ret, sd_bus_error *error)
{
        AZIOT_KEYS_KEY_USAGE usage = 0;
        const char *u;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "s");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(m, "s", &u)) > 0) {
                if (streq(u, "derive") || streq(u, "sign"))
                        usage |= AZIOT_KEYS_KEY_USAGE_SIGN;
                else if (streq(u, "encrypt"))
                        usage |= AZIOT_KEYS_KEY_USAGE_ENCRYPT;
                else
                        return reply_invalid_parameter(error, "usage", "unknown key usage");
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (usage == 0)
                return reply_invalid_parameter(error, "usage", "no key usage given");
        *ret = usage;
        return 0;
}

static int reply_handle(sd_bus_message *msg, Manager *m, KeysHandleKind kind, const char *id,
                        sd_bus_error *error)
{
        _cleanup_free_ char *handle = NULL;
        int r;

        r = kind == KEYS_HANDLE_KEY ? keys_handle_mint_key(&m->signer, id, &handle)
                                    : keys_handle_mint_key_pair(&m->signer, id, &handle);
        if (r > 0)
                return reply_invalid_parameter(error, "id", keys_handle_error_to_string(r));
        if (r < 0)
                return reply_store_error(error, AZIOT_KEYS_RC_ERR_EXTERNAL, "Minting a handle");
        return sd_bus_reply_method_return(msg, "s", handle);
}

static int method_create_key(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        AZIOT_KEYS_KEY_USAGE usage;
        KeysOptions o;
        const char *id;
        AZIOT_KEYS_RC rc;
        int r;

        r = sd_bus_message_read(msg, "s", &id);
        if (r < 0)
                return r;
        r = parse_usage(msg, &usage, error);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = authorize(m, msg, &o, "org.aziot.keys.manage", id, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        rc = m->keys->create_key_if_not_exists(id, usage);
        if (rc != AZIOT_KEYS_RC_OK)
                return reply_store_error(error, rc, "Creating a key");
        return reply_handle(msg, m, KEYS_HANDLE_KEY, id, error);
}

static int method_import_key(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        AZIOT_KEYS_KEY_USAGE usage;
        const void *bytes;
        size_t len;
        KeysOptions o;
        const char *id;
        AZIOT_KEYS_RC rc;
        int r;

        r = sd_bus_message_read(msg, "s", &id);
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(msg, 'y', &bytes, &len);
        if (r < 0)
                return r;
        r = parse_usage(msg, &usage, error);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = authorize(m, msg, &o, "org.aziot.keys.manage", id, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        rc = m->keys->import_key(id, bytes, len, usage);
        if (rc != AZIOT_KEYS_RC_OK)
                return reply_store_error(error, rc, "Importing a key");
        return reply_handle(msg, m, KEYS_HANDLE_KEY, id, error);
}

/* LoadKey and LoadKeyPair: the key must exist. */
static int load_common(sd_bus_message *msg, Manager *m, KeysHandleKind kind, sd_bus_error *error)
{
        KeysOptions o;
        const char *id;
        AZIOT_KEYS_RC rc;
        int r;

        r = sd_bus_message_read(msg, "s", &id);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = authorize(m, msg, &o, "org.aziot.keys.load", id, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        rc = kind == KEYS_HANDLE_KEY ? m->keys->load_key(id) : m->keys->load_key_pair(id);
        if (rc == AZIOT_KEYS_RC_ERR_INVALID_PARAMETER)
                return sd_bus_error_setf(error, KEYS_ERROR_NOT_FOUND, "%s %s does not exist",
                                         kind == KEYS_HANDLE_KEY ? "key" : "key pair", id);
        if (rc != AZIOT_KEYS_RC_OK)
                return reply_store_error(error, rc, "Loading a key");
        return reply_handle(msg, m, kind, id, error);
}

static int method_load_key(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return load_common(msg, userdata, KEYS_HANDLE_KEY, error);
}

static int method_load_key_pair(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return load_common(msg, userdata, KEYS_HANDLE_KEY_PAIR, error);
}

/* Joins the preferred algorithms with ':' as the store expects; empty → NULL (its default). */
static int read_algorithms(sd_bus_message *msg, char **ret)
{
        _cleanup_free_ char *joined = NULL;
        size_t len = 0;
        const char *a;
        int r;

        r = sd_bus_message_enter_container(msg, 'a', "s");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(msg, "s", &a)) > 0) {
                size_t n = strlen(a);
                char *nj = realloc(joined, len + n + 2);

                if (!nj)
                        return -ENOMEM;
                joined = nj;
                if (len > 0)
                        joined[len++] = ':';
                memcpy(joined + len, a, n + 1);
                len += n;
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(joined);
        return sd_bus_message_exit_container(msg);
}

static int method_create_key_pair(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        _cleanup_free_ char *algorithms = NULL;
        Manager *m = userdata;
        KeysOptions o;
        const char *id;
        AZIOT_KEYS_RC rc;
        int r;

        r = sd_bus_message_read(msg, "s", &id);
        if (r < 0)
                return r;
        r = read_algorithms(msg, &algorithms);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = authorize(m, msg, &o, "org.aziot.keys.manage", id, NULL, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        rc = m->keys->create_key_pair_if_not_exists(id, algorithms);
        if (rc != AZIOT_KEYS_RC_OK)
                return reply_store_error(error, rc, "Creating a key pair");
        return reply_handle(msg, m, KEYS_HANDLE_KEY_PAIR, id, error);
}

static int method_move_key_pair(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        Manager *m = userdata;
        const char *from, *to;
        KeysOptions o;
        AZIOT_KEYS_RC rc;
        int r;

        r = sd_bus_message_read(msg, "ss", &from, &to);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        if (streq(from, to))
                return sd_bus_error_set(error, KEYS_ERROR_INVALID_PARAMETER,
                                        "source and destination for move are identical");
        r = authorize(m, msg, &o, "org.aziot.keys.manage", from, to, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        rc = m->keys->move_key_pair(from, to);
        if (rc == AZIOT_KEYS_RC_ERR_INVALID_PARAMETER)
                return sd_bus_error_setf(error, KEYS_ERROR_NOT_FOUND, "key pair %s does not exist",
                                         from);
        if (rc != AZIOT_KEYS_RC_OK)
                return reply_store_error(error, rc, "Moving a key pair");
        return sd_bus_reply_method_return(msg, NULL);
}

/* A derived key is HMAC-SHA256 over a symmetric base key. Upstream mints derived handles over key
 * pairs too, but using one would take the pair's PEM file for key bytes, and let a value computed
 * from the private key leave keyd. */
static int require_symmetric_base(const KeysHandle *h, sd_bus_error *error)
{
        if (h->kind != KEYS_HANDLE_DERIVED || h->base_kind == KEYS_HANDLE_KEY)
                return 0;
        return reply_invalid_parameter(error, "handle",
                                       keys_handle_error_to_string(KEYS_HANDLE_ERR_NOT_KEY));
}

/* Reads and verifies a handle argument. */
static int read_handle(Manager *m, sd_bus_message *msg, const char *arg, KeysHandle **ret,
                       sd_bus_error *error)
{
        const char *s;
        int r;

        r = sd_bus_message_read(msg, "s", &s);
        if (r < 0)
                return r;
        r = keys_handle_parse(&m->signer, s, ret);
        if (r > 0)
                return reply_invalid_parameter(error, arg, keys_handle_error_to_string(r));
        if (r < 0)
                return reply_store_error(error, AZIOT_KEYS_RC_ERR_EXTERNAL, "Verifying a handle");
        return 0;
}

static int delete_common(sd_bus_message *msg, Manager *m, KeysHandleKind kind, sd_bus_error *error)
{
        _cleanup_(keys_handle_freep) KeysHandle *h = NULL;
        KeysOptions o;
        AZIOT_KEYS_RC rc;
        int r;

        r = read_handle(m, msg, "handle", &h, error);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = check_delegation(m, msg, &o, error);
        if (r < 0)
                return r;
        r = keys_handle_require(h, kind);
        if (r > 0)
                return reply_invalid_parameter(error, "handle", keys_handle_error_to_string(r));

        rc = kind == KEYS_HANDLE_KEY ? m->keys->delete_key(h->id) : m->keys->delete_key_pair(h->id);
        if (rc != AZIOT_KEYS_RC_OK)
                return reply_store_error(error, rc, "Deleting a key");
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_delete_key(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return delete_common(msg, userdata, KEYS_HANDLE_KEY, error);
}

static int method_delete_key_pair(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return delete_common(msg, userdata, KEYS_HANDLE_KEY_PAIR, error);
}

static const struct {
        const char *name;
        AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE type;
} public_parameters[] = {
        { "algorithm", AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_ALGORITHM },
        { "ec-curve-oid", AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_EC_CURVE_OID },
        { "ec-point", AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_EC_POINT },
        { "rsa-modulus", AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_RSA_MODULUS },
        { "rsa-exponent", AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_RSA_EXPONENT },
};

static int reply_parameter(sd_bus_message *msg, AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE type,
                           const unsigned char *value, size_t len, sd_bus_error *error)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        unsigned algorithm;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        if (type == AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE_ALGORITHM) {
                if (len != sizeof(algorithm))
                        return reply_store_error(error, AZIOT_KEYS_RC_ERR_EXTERNAL, "Reading algorithm");
                memcpy(&algorithm, value, sizeof(algorithm));
                r = sd_bus_message_append(reply, "v", "s",
                                          algorithm == AZIOT_KEYS_KEY_PAIR_PARAMETER_ALGORITHM_EC
                                                  ? "ECDSA"
                                                  : "RSA");
        } else {
                r = sd_bus_message_open_container(reply, 'v', "ay");
                if (r >= 0)
                        r = sd_bus_message_append_array(reply, 'y', value, len);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
        }
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_public_parameter(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        _cleanup_(keys_handle_freep) KeysHandle *h = NULL;
        _cleanup_free_ unsigned char *value = NULL;
        Manager *m = userdata;
        const char *name;
        KeysOptions o;
        size_t len = 0;
        AZIOT_KEYS_RC rc;
        int r, type = -1;

        r = read_handle(m, msg, "handle", &h, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = check_delegation(m, msg, &o, error);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(public_parameters); i++)
                if (streq(name, public_parameters[i].name))
                        type = (int)public_parameters[i].type;
        if (type < 0)
                return sd_bus_error_set(error, KEYS_ERROR_INVALID_PARAMETER,
                                        "a parameter has an invalid value");
        /* Upstream reads the key file of a symmetric (or the base of a derived) handle as a key
         * pair, fails to parse it and answers 500 (spec §2.3 #8): Failed, not InvalidParameter. */
        if (h->kind != KEYS_HANDLE_KEY_PAIR)
                return reply_store_error(error, AZIOT_KEYS_RC_ERR_EXTERNAL,
                                         "Reading a public parameter of a symmetric key");

        rc = m->keys->get_key_pair_parameter(h->id, (AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE)type, NULL,
                                             &len);
        if (rc == AZIOT_KEYS_RC_OK) {
                value = malloc(MAX(len, (size_t)1));
                if (!value)
                        return -ENOMEM;
                rc = m->keys->get_key_pair_parameter(h->id, (AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE)type,
                                                     value, &len);
        }
        if (rc != AZIOT_KEYS_RC_OK)
                return reply_store_error(error, rc, "Reading a public parameter");
        return reply_parameter(msg, (AZIOT_KEYS_KEY_PAIR_PARAMETER_TYPE)type, value, len, error);
}

static int method_create_derived_key(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        
        _cleanup_free_ char *handle = NULL;
        Manager *m = userdata;
        const char *base_string;
        const void *data;
        size_t len;
        KeysOptions o;
        int r;

        r = sd_bus_message_read(msg, "s", &base_string);
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(msg, 'y', &data, &len);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = check_delegation(m, msg, &o, error);
        if (r < 0)
                return r;
        r = keys_handle_mint_derived(&m->signer, base_string, data, len, &handle);
        if (r > 0)
                return reply_invalid_parameter(error, "handle", keys_handle_error_to_string(r));
        if (r < 0)
                return reply_store_error(error, AZIOT_KEYS_RC_ERR_EXTERNAL, "Minting a handle");
        return sd_bus_reply_method_return(msg, "s", handle);
}

/* Replies with one "ay". A reply that carries key material or plaintext is marked sensitive, so that
 * sd-bus wipes it before freeing it. */
static int reply_bytes(sd_bus_message *msg, const void *bytes, size_t len, bool sensitive)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        if (sensitive)
                (void)sd_bus_message_sensitive(reply);
        r = sd_bus_message_append_array(reply, 'y', bytes, len);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_export_derived_key(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        _cleanup_(keys_handle_freep) KeysHandle *h = NULL;
        Manager *m = userdata;
        unsigned char key[64];
        size_t len = sizeof(key);
        KeysOptions o;
        AZIOT_KEYS_RC rc;
        int r;

        r = read_handle(m, msg, "handle", &h, error);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = check_delegation(m, msg, &o, error);
        if (r < 0)
                return r;
        r = keys_handle_require(h, KEYS_HANDLE_DERIVED);
        if (r > 0)
                return reply_invalid_parameter(error, "handle", keys_handle_error_to_string(r));
        r = require_symmetric_base(h, error);
        if (r < 0)
                return r;

        rc = m->keys->derive_key(h->id, h->derivation_data, h->derivation_data_len, key, &len);
        if (rc != AZIOT_KEYS_RC_OK)
                return reply_store_error(error, rc, "Deriving a key");
        r = reply_bytes(msg, key, len, /* sensitive= */ true);
        explicit_bzero(key, sizeof(key));
        return r;
}

static int method_sign(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        _cleanup_(keys_handle_freep) KeysHandle *h = NULL;
        Manager *m = userdata;
        unsigned char sig[1024];
        size_t sig_len = sizeof(sig);
        const char *algorithm;
        const void *data;
        size_t len;
        KeysOptions o;
        AZIOT_KEYS_SIGN_MECHANISM mech;
        AZIOT_KEYS_SIGN_DERIVED_PARAMETERS derived;
        const void *params = NULL;
        const char *id;
        AZIOT_KEYS_RC rc;
        int r;

        r = read_handle(m, msg, "handle", &h, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &algorithm);
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(msg, 'y', &data, &len);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET, &o, error);
        if (r < 0)
                return r;
        r = check_delegation(m, msg, &o, error);
        if (r < 0)
                return r;

        if (streq(algorithm, "ECDSA") && h->kind == KEYS_HANDLE_KEY_PAIR)
                mech = AZIOT_KEYS_SIGN_MECHANISM_ECDSA;
        else if (streq(algorithm, "HMAC-SHA256") && h->kind != KEYS_HANDLE_KEY_PAIR)
                mech = AZIOT_KEYS_SIGN_MECHANISM_HMAC_SHA256;
        else
                return reply_invalid_parameter(error, "mechanism",
                                               "mechanism cannot be used with this key type");
        r = require_symmetric_base(h, error);
        if (r < 0)
                return r;

        id = h->id;
        if (h->kind == KEYS_HANDLE_DERIVED) {
                derived = (AZIOT_KEYS_SIGN_DERIVED_PARAMETERS){
                        .derivation_data = h->derivation_data,
                        .derivation_data_len = h->derivation_data_len,
                        .mechanism = mech,
                };
                params = &derived;
                mech = AZIOT_KEYS_SIGN_MECHANISM_DERIVED;
        }

        rc = m->keys->sign(id, mech, params, data, len, sig, &sig_len);
        if (rc != AZIOT_KEYS_RC_OK)
                return reply_store_error(error, rc, "Signing");
        return reply_bytes(msg, sig, sig_len, /* sensitive= */ false);
}

/* Encrypt and Decrypt share everything but the store function and the direction of the data. */
static int crypt_common(sd_bus_message *msg, Manager *m, bool encrypt, sd_bus_error *error)
{
        _cleanup_(keys_handle_freep) KeysHandle *h = NULL;
        _cleanup_free_ unsigned char *out = NULL;
        AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS aead = {};
        AZIOT_KEYS_ENCRYPT_DERIVED_PARAMETERS derived;
        AZIOT_KEYS_ENCRYPT_MECHANISM mech;
        const void *params = NULL, *data;
        const char *algorithm;
        size_t len, out_len = 0;
        KeysOptions o;
        AZIOT_KEYS_RC rc;
        int r;

        r = read_handle(m, msg, "handle", &h, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &algorithm);
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(msg, 'y', &data, &len);
        if (r < 0)
                return r;
        r = read_options(msg, OPTION_CLIENT_SOCKET | OPTION_IV | OPTION_AAD, &o, error);
        if (r < 0)
                return r;
        r = check_delegation(m, msg, &o, error);
        if (r < 0)
                return r;

        if (streq(algorithm, "AEAD") && h->kind != KEYS_HANDLE_KEY_PAIR) {
                if (!(o.present & OPTION_IV))
                        return reply_invalid_parameter(error, "iv", "missing");
                if (!(o.present & OPTION_AAD))
                        return reply_invalid_parameter(error, "aad", "missing");
                mech = AZIOT_KEYS_ENCRYPT_MECHANISM_AEAD;
                aead = (AZIOT_KEYS_ENCRYPT_AEAD_PARAMETERS){
                        .iv = o.iv, .iv_len = o.iv_len, .aad = o.aad, .aad_len = o.aad_len
                };
                params = &aead;
        } else if (encrypt && streq(algorithm, "RSA-PKCS1") && h->kind == KEYS_HANDLE_KEY_PAIR)
                mech = AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_PKCS1;
        else if (encrypt && streq(algorithm, "RSA-NO-PADDING") && h->kind == KEYS_HANDLE_KEY_PAIR)
                mech = AZIOT_KEYS_ENCRYPT_MECHANISM_RSA_NO_PADDING;
        else
                return reply_invalid_parameter(error, "mechanism",
                                               "mechanism cannot be used with this key type");
        r = require_symmetric_base(h, error);
        if (r < 0)
                return r;

        if (h->kind == KEYS_HANDLE_DERIVED) {
                derived = (AZIOT_KEYS_ENCRYPT_DERIVED_PARAMETERS){
                        .derivation_data = h->derivation_data,
                        .derivation_data_len = h->derivation_data_len,
                        .mechanism = mech,
                        .parameters = params,
                };
                params = &derived;
                mech = AZIOT_KEYS_ENCRYPT_MECHANISM_DERIVED;
        }

        rc = (encrypt ? m->keys->encrypt : m->keys->decrypt)(h->id, mech, params, data, len, NULL,
                                                              &out_len);
        if (rc == AZIOT_KEYS_RC_OK) {
                out = malloc(MAX(out_len, (size_t)1));
                if (!out)
                        return -ENOMEM;
                rc = (encrypt ? m->keys->encrypt : m->keys->decrypt)(h->id, mech, params, data, len,
                                                                      out, &out_len);
        }
        if (rc != AZIOT_KEYS_RC_OK) {
                if (out)
                        explicit_bzero(out, out_len);
                return reply_store_error(error, rc, encrypt ? "Encrypting" : "Decrypting");
        }
        r = reply_bytes(msg, out, out_len, /* sensitive= */ !encrypt);
        explicit_bzero(out, out_len);
        return r;
}

static int method_encrypt(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return crypt_common(msg, userdata, /* encrypt= */ true, error);
}

static int method_decrypt(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        return crypt_common(msg, userdata, /* encrypt= */ false, error);
}

static int method_open_private_connection(sd_bus_message *msg, void *userdata,
                                          sd_bus_error *error)
{
        _cleanup_close_ int fd = -EBADF;
        Manager *m = userdata;
        KeysOptions o;
        uid_t uid;
        int r;

        r = read_options(msg, 0, &o, error);
        if (r < 0)
                return r;
        if (private_connection_of(m, msg) || sd_bus_message_get_bus(msg) != m->bus)
                return sd_bus_error_set(error, SD_BUS_ERROR_NOT_SUPPORTED,
                                        "Private connections are opened on the system bus.");
        r = bus_sender_uid(msg, &m->sender_uids, &uid);
        if (r < 0)
                return r;
        if (uid != 0 && uid != m->gateway_uid)
                return sd_bus_error_setf(error, KEYS_ERROR_NOT_AUTHORIZED,
                                         "user %u may not open a private connection",
                                         (unsigned)uid);

        r = private_connection_open(m, msg, &fd);
        if (r < 0)
                return log_warning_errno(r, "Failed to open a private connection: %m");
        return sd_bus_reply_method_return(msg, "h", fd);
}

static const sd_bus_vtable keys_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("MaxRequests", "u", NULL, offsetof(Manager, max_requests),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("CreateKeyIfNotExists",
                                SD_BUS_ARGS("s", key_id, "as", usage, "a{sv}", options),
                                SD_BUS_RESULT("s", key_handle), method_create_key,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ImportKey",
                                SD_BUS_ARGS("s", key_id, "ay", key_bytes, "as", usage, "a{sv}",
                                            options),
                                SD_BUS_RESULT("s", key_handle), method_import_key,
                                SD_BUS_VTABLE_UNPRIVILEGED | SD_BUS_VTABLE_SENSITIVE),
        SD_BUS_METHOD_WITH_ARGS("LoadKey", SD_BUS_ARGS("s", key_id, "a{sv}", options),
                                SD_BUS_RESULT("s", key_handle), method_load_key,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeleteKey", SD_BUS_ARGS("s", key_handle, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_delete_key, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreateKeyPairIfNotExists",
                                SD_BUS_ARGS("s", key_pair_id, "as", preferred_algorithms, "a{sv}",
                                            options),
                                SD_BUS_RESULT("s", key_handle), method_create_key_pair,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("LoadKeyPair", SD_BUS_ARGS("s", key_pair_id, "a{sv}", options),
                                SD_BUS_RESULT("s", key_handle), method_load_key_pair,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("MoveKeyPair", SD_BUS_ARGS("s", from, "s", to, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_move_key_pair, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeleteKeyPair", SD_BUS_ARGS("s", key_handle, "a{sv}", options),
                                SD_BUS_NO_RESULT, method_delete_key_pair,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetKeyPairPublicParameter",
                                SD_BUS_ARGS("s", key_handle, "s", name, "a{sv}", options),
                                SD_BUS_RESULT("v", value), method_get_public_parameter,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreateDerivedKey",
                                SD_BUS_ARGS("s", base_key_handle, "ay", derivation_data, "a{sv}",
                                            options),
                                SD_BUS_RESULT("s", key_handle), method_create_derived_key,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ExportDerivedKey", SD_BUS_ARGS("s", key_handle, "a{sv}", options),
                                SD_BUS_RESULT("ay", key), method_export_derived_key,
                                SD_BUS_VTABLE_UNPRIVILEGED | SD_BUS_VTABLE_SENSITIVE),
        SD_BUS_METHOD_WITH_ARGS("Sign",
                                SD_BUS_ARGS("s", key_handle, "s", algorithm, "ay", data, "a{sv}",
                                            options),
                                SD_BUS_RESULT("ay", signature), method_sign,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Encrypt",
                                SD_BUS_ARGS("s", key_handle, "s", algorithm, "ay", plaintext,
                                            "a{sv}", options),
                                SD_BUS_RESULT("ay", ciphertext), method_encrypt,
                                SD_BUS_VTABLE_UNPRIVILEGED | SD_BUS_VTABLE_SENSITIVE),
        SD_BUS_METHOD_WITH_ARGS("Decrypt",
                                SD_BUS_ARGS("s", key_handle, "s", algorithm, "ay", ciphertext,
                                            "a{sv}", options),
                                SD_BUS_RESULT("ay", plaintext), method_decrypt,
                                SD_BUS_VTABLE_UNPRIVILEGED | SD_BUS_VTABLE_SENSITIVE),
        SD_BUS_METHOD_WITH_ARGS("OpenPrivateConnection", SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("h", connection), method_open_private_connection,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int keys_dbus_add_object(Manager *m, sd_bus *bus, sd_bus_slot **ret_slot)
{
        return sd_bus_add_object_vtable(bus, ret_slot, KEYS_OBJECT_PATH, KEYS_INTERFACE,
                                        keys_vtable, m);
}

int keys_dbus_register(Manager *m)
{
        int r;

        r = keys_dbus_add_object(m, m->bus, &m->object_slot);
        if (r < 0)
                return log_error_errno(r, "Failed to register %s: %m", KEYS_OBJECT_PATH);
        return 0;
}
