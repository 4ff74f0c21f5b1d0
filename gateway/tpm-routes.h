/* SPDX-License-Identifier: MIT */
#pragma once

#include "routes.h"

/* tpmd.sock: the TPM service's routes (api-version 2020-09-01) and errors. */
extern const Service tpm_service;
