//! The `fork` benchmark scenario at tiny sizes, with the e2e binaries: two real `commonsd`, a
//! real `commons fork` process, a follower getting the fork by gossip. CI exercises the code;
//! the figures are `commons-bench fork`'s (docs/benchmarks.md).

use commons_bench::{Opts, Shared, fork_bench};
use commons_tests::{bin, daemon_bin};

#[test]
fn the_fork_scenario_runs_end_to_end_and_gives_rows_with_targets() {
    let opts = Opts {
        fork_small: 20,
        history: 200,
        quiet: true,
        commonsd: Some(daemon_bin!()),
        commons: Some(bin!()),
        ..Opts::default()
    };
    let rows = fork_bench::fork(&opts, &mut Shared::default()).unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    for r in &rows {
        assert_eq!(r.scenario, "fork");
        assert!(r.pass.is_some(), "a target: {r:?}");
        assert!(r.value.is_finite() && r.value > 0.0, "{r:?}");
    }
}
