/* SPDX-License-Identifier: MIT */
/* PKCS#11 URIs as keyd accepts them: what is taken, what is ignored, what is refused, and that the
 * PIN shows up neither in the display form nor in any error message. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "macro.h"
#include "pkcs11-uri.h"

/* Every URI with a PIN in this file uses this one, so that any leak is caught by a substring. */
#define PIN "S3cr3tPin"

static Pkcs11Uri *parse_ok(const char *text)
{
        _cleanup_free_ char *err = NULL;
        Pkcs11Uri *u = NULL;
        int r;

        r = pkcs11_uri_parse(text, &u, &err);
        if (r != 0)
                fail_msg("\"%s\": %d (%s)", text, r, strempty(err));
        assert_null(err);
        assert_non_null(u);
        return u;
}

static void expect_error(const char *text, const char *needle)
{
        _cleanup_free_ char *err = NULL;
        Pkcs11Uri *u = NULL;

        assert_int_equal(pkcs11_uri_parse(text, &u, &err), -EINVAL);
        assert_null(u);
        assert_non_null(err);
        if (!strstr(err, needle))
                fail_msg("\"%s\": message \"%s\" lacks \"%s\"", text, err, needle);
        if (strstr(err, "S3cr3t") || strstr(err, "3tPin"))
                fail_msg("\"%s\": message \"%s\" shows the PIN", text, err);
        /* The same failure without a message wanted. */
        assert_int_equal(pkcs11_uri_parse(text, &u, NULL), -EINVAL);
        assert_null(u);
}

static void expect_display(const Pkcs11Uri *u, const char *expected)
{
        _cleanup_free_ char *s = pkcs11_uri_to_display(u);

        assert_non_null(s);
        assert_string_equal(s, expected);
}

/* ---- accepted ---- */

static void test_token_only(void **state)
{
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *u = parse_ok("pkcs11:token=Key%20Store");

        assert_string_equal(u->token, "Key Store");
        assert_null(u->object);
        assert_null(u->pin);
        assert_false(u->has_slot_id);
        assert_false(pkcs11_uri_uses_slot_id(u));
}

static void test_slot_id_only(void **state)
{
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *u = parse_ok("pkcs11:slot-id=0");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *v = parse_ok("pkcs11:slot-id=2053753261");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *w = NULL;
        char max[64];

        assert_true(u->has_slot_id);
        assert_true(pkcs11_uri_uses_slot_id(u));
        assert_int_equal(u->slot_id, 0);
        assert_null(u->token);
        assert_int_equal(v->slot_id, 2053753261ul);

        /* The largest CK_SLOT_ID; one more is out of range (ULONG_MAX ends in 5 on any ABI). */
        snprintf(max, sizeof(max), "pkcs11:slot-id=%lu", ULONG_MAX);
        w = parse_ok(max);
        assert_true(w->slot_id == ULONG_MAX);
        max[strlen(max) - 1]++;
        expect_error(max, "is out of range");
}

static void test_slot_id_wins_over_token(void **state)
{
        const char *uris[] = {
                "pkcs11:token=tok;slot-id=7;object=key",
                "pkcs11:slot-id=7;object=key;token=tok",
                "pkcs11:object=key;slot-id=7;token=tok",
        };

        for (size_t i = 0; i < ELEMENTSOF(uris); i++) {
                _cleanup_(pkcs11_uri_freep) Pkcs11Uri *u = parse_ok(uris[i]);

                assert_true(pkcs11_uri_uses_slot_id(u));
                assert_int_equal(u->slot_id, 7);
                assert_string_equal(u->token, "tok"); /* kept, though not used */
                assert_string_equal(u->object, "key");
        }
}

static void test_percent_decoding(void **state)
{
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *u = parse_ok("pkcs11:token=t;object=local%2Dca");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *v =
                parse_ok("pkcs11:token=%E2%82%AC;object=%e2%82%ac");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *w =
                parse_ok("pkcs11:token=a%3Bb%3Fc;object=local-ca");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *x = parse_ok("pkcs11:slot-id=%31%32");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *y = parse_ok("pkcs11:token=%FF%01");

        assert_string_equal(u->object, "local-ca");
        assert_string_equal(v->token, "\xe2\x82\xac");
        assert_string_equal(v->object, "\xe2\x82\xac");
        assert_string_equal(w->token, "a;b?c");
        assert_string_equal(w->object, "local-ca");
        assert_int_equal(x->slot_id, 12);
        assert_string_equal(y->token, "\xff\x01"); /* any byte but NUL */
}

