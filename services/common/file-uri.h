/* SPDX-License-Identifier: MIT */
#pragma once

/* file:///abs/path or file://localhost/abs/path, percent-decoded (as the url crate's
 * to_file_path(), which upstream uses for preloaded keys and certificates). Anything else —
 * another scheme, a host, a query, a fragment, %00, a bad escape, a trailing '/' — is
 * -EPROTONOSUPPORT; -ENOMEM. */
int file_uri_to_path(const char *uri, char **ret);
