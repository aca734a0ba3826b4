//! The mirror's copy of a write, with the authority's transaction time pinned,
//! runs on real PostgreSQL and stores exactly the authority's values.

use turnout_harness::{PgInstance, PgOptions};
use turnout_proxy::engine::pin::pin_transaction_time;

#[test]
fn pinned_statements_store_the_authoritys_time_on_real_postgres() {
    let pg = PgInstance::start(PgOptions::default()).expect("start PostgreSQL");
    pg.psql(
        "postgres",
        "CREATE TABLE h (id int, at timestamptz, local timestamp, day date, t timetz)",
    )
    .unwrap();
    // The authority's transaction time, as PostgreSQL prints it.
    let authority_now = pg.psql("postgres", "SELECT now()").unwrap();
    let statement = "INSERT INTO h VALUES (1, now(), LOCALTIMESTAMP, CURRENT_DATE, CURRENT_TIME); \
                     INSERT INTO h SELECT 2, transaction_timestamp(), localtimestamp, current_date, current_time";
    let (pinned, changed) = pin_transaction_time(statement, &authority_now).unwrap();
    assert!(changed);
    std::thread::sleep(std::time::Duration::from_millis(20));
    pg.psql("postgres", &pinned).expect("pinned SQL runs");
    let check = format!(
        "SELECT count(*) FROM h WHERE at = '{authority_now}'::timestamptz \
         AND local = '{authority_now}'::timestamptz::timestamp \
         AND day = '{authority_now}'::timestamptz::date \
         AND t = '{authority_now}'::timestamptz::timetz"
    );
    assert_eq!(pg.psql("postgres", &check).unwrap(), "2", "{pinned}");
}
