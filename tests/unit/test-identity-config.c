/* SPDX-License-Identifier: MIT */
/* identityd's configuration and its authorization table (spec §4.5, §4.6, §4.12), from TOML texts
 * written as upstream's aziotctl writes them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "identity-config.h"
#include "macro.h"

#define HEAD "hostname = \"my-device\"\nhomedir = \"/var/lib/aziot/identityd\"\n"

static int parse(const char *text, IdentityConfig *c, ConfigError *err)
{
        _cleanup_toml_ TomlValue *root = NULL;
        TomlError terr = {};

        *err = (ConfigError){};
        assert_int_equal(toml_parse(text, strlen(text), &root, &terr), 0);
        return identity_config_parse(root, c, err);
}

static void assert_refused(const char *text, const char *words)
{
        IdentityConfig c = {};
        ConfigError err = {};

        assert_true(parse(text, &c, &err) < 0);
        if (!strstr(err.message, words))
                fail_msg("\"%s\" does not say \"%s\"", err.message, words);
        config_error_done(&err);
}

static void test_manual_sas(void **state)
{
        _cleanup_(identity_config_done) IdentityConfig c = {};
        ConfigError err;

        assert_int_equal(parse(HEAD "[provisioning]\nsource = \"manual\"\n"
                                    "iothub_hostname = \"hub.azure-devices.net\"\n"
                                    "device_id = \"dev1\"\n"
                                    "[provisioning.authentication]\nmethod = \"sas\"\n"
                                    "device_id_pk = \"device-id\"\n",
                               &c, &err),
                         0);
        assert_string_equal(c.hostname, "my-device");
        assert_int_equal(c.cloud_timeout_sec, 70);
        assert_int_equal(c.cloud_retries, 1);
        assert_false(c.prefer_module_identity_cache);
        assert_int_equal(c.provisioning.source, IDENTITY_SOURCE_MANUAL);
        assert_int_equal(c.provisioning.auth, IDENTITY_AUTH_SAS);
        assert_string_equal(c.provisioning.iothub_hostname, "hub.azure-devices.net");
        assert_string_equal(c.provisioning.device_id, "dev1");
        assert_string_equal(c.provisioning.symmetric_key, "device-id");
        assert_null(c.provisioning.local_gateway_hostname);
}

static void test_manual_x509_subject(void **state)
{
        _cleanup_(identity_config_done) IdentityConfig c = {};
        ConfigError err;
        char buf[256];

        assert_int_equal(parse(HEAD "[provisioning]\nsource = \"manual\"\n"
                                    "iothub_hostname = \"hub\"\ndevice_id = \"dev1\"\n"
                                    "local_gateway_hostname = \"parent\"\n"
                                    "[provisioning.authentication]\nmethod = \"x509\"\n"
                                    "identity_cert = \"device-id\"\nidentity_pk = \"device-id\"\n"
                                    "csr_subject = { ST = \"Antarctica\", L = \"AQ\", CN = \"x\" }\n",
                               &c, &err),
                         0);
        assert_int_equal(c.provisioning.auth, IDENTITY_AUTH_X509);
        assert_string_equal(c.provisioning.local_gateway_hostname, "parent");
        /* Sorted by name, as upstream's map: CN, L, ST. */
        X509_NAME_oneline(c.provisioning.csr_subject, buf, sizeof(buf));
        assert_string_equal(buf, "/CN=x/L=AQ/ST=Antarctica");
}

