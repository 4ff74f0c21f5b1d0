/* SPDX-License-Identifier: MIT */
#include <signal.h>

#include "aziot-key.h"
#include "bus-util.h"
#include "certd.h"
#include "certs-config.h"
#include "certs-enroll.h"
#include "certs-object.h"
#include "log.h"
#include "macro.h"
#include "service.h"

#define DEFAULT_IDLE_SEC 30
#define CONFIG_DEBOUNCE_USEC (250 * 1000)

static void manager_free(Manager *m)
{
        if (!m)
                return;
        certs_enroll_done(m);
        config_watch_free(m->config_watch);
        polkit_registry_free(m->polkit_registry);
        sd_bus_slot_unref(m->object_slot);
        sd_bus_slot_unref(m->cert_vtable_slot);
        sd_bus_slot_unref(m->cert_enumerator_slot);
        sd_bus_slot_unref(m->object_manager_slot);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        principal_set_done(&m->principals);
        certs_config_done(&m->config);
        sender_uid_cache_done(&m->sender_uids);
        certs_store_free(m->store);
        free(m);
        aziot_key_provider_unload();
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free)

/* The ids named by [cert_issuance] may have certificates written by upstream's certd: index them,
 * so that they are listed. */
static void manager_adopt_ids(Manager *m, const CertsConfig *c)
{
        if (!c->cert_issuance)
                return;
        toml_table_foreach(e, c->cert_issuance)
        {
                int r;

                if (memchr(e->key, 0, e->key_len) || certs_id_validate(e->key) < 0)
                        continue;
                r = certs_store_adopt(m->store, e->key);
                if (r < 0)
                        log_warning_errno(r, "Failed to index the certificate %s: %m", e->key);
        }
}

/* Applies what may change without a restart: principals, preloaded certificates and issuance
 * options. Takes the configuration over on success. */
static int manager_apply(Manager *m, CertsConfig *c, ConfigError *err)
{
        int r;

        r = certs_store_set_preloaded(m->store, c->preloaded, err);
        if (r < 0)
                return r;
        /* Needs the new preloaded certificates; on failure the old ones come back. */
        r = certs_enroll_prepare(m, c, err);
        if (r < 0) {
                if (m->config.root)
                        (void)certs_store_set_preloaded(m->store, m->config.preloaded, NULL);
                return r;
        }
        principal_set_done(&m->principals);
        m->principals = c->principals;
        c->principals = (PrincipalSet){};
        manager_adopt_ids(m, c);
        certs_config_done(&m->config);
        m->config = *c;
        *c = (CertsConfig){};
        certs_enroll_apply(m);
        return 0;
}

static void manager_reload_config(void *userdata)
{
        _cleanup_(certs_config_done) CertsConfig c = {};
        Manager *m = userdata;
        ConfigError err = {};
        int r;

        /* The home stays as it is until a restart. */
        r = certs_config_load(&c, &err);
        if (r >= 0)
                r = manager_apply(m, &c, &err);
        if (r < 0) {
                config_error_log(&err, LOG_WARNING, "Keeping the previous configuration");
                return;
        }
        log_info("Configuration reloaded: %zu principal(s).", m->principals.n);
}

static int manager_load_config(Manager *m)
{
        _cleanup_(certs_config_done) CertsConfig c = {};
        _cleanup_free_ char *main_path = NULL, *dir = NULL;
        ConfigError err = {};
        int r;

        r = certs_config_load(&c, &err);
        if (r < 0) {
                config_error_log(&err, LOG_ERR, "Invalid configuration");
                return r;
        }
        m->max_requests = c.max_requests;
        r = certs_store_new(c.homedir, &m->store);
        if (r < 0)
                return log_error_errno(r, "Failed to open the certificate store in %s: %m",
                                       c.homedir);
        r = manager_apply(m, &c, &err);
        if (r < 0) {
                config_error_log(&err, LOG_ERR, "Invalid configuration");
                return r;
        }

        r = config_paths("certd", &main_path, &dir);
        if (r < 0)
                return log_oom();
        r = config_watch_new(m->event, main_path, dir, CONFIG_DEBOUNCE_USEC, manager_reload_config,
                             m, &m->config_watch);
        if (r < 0)
                log_warning_errno(r, "The configuration will not be reloaded on change: %m");
        return 0;
}

static bool manager_busy(void *userdata)
{
        Manager *m = userdata;

        /* With EST identities to renew, certd stays up (as upstream's, which never exits). */
        return polkit_registry_busy(m->polkit_registry) || certs_enroll_busy(m);
}

static int manager_connect_bus(Manager *m)
{
        int r;

        r = service_connect_bus(m->event, &m->bus, &m->polkit_registry);
        if (r < 0)
                return r;
        r = certs_dbus_register(m);
        if (r < 0)
                return r;
        return certs_object_register(m);
}

static int manager_new(Manager **ret)
{
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_oom();
        m->gateway_uid = service_gateway_uid();
        r = service_event_new(&m->event);
        if (r < 0)
                return r;
        r = certs_enroll_init(m);
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
        /* The bus first: applying the configuration may call keyd (to finish an interrupted
         * renewal) and announce certificates. Nothing is dispatched before the name is taken. */
        r = manager_connect_bus(m);
        if (r < 0)
                return r;
        r = manager_load_config(m);
        if (r < 0)
                return r;

        log_info("Serving %s.", CERTS_BUS_NAME);
        r = bus_request_name_and_run_until_idle(m->event, m->bus, CERTS_BUS_NAME, idle_usec,
                                                manager_busy, m);
        if (r < 0)
                return log_error_errno(r, "Failed to serve %s: %m", CERTS_BUS_NAME);
        return 0;
}

int main(int argc, char *argv[])
{
        static const ServiceDescription service = {
                .program = "aziot-certd",
                .what = "The Certificates service of the device identity stack",
                .bus_name = CERTS_BUS_NAME,
                .config = "certd",
                .default_idle_sec = DEFAULT_IDLE_SEC,
                .run = run,
        };

        return service_main(&service, argc, argv);
}
