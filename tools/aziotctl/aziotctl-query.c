/* SPDX-License-Identifier: MIT */
/* keys list, certs list|show, identity show, modules list: what the services hold, read over the
 * system bus. Key handles are bearer credentials and are never printed. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-bus.h>

#include "aziotctl-util.h"
#include "aziotctl.h"
#include "config.h"
#include "macro.h"
#include "openssl-util.h"

#define KEYS_NAME "org.aziot.Keys1"
#define KEYS_PATH "/org/aziot/Keys1"
#define CERTS_NAME "org.aziot.Certificates1"
#define CERTS_PATH "/org/aziot/Certificates1"
#define IDENTITY_NAME "org.aziot.Identity1"
#define IDENTITY_PATH "/org/aziot/Identity1"

typedef struct QueryArgs {
        CtlOutput output;
        bool pem;
        const char *subcommand;
        const char *id;
} QueryArgs;

static int usage_failure(const char *usage)
{
        fprintf(stderr, "%s", usage);
        return AZIOTCTL_EXIT_USAGE;
}

/* argv[0] is the command; then SUBCOMMAND [ID] and the options. only: the one subcommand the
 * command has, which takes no ID (NULL: the caller checks). Returns an exit code, or -1 to go
 * on. */
static int parse_args(int argc, char **argv, const char *usage, const char *only, bool allow_pem,
                      QueryArgs *a)
{
        static const struct option options[] = {
                {"help", no_argument, NULL, 'h'},
                {"output", required_argument, NULL, 'o'},
                {"pem", no_argument, NULL, 'p'},
                {},
        };
        int c;

        *a = (QueryArgs){};
        optind = 0;
        while ((c = getopt_long(argc, argv, "ho:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        printf("%s", usage);
                        return AZIOTCTL_EXIT_OK;
                case 'o':
                        if (ctl_parse_output(optarg, /* stream_ok= */ false, &a->output) < 0)
                                return AZIOTCTL_EXIT_USAGE;
                        break;
                case 'p':
                        if (!allow_pem)
                                return usage_failure(usage);
                        a->pem = true;
                        break;
                default:
                        return usage_failure(usage);
                }
        if (optind < argc)
                a->subcommand = argv[optind++];
        if (optind < argc)
                a->id = argv[optind++];
        if (optind < argc || !a->subcommand || (only && (!streq(a->subcommand, only) || a->id)))
                return usage_failure(usage);
        return -1;
}

static int call_simple(sd_bus *bus, const char *dest, const char *path, const char *iface,
                       const char *method, sd_bus_error *error, sd_bus_message **reply,
                       const char *id)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, dest, path, iface, method);
        if (r < 0)
                return r;
        if (id) {
                r = sd_bus_message_append(m, "s", id);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return r;
        return sd_bus_call(bus, m, 0, error, reply);
}

/* ---- keys ---- */

static const char *keys_usage = "Usage: aziotctl keys list [-o|--output text|json]\n"
                                "\n"
                                "Lists the preloaded keys of the Keys service's configuration and "
                                "whether the caller may load them\n"
                                "(org.aziot.Keys1 has no listing method: keys it creates on demand "
                                "are not listed).\n";

static const char *key_status(sd_bus *bus, const char *id, const char **ret_type)
{
        static const char *const methods[] = {"LoadKeyPair", "LoadKey"};
        static const char *const types[] = {"key pair", "key"};
        const char *status = "not found";

        *ret_type = "unknown";
        if (!bus)
                return "keyd not reachable";
        for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                int r;

                r = call_simple(bus, KEYS_NAME, KEYS_PATH, KEYS_NAME, methods[i], &error, &reply,
                                id);
                if (r >= 0) {
                        *ret_type = types[i];
                        return "available";
                }
                if (ctl_bus_error_is_denied(&error))
                        return "access denied";
                if (!error.name || !endswith(error.name, ".NotFound"))
                        status = "error";
        }
        return status;
}

