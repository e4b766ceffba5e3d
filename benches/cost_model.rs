//! The cost model (`spire::backend::gpu::cost`) of a LlamaGen-XL decoding step on an H100 and an
//! H200: predicted time against the step's floor (its weights read once), per kind of kernel, for
//! plain AR and a COOL-SD chain of 4 (draft: 4 layers, 512 wide), batch 1 and 8, f32 and bf16 KV,
//! with and without graphs. Needs no GPU: `cargo bench --bench cost_model`.

use spire::backend::gpu::cost::{ar_step, chain_step, weights_floor, Ceilings, Precision, Step, H100_SXM, H200};
use spire::backend::KvDtype;
use spire::weights::GptConfig;

fn report(name: &str, step: &Step, floor: f64, gpu: &Ceilings, tokens: f64) {
    let (graphed, direct) = (step.time(gpu, true), step.time(gpu, false));
    println!(
        "{name:<34} {:>5} launches {:>9.3} ms graphed ({:>4.2}x floor) {:>9.3} ms direct ({:>4.2}x) {:>8.1} us/token",
        step.launches.len(),
        graphed * 1e3,
        graphed / floor,
        direct * 1e3,
        direct / floor,
        graphed * 1e6 / tokens
    );
}

fn main() {
    let target = GptConfig::preset("GPT-XL", 384).expect("GPT-XL preset");
    let draft = GptConfig { dim: 512, n_layer: 4, n_head: 8, ..target.clone() };
    let context = target.block_size / 2;
    for gpu in [H100_SXM, H200] {
        let floor = weights_floor(&target, 2.0, &gpu);
        println!("\n{}: GPT-XL (576 tokens, bf16 weights), mean context {context}: weights floor {:.3} ms per target forward", gpu.name, floor * 1e3);
        for kv in [KvDtype::F32, KvDtype::Bf16] {
            let precision = Precision { weight_bytes: 2.0, kv };
            for images in [1, 8] {
                report(&format!("AR, batch {images}, {kv:?} KV"), &ar_step(&target, images, context, precision), floor, &gpu, images as f64);
                // COOL-SD on the demo accepts ~1.8 of 4 drafts: 2.8 tokens per step.
                let chain = chain_step(&target, &draft, images, 4, 2, context, precision);
                report(&format!("COOL-SD chain 4, batch {images}, {kv:?} KV"), &chain, floor, &gpu, 2.8 * images as f64);
            }
        }
        let ar = ar_step(&target, 1, context, Precision { weight_bytes: 2.0, kv: KvDtype::Bf16 });
        println!("  AR batch 1, bf16 KV, graphed, by kernel:");
        for (name, count, time) in ar.by_kernel(&gpu, true) {
            println!("    {name:<16} {count:>4} launches {:>8.1} us", time * 1e6);
        }
    }
}
