//! Using spire as a library, as a dependent crate would:
//! `cargo run --release --example generate -- weights/demo 3 out.png`.

use spire::{Engine, Request};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "weights/demo".into());
    let class: u32 = args.next().map(|c| c.parse()).transpose()?.unwrap_or(0);
    let out = args.next().unwrap_or_else(|| "example.png".into());

    let engine = Engine::load(&dir)?;
    let mut request = Request::new(class, 7);
    request.sampling.cfg_scale = 2.0;
    let image = engine.generate(&request)?;
    image.save_png(&out)?;
    println!("class {class}: wrote {out} ({}x{})", image.width, image.height);
    Ok(())
}
