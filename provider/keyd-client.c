/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "keyd-client.h"

#define KEYD_BUS_NAME "org.aziot.Keys1"
#define KEYD_OBJECT_PATH "/org/aziot/Keys1"
#define KEYD_INTERFACE "org.aziot.Keys1"
#define DEFAULT_SYSTEM_BUS "unix:path=/run/dbus/system_bus_socket"

struct KeydClient {
        pthread_mutex_t lock;
        sd_bus *bus;
        pid_t pid; /* the process that opened bus */
};

/* One method call: its leading string arguments, then bytes when with_data, then an empty a{sv}. */
typedef struct KeydCall {
        const char *method;
        const char *what;
        const char *strings[2];
        size_t n_strings;
        bool with_data;
        const uint8_t *data;
        size_t len;
} KeydCall;

int keyd_client_new(KeydClient **ret)
{
        KeydClient *client = calloc(1, sizeof(*client));

        if (!client)
                return -ENOMEM;
        if (pthread_mutex_init(&client->lock, NULL) != 0) {
                free(client);
                return -ENOMEM;
        }
        *ret = client;
        return 0;
}

void keyd_client_free(KeydClient *client)
{
        if (!client)
                return;
        if (client->bus && client->pid == getpid())
                sd_bus_flush_close_unref(client->bus);
        else
                sd_bus_unref(client->bus);
        pthread_mutex_destroy(&client->lock);
        free(client);
}

/* Under client->lock. */
static int client_bus(KeydClient *client, sd_bus **ret)
{
        int r;

        /* After a fork the connection is the parent's: the child drops its copy and opens its own.
         */
        if (client->bus && client->pid != getpid())
                client->bus = sd_bus_unref(client->bus);
        if (!client->bus) {
                sd_bus *bus = NULL;

                r = sd_bus_open_system_with_description(&bus, "aziot-openssl-provider");
                if (r < 0)
                        return r;
                client->bus = bus;
                client->pid = getpid();
        }
        *ret = client->bus;
        return 0;
}

static int build_call(sd_bus *bus, const KeydCall *call, sd_bus_message **ret)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, KEYD_BUS_NAME, KEYD_OBJECT_PATH, KEYD_INTERFACE,
                                           call->method);
        for (size_t i = 0; r >= 0 && i < call->n_strings; i++)
                r = sd_bus_message_append_basic(m, 's', call->strings[i]);
        if (r >= 0 && call->with_data)
                r = sd_bus_message_append_array(m, 'y', call->data, call->len);
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

/* The connection itself broke (the bus went away, or we forked): worth one more try on a new one.
 * sd-bus names local failures System.Error.<errno>. */
static bool is_connection_error(int r, const sd_bus_error *error)
{
        if (sd_bus_error_is_set(error) && !startswith(error->name, "System.Error."))
                return false;
        switch (r) {
        case -ECONNRESET:
        case -ENOTCONN:
        case -EPIPE:
        case -ESHUTDOWN:
        case -ECHILD:
                return true;
        default:
                return false;
        }
}

static int reason_of_error(const sd_bus_error *error)
{
        static const struct {
                const char *name;
                int reason;
        } map[] = {
                {"org.aziot.Keys1.Error.NotAuthorized", AZIOT_KEY_R_NOT_AUTHORIZED},
                {"org.aziot.Keys1.Error.NotFound", AZIOT_KEY_R_KEY_NOT_FOUND},
                {"org.aziot.Keys1.Error.InvalidParameter", AZIOT_KEY_R_KEYD_REJECTED},
                {"org.aziot.Keys1.Error.Failed", AZIOT_KEY_R_KEYD_FAILED},
                {"org.freedesktop.DBus.Error.AccessDenied", AZIOT_KEY_R_BUS_DENIED},
                {"org.freedesktop.DBus.Error.InvalidArgs", AZIOT_KEY_R_KEYD_REJECTED},
        };

        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (sd_bus_error_has_name(error, map[i].name))
                        return map[i].reason;
        /* ServiceUnknown, NameHasNoOwner, NoReply, Timeout, Spawn.*, Disconnected, System.Error.*:
         * keyd is not there, or did not answer. */
        return startswith(error->name, "org.aziot.Keys1.") ? AZIOT_KEY_R_KEYD_FAILED
                                                           : AZIOT_KEY_R_KEYD_UNREACHABLE;
}

static int keyd_call(AziotProvider *prov, const KeydCall *call, sd_bus_message **ret_reply)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        KeydClient *client = prov->keyd;
        enum { CONNECT, BUILD, CALL } stage = CONNECT;
        int r = 0;

        pthread_mutex_lock(&client->lock);
        for (unsigned attempt = 0; attempt < 2; attempt++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                sd_bus *bus = NULL;

                sd_bus_error_free(&error);
                stage = CONNECT;
                r = client_bus(client, &bus);
                if (r < 0)
                        break;
                stage = BUILD;
                r = build_call(bus, call, &m);
                if (r < 0)
                        break;
                stage = CALL;
                r = sd_bus_call(bus, m, /* usec= */ 0, &error, &reply);
                if (r >= 0 || !is_connection_error(r, &error))
                        break;
                client->bus = sd_bus_unref(client->bus);
        }
        pthread_mutex_unlock(&client->lock);

        if (r >= 0) {
                *ret_reply = TAKE_PTR(reply);
                return 1;
        }
        switch (stage) {
        case CONNECT: {
                const char *address = getenv("DBUS_SYSTEM_BUS_ADDRESS");

                aziot_raise(prov, AZIOT_KEY_R_KEYD_UNREACHABLE,
                            "%s for %s: cannot connect to the system bus at %s: %s", call->method,
                            call->what, address ?: DEFAULT_SYSTEM_BUS, strerror(-r));
                break;
        }
        case BUILD:
                aziot_raise(prov, AZIOT_KEY_R_INTERNAL, "%s for %s: %s", call->method, call->what,
                            strerror(-r));
                break;
        case CALL:
                if (!sd_bus_error_is_set(&error))
                        (void)sd_bus_error_set_errno(&error, r);
                aziot_raise(prov, reason_of_error(&error), "%s for %s: %s: %s", call->method,
                            call->what, error.name, strempty(error.message));
                break;
        }
        return 0;
}

