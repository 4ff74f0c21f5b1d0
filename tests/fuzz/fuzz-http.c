/* SPDX-License-Identifier: MIT */
/* libFuzzer target: what the gateway reads from its clients, who are not trusted. The input is one
 * byte of mode, then data: the request head parser, the chunked body decoder, and the JSON body
 * decoder (generic validation, and a typed struct with a flattened enum as the /sign route reads
 * it). Each must answer any input without crashing, leaking or reading out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http-parser.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const JsonField body_fields[] = {
        { "keyHandle", JSON_FIELD_STRING },
        { "keyBytes", JSON_FIELD_BYTES, .optional = true },
        { "algorithm", JSON_FIELD_FLATTEN },
        { "parameters", JSON_FIELD_FLATTEN, .optional = true },
};

static const JsonField digest_fields[] = {
        { "digest", JSON_FIELD_BYTES },
};

static const JsonVariant variants[] = {
        { "ECDSA", "struct variant Parameters::Ecdsa", digest_fields, 1 },
        { "NONE", "unit variant Parameters::None", NULL, 0 },
};

static void fuzz_head(const char *text, size_t len)
{
        HttpRequestHead h = {};

        if (http_parse_head(text, len, &h) >= 0)
                http_request_head_done(&h);
}

static void fuzz_chunked(const char *text, size_t len)
{
        HttpChunkedDecoder d = {};
        Buffer body = {};
        size_t consumed;

        /* Fed in two pieces, as a socket may deliver it. */
        if (http_chunked_decode(&d, text, len / 2, &consumed, &body, 4096) >= 0 &&
            consumed <= len / 2)
                (void)http_chunked_decode(&d, text + consumed, len - consumed, &consumed, &body,
                                          4096);
        buffer_done(&body);
}

static void fuzz_json(const char *text, size_t len)
{
        JsonFieldValue values[4] = {}, inner[1] = {};
        JsonError error = {};
        Buffer message = {};
        unsigned line, column;

        if (json_validate(text, len, &error) < 0)
                json_error_append(&message, &error);
        error = (JsonError){};
        /* The values are the caller's to free, whether decoding succeeded or not. */
        if (json_decode_body(text, len, "struct Request", body_fields, 4, values, &error, &line,
                             &column) >= 0) {
                if (json_read_flattened_enum("algorithm", &values[2], "parameters", &values[3],
                                             variants, 2, line, column, inner, &error) < 0)
                        json_error_append(&message, &error);
                json_field_values_done(digest_fields, inner, 1);
        } else
                json_error_append(&message, &error);
        json_field_values_done(body_fields, values, 4);
        buffer_done(&message);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *text;

        if (size < 1)
                return 0;
        /* A copy of exactly the input, so that any read past it is caught. */
        text = malloc(size - 1 ?: 1);
        if (!text)
                return 0;
        memcpy(text, data + 1, size - 1);
        switch (data[0] % 3) {
        case 0:
                fuzz_head(text, size - 1);
                break;
        case 1:
                fuzz_chunked(text, size - 1);
                break;
        default:
                fuzz_json(text, size - 1);
                break;
        }
        free(text);
        return 0;
}
