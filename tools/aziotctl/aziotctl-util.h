/* SPDX-License-Identifier: MIT */
#pragma once

/* What check and the listing commands share: where the files are (AZIOTCTL_ROOT), the output
 * formats (JSON strings are written with json-write.h), the system bus, and certificate
 * summaries. */

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include <openssl/x509.h>
#include <systemd/sd-bus.h>

#include "json-write.h"

/* aziotctl_path() (AZIOTCTL_ROOT joined with path; unset, empty or "/": path itself), except that
 * paths already under the root (as configurations written there name them) are returned as they
 * are. NULL on OOM. */
char *ctl_path(const char *path);
const char *ctl_root(void);

/* <root>/etc/aziot/<svc>/config.toml and config.d, unless AZIOT_<SVC>_CONFIG[_DIR] say otherwise
 * (the daemons' own overrides). */
int ctl_config_paths(const char *svc, char **ret_main, char **ret_dir);

/* The directory of the gateway's sockets: AZIOT_SOCKET_DIR, else <root>SOCKET_DIR. */
char *ctl_socket_path(const char *name);

/* Output formats. */
typedef enum CtlOutput {
        CTL_OUTPUT_TEXT,
        CTL_OUTPUT_JSON,
        CTL_OUTPUT_JSON_STREAM,
} CtlOutput;

/* -o/--output: "text", "json", and "json-stream" when stream_ok. Prints what --output takes and
 * returns -EINVAL for anything else. */
int ctl_parse_output(const char *s, bool stream_ok, CtlOutput *ret);

/* sd_bus_open_system() (honours DBUS_SYSTEM_BUS_ADDRESS); prints the failure. */
int ctl_bus_open(sd_bus **ret);

/* Prints a failed call ("aziotctl: <what>: <message>", saying "access denied" for polkit and bus
 * refusals) and returns AZIOTCTL_EXIT_FAILURE. */
int ctl_bus_error(const char *what, const sd_bus_error *error, int r);
bool ctl_bus_error_is_denied(const sd_bus_error *error);

/* Certificates. */
typedef struct CertInfo {
        char subject[512], issuer[512];
        char serial[128];
        char fingerprint[96]; /* SHA-256, "AB:CD:…" */
        time_t not_before, not_after;
} CertInfo;

int cert_info(X509 *x, CertInfo *ret);
/* The first certificate of PEM text; NULL when there is none. */
X509 *cert_from_pem(const char *pem, size_t len);
/* RFC 3339 in UTC into buf (at least 32 bytes). */
const char *format_time(time_t t, char *buf, size_t size);
