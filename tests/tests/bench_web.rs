//! The `web` benchmark scenario at tiny sizes, with the e2e daemon: one real `commonsd` serving
//! its explorer, pages and static blobs fetched by the bench's own HTTP/1.1 clients. CI
//! exercises the code; the figures are `commons-bench web`'s (docs/benchmarks.md).

use commons_bench::{Opts, web_bench};
use commons_tests::daemon_bin;

#[test]
fn the_web_scenario_measures_three_pages_against_static_files_of_their_size() {
    let opts = Opts {
        history: 200,
        web_clients: 4,
        quiet: true,
        commonsd: Some(daemon_bin!()),
        ..Opts::default()
    };
    let rows = web_bench::run(&opts).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let expected = 4 * web_bench::REQUESTS;
    for r in &rows {
        assert_eq!(r.scenario, "web");
        assert!(
            r.metric.contains(&format!(
                "p99 of {expected} requests by 4 concurrent clients"
            )),
            "{r:?}"
        );
        assert!(r.metric.contains("200-patch commons"), "{r:?}");
        assert!(r.pass.is_some(), "a target: {r:?}");
        assert!(r.value.is_finite() && r.value > 0.0, "{r:?}");
        let reference = r.reference.as_ref().expect("a reference");
        assert!(
            reference.value.is_finite() && reference.value > 0.0,
            "{r:?}"
        );
        assert!(r.ratio.is_some_and(f64::is_finite), "{r:?}");
    }
    // 200 patches are 4 pages: the older page asked for is the last.
    assert!(rows[2].metric.contains("?page=4 (of 4)"), "{:?}", rows[2]);
}
