/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "atomic-file.h"
#include "aziotctl-paths.h"
#include "aziotctl.h"
#include "macro.h"

static const struct {
        const char *service;  /* systemd unit, without .service */
        const char *bus_name; /* D-Bus name the daemon owns */
} services[] = {
        { "aziot-keyd", "org.aziot.Keys1" },
        { "aziot-certd", "org.aziot.Certificates1" },
        { "aziot-identityd", "org.aziot.Identity1" },
        { "aziot-tpmd", "org.aziot.Tpm1" },
};

static const char *const log_levels[] = { "error", "warn", "info", "debug", "trace" };

static void help(FILE *f)
{
        fprintf(f,
                "Usage: aziotctl system status\n"
                "       aziotctl system restart | stop\n"
                "       aziotctl system logs [-- JOURNALCTL-ARGS…]\n"
                "       aziotctl system set-log-level error|warn|info|debug|trace\n"
                "       aziotctl system reprovision\n"
                "\n"
                "status         The state of the services (aziot-keyd, aziot-certd,\n"
                "               aziot-identityd, aziot-tpmd) and their sockets; without systemd, whether each\n"
                "               service's D-Bus name is owned on the system bus.\n"
                "restart        Stops the services, starts their sockets and aziot-identityd.\n"
                "stop           Stops the services.\n"
                "logs           The services' journal (default arguments: -e --no-pager).\n"
                "set-log-level  Writes /etc/systemd/system/<service>.service.d/log-level.conf;\n"
                "               takes effect when the services restart.\n"
                "reprovision    Asks the Identity service to provision the device again.\n"
                "\n"
                "restart, stop, logs and status (for units) need systemd.\n"
                "Environment: AZIOTCTL_ROOT, a directory prefixed to /etc (set-log-level), for\n"
                "packaging and testing; systemctl is not called when it is set.\n");
}

/* Runs argv, waits; its exit status, or negative errno when it could not run. */
static int run(char *const *argv)
{
        pid_t pid;
        int status;

        fflush(stdout);
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                execvp(argv[0], argv);
                fprintf(stderr, "aziotctl: could not run %s: %m\n", argv[0]);
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static int systemctl(const char *verb, const char *suffix)
{
        char units[ELEMENTSOF(services)][64];
        char *argv[3 + ELEMENTSOF(services)] = { (char *)"systemctl", (char *)verb };
        size_t n = 2;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(services); i++) {
                snprintf(units[i], sizeof(units[i]), "%s.%s", services[i].service, suffix);
                argv[n++] = units[i];
        }
        argv[n] = NULL;
        r = run(argv);
        if (r != 0) {
                fprintf(stderr, "aziotctl: systemctl %s failed\n", verb);
                return -EIO;
        }
        return 0;
}

static bool need_systemd(const char *what)
{
        if (aziotctl_systemd_running())
                return true;
        fprintf(stderr,
                "aziotctl: system %s: systemd is not running on this machine (no "
                "/run/systemd/system); %s the aziot services with your service manager instead\n",
                what, streq(what, "logs") ? "read the logs of" : what);
        return false;
}

int aziotctl_system_restart(void)
{
        int r;

        printf("Restarting the services…\n");
        r = systemctl("stop", "service");
        if (r < 0)
                return r;
        r = systemctl("start", "socket");
        if (r < 0)
                return r;
        char *argv[] = { (char *)"systemctl", (char *)"start", (char *)"aziot-identityd.service",
                         NULL };
        if (run(argv) != 0) {
                fprintf(stderr, "aziotctl: systemctl start aziot-identityd.service failed\n");
                return -EIO;
        }
        printf("Done.\n");
        return 0;
}

static int status_systemd(void)
{
        bool failed = false;

        for (size_t i = 0; i < ELEMENTSOF(services); i++)
                for (size_t s = 0; s < 2; s++) {
                        char unit[64];
                        snprintf(unit, sizeof(unit), "%s.%s", services[i].service,
                                 s ? "socket" : "service");
                        char *is_failed[] = { (char *)"systemctl", (char *)"--quiet",
                                              (char *)"is-failed", unit, NULL };
                        char *status[] = { (char *)"systemctl", (char *)"--no-pager",
                                           (char *)"--lines=0", (char *)"status", unit, NULL };
                        (void)run(status);
                        if (run(is_failed) == 0) {
                                char *journal[] = { (char *)"journalctl", (char *)"--no-pager",
                                                    (char *)"-n", (char *)"10", (char *)"-u", unit,
                                                    NULL };
                                failed = true;
                                (void)run(journal);
                        }
                        printf("\n");
                }
        return failed ? AZIOTCTL_EXIT_FAILURE : AZIOTCTL_EXIT_OK;
}

