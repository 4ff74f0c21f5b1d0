/* SPDX-License-Identifier: MIT */
#pragma once

/* PKCS#11 URIs as upstream keyd accepts them (pkcs11_base_slot, preloaded keys): the subset of
 * RFC 7512
 *
 *     pkcs11:<attr>=<value>;…[?<attr>=<value>&…]
 *
 * of which the path attributes token, slot-id and object and the query attribute pin-value are
 * taken (values percent-decoded); other attributes are ignored. slot-id wins over token when both
 * are given. The PIN never appears in the display form nor in an error message, and is wiped when
 * the URI is freed. */

#include <stdbool.h>

#include "macro.h"

typedef struct Pkcs11Uri {
        char *token;  /* NULL if absent */
        char *object; /* NULL if absent */
        char *pin;    /* NULL if absent; wiped when freed */
        bool has_slot_id;
        unsigned long slot_id;
} Pkcs11Uri;

/* 0, -ENOMEM, or -EINVAL with *ret_error set (caller frees) when ret_error != NULL. A URI that
 * names neither a token nor a slot-id is an error (pkcs11_uri_check_slot()). */
int pkcs11_uri_parse(const char *text, Pkcs11Uri **ret, char **ret_error);

Pkcs11Uri *pkcs11_uri_free(Pkcs11Uri *u);
DEFINE_TRIVIAL_CLEANUP_FUNC(Pkcs11Uri *, pkcs11_uri_free);

/* 0 when u designates a slot (by slot-id or token label), else -EINVAL with *ret_error set as in
 * pkcs11_uri_parse(), or -ENOMEM. */
int pkcs11_uri_check_slot(const Pkcs11Uri *u, char **ret_error);

/* Whether the slot is chosen by u->slot_id (true) or by the token label u->token (false). */
static inline bool pkcs11_uri_uses_slot_id(const Pkcs11Uri *u)
{
        return u->has_slot_id;
}

/* "pkcs11:" + slot-id, token, object in that order, every byte that is not ASCII alphanumeric
 * percent-encoded; never the PIN. NULL on OOM. */
char *pkcs11_uri_to_display(const Pkcs11Uri *u);

/* A copy of u with object replaced (NULL: removed); the PIN and slot are kept. NULL on OOM. */
Pkcs11Uri *pkcs11_uri_with_object(const Pkcs11Uri *u, const char *object);

/* true when text starts with "pkcs11:" (case-sensitive, as upstream) */
bool pkcs11_uri_is(const char *text);
