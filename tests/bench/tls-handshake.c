/* SPDX-License-Identifier: MIT */
/* TLS handshakes per second with client-certificate authentication, client and server in this
 * process over a socketpair, one thread: the client's private key is a keyd key (through the
 * "aziot" provider, services/common's aziot_key_evp_pkey()), then an in-memory key of the same
 * type, so the cost of keyd is the difference.
 *
 *   tls-handshake --key-pair-id ID [--seconds S] [--tls1_2 | --tls1_3]
 *   tls-handshake --no-provider --key-type ec|rsa [--seconds S] [--tls1_2 | --tls1_3]
 *
 * --no-provider measures the in-memory key alone in a process that never loads the provider (with
 * the provider loaded, OpenSSL may route ordinary EC/RSA keys through it, see provider/README.md).
 *
 * keyd must be reachable (DBUS_SYSTEM_BUS_ADDRESS) and the provider loadable (OPENSSL_MODULES when
 * it is not installed). Full handshakes only (no resumption); the server's key is P-256 in memory.
 * Prints one line per key: "<key> <type> TLSv1.x: N handshakes in S s = R/s (mean M us)". */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "aziot-key.h"
#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(SSL_CTX *, SSL_CTX_free);

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static _noreturn_ void die(const char *what)
{
        fprintf(stderr, "tls-handshake: %s\n", what);
        ERR_print_errors_fp(stderr);
        exit(1);
}

/* A certificate for pkey's public key, issued by issuer_key (self-signed when they are one). */
static X509 *make_cert(EVP_PKEY *pkey, EVP_PKEY *issuer_key, const char *cn)
{
        X509 *cert = X509_new();
        X509_NAME *name = X509_NAME_new();

        if (!cert || !name ||
            !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                        0) ||
            !X509_set_version(cert, X509_VERSION_3) ||
            !ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) ||
            !X509_gmtime_adj(X509_getm_notBefore(cert), -60) ||
            !X509_gmtime_adj(X509_getm_notAfter(cert), 3600) ||
            !X509_set_subject_name(cert, name) || !X509_set_issuer_name(cert, name) ||
            !X509_set_pubkey(cert, pkey) || !X509_sign(cert, issuer_key, EVP_sha256()))
                die("cannot make a certificate");
        X509_NAME_free(name);
        return cert;
}

static int accept_any(int preverify_ok, X509_STORE_CTX *ctx)
{
        return 1; /* the benchmark measures the handshake, not the chain */
}

static SSL_CTX *context(bool server, int version, EVP_PKEY *key, X509 *cert)
{
        SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

        if (!ctx || !SSL_CTX_set_min_proto_version(ctx, version) ||
            !SSL_CTX_set_max_proto_version(ctx, version) || !SSL_CTX_use_certificate(ctx, cert) ||
            !SSL_CTX_use_PrivateKey(ctx, key))
                die("cannot set up a TLS context");
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_verify(
                ctx, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
                accept_any);
        return ctx;
}

/* One full handshake over a fresh socketpair, both ends stepped in turn. */
static void handshake(SSL_CTX *client_ctx, SSL_CTX *server_ctx)
{
        int fds[2];
        SSL *client, *server;
        bool client_done = false, server_done = false;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
                die("socketpair");
        client = SSL_new(client_ctx);
        server = SSL_new(server_ctx);
        if (!client || !server || !SSL_set_fd(client, fds[0]) || !SSL_set_fd(server, fds[1]))
                die("SSL_new");
        SSL_set_connect_state(client);
        SSL_set_accept_state(server);
        while (!client_done || !server_done) {
                int r;

                if (!client_done) {
                        r = SSL_do_handshake(client);
                        if (r == 1)
                                client_done = true;
                        else if (SSL_get_error(client, r) != SSL_ERROR_WANT_READ)
                                die("client handshake");
                }
                if (!server_done) {
                        r = SSL_do_handshake(server);
                        if (r == 1)
                                server_done = true;
                        else if (SSL_get_error(server, r) != SSL_ERROR_WANT_READ)
                                die("server handshake");
                }
        }
        /* TLS 1.3: the server's verdict on the client certificate comes after the client's
         * handshake; reading a byte the server sends makes sure it was accepted. */
        {
                char byte = 'x';

                if (SSL_write(server, &byte, 1) != 1)
                        die("server write");
                for (;;) {
                        int r = SSL_read(client, &byte, 1);

                        if (r == 1)
                                break;
                        if (SSL_get_error(client, r) != SSL_ERROR_WANT_READ)
                                die("client read");
                }
        }
        SSL_free(client);
        SSL_free(server);
        close(fds[0]);
        close(fds[1]);
}

