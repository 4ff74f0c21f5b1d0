/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdio.h>

#include "macro.h"

/* Exit codes every command keeps, for scripts. */
enum {
        AZIOTCTL_EXIT_OK = 0,      /* done; for check: no error (warnings allowed) */
        AZIOTCTL_EXIT_FAILURE = 1, /* the command ran and failed; for check: a check failed */
        AZIOTCTL_EXIT_USAGE = 2,   /* bad command line; nothing was done */
};

/* Each command gets its own argv: argv[0] is the command's name ("config", "system", …). It
 * prints its own --help and returns one of the exit codes above. */
int aziotctl_config(int argc, char **argv);     /* config mp | config apply */
int aziotctl_system(int argc, char **argv);     /* system status|restart|stop|logs|set-log-level|reprovision */
int aziotctl_check(int argc, char **argv);      /* check */
int aziotctl_check_list(int argc, char **argv); /* check-list */
int aziotctl_keys(int argc, char **argv);       /* keys list */
int aziotctl_certs(int argc, char **argv);      /* certs list | certs show ID */
int aziotctl_identity(int argc, char **argv);   /* identity show */
int aziotctl_modules(int argc, char **argv);    /* modules list */

/* The start of main and of the commands with subcommands (config, system): with no argument,
 * print_help(stderr) and AZIOTCTL_EXIT_USAGE; with "help", "-h" or "--help", print_help(stdout) and
 * AZIOTCTL_EXIT_OK; else -1, to go on with argv[1]. */
int aziotctl_handle_help(int argc, char **argv, void (*print_help)(FILE *f));

/* "aziotctl COMMAND: message" and a pointer to COMMAND's --help on stderr; AZIOTCTL_EXIT_USAGE. */
int aziotctl_usage_error(const char *command, const char *format, ...) _printf_(2, 3);
