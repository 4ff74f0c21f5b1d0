/* SPDX-License-Identifier: MIT */
#pragma once

/* A strict HTTP/1.1 request parser (RFC 9112), without I/O: the request head, and chunked bodies.
 * Lines end in CRLF or a bare LF; a bare CR, obsolete line folding, whitespace before a header's
 * colon, conflicting lengths, or Transfer-Encoding together with Content-Length are errors. The
 * Host header is not looked at. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "text.h"

/* A request head (request line and headers) may be this long … */
#define HTTP_HEAD_MAX (16u * 1024u)
/* … and have this many header lines. */
#define HTTP_HEADERS_MAX 100u
/* A chunk-size line (with its extensions) may be this long. */
#define HTTP_CHUNK_LINE_MAX 1024u

typedef enum HttpMethod {
        HTTP_GET,
        HTTP_POST,
        HTTP_PUT,
        HTTP_DELETE,
        HTTP_HEAD,
        HTTP_OTHER, /* any other token: PATCH, OPTIONS, get, … */
} HttpMethod;

typedef enum HttpFraming {
        HTTP_BODY_NONE,
        HTTP_BODY_LENGTH,
        HTTP_BODY_CHUNKED,
} HttpFraming;

typedef struct HttpRequestHead {
        HttpMethod method;
        char *method_name;
        char *target; /* the request-target as sent */
        unsigned minor_version; /* HTTP/1.<minor_version> */
        HttpFraming framing;
        uint64_t content_length; /* HTTP_BODY_LENGTH */
        bool keep_alive; /* the connection stays open after this request */
        bool expect_continue;
        char *content_type; /* the first Content-Type value, NULL when absent */
} HttpRequestHead;

void http_request_head_done(HttpRequestHead *h);

/* Parses the head at the start of buf. Empty lines before the request line are skipped. Returns
 * the length of the head including its final empty line once complete, 0 when more bytes are
 * needed, or:
 *   -EBADMSG          malformed (400)
 *   -E2BIG            longer than HTTP_HEAD_MAX or more than HTTP_HEADERS_MAX headers (431)
 *   -EPROTONOSUPPORT  a version other than HTTP/1.0 and HTTP/1.1 (505)
 *   -EOPNOTSUPP       a transfer coding other than chunked (501)
 *   -ENOMEM */
int http_parse_head(const char *buf, size_t len, HttpRequestHead *ret);

typedef enum HttpChunkState {
        HTTP_CHUNK_SIZE,
        HTTP_CHUNK_DATA,
        HTTP_CHUNK_DATA_END,
        HTTP_CHUNK_TRAILER,
        HTTP_CHUNK_DONE,
} HttpChunkState;

typedef struct HttpChunkedDecoder {
        HttpChunkState state;
        uint64_t remaining; /* of the current chunk */
        size_t trailer_len;
} HttpChunkedDecoder;

/* Decodes the chunked body in in[0..len), appending the data to body. Returns 1 once the last
 * chunk and the trailer section have been read, 0 when more input is needed, -EBADMSG when the
 * coding is malformed, -EFBIG when the data would exceed max bytes. *ret_consumed tells how much
 * of in was used; an incomplete line is left unconsumed. */
int http_chunked_decode(HttpChunkedDecoder *d, const char *in, size_t len, size_t *ret_consumed,
                        Buffer *body, size_t max);

/* "OK", "Bad Request", … for the status codes the gateway sends. */
const char *http_status_reason(unsigned status);
