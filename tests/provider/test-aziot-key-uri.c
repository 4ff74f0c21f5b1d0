/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "aziot-key.h"
#include "macro.h"

static void assert_parses(const char *uri, AziotKeyUriKind kind, const char *value)
{
        _cleanup_free_ char *got = NULL;
        AziotKeyUriKind got_kind = -1;
        const char *problem = NULL;

        assert_int_equal(aziot_key_uri_parse(uri, &got_kind, &got, &problem), 0);
        assert_int_equal(got_kind, kind);
        assert_string_equal(got, value);
        assert_null(problem);
}

static void assert_rejected(const char *uri, const char *problem_part)
{
        char *got = NULL;
        AziotKeyUriKind kind;
        const char *problem = NULL;

        assert_int_equal(aziot_key_uri_parse(uri, &kind, &got, &problem), -EINVAL);
        assert_null(got);
        assert_non_null(problem);
        assert_non_null(strstr(problem, problem_part));
}

static void test_parse_pair(void **state)
{
        assert_parses("aziot-key:pair/device-id", AZIOT_KEY_URI_PAIR, "device-id");
        assert_parses("AZIOT-KEY:pair/device-id", AZIOT_KEY_URI_PAIR, "device-id");
        assert_parses("aziot-key:pair/aziot_identityd_master_id", AZIOT_KEY_URI_PAIR,
                      "aziot_identityd_master_id");
        assert_parses("aziot-key:pair/a%20b%3Fc%23d%25e", AZIOT_KEY_URI_PAIR, "a b?c#d%e");
        assert_parses("aziot-key:pair/with/slash:and@at", AZIOT_KEY_URI_PAIR, "with/slash:and@at");
        assert_parses("aziot-key:pair/%C3%A9t%c3%a9", AZIOT_KEY_URI_PAIR, "\xc3\xa9t\xc3\xa9");
}

static void test_parse_handle(void **state)
{
        /* Handles are base64 with "=", "&", "+" and "/": none needs escaping. */
        assert_parses("aziot-key:handle/sr=eyJrZXkiOjF9&sig=ab+c/d==", AZIOT_KEY_URI_HANDLE,
                      "sr=eyJrZXkiOjF9&sig=ab+c/d==");
        assert_parses("aziot-key:handle/sr%3Dx%26sig%3Dy", AZIOT_KEY_URI_HANDLE, "sr=x&sig=y");
}

static void test_parse_bad(void **state)
{
        assert_rejected("file:/etc/passwd", "not an aziot-key: URI");
        assert_rejected("aziot-key", "not an aziot-key: URI");
        assert_rejected("aziot-keys:pair/x", "not an aziot-key: URI");
        assert_rejected("aziot-key:", "expected aziot-key:pair/");
        assert_rejected("aziot-key:pair", "expected aziot-key:pair/");
        assert_rejected("aziot-key:Pair/x", "expected aziot-key:pair/");
        assert_rejected("aziot-key:key/x", "expected aziot-key:pair/");
        assert_rejected("aziot-key://pair/x", "expected aziot-key:pair/");
        assert_rejected("aziot-key:pair/", "empty key pair id");
        assert_rejected("aziot-key:handle/", "empty key handle");
        assert_rejected("aziot-key:pair/a b", "must be percent-encoded");
        assert_rejected("aziot-key:pair/a?b", "must be percent-encoded");
        assert_rejected("aziot-key:pair/a#b", "must be percent-encoded");
        assert_rejected("aziot-key:pair/\xc3\xa9", "must be percent-encoded");
        assert_rejected("aziot-key:pair/a\tb", "must be percent-encoded");
        assert_rejected("aziot-key:pair/a%2", "two hexadecimal digits");
        assert_rejected("aziot-key:pair/a%zz", "two hexadecimal digits");
        assert_rejected("aziot-key:pair/a%", "two hexadecimal digits");
        assert_rejected("aziot-key:pair/a%00b", "NUL");
}

static void test_format(void **state)
{
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;

        assert_int_equal(aziot_key_uri_format(AZIOT_KEY_URI_PAIR, "device-id_1.x~", &a), 0);
        assert_string_equal(a, "aziot-key:pair/device-id_1.x~");
        assert_int_equal(aziot_key_uri_format(AZIOT_KEY_URI_PAIR, "a b/c%\xc3\xa9", &b), 0);
        assert_string_equal(b, "aziot-key:pair/a%20b%2Fc%25%C3%A9");
        assert_int_equal(aziot_key_uri_format(AZIOT_KEY_URI_HANDLE, "sr=x&sig=y", &c), 0);
        assert_string_equal(c, "aziot-key:handle/sr%3Dx%26sig%3Dy");
        assert_int_equal(aziot_key_uri_format(AZIOT_KEY_URI_PAIR, "", &a), -EINVAL);
        assert_int_equal(aziot_key_uri_format(AZIOT_KEY_URI_PAIR, NULL, &a), -EINVAL);
}

static void test_round_trip(void **state)
{
        char value[256];

        /* Every byte but NUL, in one id. */
        for (int i = 1; i < 256; i++)
                value[i - 1] = (char)i;
        value[255] = '\0';
        for (int kind = AZIOT_KEY_URI_PAIR; kind <= AZIOT_KEY_URI_HANDLE; kind++) {
                _cleanup_free_ char *uri = NULL, *back = NULL;
                AziotKeyUriKind back_kind;

                assert_int_equal(aziot_key_uri_format(kind, value, &uri), 0);
                assert_int_equal(aziot_key_uri_parse(uri, &back_kind, &back, NULL), 0);
                assert_int_equal(back_kind, kind);
                assert_string_equal(back, value);
        }
}

static void test_reason_strings(void **state)
{
        assert_null(aziot_key_reason_to_string(0));
        assert_null(aziot_key_reason_to_string(AZIOT_KEY_R_INTERNAL + 1));
        for (int r = AZIOT_KEY_R_KEYD_UNREACHABLE; r <= AZIOT_KEY_R_INTERNAL; r++)
                assert_non_null(aziot_key_reason_to_string(r));
        assert_string_equal(aziot_key_reason_to_string(AZIOT_KEY_R_KEYD_UNREACHABLE),
                            "keyd is not reachable");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_pair), cmocka_unit_test(test_parse_handle),
                cmocka_unit_test(test_parse_bad),  cmocka_unit_test(test_format),
                cmocka_unit_test(test_round_trip), cmocka_unit_test(test_reason_strings),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
