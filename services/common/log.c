/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "log.h"

static int max_level = LOG_INFO;
static const char *log_ident = NULL;
static int use_journal = -1; /* -1: not yet decided */

static const char *const level_names[] = {
        [LOG_ERR] = "error",  [LOG_WARNING] = "warn", [LOG_INFO] = "info",
        [LOG_DEBUG] = "debug", [LOG_TRACE] = "trace",
};

static const char *const level_tags[] = {
        [LOG_EMERG] = "ERR!", [LOG_ALERT] = "ERR!",   [LOG_CRIT] = "ERR!",
        [LOG_ERR] = "ERR!",   [LOG_WARNING] = "WARN", [LOG_NOTICE] = "INFO",
        [LOG_INFO] = "INFO",  [LOG_DEBUG] = "DBUG",   [LOG_TRACE] = "TRCE",
};

const char *log_level_to_string(int level)
{
        if (level < 0 || (size_t)level >= ELEMENTSOF(level_names) || !level_names[level])
                return NULL;
        return level_names[level];
}

static int level_word(const char *s, size_t n)
{
        static const struct {
                const char *name;
                int level;
        } words[] = {
                { "error", LOG_ERR },   { "warn", LOG_WARNING }, { "warning", LOG_WARNING },
                { "info", LOG_INFO },   { "debug", LOG_DEBUG },  { "trace", LOG_TRACE },
                { "off", LOG_EMERG },
        };
        for (size_t i = 0; i < ELEMENTSOF(words); i++)
                if (strlen(words[i].name) == n && strncasecmp(words[i].name, s, n) == 0)
                        return words[i].level;
        return -EINVAL;
}

int log_level_from_string(const char *s)
{
        int level = -EINVAL;

        if (isempty(s))
                return -EINVAL;

        /* env_logger syntax: comma-separated "target=level" or bare "level" directives. The bare
         * level applies to everything; targeted ones name our ident or are ignored. */
        for (const char *p = s; *p;) {
                size_t n = strcspn(p, ",");
                const char *eq = memchr(p, '=', n);
                int l;

                if (eq) {
                        size_t tn = eq - p;
                        if (log_ident && strlen(log_ident) == tn && strncmp(p, log_ident, tn) == 0)
                                return level_word(eq + 1, n - tn - 1);
                } else if (n > 0) {
                        l = level_word(p, n);
                        if (l < 0)
                                return l;
                        level = l;
                }
                p += n;
                if (*p == ',')
                        p++;
        }
        return level;
}

int log_get_max_level(void)
{
        return max_level;
}

void log_set_max_level(int level)
{
        max_level = level;
}

static bool stderr_is_journal(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino;
}

void log_setup(const char *ident)
{
        const char *e = getenv("AZIOT_LOG");
        int l;

        log_ident = ident;
        use_journal = stderr_is_journal();
        if (e) {
                l = log_level_from_string(e);
                if (l >= 0)
                        max_level = l;
                else
                        log_warning("Ignoring AZIOT_LOG=%s: not a log level.", e);
        }
}

int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *format, ...)
{
        char msg[2048];
        va_list ap;
        int saved = errno;

        if (error != 0)
                errno = error;
        va_start(ap, format);
        vsnprintf(msg, sizeof(msg), format, ap);
        va_end(ap);

        if (use_journal < 0)
                use_journal = stderr_is_journal();

        if (use_journal) {
                char cf[256], cl[32];

                snprintf(cf, sizeof(cf), "CODE_FILE=%s", file);
                snprintf(cl, sizeof(cl), "CODE_LINE=%d", line);
                sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", MIN(level, LOG_DEBUG), "%s", cf,
                                "%s", cl, "CODE_FUNC=%s", func, error ? "ERRNO=%d" : NULL, error,
                                NULL);
        } else {
                struct timespec ts;
                struct tm tm;
                char stamp[64];
                int tag = level < 0 ? LOG_ERR : MIN(level, LOG_TRACE);

                clock_gettime(CLOCK_REALTIME, &ts);
                gmtime_r(&ts.tv_sec, &tm);
                strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
                fprintf(stderr, "%s.%03ldZ [%s] %s%s%s\n", stamp, ts.tv_nsec / 1000000,
                        level_tags[tag], log_ident ?: "", log_ident ? ": " : "", msg);
        }

        errno = saved;
        return -error;
}
