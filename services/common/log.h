/* SPDX-License-Identifier: MIT */
#pragma once

/* Logging for the daemons and tools: to the journal when stderr is connected to it (JOURNAL_STREAM),
 * else to stderr with a timestamp. The level comes from AZIOT_LOG (error|warn|info|debug|trace; the
 * env_logger form "crate=level,level" is accepted and its bare level used). Never log a secret. */

#include <stdlib.h>
#include <syslog.h>

#include "macro.h"

/* One level below LOG_DEBUG, for per-request tracing. */
#define LOG_TRACE 8

void log_setup(const char *ident);
int log_get_max_level(void);
void log_set_max_level(int level);
/* Parses "error", "warn", "info", "debug", "trace" (and the env_logger form). -EINVAL otherwise. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);

/* Logs; when error is non-zero errno is set to it first so that %m prints it. Returns -abs(error). */
int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *format, ...) _printf_(6, 7);

#define log_full_errno(level, error, ...)                                                          \
        ({                                                                                         \
                int _level = (level), _e = (error);                                                \
                _e = _e < 0 ? -_e : _e;                                                            \
                log_get_max_level() >= _level                                                      \
                        ? log_internal(_level, _e, __FILE__, __LINE__, __func__, __VA_ARGS__)      \
                        : -_e;                                                                     \
        })

#define log_full(level, ...) ((void)log_full_errno((level), 0, __VA_ARGS__))

#define log_error_errno(error, ...) log_full_errno(LOG_ERR, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, (error), __VA_ARGS__)
#define log_info_errno(error, ...) log_full_errno(LOG_INFO, (error), __VA_ARGS__)
#define log_debug_errno(error, ...) log_full_errno(LOG_DEBUG, (error), __VA_ARGS__)

#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_trace(...) log_full(LOG_TRACE, __VA_ARGS__)

#define log_oom() log_error_errno(ENOMEM, "Out of memory.")
