/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "http-server.h"
#include "json.h"
#include "log.h"
#include "macro.h"

/* Free space kept in a connection's input buffer for each read: requests are small, and larger
 * bodies grow the buffer geometrically. */
#define READ_CHUNK (4u * 1024u)
/* Input and output buffers larger than this are given back after a request. */
#define BUFFER_KEEP (16u * 1024u)
/* After accept() fails for lack of file descriptors, try again this much later. */
#define ACCEPT_RETRY_USEC (100u * 1000u)

typedef struct UidCount {
        uid_t uid;
        unsigned count;
} UidCount;

typedef struct HttpConnection HttpConnection;

struct HttpListener {
        HttpServer *server;
        struct HttpListener *next;
        int fd;
        sd_event_source *source, *retry;
        char *name;
        char *bound_path;
        unsigned max_per_uid;
        UidCount *uids;
        size_t n_uids;
        const HttpHandler *handler;
        void *userdata;
        void (*accept_hook)(void *userdata);
        void *accept_hook_userdata;
};

struct HttpServer {
        sd_event *event;
        uint64_t body_timeout_usec;
        HttpListener *listeners;
        HttpConnection *connections;
};

typedef enum ConnState {
        CONN_HEAD,    /* reading a request head */
        CONN_BODY,    /* reading its body */
        CONN_HANDLER, /* the handler has it; nothing is read meanwhile */
        CONN_WRITE,   /* writing the response */
} ConnState;

struct HttpRequest {
        HttpConnection *conn;
        HttpRequestHead head;
        bool body_read;
        HttpChunkedDecoder chunked;
        Buffer chunked_body;
        const char *body;
        size_t body_len;
        void *userdata;
        void (*destroy)(void *);
};

struct HttpConnection {
        HttpListener *listener;
        HttpConnection *prev, *next;
        int fd;
        uid_t uid;
        sd_event_source *io, *timer;
        ConnState state;
        Buffer in, out;
        size_t in_pos, out_pos;
        bool running;     /* connection_run() is on the stack */
        bool closing;     /* free once the loop unwinds */
        bool peer_closed; /* read() returned EOF */
        bool readable;    /* the socket may have data: edge-triggered, so read until it is dry */
        bool hup_seen;    /* the peer shut down its side: read until EOF, no edge will come */
        bool writable;    /* the socket may take data */
        bool close_after_write;
        HttpRequest req;
};

static void connection_run(HttpConnection *c);

static UidCount *uid_count(HttpListener *l, uid_t uid, bool create)
{
        UidCount *n;

        for (size_t i = 0; i < l->n_uids; i++)
                if (l->uids[i].uid == uid)
                        return &l->uids[i];
        if (!create)
                return NULL;
        n = realloc(l->uids, (l->n_uids + 1) * sizeof(UidCount));
        if (!n)
                return NULL;
        l->uids = n;
        l->uids[l->n_uids] = (UidCount){ .uid = uid };
        return &l->uids[l->n_uids++];
}

static void uid_release(HttpListener *l, uid_t uid)
{
        UidCount *u = uid_count(l, uid, /* create= */ false);

        if (!u || --u->count > 0)
                return;
        *u = l->uids[--l->n_uids];
}

static void request_reset(HttpRequest *req)
{
        HttpConnection *c = req->conn;

        if (req->destroy)
                req->destroy(req->userdata);
        http_request_head_done(&req->head);
        buffer_done(&req->chunked_body);
        *req = (HttpRequest){ .conn = c };
}

static void connection_free(HttpConnection *c)
{
        HttpServer *s = c->listener->server;

        request_reset(&c->req);
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        safe_close(c->fd);
        buffer_done(&c->in);
        buffer_done(&c->out);
        uid_release(c->listener, c->uid);
        if (c->prev)
                c->prev->next = c->next;
        else
                s->connections = c->next;
        if (c->next)
                c->next->prev = c->prev;
        free(c);
}

/* --- Responses --- */

