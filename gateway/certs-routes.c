/* SPDX-License-Identifier: MIT */
/* The HTTP contract of certd.sock (spec §3.3, interfaces/certs.yaml), translated to
 * org.aziot.Certificates1 (dbus/org.aziot.Certificates1.xml). Every call carries the client's
 * socket as option "client-socket" so that certd authorizes the client, not the gateway. */
#include <errno.h>
#include <string.h>

#include "certs-routes.h"
#include "log.h"
#include "macro.h"

enum {
        V2020_09_01,
};

static const char *const certs_api_versions[] = {
        [V2020_09_01] = "2020-09-01",
};

/* D-Bus strings cannot hold U+0000, which JSON and percent-encoding can: such an argument is
 * refused here as certd refuses a malformed one. Returns 1 when s has no NUL, 0 once answered. */
static int check_no_nul(RouteCall *call, const char *name, const char *s, size_t len)
{
        Buffer message = {};

        if (!memchr(s, 0, len))
                return 1;
        buffer_appendf(&message, "parameter \"%s\" has an invalid value", name);
        log_info("!!! parameter \"%s\" has an invalid value", name);
        route_reply_error(call, 400, message.data ?: "a parameter has an invalid value");
        buffer_done(&message);
        return 0;
}

static void reply_pem(RouteCall *call, unsigned status, const char *pem, size_t len)
{
        JsonWriter w = {};

        json_begin_object(&w);
        json_key(&w, "pem");
        json_string(&w, pem, len);
        json_end_object(&w);
        route_reply(call, status, &w);
        buffer_done(&w.out);
}

static int on_pem(RouteCall *call, sd_bus_message *reply, unsigned status)
{
        const char *pem;
        int r;

        r = sd_bus_message_read(reply, "s", &pem);
        if (r < 0)
                return r;
        reply_pem(call, status, pem, strlen(pem));
        return 0;
}

static int on_created(RouteCall *call, sd_bus_message *reply)
{
        return on_pem(call, reply, 201);
}

static int on_got(RouteCall *call, sd_bus_message *reply)
{
        return on_pem(call, reply, 200);
}

static int on_no_content(RouteCall *call, sd_bus_message *reply)
{
        route_reply_no_content(call);
        return 0;
}

/* --- POST /certificates --- */

static const JsonField issuer_fields[] = {
        { "certId", JSON_FIELD_STRING },
        { "privateKeyHandle", JSON_FIELD_STRING },
};

static const JsonField create_fields[] = {
        { "certId", JSON_FIELD_STRING },
        { "csr", JSON_FIELD_STRING },
        { "issuer", JSON_FIELD_STRUCT, .optional = true, .fields = issuer_fields,
          .n_fields = ELEMENTSOF(issuer_fields), .expecting = "struct Issuer" },
};

static int handle_create(RouteCall *call)
{
        _cleanup_route_body_ RouteBody b = ROUTE_BODY(create_fields);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const JsonFieldValue *id = &b.values[0], *csr = &b.values[1], *issuer = &b.values[2];
        const JsonFieldValue *issuer_id = NULL, *issuer_handle = NULL;
        int r;

        r = route_body_decode(call, &b);
        if (r <= 0)
                return r;
        if (!check_no_nul(call, "id", id->data, id->len) ||
            !check_no_nul(call, "csr", csr->data, csr->len))
                return 0;
        if (issuer->present) {
                issuer_id = &((const JsonFieldValue *)issuer->data)[0];
                issuer_handle = &((const JsonFieldValue *)issuer->data)[1];
                if (!check_no_nul(call, "issuer.certId", issuer_id->data, issuer_id->len) ||
                    !check_no_nul(call, "issuer.privateKeyHandle", issuer_handle->data,
                                  issuer_handle->len))
                        return 0;
        }

        r = route_new_method_call(call, "CreateCertificate", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", id->data, csr->data);
        if (r >= 0)
                r = route_open_options(call, m);
        if (r >= 0 && issuer->present)
                r = sd_bus_message_append(m, "{sv}", "issuer", "(ss)", issuer_id->data,
                                          issuer_handle->data);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = route_send(call, m, on_created);
        return r;
}

/* --- GET, PUT, DELETE /certificates/{certId} --- */

static int call_with_id(RouteCall *call, const char *member,
                        int (*on_reply)(RouteCall *, sd_bus_message *))
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (!check_no_nul(call, "id", call->params[0], call->param_lens[0]))
                return 0;
        r = route_new_method_call(call, member, &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "s", call->params[0]);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_reply);
        return r;
}

static int handle_get(RouteCall *call)
{
        return call_with_id(call, "GetCertificate", on_got);
}

static int handle_delete(RouteCall *call)
{
        return call_with_id(call, "DeleteCertificate", on_no_content);
}

static const JsonField import_fields[] = {
        { "pem", JSON_FIELD_STRING },
};

/* Upstream answers with the PEM of the request; certd stores it byte for byte. The reply comes
 * from the request's body, which the call outlives, so the decoded text is re-read then. */
static int on_imported(RouteCall *call, sd_bus_message *reply)
{
        _cleanup_route_body_ RouteBody b = ROUTE_BODY(import_fields);
        int r;

        r = route_body_decode(call, &b);
        if (r <= 0)
                return r;
        reply_pem(call, 201, b.values[0].data, b.values[0].len);
        return 0;
}

static int handle_import(RouteCall *call)
{
        _cleanup_route_body_ RouteBody b = ROUTE_BODY(import_fields);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = route_body_decode(call, &b);
        if (r <= 0)
                return r;
        if (!check_no_nul(call, "id", call->params[0], call->param_lens[0]) ||
            !check_no_nul(call, "pem", b.values[0].data, b.values[0].len))
                return 0;

        r = route_new_method_call(call, "ImportCertificate", &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", call->params[0], b.values[0].data);
        if (r >= 0)
                r = route_append_options(call, m);
        if (r >= 0)
                r = route_send(call, m, on_imported);
        return r;
}

/* --- The tables --- */

static const Route certs_routes[] = {
        { HTTP_POST, "/certificates", V2020_09_01, V2020_09_01, handle_create },
        { HTTP_GET, "/certificates/*", V2020_09_01, V2020_09_01, handle_get },
        { HTTP_PUT, "/certificates/*", V2020_09_01, V2020_09_01, handle_import },
        { HTTP_DELETE, "/certificates/*", V2020_09_01, V2020_09_01, handle_delete },
};

/* certd puts upstream's texts in its error messages. */
static const RouteError certs_errors[] = {
        { "org.aziot.Certificates1.Error.InvalidParameter", 400, NULL },
        { "org.aziot.Certificates1.Error.NotFound", 400, NULL },
        { "org.aziot.Certificates1.Error.NotAuthorized", 401, NULL },
};

const Service certs_service = {
        .name = "certd",
        .bus_name = "org.aziot.Certificates1",
        .object_path = "/org/aziot/Certificates1",
        .interface = "org.aziot.Certificates1",
        .api_versions = certs_api_versions,
        .n_api_versions = ELEMENTSOF(certs_api_versions),
        .routes = certs_routes,
        .n_routes = ELEMENTSOF(certs_routes),
        .errors = certs_errors,
        .n_errors = ELEMENTSOF(certs_errors),
};
