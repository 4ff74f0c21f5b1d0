/* SPDX-License-Identifier: MIT */
/* A TLS client whose private key lives in keyd, for the provider tests: the key comes through
 * OSSL_STORE (--key-uri) or through the services/common API (--key-pair-id), goes into
 * SSL_CTX_use_PrivateKey(), and the client authenticates with it to a server (openssl s_server
 * -Verify 1 -www), then prints the page the server answers. Or --describe: prints what
 * EVP_PKEY_get_*_param() say about the key.
 *
 *   tls-client (--key-uri URI | --key-pair-id ID) [--describe]
 *              [--connect HOST:PORT --cert FILE --ca FILE] [--tls1_2 | --tls1_3]
 *              [--client-sigalgs LIST] [--handshakes N] [--pause]
 *
 * --pause waits for a line on stdin before each handshake (after printing "ready N"), so a test can
 * stop or restart keyd in between. Prints "handshake N: ok" or "handshake N: failed" then the
 * OpenSSL errors; exits 0 when every handshake succeeded, 1 otherwise, 2 when the key could not
 * be loaded, 3 for a usage error. */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/store.h>

#include "aziot-key.h"
#include "macro.h"
#include "openssl-util.h"

typedef struct Options {
        const char *key_uri;
        const char *key_pair_id;
        const char *connect;
        const char *cert;
        const char *ca;
        const char *client_sigalgs;
        int version;
        unsigned handshakes;
        bool pause;
        bool describe;
} Options;

DEFINE_TRIVIAL_CLEANUP_FUNC(SSL_CTX *, SSL_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(SSL *, SSL_free);

static EVP_PKEY *load_from_store(const char *uri)
{
        _cleanup_(OSSL_STORE_closep) OSSL_STORE_CTX *store = NULL;
        EVP_PKEY *pkey = NULL;

        if (!OSSL_PROVIDER_load(NULL, AZIOT_KEY_PROVIDER_NAME) ||
            !OSSL_PROVIDER_load(NULL, "default"))
                return NULL;
        store = OSSL_STORE_open(uri, NULL, NULL, NULL, NULL);
        if (!store)
                return NULL;
        while (!pkey && !OSSL_STORE_eof(store)) {
                _cleanup_(OSSL_STORE_INFO_freep) OSSL_STORE_INFO *info = OSSL_STORE_load(store);

                if (!info)
                        break;
                if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
                        pkey = OSSL_STORE_INFO_get1_PKEY(info);
        }
        return pkey;
}

static int describe(EVP_PKEY *pkey)
{
        _cleanup_(BN_freep) BIGNUM *n = NULL, *e = NULL;
        unsigned char pub[256];
        size_t pub_len = 0;

        printf("type=%s bits=%d security-bits=%d size=%d\n", EVP_PKEY_get0_type_name(pkey),
               EVP_PKEY_get_bits(pkey), EVP_PKEY_get_security_bits(pkey), EVP_PKEY_get_size(pkey));
        if (EVP_PKEY_is_a(pkey, "RSA")) {
                _cleanup_free_ char *n_hex = NULL, *e_hex = NULL;

                if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) ||
                    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e))
                        return 1;
                n_hex = BN_bn2hex(n);
                e_hex = BN_bn2hex(e);
                printf("n=%s\ne=%s\n", n_hex, e_hex);
        } else {
                char group[64];

                if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                                    sizeof(group), NULL) ||
                    !EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, pub,
                                                     sizeof(pub), &pub_len))
                        return 1;
                printf("group=%s\npub=", group);
                for (size_t i = 0; i < pub_len; i++)
                        printf("%02x", pub[i]);
                printf("\n");
        }
        /* The private half stays in keyd: asking for it must fail. */
        if (EVP_PKEY_get_bn_param(pkey,
                                  EVP_PKEY_is_a(pkey, "RSA") ? OSSL_PKEY_PARAM_RSA_D
                                                             : OSSL_PKEY_PARAM_PRIV_KEY,
                                  &n)) {
                printf("private key exported!\n");
                return 1;
        }
        ERR_clear_error();
        return 0;
}

static int tcp_connect(const char *host_port)
{
        _cleanup_free_ char *host = strdup(host_port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        char *port = host ? strrchr(host, ':') : NULL;
        int fd = -1;

        if (!port)
                return -EINVAL;
        *port++ = '\0';
        if (getaddrinfo(host, port, &hints, &ai) != 0)
                return -EHOSTUNREACH;
        for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
                fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
                if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) < 0)
                        fd = safe_close(fd);
        }
        freeaddrinfo(ai);
        return fd >= 0 ? fd : -ECONNREFUSED;
}

