/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic-file.h"
#include "aziotctl-paths.h"
#include "aziotctl.h"
#include "macro.h"
#include "super-config.h"
#include "toml.h"

#define SUPER_CONFIG_PATH "/etc/aziot/config.toml"
#define SUPER_CONFIG_MAX_SIZE (1024 * 1024)

static void help(FILE *f)
{
        fprintf(f,
                "Usage: aziotctl config mp -c|--connection-string CS [-o|--out-config-file FILE]\n"
                "                          [-f|--force]\n"
                "       aziotctl config apply [-c|--config FILE]\n"
                "\n"
                "mp     Writes a minimal super-config (manual provisioning with an IoT Hub device\n"
                "       connection string) to FILE (default " SUPER_CONFIG_PATH "), mode 0600.\n"
                "       An existing file is only replaced with --force.\n"
                "apply  Reads the super-config FILE (default " SUPER_CONFIG_PATH ")\n"
                "       and writes the services' configuration,\n"
                "       /etc/aziot/{keyd,certd,identityd,tpmd}/config.d/00-super.toml (and " SUPER_CONFIG_DEVICE_ID_SECRET " for an inline\n"
                "       symmetric key), then restarts the services. Needs root and the users\n"
                "       aziotks, aziotcs, aziotid and aziottpm. Nothing is written when the\n"
                "       super-config has an error.\n"
                "\n"
                "Environment:\n"
                "  AZIOTCTL_ROOT  A directory prefixed to /etc/aziot and /var/secrets (and to the\n"
                "                 default super-config path), for packaging and testing. The\n"
                "                 services are not restarted when it is set.\n");
}

/* Refuses what `config apply` would refuse in the connection string mp writes. */
static int check_connection_string(const char *text)
{
        _cleanup_(connection_string_done) ConnectionString cs = {};
        char message[256];
        int r;

        r = connection_string_parse(text, &cs, message, sizeof(message));
        if (r == -EINVAL)
                fprintf(stderr, "aziotctl: --connection-string: %s\n", message);
        else if (r < 0)
                fprintf(stderr, "aziotctl: --connection-string: %s\n", strerror(-r));
        return r;
}

static int config_mp(int argc, char **argv)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "connection-string", required_argument, NULL, 'c' },
                { "out-config-file", required_argument, NULL, 'o' },
                { "force", no_argument, NULL, 'f' },
                {},
        };
        const char *cs = NULL, *out = NULL;
        _cleanup_free_ char *default_out = NULL, *text = NULL;
        bool force = false;
        size_t len = 0;
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "+hc:o:f", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help(stdout);
                        return AZIOTCTL_EXIT_OK;
                case 'c':
                        cs = optarg;
                        break;
                case 'o':
                        out = optarg;
                        break;
                case 'f':
                        force = true;
                        break;
                default:
                        return aziotctl_usage_error("config", "bad option for 'config mp'");
                }
        if (optind < argc)
                return aziotctl_usage_error("config", "unexpected argument '%s'",
                                            argv[optind]);
        if (!cs)
                return aziotctl_usage_error("config", "config mp needs --connection-string");
        if (!out) {
                default_out = aziotctl_path(SUPER_CONFIG_PATH);
                if (!default_out)
                        return AZIOTCTL_EXIT_FAILURE;
                out = default_out;
        }
        if (check_connection_string(cs) < 0)
                return AZIOTCTL_EXIT_FAILURE;
        if (!force && access(out, F_OK) == 0) {
                fprintf(stderr, "aziotctl: %s already exists; use --force to replace it\n", out);
                return AZIOTCTL_EXIT_FAILURE;
        }

        FILE *f = open_memstream(&text, &len);
        if (!f)
                return AZIOTCTL_EXIT_FAILURE;
        fprintf(f, "[provisioning]\nsource = \"manual\"\nconnection_string = ");
        toml_write_string(f, cs);
        fputc('\n', f);
        if (fclose(f) != 0)
                return AZIOTCTL_EXIT_FAILURE;

        _cleanup_free_ char *dir = strdup(out);
        if (!dir)
                return AZIOTCTL_EXIT_FAILURE;
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
                *slash = 0;
                (void)mkdir_parents(dir, 0755);
        }
        r = write_file_atomic(out, text, len, 0600);
        if (r < 0) {
                fprintf(stderr, "aziotctl: could not write %s: %s\n", out, strerror(-r));
                return AZIOTCTL_EXIT_FAILURE;
        }
        printf("Azure IoT Identity Service has been configured successfully!\n"
               "The configuration has been written to %s\n"
               "To apply the new configuration to services, run:\n"
               "\n"
               "    sudo aziotctl config apply -c '%s'\n",
               out, out);
        return AZIOTCTL_EXIT_OK;
}