static void measure(const char *label, EVP_PKEY *client_key, EVP_PKEY *server_key,
                    X509 *server_cert, int version, double seconds)
{
        _cleanup_(X509_freep) X509 *client_cert = make_cert(client_key, server_key, "client");
        _cleanup_(SSL_CTX_freep) SSL_CTX *client = context(false, version, client_key, client_cert);
        _cleanup_(SSL_CTX_freep) SSL_CTX *server = context(true, version, server_key, server_cert);
        unsigned long n = 0;
        double start, elapsed;

        handshake(client, server); /* warm-up: connects to the bus, fetches algorithms */
        start = now();
        do {
                handshake(client, server);
                n++;
                elapsed = now() - start;
        } while (elapsed < seconds);
        printf("%-22s %-3s %s: %lu handshakes in %.2f s = %.0f/s (mean %.0f us)\n", label,
               EVP_PKEY_get0_type_name(client_key),
               version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2", n, elapsed, (double)n / elapsed,
               elapsed / (double)n * 1e6);
        fflush(stdout);
}

int main(int argc, char *argv[])
{
        static const struct option options[] = {
                {"key-pair-id", required_argument, NULL, 'i'},
                {"seconds", required_argument, NULL, 's'},
                {"tls1_2", no_argument, NULL, '2'},
                {"tls1_3", no_argument, NULL, '3'},
                {"no-provider", no_argument, NULL, 'n'},
                {"key-type", required_argument, NULL, 't'},
                {},
        };
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *keyd_key = NULL, *memory_key = NULL, *server_key = NULL;
        _cleanup_(X509_freep) X509 *server_cert = NULL;
        _cleanup_free_ char *message = NULL;
        const char *key_pair_id = NULL, *key_type = "ec";
        bool no_provider = false;
        double seconds = 3;
        int version = TLS1_3_VERSION, c, r;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'i':
                        key_pair_id = optarg;
                        break;
                case 's':
                        seconds = strtod(optarg, NULL);
                        break;
                case '2':
                        version = TLS1_2_VERSION;
                        break;
                case '3':
                        version = TLS1_3_VERSION;
                        break;
                case 'n':
                        no_provider = true;
                        break;
                case 't':
                        key_type = optarg;
                        break;
                default:
                        return 2;
                }
        if (!key_pair_id == !no_provider || seconds <= 0 ||
            (!streq(key_type, "ec") && !streq(key_type, "rsa"))) {
                fprintf(stderr, "usage: tls-handshake (--key-pair-id ID | --no-provider "
                                "--key-type ec|rsa) [--seconds S] [--tls1_2 | --tls1_3]\n");
                return 2;
        }

        if (no_provider) {
                server_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
                memory_key = streq(key_type, "rsa")
                                     ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                                     : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
                if (!server_key || !memory_key)
                        die("cannot generate keys");
                server_cert = make_cert(server_key, server_key, "server");
                measure("in-memory, no provider", memory_key, server_key, server_cert, version,
                        seconds);
                return 0;
        }
        r = aziot_key_evp_pkey(NULL, key_pair_id, &keyd_key, &message);
        if (r < 0) {
                fprintf(stderr, "tls-handshake: key pair %s: %s (%s)\n", key_pair_id, strerror(-r),
                        message);
                return 1;
        }
        server_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        memory_key =
                EVP_PKEY_is_a(keyd_key, "RSA")
                        ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)EVP_PKEY_get_bits(keyd_key))
                        : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        if (!server_key || !memory_key)
                die("cannot generate keys");
        server_cert = make_cert(server_key, server_key, "server");

        measure(key_pair_id, keyd_key, server_key, server_cert, version, seconds);
        measure("in-memory key", memory_key, server_key, server_cert, version, seconds);
        return 0;
}
