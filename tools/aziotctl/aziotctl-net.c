/* SPDX-License-Identifier: MIT */
/* The network probes of aziotctl check: a TLS handshake (optionally through an HTTP proxy), an
 * SNTP query, a Unix socket connection. Blocking, each bounded by a timeout. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "aziotctl-check.h"
#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(SSL_CTX *, SSL_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(SSL *, SSL_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct addrinfo *, freeaddrinfo);

/* "host:port", "[v6]:port", "host" → host and port. */
static int split_host_port(const char *s, unsigned default_port, char **ret_host,
                           unsigned *ret_port)
{
        const char *colon, *end;
        char *host;
        unsigned long port = default_port;

        if (s[0] == '[') {
                end = strchr(s, ']');
                if (!end)
                        return -EINVAL;
                host = strndup(s + 1, (size_t)(end - s - 1));
                colon = end[1] == ':' ? end + 1 : NULL;
        } else {
                colon = strrchr(s, ':');
                if (colon && strchr(s, ':') != colon)
                        colon = NULL; /* a bare IPv6 literal */
                host = colon ? strndup(s, (size_t)(colon - s)) : strdup(s);
        }
        if (!host)
                return -ENOMEM;
        if (colon) {
                char *e;

                errno = 0;
                port = strtoul(colon + 1, &e, 10);
                if (errno || *e || port == 0 || port > 65535) {
                        free(host);
                        return -EINVAL;
                }
        }
        *ret_host = host;
        *ret_port = (unsigned)port;
        return 0;
}

static void set_timeouts(int fd, unsigned timeout_sec)
{
        struct timeval tv = {.tv_sec = timeout_sec};

        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* A connected socket to host:port, within timeout_sec. */
static int tcp_connect(const char *host, unsigned port, int socktype, unsigned timeout_sec,
                       char *message, size_t size)
{
        _cleanup_(freeaddrinfop) struct addrinfo *ai = NULL;
        struct addrinfo hints = {.ai_socktype = socktype};
        char service[16];
        int r, last = -ECONNREFUSED;

        snprintf(service, sizeof(service), "%u", port);
        r = getaddrinfo(host, service, &hints, &ai);
        if (r != 0) {
                snprintf(message, size, "cannot resolve %s: %s", host, gai_strerror(r));
                return -EHOSTUNREACH;
        }
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
                _cleanup_close_ int fd =
                        socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                               a->ai_protocol);
                struct pollfd p;
                int err = 0;
                socklen_t len = sizeof(err);

                if (fd < 0) {
                        last = -errno;
                        continue;
                }
                if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
                        if (errno != EINPROGRESS) {
                                last = -errno;
                                continue;
                        }
                        p = (struct pollfd){.fd = fd, .events = POLLOUT};
                        r = poll(&p, 1, (int)timeout_sec * 1000);
                        if (r == 0) {
                                last = -ETIMEDOUT;
                                continue;
                        }
                        if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
                                last = -errno;
                                continue;
                        }
                        if (err != 0) {
                                last = -err;
                                continue;
                        }
                }
                if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
                        last = -errno;
                        continue;
                }
                set_timeouts(fd, timeout_sec);
                return TAKE_FD(fd);
        }
        snprintf(message, size, "cannot connect to %s port %u: %s", host, port, strerror(-last));
        return last;
}

/* Sends CONNECT host:port through the proxy on fd and reads its answer. */
static int proxy_connect(int fd, const char *host, unsigned port, char *message, size_t size)
{
        char request[1024], answer[4096];
        size_t n = 0;
        ssize_t k;
        int len;

        len = snprintf(request, sizeof(request), "CONNECT %s:%u HTTP/1.1\r\nHost: %s:%u\r\n\r\n",
                       host, port, host, port);
        if (len < 0 || (size_t)len >= sizeof(request) || write(fd, request, (size_t)len) != len) {
                snprintf(message, size, "cannot write to the proxy: %m");
                return -EIO;
        }
        /* Byte by byte, so that nothing of the TLS stream that follows is consumed. */
        while (n < sizeof(answer) - 1) {
                k = read(fd, answer + n, 1);
                if (k <= 0) {
                        snprintf(message, size, "the proxy closed the connection");
                        return -ECONNRESET;
                }
                n++;
                answer[n] = '\0';
                if (n >= 4 && memcmp(answer + n - 4, "\r\n\r\n", 4) == 0)
                        break;
        }
        if (!startswith(answer, "HTTP/1.1 200") && !startswith(answer, "HTTP/1.0 200")) {
                answer[strcspn(answer, "\r\n")] = '\0';
                snprintf(message, size, "the proxy refused CONNECT: %s", answer);
                return -ECONNREFUSED;
        }
        return 0;
}

