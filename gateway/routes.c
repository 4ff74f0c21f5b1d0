/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "macro.h"
#include "routes.h"

/* --- Targets, queries and paths --- */

void route_split_target(const char *target, const char **ret_path, size_t *ret_path_len,
                        const char **ret_query, size_t *ret_query_len)
{
        const char *path = target, *q, *end;

        /* Absolute form: skip "scheme://authority". */
        if (target[0] != '/') {
                const char *scheme_end = strstr(target, "://");

                if (scheme_end && !memchr(target, '/', (size_t)(scheme_end - target))) {
                        path = strchr(scheme_end + 3, '/');
                        if (!path)
                                path = scheme_end + strlen(scheme_end); /* no path: empty */
                }
        }
        end = path + strcspn(path, "#");
        q = memchr(path, '?', (size_t)(end - path));
        *ret_path = path;
        *ret_path_len = (size_t)((q ?: end) - path);
        *ret_query = q ? q + 1 : end;
        *ret_query_len = q ? (size_t)(end - q - 1) : 0;
}


void percent_decode(Buffer *out, const char *s, size_t n, bool plus_is_space)
{
        for (size_t i = 0; i < n; i++) {
                int hi, lo;

                if (s[i] == '+' && plus_is_space) {
                        buffer_append_byte(out, ' ');
                        continue;
                }
                if (s[i] == '%' && i + 2 < n && (hi = unhexchar(s[i + 1])) >= 0 &&
                    (lo = unhexchar(s[i + 2])) >= 0) {
                        buffer_append_byte(out, (char)(hi << 4 | lo));
                        i += 2;
                        continue;
                }
                buffer_append_byte(out, s[i]);
        }
        /* An empty result is "" rather than NULL. */
        buffer_append(out, "", 0);
}

void query_free(QueryParam *q, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(q[i].name);
                free(q[i].value);
        }
        free(q);
}

static char *form_decode(const char *s, size_t n)
{
        Buffer raw = {}, text = {};

        percent_decode(&raw, s, n, /* plus_is_space= */ true);
        utf8_append_lossy(&text, raw.data ?: "", raw.len);
        buffer_append(&text, "", 0);
        buffer_done(&raw);
        if (text.error) {
                buffer_done(&text);
                return NULL;
        }
        return text.data;
}

int query_parse(const char *query, size_t n, QueryParam **ret, size_t *ret_n)
{
        QueryParam *q = NULL;
        size_t count = 0, i = 0;

        while (i < n) {
                size_t len = 0, name_len;
                const char *piece = query + i, *eq;
                QueryParam *nq;

                while (i + len < n && query[i + len] != '&')
                        len++;
                i += len + 1;
                if (len == 0)
                        continue;
                eq = memchr(piece, '=', len);
                name_len = eq ? (size_t)(eq - piece) : len;

                nq = realloc(q, (count + 1) * sizeof(QueryParam));
                if (!nq) {
                        query_free(q, count);
                        return -ENOMEM;
                }
                q = nq;
                q[count].name = form_decode(piece, name_len);
                q[count].value = eq ? form_decode(eq + 1, len - name_len - 1) : strdup("");
                count++;
                if (!q[count - 1].name || !q[count - 1].value) {
                        query_free(q, count);
                        return -ENOMEM;
                }
        }
        *ret = q;
        *ret_n = count;
        return 0;
}

static int decode_param(const char *s, size_t n, char **ret, size_t *ret_len)
{
        Buffer b = {};

        percent_decode(&b, s, n, /* plus_is_space= */ false);
        if (b.error)
                return b.error;
        if (!utf8_is_valid(b.data, b.len)) {
                buffer_done(&b);
                return 0;
        }
        *ret = b.data;
        *ret_len = b.len;
        return 1;
}

static void params_free(char **params, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(params[i]);
                params[i] = NULL;
        }
}

typedef struct Span {
        size_t start, len;
} Span;