static void queue_response(HttpConnection *c, unsigned status, const char *json, size_t len)
{
        HttpRequest *req = &c->req;
        bool with_body = status != 204;

        buffer_appendf(&c->out, "HTTP/1.1 %u %s\r\n", status, http_status_reason(status));
        if (with_body)
                buffer_appendf(&c->out, "content-type: application/json\r\ncontent-length: %zu\r\n",
                               len);
        if (c->close_after_write)
                buffer_append_str(&c->out, "connection: close\r\n");
        else if (req->head.minor_version == 0)
                buffer_append_str(&c->out, "connection: keep-alive\r\n");
        buffer_append_str(&c->out, "\r\n");
        /* The answer to HEAD has the headers of the answer to GET, without its body. */
        if (with_body && req->head.method != HTTP_HEAD)
                buffer_append(&c->out, json, len);
}

/* An unread body must not be taken for the next request: skip it if it is all here, else give up
 * on the connection after this response. */
static void skip_unread_body(HttpConnection *c)
{
        HttpRequest *req = &c->req;
        size_t available = c->in.len - c->in_pos;

        if (req->body_read || req->head.framing == HTTP_BODY_NONE)
                return;
        if (req->head.framing == HTTP_BODY_LENGTH && req->head.content_length <= available)
                c->in_pos += (size_t)req->head.content_length;
        else
                c->close_after_write = true;
        req->body_read = true;
}

static void respond(HttpConnection *c, unsigned status, const char *json, size_t len)
{
        skip_unread_body(c);
        if (!c->req.head.keep_alive || c->peer_closed)
                c->close_after_write = true;
        queue_response(c, status, json, len);
        log_debug("--> %u", status);
        c->state = CONN_WRITE;
        (void)sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
}

static void respond_error(HttpConnection *c, unsigned status, const char *message)
{
        Buffer body = {};

        json_write_message(&body, message, strlen(message));
        respond(c, status, body.data ?: "", body.len);
        buffer_done(&body);
}

/* An error in the framing: answer and close, the rest of the stream cannot be trusted. */
static void respond_fatal(HttpConnection *c, unsigned status, const char *message)
{
        c->close_after_write = true;
        c->req.body_read = true;
        respond_error(c, status, message);
}

void http_request_reply(HttpRequest *req, unsigned status, const char *json, size_t len)
{
        HttpConnection *c = req->conn;

        if (c->state != CONN_HEAD && c->state != CONN_BODY && c->state != CONN_HANDLER)
                return; /* replied already */
        respond(c, status, json, len);
        if (!c->running)
                connection_run(c);
}

void http_request_reply_error(HttpRequest *req, unsigned status, const char *message)
{
        Buffer body = {};

        json_write_message(&body, message, strlen(message));
        if (body.error)
                log_oom();
        http_request_reply(req, status, body.data ?: "", body.len);
        buffer_done(&body);
}

HttpMethod http_request_method(const HttpRequest *req)
{
        return req->head.method;
}

const char *http_request_target(const HttpRequest *req)
{
        return req->head.target;
}

const char *http_request_content_type(const HttpRequest *req)
{
        return req->head.content_type;
}

const char *http_request_body(const HttpRequest *req, size_t *ret_len)
{
        *ret_len = req->body_len;
        return req->body;
}

int http_request_fd(const HttpRequest *req)
{
        return req->conn->fd;
}

uid_t http_request_uid(const HttpRequest *req)
{
        return req->conn->uid;
}

void http_request_set_userdata(HttpRequest *req, void *data, void (*destroy)(void *))
{
        req->userdata = data;
        req->destroy = destroy;
}

void *http_request_get_userdata(const HttpRequest *req)
{
        return req->userdata;
}

/* --- Reading --- */

