/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "http-parser.h"
#include "macro.h"

static int parse(const char *text, HttpRequestHead *h)
{
        *h = (HttpRequestHead){};
        return http_parse_head(text, strlen(text), h);
}

static void test_simple_get_without_host(void **state)
{
        const char *text = "GET /key/a?api-version=2021-05-01 HTTP/1.1\r\n\r\n";
        HttpRequestHead h;

        assert_int_equal(parse(text, &h), (int)strlen(text));
        assert_int_equal(h.method, HTTP_GET);
        assert_string_equal(h.method_name, "GET");
        assert_string_equal(h.target, "/key/a?api-version=2021-05-01");
        assert_int_equal(h.minor_version, 1);
        assert_int_equal(h.framing, HTTP_BODY_NONE);
        assert_true(h.keep_alive);
        assert_false(h.expect_continue);
        assert_null(h.content_type);
        http_request_head_done(&h);
}

static void test_odd_host_and_bare_lf(void **state)
{
        const char *text = "POST /sign HTTP/1.1\nHost: /run/aziot/identityd.sock:0\n"
                           "content-length: 2\ncontent-type: application/json\n\n{}";
        HttpRequestHead h;

        assert_int_equal(parse(text, &h), (int)strlen(text) - 2);
        assert_int_equal(h.method, HTTP_POST);
        assert_int_equal(h.framing, HTTP_BODY_LENGTH);
        assert_int_equal(h.content_length, 2);
        assert_string_equal(h.content_type, "application/json");
        http_request_head_done(&h);
}

static void test_leading_empty_lines_and_incomplete(void **state)
{
        HttpRequestHead h;

        assert_int_equal(parse("\r\n\r\nGET / HTTP/1.1\r\n\r\n", &h), 22);
        http_request_head_done(&h);
        assert_int_equal(parse("GET / HTTP/1.1\r\nA: b\r\n", &h), 0);
        assert_int_equal(parse("GET / HTT", &h), 0);
        assert_int_equal(parse("", &h), 0);
}

static void test_methods(void **state)
{
        static const struct {
                const char *line;
                HttpMethod method;
        } cases[] = {
                { "GET / HTTP/1.1\r\n\r\n", HTTP_GET },
                { "POST / HTTP/1.1\r\n\r\n", HTTP_POST },
                { "PUT / HTTP/1.1\r\n\r\n", HTTP_PUT },
                { "DELETE / HTTP/1.1\r\n\r\n", HTTP_DELETE },
                { "HEAD / HTTP/1.1\r\n\r\n", HTTP_HEAD },
                { "PATCH / HTTP/1.1\r\n\r\n", HTTP_OTHER },
                { "get / HTTP/1.1\r\n\r\n", HTTP_OTHER },
                { "BREW / HTTP/1.1\r\n\r\n", HTTP_OTHER },
        };
        HttpRequestHead h;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                assert_true(parse(cases[i].line, &h) > 0);
                assert_int_equal(h.method, cases[i].method);
                http_request_head_done(&h);
        }
}

static void test_malformed(void **state)
{
        static const char *const bad[] = {
                "GET\r\n\r\n",
                "GET /\r\n\r\n",
                "GET  / HTTP/1.1\r\n\r\n",
                "GET / HTTP/1.1 \r\n\r\n",
                "GET / http/1.1\r\n\r\n",
                "GET / HTTP/1\r\n\r\n",
                "G(T / HTTP/1.1\r\n\r\n",
                "GET /a\x01 HTTP/1.1\r\n\r\n",
                "GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
                "GET / HTTP/1.1\r\nName : value\r\n\r\n",
                "GET / HTTP/1.1\r\nNa me: value\r\n\r\n",
                "GET / HTTP/1.1\r\n: value\r\n\r\n",
                "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
                "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
                "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
                "GET / HTTP/1.1\r\nA: b\x01\r\n\r\n",
                "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
                "GET / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
                "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        };
        HttpRequestHead h;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                print_message("%s\n", bad[i]);
                assert_int_equal(parse(bad[i], &h), -EBADMSG);
        }
}

static void test_unsupported(void **state)
{
        HttpRequestHead h;

        assert_int_equal(parse("GET / HTTP/2.0\r\n\r\n", &h), -EPROTONOSUPPORT);
        assert_int_equal(parse("GET / HTTP/1.2\r\n\r\n", &h), -EPROTONOSUPPORT);
        assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &h),
                         -EOPNOTSUPP);
}

