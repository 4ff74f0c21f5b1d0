/* SPDX-License-Identifier: MIT */
#pragma once

/* The request handling every upstream service shares (spec §1.3), for any service described by a
 * Service: a route table (method, path, api-versions → handler) and an error table (D-Bus error →
 * HTTP status and message). Adding a service to the gateway means writing those two tables and
 * the handlers, nothing here.
 *
 * Per request: the query is parsed as form-urlencoded and the last api-version wins (400 when it
 * is missing or unknown); the routes are tried in order on the raw path, a route counting only if
 * its api-version range holds the requested one, and path parameters are percent-decoded after
 * matching (not UTF-8: no match); no route: 404. The first matching row decides the route; its
 * rows with the same path give the methods it has. GET runs at once; POST and DELETE read the
 * body first, PUT too after checking its Content-Type (415); other methods, and methods the route
 * lacks, are 400 "method not allowed" (a POST, DELETE or PUT body is still read and, if it is JSON,
 * checked first, 422 on error, as upstream does). */

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-bus.h>

#include "bus.h"
#include "http-server.h"
#include "json.h"
#include "text.h"

#define ROUTE_PARAMS_MAX 4

typedef struct RouteCall RouteCall;

/* Handles one request. Returns 0 once it has replied or sent a D-Bus call whose reply will, or a
 * negative errno for a failure that is answered 500 "internal error". */
typedef int (*route_handler_t)(RouteCall *call);

typedef struct Route {
        HttpMethod method;
        const char *path; /* literal text; '*' is one path segment (one or more bytes, no '/') */
        unsigned min_version, max_version; /* indices into Service.api_versions, inclusive */
        route_handler_t handler;
} Route;

typedef struct RouteError {
        const char *dbus_error;
        unsigned status;
        const char *message; /* NULL: the D-Bus error's message */
} RouteError;

typedef struct Service {
        const char *name; /* the socket's name ("keyd") */
        const char *bus_name, *object_path, *interface;
        const char *const *api_versions; /* oldest first */
        size_t n_api_versions;
        const Route *routes;
        size_t n_routes;
        /* D-Bus errors not listed here are 500 "internal error". */
        const RouteError *errors;
        size_t n_errors;
} Service;

typedef struct QueryParam {
        char *name, *value;
} QueryParam;

struct RouteCall {
        const Service *service;
        const Route *route; /* the row for the request's method, NULL if the route lacks it */
        GatewayBus *bus;
        HttpRequest *req;
        unsigned api_version;
        char *params[ROUTE_PARAMS_MAX]; /* decoded path parameters, in order */
        size_t param_lens[ROUTE_PARAMS_MAX]; /* their lengths (%00 decodes to U+0000) */
        QueryParam *query; /* the other query parameters, in order */
        size_t n_query;
        const char *body; /* JSON text, or NULL for "no body" */
        size_t body_len;
        sd_bus_slot *slot;
        GatewayLink *link; /* the private connection the call went on, NULL for the bus */
        bool in_flight;    /* a call on link awaits its reply */
        int (*on_reply)(RouteCall *call, sd_bus_message *reply);
};

/* Binds a service to the bus for the HTTP server: pass &route_http_handler and a RouteService as
 * the listener's handler and userdata. */
typedef struct RouteService {
        const Service *service;
        GatewayBus *bus;
} RouteService;

extern const HttpHandler route_http_handler;

/* --- For handlers --- */

void route_reply(RouteCall *call, unsigned status, const JsonWriter *w);
void route_reply_no_content(RouteCall *call);
void route_reply_error(RouteCall *call, unsigned status, const char *message);
/* 422 with the decoder's serde-like text. */
void route_reply_json_error(RouteCall *call, const JsonError *e);
/* 500 "internal error", logging why. */
void route_fail(RouteCall *call, int error);

/* The decoded fields of a request body, freed (and wiped) on scope exit:
 *     _cleanup_route_body_ RouteBody b = ROUTE_BODY(fields);
 * route_body_decode() reads the body as upstream's "struct Request" of those fields. Returns 1
 * with b filled, 0 once answered (400 "missing request body", 422 when it does not decode), or a
 * negative errno. */
typedef struct RouteBody {
        const JsonField *fields;
        size_t n;
        JsonFieldValue values[4];
        unsigned end_line, end_column; /* just after the body's object */
} RouteBody;

void route_body_done(RouteBody *b);
int route_body_decode(RouteCall *call, RouteBody *b);

#define ROUTE_BODY(f) { .fields = (f), .n = ELEMENTSOF(f) }

/* For routes that ignore their body (upstream decodes it as any JSON value all the same): 1 when
 * there is none or it is JSON, 0 once answered 422. */
int route_body_check_any(RouteCall *call);
#define _cleanup_route_body_ _cleanup_(route_body_done)

/* A call of member on the service's object, on its private connection when there is one. */
int route_new_method_call(RouteCall *call, const char *member, sd_bus_message **ret);
/* Opens the trailing a{sv} options and puts the client socket in as "client-socket"; the caller
 * may add more entries, then closes the container. */
int route_open_options(RouteCall *call, sd_bus_message *m);
/* route_open_options() and the close, for calls with no other option. */
int route_append_options(RouteCall *call, sd_bus_message *m);
/* Sends m. A D-Bus error reply is answered through the service's error table; a method return
 * goes to on_reply, which replies (a negative return is answered 500). */
int route_send(RouteCall *call, sd_bus_message *m,
               int (*on_reply)(RouteCall *call, sd_bus_message *reply));

/* --- The pieces, exposed for the unit tests --- */

/* Splits a request-target into path and query (either may be empty); the absolute form
 * "http://host/path?query" is accepted and a fragment is dropped. */
void route_split_target(const char *target, const char **ret_path, size_t *ret_path_len,
                        const char **ret_query, size_t *ret_query_len);

/* Percent-decodes s into out; '+' becomes a space when plus_is_space. Malformed escapes are kept
 * as they are. */
void percent_decode(Buffer *out, const char *s, size_t n, bool plus_is_space);

/* application/x-www-form-urlencoded parsing (names and values decoded, invalid UTF-8 replaced by
 * U+FFFD). */
int query_parse(const char *query, size_t n, QueryParam **ret, size_t *ret_n);
void query_free(QueryParam *q, size_t n);

/* Matches a raw path against a route pattern; on a match returns 1 with the decoded parameters in
 * params[] (to free) and their lengths in lens[], 0 when it does not match (including a parameter
 * that is not UTF-8). */
int route_match_path(const char *pattern, const char *path, size_t path_len, char **params,
                     size_t *lens, size_t max_params);

/* Whether a request body of this Content-Type is decoded as JSON: no Content-Type (or one that is
 * not visible ASCII), or a media type of exactly application/json. */
bool route_content_type_is_json(const char *content_type);

/* The message of 400 for an api-version the service does not know: invalid api-version "<v>". */
void route_invalid_api_version_message(Buffer *b, const char *version);
