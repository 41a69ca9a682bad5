//! `commons store verify`: the node's store checked at rest.

use super::node::{human_bytes, plural};
use crate::Ctx;
use crate::error::Result;

/// `commons store verify`.
pub fn verify(ctx: &Ctx) -> Result<()> {
    let report = ctx.daemon()?.verify_store()?;
    ctx.emit(&report, || {
        let mut t = format!(
            "Checked {} and {} ({}) in {:.1} s; indexes rebuilt from the records.\n",
            plural(report.records, "record", "records"),
            plural(report.blobs, "blob", "blobs"),
            human_bytes(report.blob_bytes),
            report.millis as f64 / 1000.0
        );
        if report.damaged_records > 0 {
            t.push_str(&format!(
                "{} set aside as damaged (see `commons node status`); catch-up fetches good copies from peers.\n",
                plural(report.damaged_records, "record is", "records are")
            ));
        }
        if report.damaged_blobs.is_empty() {
            t.push_str("No damaged blob.\n");
        } else {
            t.push_str(&format!(
                "{} did not match {} hash, moved aside to blobs/damaged/ and wanted again from peers:\n",
                plural(report.damaged_blobs.len() as u64, "blob", "blobs"),
                if report.damaged_blobs.len() == 1 { "its" } else { "their" }
            ));
            for h in &report.damaged_blobs {
                t.push_str(&format!("  {h}\n"));
            }
        }
        t
    })
}
