//! Which model family a weights directory holds: `config.json`'s `"family"` key (absent means
//! `"llamagen"`) picks the sections that must and may appear.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::weights::{MarDirConfig, ModelConfig};

/// A model family spire can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// LlamaGen: discrete tokens, GPT + VQ decoder (sections `gpt`, `draft`, `draft_head`, `vq`).
    LlamaGen,
    /// MAR: continuous tokens, masked transformer + diffusion head + KL VAE (sections `mar`,
    /// `draft`, `vae`).
    Mar,
}

impl Family {
    /// The `"family"` value naming this family.
    pub fn name(self) -> &'static str {
        match self {
            Family::LlamaGen => "llamagen",
            Family::Mar => "mar",
        }
    }

    /// The required section and the optional ones.
    fn sections(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Family::LlamaGen => ("gpt", &["draft", "draft_head", "vq"]),
            Family::Mar => ("mar", &["draft", "vae"]),
        }
    }

    fn from_name(name: &str) -> std::result::Result<Self, String> {
        [Family::LlamaGen, Family::Mar]
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| format!("unknown \"family\": {name:?}; spire loads \"llamagen\" (the default) and \"mar\""))
    }
}

/// A weights directory's `config.json`, of either family.
#[derive(Clone, Debug, PartialEq)]
pub enum DirConfig {
    /// A LlamaGen directory.
    LlamaGen(ModelConfig),
    /// A MAR directory.
    Mar(MarDirConfig),
}

impl DirConfig {
    /// Read `dir/config.json`, detect its family and validate its sections.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = ModelConfig::path_in(dir);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        Self::parse(&text).map_err(|reason| Error::Config { path, reason })
    }

    /// Parse and validate the text of a `config.json`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut root = match serde_json::from_str::<Value>(text).map_err(|e| e.to_string())? {
            Value::Object(root) => root,
            _ => return Err("config.json must be a JSON object".into()),
        };
        let family = match root.remove("family") {
            None => Family::LlamaGen,
            Some(Value::String(name)) => Family::from_name(&name)?,
            Some(other) => return Err(format!("\"family\" must be a string, not {other}")),
        };
        check_sections(&root, family)?;
        let root = Value::Object(root);
        match family {
            Family::LlamaGen => {
                let config: ModelConfig = serde_json::from_value(root).map_err(|e| e.to_string())?;
                config.validate()?;
                Ok(DirConfig::LlamaGen(config))
            }
            Family::Mar => {
                let config: MarDirConfig = serde_json::from_value(root).map_err(|e| e.to_string())?;
                config.validate()?;
                Ok(DirConfig::Mar(config))
            }
        }
    }

    /// The directory's family.
    pub fn family(&self) -> Family {
        match self {
            DirConfig::LlamaGen(_) => Family::LlamaGen,
            DirConfig::Mar(_) => Family::Mar,
        }
    }
}

/// Error unless `root` has the family's required section and no section of another family.
fn check_sections(root: &Map<String, Value>, family: Family) -> std::result::Result<(), String> {
    let (required, optional) = family.sections();
    if let Some(foreign) = root.keys().find(|k| *k != required && !optional.contains(&k.as_str())) {
        let hint = match (family, foreign.as_str()) {
            (Family::LlamaGen, "mar" | "vae") => "; a MAR directory needs \"family\": \"mar\"",
            _ => "",
        };
        return Err(format!(
            "section {foreign:?} does not belong to a {} directory (sections: {required}, {}){hint}",
            family.name(),
            optional.join(", ")
        ));
    }
    if !root.contains_key(required) {
        return Err(format!("a {} directory needs a {required:?} section", family.name()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPT: &str = r#"{"file": "gpt.safetensors", "dim": 32, "n_layer": 1, "n_head": 2, "vocab_size": 16,
        "num_classes": 2, "block_size": 16}"#;

    #[test]
    fn no_family_key_is_llamagen() {
        let config = DirConfig::parse(&format!(r#"{{"gpt": {GPT}}}"#)).unwrap();
        assert_eq!(config.family(), Family::LlamaGen);
        let explicit = DirConfig::parse(&format!(r#"{{"family": "llamagen", "gpt": {GPT}}}"#)).unwrap();
        assert_eq!(explicit, config);
    }

    #[test]
    fn wrong_or_missing_sections_are_named() {
        let err = DirConfig::parse(r#"{"family": "mar", "vae": {}}"#).unwrap_err();
        assert!(err.contains("needs a \"mar\" section"), "{err}");
        let err = DirConfig::parse(&format!(r#"{{"family": "mar", "gpt": {GPT}}}"#)).unwrap_err();
        assert!(err.contains("section \"gpt\" does not belong to a mar directory"), "{err}");
        let err = DirConfig::parse(r#"{"mar": {}}"#).unwrap_err();
        assert!(err.contains("\"family\": \"mar\""), "{err}");
        let err = DirConfig::parse(r#"{"family": "dit"}"#).unwrap_err();
        assert!(err.contains("unknown \"family\": \"dit\""), "{err}");
        let err = DirConfig::parse(r#"{"family": 3}"#).unwrap_err();
        assert!(err.contains("must be a string"), "{err}");
    }
}
