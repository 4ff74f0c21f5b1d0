/* SPDX-License-Identifier: MIT */
#pragma once

/* The state of one `aziotctl check` run and the network probes its checks use. */

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <systemd/sd-bus.h>

#include "certs-config.h"
#include "certs-store.h"
#include "identity-config.h"
#include "keys-config.h"
#include "tpm-config.h"

typedef enum CheckResultKind {
        CHECK_OK,
        CHECK_WARNING,
        CHECK_IGNORED, /* does not apply, or --dont-run */
        CHECK_SKIPPED, /* could not run: a check it depends on failed */
        CHECK_FATAL,
        CHECK_ERROR,
        _CHECK_RESULT_MAX,
} CheckResultKind;

typedef struct CheckResult {
        CheckResultKind kind;
        char *details[16];
        size_t n_details;
} CheckResult;

void check_result_done(CheckResult *r);
void check_detail(CheckResult *r, const char *format, ...) _printf_(2, 3);
void check_set(CheckResult *r, CheckResultKind kind, const char *format, ...) _printf_(3, 4);

typedef struct CheckContext {
        /* the command line */
        const char *iothub_hostname, *proxy_uri, *ntp_server, *expected_version;
        bool verbose;
        time_t now;
        /* what the configuration checks found */
        TomlValue *keyd_root;
        KeysConfig keys;
        CertsConfig certs;
        TpmConfig tpm;
        IdentityConfig identity;
        bool keys_ok, certs_ok, tpm_ok, identity_ok;
        char *prev_hub; /* the hub of identityd's prev_state, NULL when unknown */
        CertsStore *store;
        sd_bus *bus;
} CheckContext;

/* Connects to host[:port] (default_port when none; IPv6 literals in brackets), through an
 * http:// proxy with CONNECT when proxy is set, and completes a TLS handshake verified against
 * the default trust store (SSL_CERT_FILE/SSL_CERT_DIR) for host. message says what failed. */
int tls_probe(const char *host, unsigned default_port, const char *proxy, unsigned timeout_sec,
              char *message, size_t size);

/* One SNTP request to server ("host[:port]", port 123 by default): *ret_offset is the server's
 * time minus ours, in seconds. */
int sntp_offset(const char *server, unsigned timeout_sec, double *ret_offset, char *message,
                size_t size);

/* Whether a stream socket at path accepts a connection. */
int unix_socket_answers(const char *path, char *message, size_t size);
