/* SPDX-License-Identifier: MIT */
#pragma once

/* The tpmd configuration (/etc/aziot/tpmd/config.toml + config.d, spec §5):
 *   tcti = "device"                 the TCTI loader string ("" = the loader's default; e.g.
 *                                   "swtpm:path=/run/swtpm.sock", "tabrmd"); default "device"
 *   auth_key_index = 0x00_01_00     where the DPS authentication key is persisted:
 *                                   0x81000000 + index, 0 to 0x7fffff; default 0x100
 *   [hierarchy_authorization]
 *   endorsement = "…"               hierarchy passwords (default empty)
 *   owner = "…"
 *   max_requests = 10               published as the MaxRequests property, which the gateway
 *                                   enforces on tpmd.sock
 * None of it is hot-reloaded: the TPM is opened with it once. */

#include <stdint.h>

#include "config.h"
#include "tpm-device.h"

#define TPM_DEFAULT_TCTI "device"

typedef struct TpmConfig {
        TpmSettings settings; /* owned strings */
        uint32_t auth_key_index;
        uint32_t max_requests;
} TpmConfig;

void tpm_config_done(TpmConfig *c);

/* -EINVAL (and other negative errnos) with *ret_error filled. */
int tpm_config_parse(const TomlValue *root, TpmConfig *ret, ConfigError *ret_error);
int tpm_config_load(TpmConfig *ret, ConfigError *ret_error);
