/* SPDX-License-Identifier: MIT */
/* The expected texts were checked against serde_json (the decoder of upstream's services) where
 * its versions agree; see docs/design.md. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base64.h"
#include "json.h"
#include "macro.h"

/* The 422 text for text read as anything (IgnoredAny), or "ok". */
static char *validate(const char *text, size_t len)
{
        Buffer b = {};
        JsonError e;

        if (json_validate(text, len, &e) >= 0)
                return strdup("ok");
        json_error_append(&b, &e);
        return b.data;
}

static void check_validate(const char *text, const char *expected)
{
        char *got = validate(text, strlen(text));

        print_message("%s\n", text);
        assert_string_equal(got, expected);
        free(got);
}

static void test_syntax_errors(void **state)
{
        check_validate("", "EOF while parsing a value at line 1 column 0");
        check_validate("  ", "EOF while parsing a value at line 1 column 2");
        check_validate("x", "expected value at line 1 column 1");
        check_validate("nul", "EOF while parsing a value at line 1 column 3");
        check_validate("nulx", "expected ident at line 1 column 4");
        check_validate("-", "invalid number at line 1 column 1");
        check_validate("01", "invalid number at line 1 column 2");
        check_validate("1.", "invalid number at line 1 column 2");
        check_validate("1e400", "ok");
        check_validate("\"abc", "EOF while parsing a string at line 1 column 4");
        check_validate("\"a\\x\"", "invalid escape at line 1 column 4");
        check_validate("\"a\x01b\"",
                       "control character (\\u0000-\\u001F) found while parsing a string at line "
                       "1 column 2");
        check_validate("[1,]", "expected value at line 1 column 4");
        check_validate("[1 2]", "expected `,` or `]` at line 1 column 4");
        check_validate("{\"a\" 1}", "expected `:` at line 1 column 6");
        check_validate("{1:2}", "key must be a string at line 1 column 2");
        check_validate("{\"a\":1,}", "key must be a string at line 1 column 8");
        check_validate("{\"a\":1}x", "trailing characters at line 1 column 8");
        check_validate("\n\n  {\"a\":\n 1,\n}", "key must be a string at line 5 column 1");
        check_validate("[1]\n\nx", "trailing characters at line 3 column 1");
        check_validate("{\"a\":[1,{\"b\":null}]} ", "ok");
        check_validate("\"\\/\\b\\f\\n\\r\\t\\\"\\\\\\u00e9\"", "ok");
}

static void test_deep_nesting(void **state)
{
        size_t depth = 100000;
        char *text = malloc(2 * depth);

        assert_non_null(text);
        /* Skipped values have no depth limit (serde's IgnoredAny), and cost no stack. */
        char *got;

        memset(text, '[', depth);
        memset(text + depth, ']', depth);
        got = validate(text, 2 * depth);
        assert_string_equal(got, "ok");
        free(got);
        free(text);
}

static const JsonField create_fields[] = {
        { "keyId", JSON_FIELD_STRING },
        { "usage", JSON_FIELD_STRING },
        { "keyBytes", JSON_FIELD_BYTES, .optional = true },
};

/* Decodes text as create_fields; returns "ok" or the error text. */
static char *decode_create(const char *text, JsonFieldValue *values)
{
        Buffer b = {};
        JsonError e;
        unsigned line, column;

        memset(values, 0, 3 * sizeof(JsonFieldValue));
        if (json_decode_body(text, strlen(text), "struct Request", create_fields, 3, values, &e,
                             &line, &column) >= 0)
                return strdup("ok");
        json_error_append(&b, &e);
        return b.data;
}

static void check_create(const char *text, const char *expected)
{
        JsonFieldValue v[3];
        char *got = decode_create(text, v);

        print_message("%s\n", text);
        assert_string_equal(got, expected);
        json_field_values_done(create_fields, v, 3);
        free(got);
}

