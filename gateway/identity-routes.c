/* SPDX-License-Identifier: MIT */
/* The HTTP contract of identityd.sock (spec §4.1–§4.4, interfaces/identity.yaml), translated to
 * org.aziot.Identity1 (dbus/org.aziot.Identity1.xml). Identities come back from the bus as
 * dictionaries with upstream's member names and are written as upstream's JSON:
 * {"type": …, "spec": {…, "auth": {…}}}. */
#include <errno.h>
#include <string.h>

#include "identity-routes.h"
#include "log.h"
#include "macro.h"

enum {
        V2020_09_01,
        V2021_12_01,
        V2022_08_01,
};

static const char *const identity_api_versions[] = {
        [V2020_09_01] = "2020-09-01",
        [V2021_12_01] = "2021-12-01",
        [V2022_08_01] = "2022-08-01",
};

#define ENTRIES_MAX 16

typedef struct Entry {
        const char *key, *value;
} Entry;

typedef struct Entries {
        Entry items[ENTRIES_MAX];
        size_t n;
} Entries;

static const char *entry(const Entries *e, const char *key)
{
        for (size_t i = 0; i < e->n; i++)
                if (streq(e->items[i].key, key))
                        return e->items[i].value;
        return NULL;
}

/* Reads one a{sv} of string values (others are skipped). */
static int read_entries(sd_bus_message *m, Entries *ret)
{
        int r;

        *ret = (Entries){};
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *contents;
                char type;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                r = sd_bus_message_peek_type(m, &type, &contents);
                if (r < 0)
                        return r;
                if (streq(contents, "s") && ret->n < ENTRIES_MAX) {
                        ret->items[ret->n].key = key;
                        r = sd_bus_message_read(m, "v", "s", &ret->items[ret->n].value);
                        ret->n++;
                } else
                        r = sd_bus_message_skip(m, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static void member(JsonWriter *w, const Entries *e, const char *json_key_name, const char *key)
{
        const char *v = entry(e, key);

        if (!v)
                return;
        json_key(w, json_key_name);
        json_string(w, v, strlen(v));
}

/* upstream's Identity: adjacently tagged, auth nested. */
static void write_identity(JsonWriter *w, const Entries *e)
{
        const char *type = entry(e, "type");
        bool local = type && streq(type, "local");

        json_begin_object(w);
        json_key(w, "type");
        json_string(w, type ? type : "aziot", strlen(type ? type : "aziot"));
        json_key(w, "spec");
        json_begin_object(w);
        if (local) {
                member(w, e, "moduleId", "moduleId");
                json_key(w, "auth");
                json_begin_object(w);
                member(w, e, "privateKey", "privateKey");
                member(w, e, "certificate", "certificate");
                member(w, e, "expiration", "expiration");
                json_end_object(w);
        } else {
                member(w, e, "hubName", "hubName");
                member(w, e, "gatewayHost", "gatewayHost");
                member(w, e, "deviceId", "deviceId");
                member(w, e, "moduleId", "moduleId");
                member(w, e, "genId", "genId");
                if (entry(e, "authType")) {
                        json_key(w, "auth");
                        json_begin_object(w);
                        member(w, e, "type", "authType");
                        member(w, e, "keyHandle", "keyHandle");
                        member(w, e, "certId", "certId");
                        json_end_object(w);
                }
        }
        json_end_object(w);
        json_end_object(w);
}

static int on_identity(RouteCall *call, sd_bus_message *reply)
{
        JsonWriter w = {};
        Entries e;
        int r;

        r = read_entries(reply, &e);
        if (r < 0)
                return r;
        write_identity(&w, &e);
        route_reply(call, 200, &w);
        buffer_done(&w.out);
        return 0;
}

static int on_no_content(RouteCall *call, sd_bus_message *reply)
{
        route_reply_no_content(call);
        return 0;
}

static int on_identities(RouteCall *call, sd_bus_message *reply)
{
        JsonWriter w = {};
        int r;

        json_begin_object(&w);
        json_key(&w, "identities");
        json_begin_array(&w);
        r = sd_bus_message_enter_container(reply, 'a', "a{sv}");
        while (r >= 0) {
                Entries e;

                r = sd_bus_message_at_end(reply, false);
                if (r != 0)
                        break;
                r = read_entries(reply, &e);
                if (r >= 0)
                        write_identity(&w, &e);
        }
        json_end_array(&w);
        json_end_object(&w);
        if (r >= 0) {
                r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        route_reply(call, 200, &w);
        }
        buffer_done(&w.out);
        return r < 0 ? r : 0;
}

/* A call of member with just the options. */
static int call_plain(RouteCall *call, const char *member_name,
                      int (*on_reply)(RouteCall *, sd_bus_message *))
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = route_new_method_call(call, member_name, &m);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_reply);
        return r;
}

