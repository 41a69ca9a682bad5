//! A quick run of the in-process scenarios with tiny sizes, so that CI exercises the code (the
//! fork scenario, which starts daemons, runs in `tests/tests/bench_fork.rs`).

use commons_bench::{Opts, Shared, store, table};

#[test]
fn in_process_scenarios_give_rows_with_finite_ratios() {
    let opts = Opts {
        records: 200,
        batch: 50,
        fork_small: 20,
        history: 200,
        state_reps: 2,
        quiet: true,
        ..Opts::default()
    };
    let mut shared = Shared::default();
    let mut rows = store::ingest(&opts, &mut shared).unwrap();
    rows.extend(store::state(&opts, &mut shared).unwrap());
    for scenario in ["ingest", "state"] {
        assert!(
            rows.iter()
                .any(|r| r.scenario == scenario && r.pass.is_some()),
            "no row with a target for {scenario}"
        );
    }
    for r in &rows {
        assert!(r.value.is_finite() && r.value >= 0.0, "{r:?}");
        if let Some(ratio) = r.ratio {
            assert!(ratio.is_finite() && ratio >= 0.0, "{r:?}");
        }
    }
    let t = table(&rows);
    assert!(t.lines().count() > rows.len() + 1, "{t}");
    assert!(serde_json::to_string(&rows).unwrap().contains("\"ratio\""));
}
