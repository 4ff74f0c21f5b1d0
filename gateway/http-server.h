/* SPDX-License-Identifier: MIT */
#pragma once

/* The gateway's HTTP/1.1 server on Unix sockets, driven by sd-event.
 *
 * Each connection handles one request at a time: pipelined requests wait in the socket until the
 * previous response is written, so responses always come back in order. Bodies are read with a
 * deadline (408), limited in size (413), and may be chunked. Connections are counted per peer uid
 * and listener: a uid that already has max_connections_per_uid open gets its new connection closed
 * without a response (upstream's throttling). Every response carries at most four headers. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "http-parser.h"

/* Request bodies larger than this are refused with 413 and the connection is closed. */
#define HTTP_BODY_MAX (1024u * 1024u)
/* The default time a client has to send a request, once it has started (upstream: 5 s). */
#define HTTP_BODY_TIMEOUT_USEC (5u * 1000000u)

typedef struct HttpServer HttpServer;
typedef struct HttpListener HttpListener;
typedef struct HttpRequest HttpRequest;

typedef struct HttpHandler {
        /* A request head has been read. Return 1 to have its body read, then body() is called;
         * or 0 once a reply has been sent or will be sent without the body (an unread body is
         * skipped if it has already arrived, else the connection is closed after the reply). */
        int (*head)(HttpRequest *req, void *userdata);
        void (*body)(HttpRequest *req, void *userdata);
} HttpHandler;

int http_server_new(sd_event *event, HttpServer **ret);
/* Closes every connection and listener; removes the sockets it bound itself. */
HttpServer *http_server_free(HttpServer *s);
static inline void http_server_freep(HttpServer **s)
{
        if (*s)
                http_server_free(*s);
}

void http_server_set_body_timeout(HttpServer *s, uint64_t usec);

/* Serves the listening socket fd (which is taken over, also on failure). name is for the logs;
 * bound_path, when set, is unlinked when the server goes. *ret_listener (may be NULL) stays valid
 * as long as the server. */
int http_server_add_listener(HttpServer *s, int fd, const char *name, const char *bound_path,
                             unsigned max_connections_per_uid, const HttpHandler *handler,
                             void *userdata, HttpListener **ret_listener);

/* Changes the limit; connections already open stay, new ones are counted against it. */
void http_listener_set_max_connections_per_uid(HttpListener *l, unsigned max);
/* hook(userdata) is called for each accepted connection, before it is counted against the limit
 * (which the hook may change). */
void http_listener_set_accept_hook(HttpListener *l, void (*hook)(void *userdata), void *userdata);

/* Creates a listening Unix stream socket at path (an existing socket or file there is removed
 * first, a directory is an error) with mode 0660. */
int http_listen_unix(const char *path, int *ret_fd);

HttpMethod http_request_method(const HttpRequest *req);
const char *http_request_target(const HttpRequest *req);
/* The raw Content-Type value, NULL when there was none. */
const char *http_request_content_type(const HttpRequest *req);
/* The body (after chunked decoding); NULL with length 0 when there was none. */
const char *http_request_body(const HttpRequest *req, size_t *ret_len);
/* The accepted client socket (valid until the reply), and its peer's uid. */
int http_request_fd(const HttpRequest *req);
uid_t http_request_uid(const HttpRequest *req);

/* State the handler keeps for the request, destroyed with it (also when the client goes away
 * before the reply: in-flight work must be cancellable from destroy). */
void http_request_set_userdata(HttpRequest *req, void *data, void (*destroy)(void *));
void *http_request_get_userdata(const HttpRequest *req);

/* Sends the response: Content-Type application/json and the body, or for 204 neither. After this
 * call req, its userdata and the body are gone. */
void http_request_reply(HttpRequest *req, unsigned status, const char *json, size_t len);
/* The same with the body {"message":"<message>"}. */
void http_request_reply_error(HttpRequest *req, unsigned status, const char *message);