int tls_probe(const char *host, unsigned default_port, const char *proxy, unsigned timeout_sec,
              char *message, size_t size)
{
        _cleanup_free_ char *name = NULL, *proxy_host = NULL;
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = NULL;
        _cleanup_(SSL_freep) SSL *ssl = NULL;
        _cleanup_close_ int fd = -EBADF;
        unsigned port, proxy_port;
        const char *p;
        long verify;
        int r;

        if (timeout_sec == 0)
                timeout_sec = 70;
        r = split_host_port(host, default_port, &name, &port);
        if (r < 0) {
                snprintf(message, size, "invalid host name %s", host);
                return r;
        }
        if (proxy) {
                p = startswith(proxy, "http://");
                if (!p) {
                        snprintf(message, size, "proxy URI %s is not http://", proxy);
                        return -EINVAL;
                }
                proxy_host = strndup(p, strcspn(p, "/"));
                if (!proxy_host)
                        return -ENOMEM;
                p = strrchr(proxy_host, '@'); /* credentials are not supported: drop them */
                if (p)
                        memmove(proxy_host, p + 1, strlen(p));
                _cleanup_free_ char *ph = NULL;
                r = split_host_port(proxy_host, 80, &ph, &proxy_port);
                if (r < 0) {
                        snprintf(message, size, "invalid proxy URI %s", proxy);
                        return r;
                }
                fd = tcp_connect(ph, proxy_port, SOCK_STREAM, timeout_sec, message, size);
                if (fd < 0)
                        return fd;
                r = proxy_connect(fd, name, port, message, size);
                if (r < 0)
                        return r;
        } else {
                fd = tcp_connect(name, port, SOCK_STREAM, timeout_sec, message, size);
                if (fd < 0)
                        return fd;
        }

        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx || SSL_CTX_set_default_verify_paths(ctx) != 1 ||
            SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
                snprintf(message, size, "cannot set up TLS");
                return -EIO;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        ssl = SSL_new(ctx);
        if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_set1_host(ssl, name) != 1 ||
            SSL_set_tlsext_host_name(ssl, name) != 1) {
                snprintf(message, size, "cannot set up TLS");
                return -EIO;
        }
        ERR_clear_error();
        if (SSL_connect(ssl) != 1) {
                verify = SSL_get_verify_result(ssl);
                if (verify != X509_V_OK)
                        snprintf(message, size, "TLS handshake failed: %s",
                                 X509_verify_cert_error_string(verify));
                else {
                        unsigned long e = ERR_peek_last_error();

                        snprintf(message, size, "TLS handshake failed: %s",
                                 e ? ERR_reason_error_string(e) : "connection closed");
                }
                ERR_clear_error();
                return -EPROTO;
        }
        (void)SSL_shutdown(ssl);
        return 0;
}

/* Seconds between 1900 (NTP) and 1970 (Unix). */
#define NTP_UNIX_DELTA 2208988800ULL

static double ntp_time(const unsigned char *b)
{
        unsigned long long sec = ((unsigned long long)b[0] << 24) |
                                 ((unsigned long long)b[1] << 16) |
                                 ((unsigned long long)b[2] << 8) | b[3];
        unsigned long long frac = ((unsigned long long)b[4] << 24) |
                                  ((unsigned long long)b[5] << 16) |
                                  ((unsigned long long)b[6] << 8) | b[7];

        return (double)sec - (double)NTP_UNIX_DELTA + (double)frac / 4294967296.0;
}

static double now_real(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int sntp_offset(const char *server, unsigned timeout_sec, double *ret_offset, char *message,
                size_t size)
{
        _cleanup_free_ char *host = NULL;
        _cleanup_close_ int fd = -EBADF;
        unsigned char packet[48] = {0x23}; /* LI 0, version 4, mode 3 (client) */
        unsigned port;
        double t1, t4, t2, t3;
        ssize_t n;
        int r;

        r = split_host_port(server, 123, &host, &port);
        if (r < 0) {
                snprintf(message, size, "invalid server %s", server);
                return r;
        }
        fd = tcp_connect(host, port, SOCK_DGRAM, timeout_sec, message, size);
        if (fd < 0)
                return fd;
        t1 = now_real();
        if (send(fd, packet, sizeof(packet), 0) != (ssize_t)sizeof(packet)) {
                snprintf(message, size, "cannot send: %m");
                return -errno;
        }
        n = recv(fd, packet, sizeof(packet), 0);
        t4 = now_real();
        if (n < 0) {
                r = -errno;
                snprintf(message, size, "no answer: %s", r == -EAGAIN ? "timed out" : strerror(-r));
                return r;
        }
        if (n < (ssize_t)sizeof(packet) || (packet[0] & 0x07) != 4) {
                snprintf(message, size, "not an SNTP server answer");
                return -EPROTO;
        }
        t2 = ntp_time(packet + 32);
        t3 = ntp_time(packet + 40);
        *ret_offset = ((t2 - t1) + (t3 - t4)) / 2;
        return 0;
}

int unix_socket_answers(const char *path, char *message, size_t size)
{
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};

        if (strlen(path) >= sizeof(sa.sun_path)) {
                snprintf(message, size, "path too long");
                return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, path);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                snprintf(message, size, "%m");
                return -errno;
        }
        return 0;
}
