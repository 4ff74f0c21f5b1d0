/* SPDX-License-Identifier: MIT */
#pragma once
/* The super-config (/etc/aziot/config.toml) turned into the four services' config.d/00-super.toml
 * files, as upstream's `aziotctl config apply` does (spec §7.3). Pure: no file is read or written
 * here, so the translation can be tested on its own and nothing is written when any input is bad. */
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "toml.h"

/* Where the generated inline symmetric key lives, as the generated keyd config names it. */
#define SUPER_CONFIG_DEVICE_ID_SECRET "/var/secrets/aziot/keyd/device-id"

typedef struct SuperConfigInput {
        const char *default_hostname; /* the machine's, for a super-config without `hostname` */
        uid_t aziotid_uid;            /* the Identity service's user */
        uid_t aziotcs_uid;            /* the Certificates service's user */
} SuperConfigInput;

typedef struct SuperConfigOutput {
        char *keyd, *certd, *identityd, *tpmd; /* the four 00-super.toml texts */
        uint8_t *device_id_key;                /* NULL unless an inline symmetric key was given */
        size_t device_id_key_len;
} SuperConfigOutput;

void super_config_output_done(SuperConfigOutput *out);

/* A device connection string, HostName=…;DeviceId=…;SharedAccessKey=… (`config mp -c` and the
 * super-config's provisioning.connection_string). */
typedef struct ConnectionString {
        char *hub, *device;
        uint8_t *key; /* SharedAccessKey decoded (base64, padding optional), erased when done */
        size_t key_len;
} ConnectionString;

void connection_string_done(ConnectionString *cs);

/* Parses text into *ret. On a bad input returns -EINVAL with a message in error that names the
 * part at fault ("HostName is missing", "SharedAccessKey: not a valid base64 key", …) for the
 * caller to prefix with where text came from; -ENOMEM. */
int connection_string_parse(const char *text, ConnectionString *ret, char *error,
                            size_t error_size);

/* Translates root. On a bad input returns -EINVAL with a message naming the key in error (and
 * *out untouched); -ENOMEM. */
int super_config_translate(const TomlValue *root, const SuperConfigInput *in,
                           SuperConfigOutput *out, char *error, size_t error_size);
