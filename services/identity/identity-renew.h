/* SPDX-License-Identifier: MIT */
#pragma once

/* Renewal of the DPS X.509 identity certificate (spec §4.10; identity-renew.c). */

typedef struct Manager Manager;

int identity_renew_init(Manager *m);

/* Tracks the identity certificate when the configuration asks for its renewal (and it exists),
 * stops tracking it otherwise. */
void identity_renew_track(Manager *m);

/* Finishes or drops a renewal a crash interrupted (at start, before provisioning). */
void identity_renew_recover(Manager *m);