/* The shape of the match: literal bytes equal, each '*' one non-empty segment. */
static bool match_spans(const char *pattern, const char *path, size_t path_len, Span *spans,
                        size_t max, size_t *ret_n)
{
        size_t i = 0, n = 0;

        for (const char *p = pattern; *p; p++) {
                if (*p == '*') {
                        size_t start = i;

                        while (i < path_len && path[i] != '/')
                                i++;
                        if (i == start || n >= max)
                                return false;
                        spans[n++] = (Span){ start, i - start };
                } else if (i < path_len && path[i] == *p) {
                        i++;
                } else {
                        return false;
                }
        }
        *ret_n = n;
        return i == path_len;
}

int route_match_path(const char *pattern, const char *path, size_t path_len, char **params,
                     size_t *lens, size_t max_params)
{
        Span spans[ROUTE_PARAMS_MAX];
        size_t n = 0;
        int r;

        if (!match_spans(pattern, path, path_len, spans, MIN(max_params, ELEMENTSOF(spans)), &n))
                return 0;
        for (size_t i = 0; i < n; i++) {
                r = decode_param(path + spans[i].start, spans[i].len, &params[i], &lens[i]);
                if (r <= 0) {
                        params_free(params, i);
                        return r;
                }
        }
        return 1;
}

bool route_content_type_is_json(const char *content_type)
{
        const char *start, *end;

        if (!content_type)
                return true;
        /* A value that is not visible ASCII reads as no Content-Type at all upstream. */
        for (const char *p = content_type; *p; p++)
                if (*p != '\t' && (*p < 0x20 || *p > 0x7e))
                        return true;
        start = content_type;
        end = start + strcspn(start, ";");
        while (start < end && strchr(" \t", *start))
                start++;
        while (end > start && strchr(" \t", end[-1]))
                end--;
        return (size_t)(end - start) == STRLEN("application/json") &&
               memcmp(start, "application/json", STRLEN("application/json")) == 0;
}

void route_invalid_api_version_message(Buffer *b, const char *version)
{
        buffer_append_str(b, "invalid api-version ");
        rust_debug_quote(b, version, strlen(version));
}

/* --- Calls --- */

static void route_call_free(void *userdata)
{
        RouteCall *call = userdata;

        if (!call)
                return;
        if (call->in_flight)
                gateway_link_end(call->link); /* the client went away first */
        sd_bus_slot_unref(call->slot);
        params_free(call->params, ELEMENTSOF(call->params));
        query_free(call->query, call->n_query);
        free(call);
}

void route_reply(RouteCall *call, unsigned status, const JsonWriter *w)
{
        if (w->out.error) {
                route_fail(call, w->out.error);
                return;
        }
        http_request_reply(call->req, status, w->out.data ?: "", w->out.len);
}

void route_reply_no_content(RouteCall *call)
{
        http_request_reply(call->req, 204, NULL, 0);
}

void route_reply_error(RouteCall *call, unsigned status, const char *message)
{
        http_request_reply_error(call->req, status, message);
}

void route_reply_json_error(RouteCall *call, const JsonError *e)
{
        Buffer b = {};

        json_error_append(&b, e);
        if (b.error)
                route_fail(call, b.error);
        else
                route_reply_error(call, 422, b.data);
        buffer_done(&b);
}

void route_fail(RouteCall *call, int error)
{
        log_error("!!! internal error");
        log_error_errno(error, "!!! caused by: %m");
        route_reply_error(call, 500, "internal error");
}

int route_body_check_any(RouteCall *call)
{
        JsonError error;

        if (call->body && json_validate(call->body, call->body_len, &error) < 0) {
                route_reply_json_error(call, &error);
                return 0;
        }
        return 1;
}

void route_body_done(RouteBody *b)
{
        if (b->fields)
                json_field_values_done(b->fields, b->values, b->n);
}

int route_body_decode(RouteCall *call, RouteBody *b)
{
        JsonError error;
        int r;

        assert(b->n <= ELEMENTSOF(b->values));
        if (!call->body) {
                route_reply_error(call, 400, "missing request body");
                return 0;
        }
        r = json_decode_body(call->body, call->body_len, "struct Request", b->fields, b->n,
                             b->values, &error, &b->end_line, &b->end_column);
        if (r == -EINVAL) {
                route_reply_json_error(call, &error);
                return 0;
        }
        return r < 0 ? r : 1;
}