static int arm_timer(HttpConnection *c)
{
        HttpServer *s = c->listener->server;
        uint64_t now;
        int r;

        if (sd_event_source_get_enabled(c->timer, NULL) > 0)
                return 0; /* already running for this request */
        r = sd_event_now(s->event, CLOCK_MONOTONIC, &now);
        if (r < 0)
                return r;
        r = sd_event_source_set_time(c->timer, now + s->body_timeout_usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
}

/* Reads what the socket has, at most READ_CHUNK bytes. Returns 1 when something happened (data or
 * EOF), 0 when the socket is dry. */
static int connection_read(HttpConnection *c)
{
        size_t space;
        ssize_t n;

        if (c->in_pos > 0) {
                /* What was consumed may be key material: wipe it as it goes. */
                memmove(c->in.data, c->in.data + c->in_pos, c->in.len - c->in_pos);
                explicit_bzero(c->in.data + c->in.len - c->in_pos, c->in_pos);
                c->in.len -= c->in_pos;
                c->in_pos = 0;
        }
        if (buffer_reserve(&c->in, READ_CHUNK) < 0)
                return -ENOMEM;
        space = c->in.allocated - c->in.len - 1;
        n = recv(c->fd, c->in.data + c->in.len, space, MSG_DONTWAIT);
        if (n < 0) {
                if (errno == EINTR)
                        return 1;
                if (errno != EAGAIN)
                        return -errno;
                c->readable = false;
                return 0;
        }
        if (n == 0) {
                c->peer_closed = true;
                c->readable = false;
                return 1;
        }
        /* A short read drained the socket; the next edge tells when there is more, unless the
         * peer has already shut down, which was that edge. */
        if ((size_t)n < space)
                c->readable = c->hup_seen;
        c->in.len += (size_t)n;
        c->in.data[c->in.len] = 0;
        return 1;
}

/* More input is needed: read if the socket may have some. Returns 1 to step again, 0 to wait. */
static int need_input(HttpConnection *c)
{
        int r;

        if (c->peer_closed)
                return -ECONNRESET; /* a clean end between requests, or a request cut short */
        if (!c->readable)
                return arm_timer(c) < 0 ? -EIO : 0;
        r = connection_read(c);
        if (r != 0)
                return r;
        return arm_timer(c) < 0 ? -EIO : 0;
}

static void log_request(const HttpRequestHead *h)
{
        log_debug("<-- %s %s", h->method_name, h->target);
}

static void head_error(HttpConnection *c, int r)
{
        switch (r) {
        case -E2BIG:
                respond_fatal(c, 431, "request header fields too large");
                break;
        case -EPROTONOSUPPORT:
                respond_fatal(c, 505, "HTTP version not supported");
                break;
        case -EOPNOTSUPP:
                respond_fatal(c, 501, "unsupported transfer coding");
                break;
        case -ENOMEM:
                log_oom();
                respond_fatal(c, 500, "internal error");
                break;
        default:
                respond_fatal(c, 400, "malformed request");
        }
}

/* Whether the body has arrived entirely already. */
static bool body_buffered(const HttpConnection *c)
{
        const HttpRequestHead *h = &c->req.head;

        return h->framing == HTTP_BODY_LENGTH && h->content_length <= c->in.len - c->in_pos;
}

static int start_body(HttpConnection *c)
{
        HttpRequestHead *h = &c->req.head;

        if (h->framing == HTTP_BODY_LENGTH && h->content_length > HTTP_BODY_MAX) {
                respond_fatal(c, 413, "request body too large");
                return 1;
        }
        c->state = CONN_BODY;
        if (h->expect_continue && h->framing != HTTP_BODY_NONE && !body_buffered(c))
                buffer_append_str(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        (void)sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        return 1;
}

static int step_head(HttpConnection *c)
{
        HttpRequest *req = &c->req;
        int r;

        if (c->in.len == c->in_pos) {
                /* Between requests there is no deadline: keep-alive connections may idle. */
                (void)sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
                if (c->peer_closed)
                        return -ECONNRESET;
                if (!c->readable)
                        return 0;
                return connection_read(c);
        }
        r = http_parse_head(c->in.data + c->in_pos, c->in.len - c->in_pos, &req->head);
        if (r == 0)
                return need_input(c);
        if (r < 0) {
                head_error(c, r);
                return 1;
        }
        c->in_pos += (size_t)r;
        log_request(&req->head);
        (void)sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);

        c->state = CONN_HANDLER;
        r = c->listener->handler->head(req, c->listener->userdata);
        if (r > 0 && c->state == CONN_HANDLER)
                return start_body(c);
        return 1;
}

static int body_complete(HttpConnection *c)
{
        HttpRequest *req = &c->req;
        HttpRequestHead *h = &req->head;
        size_t available = c->in.len - c->in_pos, used = 0;
        int r;

        switch (h->framing) {
        case HTTP_BODY_NONE:
                return 1;
        case HTTP_BODY_LENGTH:
                if (h->content_length > available)
                        return 0;
                req->body = c->in.data + c->in_pos;
                req->body_len = (size_t)h->content_length;
                c->in_pos += req->body_len;
                return 1;
        default:
                r = http_chunked_decode(&req->chunked, c->in.data + c->in_pos, available, &used,
                                        &req->chunked_body, HTTP_BODY_MAX);
                c->in_pos += used;
                if (r > 0) {
                        req->body = req->chunked_body.data;
                        req->body_len = req->chunked_body.len;
                }
                return r;
        }
}

static int step_body(HttpConnection *c)
{
        int r = body_complete(c);

        if (r == 0)
                return need_input(c);
        if (r == -EFBIG) {
                respond_fatal(c, 413, "request body too large");
                return 1;
        }
        if (r < 0) {
                respond_fatal(c, r == -ENOMEM ? 500 : 400,
                              r == -ENOMEM ? "internal error" : "malformed request body");
                return 1;
        }
        c->req.body_read = true;
        (void)sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        c->state = CONN_HANDLER;
        c->listener->handler->body(&c->req, c->listener->userdata);
        return 1;
}

/* --- Writing --- */

/* Returns 1 when everything queued is written, 0 when the socket is full, or an error. */
static int flush_output(HttpConnection *c)
{
        while (c->out_pos < c->out.len) {
                ssize_t n = send(c->fd, c->out.data + c->out_pos, c->out.len - c->out_pos,
                                 MSG_DONTWAIT | MSG_NOSIGNAL);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                return -errno;
                        c->writable = false;
                        return 0;
                }
                c->out_pos += (size_t)n;
        }
        /* Responses may carry key material: wipe them once sent. */
        explicit_bzero(c->out.data, c->out.len);
        c->out.len = c->out_pos = 0;
        return 1;
}