static void test_pin_in_query(void **state)
{
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *u =
                parse_ok("pkcs11:token=t;object=o?module-path=/usr/lib/softhsm/libsofthsm2.so"
                         "&pin-value=S3cr3t%26Pin&pin-source=file:/etc/pin&module-name=softhsm2");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *v = parse_ok("pkcs11:slot-id=1?pin-value=");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *w = parse_ok("pkcs11:token=t?pin-value=a?b=c;d");

        assert_string_equal(u->pin, "S3cr3t&Pin");
        assert_string_equal(u->token, "t");
        assert_string_equal(u->object, "o");
        assert_string_equal(v->pin, ""); /* an empty PIN is still a PIN */
        assert_string_equal(w->pin, "a?b=c;d");
        assert_string_equal(w->token, "t");
}

static void test_ignored_attributes(void **state)
{
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *u = parse_ok(
                "pkcs11:manufacturer=SoftHSM%20project;model=SoftHSM%20v2;serial=%zz;token=t;"
                "type=private;id=%01%02;library-version=2.6;library-manufacturer=x;pin-value=p");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *v =
                parse_ok("pkcs11:slot-id=1?module-path=/x&token=other&object=o");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *w = parse_ok("pkcs11:token=t;");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *x = parse_ok("pkcs11:token=t?");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *y = parse_ok("pkcs11:token=t?&&module-path=/x&");

        assert_string_equal(u->token, "t");
        assert_null(u->object);
        assert_null(u->pin); /* pin-value is a query attribute; in the path it means nothing */
        assert_false(u->has_slot_id);
        /* Path attributes in the query are not path attributes. */
        assert_null(v->token);
        assert_null(v->object);
        assert_null(v->pin);
        assert_string_equal(w->token, "t");
        assert_string_equal(x->token, "t");
        assert_null(x->pin);
        assert_string_equal(y->token, "t");
}

static void test_is(void **state)
{
        assert_true(pkcs11_uri_is("pkcs11:"));
        assert_true(pkcs11_uri_is("pkcs11:token=t"));
        assert_false(pkcs11_uri_is("PKCS11:token=t"));
        assert_false(pkcs11_uri_is("pkcs11"));
        assert_false(pkcs11_uri_is("file:///var/lib/aziot/keyd/keys/a"));
        assert_false(pkcs11_uri_is(""));
        assert_false(pkcs11_uri_is(NULL));
}

/* ---- refused ---- */

static void test_bad_scheme(void **state)
{
        expect_error("kcs11:token=t?pin-value=" PIN, "does not start with \"pkcs11:\"");
        expect_error("PKCS11:token=t?pin-value=" PIN, "does not start with \"pkcs11:\"");
        expect_error(" pkcs11:token=t", "does not start with \"pkcs11:\"");
        expect_error("pkcs11", "does not start with \"pkcs11:\"");
        expect_error("", "does not start with \"pkcs11:\"");
}

static void test_neither_token_nor_slot(void **state)
{
        _cleanup_free_ char *err = NULL;
        Pkcs11Uri empty = {};
        Pkcs11Uri token = {.token = (char *)"t"};
        Pkcs11Uri slot = {.has_slot_id = true};

        expect_error("pkcs11:", "neither a token nor a slot-id");
        expect_error("pkcs11:?pin-value=" PIN, "neither a token nor a slot-id");
        expect_error("pkcs11:object=o;model=m", "neither a token nor a slot-id");
        expect_error("pkcs11:object=o?token=t&slot-id=1", "neither a token nor a slot-id");

        assert_int_equal(pkcs11_uri_check_slot(&empty, &err), -EINVAL);
        assert_string_equal(err, "the URI names neither a token nor a slot-id");
        assert_int_equal(pkcs11_uri_check_slot(&empty, NULL), -EINVAL);
        assert_int_equal(pkcs11_uri_check_slot(&token, NULL), 0);
        assert_int_equal(pkcs11_uri_check_slot(&slot, NULL), 0);
}