static void test_struct_errors(void **state)
{
        check_create("{}", "missing field `keyId` at line 1 column 2");
        check_create("{\"keyId\":\"a\"}", "missing field `usage` at line 1 column 13");
        check_create("{\"keyId\":1}",
                     "invalid type: integer `1`, expected a string at line 1 column 10");
        check_create("{\"keyId\":-3}",
                     "invalid type: integer `-3`, expected a string at line 1 column 11");
        check_create("{\"keyId\":1.5}",
                     "invalid type: floating point `1.5`, expected a string at line 1 column 12");
        check_create("{\"keyId\":true}",
                     "invalid type: boolean `true`, expected a string at line 1 column 13");
        check_create("{\"keyId\":null}",
                     "invalid type: null, expected a string at line 1 column 13");
        check_create("{\"keyId\":[1],\"usage\":\"x\"}",
                     "invalid type: sequence, expected a string at line 1 column 9");
        check_create("{\"keyId\":{},\"usage\":\"x\"}",
                     "invalid type: map, expected a string at line 1 column 9");
        check_create("\n{\n\"keyId\": 5\n}",
                     "invalid type: integer `5`, expected a string at line 3 column 10");
        check_create("{\"keyId\":\"a\",\"keyId\":\"b\",\"usage\":\"x\"}",
                     "duplicate field `keyId` at line 1 column 20");
        check_create("{\"keyId\":\"a\",\"usage\":\"s\",\"keyBytes\":1}",
                     "invalid type: integer `1`, expected a base64-encoded string at line 1 "
                     "column 37");
        check_create("{\"keyId\":\"a\",\"usage\":\"s\",\"keyBytes\":\"!\"}",
                     "Invalid byte 33, offset 0. at line 1 column 39");
        check_create("{\"keyId\":\"a\",\"usage\":\"s\"} x",
                     "trailing characters at line 1 column 27");
        check_create("{\"keyId\":\"a\",\"usage\":\"s\",}", "trailing comma at line 1 column 26");
        check_create("{\"keyId\":\"\\ud800\",\"usage\":\"s\"}",
                     "unexpected end of hex escape at line 1 column 17");
        check_create("{\"keyId\":\"\xff\",\"usage\":\"s\"}",
                     "invalid unicode code point at line 1 column 12");
        /* serde also reads a struct written as the list of its fields. */
        check_create("[]", "invalid length 0, expected struct Request with 3 elements at line 1 "
                           "column 2");
        check_create("[\"k\",\"sign\",null]", "ok");
        check_create("[\"k\",\"sign\"", "EOF while parsing a list at line 1 column 11");
        check_create("[\"k\",\"sign\",null,1]", "trailing characters at line 1 column 18");
        check_create("[1]", "invalid type: integer `1`, expected a string at line 1 column 2");
        check_create("\"x\"",
                     "invalid type: string \"x\", expected struct Request at line 1 column 3");
        check_create("{\"keyId\":\"ab\\\"c\\n\\u0001\"}",
                     "missing field `usage` at line 1 column 25");
}

static void test_struct_values(void **state)
{
        JsonFieldValue v[3];
        char *got;

        /* Unknown members are skipped, null is "absent" for an optional field, base64 is decoded,
         * U+0000 survives (the caller must refuse it where it cannot go). */
        got = decode_create("{\"x\":[1,{\"y\":\"\xff\"}],\"keyId\":\"a\\u0000b\","
                            "\"usage\":\"sign\",\"keyBytes\":null}",
                            v);
        assert_string_equal(got, "ok");
        free(got);
        assert_int_equal(v[0].len, 3);
        assert_memory_equal(v[0].data, "a\0b", 3);
        assert_string_equal(v[1].data, "sign");
        assert_true(v[2].seen);
        assert_false(v[2].present);
        json_field_values_done(create_fields, v, 3);

        got = decode_create("{\"keyId\":\"k\",\"usage\":\"sign\",\"keyBytes\":\"AAEC/w==\"}", v);
        assert_string_equal(got, "ok");
        free(got);
        assert_true(v[2].present);
        assert_int_equal(v[2].len, 4);
        assert_memory_equal(v[2].data, "\x00\x01\x02\xff", 4);
        json_field_values_done(create_fields, v, 3);
}