static void test_dps_variants(void **state)
{
        _cleanup_(identity_config_done) IdentityConfig a = {}, b = {}, t = {};
        ConfigError err;
        char buf[256];

        assert_int_equal(parse(HEAD "[provisioning]\nsource = \"dps\"\n"
                                    "global_endpoint = \"https://global.azure-devices-"
                                    "provisioning.net/\"\nscope_id = \"0ab1234C5D6\"\n"
                                    "payload = { uri = \"file:///etc/aziot/payload.json\" }\n"
                                    "[provisioning.attestation]\nmethod = \"symmetric_key\"\n"
                                    "registration_id = \"dev1\"\nsymmetric_key = \"device-id\"\n",
                               &a, &err),
                         0);
        assert_int_equal(a.provisioning.source, IDENTITY_SOURCE_DPS);
        assert_string_equal(a.provisioning.global_endpoint,
                            "https://global.azure-devices-provisioning.net/");
        assert_int_equal(a.provisioning.auth, IDENTITY_AUTH_SYMMETRIC_KEY);
        assert_string_equal(a.provisioning.scope_id, "0ab1234C5D6");
        assert_string_equal(a.provisioning.payload_path, "/etc/aziot/payload.json");
        assert_string_equal(a.provisioning.registration_id, "dev1");
        assert_false(a.provisioning.group_enrollment);

        assert_int_equal(parse(HEAD "[provisioning]\nsource = \"dps\"\n"
                                    "global_endpoint = \"https://g/\"\nscope_id = \"s\"\n"
                                    "[provisioning.attestation]\nmethod = \"x509\"\n"
                                    "identity_cert = \"device-id\"\nidentity_pk = \"device-id\"\n"
                                    "registration_id = { CN = \"my-device\", L = \"AQ\" }\n"
                                    "[provisioning.attestation.identity_auto_renew]\n"
                                    "rotate_key = false\nthreshold = \"50%\"\nretry = \"10%\"\n",
                               &b, &err),
                         0);
        assert_int_equal(b.provisioning.auth, IDENTITY_AUTH_X509);
        assert_null(b.provisioning.registration_id);
        X509_NAME_oneline(b.provisioning.registration_name, buf, sizeof(buf));
        assert_string_equal(buf, "/CN=my-device/L=AQ");
        assert_true(b.provisioning.auto_renew);
        assert_false(b.provisioning.renewal.rotate_key);
        assert_int_equal(b.provisioning.renewal.threshold.value, 50);

        assert_int_equal(parse(HEAD "[provisioning]\nsource = \"dps\"\n"
                                    "global_endpoint = \"https://g/\"\nscope_id = \"s\"\n"
                                    "[provisioning.attestation]\nmethod = \"tpm\"\n"
                                    "registration_id = \"dev1\"\n",
                               &t, &err),
                         0);
        assert_int_equal(t.provisioning.auth, IDENTITY_AUTH_TPM);
}

static void test_endpoint_normalized(void **state)
{
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "https://g.example", "https://g.example/" },
                { "HTTPS://G.Example:443", "https://g.example/" },
                { "https://127.0.0.1:8443", "https://127.0.0.1:8443/" },
                { "https://g.example/path?x=Y", "https://g.example/path?x=Y" },
                { "http://g.example:80/", "http://g.example/" },
                { "https://[::1]:443", "https://[::1]/" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(identity_config_done) IdentityConfig c = {};
                _cleanup_free_ char *text = NULL;
                ConfigError err;

                assert_true(asprintf(&text,
                                     HEAD "[provisioning]\nsource = \"dps\"\n"
                                          "global_endpoint = \"%s\"\nscope_id = \"s\"\n"
                                          "[provisioning.attestation]\nmethod = \"tpm\"\n"
                                          "registration_id = \"r\"\n",
                                     cases[i].in) > 0);
                assert_int_equal(parse(text, &c, &err), 0);
                assert_string_equal(c.provisioning.global_endpoint, cases[i].out);
        }
}