static void test_bad_percent_encoding(void **state)
{
        const char *bad[] = {"%G1", "%4", "%", "%4G", "a%", "%%41", "%-1"};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char uri[128];

                snprintf(uri, sizeof(uri), "pkcs11:token=%s", bad[i]);
                expect_error(uri, "invalid percent-encoding in attribute \"token\"");
                snprintf(uri, sizeof(uri), "pkcs11:token=t;object=%s", bad[i]);
                expect_error(uri, "invalid percent-encoding in attribute \"object\"");
                snprintf(uri, sizeof(uri), "pkcs11:slot-id=1%s", bad[i]);
                expect_error(uri, "invalid percent-encoding in attribute \"slot-id\"");
                snprintf(uri, sizeof(uri), "pkcs11:token=t?pin-value=" PIN "%s", bad[i]);
                expect_error(uri, "invalid percent-encoding in attribute \"pin-value\"");
        }
}

static void test_nul_byte(void **state)
{
        expect_error("pkcs11:token=a%00b", "attribute \"token\" contains a NUL byte");
        expect_error("pkcs11:token=t;object=%00", "attribute \"object\" contains a NUL byte");
        expect_error("pkcs11:slot-id=1%00", "attribute \"slot-id\" contains a NUL byte");
        expect_error("pkcs11:token=t?pin-value=S3cr3t%00Pin",
                     "attribute \"pin-value\" contains a NUL byte");
}

static void test_bad_slot_id(void **state)
{
        expect_error("pkcs11:slot-id=12x", "slot-id \"12x\" is not a number");
        expect_error("pkcs11:slot-id=-1", "slot-id \"-1\" is not a number");
        expect_error("pkcs11:slot-id=+1", "slot-id \"+1\" is not a number");
        expect_error("pkcs11:slot-id=%201", "slot-id \"%201\" is not a number");
        expect_error("pkcs11:slot-id= 1", "slot-id \" 1\" is not a number");
        expect_error("pkcs11:slot-id=1 ", "slot-id \"1 \" is not a number");
        expect_error("pkcs11:slot-id=0x10", "slot-id \"0x10\" is not a number");
        expect_error("pkcs11:slot-id=1.0", "slot-id \"1.0\" is not a number");
        expect_error("pkcs11:slot-id=99999999999999999999999999",
                     "slot-id \"99999999999999999999999999\" is out of range");
        expect_error("pkcs11:slot-id=;token=t", "attribute \"slot-id\" is empty");
        /* The message stays one line of ASCII and quotes at most 64 bytes. */
        expect_error("pkcs11:slot-id=1\n\"\\\xc3\xa9", "slot-id \"1%0A%22%5C%C3%A9\" is not");
        expect_error("pkcs11:slot-id=x"
                     "123456789012345678901234567890123456789012345678901234567890123Z",
                     "\"x123456789012345678901234567890123456789012345678901234567890123...\"");
}

static void test_duplicates(void **state)
{
        expect_error("pkcs11:token=a;token=a", "attribute \"token\" given twice");
        expect_error("pkcs11:token=a;object=o;object=p", "attribute \"object\" given twice");
        expect_error("pkcs11:slot-id=1;token=a;slot-id=1", "attribute \"slot-id\" given twice");
        expect_error("pkcs11:token=a?pin-value=" PIN "&pin-value=" PIN,
                     "attribute \"pin-value\" given twice");
}

static void test_attribute_without_equals(void **state)
{
        expect_error("pkcs11:token", "attribute without \"=\": \"token\"");
        expect_error("pkcs11:foo;token=t", "attribute without \"=\": \"foo\"");
        expect_error("pkcs11:token=t;object", "attribute without \"=\": \"object\"");
        /* In the query it may be the rest of a PIN with an unescaped "&": never quoted. */
        expect_error("pkcs11:token=t?pin-value=abc&" PIN, "query attribute without \"=\"");
        expect_error("pkcs11:token=t?" PIN, "query attribute without \"=\"");
}

