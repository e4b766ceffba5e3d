//! `--sweep KEY=V1,V2,...`: the settings `spire eval` measures, each value applied through the
//! same clap parser as the family's decoding flags (`--KEY V`: `SpecArgs` for LlamaGen, `MarArgs`
//! for MAR), so a sweep accepts exactly what the flag does. The parser's defaults are removed
//! first, so applying one flag leaves every other field as it was (the command line's values and
//! earlier sweeps).

use std::str::FromStr;

use clap::{ArgAction, Args, Command, FromArgMatches, ValueEnum};

use crate::cli::spec_args::SpecMode;

/// One `--sweep`: a speculative flag (without `--`) and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// The flag, e.g. `delta`.
    pub key: String,
    /// Its values as typed.
    pub values: Vec<String>,
}

impl FromStr for Sweep {
    type Err = String;

    /// `KEY=V1,V2,...`; values that are lists themselves (`tree`) are separated by `/`:
    /// `tree=3,2,1/2,2,1`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (key, values) = text.split_once('=').ok_or_else(|| format!("`{text}` is not KEY=V1,V2,... (e.g. delta=1,1.5,2)"))?;
        let separator = if values.contains('/') { '/' } else { ',' };
        let values: Vec<String> = values.split(separator).map(str::trim).filter(|v| !v.is_empty()).map(String::from).collect();
        if values.is_empty() {
            return Err(format!("--sweep {key} has no values"));
        }
        Ok(Self { key: key.trim().trim_start_matches("--").to_string(), values })
    }
}

/// A family's decoding flags, as `--sweep` varies them.
pub trait SweepFlags: Args + FromArgMatches + Clone {
    /// What a mode decodes with under these flags.
    type Config: PartialEq;

    /// The configuration of `mode` (a sweep that changes it for no mode is an error).
    fn config(&self, mode: SpecMode) -> Self::Config;
}

/// The flags alone, without defaults: only the flags given are set. A switch (`--self-draft`)
/// takes `true` or `false` here instead (a switch's implicit `false` would reset it otherwise).
fn flags<F: SweepFlags>() -> Command {
    F::augment_args(Command::new("sweep").no_binary_name(true)).mut_args(|arg| match arg.get_action() {
        ArgAction::SetTrue => arg.action(ArgAction::Set).num_args(1).value_parser(clap::value_parser!(bool)),
        _ => arg.default_value(None),
    })
}

/// `base` with `--key value` applied.
fn apply<F: SweepFlags>(base: &F, key: &str, value: &str) -> anyhow::Result<F> {
    let error = |e: clap::Error| anyhow::anyhow!("--sweep {key}={value}: {}", e.to_string().lines().next().unwrap_or_default());
    let matches = flags::<F>().try_get_matches_from([format!("--{key}"), value.to_string()]).map_err(error)?;
    let mut flags = base.clone();
    flags.update_from_arg_matches(&matches).map_err(error)?;
    Ok(flags)
}

/// A mode's name on the command line (`baseline`, `ar` or `mar`, for plain decoding).
fn mode_name(mode: SpecMode, baseline: &str) -> String {
    match mode {
        SpecMode::None => baseline.into(),
        _ => mode.to_possible_value().map_or_else(|| format!("{mode:?}"), |v| v.get_name().to_string()),
    }
}

/// One measured setting: a mode with its flags and the swept values that made it.
#[derive(Clone, Debug)]
pub struct Setting<F> {
    /// The decoding mode.
    pub mode: SpecMode,
    /// The mode's name: `ar` or `mar` for plain decoding (the baseline), else the `--modes` value.
    pub name: String,
    /// Its flags.
    pub flags: F,
    /// `(key, value)` of every sweep that changes this mode, in `--sweep` order.
    pub swept: Vec<(String, String)>,
}

impl<F> Setting<F> {
    /// `mode key=value ...`.
    pub fn label(&self) -> String {
        std::iter::once(self.name.clone()).chain(self.swept.iter().map(|(k, v)| format!("{k}={v}"))).collect::<Vec<_>>().join(" ")
    }

    /// The curve of the plot this setting is a point of: its label without the first sweep,
    /// which runs along the curve.
    pub fn curve(&self) -> String {
        std::iter::once(self.name.clone()).chain(self.swept.iter().skip(1).map(|(k, v)| format!("{k}={v}"))).collect::<Vec<_>>().join(" ")
    }

    /// Whether this is plain decoding, the baseline of speedups and FID differences.
    pub fn is_baseline(&self) -> bool {
        self.mode == SpecMode::None
    }
}

