/* SPDX-License-Identifier: MIT */
#pragma once

#include "routes.h"

/* keyd.sock: the Keys service's routes (api-versions 2020-09-01 and 2021-05-01) and errors. */
extern const Service keys_service;