typedef struct ServiceUser {
        const char *name;
        uid_t uid;
        gid_t gid;
} ServiceUser;

static int lookup_user(ServiceUser *u)
{
        struct passwd *pw;

        errno = 0;
        pw = getpwnam(u->name);
        if (!pw) {
                fprintf(stderr,
                        "aziotctl: the service user '%s' does not exist; install the package (or "
                        "create the users aziotks, aziotcs, aziotid and aziottpm) first\n",
                        u->name);
                return -ENOENT;
        }
        u->uid = pw->pw_uid;
        u->gid = pw->pw_gid;
        return 0;
}

/* Writes root-prefixed path atomically, 0600, owned by u; creates its directory 0700 owned by u. */
static int write_owned(const char *path, const void *data, size_t len, const ServiceUser *u)
{
        _cleanup_free_ char *full = aziotctl_path(path);
        int r;

        if (!full)
                return -ENOMEM;
        _cleanup_free_ char *dir = strdup(full);
        if (!dir)
                return -ENOMEM;
        *strrchr(dir, '/') = 0;
        struct stat st;
        if (stat(dir, &st) < 0) {
                /* The directories on the way stay traversable (0755); only the file's own
                 * directory is private to the service's user. */
                _cleanup_free_ char *parent = strdup(dir);
                if (!parent)
                        return -ENOMEM;
                *strrchr(parent, '/') = 0;
                r = isempty(parent) ? 0 : mkdir_parents(parent, 0755);
                if (r >= 0 && mkdir(dir, 0700) < 0 && errno != EEXIST)
                        r = -errno;
                if (r >= 0 && chown(dir, u->uid, u->gid) < 0)
                        r = -errno;
                if (r < 0) {
                        fprintf(stderr, "aziotctl: could not create %s: %s\n", dir, strerror(-r));
                        return r;
                }
        }
        r = write_file_atomic(full, data, len, 0600);
        if (r >= 0 && chown(full, u->uid, u->gid) < 0)
                r = -errno;
        if (r < 0) {
                fprintf(stderr, "aziotctl: could not write %s: %s\n", full, strerror(-r));
                return r;
        }
        printf("Wrote %s\n", full);
        return 0;
}

static int write_outputs(const SuperConfigOutput *out, const ServiceUser *keyd,
                         const ServiceUser *certd, const ServiceUser *identityd,
                         const ServiceUser *tpmd)
{
        int r = 0;

        /* The secret first, so that keyd's new configuration never names a missing file. */
        if (out->device_id_key)
                r = write_owned(SUPER_CONFIG_DEVICE_ID_SECRET, out->device_id_key,
                                out->device_id_key_len, keyd);
        if (r >= 0)
                r = write_owned("/etc/aziot/keyd/config.d/00-super.toml", out->keyd,
                                strlen(out->keyd), keyd);
        if (r >= 0)
                r = write_owned("/etc/aziot/certd/config.d/00-super.toml", out->certd,
                                strlen(out->certd), certd);
        if (r >= 0)
                r = write_owned("/etc/aziot/identityd/config.d/00-super.toml", out->identityd,
                                strlen(out->identityd), identityd);
        if (r >= 0)
                r = write_owned("/etc/aziot/tpmd/config.d/00-super.toml", out->tpmd,
                                strlen(out->tpmd), tpmd);
        return r;
}

