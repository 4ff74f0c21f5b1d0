/* SPDX-License-Identifier: MIT */
#pragma once

/* Cleanup helpers for the certificate stacks certd uses (the others: openssl-util.h). */

#include <openssl/x509.h>

#include "macro.h"
#include "openssl-util.h"

/* Names for the stacks, which clang-format cannot lay out as STACK_OF(T) *. */
typedef STACK_OF(X509) X509Stack;
typedef STACK_OF(X509_EXTENSION) X509ExtensionStack;

static inline void sk_X509_pop_freep(X509Stack **sk)
{
        sk_X509_pop_free(*sk, X509_free);
}

static inline void sk_X509_EXTENSION_pop_freep(X509ExtensionStack **sk)
{
        sk_X509_EXTENSION_pop_free(*sk, X509_EXTENSION_free);
}