/* One handshake and one request; the page goes to stdout. */
static int handshake(SSL_CTX *ctx, const Options *o)
{
        _cleanup_(SSL_freep) SSL *ssl = NULL;
        _cleanup_close_ int fd = tcp_connect(o->connect);
        static const char request[] = "GET / HTTP/1.0\r\n\r\n";
        char buf[4096];
        int n;

        if (fd < 0) {
                fprintf(stderr, "connect %s: %s\n", o->connect, strerror(-fd));
                return -1;
        }
        ssl = SSL_new(ctx);
        if (!ssl || !SSL_set_fd(ssl, fd) || SSL_connect(ssl) != 1 ||
            SSL_write(ssl, request, (int)sizeof(request) - 1) <= 0)
                return -1;
        while ((n = SSL_read(ssl, buf, sizeof(buf))) > 0)
                fwrite(buf, 1, (size_t)n, stdout);
        /* s_server -www closes after the page; a server that refused the client certificate
         * (TLS 1.3 sends its alert after the handshake) ends the read with an error instead. */
        if (SSL_get_error(ssl, n) != SSL_ERROR_ZERO_RETURN &&
            SSL_get_error(ssl, n) != SSL_ERROR_SYSCALL)
                return -1;
        return ERR_peek_error() ? -1 : 0;
}

static int run(const Options *o)
{
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = NULL;
        unsigned failed = 0;

        if (o->key_pair_id) {
                _cleanup_free_ char *message = NULL;
                int r = aziot_key_evp_pkey(NULL, o->key_pair_id, &pkey, &message);

                if (r < 0) {
                        fprintf(stderr, "cannot load key pair %s: %s (%s)\n", o->key_pair_id,
                                strerror(-r), message);
                        return 2;
                }
        } else {
                pkey = load_from_store(o->key_uri);
                if (!pkey) {
                        fprintf(stderr, "cannot load %s:\n", o->key_uri);
                        ERR_print_errors_fp(stderr);
                        return 2;
                }
        }
        if (o->describe)
                return describe(pkey);

        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx || !SSL_CTX_use_certificate_chain_file(ctx, o->cert) ||
            !SSL_CTX_use_PrivateKey(ctx, pkey) || !SSL_CTX_check_private_key(ctx) ||
            !SSL_CTX_load_verify_locations(ctx, o->ca, NULL) ||
            (o->version && (!SSL_CTX_set_min_proto_version(ctx, o->version) ||
                            !SSL_CTX_set_max_proto_version(ctx, o->version))) ||
            (o->client_sigalgs && !SSL_CTX_set1_client_sigalgs_list(ctx, o->client_sigalgs))) {
                fprintf(stderr, "cannot set up the TLS context:\n");
                ERR_print_errors_fp(stderr);
                return 2;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

        for (unsigned i = 1; i <= o->handshakes; i++) {
                if (o->pause) {
                        char line[16];

                        printf("ready %u\n", i);
                        fflush(stdout);
                        if (!fgets(line, sizeof(line), stdin))
                                return 3;
                }
                ERR_clear_error();
                if (handshake(ctx, o) < 0) {
                        failed++;
                        printf("handshake %u: failed\n", i);
                        fflush(stdout);
                        ERR_print_errors_fp(stderr);
                        fflush(stderr);
                } else {
                        printf("handshake %u: ok\n", i);
                }
                fflush(stdout);
        }
        return failed ? 1 : 0;
}

int main(int argc, char *argv[])
{
        enum { ARG_TLS12 = 0x100, ARG_TLS13, ARG_SIGALGS };
        static const struct option options[] = {
                {"key-uri", required_argument, NULL, 'k'},
                {"key-pair-id", required_argument, NULL, 'i'},
                {"describe", no_argument, NULL, 'd'},
                {"connect", required_argument, NULL, 'c'},
                {"cert", required_argument, NULL, 'C'},
                {"ca", required_argument, NULL, 'A'},
                {"tls1_2", no_argument, NULL, ARG_TLS12},
                {"tls1_3", no_argument, NULL, ARG_TLS13},
                {"client-sigalgs", required_argument, NULL, ARG_SIGALGS},
                {"handshakes", required_argument, NULL, 'n'},
                {"pause", no_argument, NULL, 'p'},
                {},
        };
        Options o = {.handshakes = 1};
        int c;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'k':
                        o.key_uri = optarg;
                        break;
                case 'i':
                        o.key_pair_id = optarg;
                        break;
                case 'd':
                        o.describe = true;
                        break;
                case 'c':
                        o.connect = optarg;
                        break;
                case 'C':
                        o.cert = optarg;
                        break;
                case 'A':
                        o.ca = optarg;
                        break;
                case ARG_TLS12:
                        o.version = TLS1_2_VERSION;
                        break;
                case ARG_TLS13:
                        o.version = TLS1_3_VERSION;
                        break;
                case ARG_SIGALGS:
                        o.client_sigalgs = optarg;
                        break;
                case 'n':
                        o.handshakes = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'p':
                        o.pause = true;
                        break;
                default:
                        return 3;
                }
        if (!o.key_uri == !o.key_pair_id || (!o.describe && (!o.connect || !o.cert || !o.ca))) {
                fprintf(stderr, "usage: see the comment at the top of tls-client.c\n");
                return 3;
        }
        return run(&o);
}