static const JsonField issuer_fields[] = {
        { "certId", JSON_FIELD_STRING },
        { "privateKeyHandle", JSON_FIELD_STRING },
};
static const JsonField create_cert_fields[] = {
        { "certId", JSON_FIELD_STRING },
        { "issuer", JSON_FIELD_STRUCT, .optional = true, .fields = issuer_fields,
          .n_fields = 2, .expecting = "struct Issuer" },
};

/* Decodes text as create_cert_fields into v; returns "ok" or the error text. */
static char *decode_cert(const char *text, JsonFieldValue *v)
{
        Buffer b = {};
        JsonError e;

        memset(v, 0, 2 * sizeof(JsonFieldValue));
        if (json_decode_body(text, strlen(text), "struct Request", create_cert_fields, 2, v, &e,
                             NULL, NULL) >= 0)
                return strdup("ok");
        json_error_append(&b, &e);
        return b.data;
}

static void check_cert(const char *text, const char *expected)
{
        JsonFieldValue v[2];
        char *got = decode_cert(text, v);

        print_message("%s\n", text);
        assert_string_equal(got, expected);
        json_field_values_done(create_cert_fields, v, 2);
        free(got);
}

/* A nested struct (certd's issuer {certId, privateKeyHandle}): read as serde reads Option<Issuer>,
 * its errors where they occur inside it. */
static void test_nested_struct(void **state)
{
        JsonFieldValue v[2];
        const JsonFieldValue *issuer;
        char *got;

        got = decode_cert("{\"certId\":\"x\",\"issuer\":{\"z\":[],\"certId\":\"ca\","
                          "\"privateKeyHandle\":\"h\"}}",
                          v);
        assert_string_equal(got, "ok");
        free(got);
        assert_true(v[1].present);
        issuer = (const JsonFieldValue *)v[1].data;
        assert_string_equal(issuer[0].data, "ca");
        assert_string_equal(issuer[1].data, "h");
        json_field_values_done(create_cert_fields, v, 2);

        got = decode_cert("{\"certId\":\"x\",\"issuer\":null}", v);
        assert_string_equal(got, "ok");
        free(got);
        assert_true(v[1].seen);
        assert_false(v[1].present);
        json_field_values_done(create_cert_fields, v, 2);

        check_cert("{\"certId\":\"x\",\"issuer\":[\"ca\",\"h\"]}", "ok");
        check_cert("{\"certId\":\"x\"}", "ok");
        check_cert("{\"certId\":\"x\",\"issuer\":{\"certId\":\"ca\"}}",
                   "missing field `privateKeyHandle` at line 1 column 38");
        check_cert("{\"certId\":\"x\",\"issuer\":{\"certId\":1}}",
                   "invalid type: integer `1`, expected a string at line 1 column 34");
        check_cert("{\"certId\":\"x\",\"issuer\":\"ca\"}",
                   "invalid type: string \"ca\", expected struct Issuer at line 1 column 27");
        check_cert("{\"certId\":\"x\",\"issuer\":{},\"issuer\":{}}",
                   "missing field `certId` at line 1 column 25");
        check_cert("{\"issuer\":{\"certId\":\"a\",\"privateKeyHandle\":\"h\"},\"issuer\":null,"
                   "\"certId\":\"x\"}",
                   "duplicate field `issuer` at line 1 column 56");
        check_cert("{\"issuer\":{\"certId\":\"a\",\"privateKeyHandle\":\"h\"}}",
                   "missing field `certId` at line 1 column 48");
}

static const JsonField sign_fields[] = {
        { "keyHandle", JSON_FIELD_STRING },
        { "algorithm", JSON_FIELD_FLATTEN },
        { "parameters", JSON_FIELD_FLATTEN },
};
static const JsonField digest_fields[] = { { "digest", JSON_FIELD_BYTES } };
static const JsonField message_fields[] = { { "message", JSON_FIELD_BYTES } };
static const JsonVariant sign_variants[] = {
        { "ECDSA", "struct variant Parameters::Ecdsa", digest_fields, 1 },
        { "HMAC-SHA256", "struct variant Parameters::HmacSha256", message_fields, 1 },
        { "NONE", "unit variant Parameters::None", NULL, 0 },
};