int route_new_method_call(RouteCall *call, const char *member, sd_bus_message **ret)
{
        const Service *s = call->service;
        bool peer;
        sd_bus *bus;
        int r;

        r = gateway_bus_for(call->bus, s->bus_name, s->object_path, s->interface, &bus, &peer,
                            &call->link);
        if (r < 0)
                return log_debug_errno(r, "No bus connection: %m");
        /* A peer-to-peer connection has no bus names: the service is the peer. */
        return sd_bus_message_new_method_call(bus, ret, peer ? NULL : s->bus_name,
                                              s->object_path, s->interface, member);
}

int route_open_options(RouteCall *call, sd_bus_message *m)
{
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        return sd_bus_message_append(m, "{sv}", "client-socket", "h", http_request_fd(call->req));
}

int route_append_options(RouteCall *call, sd_bus_message *m)
{
        int r;

        r = route_open_options(call, m);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(m);
}

/* Logs an error answer the way upstream does: every line of the message, prefixed "!!! ". */
static void log_error_lines(int level, const char *message)
{
        for (const char *p = message; *p;) {
                size_t n = strcspn(p, "\n");

                log_full(level, "!!! %.*s", (int)n, p);
                p += n;
                if (*p == '\n')
                        p++;
        }
}

static void reply_bus_error(RouteCall *call, const sd_bus_error *e)
{
        const Service *s = call->service;

        for (size_t i = 0; i < s->n_errors; i++) {
                const RouteError *m = &s->errors[i];

                if (!sd_bus_error_has_name(e, m->dbus_error))
                        continue;
                if (m->message) {
                        log_info("!!! %s", m->message);
                        route_reply_error(call, m->status, m->message);
                } else {
                        log_error_lines(LOG_INFO, strempty(e->message));
                        route_reply_error(call, m->status, strempty(e->message));
                }
                return;
        }
        log_error("!!! internal error");
        log_error("!!! caused by: %s: %s", strempty(e->name), strempty(e->message));
        route_reply_error(call, 500, "internal error");
}

static int on_bus_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        RouteCall *call = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        int r;

        if (call->in_flight) {
                gateway_link_end(call->link);
                call->in_flight = false;
        }
        if (e) {
                reply_bus_error(call, e);
                return 0;
        }
        r = call->on_reply(call, reply);
        if (r < 0)
                route_fail(call, r);
        return 0;
}

int route_send(RouteCall *call, sd_bus_message *m,
               int (*on_reply)(RouteCall *call, sd_bus_message *reply))
{
        int r;

        call->on_reply = on_reply;
        /* The slot is the call's: when the client goes away first, freeing the call cancels it.
         * No timeout, like upstream's in-process calls: a service that exits makes the bus (or
         * the closed private connection) answer NoReply, and not arming a timer per call saves
         * two syscalls on the hot path. */
        r = sd_bus_call_async(sd_bus_message_get_bus(m), &call->slot, m, on_bus_reply, call,
                              /* usec= */ UINT64_MAX);
        if (r < 0)
                return r;
        if (call->link) {
                gateway_link_begin(call->link);
                call->in_flight = true;
        }
        return 0;
}

/* --- Dispatch --- */

static void run_handler(RouteCall *call)
{
        int r = call->route->handler(call);

        if (r < 0)
                route_fail(call, r);
}

static int find_api_version(const Service *s, const QueryParam *q, size_t n, HttpRequest *req,
                            unsigned *ret)
{
        const char *version = NULL;
        Buffer message = {};

        for (size_t i = 0; i < n; i++)
                if (streq(q[i].name, "api-version"))
                        version = q[i].value; /* the last one wins */
        if (!version) {
                http_request_reply_error(req, 400, "api-version not specified");
                return 0;
        }
        for (size_t i = 0; i < s->n_api_versions; i++)
                if (streq(s->api_versions[i], version)) {
                        *ret = (unsigned)i;
                        return 1;
                }
        route_invalid_api_version_message(&message, version);
        http_request_reply_error(req, 400, message.data ?: "invalid api-version");
        buffer_done(&message);
        return 0;
}

