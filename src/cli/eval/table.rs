//! The rows of `spire eval`: speed and quality per setting, as a table, JSON and plot data.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::engine::GenerationStats;
use crate::eval::bootstrap::Interval;
use crate::eval::quality::Quality;

use super::plot::{Frontier, Point};
use super::sweep::{mode_name, Setting};
use super::EvalArgs;

/// How fast a setting generated.
#[derive(Clone, Debug, Serialize)]
pub struct Speed {
    /// Image tokens per target forward pass.
    pub tokens_per_target_forward: f64,
    /// Mean accepted length per verification (absent for AR).
    pub mean_accepted_length: Option<f64>,
    /// Generation wall time per image (a batch's images share it).
    pub latency_ms_per_image: f64,
    /// AR latency over this one, measured in the same run.
    pub speedup_vs_ar: f64,
}

impl Speed {
    /// The speed of `images` images with summed `stats`, generated in `wall`.
    pub fn new(stats: &GenerationStats, wall: Duration, images: usize) -> Self {
        Self {
            tokens_per_target_forward: stats.tokens_per_target_forward(),
            mean_accepted_length: (stats.drafted > 0).then(|| stats.mean_accepted_length()),
            latency_ms_per_image: wall.as_secs_f64() * 1e3 / images as f64,
            speedup_vs_ar: 1.0,
        }
    }
}

/// One row: a setting (or the test split), its speed and its quality.
#[derive(Clone, Debug, Serialize)]
pub struct EvalRow {
    /// `mode key=value ...`, or `test split`.
    pub setting: String,
    /// The decoding mode (`ar`, `vanilla`, `cool`, ...); absent for the test split.
    pub mode: Option<String>,
    /// The plot curve the row belongs to.
    pub curve: Option<String>,
    /// The swept flags and their values.
    pub swept: Vec<(String, String)>,
    /// Speed (absent for the test split).
    pub speed: Option<Speed>,
    /// FID, accuracy, precision, recall.
    #[serde(flatten)]
    pub quality: Quality,
    /// FID minus AR's FID and its paired-bootstrap interval.
    pub fid_minus_ar: Option<(f64, Interval)>,
}

impl EvalRow {
    /// A row named `name` for `setting` (none for the test split).
    pub fn new(name: String, setting: Option<&Setting>, speed: Option<Speed>, quality: Quality) -> Self {
        Self {
            setting: name,
            mode: setting.map(|s| mode_name(s.mode)),
            curve: setting.map(Setting::curve),
            swept: setting.map_or_else(Vec::new, |s| s.swept.clone()),
            speed,
            quality,
            fid_minus_ar: None,
        }
    }

    fn is_ar(&self) -> bool {
        self.mode.as_deref() == Some("ar")
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
    /// The evaluation network's test accuracy.
    pub eval_net_test_accuracy: f64,
    /// The rows, test split and AR first.
    pub rows: Vec<EvalRow>,
}

impl EvalReport {
    /// The report, with speedups and FID differences against the AR row.
    pub fn new(weights: &Path, args: &EvalArgs, eval_net_test_accuracy: f64, test_images: usize, mut rows: Vec<EvalRow>) -> Self {
        if let Some(ar) = rows.iter().find(|r| r.is_ar()).cloned() {
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
            eval_net_test_accuracy,
            rows,
        }
    }

    /// The plot: one curve per rule setting (AR and the test split as reference lines).
    pub fn frontier(&self) -> Frontier {
        let mut curves: Vec<(String, Vec<Point>)> = Vec::new();
        for row in &self.rows {
            let (Some(curve), Some(speed)) = (&row.curve, &row.speed) else { continue };
            if row.is_ar() {
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
            .filter(|r| r.is_ar() || r.mode.is_none())
            .map(|r| (format!("{} (FID {:.2})", if r.is_ar() { "AR" } else { "test split" }, r.quality.fid), r.quality.fid))
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
    let width = report.rows.iter().map(|r| r.setting.len()).max().unwrap_or(7).max(7);
    println!(
        "{:<width$} {:>10} {:>7} {:>9} {:>7} {:>14} {:>22} {:>14} {:>9} {:>6}",
        "setting", "tokens/fwd", "acc len", "ms/image", "speedup", "FID", "FID - AR [95% CI]", "accuracy", "precision", "recall"
    );
    let dash = || "-".to_string();
    for r in &report.rows {
        let q = &r.quality;
        let speed = r.speed.as_ref();
        println!(
            "{:<width$} {:>10} {:>7} {:>9} {:>7} {:>14} {:>22} {:>14} {:>9.3} {:>6.3}",
            r.setting,
            speed.map_or_else(dash, |s| format!("{:.2}", s.tokens_per_target_forward)),
            speed.and_then(|s| s.mean_accepted_length).map_or_else(dash, |l| format!("{l:.2}")),
            speed.map_or_else(dash, |s| format!("{:.1}", s.latency_ms_per_image)),
            speed.map_or_else(dash, |s| format!("{:.2}x", s.speedup_vs_ar)),
            format!("{:.2} ± {:.2}", q.fid, q.fid_interval.half_width()),
            r.fid_minus_ar.filter(|_| !r.is_ar()).map_or_else(dash, |(d, i)| format!("{d:+.2} [{:+.2}, {:+.2}]", i.lo, i.hi)),
            format!("{:.3} ± {:.3}", q.accuracy, q.accuracy_interval.half_width()),
            q.precision_recall.precision,
            q.precision_recall.recall,
        );
    }
}
