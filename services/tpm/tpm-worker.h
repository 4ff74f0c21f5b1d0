/* SPDX-License-Identifier: MIT */
#pragma once

/* The TPM thread of aziot-tpmd. TPM commands block (a TPM takes tens of milliseconds for an RSA key,
 * seconds when busy, forever when it hangs), so the event loop never makes them: it queues a job,
 * one thread runs the jobs in order on the TpmDevice it alone touches, and the loop is woken
 * through an eventfd to call each job's completion. The bus stays responsive meanwhile. */

#include <stdbool.h>
#include <stddef.h>

#include <systemd/sd-event.h>

#include "tpm-device.h"

typedef struct TpmWorker TpmWorker;

/* Runs on the TPM thread: does the work, leaves its outcome in the job's own state. */
typedef void (*TpmJobRun)(TpmDevice *d, void *job);
/* Runs on the event loop afterwards (or with cancelled = true when the worker is freed first). */
typedef void (*TpmJobDone)(void *job, bool cancelled);

/* Takes the device over; starts the thread. */
int tpm_worker_new(sd_event *event, TpmDevice *device, TpmWorker **ret);

/* Stops the thread after the job it runs (a hung TPM: the thread is left behind), cancels the
 * jobs still queued, frees everything. */
void tpm_worker_free(TpmWorker *w);

int tpm_worker_submit(TpmWorker *w, TpmJobRun run, TpmJobDone done, void *job);

/* Jobs queued or running. */
size_t tpm_worker_pending(const TpmWorker *w);