static int status_bus(void)
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        printf("systemd is not running on this machine: showing which services own their D-Bus "
               "name on the system bus (an idle service is started on demand).\n");
        r = sd_bus_open_system(&bus);
        if (r < 0) {
                fprintf(stderr, "aziotctl: could not connect to the system bus: %s\n",
                        strerror(-r));
                return AZIOTCTL_EXIT_FAILURE;
        }
        for (size_t i = 0; i < ELEMENTSOF(services); i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                int owned = 0;

                r = sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                       "org.freedesktop.DBus", "NameHasOwner", &error, &reply, "s",
                                       services[i].bus_name);
                if (r >= 0)
                        r = sd_bus_message_read(reply, "b", &owned);
                if (r < 0) {
                        fprintf(stderr, "aziotctl: could not ask the bus about %s: %s\n",
                                services[i].bus_name,
                                error.message ?: strerror(-r));
                        return AZIOTCTL_EXIT_FAILURE;
                }
                printf("%s (%s): %s\n", services[i].service, services[i].bus_name,
                       owned ? "running" : "not running");
        }
        return AZIOTCTL_EXIT_OK;
}

static int set_log_level(const char *level)
{
        bool valid = false;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(log_levels); i++)
                valid = valid || streq(level, log_levels[i]);
        if (!valid)
                return aziotctl_usage_error(
                        "system", "'%s' is not a log level (error, warn, info, debug, trace)",
                        level);

        _cleanup_free_ char *content = NULL;
        if (asprintf(&content, "[Service]\nEnvironment=AZIOT_LOG=%s\n", level) < 0)
                return AZIOTCTL_EXIT_FAILURE;
        for (size_t i = 0; i < ELEMENTSOF(services); i++) {
                char dir[128], file[160];
                snprintf(dir, sizeof(dir), "/etc/systemd/system/%s.service.d", services[i].service);
                snprintf(file, sizeof(file), "%s/log-level.conf", dir);
                _cleanup_free_ char *full_dir = aziotctl_path(dir), *full = aziotctl_path(file);
                if (!full_dir || !full)
                        return AZIOTCTL_EXIT_FAILURE;
                r = mkdir_parents(full_dir, 0755);
                if (r >= 0)
                        r = write_file_atomic(full, content, strlen(content), 0644);
                if (r < 0) {
                        fprintf(stderr, "aziotctl: could not write %s: %s\n", full,
                                strerror(-r));
                        return AZIOTCTL_EXIT_FAILURE;
                }
                printf("Wrote %s\n", full);
        }
        if (getenv("AZIOTCTL_ROOT")) {
                printf("AZIOTCTL_ROOT is set: systemd was not reloaded.\n");
                return AZIOTCTL_EXIT_OK;
        }
        if (!aziotctl_systemd_running()) {
                printf("systemd is not running on this machine: the drop-ins take effect only "
                       "under systemd; elsewhere set AZIOT_LOG=%s in the services' environment.\n",
                       level);
                return AZIOTCTL_EXIT_OK;
        }
        char *argv[] = { (char *)"systemctl", (char *)"daemon-reload", NULL };
        if (run(argv) != 0) {
                fprintf(stderr, "aziotctl: systemctl daemon-reload failed\n");
                return AZIOTCTL_EXIT_FAILURE;
        }
        printf("The new log level takes effect when the services restart "
               "(aziotctl system restart).\n");
        return AZIOTCTL_EXIT_OK;
}

