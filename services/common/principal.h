/* SPDX-License-Identifier: MIT */
#pragma once

/* [[principal]] entries as the keys and certificates services read them: a uid and a list of id globs
 * ("keys" or "certs"). Entries for the same uid are merged. A glob matches the whole id; "*" matches any
 * run of characters (including none), "?" exactly one character; matching is case-sensitive. */

#include <stdbool.h>
#include <sys/types.h>

#include "config.h"

typedef struct Principal {
        uid_t uid;
        char **globs; /* NULL-terminated */
        size_t n_globs;
} Principal;

typedef struct PrincipalSet {
        Principal *items;
        size_t n;
} PrincipalSet;

/* Reads every [[principal]] of config; list_key names the glob list ("keys", "certs"). Errors name the
 * file, line and column of the offending value. */
int principal_set_from_config(const TomlValue *config, const char *list_key, PrincipalSet *ret,
                              ConfigError *ret_error);
void principal_set_done(PrincipalSet *set);

/* True when uid has a glob matching id. Does not special-case root: callers decide that. */
bool principal_allows(const PrincipalSet *set, uid_t uid, const char *id);

bool glob_match(const char *pattern, const char *s);
