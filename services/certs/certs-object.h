/* SPDX-License-Identifier: MIT */
#pragma once

/* The per-certificate objects of aziot-certd (org.aziot.Certificates1.Certificate under
 * /org/aziot/Certificates1/certificate/<encoded id>) and the object manager that announces them. */

#include <stdbool.h>

#include "certd.h"

/* Registers the fallback vtable, the node enumerator and the object manager. */
int certs_object_register(Manager *m);

/* Whether id has a certificate now (before a write: to tell an addition from a replacement). */
bool certs_object_exists(Manager *m, const char *id);

/* After id was written: InterfacesAdded when it is new, else PropertiesChanged (invalidating the
 * certificate's properties). Failures are logged only: the write has happened. */
void certs_object_emit_stored(Manager *m, const char *id, bool existed);

/* The renewal state or next renewal time of id changed: PropertiesChanged. */
void certs_object_emit_renewal_state(Manager *m, const char *id);

/* id was renewed (and stored, announced by certs_object_emit_stored()): CertificateRenewed. */
void certs_object_emit_renewed(Manager *m, const char *id);

/* After id was deleted: InterfacesRemoved. */
void certs_object_emit_removed(Manager *m, const char *id);