static void test_limits(void **state)
{
        char *big = malloc(HTTP_HEAD_MAX + 64);
        HttpRequestHead h;
        size_t n;

        if (!big) {
                fail_msg("out of memory");
                return;
        }
        /* An endless request line, and endless headers. */
        memset(big, 'a', HTTP_HEAD_MAX + 10);
        memcpy(big, "GET /", 5);
        assert_int_equal(http_parse_head(big, HTTP_HEAD_MAX + 10, &h), -E2BIG);

        /* A complete head, but too long: one huge header. */
        n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nA: ");
        memset(big + n, 'x', HTTP_HEAD_MAX - n);
        memcpy(big + HTTP_HEAD_MAX, "\r\n\r\n", 4);
        assert_int_equal(http_parse_head(big, HTTP_HEAD_MAX + 4, &h), -E2BIG);

        /* 101 short headers are too many even though small. */
        n = (size_t)sprintf(big, "GET / HTTP/1.1\r\n");
        for (int i = 0; i < 101; i++)
                n += (size_t)sprintf(big + n, "A: b\r\n");
        n += (size_t)sprintf(big + n, "\r\n");
        assert_int_equal(http_parse_head(big, n, &h), -E2BIG);
        free(big);
}

static void test_connection_semantics(void **state)
{
        HttpRequestHead h;

        assert_true(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &h) > 0);
        assert_false(h.keep_alive);
        http_request_head_done(&h);
        assert_true(parse("GET / HTTP/1.1\r\nconnection: Keep-Alive, CLOSE\r\n\r\n", &h) > 0);
        assert_false(h.keep_alive);
        http_request_head_done(&h);
        assert_true(parse("GET / HTTP/1.0\r\n\r\n", &h) > 0);
        assert_false(h.keep_alive);
        assert_int_equal(h.minor_version, 0);
        http_request_head_done(&h);
        assert_true(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &h) > 0);
        assert_true(h.keep_alive);
        http_request_head_done(&h);
        assert_true(parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                          &h) > 0);
        assert_true(h.expect_continue);
        http_request_head_done(&h);
        assert_true(parse("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n"
                          "Content-Type: text/plain\r\ncontent-type: application/json\r\n\r\n",
                          &h) > 0);
        assert_int_equal(h.framing, HTTP_BODY_CHUNKED);
        assert_string_equal(h.content_type, "text/plain");
        http_request_head_done(&h);
        assert_true(parse("POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
                          &h) > 0);
        assert_int_equal(h.framing, HTTP_BODY_NONE);
        http_request_head_done(&h);
}

static int decode_all(const char *in, size_t step, Buffer *body, size_t max)
{
        HttpChunkedDecoder d = {};
        size_t len = strlen(in), have = 0, pos = 0;
        int r = 0;

        /* Feed the input step bytes at a time, keeping what was not consumed. */
        while (have < len) {
                size_t used = 0;

                have = MIN(len, have + step);
                r = http_chunked_decode(&d, in + pos, have - pos, &used, body, max);
                pos += used;
                if (r != 0)
                        return r;
        }
        return r;
}

static void test_chunked(void **state)
{
        const char *in = "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        size_t steps[] = { 1, 2, 3, 7, 1000 };

        for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
                Buffer body = {};

                assert_int_equal(decode_all(in, steps[i], &body, 1024), 1);
                assert_int_equal(body.len, 11);
                assert_memory_equal(body.data, "hello world", 11);
                buffer_done(&body);
        }
}

static void test_chunked_errors(void **state)
{
        static const char *const bad[] = {
                "x\r\n",          "5\r\nhelloX\r\n", "5 x\r\nhello\r\n0\r\n\r\n",
                "\r\n",           "0\r\nno-colon\r\n\r\n", "ffffffffffffffffff\r\n",
                "5\r\nhel\rlo\r\n",
        };
        Buffer body = {};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                print_message("%s\n", bad[i]);
                assert_int_equal(decode_all(bad[i], 1000, &body, 1024), -EBADMSG);
                buffer_done(&body);
        }
        assert_int_equal(decode_all("a\r\n0123456789\r\n0\r\n\r\n", 1000, &body, 9), -EFBIG);
        buffer_done(&body);
        assert_int_equal(decode_all("5\r\nhello\r\n", 1000, &body, 1024), 0);
        buffer_done(&body);
}

static void test_reasons(void **state)
{
        assert_string_equal(http_status_reason(200), "OK");
        assert_string_equal(http_status_reason(204), "No Content");
        assert_string_equal(http_status_reason(422), "Unprocessable Entity");
        assert_string_equal(http_status_reason(999), "Unknown");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_simple_get_without_host),
                cmocka_unit_test(test_odd_host_and_bare_lf),
                cmocka_unit_test(test_leading_empty_lines_and_incomplete),
                cmocka_unit_test(test_methods),
                cmocka_unit_test(test_malformed),
                cmocka_unit_test(test_unsupported),
                cmocka_unit_test(test_limits),
                cmocka_unit_test(test_connection_semantics),
                cmocka_unit_test(test_chunked),
                cmocka_unit_test(test_chunked_errors),
                cmocka_unit_test(test_reasons),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
