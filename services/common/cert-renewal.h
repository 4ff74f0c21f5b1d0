/* SPDX-License-Identifier: MIT */
#pragma once

/* Automatic renewal of certificates (spec §3.7), shared by the daemons that hold credentials
 * issued by the cloud (certd: EST identity certificates; identityd: the device identity).
 *
 * Policy. A threshold and a retry period, each "<n>%" (1 ≤ n ≤ 99, a share of the certificate's
 * lifetime), "<n>min" or "<n>day" (n > 0). Renewal is due at notBefore + threshold × lifetime (a
 * share) or notAfter − threshold (a time); when that moment has passed, at now + retry. The retry
 * period is retry × lifetime or the time given, never under one second. Defaults: threshold 80%,
 * retry 4%, rotate_key true.
 *
 * Engine. A set of credentials, each a certificate id, its policy, and the SHA-256 of the
 * certificate as last seen; one CLOCK_REALTIME timer on the earliest due credential. When one is
 * due, its certificate is read again through RenewalOps.read: when it changed behind the engine's
 * back, renewing it stops ("certificate has changed since last renewal", as upstream); otherwise
 * RenewalOps.renew starts the renewal, and the owner reports the outcome with
 * renewal_engine_finished(): success reschedules from the new certificate, a failure retries after
 * the retry period (and the old certificate stays in use), a fatal failure drops the credential.
 * Callers that need the credential renewed before they use it (an EST enrollment with an identity
 * past its threshold) wait with renewal_engine_renew_now().
 *
 * Times are microseconds since the epoch (CLOCK_REALTIME). Not thread-safe. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "config.h"
#include "macro.h"
#include "toml.h"

#define RENEWAL_USEC_PER_SEC UINT64_C(1000000)
#define RENEWAL_MIN_RETRY_USEC RENEWAL_USEC_PER_SEC

typedef enum RenewalPolicyKind {
        RENEWAL_POLICY_PERCENT,
        RENEWAL_POLICY_TIME,
} RenewalPolicyKind;

typedef struct RenewalPolicy {
        RenewalPolicyKind kind;
        uint64_t value; /* percent (1–99), or microseconds */
} RenewalPolicy;

typedef struct RenewalConfig {
        bool rotate_key;
        RenewalPolicy threshold, retry;
} RenewalConfig;

#define RENEWAL_CONFIG_DEFAULT                                                                     \
        ((RenewalConfig){ .rotate_key = true,                                                      \
                          .threshold = { RENEWAL_POLICY_PERCENT, 80 },                             \
                          .retry = { RENEWAL_POLICY_PERCENT, 4 } })

/* "80%", "5min", "2day". -EINVAL for anything else (n = 0, a share outside 1–99, other units,
 * spaces, overflow). */
int renewal_policy_parse(const char *s, RenewalPolicy *ret);

/* A table with the optional keys rotate_key (bool), threshold and retry (policy strings), as
 * [cert_issuance.est.identity_auto_renew]; NULL gives the defaults. A negative errno with *ret_error
 * filled for a bad value (-EMEDIUMTYPE: of the wrong type). */
int renewal_config_from_toml(const TomlValue *table, const char *where, RenewalConfig *ret,
                             ConfigError *ret_error);

/* When a certificate valid from not_before to not_after is due for renewal, and the retry period
 * that applies to it. */
uint64_t renewal_due_time(const RenewalConfig *c, uint64_t not_before, uint64_t not_after);
uint64_t renewal_retry_period(const RenewalConfig *c, uint64_t not_before, uint64_t not_after);

/* The next moment to act at for a certificate, seen at now: its due time, or now + retry when
 * that has passed. */
uint64_t renewal_next_time(const RenewalConfig *c, uint64_t not_before, uint64_t not_after,
                           uint64_t now);

typedef enum RenewalState {
        RENEWAL_STATE_NONE,      /* not tracked */
        RENEWAL_STATE_SCHEDULED, /* waiting for its due time */
        RENEWAL_STATE_RENEWING,  /* a renewal is running */
        RENEWAL_STATE_RETRYING,  /* the last attempt failed; waiting for the retry */
} RenewalState;

const char *renewal_state_to_string(RenewalState s);

typedef struct RenewalEngine RenewalEngine;

typedef struct RenewalCertInfo {
        uint64_t not_before, not_after;
        uint8_t digest[32]; /* SHA-256 of the stored certificate (the whole PEM) */
} RenewalCertInfo;

typedef struct RenewalOps {
        /* Reads the credential's certificate as stored now. -ENOENT when it is gone. */
        int (*read)(const char *id, RenewalCertInfo *ret, void *userdata);
        /* Starts renewing id; returns 0 and later calls renewal_engine_finished() (possibly
         * before returning), or a negative errno when it could not start (then retried). */
        int (*renew)(RenewalEngine *e, const char *id, const RenewalConfig *config,
                     void *userdata);
        /* The state or next time of id changed (to announce it); may be NULL. */
        void (*changed)(const char *id, void *userdata);
} RenewalOps;

int renewal_engine_new(sd_event *event, const RenewalOps *ops, void *userdata,
                       RenewalEngine **ret);
RenewalEngine *renewal_engine_free(RenewalEngine *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(RenewalEngine *, renewal_engine_free);

/* Tracks id with config (replacing the config of an id already tracked, keeping its state). When
 * its certificate is already due, the renewal starts from the event loop. -ENOENT when id has no
 * certificate, -EBADMSG when it cannot be read as one. */
int renewal_engine_add(RenewalEngine *e, const char *id, const RenewalConfig *config);

/* Stops tracking id (a running renewal is left to finish; its outcome is then ignored). */
void renewal_engine_remove(RenewalEngine *e, const char *id);

/* Marks every credential, then renewal_engine_sweep() removes those not added again since: how
 * a configuration reload rebuilds the set. */
void renewal_engine_mark(RenewalEngine *e);
void renewal_engine_sweep(RenewalEngine *e);

bool renewal_engine_tracks(const RenewalEngine *e, const char *id);
size_t renewal_engine_size(const RenewalEngine *e);
bool renewal_engine_running(const RenewalEngine *e); /* some renewal is running */

/* State and next time (0 when none) of id; RENEWAL_STATE_NONE when not tracked. */
RenewalState renewal_engine_state(const RenewalEngine *e, const char *id, uint64_t *ret_next);

/* The outcome of a renewal started by RenewalOps.renew: 0 renewed (the new certificate is read),
 * negative a failure: retried after the retry period unless fatal. message (may be NULL) is
 * logged. */
void renewal_engine_finished(RenewalEngine *e, const char *id, int error, bool fatal,
                             const char *message);

/* For a caller about to use id: returns 1 when id is not due (use it now; done is not called);
 * else 0, and done(userdata, error) is called with the outcome once the renewal this starts (or
 * the one running) has finished. -ENOENT when id is not tracked. */
typedef void (*RenewalWaitCallback)(void *userdata, int error);
int renewal_engine_renew_now(RenewalEngine *e, const char *id, RenewalWaitCallback done,
                             void *userdata);

/* Forgets the waits of userdata (its owner is going away): their callbacks are not called. */
void renewal_engine_cancel_waits(RenewalEngine *e, void *userdata);
