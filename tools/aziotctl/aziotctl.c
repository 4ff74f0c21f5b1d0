/* SPDX-License-Identifier: MIT */
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

int main(int argc, char **argv)
{
        log_setup("aziotctl");
        if (argc < 2) {
                help(stderr);
                return AZIOTCTL_EXIT_USAGE;
        }
        if (streq(argv[1], "--help") || streq(argv[1], "-h") || streq(argv[1], "help")) {
                help(stdout);
                return AZIOTCTL_EXIT_OK;
        }
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
