//! `spire eval` on a MAR directory: plain MAR (the baseline) against continuous speculative
//! decoding (`cspd`), on the CPU through `MarEngine`; `--sweep` varies the CSpD flags
//! (`gamma=4,8,16,32`, `variance-factor=paper,code`, ...). Images are scored by the network of
//! the directory, or by weights/demo's (the same 32x32 Fashion-MNIST images as weights/demo-mar).

use std::path::PathBuf;

use crate::decode::cspd::{CspdOptions, CspdStats};
use crate::engine::{MarDraft, MarEngine, MarRequest};
use crate::eval::net::EVAL_NET_CONFIG;
use crate::decode::mar::MarSampling;
use crate::Image;

use crate::cli::mar::{describe_draft, describe_options, generate_batch, load, refuse_llamagen_flags};
use crate::cli::mar_args::MarArgs;
use crate::cli::spec_args::SpecMode;

use super::score::Scorer;
use super::sweep::{expand, Setting, SweepFlags};
use super::{evaluate, EvalArgs, Family};

/// Where the evaluation network is looked for when the MAR directory has none.
const DEFAULT_EVAL_NET: &str = "weights/demo";

impl SweepFlags for MarArgs {
    type Config = Option<(Vec<CspdOptions>, MarDraft)>;

    fn config(&self, mode: SpecMode) -> Self::Config {
        (mode == SpecMode::Cspd).then(|| (self.options(&self.gammas(&[CspdOptions::default().gamma])), self.draft()))
    }
}

/// The CSpD options of one setting (error unless it has one γ).
fn cspd_options(flags: &MarArgs) -> anyhow::Result<CspdOptions> {
    let gammas = flags.gammas(&[CspdOptions::default().gamma]);
    anyhow::ensure!(gammas.len() == 1, "eval takes one --gamma value per setting; measure several with --sweep gamma=4,8,16,32");
    Ok(flags.options(&gammas)[0])
}

/// A MAR engine with the run's sampling settings.
struct Mar<'a> {
    engine: &'a MarEngine,
    sampling: MarSampling,
}

impl Family for Mar<'_> {
    type Flags = MarArgs;
    type Tokens = Vec<f32>;
    type Counts = CspdStats;

    fn classes(&self) -> u32 {
        self.engine.config().mar.class_num as u32
    }

    fn generate(&self, setting: &Setting<MarArgs>, images: &[(u32, u64)]) -> anyhow::Result<(Vec<Vec<f32>>, CspdStats)> {
        let requests: Vec<MarRequest> = images.iter().map(|&(class, seed)| MarRequest { class: class as usize, seed, sampling: self.sampling }).collect();
        let options = (setting.mode == SpecMode::Cspd).then(|| cspd_options(&setting.flags)).transpose()?;
        generate_batch(self.engine, &requests, options.as_ref(), setting.flags.draft())
    }

    fn decode(&self, tokens: &Vec<f32>) -> anyhow::Result<Image> {
        Ok(self.engine.decode(tokens)?)
    }
}

/// The directory of the evaluation network: `--eval-net`, the weights directory if it has one,
/// or [`DEFAULT_EVAL_NET`].
fn eval_net_dir(args: &EvalArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.eval_net {
        return Ok(dir.clone());
    }
    if args.model.weights.join(EVAL_NET_CONFIG).exists() {
        return Ok(args.model.weights.clone());
    }
    let dir = PathBuf::from(DEFAULT_EVAL_NET);
    anyhow::ensure!(
        dir.join(EVAL_NET_CONFIG).exists(),
        "no evaluation network: {} has no {EVAL_NET_CONFIG} and neither has {DEFAULT_EVAL_NET} (run from the repository root, or pass --eval-net DIR)",
        args.model.weights.display()
    );
    Ok(dir)
}

/// Refuse LlamaGen-only flags, then measure plain MAR and every CSpD setting.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let modes = args.modes.clone().unwrap_or_else(|| vec![SpecMode::Cspd]);
    refuse_llamagen_flags(&args.model, &args.sampling, &modes)?;
    let changed = args.spec.changed();
    anyhow::ensure!(changed.is_empty(), "{} set{} LlamaGen's speculative rules; a MAR directory decodes with CSpD (--gamma, --cspd-preset, --variance-factor, ...)", changed.join(", "), if changed.len() == 1 { "s" } else { "" });
    let settings = expand(&modes, &args.mar, &args.sweep, "mar")?;
    for setting in settings.iter().filter(|s| s.mode == SpecMode::Cspd) {
        cspd_options(&setting.flags)?;
    }
    let scorer = Scorer::load(&eval_net_dir(args)?, args.resamples)?;
    let engine = load(&args.model.weights)?;
    anyhow::ensure!(
        engine.has_draft() || !settings.iter().any(|s| s.mode == SpecMode::Cspd && s.flags.draft() == MarDraft::Section),
        "{} has no \"draft\" section for CSpD: add one (tools/convert_mar.py --section draft), or draft with the target itself (--self-draft)",
        args.model.weights.display()
    );
    let sampling = args.mar.sampling(engine.config().mar.seq_len(), args.sampling.cfg, args.sampling.temperature);
    let decoding = format!(
        "MAR: {} steps, {} guidance schedule; CSpD{}: draft {}, {}",
        sampling.num_iter,
        format!("{:?}", sampling.cfg_schedule).to_lowercase(),
        if args.sweep.is_empty() { "" } else { " before --sweep" },
        describe_draft(args.mar.draft()),
        describe_options(&cspd_options(&args.mar)?)
    );
    evaluate(&Mar { engine: &engine, sampling }, &args.model.weights, &settings, &scorer, Some(decoding), args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mar_sweeps_vary_the_cspd_flags_only() {
        let settings = expand(&[SpecMode::Cspd], &MarArgs::default(), &["gamma=4,8,16,32".parse().unwrap()], "mar").unwrap();
        let labels: Vec<String> = settings.iter().map(Setting::label).collect();
        assert_eq!(labels, ["mar", "cspd gamma=4", "cspd gamma=8", "cspd gamma=16", "cspd gamma=32"]);
        assert_eq!(cspd_options(&settings[3].flags).unwrap().gamma, 16);
        assert_eq!(settings[1].curve(), "cspd");
        let base = MarArgs { self_draft: true, ..MarArgs::default() };
        let settings = expand(&[SpecMode::Cspd], &base, &["gamma=4".parse().unwrap()], "mar").unwrap();
        assert!(settings[1].flags.self_draft, "a sweep keeps the command line's switches");
        let settings = expand(&[SpecMode::Cspd], &MarArgs::default(), &["self-draft=false,true".parse().unwrap()], "mar").unwrap();
        assert_eq!(settings.iter().map(|s| s.flags.draft()).collect::<Vec<_>>(), [MarDraft::Section, MarDraft::Section, MarDraft::Target]);
        let err = expand(&[SpecMode::Cspd], &MarArgs::default(), &["num-iter=16,32".parse().unwrap()], "mar").unwrap_err();
        assert!(err.to_string().contains("changes none of the modes cspd"), "{err}");
        let err = expand(&[SpecMode::Cspd], &MarArgs::default(), &["delta=1,2".parse().unwrap()], "mar").unwrap_err();
        assert!(err.to_string().contains("--sweep delta=1"), "{err}");
    }
}