static void shrink_buffers(HttpConnection *c)
{
        if (c->out.allocated > BUFFER_KEEP)
                buffer_done(&c->out);
        if (c->in.allocated > BUFFER_KEEP && c->in.len == c->in_pos) {
                buffer_done(&c->in);
                c->in_pos = 0;
        }
}

static int step_write(HttpConnection *c)
{
        int r = flush_output(c);

        if (r <= 0)
                return r;
        request_reset(&c->req);
        if (c->in_pos == c->in.len && c->in.data) {
                explicit_bzero(c->in.data, c->in.len);
                c->in.len = c->in_pos = 0;
        }
        shrink_buffers(c);
        if (c->close_after_write)
                return -ECONNRESET;
        c->state = CONN_HEAD;
        return 1;
}

/* One step of the connection's state machine: 1 to go on, 0 to wait for an event, < 0 to close. */
static int connection_step(HttpConnection *c)
{
        int r;

        /* A pending "100 Continue" goes out while the body is read. */
        if (c->state != CONN_WRITE && c->out_pos < c->out.len && c->writable) {
                r = flush_output(c);
                if (r < 0)
                        return r;
        }
        switch (c->state) {
        case CONN_HEAD:
                return step_head(c);
        case CONN_BODY:
                return step_body(c);
        case CONN_WRITE:
                return c->writable ? step_write(c) : 0;
        default:
                return 0;
        }
}

static void connection_run(HttpConnection *c)
{
        int r;

        c->running = true;
        do
                r = connection_step(c);
        while (r > 0);
        c->running = false;

        if (r < 0 && r != -ECONNRESET && r != -EPIPE)
                log_debug_errno(r, "Closing connection: %m");
        if (r < 0)
                connection_free(c);
}

