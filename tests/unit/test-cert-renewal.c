/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "cert-renewal.h"
#include "macro.h"

#define SEC RENEWAL_USEC_PER_SEC
#define MINUTE (60 * SEC)
#define DAY (24 * 60 * MINUTE)

static void test_policy_parse(void **state)
{
        RenewalPolicy p;

        assert_int_equal(renewal_policy_parse("80%", &p), 0);
        assert_int_equal(p.kind, RENEWAL_POLICY_PERCENT);
        assert_int_equal(p.value, 80);
        assert_int_equal(renewal_policy_parse("1%", &p), 0);
        assert_int_equal(renewal_policy_parse("99%", &p), 0);
        assert_int_equal(p.value, 99);
        assert_int_equal(renewal_policy_parse("5min", &p), 0);
        assert_int_equal(p.kind, RENEWAL_POLICY_TIME);
        assert_int_equal(p.value, 5 * MINUTE);
        assert_int_equal(renewal_policy_parse("2day", &p), 0);
        assert_int_equal(p.value, 2 * DAY);

        for (const char *const *bad = (const char *const[]){ "0%", "100%", "0min", "0day", "",
                                                             "%", "min", "80", "80 %", " 80%",
                                                             "-5%", "05%", "1.5day", "5mins",
                                                             "5MIN", "3hour", "5sec",
                                                             "99999999999999999999day",
                                                             "400000000000day", NULL };
             *bad; bad++)
                assert_int_equal(renewal_policy_parse(*bad, &p), -EINVAL);
        assert_int_equal(renewal_policy_parse(NULL, &p), -EINVAL);
}

static void test_schedule_percent(void **state)
{
        RenewalConfig c = RENEWAL_CONFIG_DEFAULT;
        uint64_t nb = 1000 * DAY, na = nb + 100 * DAY;

        assert_true(c.rotate_key);
        assert_int_equal(renewal_due_time(&c, nb, na), nb + 80 * DAY);
        assert_int_equal(renewal_retry_period(&c, nb, na), 4 * DAY);
        /* Before the threshold: the threshold. After: now + retry. */
        assert_int_equal(renewal_next_time(&c, nb, na, nb + DAY), nb + 80 * DAY);
        assert_int_equal(renewal_next_time(&c, nb, na, nb + 90 * DAY), nb + 94 * DAY);
        /* Expired already: still now + retry. */
        assert_int_equal(renewal_next_time(&c, nb, na, na + DAY), na + 5 * DAY);
}

static void test_schedule_time(void **state)
{
        RenewalConfig c = RENEWAL_CONFIG_DEFAULT;
        uint64_t nb = 1000 * DAY, na = nb + 10 * MINUTE;

        assert_int_equal(renewal_policy_parse("3min", &c.threshold), 0);
        assert_int_equal(renewal_policy_parse("1min", &c.retry), 0);
        assert_int_equal(renewal_due_time(&c, nb, na), na - 3 * MINUTE);
        assert_int_equal(renewal_retry_period(&c, nb, na), MINUTE);
        /* A threshold longer than the lifetime: due at once. */
        assert_int_equal(renewal_policy_parse("1day", &c.threshold), 0);
        assert_true(renewal_due_time(&c, nb, na) < nb);
}

static void test_retry_minimum(void **state)
{
        RenewalConfig c = RENEWAL_CONFIG_DEFAULT;

        /* 4% of 10 s is 0.4 s: one second at least. */
        assert_int_equal(renewal_retry_period(&c, 0, 10 * SEC), SEC);
        /* A zero or negative lifetime. */
        assert_int_equal(renewal_retry_period(&c, 5 * SEC, 5 * SEC), SEC);
        assert_int_equal(renewal_retry_period(&c, 6 * SEC, 5 * SEC), SEC);
}

static int parse_config(const char *text, RenewalConfig *c, ConfigError *err)
{
        _cleanup_toml_ TomlValue *root = NULL;
        const TomlValue *t = NULL;
        TomlError terr = {};

        assert_int_equal(toml_parse(text, strlen(text), &root, &terr), 0);
        t = toml_table_get(root, "auto");
        return renewal_config_from_toml(t, "auto", c, err);
}