int aziotctl_keys(int argc, char **argv)
{
        _cleanup_free_ char *main_path = NULL, *dir = NULL;
        _cleanup_toml_ TomlValue *root = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        ConfigError e = {};
        const TomlValue *preloaded = NULL;
        char buf[512];
        QueryArgs a;
        bool first = true;
        int r;

        r = parse_args(argc, argv, keys_usage, "list", /* allow_pem= */ false, &a);
        if (r >= 0)
                return r;
        r = ctl_config_paths("keyd", &main_path, &dir);
        if (r < 0)
                return AZIOTCTL_EXIT_FAILURE;
        r = config_load_files(main_path, dir, &root, &e);
        if (r < 0) {
                fprintf(stderr, "aziotctl: keyd configuration: %s\n",
                        config_error_format(&e, buf, sizeof(buf)));
                config_error_done(&e);
                return AZIOTCTL_EXIT_FAILURE;
        }
        (void)config_get_table(root, "preloaded_keys", &preloaded, NULL);
        if (sd_bus_open_system(&bus) < 0)
                bus = NULL;

        if (a.output == CTL_OUTPUT_JSON)
                fputs("[", stdout);
        else
                printf("%-32s %-9s %-18s %s\n", "ID", "TYPE", "STATUS", "LOCATION");
        if (preloaded)
                toml_table_foreach (entry, preloaded) {
                        const char *uri = entry->value->type == TOML_STRING
                                                  ? entry->value->string.data
                                                  : "(not a string)";
                        const char *type, *status = key_status(bus, entry->key, &type);

                        if (a.output == CTL_OUTPUT_JSON) {
                                fputs(first ? "\n  {\"id\": " : ",\n  {\"id\": ", stdout);
                                json_write_string(stdout, entry->key);
                                fputs(", \"type\": ", stdout);
                                json_write_string(stdout, type);
                                fputs(", \"status\": ", stdout);
                                json_write_string(stdout, status);
                                fputs(", \"location\": ", stdout);
                                json_write_string(stdout, uri);
                                fputs("}", stdout);
                        } else
                                printf("%-32s %-9s %-18s %s\n", entry->key, type, status, uri);
                        first = false;
                }
        if (a.output == CTL_OUTPUT_JSON)
                fputs(first ? "]\n" : "\n]\n", stdout);
        return AZIOTCTL_EXIT_OK;
}

/* ---- certs ---- */

static const char *certs_usage = "Usage: aziotctl certs list [-o|--output text|json]\n"
                                 "       aziotctl certs show ID [-o|--output text|json] [--pem]\n"
                                 "\n"
                                 "Lists or shows the certificates of the Certificates service.\n";

static int get_certificate(sd_bus *bus, const char *id, char **ret_pem)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *pem;
        char what[128];
        int r;

        r = call_simple(bus, CERTS_NAME, CERTS_PATH, CERTS_NAME, "GetCertificate", &error, &reply,
                        id);
        if (r >= 0)
                r = sd_bus_message_read(reply, "s", &pem);
        if (r < 0) {
                snprintf(what, sizeof(what), "certificate %s", id);
                ctl_bus_error(what, &error, r);
                return r;
        }
        *ret_pem = strdup(pem);
        return *ret_pem ? 0 : -ENOMEM;
}

static void print_cert_json(const char *id, const CertInfo *ci, const char *pem)
{
        char nb[40], na[40];

        fputs("{\"id\": ", stdout);
        json_write_string(stdout, id);
        if (ci) {
                fputs(", \"subject\": ", stdout);
                json_write_string(stdout, ci->subject);
                fputs(", \"issuer\": ", stdout);
                json_write_string(stdout, ci->issuer);
                fputs(", \"serial\": ", stdout);
                json_write_string(stdout, ci->serial);
                printf(", \"not_before\": \"%s\", \"not_after\": \"%s\"",
                       format_time(ci->not_before, nb, sizeof(nb)),
                       format_time(ci->not_after, na, sizeof(na)));
                fputs(", \"fingerprint_sha256\": ", stdout);
                json_write_string(stdout, ci->fingerprint);
        }
        if (pem) {
                fputs(", \"pem\": ", stdout);
                json_write_string(stdout, pem);
        }
        fputs("}", stdout);
}

static int certs_show(sd_bus *bus, const QueryArgs *a)
{
        _cleanup_free_ char *pem = NULL;
        _cleanup_(X509_freep) X509 *x = NULL;
        CertInfo ci;
        char nb[40], na[40];

        if (get_certificate(bus, a->id, &pem) < 0)
                return AZIOTCTL_EXIT_FAILURE;
        if (a->pem && a->output == CTL_OUTPUT_TEXT) {
                fputs(pem, stdout);
                return AZIOTCTL_EXIT_OK;
        }
        x = cert_from_pem(pem, strlen(pem));
        if (!x || cert_info(x, &ci) < 0) {
                fprintf(stderr, "aziotctl: certificate %s: not a valid PEM certificate\n", a->id);
                return AZIOTCTL_EXIT_FAILURE;
        }
        if (a->output == CTL_OUTPUT_JSON) {
                print_cert_json(a->id, &ci, a->pem ? pem : NULL);
                fputs("\n", stdout);
                return AZIOTCTL_EXIT_OK;
        }
        printf("ID:           %s\n"
               "Subject:      %s\n"
               "Issuer:       %s\n"
               "Serial:       %s\n"
               "Not before:   %s\n"
               "Not after:    %s\n"
               "SHA-256:      %s\n",
               a->id, ci.subject, ci.issuer, ci.serial, format_time(ci.not_before, nb, sizeof(nb)),
               format_time(ci.not_after, na, sizeof(na)), ci.fingerprint);
        return AZIOTCTL_EXIT_OK;
}