static int on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
        HttpConnection *c = userdata;

        /* Edge-triggered: remember what changed; the state machine reads and writes when it
         * needs to, so no epoll change is made per request. */
        if (revents & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                c->readable = true;
        if (revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                c->hup_seen = true;
        if (revents & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                c->writable = true;
        connection_run(c);
        return 0;
}

static int on_timeout(sd_event_source *source, uint64_t usec, void *userdata)
{
        HttpConnection *c = userdata;

        if (c->state != CONN_HEAD && c->state != CONN_BODY)
                return 0;
        /* tokio's text for an elapsed deadline, which is what upstream answers. */
        respond_fatal(c, 408, "deadline has elapsed");
        connection_run(c);
        return 0;
}

/* --- Accepting --- */

static int peer_uid(int fd, uid_t *ret)
{
        struct ucred uc = {};
        socklen_t len = sizeof(uc);

        /* Only the uid is needed here: the services read the peer's pid and start time
         * themselves from the socket passed along with each call. */
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
                return negative_errno();
        *ret = uc.uid;
        return 0;
}

static int connection_new(HttpListener *l, int fd, uid_t uid)
{
        HttpServer *s = l->server;
        HttpConnection *c;
        int r;

        c = calloc(1, sizeof(HttpConnection));
        if (!c)
                return -ENOMEM;
        c->listener = l;
        c->fd = fd;
        c->uid = uid;
        c->req.conn = c;
        c->readable = c->writable = true;
        c->next = s->connections;
        if (s->connections)
                s->connections->prev = c;
        s->connections = c;
        uid_count(l, uid, /* create= */ false)->count++;

        r = sd_event_add_io(s->event, &c->io, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, on_io,
                            c);
        if (r >= 0)
                r = sd_event_add_time(s->event, &c->timer, CLOCK_MONOTONIC, UINT64_MAX, 0,
                                      on_timeout, c);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        if (r < 0) {
                connection_free(c);
                return r;
        }
        return 0;
}

static void accept_one(HttpListener *l, int fd)
{
        UidCount *u;
        uid_t uid;
        int r;

        r = peer_uid(fd, &uid);
        if (r < 0) {
                log_warning_errno(r, "Cannot read the credentials of a client of %s: %m",
                                  l->name);
                safe_close(fd);
                return;
        }
        if (l->accept_hook)
                l->accept_hook(l->accept_hook_userdata);
        u = uid_count(l, uid, /* create= */ false);
        if ((u ? u->count : 0) >= l->max_per_uid) {
                /* Upstream's throttling: dropped without a response. */
                log_info("Max simultaneous connections reached for user %u", (unsigned)uid);
                safe_close(fd);
                return;
        }
        if (!u && !uid_count(l, uid, /* create= */ true)) {
                log_oom();
                safe_close(fd);
                return;
        }
        r = connection_new(l, fd, uid);
        if (r < 0)
                log_warning_errno(r, "Cannot serve a client of %s: %m", l->name);
}

static int on_retry(sd_event_source *source, uint64_t usec, void *userdata)
{
        HttpListener *l = userdata;

        (void)sd_event_source_set_enabled(l->source, SD_EVENT_ON);
        return 0;
}

static void pause_listener(HttpListener *l)
{
        uint64_t now;

        if (sd_event_now(l->server->event, CLOCK_MONOTONIC, &now) < 0)
                return;
        (void)sd_event_source_set_enabled(l->source, SD_EVENT_OFF);
        if (!l->retry &&
            sd_event_add_time(l->server->event, &l->retry, CLOCK_MONOTONIC, UINT64_MAX, 0,
                              on_retry, l) < 0)
                return;
        (void)sd_event_source_set_time(l->retry, now + ACCEPT_RETRY_USEC);
        (void)sd_event_source_set_enabled(l->retry, SD_EVENT_ONESHOT);
}

static int on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata)
{
        HttpListener *l = userdata;

        for (;;) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

                if (cfd >= 0) {
                        accept_one(l, cfd);
                        continue;
                }
                if (errno == EINTR || errno == ECONNABORTED)
                        continue;
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                        log_warning_errno(errno, "Cannot accept on %s, pausing: %m", l->name);
                        pause_listener(l);
                } else if (errno != EAGAIN) {
                        log_warning_errno(errno, "Cannot accept on %s: %m", l->name);
                }
                return 0;
        }
}

/* --- Server --- */

