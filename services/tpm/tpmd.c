/* SPDX-License-Identifier: MIT */
#include <stdlib.h>

#include "bus-util.h"
#include "log.h"
#include "macro.h"
#include "service.h"
#include "tpmd.h"

#define DEFAULT_IDLE_SEC 30

static void manager_free(Manager *m)
{
        if (!m)
                return;
        /* The worker first: its cancelled jobs answer their calls on the bus. */
        tpm_worker_free(m->worker);
        polkit_registry_free(m->polkit_registry);
        sd_bus_slot_unref(m->object_slot);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        sender_uid_cache_done(&m->sender_uids);
        tpm_config_done(&m->config);
        tpm_buffer_done(&m->ek);
        tpm_buffer_done(&m->srk);
        free(m);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free)

static bool manager_busy(void *userdata)
{
        Manager *m = userdata;

        return polkit_registry_busy(m->polkit_registry) || tpm_worker_pending(m->worker) > 0;
}

static int manager_new(Manager **ret)
{
        _cleanup_(manager_freep) Manager *m = NULL;
        ConfigError err = {};
        TpmDevice *device = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_oom();
        m->gateway_uid = service_gateway_uid();
        r = tpm_config_load(&m->config, &err);
        if (r < 0) {
                config_error_log(&err, LOG_ERR, "Invalid configuration");
                return r;
        }
        r = service_event_new(&m->event);
        if (r < 0)
                return r;
        r = tpm_device_new(&m->config.settings, &device);
        if (r < 0)
                return log_oom();
        r = tpm_worker_new(m->event, device, &m->worker);
        if (r < 0) {
                tpm_device_free(device);
                return log_error_errno(r, "Failed to start the TPM thread: %m");
        }
        r = service_connect_bus(m->event, &m->bus, &m->polkit_registry);
        if (r < 0)
                return r;
        r = tpm_dbus_register(m);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

static int run(uint64_t idle_usec)
{
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        r = manager_new(&m);
        if (r < 0)
                return r;
        r = tpm_dbus_warm_up(m);
        if (r < 0)
                return r;

        log_info("Serving %s (TCTI \"%s\", authentication key at 0x%08x).", TPM_BUS_NAME,
                 strempty(m->config.settings.tcti), TPM_AUTH_KEY_BASE + m->config.auth_key_index);
        r = bus_request_name_and_run_until_idle(m->event, m->bus, TPM_BUS_NAME, idle_usec,
                                                manager_busy, m);
        if (r < 0)
                return log_error_errno(r, "Failed to serve %s: %m", TPM_BUS_NAME);
        return 0;
}

int main(int argc, char *argv[])
{
        /* tpm2-tss logs to stderr in its own format; what matters is in our messages (the step
         * and the decoded response code). TSS2_LOG set by the user wins. */
        (void)setenv("TSS2_LOG", "all+none", /* overwrite= */ 0);

        static const ServiceDescription service = {
                .program = "aziot-tpmd",
                .what = "The TPM service of the device identity stack",
                .bus_name = TPM_BUS_NAME,
                .config = "tpmd",
                .default_idle_sec = DEFAULT_IDLE_SEC,
                .run = run,
        };

        return service_main(&service, argc, argv);
}