static void test_refused(void **state)
{
        static const char none[] = "[provisioning]\nsource = \"none\"\n";

        assert_refused("homedir = \"/h\"\n[provisioning]\nsource = \"none\"\n", "hostname");
        assert_refused("hostname = \"h\"\nhomedir = \"rel\"\n[provisioning]\nsource = \"none\"\n",
                       "absolute");
        assert_refused(HEAD, "[provisioning]");
        assert_refused(HEAD "[provisioning]\nsource = \"cloud\"\n", "unknown provisioning source");
        assert_refused(HEAD "cloud_timeout_sec = 30\n[provisioning]\nsource = \"none\"\n",
                       "cloud_timeout_sec");
        assert_refused(HEAD "[provisioning]\nsource = \"manual\"\ndevice_id = \"d\"\n",
                       "iothub_hostname");
        assert_refused(HEAD "[provisioning]\nsource = \"manual\"\niothub_hostname = \"h\"\n"
                            "device_id = \"d\"\n[provisioning.authentication]\n"
                            "method = \"psk\"\n",
                       "unknown authentication method");
        assert_refused(HEAD "[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://g/\"\n"
                            "scope_id = \"s\"\n[provisioning.attestation]\n"
                            "method = \"symmetric_key\"\nregistration_id = \"r\"\n"
                            "symmetric_key = \"k\"\nenrollment = \"batch\"\n",
                       "enrollment must be");
        assert_refused(HEAD "[provisioning]\nsource = \"dps\"\nlocal_gateway_hostname = \"p\"\n"
                            "global_endpoint = \"https://g/\"\nscope_id = \"s\"\n",
                       "not supported in nested mode");
        assert_refused(HEAD "[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"g\"\n"
                            "scope_id = \"s\"\n",
                       "https://");
        assert_refused(HEAD "[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://g/\"\n"
                            "scope_id = \"s\"\npayload = { uri = \"http://x/p.json\" }\n"
                            "[provisioning.attestation]\nmethod = \"tpm\"\n"
                            "registration_id = \"r\"\n",
                       "file:///");
        assert_refused(HEAD "[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://g/\"\n"
                            "scope_id = \"s\"\n[provisioning.attestation]\nmethod = \"x509\"\n"
                            "identity_cert = \"c\"\nidentity_pk = \"k\"\n"
                            "[provisioning.attestation.identity_auto_renew]\n"
                            "threshold = \"0%\"\n",
                       "threshold");
        /* Principals. */
        assert_refused(HEAD "[[principal]]\nuid = 1000\nname = \"a\"\nidtype = [\"module\"]\n"
                            "[[principal]]\nuid = 1001\nname = \"a\"\nidtype = [\"module\"]\n"
                            "[provisioning]\nsource = \"manual\"\niothub_hostname = \"h\"\n"
                            "device_id = \"d\"\n[provisioning.authentication]\nmethod = \"sas\"\n"
                            "device_id_pk = \"k\"\n",
                       "used twice");
        assert_refused(HEAD "[[principal]]\nuid = 1000\nname = \"a\"\nidtype = [\"local\"]\n" "",
                       "[provisioning]");
        assert_refused(HEAD "[[principal]]\nuid = 1000\nname = \"a\"\nidtype = [\"local\"]\n"
                       "[provisioning]\nsource = \"none\"\n",
                       "[localid] domain");
        assert_refused(HEAD "[[principal]]\nuid = 1000\nname = \"a\"\nidtype = [\"module\"]\n"
                       "[provisioning]\nsource = \"none\"\n",
                       "other than \"none\"");
        assert_refused(HEAD "[[principal]]\nuid = 1000\nname = \"a\"\nidtype = [\"module\"]\n"
                            "localid = { type = \"x509\" }\n[provisioning]\nsource = \"none\"\n",
                       "need idtype \"local\"");
        assert_refused(HEAD "[[principal]]\nuid = 1000\nname = \"a\"\nidtype = [\"robot\"]\n"
                            "[provisioning]\nsource = \"none\"\n",
                       "unknown idtype");
        assert_refused(HEAD "[[principal]]\nuid = -1\nname = \"a\"\n" "[provisioning]\n"
                            "source = \"none\"\n",
                       "uid out of range");
        assert_refused(HEAD "[[principal]]\nuid = 5\n[provisioning]\nsource = \"none\"\n",
                       "\"name\"");
        (void)none;
}

