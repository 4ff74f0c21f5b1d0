/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <sys/stat.h>

#include "atomic-file.h"
#include "bus-util.h"
#include "identity-dps.h"
#include "identity-modules.h"
#include "identity-renew.h"
#include "identityd.h"
#include "log.h"
#include "macro.h"
#include "service.h"

#define CONFIG_DEBOUNCE_USEC (250 * 1000)

static void manager_free(Manager *m)
{
        if (!m)
                return;
        identity_dps_cancel(m);
        identity_modules_free(m->modules);
        identity_provisionings_free(m);
        renewal_engine_free(m->renewal);
        http_client_free(m->http);
        config_watch_free(m->config_watch);
        polkit_registry_free(m->polkit_registry);
        sd_bus_slot_unref(m->object_slot);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        sender_uid_cache_done(&m->sender_uids);
        identity_config_done(&m->config);
        identity_device_done(&m->device);
        free(m);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free)

void identity_set_state(Manager *m, IdentityState state)
{
        bool provisioned = state == IDENTITY_STATE_PROVISIONED;
        int r;

        m->state = state;
        if (!m->bus)
                return;
        r = sd_bus_emit_properties_changed(m->bus, IDENTITY_OBJECT_PATH, IDENTITY_INTERFACE,
                                           "ProvisioningState", NULL);
        if (r >= 0 && provisioned)
                r = sd_bus_emit_signal(m->bus, IDENTITY_OBJECT_PATH, IDENTITY_INTERFACE,
                                       "DeviceProvisioned", "ss", m->device.hub_name,
                                       m->device.device_id);
        if (r < 0)
                log_debug_errno(r, "Failed to announce the provisioning state: %m");
}

static void on_reload_reconciled(Manager *m, int error, const char *message, bool network,
                                 void *userdata)
{
        if (error < 0)
                log_warning("Reconciling module identities after the reload failed: %s",
                            message ? message : "?");
}

/* Principals and settings are replaced, then the module identities are reconciled (spec §4.7,
 * §6.4); the device is not provisioned again. */
static void manager_reload_config(void *userdata)
{
        _cleanup_(identity_config_done) IdentityConfig c = {};
        Manager *m = userdata;
        ConfigError err = {};
        int r;

        r = identity_config_load(&c, &err);
        if (r < 0) {
                config_error_log(&err, LOG_WARNING, "Keeping the previous configuration");
                return;
        }
        identity_config_done(&m->config);
        m->config = c;
        c = (IdentityConfig){};
        log_info("Configuration reloaded: %zu principal(s).", m->config.n_principals);
        identity_renew_track(m);
        if (m->state == IDENTITY_STATE_PROVISIONED &&
            identity_modules_reconcile(m, on_reload_reconciled, NULL) < 0)
                log_warning("Cannot reconcile module identities after the reload.");
}

static int manager_new(Manager **ret)
{
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_free_ char *main_path = NULL, *dir = NULL;
        ConfigError err = {};
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_oom();
        m->gateway_uid = service_gateway_uid();
        r = identity_config_load(&m->config, &err);
        if (r < 0) {
                config_error_log(&err, LOG_ERR, "Invalid configuration");
                return r;
        }
        m->max_requests = m->config.max_requests;
        r = mkdir_parents(m->config.homedir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create %s: %m", m->config.homedir);
        r = service_event_new(&m->event);
        if (r < 0)
                return r;
        r = http_client_new(m->event, &m->http);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the HTTP client: %m");
        r = service_connect_bus(m->event, &m->bus, &m->polkit_registry);
        if (r < 0)
                return r;
        r = identity_dbus_register(m);
        if (r < 0)
                return r;
        r = identity_modules_new(m, &m->modules);
        if (r < 0)
                return log_error_errno(r, "Failed to set up module identities: %m");
        r = identity_renew_init(m);
        if (r < 0)
                return log_oom();
        r = config_paths("identityd", &main_path, &dir);
        if (r < 0)
                return log_oom();
        r = config_watch_new(m->event, main_path, dir, CONFIG_DEBOUNCE_USEC, manager_reload_config,
                             m, &m->config_watch);
        if (r < 0)
                log_warning_errno(r, "The configuration will not be reloaded on change: %m");
        *ret = TAKE_PTR(m);
        return 0;
}

static void on_started(Manager *m, int error, const char *message, void *userdata)
{
        /* Upstream exits here (and crash-loops offline); the last good device stays in its
         * backup and identityd keeps serving. */
        if (error < 0)
                log_error("Failed to provision the device: %s", message ? message : "?");
        identity_renew_track(m);
}

static int run(uint64_t idle_usec)
{
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        r = manager_new(&m);
        if (r < 0)
                return r;
        identity_renew_recover(m);
        r = identity_provision_start(m, /* use_backup= */ true, on_started, NULL);
        if (r < 0)
                return log_oom();

        log_info("Serving %s.", IDENTITY_BUS_NAME);
        r = bus_request_name_and_run_until_idle(m->event, m->bus, IDENTITY_BUS_NAME, idle_usec,
                                                NULL, m);
        if (r < 0)
                return log_error_errno(r, "Failed to serve %s: %m", IDENTITY_BUS_NAME);
        return 0;
}

int main(int argc, char *argv[])
{
        static const ServiceDescription service = {
                .program = "aziot-identityd",
                .what = "The Identity service of the device identity stack",
                .bus_name = IDENTITY_BUS_NAME,
                .config = "identityd",
                .default_idle_sec = 0,
                .run = run,
        };

        return service_main(&service, argc, argv);
}
