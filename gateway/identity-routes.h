/* SPDX-License-Identifier: MIT */
#pragma once

#include "routes.h"

/* identityd.sock: the Identity service's routes (api-versions 2020-09-01, 2021-12-01,
 * 2022-08-01) and errors. */
extern const Service identity_service;