static int reprovision(void)
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_open_system(&bus);
        if (r < 0) {
                fprintf(stderr, "aziotctl: could not connect to the system bus: %s\n",
                        strerror(-r));
                return AZIOTCTL_EXIT_FAILURE;
        }
        r = sd_bus_message_new_method_call(bus, &m, "org.aziot.Identity1", "/org/aziot/Identity1",
                                           "org.aziot.Identity1", "ReprovisionDevice");
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        /* allow polkit to ask the administrator */
        if (r >= 0)
                r = sd_bus_message_set_allow_interactive_authorization(m, isatty(STDIN_FILENO));
        if (r < 0) {
                fprintf(stderr, "aziotctl: could not build the request: %s\n", strerror(-r));
                return AZIOTCTL_EXIT_FAILURE;
        }
        /* provisioning talks to the cloud: DPS polls, retries */
        r = sd_bus_call(bus, m, 10 * 60 * UINT64_C(1000000), &error, &reply);
        if (r < 0) {
                fprintf(stderr, "aziotctl: reprovisioning failed: %s\n",
                        error.message ?: strerror(-r));
                if (sd_bus_error_has_names(&error, "org.aziot.Identity1.Error.NotAuthorized",
                                           SD_BUS_ERROR_ACCESS_DENIED))
                        fprintf(stderr, "aziotctl: this user is not authorized to reprovision the "
                                        "device: run it as root, or let polkit allow the action "
                                        "org.aziot.identity.manage\n");
                return AZIOTCTL_EXIT_FAILURE;
        }
        printf("Successfully reprovisioned with IoT Hub.\n");
        return AZIOTCTL_EXIT_OK;
}

int aziotctl_system(int argc, char **argv)
{
        const char *verb;
        int r;

        r = aziotctl_handle_help(argc, argv, help);
        if (r >= 0)
                return r;
        verb = argv[1];
        /* every verb takes --help; only logs (after --) and set-log-level take arguments */
        for (int i = 2; i < argc; i++) {
                if (streq(argv[i], "--"))
                        break;
                if (streq(argv[i], "--help") || streq(argv[i], "-h")) {
                        help(stdout);
                        return AZIOTCTL_EXIT_OK;
                }
        }

        if (streq(verb, "logs")) {
                if (argc > 2 && !streq(argv[2], "--"))
                        return aziotctl_usage_error("system",
                                                    "unexpected argument '%s' (journalctl "
                                                    "arguments go after --)",
                                                    argv[2]);
                if (!need_systemd("logs"))
                        return AZIOTCTL_EXIT_FAILURE;
                size_t extra = argc > 3 ? (size_t)argc - 3 : 2;
                _cleanup_free_ char **jargv = calloc(2 + 2 * ELEMENTSOF(services) + extra,
                                                     sizeof(char *));
                if (!jargv)
                        return AZIOTCTL_EXIT_FAILURE;
                size_t n = 0;
                jargv[n++] = (char *)"journalctl";
                for (size_t i = 0; i < ELEMENTSOF(services); i++) {
                        jargv[n++] = (char *)"-u";
                        jargv[n++] = (char *)services[i].service;
                }
                if (argc > 3)
                        for (int i = 3; i < argc; i++)
                                jargv[n++] = argv[i];
                else {
                        jargv[n++] = (char *)"-e";
                        jargv[n++] = (char *)"--no-pager";
                }
                jargv[n] = NULL;
                fflush(stdout);
                execvp(jargv[0], jargv);
                fprintf(stderr, "aziotctl: could not run journalctl: %s\n", strerror(errno));
                return AZIOTCTL_EXIT_FAILURE;
        }
        if (streq(verb, "set-log-level")) {
                if (argc != 3)
                        return aziotctl_usage_error("system", "set-log-level takes one LEVEL");
                return set_log_level(argv[2]);
        }
        if (argc > 2)
                return aziotctl_usage_error("system", "unexpected argument '%s'", argv[2]);
        if (streq(verb, "status"))
                return aziotctl_systemd_running() ? status_systemd() : status_bus();
        if (streq(verb, "restart") || streq(verb, "stop")) {
                if (!need_systemd(verb))
                        return AZIOTCTL_EXIT_FAILURE;
                if (streq(verb, "stop"))
                        return systemctl("stop", "service") < 0 ? AZIOTCTL_EXIT_FAILURE :
                                                                  AZIOTCTL_EXIT_OK;
                return aziotctl_system_restart() < 0 ? AZIOTCTL_EXIT_FAILURE : AZIOTCTL_EXIT_OK;
        }
        if (streq(verb, "reprovision"))
                return reprovision();
        return aziotctl_usage_error("system", "unknown subcommand '%s'", verb);
}
