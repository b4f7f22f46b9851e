//! Caller classes: `class` on a caller, per-class `max_wait` and `batch_share` in `rate_limit`.

use std::time::Duration;

use super::tests::{CYBERBIZ, find, location_of, parse_err, parse_ok};
use crate::config::{BatchShare, CallerClass, RateLimitConfig};

fn limit(rate_limit: &str) -> RateLimitConfig {
    let text = format!("{CYBERBIZ}rate_limit = {rate_limit}\n");
    let tenant = parse_ok(&text).config.tenants.into_iter().next().expect("one tenant");
    tenant.rate_limit.expect("a limit")
}

fn caller_text(class: &str) -> String {
    format!("{CYBERBIZ}[[caller]]\nname = \"sync\"\nkey = {{ env = \"ORDERS_SERVICE_KEY\" }}\n{class}")
}

#[test]
fn a_caller_is_standard_unless_it_names_its_class() {
    let classes = |text: &str| -> Vec<CallerClass> { parse_ok(text).config.callers.iter().map(|c| c.class).collect() };
    assert_eq!(classes(&caller_text("")), [CallerClass::Standard]);
    assert_eq!(classes(&caller_text("class = \"batch\"\n")), [CallerClass::Batch]);
    assert_eq!(
        classes(&caller_text("class = \"interactive\"\n")),
        [CallerClass::Interactive]
    );
}

#[test]
fn an_unknown_class_is_an_error_at_its_line() {
    let text = caller_text("class = \"urgent\"\n");
    let errors = parse_err(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = find(&errors, &["class", "`urgent` is not a class", "interactive"]);
    assert_eq!(error.location, location_of(&text, "\"urgent\""));
}

#[test]
fn a_plain_max_wait_covers_every_class_and_a_table_sets_some() {
    let plain = limit("{ per_second = 5, max_wait = \"3s\" }").max_wait;
    assert_eq!(plain.interactive, Duration::from_secs(3));
    assert_eq!(plain.standard, Duration::from_secs(3));
    assert_eq!(plain.batch, Duration::from_secs(3));
    let table = limit("{ per_second = 5, max_wait = { interactive = \"2s\", batch = \"2m\" } }").max_wait;
    assert_eq!(table.interactive, Duration::from_secs(2));
    assert_eq!(
        table.standard,
        Duration::from_secs(5),
        "an unset class keeps the default"
    );
    assert_eq!(table.batch, Duration::from_secs(120));
    let bad = format!("{CYBERBIZ}rate_limit = {{ per_second = 5, max_wait = {{ batch = \"soon\" }} }}\n");
    find(&parse_err(&bad), &["rate_limit.max_wait.batch"]);
    let unknown = format!("{CYBERBIZ}rate_limit = {{ per_second = 5, max_wait = {{ urgent = \"1s\" }} }}\n");
    find(&parse_err(&unknown), &["max_wait"]);
}

#[test]
fn batch_share_is_a_fraction_or_a_percentage() {
    assert_eq!(limit("{ per_second = 5 }").batch_share, BatchShare::DEFAULT);
    assert_eq!(limit("{ per_second = 5, batch_share = 0.25 }").batch_share.every(), 4);
    assert_eq!(
        limit("{ per_second = 5, batch_share = \"20%\" }").batch_share.every(),
        5
    );
    for bad in ["0", "1", "1.5", "-0.1", "\"0%\"", "\"100%\"", "\"ten\"", "\"10\""] {
        let text = format!("{CYBERBIZ}rate_limit = {{ per_second = 5, batch_share = {bad} }}\n");
        let errors = parse_err(&text);
        let error = find(&errors, &["rate_limit.batch_share", "between 0 and 1"]);
        assert!(error.location.starts_with("t.toml:5:"), "{bad}: {}", error.location);
    }
}

#[test]
fn a_tenants_lead_class_is_the_highest_among_the_callers_that_may_use_it() {
    let second = CYBERBIZ.replace("\"cb\"", "\"cb2\"");
    let callers = "[[caller]]\nname = \"sync\"\nkey = { env = \"ORDERS_SERVICE_KEY\" }\nclass = \"batch\"\n\
                   [[caller]]\nname = \"checkout\"\nkey = { env = \"ACME_ERP_SECRET\" }\nclass = \"interactive\"\n\
                   tenants = [\"cb2\"]\n";
    let leads = |text: &str| -> Vec<CallerClass> {
        let config = parse_ok(text).config;
        config
            .tenants
            .iter()
            .map(|t| t.rate_limit.expect("the preset's limit").lead)
            .collect()
    };
    assert_eq!(
        leads(&format!("{CYBERBIZ}{second}")),
        [CallerClass::Standard; 2],
        "no callers"
    );
    assert_eq!(
        leads(&format!("{CYBERBIZ}{second}{callers}")),
        [CallerClass::Batch, CallerClass::Interactive],
        "cb is used by batch only; cb2 also by an interactive caller"
    );
}
