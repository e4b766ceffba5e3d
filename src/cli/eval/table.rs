//! The rows of `spire eval`: speed and quality per setting, as a table, JSON and plot data.

use std::path::Path;

use serde::Serialize;

use crate::eval::bootstrap::Interval;
use crate::eval::quality::Quality;

use super::plot::{Frontier, Point};
use super::speed::Speed;
use super::sweep::Setting;
use super::EvalArgs;

/// One row: a setting (or the test split), its speed and its quality.
#[derive(Clone, Debug, Serialize)]
pub struct EvalRow {
    /// `mode key=value ...`, or `test split`.
    pub setting: String,
    /// The decoding mode (`ar`, `vanilla`, `cool`, ...; `mar`, `cspd`); absent for the test split.
    pub mode: Option<String>,
    /// Whether this is plain decoding (AR, or plain MAR), the baseline.
    #[serde(skip)]
    pub baseline: bool,
    /// The plot curve the row belongs to.
    pub curve: Option<String>,
    /// The swept flags and their values.
    pub swept: Vec<(String, String)>,
    /// Speed (absent for the test split).
    pub speed: Option<Speed>,
    /// FID, accuracy, precision, recall.
    #[serde(flatten)]
    pub quality: Quality,
    /// FID minus the baseline's FID (AR, or plain MAR) and its paired-bootstrap interval.
    pub fid_minus_ar: Option<(f64, Interval)>,
}

impl EvalRow {
    /// The row of the test split.
    pub fn test_split(quality: Quality) -> Self {
        Self { setting: "test split".into(), mode: None, baseline: false, curve: None, swept: Vec::new(), speed: None, quality, fid_minus_ar: None }
    }

    /// The row of `setting`.
    pub fn measured<F>(setting: &Setting<F>, speed: Speed, quality: Quality) -> Self {
        Self {
            setting: setting.label(),
            mode: Some(setting.name.clone()),
            baseline: setting.is_baseline(),
            curve: Some(setting.curve()),
            swept: setting.swept.clone(),
            speed: Some(speed),
            quality,
            fid_minus_ar: None,
        }
    }
}

/// Everything `spire eval` measured.
#[derive(Debug, Serialize)]
pub struct EvalReport {
    /// The weights directory.
    pub weights: String,
    /// Images per setting.
    pub images: usize,
    /// Test-split images in its reference row.
    pub test_images: usize,
    /// Classifier-free guidance scale.
    pub cfg: f32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Images per batch.
    pub batch: usize,
    /// The baseline's mode: `ar` (LlamaGen) or `mar` (plain MAR).
    pub baseline: String,
    /// The decoding settings every row shares, where the family has more than the above (MAR:
    /// steps, guidance schedule, the CSpD options before sweeps).
    pub decoding: Option<String>,
    /// The evaluation network's test accuracy.
    pub eval_net_test_accuracy: f64,
    /// The rows, test split and the baseline first.
    pub rows: Vec<EvalRow>,
}

impl EvalReport {
    /// The report, with speedups and FID differences against the baseline row.
    pub fn new(weights: &Path, args: &EvalArgs, decoding: Option<String>, eval_net_test_accuracy: f64, test_images: usize, mut rows: Vec<EvalRow>) -> Self {
        let ar = rows.iter().find(|r| r.baseline).cloned();
        if let Some(ar) = &ar {
            let ar_latency = ar.speed.as_ref().map_or(f64::NAN, |s| s.latency_ms_per_image);
            for row in rows.iter_mut().filter(|r| r.speed.is_some()) {
                if let Some(speed) = row.speed.as_mut() {
                    speed.speedup_vs_ar = ar_latency / speed.latency_ms_per_image;
                }
                row.fid_minus_ar = Some((row.quality.fid - ar.quality.fid, row.quality.fid_difference_interval(&ar.quality)));
            }
        }
        Self {
            weights: weights.display().to_string(),
            images: args.images,
            test_images,
            cfg: args.sampling.cfg,
            temperature: args.sampling.temperature,
            batch: args.batch,
            baseline: ar.and_then(|r| r.mode).unwrap_or_default(),
            decoding,
            eval_net_test_accuracy,
            rows,
        }
    }

