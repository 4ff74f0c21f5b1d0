/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cert-renewal.h"
#include "log.h"
#include "macro.h"

#define USEC_PER_MIN (60 * RENEWAL_USEC_PER_SEC)
#define USEC_PER_DAY (24 * 60 * USEC_PER_MIN)

int renewal_policy_parse(const char *s, RenewalPolicy *ret)
{
        static const struct {
                const char *suffix;
                RenewalPolicyKind kind;
                uint64_t unit;
        } units[] = {
                { "%", RENEWAL_POLICY_PERCENT, 1 },
                { "min", RENEWAL_POLICY_TIME, USEC_PER_MIN },
                { "day", RENEWAL_POLICY_TIME, USEC_PER_DAY },
        };
        uint64_t n = 0;
        const char *p;

        if (!s || !(*s >= '1' && *s <= '9'))
                return -EINVAL;
        for (p = s; *p >= '0' && *p <= '9'; p++) {
                if (n > (UINT64_MAX - 9) / 10)
                        return -EINVAL;
                n = n * 10 + (uint64_t)(*p - '0');
        }
        for (size_t i = 0; i < ELEMENTSOF(units); i++) {
                if (!streq(p, units[i].suffix))
                        continue;
                if (units[i].kind == RENEWAL_POLICY_PERCENT) {
                        if (n > 99)
                                return -EINVAL;
                } else if (n > UINT64_MAX / units[i].unit)
                        return -EINVAL;
                *ret = (RenewalPolicy){ units[i].kind, n * units[i].unit };
                return 0;
        }
        return -EINVAL;
}

static int policy_from_toml(const TomlValue *table, const char *key, const char *where,
                            RenewalPolicy *policy, ConfigError *ret_error)
{
        const char *s;
        int r;

        r = config_get_string(table, key, &s, ret_error);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        if (renewal_policy_parse(s, policy) < 0)
                return config_error_at(ret_error, toml_table_get(table, key),
                                       "%s.%s: \"%s\" is not \"<1-99>%%\", \"<n>min\" or "
                                       "\"<n>day\"",
                                       where, key, s);
        return 0;
}

int renewal_config_from_toml(const TomlValue *table, const char *where, RenewalConfig *ret,
                             ConfigError *ret_error)
{
        RenewalConfig c = RENEWAL_CONFIG_DEFAULT;
        int r;

        if (table) {
                if (table->type != TOML_TABLE)
                        return config_error_at(ret_error, table, "%s must be a table", where);
                r = config_get_bool(table, "rotate_key", &c.rotate_key, ret_error);
                if (r < 0 && r != -ENOENT)
                        return r;
                r = policy_from_toml(table, "threshold", where, &c.threshold, ret_error);
                if (r < 0)
                        return r;
                r = policy_from_toml(table, "retry", where, &c.retry, ret_error);
                if (r < 0)
                        return r;
        }
        *ret = c;
        return 0;
}

static uint64_t lifetime(uint64_t not_before, uint64_t not_after)
{
        return not_after > not_before ? not_after - not_before : 0;
}

uint64_t renewal_due_time(const RenewalConfig *c, uint64_t not_before, uint64_t not_after)
{
        if (c->threshold.kind == RENEWAL_POLICY_PERCENT)
                return not_before +
                       lifetime(not_before, not_after) / 100 * c->threshold.value +
                       lifetime(not_before, not_after) % 100 * c->threshold.value / 100;
        return not_after > c->threshold.value ? not_after - c->threshold.value : 0;
}

uint64_t renewal_retry_period(const RenewalConfig *c, uint64_t not_before, uint64_t not_after)
{
        uint64_t period;

        if (c->retry.kind == RENEWAL_POLICY_PERCENT)
                period = lifetime(not_before, not_after) / 100 * c->retry.value;
        else
                period = c->retry.value;
        return MAX(period, RENEWAL_MIN_RETRY_USEC);
}

