/* SPDX-License-Identifier: MIT */
#pragma once

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