static void check_sign(const char *text, const char *expected, int variant)
{
        JsonFieldValue v[3] = {}, p[1] = {};
        unsigned line = 0, column = 0;
        Buffer b = {};
        JsonError e;
        int r;

        print_message("%s\n", text);
        r = json_decode_body(text, strlen(text), "struct Request", sign_fields, 3, v, &e, &line,
                             &column);
        if (r >= 0)
                r = json_read_flattened_enum("algorithm", &v[1], "parameters", &v[2],
                                             sign_variants, 3, line, column, p, &e);
        if (r >= 0) {
                assert_string_equal("ok", expected);
                assert_int_equal(r, variant);
        } else {
                json_error_append(&b, &e);
                assert_string_equal(b.data, expected);
        }
        buffer_done(&b);
        json_field_values_done(sign_fields, v, 3);
        json_field_values_done(digest_fields, p, 1);
}

static void test_flattened_enum(void **state)
{
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":\"HMAC-SHA256\",\"parameters\":{\"message\":"
                   "\"aGk=\"}}",
                   "ok", 1);
        check_sign("{\"parameters\":{\"digest\":\"AAAA\"},\"keyHandle\":\"h\",\"algorithm\":"
                   "\"ECDSA\"}",
                   "ok", 0);
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":\"NONE\",\"parameters\":null}", "ok", 2);
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":0,\"parameters\":{\"digest\":\"AAAA\"}}",
                   "ok", 0);
        check_sign("{}", "missing field `keyHandle` at line 1 column 2", 0);
        check_sign("{\"keyHandle\":\"h\"}", "missing field `algorithm` at line 1 column 17", 0);
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":\"X\"}",
                   "unknown variant `X`, expected one of `ECDSA`, `HMAC-SHA256`, `NONE` at line 1 "
                   "column 33",
                   0);
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":\"ECDSA\"}",
                   "missing field `parameters` at line 1 column 37", 0);
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":\"ECDSA\",\"parameters\":{}}",
                   "missing field `digest` at line 1 column 53", 0);
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":\"ECDSA\",\"parameters\":"
                   "{\"digest\":\"!\"}}",
                   "Invalid byte 33, offset 0. at line 1 column 65", 0);
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":\"ECDSA\",\"parameters\":[]}",
                   "invalid type: sequence, expected struct variant Parameters::Ecdsa at line 1 "
                   "column 53",
                   0);
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":\"NONE\",\"parameters\":{}}",
                   "invalid type: map, expected unit variant Parameters::None at line 1 column 52",
                   0);
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":true}",
                   "invalid type: boolean `true`, expected variant identifier at line 1 column 34",
                   0);
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":5}",
                   "invalid value: integer `5`, expected variant index 0 <= i < 3 at line 1 column "
                   "31",
                   0);
        check_sign("{\"keyHandle\":\"h\",\"algorithm\":\"ECDSA\",\"algorithm\":\"ECDSA\","
                   "\"parameters\":{\"digest\":\"AAAA\"}}",
                   "duplicate field `algorithm` at line 1 column 88", 0);
        /* Unknown members of a struct with flattened ones are read strictly, as serde does. */
        check_sign("{\"keyHandle\":\"h\",\"x\":\"\\ud800\"}",
                   "unexpected end of hex escape at line 1 column 29", 0);
        check_sign("{\"keyHandle\":\"h\",\"x\":1e400}", "number out of range at line 1 column 26",
                   0);
        check_sign("{\"keyHandle\":\"h\",\"x\":[1,]}", "trailing comma at line 1 column 25", 0);
}