uint64_t renewal_next_time(const RenewalConfig *c, uint64_t not_before, uint64_t not_after,
                           uint64_t now)
{
        uint64_t due = renewal_due_time(c, not_before, not_after);

        if (due > now)
                return due;
        return now + renewal_retry_period(c, not_before, not_after);
}

const char *renewal_state_to_string(RenewalState s)
{
        switch (s) {
        case RENEWAL_STATE_SCHEDULED:
                return "scheduled";
        case RENEWAL_STATE_RENEWING:
                return "renewing";
        case RENEWAL_STATE_RETRYING:
                return "retrying";
        default:
                return "none";
        }
}

typedef struct RenewalWait {
        RenewalWaitCallback done;
        void *userdata;
} RenewalWait;

typedef struct Credential {
        char *id;
        RenewalConfig config;
        RenewalCertInfo seen;
        RenewalState state;
        uint64_t next;
        bool marked;
        RenewalWait *waits;
        size_t n_waits;
} Credential;

struct RenewalEngine {
        sd_event *event;
        sd_event_source *timer;
        RenewalOps ops;
        void *userdata;
        Credential **creds;
        size_t n;
};

static uint64_t now_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec * RENEWAL_USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static void credential_free(Credential *c)
{
        if (!c)
                return;
        free(c->id);
        free(c->waits);
        free(c);
}

static void credential_freep(Credential **c)
{
        credential_free(*c);
}

static Credential *find(const RenewalEngine *e, const char *id, size_t *ret_index)
{
        for (size_t i = 0; i < e->n; i++)
                if (streq(e->creds[i]->id, id)) {
                        if (ret_index)
                                *ret_index = i;
                        return e->creds[i];
                }
        return NULL;
}

static void notify(RenewalEngine *e, const Credential *c)
{
        if (e->ops.changed)
                e->ops.changed(c->id, e->userdata);
}

static int arm(RenewalEngine *e);

/* Calls and forgets the waits of c. The callbacks may change the engine: c is looked up again by
 * the caller afterwards. */
static void settle_waits(RenewalEngine *e, Credential *c, int error)
{
        RenewalWait *waits = c->waits;
        size_t n = c->n_waits;

        c->waits = NULL;
        c->n_waits = 0;
        for (size_t i = 0; i < n; i++)
                waits[i].done(waits[i].userdata, error);
        free(waits);
}

static void drop(RenewalEngine *e, size_t index, int error)
{
        Credential *c = e->creds[index];

        memmove(e->creds + index, e->creds + index + 1, (e->n - index - 1) * sizeof(*e->creds));
        e->n--;
        settle_waits(e, c, error);
        notify(e, c);
        credential_free(c);
}

static void start(RenewalEngine *e, Credential *c)
{
        _cleanup_free_ char *id = NULL;
        RenewalCertInfo now = {};
        size_t index;
        int r;

        r = e->ops.read(c->id, &now, e->userdata);
        if (r >= 0 && memcmp(now.digest, c->seen.digest, sizeof(now.digest)) != 0) {
                log_warning("Not renewing %s any more: the certificate has changed since last "
                            "renewal.",
                            c->id);
                if (find(e, c->id, &index))
                        drop(e, index, -ESTALE);
                return;
        }
        if (r < 0) {
                log_warning_errno(r, "Not renewing %s any more: its certificate cannot be read: %m",
                                  c->id);
                if (find(e, c->id, &index))
                        drop(e, index, r);
                return;
        }

        log_info("Renewing the certificate %s.", c->id);
        c->state = RENEWAL_STATE_RENEWING;
        notify(e, c);
        id = strdup(c->id);
        if (!id) {
                renewal_engine_finished(e, c->id, -ENOMEM, false, NULL);
                return;
        }
        r = e->ops.renew(e, id, &c->config, e->userdata);
        if (r < 0)
                renewal_engine_finished(e, id, r, false, "the renewal could not start");
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        RenewalEngine *e = userdata;
        uint64_t now = now_usec();
        bool again = true;

        /* Each start may add or drop credentials: look for the next due one from the top. */
        while (again) {
                again = false;
                for (size_t i = 0; i < e->n; i++) {
                        Credential *c = e->creds[i];

                        if (c->state == RENEWAL_STATE_RENEWING || c->next > now)
                                continue;
                        start(e, c);
                        again = true;
                        break;
                }
        }
        (void)arm(e);
        return 0;
}