static int certs_list(sd_bus *bus, const QueryArgs *a)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_strv_free_ char **ids = NULL;
        bool failed = false;
        int r;

        r = call_simple(bus, CERTS_NAME, CERTS_PATH, CERTS_NAME, "ListCertificates", &error, &reply,
                        NULL);
        if (r >= 0)
                r = sd_bus_message_read_strv(reply, &ids);
        if (r < 0)
                return ctl_bus_error("ListCertificates", &error, r);

        if (a->output == CTL_OUTPUT_JSON)
                fputs("[", stdout);
        else
                printf("%-32s %-20s %s\n", "ID", "NOT AFTER", "SUBJECT");
        for (size_t i = 0; ids && ids[i]; i++) {
                _cleanup_free_ char *pem = NULL;
                _cleanup_(X509_freep) X509 *x = NULL;
                CertInfo ci;
                bool ok;
                char na[40];

                if (get_certificate(bus, ids[i], &pem) < 0) {
                        failed = true;
                        continue;
                }
                x = cert_from_pem(pem, strlen(pem));
                ok = x && cert_info(x, &ci) >= 0;
                if (a->output == CTL_OUTPUT_JSON) {
                        fputs(i == 0 ? "\n  " : ",\n  ", stdout);
                        print_cert_json(ids[i], ok ? &ci : NULL, NULL);
                } else
                        printf("%-32s %-20s %s\n", ids[i],
                               ok ? format_time(ci.not_after, na, sizeof(na)) : "-",
                               ok ? ci.subject : "(not a valid certificate)");
        }
        if (a->output == CTL_OUTPUT_JSON)
                fputs(ids && ids[0] ? "\n]\n" : "]\n", stdout);
        return failed ? AZIOTCTL_EXIT_FAILURE : AZIOTCTL_EXIT_OK;
}

int aziotctl_certs(int argc, char **argv)
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        QueryArgs a;
        int r;

        r = parse_args(argc, argv, certs_usage, /* only= */ NULL, /* allow_pem= */ true, &a);
        if (r >= 0)
                return r;
        if (!((streq(a.subcommand, "list") && !a.id && !a.pem) ||
              (streq(a.subcommand, "show") && a.id)))
                return usage_failure(certs_usage);
        if (ctl_bus_open(&bus) < 0)
                return AZIOTCTL_EXIT_FAILURE;
        return streq(a.subcommand, "list") ? certs_list(bus, &a) : certs_show(bus, &a);
}

/* ---- identities ---- */

typedef struct Member {
        char *key, *value;
} Member;

static void members_free(Member *m, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(m[i].key);
                free(m[i].value);
        }
        free(m);
}

/* Reads an a{sv} into key/value pairs, keeping string members except the key handle. */
static int read_identity(sd_bus_message *m, Member **ret, size_t *ret_n)
{
        Member *members = NULL;
        size_t n = 0;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *contents, *value = NULL;
                Member *grown;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        break;
                r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        break;
                if (streq(contents, "s")) {
                        r = sd_bus_message_read(m, "v", "s", &value);
                        if (r < 0)
                                break;
                } else {
                        r = sd_bus_message_skip(m, "v");
                        if (r < 0)
                                break;
                }
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        break;
                if (!value || streq(key, "keyHandle") || streq(key, "privateKey"))
                        continue;
                grown = realloc(members, (n + 1) * sizeof(Member));
                if (!grown) {
                        r = -ENOMEM;
                        break;
                }
                members = grown;
                members[n].key = strdup(key);
                members[n].value = strdup(value);
                n++;
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r < 0) {
                members_free(members, n);
                return r;
        }
        *ret = members;
        *ret_n = n;
        return 0;
}