/* --- /identities/identity, /identities/device, /trust-bundle, /identities/provisioning --- */

static int handle_get_identity(RouteCall *call)
{
        return call_plain(call, "GetIdentity", on_identity);
}

static const JsonField device_fields[] = {
        { "type", JSON_FIELD_STRING },
};

static int handle_get_device(RouteCall *call)
{
        _cleanup_route_body_ RouteBody b = ROUTE_BODY(device_fields);
        int r;

        /* {"type": …} is required; its value is not looked at (upstream). */
        r = route_body_decode(call, &b);
        if (r <= 0)
                return r;
        return call_plain(call, "GetDeviceIdentity", on_identity);
}

static int handle_reprovision(RouteCall *call)
{
        if (!route_body_check_any(call))
                return 0;
        return call_plain(call, "ReprovisionDevice", on_no_content);
}

static int on_trust_bundle(RouteCall *call, sd_bus_message *reply)
{
        const char *pem;
        JsonWriter w = {};
        int r;

        r = sd_bus_message_read(reply, "s", &pem);
        if (r < 0)
                return r;
        json_begin_object(&w);
        json_key(&w, "certificate");
        json_string(&w, pem, strlen(pem));
        json_end_object(&w);
        route_reply(call, 200, &w);
        buffer_done(&w.out);
        return 0;
}

static int handle_trust_bundle(RouteCall *call)
{
        return call_plain(call, "GetTrustBundle", on_trust_bundle);
}

static int on_provisioning(RouteCall *call, sd_bus_message *reply)
{
        const char *source, *payload;
        JsonWriter w = {};
        Entries e;
        int r;

        r = read_entries(reply, &e);
        if (r < 0)
                return r;
        source = entry(&e, "source");
        json_begin_object(&w);
        member(&w, &e, "source", "source");
        if (source && !streq(source, "none"))
                member(&w, &e, "auth", "auth");
        if (source && streq(source, "dps")) {
                member(&w, &e, "endpoint", "endpoint");
                member(&w, &e, "scope_id", "scope_id");
                member(&w, &e, "registration_id", "registration_id");
                json_key(&w, "payload");
                payload = entry(&e, "payload");
                if (payload)
                        json_raw(&w, payload, strlen(payload));
                else
                        json_null(&w);
        }
        json_end_object(&w);
        route_reply(call, 200, &w);
        buffer_done(&w.out);
        return 0;
}

static int handle_provisioning(RouteCall *call)
{
        return call_plain(call, "GetProvisioningInfo", on_provisioning);
}

/* --- /identities/modules --- */

/* The "type" query parameter: its value, or NULL once answered 400. */
static const char *query_type(RouteCall *call, bool local_allowed)
{
        const char *type = NULL;
        Buffer message = {};

        for (size_t i = 0; i < call->n_query; i++)
                if (streq(call->query[i].name, "type"))
                        type = call->query[i].value;
        if (type && (streq(type, "aziot") || (local_allowed && streq(type, "local"))))
                return type;
        if (type)
                buffer_appendf(&message,
                               "parameter \"type\" has an invalid value\ncaused by: invalid "
                               "type: %s",
                               type);
        else
                buffer_append_str(&message,
                                  "parameter \"type\" has an invalid value\ncaused by: missing "
                                  "parameter");
        log_info("!!! parameter \"type\" has an invalid value");
        route_reply_error(call, 400, message.data ?: "parameter \"type\" has an invalid value");
        buffer_done(&message);
        return NULL;
}

static int handle_list_modules(RouteCall *call)
{
        if (!query_type(call, false))
                return 0;
        return call_plain(call, "ListModuleIdentities", on_identities);
}

static const JsonField local_opts_fields[] = {
        { "type", JSON_FIELD_STRING },
        { "attributes", JSON_FIELD_STRING, .optional = true },
};

static const JsonField create_fields[] = {
        { "type", JSON_FIELD_STRING },
        { "moduleId", JSON_FIELD_STRING },
        { "localIdOpts", JSON_FIELD_STRUCT, .optional = true, .fields = local_opts_fields,
          .n_fields = ELEMENTSOF(local_opts_fields), .expecting = "struct LocalIdOpts" },
};

