/* SPDX-License-Identifier: MIT */
#include <signal.h>

#include "bus-util.h"
#include "keyd.h"
#include "keys-config.h"
#include "keys-library.h"
#include "keys-private.h"
#include "keys-store.h"
#include "log.h"
#include "macro.h"
#include "service.h"

#define DEFAULT_IDLE_SEC 30
#define CONFIG_DEBOUNCE_USEC (250 * 1000)

static void manager_free(Manager *m)
{
        if (!m)
                return;
        private_connections_free(m);
        config_watch_free(m->config_watch);
        polkit_registry_free(m->polkit_registry);
        sd_bus_slot_unref(m->object_slot);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        principal_set_done(&m->principals);
        sender_uid_cache_done(&m->sender_uids);
        keys_library_close(&m->library);
        free(m);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free)

/* Opens the key store (built in, or the configured library) and hands it every [aziot_keys] and
 * [preloaded_keys] entry, as upstream keyd does. */
static int manager_configure_store(Manager *m, const KeysConfig *c)
{
        AZIOT_KEYS_RC rc;
        int r;

        r = keys_library_open(c->library, &m->library);
        if (r < 0)
                return r;
        m->keys = &m->library.list;
        m->handle_keys = (KeysHandleAziotKeys){
                .create_key_if_not_exists = m->keys->create_key_if_not_exists,
                .sign = m->keys->sign,
        };
        keys_handle_signer_from_aziot_keys(&m->signer, &m->handle_keys);

        for (char **p = c->parameters; p && *p; p += 2) {
                rc = m->keys->set_parameter(p[0], p[1]);
                if (rc != AZIOT_KEYS_RC_OK)
                        return log_error_errno(EINVAL, "The key store rejected parameter \"%s\".",
                                               p[0]);
        }
        if (!m->library.dl)
                keys_store_start();
        return 0;
}

static void manager_reload_config(void *userdata)
{
        Manager *m = userdata;
        KeysConfig c = {};
        ConfigError err = {};
        int r;

        /* Only principals are reloaded, as upstream does: the store keeps its parameters. */
        r = keys_config_load(&c, &err);
        if (r < 0) {
                config_error_log(&err, LOG_WARNING, "Keeping the previous configuration");
                return;
        }
        principal_set_done(&m->principals);
        m->principals = c.principals;
        c.principals = (PrincipalSet){};
        keys_config_done(&c);
        log_info("Configuration reloaded: %zu principal(s).", m->principals.n);
}

static int manager_load_config(Manager *m)
{
        _cleanup_(keys_config_done) KeysConfig c = {};
        _cleanup_free_ char *main_path = NULL, *dir = NULL;
        ConfigError err = {};
        int r;

        r = keys_config_load(&c, &err);
        if (r < 0) {
                config_error_log(&err, LOG_ERR, "Invalid configuration");
                return r;
        }

        r = manager_configure_store(m, &c);
        if (r < 0)
                return r;
        m->max_requests = c.max_requests;
        m->principals = c.principals;
        c.principals = (PrincipalSet){};

        r = config_paths("keyd", &main_path, &dir);
        if (r < 0)
                return log_oom();
        r = config_watch_new(m->event, main_path, dir, CONFIG_DEBOUNCE_USEC, manager_reload_config, m,
                             &m->config_watch);
        if (r < 0)
                log_warning_errno(r, "Principals will not be reloaded on change: %m");
        return 0;
}

static bool manager_busy(void *userdata)
{
        Manager *m = userdata;

        /* A private connection is work in hand: the gateway closes it when it is idle. */
        return m->n_private_connections > 0 || polkit_registry_busy(m->polkit_registry);
}

static int manager_connect_bus(Manager *m)
{
        int r;

        r = service_connect_bus(m->event, &m->bus, &m->polkit_registry);
        if (r < 0)
                return r;
        return keys_dbus_register(m);
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
        r = manager_load_config(m);
        if (r < 0)
                return r;
        r = manager_connect_bus(m);
        if (r < 0)
                return r;

        log_info("Serving %s.", KEYS_BUS_NAME);
        r = bus_request_name_and_run_until_idle(m->event, m->bus, KEYS_BUS_NAME, idle_usec,
                                                manager_busy, m);
        if (r < 0)
                return log_error_errno(r, "Failed to serve %s: %m", KEYS_BUS_NAME);
        return 0;
}

int main(int argc, char *argv[])
{
        static const ServiceDescription service = {
                .program = "aziot-keyd",
                .what = "The Keys service of the device identity stack",
                .bus_name = KEYS_BUS_NAME,
                .config = "keyd",
                .default_idle_sec = DEFAULT_IDLE_SEC,
                .run = run,
        };

        return service_main(&service, argc, argv);
}