/// Every setting to measure: plain decoding (named `baseline`) first, then each mode with the
/// Cartesian product of the sweeps that change it (a sweep changes a mode when some value
/// changes its configuration).
pub fn expand<F: SweepFlags>(modes: &[SpecMode], base: &F, sweeps: &[Sweep], baseline: &str) -> anyhow::Result<Vec<Setting<F>>> {
    let setting = |mode, flags: F, swept| Setting { mode, name: mode_name(mode, baseline), flags, swept };
    let mut settings = vec![setting(SpecMode::None, base.clone(), Vec::new())];
    let mut used = vec![false; sweeps.len()];
    for &mode in modes.iter().filter(|&&m| m != SpecMode::None) {
        let mut expanded = vec![setting(mode, base.clone(), Vec::new())];
        for (sweep, used) in sweeps.iter().zip(&mut used) {
            let variants: Vec<F> = sweep.values.iter().map(|v| apply(base, &sweep.key, v)).collect::<anyhow::Result<_>>()?;
            if variants.iter().all(|v| v.config(mode) == base.config(mode)) {
                continue;
            }
            *used = true;
            expanded = expanded
                .into_iter()
                .flat_map(|s| {
                    sweep.values.iter().map(move |v| -> anyhow::Result<Setting<F>> {
                        let mut swept = s.swept.clone();
                        swept.push((sweep.key.clone(), v.clone()));
                        Ok(setting(mode, apply(&s.flags, &sweep.key, v)?, swept))
                    })
                })
                .collect::<anyhow::Result<_>>()?;
        }
        settings.extend(expanded);
    }
    if let Some((sweep, _)) = sweeps.iter().zip(&used).find(|(_, used)| !**used) {
        let names: Vec<String> = modes.iter().map(|&m| mode_name(m, baseline)).collect();
        anyhow::bail!("--sweep {} changes none of the modes {} (add a mode it applies to with --modes)", sweep.key, names.join(","));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::spec_args::SpecArgs;

    /// The flags' defaults, with `--nu 0.5` from the "command line".
    fn base() -> SpecArgs {
        let command = SpecArgs::augment_args(Command::new("spire").no_binary_name(true));
        SpecArgs::from_arg_matches(&command.get_matches_from(["--nu", "0.5"])).unwrap()
    }

    #[test]
    fn parses_lists_and_list_valued_flags() {
        assert_eq!("delta=1,1.5".parse::<Sweep>().unwrap().values, ["1", "1.5"]);
        assert_eq!("tree=3,2,1/2,2".parse::<Sweep>().unwrap().values, ["3,2,1", "2,2"]);
        assert!("delta".parse::<Sweep>().is_err());
    }

    #[test]
    fn sweeps_only_the_modes_they_change() {
        let sweeps = ["delta=1,2".parse().unwrap(), "cool-schedule=floored,literal".parse().unwrap(), "draft-len=2,4".parse().unwrap()];
        let settings = expand(&[SpecMode::Vanilla, SpecMode::Cool, SpecMode::Uniform], &base(), &sweeps, "ar").unwrap();
        let labels: Vec<String> = settings.iter().map(Setting::label).collect();
        assert_eq!(labels[0], "ar");
        assert_eq!(labels.iter().filter(|l| l.starts_with("vanilla")).count(), 2);
        assert_eq!(labels.iter().filter(|l| l.starts_with("cool")).count(), 8);
        assert_eq!(labels.iter().filter(|l| l.starts_with("uniform")).count(), 2);
        let cool = settings.iter().find(|s| s.label() == "cool delta=2 cool-schedule=literal draft-len=4").unwrap();
        assert_eq!((cool.flags.delta, cool.flags.draft_len, cool.flags.nu), (2.0, 4, 0.5), "every sweep and the command line kept");
        assert_eq!(cool.curve(), "cool cool-schedule=literal draft-len=4");
    }

    #[test]
    fn bad_sweeps_name_the_problem() {
        let err = |s: &str, modes: &[SpecMode]| expand(modes, &base(), &[s.parse().unwrap()], "ar").unwrap_err().to_string();
        assert!(err("delta=x", &[SpecMode::Cool]).contains("delta=x"));
        assert!(err("omega=2", &[SpecMode::Cool]).contains("changes none of the modes cool"));
        assert!(err("no-such-flag=1", &[SpecMode::Cool]).contains("no-such-flag"));
    }
}
