/* SPDX-License-Identifier: MIT */
/* The HTTP contract of tpmd.sock (spec §5, interfaces/tpm.yaml), translated to org.aziot.Tpm1
 * (dbus/org.aziot.Tpm1.xml). Member names are snake_case, as upstream's. Every failure of tpmd
 * is upstream's 500 "internal error" (tpmd's message is logged), except that a caller polkit
 * refuses the import is told so with a 401: upstream has no authorization to refuse with. */
#include <errno.h>

#include "log.h"
#include "macro.h"
#include "tpm-routes.h"

enum {
        V2020_09_01,
};

static const char *const tpm_api_versions[] = {
        [V2020_09_01] = "2020-09-01",
};

static int read_bytes(sd_bus_message *reply, const void **ret, size_t *ret_len)
{
        return sd_bus_message_read_array(reply, 'y', ret, ret_len);
}

/* --- GET /get_tpm_keys --- */

static int on_keys(RouteCall *call, sd_bus_message *reply)
{
        const void *ek, *srk;
        size_t ek_len, srk_len;
        JsonWriter w = {};
        int r;

        r = read_bytes(reply, &ek, &ek_len);
        if (r >= 0)
                r = read_bytes(reply, &srk, &srk_len);
        if (r < 0)
                return r;
        json_begin_object(&w);
        json_key(&w, "endorsement_key");
        json_base64(&w, ek, ek_len);
        json_key(&w, "storage_root_key");
        json_base64(&w, srk, srk_len);
        json_end_object(&w);
        route_reply(call, 200, &w);
        buffer_done(&w.out);
        return 0;
}

static int handle_get_tpm_keys(RouteCall *call)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = route_new_method_call(call, "GetTpmKeys", &m);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_keys);
        return r;
}

/* --- POST /import_auth_key, POST /sign_with_auth_key --- */

static int on_imported(RouteCall *call, sd_bus_message *reply)
{
        JsonWriter w = {};

        json_begin_object(&w);
        json_end_object(&w);
        route_reply(call, 200, &w);
        buffer_done(&w.out);
        return 0;
}

static int on_signed(RouteCall *call, sd_bus_message *reply)
{
        const void *digest;
        size_t len;
        JsonWriter w = {};
        int r;

        r = read_bytes(reply, &digest, &len);
        if (r < 0)
                return r;
        json_begin_object(&w);
        json_key(&w, "digest");
        json_base64(&w, digest, len);
        json_end_object(&w);
        route_reply(call, 200, &w);
        buffer_done(&w.out);
        return 0;
}

static const JsonField import_fields[] = {
        { "key", JSON_FIELD_BYTES },
};

static const JsonField sign_fields[] = {
        { "data", JSON_FIELD_BYTES },
};

/* One member of bytes in, one D-Bus call with them. */
static int call_with_bytes(RouteCall *call, const JsonField *fields, const char *member,
                           int (*on_reply)(RouteCall *, sd_bus_message *))
{
        _cleanup_route_body_ RouteBody b = { .fields = fields, .n = 1 };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = route_body_decode(call, &b);
        if (r <= 0)
                return r;
        r = route_new_method_call(call, member, &m);
        if (r >= 0)
                r = sd_bus_message_append_array(m, 'y', b.values[0].data, b.values[0].len);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_reply);
        return r;
}

static int handle_import_auth_key(RouteCall *call)
{
        return call_with_bytes(call, import_fields, "ImportAuthKey", on_imported);
}

static int handle_sign_with_auth_key(RouteCall *call)
{
        return call_with_bytes(call, sign_fields, "SignWithAuthKey", on_signed);
}

/* --- The tables --- */

static const Route tpm_routes[] = {
        { HTTP_GET, "/get_tpm_keys", V2020_09_01, V2020_09_01, handle_get_tpm_keys },
        { HTTP_POST, "/import_auth_key", V2020_09_01, V2020_09_01, handle_import_auth_key },
        { HTTP_POST, "/sign_with_auth_key", V2020_09_01, V2020_09_01,
          handle_sign_with_auth_key },
};

static const RouteError tpm_errors[] = {
        { "org.aziot.Tpm1.Error.NotAuthorized", 401, NULL },
};

const Service tpm_service = {
        .name = "tpmd",
        .bus_name = "org.aziot.Tpm1",
        .object_path = "/org/aziot/Tpm1",
        .interface = "org.aziot.Tpm1",
        .api_versions = tpm_api_versions,
        .n_api_versions = ELEMENTSOF(tpm_api_versions),
        .routes = tpm_routes,
        .n_routes = ELEMENTSOF(tpm_routes),
        .errors = tpm_errors,
        .n_errors = ELEMENTSOF(tpm_errors),
};
