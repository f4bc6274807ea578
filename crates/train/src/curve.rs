//! The loss curve as CSV: one row per optimizer step.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Result, TrainError};
use crate::trainer::StepReport;

pub const HEADER: &str =
    "step,epoch,lr,loss,grad_norm,eval_loss,eval_perplexity,tokens,tokens_per_s,elapsed_s";

/// The CSV text of `reports` (empty eval columns on steps without an evaluation).
pub fn to_csv(reports: &[StepReport]) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for r in reports {
        let (el, ep) = match r.eval {
            Some(e) => (format!("{:.6}", e.loss), format!("{:.4}", e.perplexity)),
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            out,
            "{},{:.4},{:.6e},{:.6},{:.6},{el},{ep},{},{:.1},{:.2}",
            r.step, r.epoch, r.lr, r.loss, r.grad_norm, r.tokens, r.tokens_per_s, r.elapsed_s
        );
    }
    out
}

/// Writes the curve to `path` (beside it first, then renamed into place).
pub fn write_csv(path: &Path, reports: &[StepReport]) -> Result<()> {
    let tmp = path.with_extension("csv.partial");
    std::fs::write(&tmp, to_csv(reports)).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}
