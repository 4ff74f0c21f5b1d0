/* SPDX-License-Identifier: MIT */
#pragma once
/* What `config` and `system` share: the destination root and the service manager. */
#include <stdbool.h>

/* path prefixed with $AZIOTCTL_ROOT (a packaging and testing aid), as a new string; NULL when out of
 * memory. */
char *aziotctl_path(const char *path);

/* Whether systemd is the service manager (as sd_booted(): /run/systemd/system exists). */
bool aziotctl_systemd_running(void);

/* `system restart`: stop the four services, start their sockets, start identityd. Prints what
 * failed; negative errno. */
int aziotctl_system_restart(void);
