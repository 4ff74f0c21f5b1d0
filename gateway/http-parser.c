/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http-parser.h"
#include "macro.h"

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* field-vchar, SP and HTAB (obs-text included). */
static bool is_field_char(unsigned char c)
{
        return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool is_ows(char c)
{
        return c == ' ' || c == '\t';
}

void http_request_head_done(HttpRequestHead *h)
{
        free(h->method_name);
        free(h->target);
        free(h->content_type);
        *h = (HttpRequestHead){};
}

/* Finds the next line at buf[*pos..len): returns its length without the line ending and moves
 * *pos past it; -EAGAIN when it is not complete yet; -EBADMSG for a bare CR inside it. */
static int next_line(const char *buf, size_t len, size_t *pos, const char **ret)
{
        const char *start = buf + *pos, *nl = memchr(start, '\n', len - *pos);
        size_t n;

        if (!nl)
                return -EAGAIN;
        n = (size_t)(nl - start);
        if (n > 0 && start[n - 1] == '\r')
                n--;
        if (memchr(start, '\r', n))
                return -EBADMSG;
        *pos = (size_t)(nl - buf) + 1;
        *ret = start;
        return (int)MIN(n, (size_t)HTTP_HEAD_MAX + 1);
}

static HttpMethod method_from_token(const char *s, size_t n)
{
        static const struct {
                const char *name;
                HttpMethod method;
        } table[] = {
                { "GET", HTTP_GET },       { "POST", HTTP_POST }, { "PUT", HTTP_PUT },
                { "DELETE", HTTP_DELETE }, { "HEAD", HTTP_HEAD },
        };

        /* Methods are case-sensitive: "get" is just another token. */
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (strlen(table[i].name) == n && memcmp(table[i].name, s, n) == 0)
                        return table[i].method;
        return HTTP_OTHER;
}

static int parse_request_line(const char *line, size_t n, HttpRequestHead *h)
{
        const char *sp1, *sp2, *version;
        size_t method_len, target_len, version_len;

        sp1 = memchr(line, ' ', n);
        if (!sp1 || sp1 == line)
                return -EBADMSG;
        method_len = (size_t)(sp1 - line);
        for (size_t i = 0; i < method_len; i++)
                if (!is_tchar((unsigned char)line[i]))
                        return -EBADMSG;

        sp2 = memchr(sp1 + 1, ' ', n - method_len - 1);
        if (!sp2 || sp2 == sp1 + 1)
                return -EBADMSG;
        target_len = (size_t)(sp2 - sp1 - 1);
        for (size_t i = 0; i < target_len; i++) {
                unsigned char c = (unsigned char)sp1[1 + i];

                if (c <= 0x20 || c >= 0x7f)
                        return -EBADMSG;
        }

        version = sp2 + 1;
        version_len = n - (size_t)(version - line);
        if (version_len != 8 || memcmp(version, "HTTP/", 5) != 0 || version[6] != '.' ||
            version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
                return -EBADMSG;
        if (version[5] != '1' || (version[7] != '0' && version[7] != '1'))
                return -EPROTONOSUPPORT;

        h->method = method_from_token(line, method_len);
        h->method_name = strndup(line, method_len);
        h->target = strndup(sp1 + 1, target_len);
        if (!h->method_name || !h->target)
                return -ENOMEM;
        h->minor_version = (unsigned)(version[7] - '0');
        return 0;
}

/* What the headers say about framing and the connection, gathered before it is decided. */
typedef struct HeadFacts {
        bool has_length, has_chunked, has_te;
        bool close, keep_alive;
} HeadFacts;

static bool token_equal(const char *s, size_t n, const char *token)
{
        return strlen(token) == n && strncasecmp(s, token, n) == 0;
}

/* Calls f for each element of a comma-separated list, with surrounding whitespace trimmed. */
static int for_each_token(const char *v, size_t n, int (*f)(const char *, size_t, void *),
                          void *userdata)
{
        size_t i = 0;

        while (i <= n) {
                size_t start = i, end;
                int r;

                while (i < n && v[i] != ',')
                        i++;
                end = i;
                while (start < end && is_ows(v[start]))
                        start++;
                while (end > start && is_ows(v[end - 1]))
                        end--;
                if (end > start) {
                        r = f(v + start, end - start, userdata);
                        if (r < 0)
                                return r;
                }
                i++;
        }
        return 0;
}

static int connection_token(const char *s, size_t n, void *userdata)
{
        HeadFacts *facts = userdata;

        if (token_equal(s, n, "close"))
                facts->close = true;
        else if (token_equal(s, n, "keep-alive"))
                facts->keep_alive = true;
        return 0;
}

static int transfer_coding(const char *s, size_t n, void *userdata)
{
        HeadFacts *facts = userdata;

        if (!token_equal(s, n, "chunked"))
                return -EOPNOTSUPP;
        if (facts->has_chunked)
                return -EBADMSG; /* chunked twice */
        facts->has_chunked = true;
        return 0;
}

static int content_length(const char *v, size_t n, HttpRequestHead *h, HeadFacts *facts)
{
        uint64_t value = 0;

        if (n == 0 || n > 18)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                if (v[i] < '0' || v[i] > '9')
                        return -EBADMSG;
                value = value * 10 + (uint64_t)(v[i] - '0');
        }
        if (facts->has_length && value != h->content_length)
                return -EBADMSG;
        facts->has_length = true;
        h->content_length = value;
        return 0;
}

static int header_field(const char *name, size_t name_len, const char *v, size_t n,
                        HttpRequestHead *h, HeadFacts *facts)
{
        if (token_equal(name, name_len, "content-length"))
                return content_length(v, n, h, facts);
        if (token_equal(name, name_len, "transfer-encoding")) {
                facts->has_te = true;
                return for_each_token(v, n, transfer_coding, facts);
        }
        if (token_equal(name, name_len, "connection"))
                return for_each_token(v, n, connection_token, facts);
        if (token_equal(name, name_len, "expect")) {
                if (token_equal(v, n, "100-continue"))
                        h->expect_continue = true;
                return 0;
        }
        if (token_equal(name, name_len, "content-type") && !h->content_type) {
                h->content_type = strndup(v, n);
                return h->content_type ? 0 : -ENOMEM;
        }
        return 0; /* Host and everything else: not our business */
}

static int parse_header_line(const char *line, size_t n, HttpRequestHead *h, HeadFacts *facts)
{
        const char *colon = memchr(line, ':', n);
        size_t name_len, start, end;

        if (!colon || colon == line)
                return -EBADMSG;
        name_len = (size_t)(colon - line);
        for (size_t i = 0; i < name_len; i++)
                if (!is_tchar((unsigned char)line[i]))
                        return -EBADMSG; /* also whitespace before the colon */

        start = name_len + 1;
        end = n;
        for (size_t i = start; i < end; i++)
                if (!is_field_char((unsigned char)line[i]))
                        return -EBADMSG;
        while (start < end && is_ows(line[start]))
                start++;
        while (end > start && is_ows(line[end - 1]))
                end--;
        return header_field(line, name_len, line + start, end - start, h, facts);
}

static int finish_head(HttpRequestHead *h, const HeadFacts *facts)
{
        if (facts->has_te) {
                /* A Transfer-Encoding in HTTP/1.0, or next to a Content-Length, is a framing
                 * conflict (RFC 9112 §6.1, §6.3): refuse rather than guess. */
                if (h->minor_version == 0 || facts->has_length)
                        return -EBADMSG;
                h->framing = HTTP_BODY_CHUNKED;
        } else if (facts->has_length && h->content_length > 0) {
                h->framing = HTTP_BODY_LENGTH;
        } else {
                h->framing = HTTP_BODY_NONE;
        }
        if (h->minor_version == 0) {
                h->keep_alive = facts->keep_alive && !facts->close;
                h->expect_continue = false;
        } else {
                h->keep_alive = !facts->close;
        }
        return 0;
}

static int parse_head(const char *buf, size_t len, HttpRequestHead *h)
{
        HeadFacts facts = {};
        size_t pos = 0, n_headers = 0;
        const char *line;
        int n, r;

        /* Empty lines before the request line (a client's stray CRLF after a body). */
        do {
                n = next_line(buf, len, &pos, &line);
                if (n < 0)
                        return n;
        } while (n == 0);
        if (n > (int)HTTP_HEAD_MAX)
                return -E2BIG;
        r = parse_request_line(line, (size_t)n, h);
        if (r < 0)
                return r;

        for (;;) {
                n = next_line(buf, len, &pos, &line);
                if (n < 0)
                        return n;
                if (n == 0)
                        break;
                if (is_ows(line[0]))
                        return -EBADMSG; /* obsolete line folding */
                if (++n_headers > HTTP_HEADERS_MAX || pos > HTTP_HEAD_MAX)
                        return -E2BIG;
                r = parse_header_line(line, (size_t)n, h, &facts);
                if (r < 0)
                        return r;
        }
        if (pos > HTTP_HEAD_MAX)
                return -E2BIG;
        r = finish_head(h, &facts);
        if (r < 0)
                return r;
        return (int)pos;
}

int http_parse_head(const char *buf, size_t len, HttpRequestHead *ret)
{
        HttpRequestHead h = {};
        int r;

        r = parse_head(buf, len, &h);
        if (r == -EAGAIN)
                r = len >= HTTP_HEAD_MAX ? -E2BIG : 0;
        if (r <= 0) {
                http_request_head_done(&h);
                return r;
        }
        *ret = h;
        return r;
}


/* "1a;name=value": the size, then extensions we ignore (but check). */
static int parse_chunk_size(const char *line, size_t n, uint64_t *ret)
{
        uint64_t size = 0;
        size_t i = 0;

        for (; i < n && unhexchar(line[i]) >= 0; i++) {
                if (i >= 15)
                        return -EBADMSG; /* more than we could ever accept anyway */
                size = size << 4 | (uint64_t)unhexchar(line[i]);
        }
        if (i == 0)
                return -EBADMSG;
        while (i < n && is_ows(line[i]))
                i++;
        if (i < n && line[i] != ';')
                return -EBADMSG;
        for (; i < n; i++)
                if (!is_field_char((unsigned char)line[i]))
                        return -EBADMSG;
        *ret = size;
        return 0;
}

/* One line-shaped step: a size line, the end of a chunk's data, or a trailer line. */
static int chunk_line_step(HttpChunkedDecoder *d, const char *in, size_t len, size_t *pos,
                           Buffer *body, size_t max)
{
        const char *line;
        size_t start = *pos;
        int n, r;

        n = next_line(in, len, pos, &line);
        if (n == -EAGAIN) {
                size_t pending = len - start;

                if ((d->state == HTTP_CHUNK_TRAILER && d->trailer_len + pending > HTTP_HEAD_MAX) ||
                    (d->state != HTTP_CHUNK_TRAILER && pending > HTTP_CHUNK_LINE_MAX))
                        return -EBADMSG;
                return 0;
        }
        if (n < 0)
                return n;

        switch (d->state) {
        case HTTP_CHUNK_SIZE:
                if ((size_t)n > HTTP_CHUNK_LINE_MAX)
                        return -EBADMSG;
                r = parse_chunk_size(line, (size_t)n, &d->remaining);
                if (r < 0)
                        return r;
                if (d->remaining > max - MIN(max, body->len))
                        return -EFBIG;
                d->state = d->remaining == 0 ? HTTP_CHUNK_TRAILER : HTTP_CHUNK_DATA;
                return 1;
        case HTTP_CHUNK_DATA_END:
                if (n != 0)
                        return -EBADMSG;
                d->state = HTTP_CHUNK_SIZE;
                return 1;
        default: /* trailer fields: bounded, checked loosely, ignored */
                d->trailer_len += *pos - start;
                if (d->trailer_len > HTTP_HEAD_MAX)
                        return -EBADMSG;
                if (n == 0)
                        d->state = HTTP_CHUNK_DONE;
                else if (!memchr(line, ':', (size_t)n) || is_ows(line[0]))
                        return -EBADMSG;
                return 1;
        }
}

int http_chunked_decode(HttpChunkedDecoder *d, const char *in, size_t len, size_t *ret_consumed,
                        Buffer *body, size_t max)
{
        size_t pos = 0;
        int r = 0;

        while (d->state != HTTP_CHUNK_DONE) {
                if (d->state == HTTP_CHUNK_DATA) {
                        size_t n = (size_t)MIN((uint64_t)(len - pos), d->remaining);

                        if (n == 0)
                                break;
                        buffer_append(body, in + pos, n);
                        if (body->error) {
                                r = body->error;
                                break;
                        }
                        pos += n;
                        d->remaining -= n;
                        if (d->remaining == 0)
                                d->state = HTTP_CHUNK_DATA_END;
                        continue;
                }
                r = chunk_line_step(d, in, len, &pos, body, max);
                if (r <= 0)
                        break;
                r = 0;
        }
        *ret_consumed = pos;
        if (r < 0)
                return r;
        return d->state == HTTP_CHUNK_DONE ? 1 : 0;
}

const char *http_status_reason(unsigned status)
{
        static const struct {
                unsigned status;
                const char *reason;
        } table[] = {
                { 100, "Continue" },
                { 200, "OK" },
                { 201, "Created" },
                { 204, "No Content" },
                { 400, "Bad Request" },
                { 401, "Unauthorized" },
                { 403, "Forbidden" },
                { 404, "Not Found" },
                { 408, "Request Timeout" },
                { 413, "Payload Too Large" },
                { 415, "Unsupported Media Type" },
                { 422, "Unprocessable Entity" },
                { 431, "Request Header Fields Too Large" },
                { 500, "Internal Server Error" },
                { 501, "Not Implemented" },
                { 505, "HTTP Version Not Supported" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (table[i].status == status)
                        return table[i].reason;
        return "Unknown";
}