static int bad_reply(AziotProvider *prov, const KeydCall *call, int r)
{
        aziot_raise(prov, AZIOT_KEY_R_BAD_REPLY, "%s for %s: %s", call->method, call->what,
                    strerror(r < 0 ? -r : EBADMSG));
        return 0;
}

int keyd_load_key_pair(AziotProvider *prov, const char *key_pair_id, char **ret_handle)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *what = NULL;
        const char *handle = NULL;
        KeydCall call = {
                .method = "LoadKeyPair",
                .strings = {key_pair_id},
                .n_strings = 1,
        };
        int r;

        if (asprintf(&what, "key pair \"%s\"", key_pair_id) < 0) {
                what = NULL;
                aziot_raise(prov, AZIOT_KEY_R_INTERNAL, "out of memory");
                return 0;
        }
        call.what = what;
        if (!keyd_call(prov, &call, &reply))
                return 0;
        r = sd_bus_message_read_basic(reply, 's', &handle);
        if (r <= 0 || isempty(handle))
                return bad_reply(prov, &call, r);
        *ret_handle = strdup(handle);
        if (!*ret_handle) {
                aziot_raise(prov, AZIOT_KEY_R_INTERNAL, "out of memory");
                return 0;
        }
        return 1;
}

static int get_parameter(AziotProvider *prov, const char *handle, const char *what,
                         const char *name, char type, const void **ret, size_t *ret_len,
                         sd_bus_message **ret_reply)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        KeydCall call = {
                .method = "GetKeyPairPublicParameter",
                .what = what,
                .strings = {handle, name},
                .n_strings = 2,
        };
        int r;

        if (!keyd_call(prov, &call, &reply))
                return 0;
        r = sd_bus_message_enter_container(reply, 'v', type == 's' ? "s" : "ay");
        if (r > 0) {
                if (type == 's') {
                        r = sd_bus_message_read_basic(reply, 's', ret);
                        *ret_len = r > 0 ? strlen(*ret) : 0;
                } else
                        r = sd_bus_message_read_array(reply, 'y', ret, ret_len);
        }
        if (r <= 0)
                return bad_reply(prov, &call, r);
        *ret_reply = TAKE_PTR(reply);
        return 1;
}

int keyd_key_pair_algorithm(AziotProvider *prov, const char *handle, const char *what,
                            char **ret_algorithm)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const void *value = NULL;
        size_t len = 0;

        if (!get_parameter(prov, handle, what, "algorithm", 's', &value, &len, &reply))
                return 0;
        *ret_algorithm = strdup(value);
        if (!*ret_algorithm) {
                aziot_raise(prov, AZIOT_KEY_R_INTERNAL, "out of memory");
                return 0;
        }
        return 1;
}

static int copy_bytes(AziotProvider *prov, const void *data, size_t len, uint8_t **ret,
                      size_t *ret_len)
{
        uint8_t *copy = malloc(len ? len : 1);

        if (!copy) {
                aziot_raise(prov, AZIOT_KEY_R_INTERNAL, "out of memory");
                return 0;
        }
        if (len)
                memcpy(copy, data, len);
        *ret = copy;
        *ret_len = len;
        return 1;
}

int keyd_key_pair_parameter(AziotProvider *prov, const char *handle, const char *what,
                            const char *name, uint8_t **ret, size_t *ret_len)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const void *value = NULL;
        size_t len = 0;

        if (!get_parameter(prov, handle, what, name, 'y', &value, &len, &reply))
                return 0;
        return copy_bytes(prov, value, len, ret, ret_len);
}

int keyd_private_operation(AziotProvider *prov, const char *handle, const char *what, bool sign,
                           const char *algorithm, const uint8_t *data, size_t len, uint8_t **ret,
                           size_t *ret_len)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const void *out = NULL;
        size_t out_len = 0;
        KeydCall call = {
                .method = sign ? "Sign" : "Encrypt",
                .what = what,
                .strings = {handle, algorithm},
                .n_strings = 2,
                .with_data = true,
                .data = data,
                .len = len,
        };
        int r;

        if (!keyd_call(prov, &call, &reply))
                return 0;
        r = sd_bus_message_read_array(reply, 'y', &out, &out_len);
        if (r <= 0 || out_len == 0)
                return bad_reply(prov, &call, r);
        return copy_bytes(prov, out, out_len, ret, ret_len);
}