static int fd_nonblock(int fd)
{
        int flags = fcntl(fd, F_GETFL);

        if (flags < 0)
                return negative_errno();
        if ((flags & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return negative_errno();
        return 0;
}

int http_server_new(sd_event *event, HttpServer **ret)
{
        HttpServer *s = calloc(1, sizeof(HttpServer));

        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->body_timeout_usec = HTTP_BODY_TIMEOUT_USEC;
        *ret = s;
        return 0;
}

void http_server_set_body_timeout(HttpServer *s, uint64_t usec)
{
        s->body_timeout_usec = usec;
}

static void listener_free(HttpListener *l)
{
        sd_event_source_disable_unref(l->source);
        sd_event_source_disable_unref(l->retry);
        safe_close(l->fd);
        if (l->bound_path && unlink(l->bound_path) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Cannot remove %s: %m", l->bound_path);
        free(l->bound_path);
        free(l->name);
        free(l->uids);
        free(l);
}

HttpServer *http_server_free(HttpServer *s)
{
        if (!s)
                return NULL;
        while (s->connections)
                connection_free(s->connections);
        while (s->listeners) {
                HttpListener *l = s->listeners;

                s->listeners = l->next;
                listener_free(l);
        }
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

int http_server_add_listener(HttpServer *s, int fd, const char *name, const char *bound_path,
                             unsigned max_connections_per_uid, const HttpHandler *handler,
                             void *userdata, HttpListener **ret_listener)
{
        HttpListener *l;
        int r;

        l = calloc(1, sizeof(HttpListener));
        if (!l) {
                safe_close(fd);
                return -ENOMEM;
        }
        *l = (HttpListener){
                .server = s,
                .fd = fd,
                .name = strdup(name),
                .bound_path = bound_path ? strdup(bound_path) : NULL,
                .max_per_uid = max_connections_per_uid,
                .handler = handler,
                .userdata = userdata,
                .next = s->listeners,
        };
        s->listeners = l;
        if (!l->name || (bound_path && !l->bound_path))
                return -ENOMEM;
        r = fd_nonblock(fd);
        if (r >= 0)
                r = sd_event_add_io(s->event, &l->source, fd, EPOLLIN, on_accept, l);
        if (r < 0)
                return r;
        if (ret_listener)
                *ret_listener = l;
        return 0;
}

void http_listener_set_max_connections_per_uid(HttpListener *l, unsigned max)
{
        l->max_per_uid = max;
}

void http_listener_set_accept_hook(HttpListener *l, void (*hook)(void *userdata), void *userdata)
{
        l->accept_hook = hook;
        l->accept_hook_userdata = userdata;
}

/* The socket is bound under a temporary name in the same directory, made listening, and only
 * then renamed to path: whoever sees path can connect (a client that waits for the file, as tests
 * and units do, is never refused). Without room for the temporary name it is bound at path. */
static void temporary_socket_name(const char *path, char *buf, size_t size)
{
        static unsigned counter;
        const char *slash = strrchr(path, '/');
        size_t dir_len = slash ? (size_t)(slash - path + 1) : 0;
        int n;

        n = snprintf(buf, size, "%.*s.listen-%d-%u", (int)dir_len, path, (int)getpid(),
                     counter++);
        if (n < 0 || (size_t)n >= size)
                snprintf(buf, size, "%s", path);
}

int http_listen_unix(const char *path, int *ret_fd)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -EBADF;
        struct stat st;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        temporary_socket_name(path, sa.sun_path, sizeof(sa.sun_path));

        if (lstat(path, &st) >= 0) {
                if (S_ISDIR(st.st_mode))
                        return -EISDIR;
                if (unlink(path) < 0)
                        return negative_errno();
        } else if (errno != ENOENT) {
                return negative_errno();
        }

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return negative_errno();
        (void)unlink(sa.sun_path); /* a leftover of a crashed gateway with the same pid */
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return negative_errno();
        if (chmod(sa.sun_path, 0660) < 0 || listen(fd, SOMAXCONN) < 0 ||
            (!streq(sa.sun_path, path) && rename(sa.sun_path, path) < 0)) {
                int r = negative_errno();
                (void)unlink(sa.sun_path);
                return r;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}