static void test_config_toml(void **state)
{
        RenewalConfig c;
        ConfigError err = {};

        assert_int_equal(renewal_config_from_toml(NULL, "x", &c, &err), 0);
        assert_int_equal(c.threshold.value, 80);
        assert_int_equal(parse_config("[auto]\nrotate_key = false\nthreshold = \"10min\"\n"
                                      "retry = \"2%\"\n",
                                      &c, &err),
                         0);
        assert_false(c.rotate_key);
        assert_int_equal(c.threshold.kind, RENEWAL_POLICY_TIME);
        assert_int_equal(c.threshold.value, 10 * MINUTE);
        assert_int_equal(c.retry.value, 2);

        assert_int_equal(parse_config("[auto]\nthreshold = \"100%\"\n", &c, &err), -EINVAL);
        assert_non_null(strstr(err.message, "threshold"));
        config_error_done(&err);
        assert_true(parse_config("[auto]\nretry = 5\n", &c, &err) < 0);
        assert_true(err.message[0] != 0);
        config_error_done(&err);
        assert_true(parse_config("[auto]\nrotate_key = \"yes\"\n", &c, &err) < 0);
        assert_true(err.message[0] != 0);
        config_error_done(&err);
        assert_true(parse_config("auto = 3\n", &c, &err) < 0);
        assert_true(err.message[0] != 0);
        config_error_done(&err);
}

/* The engine on a real event loop, with certificates that are only validity windows. */
typedef struct Fake {
        sd_event *event;
        RenewalEngine *engine;
        uint64_t not_before, not_after;
        uint8_t digest;
        int renewals, fail_next, changes, wait_result, waits_done;
        bool sync;
} Fake;

static uint64_t now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec / 1000;
}

static int fake_read(const char *id, RenewalCertInfo *ret, void *userdata)
{
        Fake *f = userdata;

        if (!streq(id, "est-id"))
                return -ENOENT;
        *ret = (RenewalCertInfo){ .not_before = f->not_before, .not_after = f->not_after };
        ret->digest[0] = f->digest;
        return 0;
}

static int fake_renew(RenewalEngine *e, const char *id, const RenewalConfig *config,
                      void *userdata)
{
        Fake *f = userdata;

        f->renewals++;
        if (f->fail_next) {
                f->fail_next--;
                renewal_engine_finished(e, id, -ECONNREFUSED, false, "server down");
                return 0;
        }
        /* A new certificate of the same lifetime, from now. */
        f->not_after = now() + (f->not_after - f->not_before);
        f->not_before = now();
        f->digest++;
        renewal_engine_finished(e, id, 0, false, NULL);
        return 0;
}

static void fake_changed(const char *id, void *userdata)
{
        ((Fake *)userdata)->changes++;
}

static void fake_wait_done(void *userdata, int error)
{
        Fake *f = userdata;

        f->waits_done++;
        f->wait_result = error;
}

static void run_for(Fake *f, uint64_t usec)
{
        uint64_t end = now() + usec;

        while (now() < end)
                assert_true(sd_event_run(f->event, 10 * 1000) >= 0);
}

static void fake_setup(Fake *f, uint64_t lifetime, uint64_t age)
{
        static const RenewalOps ops = { fake_read, fake_renew, fake_changed };

        *f = (Fake){ .not_before = now() - age };
        f->not_after = f->not_before + lifetime;
        assert_int_equal(sd_event_new(&f->event), 0);
        assert_int_equal(renewal_engine_new(f->event, &ops, f, &f->engine), 0);
}

static void fake_teardown(Fake *f)
{
        renewal_engine_free(f->engine);
        sd_event_unref(f->event);
}

static void test_engine_renews_when_due(void **state)
{
        RenewalConfig c = RENEWAL_CONFIG_DEFAULT;
        uint64_t next;
        Fake f;

        /* 10 s lifetime, threshold 50%: due 5 s after notBefore, which was 4.7 s ago. */
        fake_setup(&f, 10 * SEC, 4700 * 1000);
        c.threshold.value = 50;
        assert_int_equal(renewal_engine_add(f.engine, "est-id", &c), 0);
        assert_int_equal(renewal_engine_add(f.engine, "missing", &c), -ENOENT);
        assert_int_equal(renewal_engine_size(f.engine), 1);
        assert_int_equal(renewal_engine_state(f.engine, "est-id", &next), RENEWAL_STATE_SCHEDULED);
        assert_true(next > now());
        run_for(&f, 100 * 1000);
        assert_int_equal(f.renewals, 0);
        run_for(&f, 400 * 1000);
        assert_int_equal(f.renewals, 1);
        /* Rescheduled from the new certificate: 5 s later. */
        assert_int_equal(renewal_engine_state(f.engine, "est-id", &next), RENEWAL_STATE_SCHEDULED);
        assert_true(next > now() + 4 * SEC);
        assert_true(f.changes >= 2);
        fake_teardown(&f);
}

