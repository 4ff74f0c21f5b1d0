/* SPDX-License-Identifier: MIT */
#pragma once

#include "routes.h"

/* certd.sock: the Certificates service's routes (api-version 2020-09-01) and errors. */
extern const Service certs_service;
