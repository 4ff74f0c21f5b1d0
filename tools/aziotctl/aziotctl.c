/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "aziotctl.h"
#include "build-config.h"
#include "log.h"
#include "macro.h"

static const struct {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *summary;
} commands[] = {
        { "config", aziotctl_config, "Write the services' configuration from /etc/aziot/config.toml" },
        { "check", aziotctl_check, "Check the configuration, the services and the connectivity" },
        { "check-list", aziotctl_check_list, "List the checks that check runs" },
        { "system", aziotctl_system, "Status, restart, stop, logs, log level and reprovisioning" },
        { "keys", aziotctl_keys, "The keys of the Keys service" },
        { "certs", aziotctl_certs, "The certificates of the Certificates service" },
        { "identity", aziotctl_identity, "The device identity" },
        { "modules", aziotctl_modules, "The module identities" },
};

static void help(FILE *f)
{
        fprintf(f,
                "Usage: aziotctl [--version] [--help] COMMAND [ARGS…]\n"
                "\n"
                "Administers the Azure IoT identity services.\n"
                "\n"
                "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
        fprintf(f,
                "\n"
                "'aziotctl COMMAND --help' describes a command.\n"
                "Exit status: 0 done, 1 failed, 2 bad usage.\n");
}

int aziotctl_handle_help(int argc, char **argv, void (*print_help)(FILE *f))
{
        if (argc < 2) {
                print_help(stderr);
                return AZIOTCTL_EXIT_USAGE;
        }
        if (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
                print_help(stdout);
                return AZIOTCTL_EXIT_OK;
        }
        return -1;
}

int aziotctl_usage_error(const char *command, const char *format, ...)
{
        va_list ap;

        fprintf(stderr, "aziotctl %s: ", command);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fprintf(stderr, "\nTry 'aziotctl %s --help'.\n", command);
        return AZIOTCTL_EXIT_USAGE;
}

int main(int argc, char **argv)
{
        int r;

        log_setup("aziotctl");
        r = aziotctl_handle_help(argc, argv, help);
        if (r >= 0)
                return r;
        if (streq(argv[1], "--version") || streq(argv[1], "-V")) {
                printf("aziotctl %s\n", PACKAGE_VERSION);
                return AZIOTCTL_EXIT_OK;
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(argv[1], commands[i].name))
                        return commands[i].run(argc - 1, argv + 1);
        fprintf(stderr, "aziotctl: unknown command '%s'\n", argv[1]);
        help(stderr);
        return AZIOTCTL_EXIT_USAGE;
}
