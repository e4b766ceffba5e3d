//! Model configurations: the official LlamaGen sizes, and config.json validation.

use spire::weights::{GptConfig, ModelConfig};

#[test]
fn official_presets_have_the_official_ffn_widths_and_grids() {
    let expected = [("GPT-B", 2048, 64), ("GPT-L", 2816, 64), ("GPT-XL", 3584, 64), ("GPT-XXL", 4096, 64), ("GPT-3B", 8704, 100)];
    for (name, hidden, head_dim) in expected {
        let config = GptConfig::preset(name, 256).unwrap();
        assert_eq!(config.ffn_hidden(), hidden, "{name}");
        assert_eq!(config.head_dim(), head_dim, "{name}");
        assert_eq!(config.block_size, 256);
        config.validate(name).unwrap();
    }
    assert_eq!(GptConfig::preset("GPT-XL", 384).unwrap().block_size, 576);
    assert!(GptConfig::preset("GPT-Q", 256).is_none());
}

#[test]
fn inconsistent_configs_are_rejected_with_the_reason() {
    let mut config = ModelConfig { gpt: GptConfig::preset("GPT-B", 256).unwrap(), draft: None, draft_head: None, vq: None };
    config.gpt.block_size = 250;
    assert!(config.validate().unwrap_err().contains("not a square"));
    config.gpt.block_size = 256;
    config.gpt.n_head = 7;
    assert!(config.validate().unwrap_err().contains("not divisible"));
}