static void test_empty_labels(void **state)
{
        expect_error("pkcs11:token=", "attribute \"token\" is empty");
        expect_error("pkcs11:slot-id=1;token=", "attribute \"token\" is empty");
        expect_error("pkcs11:token=t;object=", "attribute \"object\" is empty");
}

static void test_errors_never_show_the_pin(void **state)
{
        /* expect_error() fails on any message holding the PIN; here, URIs bad everywhere else. */
        expect_error("pkcs11:slot-id=12x?pin-value=" PIN, "slot-id \"12x\" is not a number");
        expect_error("pkcs11:object=o?pin-value=" PIN, "neither a token nor a slot-id");
        expect_error("pkcs11:token=t?pin-value=" PIN "%", "attribute \"pin-value\"");
        expect_error("pkcs11:token=t?pin-value=" PIN "&pin-value=x", "given twice");
        expect_error("xpkcs11:token=t?pin-value=" PIN, "does not start");
}

/* ---- display and derived URIs ---- */

static void test_display(void **state)
{
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *u =
                parse_ok("pkcs11:object=local-ca;token=My%20Token;slot-id=3?pin-value=" PIN);
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *v =
                parse_ok("pkcs11:token=%E2%82%AC_x.y~z;object=a%3Bb%3Dc%25");
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *w = parse_ok("pkcs11:token=Token1?pin-value=" PIN);
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *back = NULL;
        _cleanup_free_ char *s = NULL;
        Pkcs11Uri nothing = {};

        expect_display(u, "pkcs11:slot-id=3;token=My%20Token;object=local%2Dca");
        expect_display(v, "pkcs11:token=%E2%82%AC%5Fx%2Ey%7Ez;object=a%3Bb%3Dc%25");
        expect_display(w, "pkcs11:token=Token1");
        expect_display(&nothing, "pkcs11:");

        /* The display form parses back to the same URI, but for the PIN. */
        s = pkcs11_uri_to_display(v);
        assert_non_null(s);
        back = parse_ok(s);
        assert_string_equal(back->token, v->token);
        assert_string_equal(back->object, v->object);
        assert_null(back->pin);
}

static void test_with_object(void **state)
{
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *u =
                parse_ok("pkcs11:token=tok;slot-id=4;object=base?pin-value=" PIN);
        _cleanup_(pkcs11_uri_freep) Pkcs11Uri *a = NULL, *b = NULL, *c = NULL;

        a = pkcs11_uri_with_object(u, "device-id");
        assert_non_null(a);
        assert_string_equal(a->object, "device-id");
        assert_string_equal(a->token, "tok");
        assert_true(a->has_slot_id);
        assert_int_equal(a->slot_id, 4);
        assert_string_equal(a->pin, PIN);
        assert_ptr_not_equal(a->pin, u->pin); /* a copy, wiped and freed on its own */
        assert_string_equal(u->object, "base");
        expect_display(a, "pkcs11:slot-id=4;token=tok;object=device%2Did");

        b = pkcs11_uri_with_object(u, NULL);
        assert_non_null(b);
        assert_null(b->object);
        assert_string_equal(b->pin, PIN);
        expect_display(b, "pkcs11:slot-id=4;token=tok");

        c = pkcs11_uri_with_object(b, "k");
        assert_non_null(c);
        expect_display(c, "pkcs11:slot-id=4;token=tok;object=k");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_token_only),
                cmocka_unit_test(test_slot_id_only),
                cmocka_unit_test(test_slot_id_wins_over_token),
                cmocka_unit_test(test_percent_decoding),
                cmocka_unit_test(test_pin_in_query),
                cmocka_unit_test(test_ignored_attributes),
                cmocka_unit_test(test_is),
                cmocka_unit_test(test_bad_scheme),
                cmocka_unit_test(test_neither_token_nor_slot),
                cmocka_unit_test(test_bad_percent_encoding),
                cmocka_unit_test(test_nul_byte),
                cmocka_unit_test(test_bad_slot_id),
                cmocka_unit_test(test_duplicates),
                cmocka_unit_test(test_attribute_without_equals),
                cmocka_unit_test(test_empty_labels),
                cmocka_unit_test(test_errors_never_show_the_pin),
                cmocka_unit_test(test_display),
                cmocka_unit_test(test_with_object),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
