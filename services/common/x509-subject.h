/* SPDX-License-Identifier: MIT */
#pragma once

/* Certificate subjects as upstream's configurations write them: a common name alone, or a table
 * of fields (cert_issuance.<id>.subject, csr_subject, registration_id = { CN = …, L = … }) whose
 * order is the sorted order of the field names (upstream keeps them in a BTreeMap). */

#include <stddef.h>

#include <openssl/x509.h>

#include "config.h"
#include "toml.h"

#define SUBJECT_CN_MAX 64u
#define SUBJECT_FIELDS_MAX 32u

typedef struct SubjectField {
        const char *name; /* "CN", "L", "O", … (anything OBJ_txt2obj() knows) */
        const char *value;
} SubjectField;

/* A common_name alone (fields NULL), or the fields in sorted order of their names, UTF-8. A CN
 * longer than SUBJECT_CN_MAX characters is truncated. -EINVAL for an unknown field name, an empty
 * subject, or both a common name and fields. */
int x509_subject_new(const char *common_name, const SubjectField *fields, size_t n_fields,
                     X509_NAME **ret);

/* A subject from a TOML value: a string (the CN) or a table of string fields. what names it in
 * errors ("cert_issuance.x.subject"). -EINVAL with *ret_error filled. */
int x509_subject_from_toml(const TomlValue *v, const char *what, X509_NAME **ret,
                           ConfigError *ret_error);