static void test_recursion_limit(void **state)
{
        char text[600];
        size_t n = 0;
        JsonFieldValue v[3] = {};
        Buffer b = {};
        JsonError e;

        /* Read as Content (a member of a struct with flattened ones), depth is limited. */
        n += (size_t)sprintf(text, "{\"keyHandle\":\"h\",\"x\":");
        for (int i = 0; i < 200; i++)
                text[n++] = '[';
        text[n] = 0;
        assert_int_equal(json_decode_body(text, n, "struct Request", sign_fields, 3, v, &e, NULL,
                                          NULL),
                         -EINVAL);
        json_error_append(&b, &e);
        assert_string_equal(b.data, "recursion limit exceeded at line 1 column 148");
        buffer_done(&b);
        /* What was read before the error is the caller's to free. */
        json_field_values_done(sign_fields, v, 3);
}

static void test_writer(void **state)
{
        static const uint8_t bytes[] = { 0xfb, 0xff, 0x00 };
        JsonWriter w = {};
        Buffer b = {};

        json_begin_object(&w);
        json_key(&w, "a");
        json_string(&w, "q\"\\\n\x01\xc3\xa9/", 8);
        json_key(&w, "b");
        json_base64(&w, bytes, sizeof(bytes));
        json_key(&w, "c");
        json_begin_object(&w);
        json_key(&w, "d");
        json_string(&w, "", 0);
        json_end_object(&w);
        json_end_object(&w);
        assert_string_equal(w.out.data,
                            "{\"a\":\"q\\\"\\\\\\n\\u0001\xc3\xa9/\","
                            "\"b\":\"+/8A\",\"c\":{\"d\":\"\"}}");
        buffer_done(&w.out);

        json_write_message(&b, "line\ncaused by: x", 17);
        assert_string_equal(b.data, "{\"message\":\"line\\ncaused by: x\"}");
        buffer_done(&b);
}

static void test_base64(void **state)
{
        static const struct {
                const char *plain, *encoded;
        } vectors[] = {
                { "", "" },         { "f", "Zg==" },         { "fo", "Zm8=" },
                { "foo", "Zm9v" },  { "foob", "Zm9vYg==" },  { "fooba", "Zm9vYmE=" },
                { "foobar", "Zm9vYmFy" },
        };
        static const struct {
                const char *text, *message;
        } bad[] = {
                { "Zg", "Invalid padding" },
                { "Zg=", "Invalid padding" },
                { "Zm9v=", "Invalid padding" },
                { "Z", "Encoded text cannot have a 6-bit remainder." },
                { "Zh==", "Invalid last symbol 104, offset 1." },
                { "Zm9=", "Invalid last symbol 57, offset 2." },
                { "Z!==", "Invalid byte 33, offset 1." },
                { "Zg=A", "Invalid byte 61, offset 2." },
                { "Zm 9v", "Invalid byte 32, offset 2." },
                { "Zm9v-_==", "Invalid byte 45, offset 4." },
        };
        char out[16], message[128];
        uint8_t decoded[16];
        size_t n;

        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                size_t len = strlen(vectors[i].plain);

                assert_int_equal(base64_encoded_len(len), strlen(vectors[i].encoded));
                base64_encode((const uint8_t *)vectors[i].plain, len, out);
                assert_memory_equal(out, vectors[i].encoded, strlen(vectors[i].encoded));
                assert_int_equal(base64_decode(vectors[i].encoded, strlen(vectors[i].encoded),
                                               decoded, &n),
                                 0);
                assert_int_equal(n, len);
                assert_memory_equal(decoded, vectors[i].plain, len);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                print_message("%s\n", bad[i].text);
                assert_int_equal(base64_validate(bad[i].text, strlen(bad[i].text), message,
                                                 sizeof(message)),
                                 -EINVAL);
                assert_string_equal(message, bad[i].message);
                assert_int_equal(base64_decode(bad[i].text, strlen(bad[i].text), decoded, &n),
                                 -EINVAL);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_syntax_errors),
                cmocka_unit_test(test_deep_nesting),
                cmocka_unit_test(test_struct_errors),
                cmocka_unit_test(test_struct_values),
                cmocka_unit_test(test_nested_struct),
                cmocka_unit_test(test_flattened_enum),
                cmocka_unit_test(test_recursion_limit),
                cmocka_unit_test(test_writer),
                cmocka_unit_test(test_base64),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
