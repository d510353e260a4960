//! Times frame rendering alone: `cargo run --release -p tessera-kernels --example render_speed [frames]`.
fn main() {
    let frames: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(600);
    let mut c = tessera_kernels::sim::SimConfig::preset("base").expect("preset");
    c.frames = frames;
    let t0 = std::time::Instant::now();
    let sim = tessera_kernels::sim::Simulation::new(c).expect("sim");
    let setup = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let mut checksum = 0u64;
    let mut start = 0;
    while start < frames {
        let m = sim.render(start, start + 64);
        checksum += m.iter().map(|&v| u64::from(v)).sum::<u64>();
        start += 64;
    }
    let render = t1.elapsed().as_secs_f64();
    println!(
        "setup {setup:.2} s, render {frames} frames {render:.2} s ({:.1} ms/frame/core-pair), checksum {checksum}",
        1e3 * render / frames as f64
    );
}