static int arm(RenewalEngine *e)
{
        uint64_t next = UINT64_MAX;
        int r;

        for (size_t i = 0; i < e->n; i++)
                if (e->creds[i]->state != RENEWAL_STATE_RENEWING)
                        next = MIN(next, e->creds[i]->next);
        if (next == UINT64_MAX) {
                if (e->timer)
                        (void)sd_event_source_set_enabled(e->timer, SD_EVENT_OFF);
                return 0;
        }
        if (!e->timer) {
                r = sd_event_add_time(e->event, &e->timer, CLOCK_REALTIME, next, 0, on_timer, e);
                if (r < 0)
                        return log_error_errno(r, "Failed to arm the renewal timer: %m");
                return 0;
        }
        r = sd_event_source_set_time(e->timer, next);
        if (r >= 0)
                r = sd_event_source_set_enabled(e->timer, SD_EVENT_ONESHOT);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the renewal timer: %m");
        return 0;
}

int renewal_engine_new(sd_event *event, const RenewalOps *ops, void *userdata,
                       RenewalEngine **ret)
{
        RenewalEngine *e;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->event = sd_event_ref(event);
        e->ops = *ops;
        e->userdata = userdata;
        *ret = e;
        return 0;
}

RenewalEngine *renewal_engine_free(RenewalEngine *e)
{
        if (!e)
                return NULL;
        for (size_t i = 0; i < e->n; i++)
                credential_free(e->creds[i]);
        free(e->creds);
        sd_event_source_disable_unref(e->timer);
        sd_event_unref(e->event);
        free(e);
        return NULL;
}

static void schedule(Credential *c, uint64_t now)
{
        c->next = renewal_next_time(&c->config, c->seen.not_before, c->seen.not_after, now);
}