static int config_apply(int argc, char **argv)
{
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "config", required_argument, NULL, 'c' },
                {},
        };
        _cleanup_free_ char *default_path = NULL;
        _cleanup_toml_ TomlValue *root = NULL;
        SuperConfigOutput out = {};
        const char *path = NULL;
        TomlError terr = {};
        char error[512], host[256] = "";
        int c, r;

        optind = 0;
        while ((c = getopt_long(argc, argv, "+hc:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help(stdout);
                        return AZIOTCTL_EXIT_OK;
                case 'c':
                        path = optarg;
                        break;
                default:
                        return aziotctl_usage_error("config",
                                                    "bad option for 'config apply'");
                }
        if (optind < argc)
                return aziotctl_usage_error("config", "unexpected argument '%s'",
                                            argv[optind]);
        if (!path) {
                default_path = aziotctl_path(SUPER_CONFIG_PATH);
                if (!default_path)
                        return AZIOTCTL_EXIT_FAILURE;
                path = default_path;
        }

        r = toml_parse_file(path, &root, &terr);
        if (r < 0) {
                if (terr.line > 0)
                        fprintf(stderr, "aziotctl: %s:%u:%u: %s\n", path, terr.line, terr.column,
                                terr.message);
                else
                        fprintf(stderr, "aziotctl: could not read %s: %s\n", path, strerror(-r));
                return AZIOTCTL_EXIT_FAILURE;
        }

        ServiceUser keyd = { "aziotks" }, certd = { "aziotcs" }, identityd = { "aziotid" },
                    tpmd = { "aziottpm" };
        if (lookup_user(&keyd) < 0 || lookup_user(&certd) < 0 || lookup_user(&identityd) < 0 ||
            lookup_user(&tpmd) < 0)
                return AZIOTCTL_EXIT_FAILURE;

        (void)gethostname(host, sizeof(host) - 1);
        SuperConfigInput in = {
                .default_hostname = host,
                .aziotid_uid = identityd.uid,
                .aziotcs_uid = certd.uid,
        };
        r = super_config_translate(root, &in, &out, error, sizeof(error));
        if (r < 0) {
                fprintf(stderr, "aziotctl: %s: %s\n", path, error);
                return AZIOTCTL_EXIT_FAILURE;
        }
        if (geteuid() != 0) {
                fprintf(stderr, "aziotctl: config apply must run as root: it writes files owned "
                                "by the service users\n");
                super_config_output_done(&out);
                return AZIOTCTL_EXIT_FAILURE;
        }

        r = write_outputs(&out, &keyd, &certd, &identityd, &tpmd);
        super_config_output_done(&out);
        if (r < 0)
                return AZIOTCTL_EXIT_FAILURE;

        printf("Azure IoT Identity Service has been configured successfully!\n");
        if (getenv("AZIOTCTL_ROOT")) {
                printf("AZIOTCTL_ROOT is set: the services were not restarted.\n");
                return AZIOTCTL_EXIT_OK;
        }
        if (!aziotctl_systemd_running()) {
                printf("systemd is not running on this machine: restart aziot-keyd, aziot-certd, "
                       "aziot-identityd and aziot-tpmd with your service manager for the new "
                       "configuration to take effect.\n");
                return AZIOTCTL_EXIT_OK;
        }
        return aziotctl_system_restart() < 0 ? AZIOTCTL_EXIT_FAILURE : AZIOTCTL_EXIT_OK;
}

int aziotctl_config(int argc, char **argv)
{
        int r;

        r = aziotctl_handle_help(argc, argv, help);
        if (r >= 0)
                return r;
        if (streq(argv[1], "mp"))
                return config_mp(argc - 1, argv + 1);
        if (streq(argv[1], "apply"))
                return config_apply(argc - 1, argv + 1);
        return aziotctl_usage_error("config", "unknown subcommand '%s'", argv[1]);
}