static void test_engine_due_at_add_and_retry(void **state)
{
        RenewalConfig c = RENEWAL_CONFIG_DEFAULT;
        Fake f;

        /* Past the threshold when added: renewed at once; failures retry after the retry
         * period (1 s minimum: 4% of 10 s is less). */
        fake_setup(&f, 10 * SEC, 9 * SEC);
        f.fail_next = 2;
        assert_int_equal(renewal_engine_add(f.engine, "est-id", &c), 0);
        run_for(&f, 200 * 1000);
        assert_int_equal(f.renewals, 1);
        assert_int_equal(renewal_engine_state(f.engine, "est-id", NULL), RENEWAL_STATE_RETRYING);
        run_for(&f, 1100 * 1000);
        assert_int_equal(f.renewals, 2);
        run_for(&f, 1100 * 1000);
        assert_int_equal(f.renewals, 3);
        assert_int_equal(renewal_engine_state(f.engine, "est-id", NULL), RENEWAL_STATE_SCHEDULED);
        fake_teardown(&f);
}

static void test_engine_changed_behind_its_back(void **state)
{
        RenewalConfig c = RENEWAL_CONFIG_DEFAULT;
        Fake f;

        fake_setup(&f, 10 * SEC, 7900 * 1000);
        assert_int_equal(renewal_engine_add(f.engine, "est-id", &c), 0);
        f.digest = 42; /* replaced by someone else */
        run_for(&f, 300 * 1000);
        assert_int_equal(f.renewals, 0);
        assert_false(renewal_engine_tracks(f.engine, "est-id"));
        fake_teardown(&f);
}

static void test_engine_renew_now_and_sweep(void **state)
{
        RenewalConfig c = RENEWAL_CONFIG_DEFAULT;
        Fake f;

        fake_setup(&f, 100 * SEC, SEC);
        assert_int_equal(renewal_engine_add(f.engine, "est-id", &c), 0);
        /* Not due: use it now. */
        assert_int_equal(renewal_engine_renew_now(f.engine, "est-id", fake_wait_done, &f), 1);
        assert_int_equal(renewal_engine_renew_now(f.engine, "nope", fake_wait_done, &f), -ENOENT);
        /* Due: renewed, then the wait is told. */
        f.not_before = now() - 90 * SEC;
        f.not_after = f.not_before + 100 * SEC;
        renewal_engine_remove(f.engine, "est-id");
        assert_int_equal(renewal_engine_add(f.engine, "est-id", &c), 0);
        f.fail_next = 1;
        f.wait_result = 1;
        assert_true(renewal_engine_renew_now(f.engine, "est-id", fake_wait_done, &f) >= 0);
        assert_int_equal(f.waits_done, 1);
        assert_int_equal(f.wait_result, -ECONNREFUSED);
        assert_int_equal(renewal_engine_renew_now(f.engine, "est-id", fake_wait_done, &f), 0);
        assert_int_equal(f.waits_done, 2);
        assert_int_equal(f.wait_result, 0);

        /* A reload that no longer names it. */
        renewal_engine_mark(f.engine);
        renewal_engine_sweep(f.engine);
        assert_int_equal(renewal_engine_size(f.engine), 0);
        renewal_engine_mark(f.engine);
        assert_int_equal(renewal_engine_add(f.engine, "est-id", &c), 0);
        renewal_engine_sweep(f.engine);
        assert_int_equal(renewal_engine_size(f.engine), 1);
        fake_teardown(&f);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_policy_parse),
                cmocka_unit_test(test_schedule_percent),
                cmocka_unit_test(test_schedule_time),
                cmocka_unit_test(test_retry_minimum),
                cmocka_unit_test(test_config_toml),
                cmocka_unit_test(test_engine_renews_when_due),
                cmocka_unit_test(test_engine_due_at_add_and_retry),
                cmocka_unit_test(test_engine_changed_behind_its_back),
                cmocka_unit_test(test_engine_renew_now_and_sweep),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