static bool version_in(const Route *r, unsigned v)
{
        return v >= r->min_version && v <= r->max_version;
}

/* The first route whose versions and path match; then the row of that route for the method. */
static int find_route(RouteCall *call, HttpMethod method, const char *path, size_t path_len)
{
        const Service *s = call->service;
        const Route *matched = NULL;
        int r;

        for (size_t i = 0; i < s->n_routes && !matched; i++) {
                if (!version_in(&s->routes[i], call->api_version))
                        continue;
                r = route_match_path(s->routes[i].path, path, path_len, call->params,
                                     call->param_lens, ELEMENTSOF(call->params));
                if (r < 0)
                        return r;
                if (r > 0)
                        matched = &s->routes[i];
        }
        if (!matched)
                return 0;
        for (size_t i = 0; i < s->n_routes; i++)
                if (s->routes[i].method == method && streq(s->routes[i].path, matched->path) &&
                    version_in(&s->routes[i], call->api_version)) {
                        call->route = &s->routes[i];
                        break;
                }
        return 1;
}

/* Sorts out query and route. Returns 1 to go on with the call, 0 once answered. */
static int route_request(RouteCall *call)
{
        HttpRequest *req = call->req;
        const char *path, *query;
        size_t path_len, query_len;
        int r;

        route_split_target(http_request_target(req), &path, &path_len, &query, &query_len);
        r = query_parse(query, query_len, &call->query, &call->n_query);
        if (r < 0)
                return r;
        r = find_api_version(call->service, call->query, call->n_query, req, &call->api_version);
        if (r <= 0)
                return r;
        r = find_route(call, http_request_method(req), path, path_len);
        if (r < 0)
                return r;
        if (r == 0) {
                http_request_reply_error(req, 404, "not found");
                return 0;
        }
        return 1;
}

static int dispatch_head(HttpRequest *req, void *userdata)
{
        RouteService *rs = userdata;
        RouteCall *call;
        int r;

        call = calloc(1, sizeof(RouteCall));
        if (!call) {
                http_request_reply_error(req, 500, "internal error");
                return 0;
        }
        *call = (RouteCall){ .service = rs->service, .bus = rs->bus, .req = req };
        http_request_set_userdata(req, call, route_call_free);

        r = route_request(call);
        if (r < 0) {
                route_fail(call, r);
                return 0;
        }
        if (r == 0)
                return 0;

        switch (http_request_method(req)) {
        case HTTP_GET:
                if (!call->route)
                        route_reply_error(call, 400, "method not allowed");
                else
                        run_handler(call);
                return 0;
        case HTTP_POST:
        case HTTP_DELETE:
                return 1;
        case HTTP_PUT:
                if (!route_content_type_is_json(http_request_content_type(req))) {
                        route_reply_error(call, 415, "request body must be application/json");
                        return 0;
                }
                return 1;
        default:
                route_reply_error(call, 400, "method not allowed");
                return 0;
        }
}

static void dispatch_body(HttpRequest *req, void *userdata)
{
        RouteCall *call = http_request_get_userdata(req);
        JsonError error;
        const char *body;
        size_t len;

        body = http_request_body(req, &len);
        if (http_request_method(req) == HTTP_PUT) {
                /* PUT needs a body: an empty one is a JSON error like any other. */
                call->body = body ?: "";
                call->body_len = len;
        } else if (len > 0 && route_content_type_is_json(http_request_content_type(req))) {
                call->body = body;
                call->body_len = len;
        }

        if (call->route) {
                run_handler(call);
                return;
        }
        /* The route lacks the method; upstream still decodes the body (as anything) first. */
        if (call->body && json_validate(call->body, call->body_len, &error) < 0) {
                route_reply_json_error(call, &error);
                return;
        }
        route_reply_error(call, 400, "method not allowed");
}

const HttpHandler route_http_handler = {
        .head = dispatch_head,
        .body = dispatch_body,
};