int renewal_engine_add(RenewalEngine *e, const char *id, const RenewalConfig *config)
{
        _cleanup_(credential_freep) Credential *c = NULL;
        RenewalCertInfo info = {};
        Credential *old, **l;
        int r;

        old = find(e, id, NULL);
        if (old) {
                old->config = *config;
                old->marked = false;
                if (old->state != RENEWAL_STATE_RENEWING) {
                        if (old->state == RENEWAL_STATE_SCHEDULED)
                                schedule(old, now_usec());
                        notify(e, old);
                        (void)arm(e);
                }
                return 0;
        }

        r = e->ops.read(id, &info, e->userdata);
        if (r < 0)
                return r;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->id = strdup(id);
        if (!c->id)
                return -ENOMEM;
        c->config = *config;
        c->seen = info;
        c->state = RENEWAL_STATE_SCHEDULED;
        /* Already due: at once (from the event loop), not after a retry period. */
        c->next = renewal_due_time(config, info.not_before, info.not_after);
        l = reallocarray(e->creds, e->n + 1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        e->creds = l;
        e->creds[e->n++] = c;
        log_debug("Tracking %s for renewal.", id);
        notify(e, c);
        c = NULL;
        return arm(e);
}

void renewal_engine_remove(RenewalEngine *e, const char *id)
{
        size_t index;

        if (!find(e, id, &index))
                return;
        drop(e, index, -ECANCELED);
        (void)arm(e);
}

void renewal_engine_mark(RenewalEngine *e)
{
        for (size_t i = 0; i < e->n; i++)
                e->creds[i]->marked = true;
}

void renewal_engine_sweep(RenewalEngine *e)
{
        for (size_t i = 0; i < e->n;) {
                if (e->creds[i]->marked) {
                        log_info("Not renewing %s any more: the configuration no longer names it.",
                                 e->creds[i]->id);
                        drop(e, i, -ECANCELED);
                        i = 0;
                } else
                        i++;
        }
        (void)arm(e);
}

bool renewal_engine_tracks(const RenewalEngine *e, const char *id)
{
        return e && find(e, id, NULL);
}

size_t renewal_engine_size(const RenewalEngine *e)
{
        return e ? e->n : 0;
}

bool renewal_engine_running(const RenewalEngine *e)
{
        for (size_t i = 0; e && i < e->n; i++)
                if (e->creds[i]->state == RENEWAL_STATE_RENEWING)
                        return true;
        return false;
}

RenewalState renewal_engine_state(const RenewalEngine *e, const char *id, uint64_t *ret_next)
{
        const Credential *c = e ? find(e, id, NULL) : NULL;

        if (ret_next)
                *ret_next = c && c->state != RENEWAL_STATE_RENEWING ? c->next : 0;
        return c ? c->state : RENEWAL_STATE_NONE;
}

void renewal_engine_finished(RenewalEngine *e, const char *id, int error, bool fatal,
                             const char *message)
{
        RenewalCertInfo info = {};
        uint64_t now = now_usec();
        Credential *c;
        size_t index;
        int r;

        c = find(e, id, &index);
        if (!c || c->state != RENEWAL_STATE_RENEWING)
                return; /* removed meanwhile */

        if (error >= 0) {
                r = e->ops.read(id, &info, e->userdata);
                if (r < 0) {
                        error = r;
                        message = "the renewed certificate cannot be read";
                } else {
                        c->seen = info;
                        c->state = RENEWAL_STATE_SCHEDULED;
                        schedule(c, now);
                        log_info("Renewed the certificate %s.", id);
                }
        }
        if (error < 0 && fatal) {
                log_error("Renewing %s failed for good%s%s; not renewing it any more.", id,
                          message ? ": " : "", strempty(message));
                drop(e, index, error);
                (void)arm(e);
                return;
        }
        if (error < 0) {
                c->state = RENEWAL_STATE_RETRYING;
                c->next = now + renewal_retry_period(&c->config, c->seen.not_before,
                                                     c->seen.not_after);
                log_warning("Renewing %s failed%s%s; retrying in %llu s, the current certificate "
                            "stays in use.",
                            id, message ? ": " : "", strempty(message),
                            (unsigned long long)((c->next - now) / RENEWAL_USEC_PER_SEC));
        }
        notify(e, c);
        settle_waits(e, c, error < 0 ? error : 0);
        (void)arm(e);
}

int renewal_engine_renew_now(RenewalEngine *e, const char *id, RenewalWaitCallback done,
                             void *userdata)
{
        Credential *c = find(e, id, NULL);
        RenewalWait *l;

        if (!c)
                return -ENOENT;
        if (c->state != RENEWAL_STATE_RENEWING &&
            renewal_due_time(&c->config, c->seen.not_before, c->seen.not_after) > now_usec())
                return 1;
        l = reallocarray(c->waits, c->n_waits + 1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        c->waits = l;
        c->waits[c->n_waits++] = (RenewalWait){ done, userdata };
        if (c->state != RENEWAL_STATE_RENEWING)
                start(e, c);
        (void)arm(e);
        return 0;
}

void renewal_engine_cancel_waits(RenewalEngine *e, void *userdata)
{
        for (size_t i = 0; e && i < e->n; i++) {
                Credential *c = e->creds[i];
                size_t k = 0;

                for (size_t j = 0; j < c->n_waits; j++)
                        if (c->waits[j].userdata != userdata)
                                c->waits[k++] = c->waits[j];
                c->n_waits = k;
        }
}