static const char principals[] =
        HEAD "[localid]\ndomain = \"example.com\"\n"
             "[provisioning]\nsource = \"manual\"\niothub_hostname = \"h\"\ndevice_id = \"d\"\n"
             "[provisioning.authentication]\nmethod = \"sas\"\ndevice_id_pk = \"k\"\n"
             "[[principal]]\nuid = 1000\nname = \"edge\"\n"
             "[[principal]]\nuid = 1001\nname = \"second-daemon\"\n"
             "[[principal]]\nuid = 1002\nname = \"agent\"\nidtype = [\"module\"]\n"
             "[[principal]]\nuid = 1003\nname = \"watcher\"\nidtype = [\"device\"]\n"
             "[[principal]]\nuid = 1004\nname = \"old\"\nidtype = [\"module\"]\n"
             "[[principal]]\nuid = 1004\nname = \"new\"\nidtype = [\"local\"]\n"
             "localid = { type = \"x509\", attributes = \"server\" }\n";

static void test_classification_and_table(void **state)
{
        _cleanup_(identity_config_done) IdentityConfig c = {};
        ConfigError err;
        IdentityCaller k;
        _cleanup_free_ const char **modules = NULL;

        assert_int_equal(parse(principals, &c, &err), 0);
        /* The second principal without idtype is dropped; uid 1004's later entry wins. */
        assert_int_equal(c.n_principals, 4);
        assert_int_equal(identity_config_classify(&c, 1001).kind, IDENTITY_CALLER_UNKNOWN);
        k = identity_config_classify(&c, 1004);
        assert_string_equal(k.principal->name, "new");
        assert_true(k.principal->localid_server);

        k = identity_config_classify(&c, 0);
        assert_int_equal(k.kind, IDENTITY_CALLER_ROOT);
        for (IdentityOperation op = IDENTITY_OP_GET_DEVICE; op <= IDENTITY_OP_TRUST_BUNDLE; op++)
                assert_true(identity_caller_allowed(&k, op, "anything"));
        k = identity_config_classify(&c, 1000);
        assert_int_equal(k.kind, IDENTITY_CALLER_DAEMON);
        assert_true(identity_caller_allowed(&k, IDENTITY_OP_MANAGE, NULL));
        assert_true(identity_caller_allowed(&k, IDENTITY_OP_GET_DEVICE, NULL));

        k = identity_config_classify(&c, 1002);
        assert_int_equal(k.kind, IDENTITY_CALLER_HOST);
        assert_false(identity_caller_allowed(&k, IDENTITY_OP_GET_DEVICE, NULL));
        assert_true(identity_caller_allowed(&k, IDENTITY_OP_GET_MODULE, "agent"));
        assert_false(identity_caller_allowed(&k, IDENTITY_OP_GET_MODULE, "watcher"));
        assert_false(identity_caller_allowed(&k, IDENTITY_OP_MANAGE, NULL));
        assert_true(identity_caller_allowed(&k, IDENTITY_OP_TRUST_BUNDLE, NULL));

        k = identity_config_classify(&c, 1003);
        assert_true(identity_caller_allowed(&k, IDENTITY_OP_GET_DEVICE, NULL));
        assert_false(identity_caller_allowed(&k, IDENTITY_OP_GET_MODULE, "watcher"));

        k = identity_config_classify(&c, 1004);
        assert_true(identity_caller_allowed(&k, IDENTITY_OP_GET_MODULE, "new"));

        k = identity_config_classify(&c, 4242);
        assert_int_equal(k.kind, IDENTITY_CALLER_UNKNOWN);
        assert_false(identity_caller_allowed(&k, IDENTITY_OP_GET_DEVICE, NULL));
        assert_false(identity_caller_allowed(&k, IDENTITY_OP_GET_MODULE, "x"));
        assert_true(identity_caller_allowed(&k, IDENTITY_OP_TRUST_BUNDLE, NULL));

        assert_int_equal(identity_config_hub_modules(&c, &modules), 0);
        assert_string_equal(modules[0], "agent");
        assert_null(modules[1]);
        assert_non_null(identity_config_local_principal(&c, "new"));
        assert_null(identity_config_local_principal(&c, "agent"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_manual_sas),
                cmocka_unit_test(test_manual_x509_subject),
                cmocka_unit_test(test_dps_variants),
                cmocka_unit_test(test_endpoint_normalized),
                cmocka_unit_test(test_refused),
                cmocka_unit_test(test_classification_and_table),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