static int handle_create_module(RouteCall *call)
{
        _cleanup_route_body_ RouteBody b = ROUTE_BODY(create_fields);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const JsonFieldValue *type = &b.values[0], *id = &b.values[1], *opts = &b.values[2];
        int r;

        r = route_body_decode(call, &b);
        if (r <= 0)
                return r;
        if (memchr(type->data, 0, type->len) || memchr(id->data, 0, id->len)) {
                route_reply_error(call, 400, "parameter \"module_id\" has an invalid value");
                return 0;
        }
        r = route_new_method_call(call, "CreateModuleIdentity", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", type->data, id->data);
        if (r >= 0)
                r = route_open_options(call, m);
        if (r >= 0 && opts->present) {
                const JsonFieldValue *attributes = &((const JsonFieldValue *)opts->data)[1];

                if (attributes->present)
                        r = sd_bus_message_append(m, "{sv}", "attributes", "s",
                                                  attributes->data);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = route_send(call, m, on_identity);
        return r;
}

static int call_module(RouteCall *call, const char *member_name, const char *type,
                       int (*on_reply)(RouteCall *, sd_bus_message *))
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (memchr(call->params[0], 0, call->param_lens[0])) {
                route_reply_error(call, 400, "parameter \"module_id\" has an invalid value");
                return 0;
        }
        r = route_new_method_call(call, member_name, &m);
        if (r >= 0 && type)
                r = sd_bus_message_append(m, "s", type);
        if (r >= 0)
                r = sd_bus_message_append(m, "s", call->params[0]);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_reply);
        return r;
}

static int handle_get_module(RouteCall *call)
{
        const char *type = query_type(call, true);

        if (!type)
                return 0;
        return call_module(call, "GetModuleIdentity", type, on_identity);
}

static int handle_update_module(RouteCall *call)
{
        /* A body is required (PUT), decoded as any JSON, then ignored. */
        if (!route_body_check_any(call))
                return 0;
        if (!query_type(call, false))
                return 0;
        return call_module(call, "UpdateModuleIdentity", NULL, on_identity);
}

static int handle_delete_module(RouteCall *call)
{
        if (!route_body_check_any(call))
                return 0;
        if (!query_type(call, false))
                return 0;
        return call_module(call, "DeleteModuleIdentity", NULL, on_no_content);
}

/* --- The tables --- */

static const Route identity_routes[] = {
        { HTTP_GET, "/identities/identity", V2020_09_01, V2022_08_01, handle_get_identity },
        { HTTP_POST, "/identities/device", V2020_09_01, V2022_08_01, handle_get_device },
        { HTTP_POST, "/identities/device/reprovision", V2020_09_01, V2022_08_01,
          handle_reprovision },
        { HTTP_GET, "/identities/provisioning", V2021_12_01, V2022_08_01, handle_provisioning },
        { HTTP_GET, "/identities/modules", V2020_09_01, V2022_08_01, handle_list_modules },
        { HTTP_POST, "/identities/modules", V2020_09_01, V2022_08_01, handle_create_module },
        { HTTP_GET, "/identities/modules/*", V2020_09_01, V2022_08_01, handle_get_module },
        { HTTP_PUT, "/identities/modules/*", V2020_09_01, V2022_08_01, handle_update_module },
        { HTTP_DELETE, "/identities/modules/*", V2020_09_01, V2022_08_01, handle_delete_module },
        { HTTP_GET, "/trust-bundle", V2020_09_01, V2022_08_01, handle_trust_bundle },
};

/* identityd puts upstream's texts in its error messages (spec §4.4). */
static const RouteError identity_errors[] = {
        { "org.aziot.Identity1.Error.InvalidParameter", 400, NULL },
        { "org.aziot.Identity1.Error.NotFound", 400, NULL },
        { "org.aziot.Identity1.Error.NotAuthorized", 401, "authorization error" },
        { "org.aziot.Identity1.Error.CloudError", 404, NULL },
};

const Service identity_service = {
        .name = "identityd",
        .bus_name = "org.aziot.Identity1",
        .object_path = "/org/aziot/Identity1",
        .interface = "org.aziot.Identity1",
        .api_versions = identity_api_versions,
        .n_api_versions = ELEMENTSOF(identity_api_versions),
        .routes = identity_routes,
        .n_routes = ELEMENTSOF(identity_routes),
        .errors = identity_errors,
        .n_errors = ELEMENTSOF(identity_errors),
};