    /// The plot: one curve per rule setting (AR and the test split as reference lines).
    pub fn frontier(&self) -> Frontier {
        let mut curves: Vec<(String, Vec<Point>)> = Vec::new();
        for row in &self.rows {
            let (Some(curve), Some(speed)) = (&row.curve, &row.speed) else { continue };
            if row.baseline {
                continue;
            }
            let q = &row.quality;
            let point = Point { x: speed.tokens_per_target_forward, fid: q.fid, lo: q.fid_interval.lo, hi: q.fid_interval.hi };
            match curves.iter_mut().find(|(name, _)| name == curve) {
                Some((_, points)) => points.push(point),
                None => curves.push((curve.clone(), vec![point])),
            }
        }
        let references = self
            .rows
            .iter()
            .filter(|r| r.baseline || r.mode.is_none())
            .map(|r| (format!("{} (FID {:.2})", if r.baseline { self.baseline.to_uppercase() } else { "test split".into() }, r.quality.fid), r.quality.fid))
            .collect();
        Frontier {
            title: "FID against tokens per target forward".into(),
            subtitle: format!("{} images per point, {} (cfg {}, temperature {}), 95% bootstrap intervals", self.images, self.weights, self.cfg, self.temperature),
            curves,
            references,
        }
    }
}

/// Print the report as one table.
pub fn print_table(report: &EvalReport) {
    println!(
        "weights {}, {} images per setting (test split: {}), cfg {}, temperature {}, batch {}; eval net test accuracy {:.3}; ± and [..]: 95% bootstrap intervals",
        report.weights,
        report.images,
        report.test_images,
        report.cfg,
        report.temperature,
        report.batch,
        report.eval_net_test_accuracy
    );
    if let Some(decoding) = &report.decoding {
        println!("{decoding}");
    }
    let width = report.rows.iter().map(|r| r.setting.len()).max().unwrap_or(7).max(7);
    println!(
        "{:<width$} {:>10} {:>7} {:>8} {:>9} {:>7} {:>14} {:>24} {:>14} {:>9} {:>6}",
        "setting",
        "tokens/fwd",
        "acc len",
        "acc rate",
        "ms/image",
        "speedup",
        "FID",
        format!("FID - {} [95% CI]", report.baseline.to_uppercase()),
        "accuracy",
        "precision",
        "recall"
    );
    let dash = || "-".to_string();
    for r in &report.rows {
        let q = &r.quality;
        let speed = r.speed.as_ref();
        println!(
            "{:<width$} {:>10} {:>7} {:>8} {:>9} {:>7} {:>14} {:>24} {:>14} {:>9.3} {:>6.3}",
            r.setting,
            speed.map_or_else(dash, |s| format!("{:.2}", s.tokens_per_target_forward)),
            speed.and_then(|s| s.mean_accepted_length).map_or_else(dash, |l| format!("{l:.2}")),
            speed.and_then(|s| s.acceptance_rate).map_or_else(dash, |a| format!("{a:.3}")),
            speed.map_or_else(dash, |s| format!("{:.1}", s.latency_ms_per_image)),
            speed.map_or_else(dash, |s| format!("{:.2}x", s.speedup_vs_ar)),
            format!("{:.2} ± {:.2}", q.fid, q.fid_interval.half_width()),
            r.fid_minus_ar.filter(|_| !r.baseline).map_or_else(dash, |(d, i)| format!("{d:+.2} [{:+.2}, {:+.2}]", i.lo, i.hi)),
            format!("{:.3} ± {:.3}", q.accuracy, q.accuracy_interval.half_width()),
            q.precision_recall.precision,
            q.precision_recall.recall,
        );
    }
}