static void print_members_json(const Member *m, size_t n, const char *extra_key,
                               const char *extra_value)
{
        fputs("{", stdout);
        for (size_t i = 0; i < n; i++) {
                if (i > 0)
                        fputs(", ", stdout);
                json_write_string(stdout, m[i].key);
                fputs(": ", stdout);
                json_write_string(stdout, m[i].value);
        }
        if (extra_key) {
                fputs(n > 0 ? ", " : "", stdout);
                json_write_string(stdout, extra_key);
                fputs(": ", stdout);
                json_write_string(stdout, extra_value);
        }
        fputs("}", stdout);
}

static const char *identity_usage = "Usage: aziotctl identity show [-o|--output text|json]\n"
                                    "\n"
                                    "Shows the device identity and the provisioning state.\n";

int aziotctl_identity(int argc, char **argv)
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error state_error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *state = NULL;
        Member *members = NULL;
        size_t n = 0;
        QueryArgs a;
        int r;

        r = parse_args(argc, argv, identity_usage, "show", /* allow_pem= */ false, &a);
        if (r >= 0)
                return r;
        if (ctl_bus_open(&bus) < 0)
                return AZIOTCTL_EXIT_FAILURE;
        r = sd_bus_get_property_string(bus, IDENTITY_NAME, IDENTITY_PATH, IDENTITY_NAME,
                                       "ProvisioningState", &state_error, &state);
        if (r < 0)
                return ctl_bus_error("ProvisioningState", &state_error, r);

        r = call_simple(bus, IDENTITY_NAME, IDENTITY_PATH, IDENTITY_NAME, "GetDeviceIdentity",
                        &error, &reply, NULL);
        if (r >= 0)
                r = read_identity(reply, &members, &n);
        if (r < 0) {
                if (a.output == CTL_OUTPUT_JSON) {
                        print_members_json(NULL, 0, "provisioningState", state);
                        fputs("\n", stdout);
                } else
                        printf("Provisioning state: %s\n", state);
                return ctl_bus_error("device identity", &error, r);
        }
        if (a.output == CTL_OUTPUT_JSON) {
                print_members_json(members, n, "provisioningState", state);
                fputs("\n", stdout);
        } else {
                printf("Provisioning state: %s\n", state);
                for (size_t i = 0; i < n; i++)
                        printf("%s: %s\n", members[i].key, members[i].value);
        }
        members_free(members, n);
        return AZIOTCTL_EXIT_OK;
}

static const char *modules_usage = "Usage: aziotctl modules list [-o|--output text|json]\n"
                                   "\n"
                                   "Lists the device's module identities.\n";

static const char *member(const Member *m, size_t n, const char *key)
{
        for (size_t i = 0; i < n; i++)
                if (streq(m[i].key, key))
                        return m[i].value;
        return "";
}

int aziotctl_modules(int argc, char **argv)
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        size_t count = 0;
        QueryArgs a;
        int r;

        r = parse_args(argc, argv, modules_usage, "list", /* allow_pem= */ false, &a);
        if (r >= 0)
                return r;
        if (ctl_bus_open(&bus) < 0)
                return AZIOTCTL_EXIT_FAILURE;
        r = call_simple(bus, IDENTITY_NAME, IDENTITY_PATH, IDENTITY_NAME, "ListModuleIdentities",
                        &error, &reply, NULL);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', "a{sv}");
        if (r < 0)
                return ctl_bus_error("ListModuleIdentities", &error, r);

        if (a.output == CTL_OUTPUT_JSON)
                fputs("[", stdout);
        else
                printf("%-32s %-8s %-24s %s\n", "MODULE", "TYPE", "GENERATION", "DEVICE");
        for (;;) {
                Member *members = NULL;
                size_t n = 0;

                r = sd_bus_message_at_end(reply, false);
                if (r != 0)
                        break;
                r = read_identity(reply, &members, &n);
                if (r < 0)
                        break;
                if (a.output == CTL_OUTPUT_JSON) {
                        fputs(count == 0 ? "\n  " : ",\n  ", stdout);
                        print_members_json(members, n, NULL, NULL);
                } else
                        printf("%-32s %-8s %-24s %s\n", member(members, n, "moduleId"),
                               member(members, n, "type"), member(members, n, "genId"),
                               member(members, n, "deviceId"));
                members_free(members, n);
                count++;
        }
        if (r < 0) {
                fprintf(stderr, "aziotctl: ListModuleIdentities: bad reply: %s\n", strerror(-r));
                return AZIOTCTL_EXIT_FAILURE;
        }
        if (a.output == CTL_OUTPUT_JSON)
                fputs(count ? "\n]\n" : "]\n", stdout);
        return AZIOTCTL_EXIT_OK;
}
